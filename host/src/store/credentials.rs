//! Credentials: sealing and opening their fields, listing, updating.
//!
//! Each version of a credential has a fresh random data key. Every field is
//! sealed under it with associated data naming the credential id, owner,
//! platform, version and field name; the data key is wrapped by the master key
//! with associated data naming the credential id, owner, platform, version
//! and the names of all its fields (sorted). A ciphertext or wrapped key
//! moved anywhere else fails to open, and so does a record that lost (or
//! gained) a field: the data key no longer unwraps.
//!
//! Records written by format 1 bound their data key without the field
//! names (`intake/data-key/v1`). They are still read: a data key that does
//! not unwrap with the field names is tried without them, which only a
//! key wrapped that way passes (the two bindings differ in their first
//! part), so a record written now cannot be passed off as an old one. The
//! next re-wrap (`intake keys rotate`) binds their fields too.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use crate::crypto::{Aad, CryptoError, DataKey, Keyring};
use crate::secret::{SecretFields, SecretString};

use super::audit::append_in;
use super::model::{
    AuditAction, AuditRecord, Broken, CredentialId, CredentialRecord, CredentialState, SealedField,
    SourceId, SourceRecord, decode, decode_row, encode,
};
use super::{CREDENTIAL_STATE, CREDENTIALS, Result, SOURCES, Store, StoreError, now_ms};

/// Secrets for a new credential.
#[derive(Debug, Clone)]
pub struct NewSecrets {
    /// A title the owner will recognise it by.
    pub title: String,
    /// The field values.
    pub fields: SecretFields,
}

/// Who changes a credential through [`Store::update_credential_by`], for the
/// audit log.
#[derive(Debug, Clone, Copy)]
pub struct UpdatedBy<'a> {
    /// The data source it was done through, if it exists yet.
    pub source: Option<SourceId>,
    /// The platform's plugin involved (e.g. the one that ran a check).
    pub plugin: Option<&'a str>,
    /// Why, e.g. `reconnected`.
    pub why: &'a str,
    /// A new title for the credential, set in the same transaction.
    pub title: Option<&'a str>,
}

/// A plugin's write of its credential (an OAuth refresh) through
/// [`Store::update_credential_from_plugin`]: who, for the audit log, and the
/// version it is based on.
#[derive(Debug, Clone, Copy)]
pub struct PluginWrite<'a> {
    /// The data source the plugin ran for, if it exists yet.
    pub source: Option<SourceId>,
    /// The plugin (its platform id).
    pub plugin: &'a str,
    /// The version the plugin last read or wrote: the write applies only
    /// if the credential is still at it. None applies it over the current
    /// version (the plugin read nothing it could be undoing).
    pub based_on: Option<u32>,
}

/// How a write of a credential is audited.
#[derive(Debug, Clone, Copy)]
enum WriteAudit<'a> {
    /// Not here (the caller audits it).
    None,
    /// By a person: `manage` records.
    By(&'a UpdatedBy<'a>),
    /// By a plugin: `update` records.
    Plugin(&'a PluginWrite<'a>),
}

impl WriteAudit<'_> {
    /// The new title a person's update sets, if any.
    fn title(&self) -> Option<&str> {
        match self {
            WriteAudit::By(by) => by.title,
            _ => None,
        }
    }
}

/// What "my credentials" shows of one credential. Never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSummary {
    /// Id.
    pub id: CredentialId,
    /// Platform.
    pub platform: String,
    /// Title.
    pub title: String,
    /// Current version.
    pub version: u32,
    /// Field names present (not values).
    pub field_names: Vec<String>,
    /// Created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Current version written.
    pub updated_ms: u64,
    /// Data sources linked to it: id and name.
    pub sources: Vec<(SourceId, String)>,
    /// Last use and broken status.
    pub state: CredentialState,
}

/// The associated data of a credential's data key: its id, owner,
/// platform, version and the names of its fields, sorted (format 2).
pub(super) fn dek_aad(record: &CredentialRecord) -> Aad {
    let mut names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    let len = u64::try_from(names.len()).unwrap_or(u64::MAX);
    names.into_iter().fold(
        Aad::new("intake/data-key/v2")
            .u64(record.id)
            .str(&record.owner)
            .str(&record.platform)
            .u64(u64::from(record.version))
            .u64(len),
        Aad::str,
    )
}

