//! Group commit: many runs' records made durable and committed together.
//!
//! A run's records become visible exactly once (see [`super::output`]): its
//! output file is made durable, then its run record and cursor are committed,
//! and only then is the file renamed into place. Done one run at a time, that
//! is an fsync, a durable database commit and a directory fsync per run, the
//! commits queued behind the database's one writer: milliseconds each, which
//! would cap the scheduler at a few hundred runs a second however cheap the
//! plugins are.
//!
//! The committer keeps that order but takes each step for a whole batch:
//! every run that finishes while one batch is being committed joins the next.
//! The batch's files are made durable together (one `syncfs` of their
//! filesystem for a large batch, an fsync per file for a small one), all its
//! runs and cursors are committed in one transaction, then its files are
//! renamed and their directories synced the same way. Only then is each run
//! told how it went. The `running` records of runs that are starting (see
//! [`Update::Started`]) join the same batches. A crash at any point leaves what
//! [`super::output::recover`] repairs at the next start: a partial file whose
//! run was committed is published, any other is removed. If the batch's
//! transaction fails, each run is retried in a transaction of its own, so
//! that one bad run cannot fail the others.
//!
//! Each committed run with an output file is noted as unpublished in the
//! same transaction; once its file is renamed and its directory synced, the
//! note is dropped in the next batch's transaction (or after a second of
//! quiet), so that a crash between the commit and the rename is repaired by
//! [`super::Scheduler::recover_outputs`] from the notes alone, whatever other
//! intake processes are running.
//!
//! One thread per scheduler commits; it ends when the scheduler and all its
//! clones are dropped, and dropping the last of them waits for it, so that
//! its handle on the database is closed before the process exits (a redb
//! file left open for writing at exit needs a crash recovery at the next
//! open).

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use crate::store::{RunRecord, Store};

use super::output::OutputFile;

/// The most runs committed in one transaction.
const MAX_BATCH: usize = 4096;

/// From this many files on, a batch syncs their filesystem once (`syncfs`)
/// instead of each file.
const SYNCFS_FROM: usize = 8;

/// How long the commit thread waits for more runs before it drops the
/// unpublished notes of the files it published in a transaction of their own.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// A change to the run history, to be committed.
#[derive(Debug)]
pub(super) enum Update {
    /// A run that is starting: recorded as running (its id is in the
    /// reply), so that a crash leaves a trace in the history.
    Started {
        /// The run, with outcome [`RunRecord::RUNNING`] and id 0.
        record: RunRecord,
    },
    /// A successful run: its output file (written and closed, not yet
    /// synced), if it fetched any records, and its data source's new cursor.
    Ok {
        /// The run, with the file's final name if it has one, and the id
        /// of its `running` record (0 if there is none).
        record: RunRecord,
        /// The cursor to save (`None` clears it).
        cursor: Option<String>,
        /// The partial file; `None` for a run that fetched no records.
        file: Option<OutputFile>,
    },
    /// A failed run: recorded, its cursor left as it was.
    Failed {
        /// The run, with the id of its `running` record (0 if none).
        record: RunRecord,
    },
}

/// Why a finished run could not be committed or published; the text is the
/// run's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CommitError {
    /// The output file could not be made durable; the run was recorded as
    /// failed and the file removed.
    #[error("cannot write the output file: {0}")]
    Write(String),
    /// The run and cursor could not be saved; the file was removed.
    #[error("cannot save the run and cursor: {0}")]
    Store(String),
    /// The run was committed but its file could not be renamed.
    #[error(
        "the run was committed but its file could not be renamed (it is recovered at the next start): {0}"
    )]
    Publish(String),
}

/// What a committed update became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Done {
    /// The run's id in the history.
    pub id: u64,
    /// For a successful run that fetched records, its published file.
    pub published: Option<PathBuf>,
}

/// How committing an update went.
pub(super) type Committed = Result<Done, CommitError>;

struct Job {
    run: Update,
    reply: oneshot::Sender<Committed>,
}

/// Hands finished runs to the commit thread.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    store: Store,
    queue: Option<Arc<CommitThread>>,
}

/// The commit thread's queue and handle, shared by the clones of a
/// [`Committer`]. Dropping it (with the last clone) closes the queue and
/// waits for the thread to commit what is queued and end.
#[derive(Debug)]
struct CommitThread {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread was reported to every run it failed.
            let _ = thread.join();
        }
    }
}

