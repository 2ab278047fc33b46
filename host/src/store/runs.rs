//! Run history and schedules.
//!
//! A run is recorded when it starts, with the outcome [`RunRecord::RUNNING`],
//! and that record is replaced when it ends. A successful run is committed in
//! one transaction: its record (with the output file's final name, if it
//! wrote records) and the data source's new cursor. The output file is
//! renamed into place only after that commit, and a `.partial` file left by a
//! crash is finished or removed at the next start depending on whether its
//! run was committed. So a data source's records appear exactly once: never
//! skipped, never duplicated. A run whose process died leaves its `running`
//! record behind; the scheduler marks it [`RunRecord::INTERRUPTED`] once it
//! has made sure that no process is running that data source any more.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::model::{SourceId, decode, encode};
use super::{CURSORS, LAST_RUNS, RUNNING, RUNS, Result, SCHEDULES, Store, UNPUBLISHED, next_id};

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
    /// `ok`, the error kind (`auth-failed`, `rate-limited`, …),
    /// [`RunRecord::RUNNING`] while it runs, or [`RunRecord::INTERRUPTED`].
    pub outcome: String,
    /// The final error message, if it failed.
    pub error: Option<String>,
    /// The output file, if it succeeded and fetched records.
    pub output: Option<String>,
}

impl RunRecord {
    /// The outcome of a run that has started and not yet ended.
    pub const RUNNING: &'static str = "running";
    /// The outcome of a run whose process stopped before it ended (killed,
    /// crashed, the machine lost power): nothing it fetched was kept and its
    /// data source's cursor was not moved.
    pub const INTERRUPTED: &'static str = "interrupted";
    /// The error text of an interrupted run.
    pub const INTERRUPTED_ERROR: &'static str = "the intake process stopped before this run \
        finished (killed or crashed); its partial output was discarded and its cursor left as \
        it was, so the next run fetches those records again";

    /// The outcome of a run stopped by a shutdown or its caller.
    pub const CANCELLED: &'static str = "cancelled";

    /// Whether the run has ended (neither running nor interrupted).
    pub fn ended(&self) -> bool {
        self.outcome != Self::RUNNING && self.outcome != Self::INTERRUPTED
    }

    /// Whether the run counts as its data source's last run for schedules:
    /// it ended, and was not cancelled (a run stopped by a shutdown did not
    /// fetch what it was due to, so its data source is due again as if it
    /// had not run).
    pub fn counts_for_schedule(&self) -> bool {
        self.ended() && self.outcome != Self::CANCELLED
    }
}

