//! Managing data sources: finding one of a user's, editing its settings,
//! removing it.
//!
//! A user names their data sources by name (ignoring case) or id. Another
//! user's data source answers exactly like one that does not exist, and the
//! refused attempt is audited, so that names cannot be probed.
//!
//! Removing a data source deletes it, its cursor and its schedule, in one
//! transaction; its run history and audit records stay, and a small record
//! of it (id, name, owner, platform) is kept in `removed_sources` so that
//! both remain searchable by its name. Its credential stays unless asked
//! to delete it too and no other data source uses it.

use redb::{ReadableDatabase, ReadableTable};

use super::audit::append_in;
use super::manage::{manage_audit, sources_using};
use super::model::{
    AuditRecord, CredentialId, RemovedSource, SourceId, SourceRecord, decode, decode_row, encode,
};
use super::{
    CREDENTIAL_STATE, CREDENTIALS, CURSORS, REMOVED_SOURCES, Result, SCHEDULES, SOURCE_NAMES,
    SOURCES, Store, StoreError, now_ms, shown,
};

/// What removing a data source did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRemoval {
    /// The data source as it was.
    pub source: SourceRecord,
    /// Its credential, deleted with it (`--delete-credential`).
    pub deleted_credential: Option<CredentialId>,
    /// The other data sources using its credential (which is kept then).
    pub kept_for: Vec<String>,
}

impl Store {
    /// Data source `name` (by name ignoring case, or id) if `user` owns it.
    /// Otherwise the attempt (`action`, e.g. "reconnect") is audited (the user, the data
    /// source if there is one, why) and answered with
    /// [`StoreError::NoSuchSourceOf`], whether it exists or not.
    pub fn owned_source(&self, name: &str, user: &str, action: &str) -> Result<SourceRecord> {
        let found = self.sources_matching(name)?;
        let mut own: Vec<SourceRecord> =
            found.iter().filter(|s| s.owner == user).cloned().collect();
        match own.len() {
            1 => return Ok(own.remove(0)),
            0 => {}
            _ => {
                return Err(StoreError::Ambiguous {
                    what: "data source",
                    given: name.to_owned(),
                    matches: own.into_iter().map(|s| s.name).collect(),
                });
            }
        }
        let answer = StoreError::NoSuchSourceOf {
            user: user.to_owned(),
            name: name.to_owned(),
        };
        let (source, plugin, reason) = match found.first() {
            Some(s) => (
                Some(s.id),
                Some(s.platform.as_str()),
                "the data source belongs to another user".to_owned(),
            ),
            None => (None, None, format!("no data source `{}`", shown(name))),
        };
        Err(self.refuse_manage(
            user,
            None,
            source,
            plugin,
            format!("{action} refused: {reason}"),
            answer,
        ))
    }

    /// Replaces the settings of `owner`'s data source `id` with `config`
    /// (already checked against the plugin's spec), auditing the names of
    /// the settings that changed (`changed`; values are not recorded).
    pub fn set_source_config(
        &self,
        id: SourceId,
        owner: &str,
        config: Vec<(String, String)>,
        changed: &[String],
    ) -> Result<SourceRecord> {
        let txn = self.db().begin_write()?;
        let mut record: SourceRecord = match txn.open_table(SOURCES)?.get(id)? {
            Some(v) => decode_row(id, v.value(), "data source")?,
            None => return Err(StoreError::UnknownSource(id.to_string())),
        };
        if record.owner != owner {
            return Err(StoreError::NoSuchSourceOf {
                user: owner.to_owned(),
                name: id.to_string(),
            });
        }
        record.config = config;
        txn.open_table(SOURCES)?
            .insert(id, encode(&record)?.as_slice())?;
        let mut audit = manage_audit(
            owner,
            record.credential,
            format!("settings changed: {}", changed.join(", ")),
        );
        audit.source = Some(id);
        audit.plugin = Some(record.platform.clone());
        append_in(&txn, &[audit])?;
        txn.commit()?;
        Ok(record)
    }