/// The associated data of a data key written by format 1: without the
/// field names.
fn dek_aad_v1(record: &CredentialRecord) -> Aad {
    Aad::new("intake/data-key/v1")
        .u64(record.id)
        .str(&record.owner)
        .str(&record.platform)
        .u64(u64::from(record.version))
}

/// Unwraps the data key of `record`. Also says whether its list of fields
/// is bound (`true`), or the record was written by format 1 (`false`; see
/// the module's documentation).
pub(super) fn unwrap_data_key(
    keyring: &Keyring,
    record: &CredentialRecord,
) -> Result<(DataKey, bool)> {
    let id = record.id;
    match DataKey::unwrap(keyring, &record.wrapped_key, &dek_aad(record), || {
        format!("credential {id} (data key)")
    }) {
        Ok(dek) => Ok((dek, true)),
        Err(CryptoError::Integrity { .. }) => {
            let dek = DataKey::unwrap(keyring, &record.wrapped_key, &dek_aad_v1(record), || {
                format!("credential {id} (its data key, or the list of its fields)")
            })?;
            Ok((dek, false))
        }
        Err(e) => Err(e.into()),
    }
}

fn field_aad(id: CredentialId, owner: &str, platform: &str, version: u32, field: &str) -> Aad {
    Aad::new("intake/field/v1")
        .u64(id)
        .str(owner)
        .str(platform)
        .u64(u64::from(version))
        .str(field)
}

