//! Output files: one JSON Lines file per data source and run.
//!
//! Records go to `DIR/SOURCE/RUN.jsonl.partial` while a run is in flight; only
//! a successful run renames it to `RUN.jsonl` (after syncing it to disk), and
//! only then is the cursor saved. A failed or killed run never leaves a file
//! that looks complete.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::plugin::PageSink;

/// A run's output file being written.
#[derive(Debug)]
pub struct OutputFile {
    partial: PathBuf,
    done: PathBuf,
    writer: BufWriter<File>,
}

impl OutputFile {
    /// Creates `dir/source/run.jsonl.partial`.
    pub fn create(dir: &Path, source: &str, run: &str) -> std::io::Result<Self> {
        let dir = dir.join(source);
        fs::create_dir_all(&dir)?;
        let done = dir.join(format!("{run}.jsonl"));
        let partial = dir.join(format!("{run}.jsonl.partial"));
        let writer = BufWriter::with_capacity(256 * 1024, File::create(&partial)?);
        Ok(Self {
            partial,
            done,
            writer,
        })
    }

    /// Syncs and renames the file to its final name; returns it.
    pub fn commit(mut self) -> std::io::Result<PathBuf> {
        self.writer.flush()?;
        self.writer.get_ref().sync_all()?;
        fs::rename(&self.partial, &self.done)?;
        Ok(self.done)
    }

    /// Removes the partial file.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.partial);
    }
}

impl PageSink for OutputFile {
    fn write_page(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(records)
    }
}