    /// Removes `owner`'s data source `id`: the data source, its cursor and
    /// its schedule, in one transaction, keeping its run history and audit
    /// records (see the module documentation). With `delete_credential`,
    /// its credential is deleted too (ciphertext and wrapped key) unless
    /// another data source uses it.
    pub fn remove_source(
        &self,
        id: SourceId,
        owner: &str,
        delete_credential: bool,
    ) -> Result<SourceRemoval> {
        let txn = self.db().begin_write()?;
        let record: SourceRecord = match txn.open_table(SOURCES)?.get(id)? {
            Some(v) => decode_row(id, v.value(), "data source")?,
            None => return Err(StoreError::UnknownSource(id.to_string())),
        };
        if record.owner != owner {
            return Err(StoreError::NoSuchSourceOf {
                user: owner.to_owned(),
                name: id.to_string(),
            });
        }
        remove_source_in(&txn, &record, now_ms())?;
        let mut removal = SourceRemoval {
            source: record.clone(),
            deleted_credential: None,
            kept_for: Vec::new(),
        };
        if let Some(credential) = record.credential {
            let others = sources_using(&txn, credential)?;
            if !others.is_empty() {
                removal.kept_for = others.into_iter().map(|s| s.name).collect();
            } else if delete_credential {
                txn.open_table(CREDENTIALS)?.remove(credential)?;
                txn.open_table(CREDENTIAL_STATE)?.remove(credential)?;
                let mut audit = manage_audit(
                    owner,
                    Some(credential),
                    format!("deleted with data source `{}`", record.name),
                );
                audit.source = Some(id);
                audit.plugin = Some(record.platform.clone());
                append_in(&txn, &[audit])?;
                removal.deleted_credential = Some(credential);
            }
        }
        txn.commit()?;
        Ok(removal)
    }

    /// The removed data sources `name` stands for: by id if it is a number,
    /// else every one of that name (ignoring case; a name may have been
    /// used again after its data source was removed).
    pub fn removed_sources_named(&self, name: &str) -> Result<Vec<RemovedSource>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(REMOVED_SOURCES)?;
        let id = name.parse::<SourceId>().ok();
        let mut out = Vec::new();
        for r in table.iter()? {
            let removed: RemovedSource = decode(r?.1.value(), "removed data source")?;
            if Some(removed.id) == id || removed.name.eq_ignore_ascii_case(name) {
                out.push(removed);
            }
        }
        Ok(out)
    }

    /// The ids `name` stands for when searching history (the audit log,
    /// runs): the data source of that name or id if it exists, else the
    /// removed ones of that name or id. None at all is
    /// [`StoreError::UnknownSource`].
    pub fn source_ids_for_history(&self, name: &str) -> Result<Vec<SourceId>> {
        match self.find_source(name) {
            Ok(source) => Ok(vec![source.id]),
            Err(StoreError::UnknownSource(_)) => {
                let removed = self.removed_sources_named(name)?;
                if removed.is_empty() {
                    Err(StoreError::UnknownSource(name.to_owned()))
                } else {
                    Ok(removed.into_iter().map(|r| r.id).collect())
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Removes data source `record` within `txn`: the record, its name, cursor
/// and schedule; keeps what is needed to find its history by name, and
/// audits the removal.
pub(super) fn remove_source_in(
    txn: &redb::WriteTransaction,
    record: &SourceRecord,
    now: u64,
) -> Result<()> {
    txn.open_table(SOURCES)?.remove(record.id)?;
    txn.open_table(SOURCE_NAMES)?.remove(record.name.as_str())?;
    txn.open_table(CURSORS)?.remove(record.id)?;
    txn.open_table(SCHEDULES)?.remove(record.id)?;
    let removed = RemovedSource {
        id: record.id,
        name: record.name.clone(),
        owner: record.owner.clone(),
        platform: record.platform.clone(),
        removed_ms: now,
    };
    txn.open_table(REMOVED_SOURCES)?
        .insert(record.id, encode(&removed)?.as_slice())?;
    let mut audit: AuditRecord = manage_audit(
        &record.owner,
        record.credential,
        format!("removed data source `{}`", record.name),
    );
    audit.at_ms = now;
    audit.source = Some(record.id);
    audit.plugin = Some(record.platform.clone());
    append_in(txn, &[audit])?;
    Ok(())
}