/// Refuses secret values that can never work: a control character (C0, such
/// as NUL, a tab, a line break or ESC, or DEL) in a value is a copying
/// mistake that no platform accepts, and would only make every later run fail
/// with the platform's own, misleading error. Applied to every value written:
/// connecting, reconnecting, sealed bundles and values a plugin writes back.
/// The error names the field, never the value.
pub fn check_secret_values(fields: &SecretFields) -> Result<()> {
    for (name, value) in fields.iter() {
        if value.expose().bytes().any(|b| b.is_ascii_control()) {
            return Err(StoreError::InvalidSecret {
                field: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// Seals `fields` into `record` as its current version, with a new data key.
pub(super) fn seal_into(
    keyring: &Keyring,
    record: &mut CredentialRecord,
    fields: &SecretFields,
) -> Result<()> {
    let (id, version) = (record.id, record.version);
    let dek = DataKey::generate()?;
    record.fields = fields
        .iter()
        .map(|(name, value)| {
            let aad = field_aad(id, &record.owner, &record.platform, version, name);
            Ok(SealedField {
                name: name.to_owned(),
                sealed: dek.seal(&aad, value.expose().as_bytes())?,
            })
        })
        .collect::<Result<_>>()?;
    // Wrapped last: its associated data names the fields just sealed.
    record.wrapped_key = dek.wrap(keyring, &dek_aad(record))?;
    Ok(())
}

/// Opens the fields of `record` named in `names` (all fields if `None`).
/// Names the record lacks are skipped; the caller checks.
pub fn open_fields(
    keyring: &Keyring,
    record: &CredentialRecord,
    names: Option<&[&str]>,
) -> Result<SecretFields> {
    open_fields_bound(keyring, record, names).map(|(fields, _)| fields)
}

/// [`open_fields`], also saying whether the record's list of fields is
/// bound to its data key (see [`unwrap_data_key`]).
pub(super) fn open_fields_bound(
    keyring: &Keyring,
    record: &CredentialRecord,
    names: Option<&[&str]>,
) -> Result<(SecretFields, bool)> {
    let (id, version) = (record.id, record.version);
    let (dek, bound) = unwrap_data_key(keyring, record)?;
    let mut out = SecretFields::new();
    for field in &record.fields {
        if names.is_some_and(|n| !n.contains(&field.name.as_str())) {
            continue;
        }
        let aad = field_aad(id, &record.owner, &record.platform, version, &field.name);
        let plain = dek.open(&aad, &field.sealed, || {
            format!("credential {id} field `{}`", field.name)
        })?;
        let value = SecretString::from_utf8(plain.to_vec()).map_err(|_| {
            StoreError::Corrupt(format!(
                "credential {id} field `{}` is not text",
                field.name
            ))
        })?;
        out.insert(field.name.clone(), value);
    }
    Ok((out, bound))
}

impl Store {
    /// The credential `id`, if it exists (sealed; metadata readable).
    pub fn credential(&self, id: CredentialId) -> Result<Option<CredentialRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(CREDENTIALS)?;
        table
            .get(id)?
            .map(|v| decode_row(id, v.value(), "credential"))
            .transpose()
    }

    /// A data source and the credential its stored link points at, read in
    /// one snapshot. The caller (the secret choke point) decides whether the
    /// link may be used.
    pub fn source_with_credential(
        &self,
        source: SourceId,
    ) -> Result<Option<(SourceRecord, Option<CredentialRecord>)>> {
        let txn = self.db().begin_read()?;
        let sources = txn.open_table(SOURCES)?;
        let Some(src) = sources.get(source)? else {
            return Ok(None);
        };
        let src: SourceRecord = decode_row(source, src.value(), "data source")?;
        let cred = match src.credential {
            Some(id) => txn
                .open_table(CREDENTIALS)?
                .get(id)?
                .map(|v| decode_row(id, v.value(), "credential"))
                .transpose()?,
            None => None,
        };
        Ok(Some((src, cred)))
    }

    /// [`Store::source_with_credential`] for the secret choke point, on
    /// every request: served from a cache while the database file is
    /// unchanged (no commit by any process since the records were read), so
    /// the answer is always the one a read transaction would give now. See
    /// [`super::snapshot`].
    pub fn linked(&self, source: SourceId) -> Result<Option<Arc<super::Linked>>> {
        self.inner
            .snapshots
            .get(source, || self.source_with_credential(source))
    }

    /// Opens fields of a credential record with this store's keyring,
    /// re-reading the key file once if the record's data key is wrapped by
    /// a version the keyring lacks (rotated by another process).
    pub fn open_fields(
        &self,
        record: &CredentialRecord,
        names: Option<&[&str]>,
    ) -> Result<SecretFields> {
        self.with_current_key(|keyring| open_fields(keyring, record, names))
    }

    /// "My credentials": every credential `owner` has, with the data sources
    /// using each and their state. Never values.
    pub fn credentials_of(&self, owner: &str) -> Result<Vec<CredentialSummary>> {
        self.require_user(owner)?;
        let txn = self.db().begin_read()?;
        let creds = txn.open_table(CREDENTIALS)?;
        let states = txn.open_table(CREDENTIAL_STATE)?;
        let sources = txn.open_table(SOURCES)?;
        let mut linked: Vec<SourceRecord> = Vec::new();
        for r in sources.iter()? {
            let (k, v) = r?;
            let src: SourceRecord = decode_row(k.value(), v.value(), "data source")?;
            if src.owner == owner {
                linked.push(src);
            }
        }
        let mut out = Vec::new();
        for r in creds.iter()? {
            let (k, v) = r?;
            let rec: CredentialRecord = decode_row(k.value(), v.value(), "credential")?;
            if rec.owner != owner {
                continue;
            }
            let state = states
                .get(rec.id)?
                .map(|v| decode(v.value(), "credential state"))
                .transpose()?
                .unwrap_or_default();
            out.push(CredentialSummary {
                id: rec.id,
                platform: rec.platform,
                title: rec.title,
                version: rec.version,
                field_names: rec.fields.iter().map(|f| f.name.clone()).collect(),
                created_ms: rec.created_ms,
                updated_ms: rec.updated_ms,
                sources: linked
                    .iter()
                    .filter(|s| s.credential == Some(rec.id))
                    .map(|s| (s.id, s.name.clone()))
                    .collect(),
                state,
            });
        }
        Ok(out)
    }

    /// Writes a new version of credential `id` with `changes` applied over the
    /// current fields, in one transaction, checking that `owner` owns it.
    /// Clears a broken mark. Returns the new version.
    pub fn update_credential(
        &self,
        id: CredentialId,
        owner: &str,
        changes: &SecretFields,
    ) -> Result<u32> {
        self.update_credential_audited(id, owner, changes, WriteAudit::None)
    }

    /// [`Store::update_credential`] by a plugin (a token refresh), compared
    /// and set: refused with [`StoreError::VersionChanged`] unless the
    /// credential is still at `write.based_on` (when given), so that a
    /// refresh finishing after a reconnect cannot undo it. Recorded in the
    /// audit log in the same transaction: one granted `update` record per
    /// field written (its name, never its value), naming the data source,
    /// plugin and new version.
    pub fn update_credential_from_plugin(
        &self,
        id: CredentialId,
        owner: &str,
        changes: &SecretFields,
        write: &PluginWrite<'_>,
    ) -> Result<u32> {
        self.update_credential_audited(id, owner, changes, WriteAudit::Plugin(write))
    }

    /// [`Store::update_credential`] by a person (reconnecting), recorded in the
    /// audit log in the same transaction: one `manage` record per field
    /// changed (its name, never its value), naming the data source and
    /// plugin of `by` and saying why.
    pub fn update_credential_by(
        &self,
        id: CredentialId,
        owner: &str,
        changes: &SecretFields,
        by: &UpdatedBy<'_>,
    ) -> Result<u32> {
        self.update_credential_audited(id, owner, changes, WriteAudit::By(by))
    }

    fn update_credential_audited(
        &self,
        id: CredentialId,
        owner: &str,
        changes: &SecretFields,
        by: WriteAudit<'_>,
    ) -> Result<u32> {
        check_secret_values(changes)?;
        if let Some(title) = by.title() {
            super::check_title(title)?;
        }
        self.with_current_key(|keyring| {
            self.update_credential_once(keyring, id, owner, changes, by)
        })
    }

    fn update_credential_once(
        &self,
        keyring: &Keyring,
        id: CredentialId,
        owner: &str,
        changes: &SecretFields,
        by: WriteAudit<'_>,
    ) -> Result<u32> {
        let txn = self.db().begin_write()?;
        self.require_current_key(&txn.open_table(super::META)?, keyring)?;
        let version = {
            let mut creds = txn.open_table(CREDENTIALS)?;
            let mut rec: CredentialRecord = match creds.get(id)? {
                Some(v) => decode_row(id, v.value(), "credential")?,
                None => None.ok_or_else(|| no_such(owner, id))?,
            };
            if rec.owner != owner {
                return Err(no_such(owner, id));
            }
            if let WriteAudit::Plugin(PluginWrite {
                based_on: Some(read),
                ..
            }) = by
                && *read != rec.version
            {
                return Err(StoreError::VersionChanged {
                    id,
                    read: *read,
                    current: rec.version,
                });
            }
            let mut fields = open_fields(keyring, &rec, None)?;
            for (name, value) in changes.iter() {
                fields.insert(name, value.clone());
            }
            rec.version += 1;
            rec.updated_ms = now_ms();
            if let Some(title) = by.title() {
                rec.title = title.to_owned();
            }
            seal_into(keyring, &mut rec, &fields)?;
            creds.insert(id, encode(&rec)?.as_slice())?;
            let mut states = txn.open_table(CREDENTIAL_STATE)?;
            let mut state: CredentialState = states
                .get(id)?
                .map(|v| decode(v.value(), "credential state"))
                .transpose()?
                .unwrap_or_default();
            state.broken = None;
            states.insert(id, encode(&state)?.as_slice())?;
            rec.version
        };
        let at_ms = now_ms();
        let record =
            |field: Option<&str>, source, plugin: Option<&str>, action, detail| AuditRecord {
                at_ms,
                user: owner.to_owned(),
                source,
                plugin: plugin.map(str::to_owned),
                credential: Some(id),
                field: field.map(str::to_owned),
                action,
                granted: true,
                detail,
            };
        let records: Vec<AuditRecord> = match by {
            WriteAudit::None => Vec::new(),
            WriteAudit::By(by) => {
                let mut records: Vec<AuditRecord> = changes
                    .names()
                    .map(|field| {
                        let detail = format!("{}: version {version}", by.why);
                        record(
                            Some(field),
                            by.source,
                            by.plugin,
                            AuditAction::Manage,
                            detail,
                        )
                    })
                    .collect();
                if by.title.is_some() {
                    records.push(record(
                        None,
                        by.source,
                        by.plugin,
                        AuditAction::Manage,
                        "renamed".into(),
                    ));
                }
                records
            }
            WriteAudit::Plugin(w) => changes
                .names()
                .map(|field| {
                    let detail = format!("version {version}");
                    record(
                        Some(field),
                        w.source,
                        Some(w.plugin),
                        AuditAction::Update,
                        detail,
                    )
                })
                .collect(),
        };
        append_in(&txn, &records)?;
        txn.commit()?;
        Ok(version)
    }

    /// How credential `id` has fared (last use, broken).
    pub fn credential_state(&self, id: CredentialId) -> Result<CredentialState> {
        let txn = self.db().begin_read()?;
        let states = txn.open_table(CREDENTIAL_STATE)?;
        Ok(states
            .get(id)?
            .map(|v| decode(v.value(), "credential state"))
            .transpose()?
            .unwrap_or_default())
    }

    /// Records that credentials were used (batched after an invocation).
    pub fn touch_credentials(&self, used: &[(CredentialId, u64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write()?;
        touch_in(&txn, used)?;
        txn.commit()?;
        Ok(())
    }

    /// Marks a credential broken: the platform rejected it.
    pub fn mark_broken(&self, id: CredentialId, message: &str) -> Result<()> {
        let broken = Broken {
            at_ms: now_ms(),
            message: message.chars().take(500).collect(),
        };
        self.update_states(std::iter::once((id, move |s: &mut CredentialState| {
            s.broken = Some(broken.clone());
        })))
    }

    /// Marks a credential broken because an attempt that started at
    /// `attempt_ms` was rejected, unless a newer version was written since
    /// by someone else (a reconnect fixed it meanwhile): the version the
    /// attempt itself wrote (`own`, a token it refreshed) does not count.
    /// Checked and written in one transaction. Returns whether it was marked.
    pub fn mark_broken_unless_updated(
        &self,
        id: CredentialId,
        message: &str,
        attempt_ms: u64,
        own: Option<u32>,
    ) -> Result<bool> {
        let txn = self.db().begin_write()?;
        let marked = {
            let creds = txn.open_table(CREDENTIALS)?;
            let record: Option<CredentialRecord> = creds
                .get(id)?
                .map(|v| decode_row(id, v.value(), "credential"))
                .transpose()?;
            match record {
                Some(r) if r.updated_ms <= attempt_ms || own == Some(r.version) => {
                    let mut states = txn.open_table(CREDENTIAL_STATE)?;
                    let mut state: CredentialState = states
                        .get(id)?
                        .map(|v| decode(v.value(), "credential state"))
                        .transpose()?
                        .unwrap_or_default();
                    state.broken = Some(Broken {
                        at_ms: now_ms(),
                        message: message.chars().take(500).collect(),
                    });
                    states.insert(id, encode(&state)?.as_slice())?;
                    true
                }
                _ => false,
            }
        };
        txn.commit()?;
        Ok(marked)
    }

    fn update_states<F: FnMut(&mut CredentialState)>(
        &self,
        changes: impl Iterator<Item = (CredentialId, F)>,
    ) -> Result<()> {
        let txn = self.db().begin_write()?;
        update_states_in(&txn, changes)?;
        txn.commit()?;
        Ok(())
    }

    /// Writes a credential record as it is, without any check. For repair
    /// tools and tests that must simulate a damaged or tampered database;
    /// the secret choke point still checks every use.
    pub fn put_credential_record_unchecked(&self, record: &CredentialRecord) -> Result<()> {
        self.put_credential_row_unchecked(record.id, record)
    }

    /// Writes a credential record under row `key`, whatever id it names,
    /// without any check: how tests simulate rows swapped in the file.
    pub fn put_credential_row_unchecked(
        &self,
        key: CredentialId,
        record: &CredentialRecord,
    ) -> Result<()> {
        let txn = self.db().begin_write()?;
        txn.open_table(CREDENTIALS)?
            .insert(key, encode(record)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

/// Within `txn`, moves the last use of each credential in `used` forward to
/// the time given (never back); credentials that are gone are skipped.
pub(super) fn touch_in(txn: &redb::WriteTransaction, used: &[(CredentialId, u64)]) -> Result<()> {
    update_states_in(
        txn,
        used.iter().map(|&(id, at)| {
            (id, move |s: &mut CredentialState| {
                s.last_used_ms = Some(s.last_used_ms.map_or(at, |old| old.max(at)));
            })
        }),
    )
}

/// Within `txn`, applies each change to the state of its credential; those
/// that are gone are skipped.
fn update_states_in<F: FnMut(&mut CredentialState)>(
    txn: &redb::WriteTransaction,
    changes: impl Iterator<Item = (CredentialId, F)>,
) -> Result<()> {
    let creds = txn.open_table(CREDENTIALS)?;
    let mut states = txn.open_table(CREDENTIAL_STATE)?;
    for (id, mut change) in changes {
        if creds.get(id)?.is_none() {
            continue;
        }
        let mut state: CredentialState = states
            .get(id)?
            .map(|v| decode(v.value(), "credential state"))
            .transpose()?
            .unwrap_or_default();
        change(&mut state);
        states.insert(id, encode(&state)?.as_slice())?;
    }
    Ok(())
}

pub(super) fn no_such(owner: &str, id: CredentialId) -> StoreError {
    StoreError::NoSuchCredential {
        user: owner.to_owned(),
        id,
    }
}
