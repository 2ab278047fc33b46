//! The scheduler: runs data sources concurrently, retries what is worth
//! retrying, and writes their records exactly once.
//!
//! Each data source runs as its own tokio task, within a global concurrency
//! limit and an optional per-platform limit (platforms rate-limit per
//! account), started in an order that interleaves users so that one user's
//! many data sources do not starve another's. A run is one or more attempts
//! (see [`retry`]); a successful one commits its output file and cursor
//! together (see [`output`]), in a group commit with the other runs that
//! finish meanwhile (see [`commit`]); every run is kept in the run history,
//! from the moment it starts (as `running`), so that a run whose process is
//! killed shows as `interrupted` once a later start finds it (see
//! [`Scheduler::recover_outputs`]). An authentication failure marks the
//! credential broken.
//!
//! [`Scheduler::run_one`] is the entry point for an outside scheduler: it
//! runs one data source's fetch, with cancellation.

mod commit;
mod limits;
mod metrics;
mod output;
pub mod retry;
pub mod schedule;
pub mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::plugin::{FetchOutcome, RunError, Runtime};
use crate::store::{Attempt, RunRecord, SourceId, SourceRecord, Store, now_ms};

use commit::{Committed, Committer, Update};
use limits::Limits;
use retry::Next;

pub use metrics::Metrics;
pub use output::{OutputFile, recover};
pub use retry::RetryPolicy;

/// How one data source's run went.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The data source.
    pub source: SourceRecord,
    /// Records and cursor, or the final error.
    pub outcome: Result<FetchOutcome, RunError>,
    /// How long it took, with retries.
    pub duration: Duration,
    /// Attempts made.
    pub attempts: u32,
    /// The output file of a successful run; `None` for one that fetched no
    /// new records (no file is written then).
    pub output: Option<PathBuf>,
}

/// What [`Scheduler::recover_outputs`] found a crash left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Partial files of committed runs, renamed into place.
    pub published: usize,
    /// Partial files of runs that were not committed, removed.
    pub removed: usize,
    /// Runs recorded as running whose process is gone, marked interrupted.
    pub interrupted: usize,
}

/// How a run is stopped: `drain` stops starting new data sources (those
/// not yet started end as cancelled); `abort` also cancels the ones in
/// flight. A graceful shutdown drains, waits a grace period, then aborts.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Start nothing new.
    pub drain: CancellationToken,
    /// Cancel what is running.
    pub abort: CancellationToken,
}

impl Stop {
    /// Drains now; aborts after `grace` unless everything finished first
    /// (the caller stops waiting on this future then).
    pub async fn graceful(&self, grace: Duration) {
        self.drain.cancel();
        tokio::time::sleep(grace).await;
        self.abort.cancel();
    }
}

/// Runs data sources.
#[derive(Debug, Clone)]
pub struct Scheduler {
    runtime: Arc<RwLock<Arc<Runtime>>>,
    store: Store,
    output_dir: PathBuf,
    limits: Arc<Limits>,
    policy: Arc<Mutex<RetryPolicy>>,
    /// Data sources a platform told to wait longer than the retry policy
    /// waits within a run: not due again before then (ms since the epoch).
    not_before: Arc<Mutex<HashMap<SourceId, u64>>>,
    metrics: Arc<Metrics>,
    committer: Committer,
    /// A shared lock on `OUTPUT/.intake.lock`, held while this process may
    /// write partial files there (see [`Scheduler::recover_outputs`]).
    output_lock: Arc<Mutex<Option<std::fs::File>>>,
}

/// The attempts of one run, before the run is committed.
struct Attempted {
    started: Instant,
    started_ms: u64,
    attempts: Vec<Attempt>,
    outcome: Result<(FetchOutcome, OutputFile), RunError>,
}

