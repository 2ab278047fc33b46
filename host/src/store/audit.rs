//! The audit log: every secret request and credential change, never a value.

use redb::{ReadableDatabase, ReadableTable};

use super::model::{AuditRecord, CredentialId, SourceId, decode, encode};
use super::{AUDIT, Result, Store};

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user's (names compared ignoring case, as user names are).
    pub user: Option<String>,
    /// Only this data source's.
    pub source: Option<SourceId>,
    /// Only these data sources' (any of them), unless empty: the data
    /// sources a name stood for, removed ones included.
    pub sources: Vec<SourceId>,
    /// Only at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

impl AuditFilter {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| u.eq_ignore_ascii_case(&r.user))
            && self.source.is_none_or(|s| Some(s) == r.source)
            && (self.sources.is_empty() || r.source.is_some_and(|s| self.sources.contains(&s)))
            && self.since_ms.is_none_or(|t| r.at_ms >= t)
    }
}

pub(super) fn append_in(txn: &redb::WriteTransaction, records: &[AuditRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(AUDIT)?;
    let first = table.last()?.map_or(0, |(k, _)| k.value()) + 1;
    for (seq, record) in (first..).zip(records) {
        table.insert(seq, encode(record)?.as_slice())?;
    }
    Ok(())
}

impl Store {
    /// Appends audit records in one transaction.
    pub fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write()?;
        append_in(&txn, records)?;
        txn.commit()?;
        Ok(())
    }

    /// Appends the audit records of secret requests and moves the last use
    /// of the credentials they used forward (to the time given with each,
    /// never back; credentials that are gone are skipped), in one
    /// transaction: one durable commit for both, all or nothing. The
    /// broker's flush.
    pub fn record_secret_use(
        &self,
        records: &[AuditRecord],
        used: &[(CredentialId, u64)],
    ) -> Result<()> {
        if records.is_empty() && used.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write()?;
        append_in(&txn, records)?;
        super::credentials::touch_in(&txn, used)?;
        txn.commit()?;
        Ok(())
    }

    /// The user name (as recorded) of audit records of user `name`, compared
    /// ignoring case, if there are any: a removed user's records stay
    /// searchable by name.
    pub fn audited_user(&self, name: &str) -> Result<Option<String>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        for r in table.iter()?.rev() {
            let record: AuditRecord = decode(r?.1.value(), "audit record")?;
            if record.user.eq_ignore_ascii_case(name) {
                return Ok(Some(record.user));
            }
        }
        Ok(None)
    }

    /// Audit records matching `filter`, oldest first.
    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for r in table.iter()? {
            let record: AuditRecord = decode(r?.1.value(), "audit record")?;
            if filter.matches(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;
    use crate::secret::{SecretFields, SecretString};
    use crate::store::model::AuditAction;
    use crate::store::{CredentialChoice, NewSecrets, NewSource};

    fn inject(at_ms: u64, credential: CredentialId) -> AuditRecord {
        AuditRecord {
            at_ms,
            user: "alice".into(),
            source: Some(1),
            plugin: Some("adsample".into()),
            credential: Some(credential),
            field: Some("access_token".into()),
            action: AuditAction::Inject,
            granted: true,
            detail: String::new(),
        }
    }

    #[test]
    fn record_secret_use_writes_audit_records_and_last_use_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        store.add_user("alice").unwrap();
        let mut fields = SecretFields::new();
        fields.insert("access_token", SecretString::new("t".into()));
        let source = store
            .connect(NewSource {
                name: Some("s".into()),
                owner: "alice".into(),
                platform: "adsample".into(),
                config: Vec::new(),
                credential: CredentialChoice::New(NewSecrets {
                    title: "t".into(),
                    fields,
                }),
            })
            .unwrap();
        let cred = source.credential.unwrap();
        let before = store.audit(&AuditFilter::default()).unwrap().len();

        store
            .record_secret_use(
                &[inject(5_000, cred), inject(6_000, cred)],
                &[(cred, 6_000)],
            )
            .unwrap();
        let audit = store.audit(&AuditFilter::default()).unwrap();
        assert_eq!(audit.len(), before + 2);
        assert_eq!(audit[before..], [inject(5_000, cred), inject(6_000, cred)]);
        assert_eq!(
            store.credential_state(cred).unwrap().last_used_ms,
            Some(6_000)
        );

        // The last use never moves back; a credential that is gone is
        // skipped without failing the write.
        store
            .record_secret_use(&[inject(7_000, cred)], &[(cred, 4_000), (9_999, 1)])
            .unwrap();
        assert_eq!(
            store.credential_state(cred).unwrap().last_used_ms,
            Some(6_000)
        );
        assert_eq!(store.credential_state(9_999).unwrap().last_used_ms, None);
        assert_eq!(
            store.audit(&AuditFilter::default()).unwrap().len(),
            before + 3
        );

        // Last-use times alone are written too.
        store.record_secret_use(&[], &[(cred, 8_000)]).unwrap();
        assert_eq!(
            store.credential_state(cred).unwrap().last_used_ms,
            Some(8_000)
        );
        store.record_secret_use(&[], &[]).unwrap();
    }
}