/// A committed run whose output file may not have been renamed into place
/// yet (the rename follows the commit), kept until it is known to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpublished {
    /// The run.
    pub run: u64,
    /// Its data source's name.
    pub source_name: String,
    /// The file's final path (its partial file is this plus `.partial`).
    pub output: String,
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
            note_last_run(&mut txn.open_table(LAST_RUNS)?, &run)?;
            note_running(&mut txn.open_table(RUNNING)?, &run)?;
        }
        txn.commit()?;
        Ok(run)
    }

    /// Records many runs in one transaction (one durable commit), in order:
    /// each with its data source's new cursor if it succeeded (`Some(cursor)`,
    /// `Some(None)` clearing it), or leaving the cursor as it is (`None`: a
    /// failed run, or one that is starting). A run with an id replaces the
    /// record of that id (the `running` record made when it started); one
    /// without (id 0), or whose record is gone, gets a new id. Returns the
    /// runs with their ids. The scheduler's group commit; all or nothing.
    ///
    /// A successful run with an output file is also noted as unpublished
    /// until [`Store::commit_runs`] is told (`published`, run ids) that its
    /// file was renamed into place; see [`Store::unpublished`].
    pub fn commit_runs(
        &self,
        runs: Vec<(RunRecord, Option<Option<String>>)>,
        published: &[u64],
    ) -> Result<Vec<RunRecord>> {
        let txn = self.db().begin_write()?;
        let mut out = Vec::with_capacity(runs.len());
        {
            let mut cursors = txn.open_table(CURSORS)?;
            let mut table = txn.open_table(RUNS)?;
            let mut last = txn.open_table(LAST_RUNS)?;
            let mut running = txn.open_table(RUNNING)?;
            let mut unpublished = txn.open_table(UNPUBLISHED)?;
            for id in published {
                unpublished.remove(*id)?;
            }
            for (mut run, cursor) in runs {
                let succeeded = cursor.is_some();
                if run.id == 0 || table.get(run.id)?.is_none() {
                    run.id = next_id(&txn, "run")?;
                }
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
                note_last_run(&mut last, &run)?;
                note_running(&mut running, &run)?;
                if let (true, Some(output)) = (succeeded, &run.output) {
                    let entry = Unpublished {
                        run: run.id,
                        source_name: run.source_name.clone(),
                        output: output.clone(),
                    };
                    unpublished.insert(run.id, encode(&entry)?.as_slice())?;
                }
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
        note_last_run(&mut txn.open_table(LAST_RUNS)?, &run)?;
        note_running(&mut txn.open_table(RUNNING)?, &run)?;
        txn.commit()?;
        Ok(run)
    }

    /// Committed runs whose output file may still carry its partial name
    /// (the process was killed between the commit and the rename), oldest
    /// first.
    pub fn unpublished(&self) -> Result<Vec<Unpublished>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(UNPUBLISHED)?;
        let mut out = Vec::new();
        for r in table.iter()? {
            out.push(decode(r?.1.value(), "unpublished run")?);
        }
        Ok(out)
    }

    /// Forgets the unpublished entries of `runs`: their files are in place.
    pub fn forget_unpublished(&self, runs: &[u64]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write()?;
        {
            let mut table = txn.open_table(UNPUBLISHED)?;
            for id in runs {
                table.remove(*id)?;
            }
        }
        txn.commit()?;
        Ok(())
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

    /// The runs recorded as [`RunRecord::RUNNING`], oldest first: running
    /// now, in this or another process, or left behind by a process that
    /// died.
    pub fn running_runs(&self) -> Result<Vec<RunRecord>> {
        let txn = self.db().begin_read()?;
        let index = txn.open_table(RUNNING)?;
        let table = txn.open_table(RUNS)?;
        let mut out = Vec::new();
        for r in index.iter()? {
            let id = r?.0.value();
            if let Some(v) = table.get(id)? {
                let run: RunRecord = decode(v.value(), "run")?;
                if run.outcome == RunRecord::RUNNING {
                    out.push(run);
                }
            }
        }
        Ok(out)
    }

    /// Removes the runs that started before `before_ms` (ms since the
    /// epoch) from the history, except any still recorded as running; at
    /// most `max` of them, oldest first, in one transaction. Returns how
    /// many were removed. Cursors, schedules and the last-run index are
    /// kept: a data source's state does not depend on its history.
    pub fn prune_runs(&self, before_ms: u64, max: usize) -> Result<usize> {
        /// Run ids and start times of concurrent processes interleave: look
        /// this far past the first run that is new enough.
        const SLACK_MS: u64 = 3_600_000;
        let txn = self.db().begin_write()?;
        let removed = {
            let mut table = txn.open_table(RUNS)?;
            let mut old = Vec::new();
            for r in table.iter()? {
                let (id, value) = r?;
                let run: RunRecord = decode(value.value(), "run")?;
                if run.started_ms >= before_ms.saturating_add(SLACK_MS) || old.len() >= max {
                    break;
                }
                if run.started_ms < before_ms && run.outcome != RunRecord::RUNNING {
                    old.push(id.value());
                }
            }
            for id in &old {
                table.remove(*id)?;
            }
            old.len()
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Marks run `id` [`RunRecord::INTERRUPTED`] if it is still recorded as
    /// running (checked in the same transaction, so a run that ended
    /// meanwhile keeps its outcome). The caller makes sure that its process
    /// is gone. Returns whether it was marked.
    pub fn mark_interrupted(&self, id: u64) -> Result<bool> {
        let txn = self.db().begin_write()?;
        let marked = {
            let mut table = txn.open_table(RUNS)?;
            let run: Option<RunRecord> = table
                .get(id)?
                .map(|v| decode(v.value(), "run"))
                .transpose()?;
            match run {
                Some(mut run) if run.outcome == RunRecord::RUNNING => {
                    run.outcome = RunRecord::INTERRUPTED.into();
                    run.error = Some(RunRecord::INTERRUPTED_ERROR.into());
                    table.insert(id, encode(&run)?.as_slice())?;
                    true
                }
                _ => false,
            }
        };
        txn.open_table(RUNNING)?.remove(id)?;
        txn.commit()?;
        Ok(marked)
    }

    /// Whether a committed run wrote the output file `file` (a file name,
    /// `RUN.jsonl`) of data source directory `source_dir` (its name).
    /// Matched on those two names, however the output directory was spelt
    /// when the run was recorded (relative or absolute, through a link).
    ///
    /// Looks through runs newest first and stops at runs that started well
    /// before `not_before_ms` (the file's run began then; see
    /// [`crate::scheduler::run_id`]), so that the cost does not grow with the
    /// whole history; `0` looks through all of it.
    pub fn run_wrote(&self, source_dir: &str, file: &str, not_before_ms: u64) -> Result<bool> {
        /// Runs are looked at until they started this long before the file's
        /// run: run ids and start times of concurrent processes interleave.
        const SLACK_MS: u64 = 3_600_000;
        let wanted = std::path::Path::new(source_dir).join(file);
        let txn = self.db().begin_read()?;
        let table = txn.open_table(RUNS)?;
        for r in table.iter()?.rev() {
            let run: RunRecord = decode(r?.1.value(), "run")?;
            if run
                .output
                .as_deref()
                .is_some_and(|o| std::path::Path::new(o).ends_with(&wanted))
            {
                return Ok(true);
            }
            if run.started_ms.saturating_add(SLACK_MS) < not_before_ms {
                break;
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

    /// When each data source's last ended run started (ms), by data source
    /// (see [`RunRecord::counts_for_schedule`]). Runs still running,
    /// interrupted or cancelled do not count: such a run kept nothing, so
    /// its data source is due again as if it had not run. Read from an
    /// index kept with the run history, not the history itself.
    pub fn last_run_starts(&self) -> Result<std::collections::HashMap<SourceId, u64>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(LAST_RUNS)?;
        let mut out = std::collections::HashMap::new();
        for r in table.iter()? {
            let (source, started) = r?;
            out.insert(source.value(), started.value());
        }
        Ok(out)
    }
}

/// Keeps [`LAST_RUNS`] up to date with `run`.
fn note_last_run(table: &mut redb::Table<'_, u64, u64>, run: &RunRecord) -> Result<()> {
    if !run.counts_for_schedule() {
        return Ok(());
    }
    let last = table.get(run.source)?.map_or(0, |v| v.value());
    if run.started_ms > last {
        table.insert(run.source, run.started_ms)?;
    }
    Ok(())
}

/// Keeps [`RUNNING`] up to date with `run` (stored under its id).
fn note_running(table: &mut redb::Table<'_, u64, ()>, run: &RunRecord) -> Result<()> {
    if run.outcome == RunRecord::RUNNING {
        table.insert(run.id, ())?;
    } else {
        table.remove(run.id)?;
    }
    Ok(())
}

/// Builds the indexes of the run history ([`LAST_RUNS`], [`RUNNING`]) from
/// the history itself, for a database written before they existed; safe to
/// run over indexes already up to date.
pub(super) fn backfill_indexes(txn: &redb::WriteTransaction) -> Result<()> {
    let runs = txn.open_table(RUNS)?;
    let mut last = txn.open_table(LAST_RUNS)?;
    let mut running = txn.open_table(RUNNING)?;
    for r in runs.iter()? {
        let run: RunRecord = decode(r?.1.value(), "run")?;
        note_last_run(&mut last, &run)?;
        note_running(&mut running, &run)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;

    fn run(source: SourceId, started_ms: u64, outcome: &str) -> RunRecord {
        RunRecord {
            id: 0,
            source,
            source_name: format!("s{source}"),
            started_ms,
            duration_ms: 0,
            records: 0,
            bytes: 0,
            attempts: Vec::new(),
            outcome: outcome.into(),
            error: None,
            output: None,
        }
    }

    #[test]
    fn a_running_record_is_replaced_or_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        let started = store
            .commit_runs(
                vec![
                    (run(1, 100, RunRecord::RUNNING), None),
                    (run(2, 200, RunRecord::RUNNING), None),
                ],
                &[],
            )
            .unwrap();
        let (a, b) = (started[0].id, started[1].id);
        assert_eq!(store.running_runs().unwrap().len(), 2);
        // Neither counts as a start for schedules yet.
        assert!(store.last_run_starts().unwrap().is_empty());

        // Run `a` ends: its record is replaced, not added to.
        let mut done = run(1, 100, "ok");
        done.id = a;
        store
            .commit_runs(vec![(done, Some(Some("c".into())))], &[])
            .unwrap();
        // Run `b`'s process died.
        assert!(store.mark_interrupted(b).unwrap());
        // A run that ended is never marked, nor one marked already.
        assert!(!store.mark_interrupted(a).unwrap());
        assert!(!store.mark_interrupted(b).unwrap());

        let runs = store.runs(None, 10).unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!((runs[0].id, runs[0].outcome.as_str()), (a, "ok"));
        assert_eq!(
            (runs[1].id, runs[1].outcome.as_str()),
            (b, RunRecord::INTERRUPTED)
        );
        assert_eq!(runs[1].error.as_deref(), Some(RunRecord::INTERRUPTED_ERROR));
        assert!(store.running_runs().unwrap().is_empty());
        assert_eq!(store.cursor(1).unwrap().as_deref(), Some("c"));
        // The interrupted run kept nothing: its data source is due as if it
        // had not run.
        let starts = store.last_run_starts().unwrap();
        assert_eq!(starts.get(&1), Some(&100));
        assert_eq!(starts.get(&2), None);
    }

    #[test]
    fn cancelled_runs_do_not_count_for_schedules_and_the_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path, Keyring::generate().unwrap()).unwrap();
        store
            .commit_runs(
                vec![
                    (run(1, 100, "ok"), Some(None)),
                    (run(1, 300, RunRecord::CANCELLED), None),
                    (run(2, 200, "transient"), None),
                    (run(2, 150, "ok"), Some(None)),
                ],
                &[],
            )
            .unwrap();
        let starts = store.last_run_starts().unwrap();
        assert_eq!(starts.get(&1), Some(&100), "a cancelled run does not count");
        assert_eq!(starts.get(&2), Some(&200), "the latest start counts");

        // A database from before the index: rebuilt from the history when
        // it is opened.
        let txn = store.db().begin_write().unwrap();
        txn.delete_table(LAST_RUNS).unwrap();
        txn.commit().unwrap();
        let keyring = store.keyring().as_ref().clone();
        drop(store);
        let store = Store::open(&path, keyring).unwrap();
        assert_eq!(store.last_run_starts().unwrap(), starts);
    }

    #[test]
    fn run_wrote_matches_however_the_directory_was_spelt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        let mut done = run(1, 1_796_320_393_500, "ok");
        done.output = Some("output/acme-us/20261203T175313Z-003.jsonl".into());
        store.commit_runs(vec![(done, Some(None))], &[]).unwrap();
        let stamp = 1_796_320_393_000; // 2026-12-03T17:53:13Z
        assert!(
            store
                .run_wrote("acme-us", "20261203T175313Z-003.jsonl", stamp)
                .unwrap()
        );
        assert!(
            !store
                .run_wrote("acme-eu", "20261203T175313Z-003.jsonl", stamp)
                .unwrap()
        );
        assert!(
            !store
                .run_wrote("acme-us", "20261203T175313Z-004.jsonl", 0)
                .unwrap()
        );
    }

    #[test]
    fn old_runs_are_pruned_but_running_ones_and_state_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        let committed = store
            .commit_runs(
                vec![
                    (run(1, 100, "ok"), Some(Some("c".into()))),
                    (run(2, 200, RunRecord::RUNNING), None),
                    (run(1, 300, "transient"), None),
                    (run(1, 10_000_000, "ok"), Some(Some("d".into()))),
                ],
                &[],
            )
            .unwrap();
        assert_eq!(store.prune_runs(1_000, 1000).unwrap(), 2);
        let left: Vec<u64> = store
            .runs(None, 100)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, [committed[1].id, committed[3].id]);
        assert_eq!(store.running_runs().unwrap().len(), 1);
        assert_eq!(store.cursor(1).unwrap().as_deref(), Some("d"));
        assert_eq!(store.last_run_starts().unwrap().get(&1), Some(&10_000_000));
        // At most `max` at a time, oldest first.
        store
            .commit_runs(vec![(run(3, 10_000_050, "ok"), None)], &[])
            .unwrap();
        assert_eq!(store.prune_runs(20_000_000, 1).unwrap(), 1);
        let left: Vec<u64> = store
            .runs(None, 100)
            .unwrap()
            .iter()
            .map(|r| r.started_ms)
            .collect();
        assert_eq!(left, [200, 10_000_050]);
    }
}
