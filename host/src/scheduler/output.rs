//! Output files: one JSON Lines file per data source and run, exactly once.
//!
//! Records go to `DIR/SOURCE/RUN.jsonl.partial` while a run is in flight; the
//! file is created with the first page of records, so a run that fetches
//! nothing new leaves no file at all. When it succeeds the file is synced, the run and its cursor are committed
//! to the database, and only then is the file renamed to `RUN.jsonl` (the
//! scheduler does the syncing, committing and renaming for many runs at once,
//! see [`super::commit`]). At start, [`recover`] finishes the rename of a
//! partial file whose run was committed and removes any other partial file.
//! So the records of a run appear if and only if its cursor was saved: a
//! crash never skips or duplicates data.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::plugin::PageSink;
use crate::store::Store;

/// Bytes buffered before a write; pages this large or larger go straight to
/// the file.
const BUFFER: usize = 64 * 1024;

/// A run's output file being written. Dropped before its run is committed,
/// it is removed.
#[derive(Debug)]
pub struct OutputFile {
    partial: PathBuf,
    done: PathBuf,
    writer: Option<BufWriter<File>>,
    /// Whether the partial file exists (a page of records was written).
    created: bool,
    /// Closed: further pages are refused.
    closed: bool,
    /// The run is committed: the partial file must stay (to be renamed, or
    /// recovered at the next start).
    keep: bool,
}

impl OutputFile {
    /// The output file of `run` of data source `source`:
    /// `dir/source/run.jsonl.partial`, created (with its directory) when the
    /// first page of records is written.
    pub fn create(dir: &Path, source: &str, run: &str) -> std::io::Result<Self> {
        let dir = dir.join(source);
        Ok(Self {
            done: dir.join(format!("{run}.jsonl")),
            partial: dir.join(format!("{run}.jsonl.partial")),
            writer: None,
            created: false,
            closed: false,
            keep: false,
        })
    }

    /// Whether no records were written: there is no file.
    pub fn is_empty(&self) -> bool {
        !self.created
    }

    /// The final name the file gets once its run is committed.
    pub fn final_path(&self) -> &Path {
        &self.done
    }

    /// The name it has until then.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// Flushes and syncs the records to disk (before the run is committed).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(w) = &mut self.writer {
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        Ok(())
    }

    /// Flushes the records and closes the file, which keeps its partial name
    /// until [`OutputFile::publish`] (the caller syncs it before the run is
    /// committed). Further pages are refused.
    pub fn close(&mut self) -> std::io::Result<()> {
        self.closed = true;
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    /// Renames the synced file to its final name and syncs its directory
    /// (after the run is committed). Fails for a run that wrote no records
    /// ([`OutputFile::is_empty`]): there is no file to publish.
    pub fn publish(mut self) -> std::io::Result<PathBuf> {
        let path = self.rename_into_place()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(path)
    }

    /// Renames the synced file to its final name (after the run is
    /// committed), without syncing the directory; the caller does. Should the
    /// rename fail, the partial file stays for [`recover`].
    pub(super) fn rename_into_place(&mut self) -> std::io::Result<PathBuf> {
        self.keep = true;
        self.writer = None;
        fs::rename(&self.partial, &self.done)?;
        Ok(self.done.clone())
    }
}

impl PageSink for OutputFile {
    fn write_page(&mut self, records: &[u8]) -> std::io::Result<()> {
        if self.closed {
            return Err(std::io::Error::other("the output file is closed"));
        }
        if records.is_empty() {
            return Ok(());
        }
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                if let Some(dir) = self.partial.parent() {
                    fs::create_dir_all(dir)?;
                }
                let file = File::create(&self.partial)?;
                self.created = true;
                self.writer.insert(BufWriter::with_capacity(BUFFER, file))
            }
        };
        writer.write_all(records)
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.keep && self.created {
            self.writer = None;
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// Finishes or removes the partial files a crash left under `dir`.
/// Returns (published, removed).
pub fn recover(dir: &Path, store: &Store) -> std::io::Result<(usize, usize)> {
    let mut counts = (0, 0);
    let Ok(sources) = fs::read_dir(dir) else {
        return Ok(counts);
    };
    for source in sources.flatten() {
        let (published, removed) = recover_source(&source.path(), store)?;
        counts.0 += published;
        counts.1 += removed;
    }
    Ok(counts)
}

/// [`recover`] for the directory of one data source; the caller holds its
/// run lock, or knows that no other process writes there.
pub(super) fn recover_source(dir: &Path, store: &Store) -> std::io::Result<(usize, usize)> {
    let mut counts = (0, 0);
    let Ok(files) = fs::read_dir(dir) else {
        return Ok(counts);
    };
    for file in files.flatten() {
        let path = file.path();
        let Some(done) = path
            .to_str()
            .and_then(|p| p.strip_suffix(".partial"))
            .map(PathBuf::from)
        else {
            continue;
        };
        let (Some(file_name), Some(source_dir)) = (
            done.file_name().and_then(|n| n.to_str()),
            dir.file_name().and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let committed = store
            .run_wrote(source_dir, file_name, run_started_ms(file_name))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if committed {
            fs::rename(&path, &done)?;
            counts.0 += 1;
        } else {
            fs::remove_file(&path)?;
            counts.1 += 1;
        }
    }
    Ok(counts)
}

/// When the run of output file `name` (`RUN.jsonl`, RUN made by
/// [`super::run_id`], e.g. `20261203T164512Z-123`) began, in ms since the
/// epoch; 0 if the name is not of that form.
fn run_started_ms(name: &str) -> u64 {
    name.get(..16)
        .and_then(|stamp| chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok())
        .and_then(|t| u64::try_from(t.and_utc().timestamp_millis()).ok())
        .unwrap_or(0)
}

/// Publishes the files of committed runs that a crash left with their
/// partial names ([`Store::unpublished`]), each under its data source's run
/// lock (a data source running now, here or in another process, is left to
/// a later pass), and drops the notes of those in place. Returns how many
/// files were published.
pub fn recover_unpublished(store: &Store) -> std::io::Result<usize> {
    let store_err = |e: crate::store::StoreError| std::io::Error::other(e.to_string());
    let mut published = 0;
    let mut settled = Vec::new();
    for entry in store.unpublished().map_err(store_err)? {
        let done = PathBuf::from(&entry.output);
        let Some(dir) = done.parent() else {
            settled.push(entry.run);
            continue;
        };
        let lock = match fs::OpenOptions::new()
            .write(true)
            .create(false)
            .open(dir.join(".lock"))
        {
            Ok(lock) => lock,
            // No lock file: the directory is gone (or was never made).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                settled.push(entry.run);
                continue;
            }
            Err(e) => return Err(e),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => continue,
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut partial = done.clone().into_os_string();
        partial.push(".partial");
        match fs::rename(&partial, &done) {
            Ok(()) => {
                File::open(dir)?.sync_all()?;
                published += 1;
                tracing::warn!(
                    source = %entry.source_name,
                    "published the output of run {} ({}), committed before the process \
                     writing it stopped",
                    entry.run,
                    done.display()
                );
            }
            // Renamed already (the note outlived the rename).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        settled.push(entry.run);
    }
    store.forget_unpublished(&settled).map_err(store_err)?;
    Ok(published)
}