impl Committer {
    /// Starts the commit thread for `store`. Should the thread not start,
    /// every run is committed alone on tokio's blocking pool instead.
    pub fn start(store: Store) -> Self {
        let (queue, jobs) = mpsc::channel();
        let thread_store = store.clone();
        let started = std::thread::Builder::new()
            .name("intake-commit".into())
            .spawn(move || {
                // Runs whose files were published since the last transaction.
                let mut published = Vec::new();
                loop {
                    let first = if published.is_empty() {
                        jobs.recv()
                            .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                    } else {
                        jobs.recv_timeout(QUIET)
                    };
                    let first = match first {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            forget_published(&thread_store, &mut published);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match jobs.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    commit_batch(&thread_store, batch, &mut published);
                }
                forget_published(&thread_store, &mut published);
            });
        let queue = match started {
            Ok(thread) => Some(Arc::new(CommitThread {
                queue: Some(queue),
                thread: Some(thread),
            })),
            Err(e) => {
                tracing::warn!("cannot start the commit thread, committing runs one by one: {e}");
                None
            }
        };
        Self { store, queue }
    }

    /// Commits `run` (with the next batch) and, for a successful run,
    /// publishes its file. Dropping the future does not undo the commit: a
    /// run handed over is committed and published all the same.
    pub async fn commit(&self, run: Update) -> Committed {
        Self::answer(self.submit(run)).await
    }

    /// Hands `run` over to be committed with the next batch, without
    /// waiting; [`Committer::answer`] waits for the outcome.
    pub fn submit(&self, run: Update) -> oneshot::Receiver<Committed> {
        let (reply, answer) = oneshot::channel();
        let job = Job { run, reply };
        let job = match self.queue.as_ref().and_then(|t| t.queue.as_ref()) {
            Some(queue) => match queue.send(job) {
                Ok(()) => return answer,
                // The thread is gone (it panicked): commit on the blocking pool.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut published = Vec::new();
            commit_batch(&store, vec![job], &mut published);
            forget_published(&store, &mut published);
        });
        answer
    }

    /// Waits for the outcome of a [`Committer::submit`].
    pub async fn answer(answer: oneshot::Receiver<Committed>) -> Committed {
        answer
            .await
            .unwrap_or_else(|_| Err(CommitError::Store("the commit thread failed".into())))
    }
}

/// What happens to one job of a batch.
struct Entry {
    record: RunRecord,
    /// `Some` for a successful run (the cursor to save), `None` for a failed
    /// or starting one.
    cursor: Option<Option<String>>,
    file: Option<OutputFile>,
    reply: oneshot::Sender<Committed>,
    /// Set once the job has failed.
    error: Option<CommitError>,
}

/// Drops the unpublished notes of `published` (their files are in place);
/// kept for the next try should that fail (a note left behind costs only a
/// check at the next recovery).
fn forget_published(store: &Store, published: &mut Vec<u64>) {
    match store.forget_unpublished(published) {
        Ok(()) => published.clear(),
        Err(e) => tracing::debug!("cannot drop the notes of published runs yet: {e}"),
    }
}

/// Commits one batch; `published` holds the runs published by earlier
/// batches whose notes are to be dropped, and gets this batch's.
fn commit_batch(store: &Store, batch: Vec<Job>, published: &mut Vec<u64>) {
    let mut entries: Vec<Entry> = batch
        .into_iter()
        .map(|job| match job.run {
            Update::Ok {
                record,
                cursor,
                file,
            } => Entry {
                record,
                cursor: Some(cursor),
                file,
                reply: job.reply,
                error: None,
            },
            Update::Started { record } | Update::Failed { record } => Entry {
                record,
                cursor: None,
                file: None,
                reply: job.reply,
                error: None,
            },
        })
        .collect();

    // 1. Every file durable before any run that wrote it is committed. A
    //    file that cannot be synced fails its run, which is recorded as such.
    let files: Vec<&Path> = entries
        .iter()
        .filter_map(|e| e.file.as_ref().map(OutputFile::partial_path))
        .collect();
    let synced = sync_paths(&files);
    let mut failures = synced.into_iter();
    for entry in entries.iter_mut().filter(|e| e.file.is_some()) {
        if let Some(Err(e)) = failures.next() {
            let error = CommitError::Write(e.to_string());
            entry.record.outcome = "host-error".into();
            entry.record.error = Some(format!("host error: {error}"));
            entry.record.output = None;
            entry.cursor = None;
            entry.file = None; // removes the partial file
            entry.error = Some(error);
        }
    }

    // 2. One transaction for the batch; one per run if that fails.
    let runs = || {
        entries
            .iter()
            .map(|e| (e.record.clone(), e.cursor.clone()))
            .collect::<Vec<_>>()
    };
    match store.commit_runs(runs(), published) {
        Ok(committed) => {
            published.clear();
            for (entry, run) in entries.iter_mut().zip(committed) {
                entry.record.id = run.id;
            }
        }
        Err(batch_err) => {
            if entries.len() > 1 {
                tracing::warn!(
                    "cannot commit {} runs together ({batch_err}); committing them one by one",
                    entries.len()
                );
            }
            for entry in &mut entries {
                let one = vec![(entry.record.clone(), entry.cursor.clone())];
                match store.commit_runs(one, &[]) {
                    Ok(committed) => {
                        if let Some(run) = committed.first() {
                            entry.record.id = run.id;
                        }
                    }
                    Err(e) => {
                        entry.file = None;
                        if entry.error.is_none() {
                            entry.error = Some(CommitError::Store(e.to_string()));
                        }
                    }
                }
            }
        }
    }

    // 3. Publish the committed files, then make the renames durable.
    let mut dirs = BTreeSet::new();
    let mut renamed = Vec::with_capacity(entries.len());
    for entry in &mut entries {
        let Some(file) = entry.file.as_mut() else {
            renamed.push(None);
            continue;
        };
        match file.rename_into_place() {
            Ok(path) => {
                if let Some(dir) = path.parent() {
                    dirs.insert(dir.to_owned());
                }
                renamed.push(Some(path));
            }
            Err(e) => {
                entry.error = Some(CommitError::Publish(e.to_string()));
                renamed.push(None);
            }
        }
    }
    let dirs: Vec<PathBuf> = dirs.into_iter().collect();
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let mut unsynced = BTreeSet::new();
    for (dir, result) in dirs.iter().zip(sync_paths(&dir_refs)) {
        if let Err(e) = result {
            tracing::warn!("cannot sync an output directory (recovered at the next start): {e}");
            unsynced.insert(dir.clone());
        }
    }
    for (entry, path) in entries.iter().zip(&renamed) {
        if let Some(path) = path
            && entry.record.id != 0
            && !path.parent().is_some_and(|d| unsynced.contains(d))
        {
            published.push(entry.record.id);
        }
    }

    // 4. Tell each run how it went.
    for (entry, path) in entries.into_iter().zip(renamed) {
        let answer = match entry.error {
            Some(e) => Err(e),
            None => Ok(Done {
                id: entry.record.id,
                published: path,
            }),
        };
        let _ = entry.reply.send(answer);
    }
}

/// Makes `paths` (files, or directories whose entries changed) durable: an
/// fsync each, or from [`SYNCFS_FROM`] paths on one `syncfs` per filesystem
/// they are on (falling back to fsync should it fail). One result per path.
fn sync_paths(paths: &[&Path]) -> Vec<std::io::Result<()>> {
    if paths.len() < SYNCFS_FROM {
        return paths.iter().map(|p| fsync(p)).collect();
    }
    let mut filesystems: HashMap<u64, bool> = HashMap::new();
    paths
        .iter()
        .map(|p| {
            let device = std::fs::metadata(p)?.dev();
            let synced = *filesystems
                .entry(device)
                .or_insert_with(|| syncfs(p).is_ok());
            if synced { Ok(()) } else { fsync(p) }
        })
        .collect()
}

fn fsync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Syncs the whole filesystem holding `path` (Linux `syncfs(2)`): the data
/// and metadata of every file on it.
#[allow(unsafe_code)]
fn syncfs(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: `file` stays open for the duration of the call, and syncfs
    // takes nothing but the descriptor.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;
    use crate::plugin::PageSink;

    fn record(source: u64, output: Option<&Path>, outcome: &str) -> RunRecord {
        RunRecord {
            id: 0,
            source,
            source_name: format!("s{source}"),
            started_ms: 1,
            duration_ms: 1,
            records: 1,
            bytes: 3,
            attempts: Vec::new(),
            outcome: outcome.into(),
            error: None,
            output: output.map(|p| p.display().to_string()),
        }
    }

    #[test]
    fn a_batch_commits_every_run_then_publishes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        let out = dir.path().join("out");
        let (mut jobs, mut answers) = (Vec::new(), Vec::new());
        // More files than SYNCFS_FROM, and a failed run among them.
        for i in 1..=10u64 {
            let mut file = OutputFile::create(&out, &format!("s{i}"), "run").unwrap();
            file.write_page(b"{}\n").unwrap();
            file.close().unwrap();
            let (reply, answer) = oneshot::channel();
            let record = record(i, Some(file.final_path()), "ok");
            let cursor = Some(format!("c{i}"));
            jobs.push(Job {
                run: Update::Ok {
                    record,
                    cursor,
                    file: Some(file),
                },
                reply,
            });
            answers.push(answer);
        }
        let (reply, mut failed) = oneshot::channel();
        jobs.push(Job {
            run: Update::Failed {
                record: record(99, None, "transient"),
            },
            reply,
        });
        let mut published = Vec::new();
        commit_batch(&store, jobs, &mut published);
        // Noted as unpublished with the commit; the notes go once the files
        // are known to be in place.
        assert_eq!(published.len(), 10);
        assert_eq!(store.unpublished().unwrap().len(), 10);
        forget_published(&store, &mut published);
        assert!(published.is_empty());
        assert!(store.unpublished().unwrap().is_empty());

        for (i, mut answer) in (1..=10u64).zip(answers) {
            let path = answer.try_recv().unwrap().unwrap().published.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
            assert!(!out.join(format!("s{i}")).join("run.jsonl.partial").exists());
            assert!(store.run_wrote(&format!("s{i}"), "run.jsonl", 0).unwrap());
            assert_eq!(store.cursor(i).unwrap(), Some(format!("c{i}")));
        }
        let failed = failed.try_recv().unwrap().unwrap();
        assert_eq!(failed.published, None);
        assert_eq!(store.runs(None, 100).unwrap().last().unwrap().id, failed.id);
        assert_eq!(store.cursor(99).unwrap(), None);
        let runs = store.runs(None, 100).unwrap();
        assert_eq!(runs.len(), 11);
        assert_eq!(runs.last().map(|r| r.outcome.as_str()), Some("transient"));
    }

