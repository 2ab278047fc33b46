//! Managing credentials and users: rename, delete (with detach), remove user.
//!
//! Deleting a credential removes its record (sealed fields and wrapped data
//! key) and its state; the data sources that used it are left visibly
//! disconnected. Removing a user removes their credentials and data sources
//! too, so no orphaned secret is left behind.
//!
//! A refused attempt (another user's credential, or none with that id) is
//! audited, and answered exactly like an id that does not exist.

use redb::ReadableTable;

use super::audit::append_in;
use super::credentials::no_such;
use super::model::{
    AuditAction, AuditRecord, CredentialId, CredentialRecord, SourceId, SourceRecord, decode_row,
    encode,
};
use super::{
    CREDENTIAL_STATE, CREDENTIALS, Result, SOURCES, Store, StoreError, USERS, check_title, now_ms,
};

/// What deleting a credential or removing a user did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Credentials removed.
    pub credentials: Vec<CredentialId>,
    /// Data sources left without a credential (detached).
    pub detached: Vec<String>,
    /// Data sources removed.
    pub removed_sources: Vec<String>,
    /// Data sources removed, by id and name (their output directories are
    /// the caller's to move aside).
    pub removed: Vec<(SourceId, String)>,
}

/// Credential `id` if `owner` owns it; otherwise why not (for the audit
/// log only: the answer is the same either way).
fn owned_credential(
    txn: &redb::WriteTransaction,
    id: CredentialId,
    owner: &str,
) -> Result<std::result::Result<CredentialRecord, &'static str>> {
    let creds = txn.open_table(CREDENTIALS)?;
    let record: Option<CredentialRecord> = creds
        .get(id)?
        .map(|v| decode_row(id, v.value(), "credential"))
        .transpose()?;
    Ok(match record {
        None => Err("no such credential"),
        Some(r) if r.owner != owner => Err("the credential belongs to another user"),
        Some(r) => Ok(r),
    })
}

pub(super) fn sources_using(
    txn: &redb::WriteTransaction,
    id: CredentialId,
) -> Result<Vec<SourceRecord>> {
    let sources = txn.open_table(SOURCES)?;
    let mut out = Vec::new();
    for r in sources.iter()? {
        let (k, v) = r?;
        let s: SourceRecord = decode_row(k.value(), v.value(), "data source")?;
        if s.credential == Some(id) {
            out.push(s);
        }
    }
    Ok(out)
}

pub(super) fn manage_audit(
    owner: &str,
    credential: Option<CredentialId>,
    detail: String,
) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        user: owner.to_owned(),
        source: None,
        plugin: None,
        credential,
        field: None,
        action: AuditAction::Manage,
        granted: true,
        detail,
    }
}

impl Store {
    /// Audits a refused management attempt by `user` (`what`, e.g.
    /// "rename", on credential `credential` or data source `source`, for
    /// `reason`) and returns `answer`, the error to reply with: the same
    /// as for a target that does not exist. An audit failure is the error
    /// instead.
    pub(super) fn refuse_manage(
        &self,
        user: &str,
        credential: Option<CredentialId>,
        source: Option<SourceId>,
        plugin: Option<&str>,
        detail: String,
        answer: StoreError,
    ) -> StoreError {
        let audited = self.append_audit(&[AuditRecord {
            at_ms: now_ms(),
            user: user.to_owned(),
            source,
            plugin: plugin.map(str::to_owned),
            credential,
            field: None,
            action: AuditAction::Manage,
            granted: false,
            detail,
        }]);
        match audited {
            Ok(()) => answer,
            Err(e) => e,
        }
    }