impl Scheduler {
    /// A scheduler for `config`'s output directory, limits and retry policy.
    pub fn new(runtime: Arc<Runtime>, store: Store, config: &Config) -> Self {
        Self {
            runtime: Arc::new(RwLock::new(runtime)),
            store: store.clone(),
            // Absolute, so that the paths recorded with runs name the same
            // files however a later process spells the configuration's path.
            output_dir: std::path::absolute(config.resolve(&config.output.dir))
                .unwrap_or_else(|_| config.resolve(&config.output.dir)),
            limits: Arc::new(Limits::new(config)),
            policy: Arc::new(Mutex::new(RetryPolicy::from(&config.scheduler))),
            not_before: Arc::default(),
            metrics: Arc::default(),
            committer: Committer::start(store.clone()),
            output_lock: Arc::default(),
        }
    }

    /// Swaps in new plugins and takes on `config`'s concurrency limits and
    /// retry policy (hot reload); runs in flight keep their plugins and
    /// count against the new limits.
    pub fn replace_runtime(&self, runtime: Arc<Runtime>, config: &Config) {
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = runtime;
        self.limits.apply(config);
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) =
            RetryPolicy::from(&config.scheduler);
    }

    /// The plugins in use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counters for the metrics endpoint.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Repairs what a crash left behind; call before the first run.
    ///
    /// Output files: every process that writes under the output directory
    /// holds a shared lock on `OUTPUT/.intake.lock` from then on. Recovering
    /// them all needs that lock exclusively, so it runs only when no other
    /// `intake run` or `intake serve` is writing there: their in-flight
    /// partial files are never mistaken for a crash's leftovers.
    ///
    /// Run history: a run recorded as running is marked interrupted if its
    /// data source's run lock (`OUTPUT/SOURCE/.lock`) is free, that is, no
    /// process is running that data source (its lock would be held until
    /// its run is committed); its partial files are removed under that lock
    /// too. A run that is live in another process is left alone.
    pub fn recover_outputs(&self) -> std::io::Result<Recovered> {
        std::fs::create_dir_all(&self.output_dir)?;
        let mut held = self.output_lock.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return Ok(Recovered::default());
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.output_dir.join(".intake.lock"))?;
        let mut recovered = match file.try_lock() {
            Ok(()) => {
                let counts = recover(&self.output_dir, &self.store);
                file.unlock()?;
                let (published, removed) = counts?;
                Recovered {
                    published,
                    removed,
                    interrupted: 0,
                }
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(
                    "another intake process is writing to {}; leaving partial files to it",
                    self.output_dir.display()
                );
                Recovered::default()
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        };
        file.lock_shared()?;
        *held = Some(file);
        drop(held);
        recovered.published += self.recover_unpublished()?;
        self.mark_interrupted(&mut recovered)?;
        if recovered.published + recovered.removed > 0 {
            tracing::warn!(
                "recovered the output of interrupted runs: {} files finished, {} partial files removed",
                recovered.published,
                recovered.removed
            );
        }
        Ok(recovered)
    }

    /// Publishes the files of committed runs that a crash left with their
    /// partial names, each under its data source's run lock, whatever other
    /// intake processes are doing (see [`commit`]); `intake serve` calls it
    /// on every tick, so that a run killed in another process is published
    /// without waiting for a restart. Returns how many were published.
    pub fn recover_unpublished(&self) -> std::io::Result<usize> {
        output::recover_unpublished(&self.store)
    }

    /// Marks the runs whose process is gone interrupted (see
    /// [`Scheduler::recover_outputs`]).
    fn mark_interrupted(&self, recovered: &mut Recovered) -> std::io::Result<()> {
        let store_err = |e: crate::store::StoreError| std::io::Error::other(e.to_string());
        for run in self.store.running_runs().map_err(store_err)? {
            if crate::store::check_name("data source name", &run.source_name).is_err() {
                tracing::warn!(
                    "run {} is recorded as running under a data source name that is not valid; left as it is",
                    run.id
                );
                continue;
            }
            let lock = match open_source_lock(&self.output_dir, &run.source_name) {
                Ok(file) => file,
                Err(e) => {
                    tracing::warn!(
                        "cannot check whether run {} of {} is still running: {e}",
                        run.id,
                        run.source_name
                    );
                    continue;
                }
            };
            match lock.try_lock() {
                Ok(()) => {}
                // Running in this or another process.
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => {
                    tracing::warn!(
                        "cannot check whether run {} of {} is still running: {e}",
                        run.id,
                        run.source_name
                    );
                    continue;
                }
            }
            // Its partial file is never published either way (its run was
            // not committed); removing it is tidying up.
            match output::recover_source(&self.output_dir.join(&run.source_name), &self.store) {
                Ok((published, removed)) => {
                    recovered.published += published;
                    recovered.removed += removed;
                }
                Err(e) => tracing::warn!(
                    "cannot remove the partial output of {} (it is removed at a later start): {e}",
                    run.source_name
                ),
            }
            if self.store.mark_interrupted(run.id).map_err(store_err)? {
                recovered.interrupted += 1;
                tracing::warn!(
                    source = %run.source_name,
                    "run {} was interrupted (the intake process running it stopped); \
                     marked so in the run history, its partial output discarded",
                    run.id
                );
            }
        }
        Ok(())
    }

    /// The data sources whose schedule says they are due now.
    pub fn due(&self, now_ms: u64) -> crate::store::Result<Vec<SourceRecord>> {
        let last = self.store.last_run_starts()?;
        let not_before = {
            let mut waits = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
            waits.retain(|_, until| *until > now_ms);
            waits.clone()
        };
        let mut out = Vec::new();
        for source in self.store.sources()? {
            if let Some(s) = self.store.schedule(source.id)?
                && schedule::is_due(&s, last.get(&source.id).copied(), now_ms)
                && !not_before.contains_key(&source.id)
            {
                out.push(source);
            }
        }
        Ok(out)
    }

    /// Runs every data source in `sources`, calling `progress` as each
    /// finishes, and returns their summaries in the order given.
    pub async fn run(
        &self,
        sources: Vec<SourceRecord>,
        stop: &Stop,
        progress: &(dyn Fn(&RunSummary) + Sync),
    ) -> Vec<RunSummary> {
        let batch = run_id();
        let mut tasks = JoinSet::new();
        for (index, source) in fair_order(&sources) {
            let this = self.clone();
            let batch = batch.clone();
            let stop = stop.clone();
            tasks.spawn(async move { (index, this.run_limited(source, &batch, &stop).await) });
        }
        let mut out: Vec<Option<RunSummary>> = vec![None; sources.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, summary)) => {
                    progress(&summary);
                    out[index] = Some(summary);
                }
                Err(e) => tracing::error!("a data source task failed: {e}"),
            }
        }
        out.into_iter()
            .zip(sources)
            .map(|(summary, source)| {
                summary.unwrap_or_else(|| RunSummary {
                    source,
                    outcome: Err(RunError::Host("the run's task panicked".into())),
                    duration: Duration::ZERO,
                    attempts: 0,
                    output: None,
                })
            })
            .collect()
    }

    /// Runs one data source within the global and per-platform limits,
    /// unless the scheduler is draining by the time it gets its turn.
    pub async fn run_limited(&self, source: SourceRecord, batch: &str, stop: &Stop) -> RunSummary {
        let permits = tokio::select! {
            permits = self.limits.acquire(&source.platform, &source.owner) => permits,
            () = stop.drain.cancelled() => return cancelled(source),
        };
        if stop.drain.is_cancelled() {
            return cancelled(source);
        }
        let _running = match self.lock_source(&source) {
            Ok(lock) => lock,
            Err(summary) => return *summary,
        };
        let start = self.record_start(&source);
        let attempted = self.attempt_all(&source, batch, stop, permits).await;
        self.finish(source, start, attempted).await
    }

    /// Records the run as running, with the next group commit; the fetch
    /// does not wait for it ([`Scheduler::finish`] does, and replaces the
    /// record). Called with the data source's run lock held, so that the
    /// record is never mistaken for one whose process died.
    fn record_start(&self, source: &SourceRecord) -> oneshot::Receiver<Committed> {
        self.committer.submit(Update::Started {
            record: RunRecord {
                id: 0,
                source: source.id,
                source_name: source.name.clone(),
                started_ms: now_ms(),
                duration_ms: 0,
                records: 0,
                bytes: 0,
                attempts: Vec::new(),
                outcome: RunRecord::RUNNING.into(),
                error: None,
                output: None,
            },
        })
    }

    /// Takes the data source's run lock (`OUTPUT/SOURCE/.lock`, exclusive),
    /// held until its run is committed, so that two runs of one data source
    /// (in this or another intake process) never fetch from the same cursor
    /// and write its records twice.
    fn lock_source(&self, source: &SourceRecord) -> Result<std::fs::File, Box<RunSummary>> {
        let skipped = |e: RunError| {
            Box::new(RunSummary {
                source: source.clone(),
                outcome: Err(e),
                duration: Duration::ZERO,
                attempts: 0,
                output: None,
            })
        };
        let dir = self.output_dir.join(&source.name);
        let file = open_source_lock(&self.output_dir, &source.name).map_err(|e| {
            skipped(RunError::Host(format!(
                "cannot lock {}: {e}",
                dir.display()
            )))
        })?;
        match file.try_lock() {
            // The directory must be this data source's, not a removed one's.
            Ok(()) => match crate::output_dir::claim(&dir, &file, source.id) {
                Ok(()) => Ok(file),
                Err(e) => {
                    tracing::warn!(source = %source.name, "{e}");
                    let until = now_ms().saturating_add(60_000);
                    let mut waits = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
                    waits.insert(source.id, until);
                    Err(skipped(RunError::Host(e.to_string())))
                }
            },
            Err(std::fs::TryLockError::WouldBlock) => Err(skipped(RunError::Busy(
                "another run of this data source is in progress".into(),
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(skipped(RunError::Host(format!(
                "cannot lock {}: {e}",
                dir.display()
            )))),
        }
    }

    /// Runs one data source now, within the concurrency limits: attempts
    /// with retries, output committed with the cursor, recorded in the run
    /// history. Cancelling `cancel` stops it: a run under way ends at once,
    /// its unfinished output file removed, its cursor kept, and is recorded
    /// as cancelled; one still waiting for a concurrency slot does not start
    /// and is not recorded. Either way the summary's outcome is
    /// [`RunError::Cancelled`].
    pub async fn run_one(
        &self,
        source: SourceRecord,
        batch: &str,
        cancel: &CancellationToken,
    ) -> RunSummary {
        let stop = Stop {
            drain: cancel.clone(),
            abort: cancel.clone(),
        };
        self.run_limited(source, batch, &stop).await
    }

    /// Attempts a run, with retries, until it succeeds, fails for good or
    /// is stopped: `stop.abort` cancels it at once; `stop.drain` lets the
    /// attempt under way finish but starts no retry. Each attempt holds
    /// concurrency permits (the first one `permits`); a retry waiting for
    /// its turn holds none.
    async fn attempt_all(
        &self,
        source: &SourceRecord,
        batch: &str,
        stop: &Stop,
        permits: limits::Permits,
    ) -> Attempted {
        let cancel = &stop.abort;
        let started = Instant::now();
        let started_ms = now_ms();
        let mut attempts = Vec::new();
        let mut permits = Some(permits);
        // The error of the attempt before, while waiting to retry: a
        // shutdown (drain) then ends the run with it instead of retrying.
        let mut retrying: Option<RunError> = None;
        let outcome = loop {
            if cancel.is_cancelled() {
                break Err(RunError::Cancelled);
            }
            if let Some(err) = retrying.take_if(|_| stop.drain.is_cancelled()) {
                break Err(err);
            }
            let _permits = match permits.take() {
                Some(p) => p,
                None => tokio::select! {
                    p = self.limits.acquire(&source.platform, &source.owner) => p,
                    () = cancel.cancelled() => break Err(RunError::Cancelled),
                    () = stop.drain.cancelled() => {
                        break Err(retrying.take().unwrap_or(RunError::Cancelled))
                    }
                },
            };
            let attempt_ms = now_ms();
            let t0 = Instant::now();
            let in_flight = self.metrics.started();
            let result = tokio::select! {
                r = self.attempt(source, batch) => r,
                () = cancel.cancelled() => Err(RunError::Cancelled),
            };
            drop(in_flight);
            attempts.push(Attempt {
                started_ms: attempt_ms,
                duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                error: result.as_ref().err().map(ToString::to_string),
            });
            let err = match result {
                Ok(done) => break Ok(done),
                Err(e) => e,
            };
            drop(_permits);
            let attempt = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
            let policy = *self.policy.lock().unwrap_or_else(|p| p.into_inner());
            match policy.next(attempt, &err, retry::jitter()) {
                Next::Retry(_) if stop.drain.is_cancelled() => break Err(err),
                Next::Retry(delay) => {
                    tracing::info!(source = %source.name, attempt, "retrying in {delay:?}: {err}");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => break Err(RunError::Cancelled),
                        // Shutting down: no retry is started.
                        () = stop.drain.cancelled() => break Err(err),
                    }
                    retrying = Some(err);
                }
                Next::WaitLonger(wait) => {
                    let until = now_ms()
                        .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    tracing::info!(
                        source = %source.name,
                        "the platform asked to wait {}; not due again before then: {err}",
                        humantime::format_duration(wait)
                    );
                    self.not_before
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(source.id, until);
                    break Err(err);
                }
                Next::GiveUp => break Err(err),
            }
        };
        Attempted {
            started,
            started_ms,
            attempts,
            outcome,
        }
    }

    /// Commits a run (its file, cursor and record, see [`commit`]) in place
    /// of its `running` record, and reports it.
    async fn finish(
        &self,
        source: SourceRecord,
        start: oneshot::Receiver<Committed>,
        attempted: Attempted,
    ) -> RunSummary {
        let Attempted {
            started,
            started_ms,
            attempts,
            outcome,
        } = attempted;
        let duration = started.elapsed();
        let id = match Committer::answer(start).await {
            Ok(done) => done.id,
            Err(e) => {
                tracing::warn!(source = %source.name, "cannot record the start of the run: {e}");
                0
            }
        };
        let mut record = RunRecord {
            id,
            source: source.id,
            source_name: source.name.clone(),
            started_ms,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            records: 0,
            bytes: 0,
            attempts,
            outcome: String::new(),
            error: None,
            output: None,
        };
        let attempts_made = u32::try_from(record.attempts.len()).unwrap_or(u32::MAX);
        let (outcome, output) = match outcome {
            Ok((fetched, file)) => {
                record.records = fetched.records;
                record.bytes = fetched.bytes;
                record.outcome = "ok".into();
                // A run that fetched nothing new has no file: only its record
                // and cursor are committed.
                let file = (!file.is_empty()).then_some(file);
                record.output = file.as_ref().map(|f| f.final_path().display().to_string());
                let cursor = fetched.cursor.clone();
                match self
                    .committer
                    .commit(Update::Ok {
                        record,
                        cursor,
                        file,
                    })
                    .await
                {
                    Ok(done) => (Ok(fetched), done.published),
                    Err(e) => (Err(RunError::Host(e.to_string())), None),
                }
            }
            Err(e) => {
                record.outcome = retry::kind(&e).into();
                record.error = Some(e.to_string());
                let attempt_ms = record.attempts.last().map_or(started_ms, |a| a.started_ms);
                if let Err(err) = self.committer.commit(Update::Failed { record }).await {
                    tracing::error!("cannot record the run of {}: {err}", source.name);
                }
                if let RunError::AuthFailed(message) = &e {
                    self.mark_broken(&source, message, attempt_ms);
                }
                (Err(e), None)
            }
        };
        let records = outcome.as_ref().map_or(0, |o| o.records);
        self.metrics.finished(
            outcome.is_ok(),
            records,
            duration,
            outcome.as_ref().err().map(retry::kind),
        );
        match &outcome {
            Ok(o) => tracing::info!(source = %source.name, records = o.records, "run finished"),
            Err(e) => tracing::warn!(source = %source.name, "run failed: {e}"),
        }
        RunSummary {
            source,
            outcome,
            duration,
            attempts: attempts_made,
            output,
        }
    }

    /// Marks the data source's credential broken, after checking again that
    /// the link is legitimate (the owner's credential of this platform), so
    /// that a tampered record cannot get another user's credential marked.
    /// A credential updated after the failing attempt started by anyone but
    /// that attempt's plugin (a reconnect that fixed it meanwhile) is left
    /// alone.
    fn mark_broken(&self, source: &SourceRecord, message: &str, attempt_ms: u64) {
        let own = self.runtime().broker().take_written(source.id);
        match self.store.source_with_credential(source.id) {
            Ok(Some((current, Some(credential))))
                if credential.owner == current.owner && credential.platform == current.platform =>
            {
                if let Err(e) =
                    self.store
                        .mark_broken_unless_updated(credential.id, message, attempt_ms, own)
                {
                    tracing::error!("cannot mark credential {} broken: {e}", credential.id);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot read data source {}: {e}", source.name),
        }
    }

    /// One attempt: fetch into a partial file (created with the first
    /// records), written and closed (synced and committed by [`commit`]).
    async fn attempt(
        &self,
        source: &SourceRecord,
        batch: &str,
    ) -> Result<(FetchOutcome, OutputFile), RunError> {
        let host = |what: &str, e: &dyn std::fmt::Display| RunError::Host(format!("{what}: {e}"));
        let Some(credential) = source.credential else {
            return Err(RunError::NeedsReconnect(
                "the data source has no credential (it was deleted)".into(),
            ));
        };
        let state = self
            .store
            .credential_state(credential)
            .map_err(|e| host("cannot read the credential state", &e))?;
        if let Some(broken) = state.broken {
            return Err(RunError::NeedsReconnect(format!(
                "credential {credential} was rejected by the platform ({}); skipped until `intake reconnect`",
                broken.message
            )));
        }
        let cursor = self
            .store
            .cursor(source.id)
            .map_err(|e| host("cannot read the cursor", &e))?;
        let mut file = OutputFile::create(&self.output_dir, &source.name, batch)
            .map_err(|e| host("cannot create the output file", &e))?;
        let runtime = self.runtime();
        // What an earlier attempt wrote is not this one's.
        runtime.broker().take_written(source.id);
        let fetched = runtime.fetch(source, cursor, &mut file).await?;
        file.close()
            .map_err(|e| host("cannot write the output file", &e))?;
        Ok((fetched, file))
    }
}

/// The summary of a run that was cancelled before it started.
fn cancelled(source: SourceRecord) -> RunSummary {
    RunSummary {
        source,
        outcome: Err(RunError::Cancelled),
        duration: Duration::ZERO,
        attempts: 0,
        output: None,
    }
}

/// Opens (creating it and its directory) the run lock file of data source
/// `name`, `OUTPUT/NAME/.lock`, unlocked.
fn open_source_lock(output_dir: &std::path::Path, name: &str) -> std::io::Result<std::fs::File> {
    let dir = output_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(".lock"))
}

/// Interleaves data sources by owner (round robin, keeping each owner's
/// order), so that work is fair across users. Returns original indices.
pub fn fair_order(sources: &[SourceRecord]) -> Vec<(usize, SourceRecord)> {
    let mut by_owner: Vec<std::collections::VecDeque<usize>> = Vec::new();
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        match owners.get(s.owner.as_str()) {
            Some(&q) => by_owner[q].push_back(i),
            None => {
                owners.insert(&s.owner, by_owner.len());
                by_owner.push([i].into());
            }
        }
    }
    let mut out = Vec::with_capacity(sources.len());
    while out.len() < sources.len() {
        for q in &mut by_owner {
            if let Some(i) = q.pop_front() {
                out.push((i, sources[i].clone()));
            }
        }
    }
    out
}

/// A run id from the current time, e.g. `20261203T164512Z-123`, sortable.
pub fn run_id() -> String {
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "");
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    format!("{stamp}-{millis:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: u64, owner: &str) -> SourceRecord {
        SourceRecord {
            id,
            name: format!("s{id}"),
            owner: owner.into(),
            platform: "p".into(),
            credential: Some(1),
            config: Vec::new(),
            created_ms: 0,
        }
    }

    #[test]
    fn fair_order_interleaves_users() {
        let sources = vec![
            source(1, "big"),
            source(2, "big"),
            source(3, "big"),
            source(4, "small"),
            source(5, "other"),
        ];
        let order: Vec<u64> = fair_order(&sources)
            .into_iter()
            .map(|(_, s)| s.id)
            .collect();
        assert_eq!(order, [1, 4, 5, 2, 3]);
    }
}
