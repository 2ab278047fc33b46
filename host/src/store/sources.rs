//! Data sources: connecting them (creating or reusing a credential), listing
//! them, and their cursors.

use redb::{ReadableDatabase, ReadableTable};

use crate::crypto::{Keyring, WrappedKey};

use super::audit::append_in;
use super::credentials::{NewSecrets, no_such, seal_into};
use super::model::{
    AuditAction, AuditRecord, CredentialId, CredentialRecord, SourceId, SourceRecord, decode_row,
    encode,
};
use super::{
    CREDENTIALS, CURSORS, Result, SOURCE_NAMES, SOURCES, Store, StoreError, check_source_name,
    next_id, now_ms, users,
};

/// Which credential a new data source uses.
#[derive(Debug, Clone)]
pub enum CredentialChoice {
    /// Create a new credential owned by the connecting user.
    New(NewSecrets),
    /// Reuse one of the connecting user's own credentials of the same platform.
    Existing(CredentialId),
}

/// A data source to connect.
#[derive(Debug, Clone)]
pub struct NewSource {
    /// Unique name; `None` picks `PLATFORM-ID`.
    pub name: Option<String>,
    /// The connecting user.
    pub owner: String,
    /// The platform.
    pub platform: String,
    /// Non-secret settings.
    pub config: Vec<(String, String)>,
    /// The credential to create or reuse.
    pub credential: CredentialChoice,
}

impl Store {
    /// Connects a data source in one transaction: creates its credential or
    /// checks that the reused one is the owner's own and of the same platform,
    /// then links it. Its name must be unique ignoring case; the owner is
    /// named ignoring case too. A refused reuse is audited, and answers exactly like a
    /// credential id that does not exist.
    pub fn connect(&self, new: NewSource) -> Result<SourceRecord> {
        if let Some(name) = &new.name {
            check_source_name(name)?;
        }
        self.with_current_key(|keyring| self.connect_once(keyring, &new))
    }

    fn connect_once(&self, keyring: &Keyring, new: &NewSource) -> Result<SourceRecord> {
        let txn = self.db().begin_write()?;
        let Some(owner) = users::resolve_in(&txn, &new.owner)? else {
            return Err(StoreError::UnknownUser(new.owner.clone()));
        };
        let new = &NewSource {
            owner,
            ..new.clone()
        };
        let id = next_id(&txn, "source")?;
        let now = now_ms();
        let name = new
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{id}", new.platform));
        let credential = match &new.credential {
            CredentialChoice::New(secrets) => {
                self.create_credential_in(&txn, keyring, &new.owner, &new.platform, secrets, now)?
            }
            CredentialChoice::Existing(cred_id) => {
                if let Err(reason) = reusable_in(&txn, *cred_id, &new.owner, &new.platform)? {
                    drop(txn);
                    return Err(self.refuse_reuse(
                        *cred_id,
                        &new.owner,
                        &new.platform,
                        None,
                        reason,
                    ));
                }
                *cred_id
            }
        };
        let source = SourceRecord {
            id,
            name: name.clone(),
            owner: new.owner.clone(),
            platform: new.platform.clone(),
            credential: Some(credential),
            config: new.config.clone(),
            created_ms: now,
        };
        {
            let mut names = txn.open_table(SOURCE_NAMES)?;
            if let Some(taken) = name_taken(&names, &name)? {
                return Err(StoreError::SourceExists(taken));
            }
            names.insert(name.as_str(), id)?;
            txn.open_table(SOURCES)?
                .insert(id, encode(&source)?.as_slice())?;
            append_in(
                &txn,
                &[AuditRecord {
                    at_ms: now,
                    user: new.owner.clone(),
                    source: Some(id),
                    plugin: Some(new.platform.clone()),
                    credential: Some(credential),
                    field: None,
                    action: AuditAction::Link,
                    granted: true,
                    detail: match &new.credential {
                        CredentialChoice::New(_) => "new credential".into(),
                        CredentialChoice::Existing(_) => "reused credential".into(),
                    },
                }],
            )?;
        }
        txn.commit()?;
        Ok(source)
    }

    /// Seals `secrets` into a new credential of `owner` for `platform`.
    fn create_credential_in(
        &self,
        txn: &redb::WriteTransaction,
        keyring: &Keyring,
        owner: &str,
        platform: &str,
        secrets: &NewSecrets,
        now: u64,
    ) -> Result<CredentialId> {
        super::check_title(&secrets.title)?;
        super::credentials::check_secret_values(&secrets.fields)?;
        self.require_current_key(&txn.open_table(super::META)?, keyring)?;
        let cred_id = next_id(txn, "credential")?;
        let mut record = CredentialRecord {
            id: cred_id,
            owner: owner.to_owned(),
            platform: platform.to_owned(),
            title: secrets.title.clone(),
            version: 1,
            created_ms: now,
            updated_ms: now,
            wrapped_key: WrappedKey {
                kek_version: 0,
                sealed: crate::crypto::Sealed {
                    nonce: [0; 12],
                    ciphertext: Vec::new(),
                },
            },
            fields: Vec::new(),
        };
        seal_into(keyring, &mut record, &secrets.fields)?;
        txn.open_table(CREDENTIALS)?
            .insert(cred_id, encode(&record)?.as_slice())?;
        Ok(cred_id)
    }