    #[test]
    fn a_file_that_cannot_be_synced_fails_its_run_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        let out = dir.path().join("out");
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for i in 1..=2u64 {
            let mut file = OutputFile::create(&out, &format!("s{i}"), "run").unwrap();
            file.write_page(b"{}\n").unwrap();
            file.close().unwrap();
            if i == 1 {
                // Gone before the commit: the sync fails.
                std::fs::remove_file(file.partial_path()).unwrap();
            }
            let (reply, answer) = oneshot::channel();
            jobs.push(Job {
                run: Update::Ok {
                    record: record(i, Some(file.final_path()), "ok"),
                    cursor: Some("c".into()),
                    file: Some(file),
                },
                reply,
            });
            answers.push(answer);
        }
        commit_batch(&store, jobs, &mut Vec::new());
        let mut answers = answers.into_iter();
        let first = answers.next().unwrap().try_recv().unwrap();
        assert!(matches!(first, Err(CommitError::Write(_))), "{first:?}");
        assert_eq!(store.cursor(1).unwrap(), None);
        let second = answers.next().unwrap().try_recv().unwrap();
        assert!(second.unwrap().published.is_some());
        assert_eq!(store.cursor(2).unwrap().as_deref(), Some("c"));
        let runs = store.runs(None, 10).unwrap();
        assert_eq!(runs[0].outcome, "host-error");
        assert_eq!(runs[0].output, None);
    }

    #[test]
    fn a_finished_run_replaces_its_running_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
        let out = dir.path().join("out");
        let (reply, mut started) = oneshot::channel();
        commit_batch(
            &store,
            vec![Job {
                run: Update::Started {
                    record: record(1, None, RunRecord::RUNNING),
                },
                reply,
            }],
            &mut Vec::new(),
        );
        let id = started.try_recv().unwrap().unwrap().id;
        assert_ne!(id, 0);
        assert_eq!(store.running_runs().unwrap().len(), 1);

        // It fetched nothing new: no file, the cursor saved all the same.
        let file = OutputFile::create(&out, "s1", "run").unwrap();
        assert!(file.is_empty());
        drop(file);
        let mut done = record(1, None, "ok");
        done.id = id;
        done.records = 0;
        let (reply, mut answer) = oneshot::channel();
        commit_batch(
            &store,
            vec![Job {
                run: Update::Ok {
                    record: done,
                    cursor: Some("c1".into()),
                    file: None,
                },
                reply,
            }],
            &mut Vec::new(),
        );
        let answer = answer.try_recv().unwrap().unwrap();
        assert_eq!(answer.id, id);
        assert_eq!(answer.published, None);
        let runs = store.runs(None, 10).unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!((runs[0].id, runs[0].outcome.as_str()), (id, "ok"));
        assert_eq!(store.cursor(1).unwrap().as_deref(), Some("c1"));
        assert!(store.running_runs().unwrap().is_empty());
        assert!(!out.exists(), "an output file or directory was created");
    }
}
