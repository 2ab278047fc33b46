//! The scheduler: runs data sources concurrently and writes their records.
//!
//! Each data source runs as its own tokio task, at most `concurrency` at
//! once. A run fetches from the saved cursor, writes records to a JSON Lines
//! file, and saves the new cursor only after the file is safely on disk. A
//! failure stays with its data source: the others carry on. An
//! authentication failure marks the credential broken.

mod output;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plugin::{FetchOutcome, RunError, Runtime};
use crate::store::{SourceRecord, Store};

pub use output::OutputFile;

/// How one data source's run went.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The data source.
    pub source: SourceRecord,
    /// Records and cursor, or the error.
    pub outcome: Result<FetchOutcome, RunError>,
    /// How long it took.
    pub duration: Duration,
    /// The output file of a successful run.
    pub output: Option<PathBuf>,
}

/// Runs data sources.
#[derive(Debug, Clone)]
pub struct Scheduler {
    runtime: Arc<Runtime>,
    store: Store,
    output_dir: PathBuf,
    concurrency: usize,
}

impl Scheduler {
    /// A scheduler writing under `output_dir`, running `concurrency` at once.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Store,
        output_dir: PathBuf,
        concurrency: usize,
    ) -> Self {
        Self {
            runtime,
            store,
            output_dir,
            concurrency: concurrency.max(1),
        }
    }

    /// Runs every data source in `sources` and returns their summaries, in
    /// the order given.
    pub async fn run(&self, sources: Vec<SourceRecord>) -> Vec<RunSummary> {
        let run_id = run_id();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for (index, source) in sources.iter().cloned().enumerate() {
            let this = self.clone();
            let permits = permits.clone();
            let run_id = run_id.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (index, this.run_one(source, &run_id).await)
            });
        }
        let mut out: Vec<Option<RunSummary>> = vec![None; sources.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, summary)) => out[index] = Some(summary),
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
                    output: None,
                })
            })
            .collect()
    }

    /// Runs one data source.
    pub async fn run_one(&self, source: SourceRecord, run_id: &str) -> RunSummary {
        let started = Instant::now();
        let (outcome, output) = match self.fetch(&source, run_id).await {
            Ok((outcome, path)) => (Ok(outcome), Some(path)),
            Err(e) => (Err(e), None),
        };
        if let Err(RunError::AuthFailed(message)) = &outcome {
            self.mark_broken(&source, message);
        }
        match &outcome {
            Ok(o) => tracing::info!(source = %source.name, records = o.records, "run finished"),
            Err(e) => tracing::warn!(source = %source.name, "run failed: {e}"),
        }
        RunSummary {
            source,
            outcome,
            duration: started.elapsed(),
            output,
        }
    }

    /// Marks the data source's credential broken, after checking again that
    /// the link is legitimate (the owner's credential of this platform), so
    /// that a tampered record cannot get another user's credential marked.
    fn mark_broken(&self, source: &SourceRecord, message: &str) {
        match self.store.source_with_credential(source.id) {
            Ok(Some((current, Some(credential))))
                if credential.owner == current.owner && credential.platform == current.platform =>
            {
                if let Err(e) = self.store.mark_broken(credential.id, message) {
                    tracing::error!("cannot mark credential {} broken: {e}", credential.id);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot read data source {}: {e}", source.name),
        }
    }

    async fn fetch(
        &self,
        source: &SourceRecord,
        run_id: &str,
    ) -> Result<(FetchOutcome, PathBuf), RunError> {
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
        let mut file = OutputFile::create(&self.output_dir, &source.name, run_id)
            .map_err(|e| host("cannot create the output file", &e))?;
        match self.runtime.fetch(source, cursor, &mut file).await {
            Ok(outcome) => {
                let path = file
                    .commit()
                    .map_err(|e| host("cannot finish the output file", &e))?;
                self.store
                    .save_cursor(source.id, outcome.cursor.as_deref())
                    .map_err(|e| host("cannot save the cursor", &e))?;
                Ok((outcome, path))
            }
            Err(e) => {
                file.discard();
                Err(e)
            }
        }
    }
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