    /// Gives a data source that has no credential (it was deleted with
    /// `--detach`) a new credential of its owner, in one transaction.
    pub fn relink_new(
        &self,
        source: SourceId,
        owner: &str,
        secrets: &NewSecrets,
    ) -> Result<CredentialId> {
        self.with_current_key(|keyring| self.relink_new_once(keyring, source, owner, secrets))
    }

    fn relink_new_once(
        &self,
        keyring: &Keyring,
        source: SourceId,
        owner: &str,
        secrets: &NewSecrets,
    ) -> Result<CredentialId> {
        let now = now_ms();
        let txn = self.db().begin_write()?;
        let mut record: SourceRecord = match txn.open_table(SOURCES)?.get(source)? {
            Some(v) => decode_row(source, v.value(), "data source")?,
            None => return Err(StoreError::UnknownSource(source.to_string())),
        };
        if record.owner != owner {
            return Err(StoreError::UnknownSource(source.to_string()));
        }
        let cred_id =
            self.create_credential_in(&txn, keyring, owner, &record.platform, secrets, now)?;
        record.credential = Some(cred_id);
        txn.open_table(SOURCES)?
            .insert(source, encode(&record)?.as_slice())?;
        append_in(
            &txn,
            &[AuditRecord {
                at_ms: now,
                user: owner.to_owned(),
                source: Some(source),
                plugin: Some(record.platform.clone()),
                credential: Some(cred_id),
                field: None,
                action: AuditAction::Link,
                granted: true,
                detail: "new credential for a disconnected data source".into(),
            }],
        )?;
        txn.commit()?;
        Ok(cred_id)
    }

    /// Links data source `source` of `owner` to `owner`'s existing
    /// credential `credential` of the same platform, instead of the one it
    /// has (or had: a disconnected data source). Another user's credential
    /// answers like one that does not exist, and the refusal is audited.
    pub fn relink(
        &self,
        source: SourceId,
        owner: &str,
        credential: CredentialId,
    ) -> Result<SourceRecord> {
        let now = now_ms();
        let txn = self.db().begin_write()?;
        let mut record: SourceRecord = match txn.open_table(SOURCES)?.get(source)? {
            Some(v) => decode_row(source, v.value(), "data source")?,
            None => return Err(StoreError::UnknownSource(source.to_string())),
        };
        if record.owner != owner {
            return Err(StoreError::UnknownSource(source.to_string()));
        }
        if let Err(reason) = reusable_in(&txn, credential, owner, &record.platform)? {
            drop(txn);
            return Err(self.refuse_reuse(
                credential,
                owner,
                &record.platform,
                Some(source),
                reason,
            ));
        }
        let detail = match record.credential {
            Some(old) if old == credential => "relinked to the credential it had".to_owned(),
            Some(old) => format!("relinked from credential {old}"),
            None => "reused credential for a disconnected data source".to_owned(),
        };
        record.credential = Some(credential);
        txn.open_table(SOURCES)?
            .insert(source, encode(&record)?.as_slice())?;
        append_in(
            &txn,
            &[AuditRecord {
                at_ms: now,
                user: owner.to_owned(),
                source: Some(source),
                plugin: Some(record.platform.clone()),
                credential: Some(credential),
                field: None,
                action: AuditAction::Link,
                granted: true,
                detail,
            }],
        )?;
        txn.commit()?;
        Ok(record)
    }

    /// Audits a refused reuse of credential `id` and answers as if it did not
    /// exist (no existence oracle). An audit failure is the error instead.
    /// Credential `id`, if `owner` may use it for a data source of
    /// `platform`: their own, of that platform. Otherwise the refusal is
    /// audited and answered exactly like an id that does not exist (another
    /// platform's credential of theirs says so). For checking a credential
    /// against the platform before [`Store::connect`] links it.
    pub fn reusable_credential(
        &self,
        id: CredentialId,
        owner: &str,
        platform: &str,
    ) -> Result<CredentialRecord> {
        let reason = match self.credential(id)? {
            None => "no such credential",
            Some(c) if c.owner != owner => "the credential belongs to another user",
            Some(c) if c.platform != platform => {
                return Err(StoreError::PlatformMismatch {
                    id,
                    expected: platform.to_owned(),
                    actual: c.platform,
                });
            }
            Some(c) => return Ok(c),
        };
        Err(self.refuse_reuse(id, owner, platform, None, reason.to_owned()))
    }

    fn refuse_reuse(
        &self,
        id: CredentialId,
        owner: &str,
        platform: &str,
        source: Option<SourceId>,
        reason: String,
    ) -> StoreError {
        let audited = self.append_audit(&[AuditRecord {
            at_ms: now_ms(),
            user: owner.to_owned(),
            source,
            plugin: Some(platform.to_owned()),
            credential: Some(id),
            field: None,
            action: AuditAction::Link,
            granted: false,
            detail: reason,
        }]);
        match audited {
            Ok(()) => no_such(owner, id),
            Err(e) => e,
        }
    }

