//! The records kept in the store and how they are encoded.
//!
//! Records are encoded with postcard (compact, stable wire format). Secret
//! values never appear in these types in plaintext: a credential holds only a
//! wrapped data key and sealed fields.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::crypto::{Sealed, WrappedKey};

use super::StoreError;

/// Id of a credential.
pub type CredentialId = u64;
/// Id of a data source.
pub type SourceId = u64;

/// A person who owns credentials and data sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique name.
    pub name: String,
    /// When the user was added (ms since the Unix epoch).
    pub created_ms: u64,
}

/// One field of a credential version, sealed under the version's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedField {
    /// Field name (not secret).
    pub name: String,
    /// The sealed value.
    pub sealed: Sealed,
}

/// A credential as stored: metadata in the clear, values sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Id.
    pub id: CredentialId,
    /// The user who created it; only their data sources may use it.
    pub owner: String,
    /// The platform it is for.
    pub platform: String,
    /// A title the owner recognises it by.
    pub title: String,
    /// Version, starting at 1; every update adds one.
    pub version: u32,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When the current version was written.
    pub updated_ms: u64,
    /// The data key of this version, wrapped by a master key.
    pub wrapped_key: WrappedKey,
    /// The fields of this version, sealed.
    pub fields: Vec<SealedField>,
}

/// How a credential has fared when used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialState {
    /// Last time a plugin was given one of its fields.
    pub last_used_ms: Option<u64>,
    /// Set when the platform rejected it; cleared by a successful update.
    pub broken: Option<Broken>,
}

/// Why and when a credential was marked broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    /// When the platform rejected it.
    pub at_ms: u64,
    /// The platform's message.
    pub message: String,
}

/// A data source: one account on one platform that a user fetches from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Id.
    pub id: SourceId,
    /// Unique name.
    pub name: String,
    /// The user who connected it.
    pub owner: String,
    /// Its platform.
    pub platform: String,
    /// The credential it uses; none once detached.
    pub credential: Option<CredentialId>,
    /// Non-secret settings, as name/value pairs.
    pub config: Vec<(String, String)>,
    /// When it was connected (ms since the Unix epoch).
    pub created_ms: u64,
}

/// What is kept of a removed data source: enough to find its audit records
/// and run history by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedSource {
    /// Its id (never reused).
    pub id: SourceId,
    /// Its name when it was removed.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its platform.
    pub platform: String,
    /// When it was removed (ms since the Unix epoch).
    pub removed_ms: u64,
}

/// What a recorded secret request or change was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// A placeholder was replaced by the value in an outgoing request.
    Inject,
    /// The raw value was handed to the plugin.
    Reveal,
    /// The plugin listed the credential's field names.
    ListFields,
    /// The plugin wrote a new value (token refresh).
    Update,
    /// A data source was linked to a credential.
    Link,
    /// A person created, updated or deleted a credential.
    Manage,
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuditAction::Inject => "inject",
            AuditAction::Reveal => "reveal",
            AuditAction::ListFields => "list-fields",
            AuditAction::Update => "update",
            AuditAction::Link => "link",
            AuditAction::Manage => "manage",
        })
    }
}

/// One audited decision. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The user on whose behalf the request was made (the data source's owner).
    pub user: String,
    /// The data source, if any.
    pub source: Option<SourceId>,
    /// The plugin (its platform id), if any.
    pub plugin: Option<String>,
    /// The credential concerned, if known.
    pub credential: Option<CredentialId>,
    /// The field concerned, if any.
    pub field: Option<String>,
    /// What was asked.
    pub action: AuditAction,
    /// Whether it was granted.
    pub granted: bool,
    /// Why it was denied, or a note (e.g. the destination origin).
    pub detail: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A record stored under its own id.
pub(crate) trait Row: DeserializeOwned {
    /// The id the record says it has.
    fn row_id(&self) -> u64;
}

impl Row for CredentialRecord {
    fn row_id(&self) -> u64 {
        self.id
    }
}

impl Row for SourceRecord {
    fn row_id(&self) -> u64 {
        self.id
    }
}

/// Decodes the record stored under `key`, refusing one that names another
/// id: a row copied or moved under another key (the sealed fields are bound
/// to the id the record names, so they would open, as the other record's).
pub(crate) fn decode_row<T: Row>(key: u64, bytes: &[u8], what: &str) -> Result<T, StoreError> {
    let record: T = decode(bytes, what)?;
    if record.row_id() != key {
        return Err(StoreError::Corrupt(format!(
            "{what} {key}: the row holds {what} {} (moved or copied)",
            record.row_id()
        )));
    }
    Ok(record)
}
