//! The audit log: every secret request and credential change, never a value.

use redb::{ReadableDatabase, ReadableTable};

use super::model::{AuditRecord, SourceId, decode, encode};
use super::{AUDIT, Result, Store};

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user's.
    pub user: Option<String>,
    /// Only this data source's.
    pub source: Option<SourceId>,
    /// Only at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

impl AuditFilter {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.user.as_ref().is_none_or(|u| *u == r.user)
            && self.source.is_none_or(|s| Some(s) == r.source)
            && self.since_ms.is_none_or(|t| r.at_ms >= t)
    }
}

pub(super) fn append_in(txn: &redb::WriteTransaction, records: &[AuditRecord]) -> Result<()> {
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