    /// The data source `id`.
    pub fn source(&self, id: SourceId) -> Result<Option<SourceRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(SOURCES)?;
        table
            .get(id)?
            .map(|v| decode_row(id, v.value(), "data source"))
            .transpose()
    }

    /// The data source named `name` (ignoring case; the name given exactly
    /// wins), or with id `name` if it is a number.
    pub fn find_source(&self, name: &str) -> Result<SourceRecord> {
        let mut found = self.sources_matching(name)?;
        match found.len() {
            0 => Err(StoreError::UnknownSource(name.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(StoreError::Ambiguous {
                what: "data source",
                given: name.to_owned(),
                matches: found.into_iter().map(|s| s.name).collect(),
            }),
        }
    }

    /// The name of the data source whose name equals `name` ignoring case,
    /// if there is one (see [`Store::connect`]).
    pub fn source_name_taken(&self, name: &str) -> Result<Option<String>> {
        let txn = self.db().begin_read()?;
        name_taken(&txn.open_table(SOURCE_NAMES)?, name)
    }

    /// The data sources `name` may stand for: the one named exactly so, else
    /// the one with that id if it is a number, else every one whose name
    /// differs from it only in case (more than one only in a database made
    /// before names were compared ignoring case).
    pub(super) fn sources_matching(&self, name: &str) -> Result<Vec<SourceRecord>> {
        let txn = self.db().begin_read()?;
        let names = txn.open_table(SOURCE_NAMES)?;
        let sources = txn.open_table(SOURCES)?;
        let get = |id: u64| -> Result<Option<SourceRecord>> {
            sources
                .get(id)?
                .map(|v| decode_row(id, v.value(), "data source"))
                .transpose()
        };
        if let Some(id) = names.get(name)?.map(|id| id.value()) {
            return Ok(get(id)?.into_iter().collect());
        }
        if let Some(source) = name.parse::<u64>().ok().map(get).transpose()?.flatten() {
            return Ok(vec![source]);
        }
        let mut out = Vec::new();
        for r in names.iter()? {
            let (stored, id) = r?;
            if stored.value().eq_ignore_ascii_case(name)
                && let Some(source) = get(id.value())?
            {
                out.push(source);
            }
        }
        Ok(out)
    }

    /// All data sources, by id.
    pub fn sources(&self) -> Result<Vec<SourceRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(SOURCES)?;
        table
            .iter()?
            .map(|r| {
                let (k, v) = r?;
                decode_row(k.value(), v.value(), "data source")
            })
            .collect()
    }

    /// The cursor saved by the last successful run of a data source.
    pub fn cursor(&self, id: SourceId) -> Result<Option<String>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(CURSORS)?;
        Ok(table.get(id)?.map(|v| v.value().to_owned()))
    }

    /// Saves a data source's cursor (after its output is safely written).
    pub fn save_cursor(&self, id: SourceId, cursor: Option<&str>) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            let mut table = txn.open_table(CURSORS)?;
            match cursor {
                Some(c) => {
                    table.insert(id, c)?;
                }
                None => {
                    table.remove(id)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Writes a data source record as it is, without the ownership checks of
    /// [`Store::connect`]. For repair tools and for tests that simulate a
    /// tampered database; the secret choke point still checks every use.
    pub fn put_source_record_unchecked(&self, record: &SourceRecord) -> Result<()> {
        let txn = self.db().begin_write()?;
        txn.open_table(SOURCES)?
            .insert(record.id, encode(record)?.as_slice())?;
        txn.open_table(SOURCE_NAMES)?
            .insert(record.name.as_str(), record.id)?;
        txn.commit()?;
        Ok(())
    }
}

/// The name in `names` that `name` equals ignoring case, if any: data
/// source names are unique ignoring case (output directories are named
/// after them, and some file systems ignore case).
pub(super) fn name_taken(
    names: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<Option<String>> {
    if names.get(name)?.is_some() {
        return Ok(Some(name.to_owned()));
    }
    for r in names.iter()? {
        let (stored, _) = r?;
        if stored.value().eq_ignore_ascii_case(name) {
            return Ok(Some(stored.value().to_owned()));
        }
    }
    Ok(None)
}

/// Whether `owner` may link credential `id` to a data source of `platform`:
/// `Ok(Err(reason))` is a refusal to audit and answer as "no such credential";
/// a credential of the owner's for another platform is a plain error.
fn reusable_in(
    txn: &redb::WriteTransaction,
    id: CredentialId,
    owner: &str,
    platform: &str,
) -> Result<std::result::Result<(), String>> {
    let found: Option<CredentialRecord> = txn
        .open_table(CREDENTIALS)?
        .get(id)?
        .map(|v| decode_row(id, v.value(), "credential"))
        .transpose()?;
    match found {
        None => Ok(Err("no such credential".to_owned())),
        Some(c) if c.owner != owner => Ok(Err("the credential belongs to another user".to_owned())),
        Some(c) if c.platform != platform => Err(StoreError::PlatformMismatch {
            id,
            expected: platform.to_owned(),
            actual: c.platform,
        }),
        Some(_) => Ok(Ok(())),
    }
}
