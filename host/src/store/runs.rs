//! Run history and schedules.
//!
//! A successful run is committed in one transaction: its record (with the
//! output file's final name) and the data source's new cursor. The output
//! file is renamed into place only after that commit, and a `.partial` file
//! left by a crash is finished or removed at the next start depending on
//! whether its run was committed. So a data source's records appear exactly
//! once: never skipped, never duplicated.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::model::{SourceId, decode, encode};
use super::{CURSORS, RUNS, Result, SCHEDULES, Store, next_id};

/// One attempt within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One run of one data source, with every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Id (assigned when stored).
    pub id: u64,
    /// The data source.
    pub source: SourceId,
    /// The data source's name at the time.
    pub source_name: String,
    /// When the first attempt started.
    pub started_ms: u64,
    /// How long all attempts and waits took.
    pub duration_ms: u64,
    /// Records written (successful runs).
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// `ok`, or the error kind (`auth-failed`, `rate-limited`, …).
    pub outcome: String,
    /// The final error message, if it failed.
    pub error: Option<String>,
    /// The output file, if it succeeded.
    pub output: Option<String>,
}

/// When a data source is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// Every so many seconds after the last run started.
    Every(u64),
    /// A cron expression (with seconds field optional), UTC.
    Cron(String),
}

impl Store {
    /// Records a successful run and the data source's new cursor, atomically.
    pub fn commit_run(&self, mut run: RunRecord, cursor: Option<&str>) -> Result<RunRecord> {
        let txn = self.db().begin_write()?;
        run.id = next_id(&txn, "run")?;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            match cursor {
                Some(c) => {
                    cursors.insert(run.source, c)?;
                }
                None => {
                    cursors.remove(run.source)?;
                }
            }
            txn.open_table(RUNS)?
                .insert(run.id, encode(&run)?.as_slice())?;
        }
        txn.commit()?;
        Ok(run)
    }

    /// Records many finished runs in one transaction (one durable commit),
    /// in order: each with its data source's new cursor if it succeeded
    /// (`Some(cursor)`, `Some(None)` clearing it), or leaving the cursor as
    /// it is (`None`, a failed run). Returns the runs with their ids. The
    /// scheduler's group commit; all or nothing.
    pub fn commit_runs(
        &self,
        runs: Vec<(RunRecord, Option<Option<String>>)>,
    ) -> Result<Vec<RunRecord>> {
        let txn = self.db().begin_write()?;
        let mut out = Vec::with_capacity(runs.len());
        {
            let mut cursors = txn.open_table(CURSORS)?;
            let mut table = txn.open_table(RUNS)?;
            for (mut run, cursor) in runs {
                run.id = next_id(&txn, "run")?;
                match cursor {
                    Some(Some(c)) => {
                        cursors.insert(run.source, c.as_str())?;
                    }
                    Some(None) => {
                        cursors.remove(run.source)?;
                    }
                    None => {}
                }
                table.insert(run.id, encode(&run)?.as_slice())?;
                out.push(run);
            }
        }
        txn.commit()?;
        Ok(out)
    }

    /// Records a failed run (no cursor change).
    pub fn record_run(&self, mut run: RunRecord) -> Result<RunRecord> {
        let txn = self.db().begin_write()?;
        run.id = next_id(&txn, "run")?;
        txn.open_table(RUNS)?
            .insert(run.id, encode(&run)?.as_slice())?;
        txn.commit()?;
        Ok(run)
    }

    /// Runs, oldest first; only `source`'s if given; at most the last `limit`.
    pub fn runs(&self, source: Option<SourceId>, limit: usize) -> Result<Vec<RunRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(RUNS)?;
        let mut out = Vec::new();
        for r in table.iter()?.rev() {
            let run: RunRecord = decode(r?.1.value(), "run")?;
            if source.is_none_or(|s| s == run.source) {
                out.push(run);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Whether a committed run wrote the output file `path`.
    pub fn run_wrote(&self, path: &str) -> Result<bool> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(RUNS)?;
        for r in table.iter()?.rev() {
            let run: RunRecord = decode(r?.1.value(), "run")?;
            if run.output.as_deref() == Some(path) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sets or clears a data source's schedule.
    pub fn set_schedule(&self, source: SourceId, schedule: Option<&Schedule>) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            let mut table = txn.open_table(SCHEDULES)?;
            match schedule {
                Some(s) => {
                    table.insert(source, encode(s)?.as_slice())?;
                }
                None => {
                    table.remove(source)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A data source's schedule, if it has one.
    pub fn schedule(&self, source: SourceId) -> Result<Option<Schedule>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(SCHEDULES)?;
        table
            .get(source)?
            .map(|v| decode(v.value(), "schedule"))
            .transpose()
    }

    /// When each data source's last run started (ms), by data source.
    pub fn last_run_starts(&self) -> Result<std::collections::HashMap<SourceId, u64>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(RUNS)?;
        let mut out = std::collections::HashMap::new();
        for r in table.iter()? {
            let run: RunRecord = decode(r?.1.value(), "run")?;
            let e = out.entry(run.source).or_insert(0);
            *e = (*e).max(run.started_ms);
        }
        Ok(out)
    }
}