    /// Renames one of `owner`'s credentials.
    pub fn rename_credential(&self, id: CredentialId, owner: &str, title: &str) -> Result<()> {
        check_title(title)?;
        let txn = self.db().begin_write()?;
        let mut record = match owned_credential(&txn, id, owner)? {
            Ok(record) => record,
            Err(reason) => {
                drop(txn);
                return Err(self.refuse_manage(
                    owner,
                    Some(id),
                    None,
                    None,
                    format!("rename refused: {reason}"),
                    no_such(owner, id),
                ));
            }
        };
        record.title = title.to_owned();
        txn.open_table(CREDENTIALS)?
            .insert(id, encode(&record)?.as_slice())?;
        append_in(&txn, &[manage_audit(owner, Some(id), "renamed".into())])?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes one of `owner`'s credentials: its sealed fields, wrapped key
    /// and state. Refuses while data sources use it unless `detach`, which
    /// leaves them without a credential (shown as needing reconnect).
    pub fn delete_credential(
        &self,
        id: CredentialId,
        owner: &str,
        detach: bool,
    ) -> Result<Deleted> {
        let txn = self.db().begin_write()?;
        if let Err(reason) = owned_credential(&txn, id, owner)? {
            drop(txn);
            return Err(self.refuse_manage(
                owner,
                Some(id),
                None,
                None,
                format!("delete refused: {reason}"),
                no_such(owner, id),
            ));
        }
        let users = sources_using(&txn, id)?;
        if !users.is_empty() && !detach {
            return Err(StoreError::InUse {
                id,
                sources: users.iter().map(|s| s.name.clone()).collect(),
            });
        }
        let mut deleted = Deleted {
            credentials: vec![id],
            ..Deleted::default()
        };
        {
            let mut sources = txn.open_table(SOURCES)?;
            for mut s in users {
                s.credential = None;
                sources.insert(s.id, encode(&s)?.as_slice())?;
                deleted.detached.push(s.name);
            }
            txn.open_table(CREDENTIALS)?.remove(id)?;
            txn.open_table(CREDENTIAL_STATE)?.remove(id)?;
        }
        append_in(
            &txn,
            &[manage_audit(
                owner,
                Some(id),
                format!("deleted; detached: {}", deleted.detached.join(", ")),
            )],
        )?;
        txn.commit()?;
        Ok(deleted)
    }

    /// Removes a user (named ignoring case). If they own credentials or
    /// data sources, refuses unless `purge`, which deletes their
    /// credentials and data sources too (their run history and audit
    /// records stay, searchable by name).
    pub fn remove_user(&self, name: &str, purge: bool) -> Result<Deleted> {
        let txn = self.db().begin_write()?;
        let Some(name) = super::users::resolve_in(&txn, name)? else {
            return Err(StoreError::UnknownUser(name.to_owned()));
        };
        let name = name.as_str();
        let mut creds = Vec::new();
        for r in txn.open_table(CREDENTIALS)?.iter()? {
            let (k, v) = r?;
            let c: CredentialRecord = decode_row(k.value(), v.value(), "credential")?;
            if c.owner == name {
                creds.push(c.id);
            }
        }
        let mut sources = Vec::new();
        for r in txn.open_table(SOURCES)?.iter()? {
            let (k, v) = r?;
            let s: SourceRecord = decode_row(k.value(), v.value(), "data source")?;
            if s.owner == name {
                sources.push(s);
            }
        }
        if (!creds.is_empty() || !sources.is_empty()) && !purge {
            return Err(StoreError::UserOwnsData {
                user: name.to_owned(),
                credentials: creds.len(),
                sources: sources.len(),
            });
        }
        let mut deleted = Deleted {
            credentials: creds.clone(),
            ..Deleted::default()
        };
        {
            let mut cred_table = txn.open_table(CREDENTIALS)?;
            let mut states = txn.open_table(CREDENTIAL_STATE)?;
            for id in &creds {
                cred_table.remove(*id)?;
                states.remove(*id)?;
            }
            let now = now_ms();
            for s in sources {
                super::source_admin::remove_source_in(&txn, &s, now)?;
                deleted.removed.push((s.id, s.name.clone()));
                deleted.removed_sources.push(s.name);
            }
            txn.open_table(USERS)?.remove(name)?;
        }
        append_in(
            &txn,
            &[manage_audit(
                name,
                None,
                format!(
                    "user removed with {}{}",
                    super::owned(deleted.credentials.len(), deleted.removed_sources.len()),
                    if deleted.removed_sources.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", deleted.removed_sources.join(", "))
                    }
                ),
            )],
        )?;
        txn.commit()?;
        Ok(deleted)
    }
}
