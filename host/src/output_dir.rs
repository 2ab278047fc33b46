//! Which data source an output directory belongs to, and moving the
//! directory of a removed data source aside.
//!
//! A data source's records go to `OUTPUT/NAME/`, named after it. A name is
//! free again once its data source is removed, and the next data source of
//! that name may be another user's: it must never write next to the old
//! owner's files. So each directory's run lock file, `.lock` (which every
//! run opens and locks anyway), holds the id of the data source it belongs
//! to, written when the directory is first used ([`claim`]); a run of a data
//! source whose directory names another id is refused. Keeping the id in the
//! lock file costs a first run no extra file (creating files is what makes a
//! first run of thousands of data sources slow). Removing a data source moves its
//! directory to `OUTPUT/.removed/NAME-ID-TIMESTAMP` ([`retire`]), so that
//! the name starts afresh.
//!
//! A directory made before markers existed has none: the first data source
//! to run there claims it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::store::SourceId;

/// The marker in a data source's output directory: its run lock file.
pub const MARKER: &str = ".lock";
/// Where the output directories of removed data sources go, under the
/// output directory.
pub const REMOVED: &str = ".removed";

/// Why a data source may not write to its output directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The directory belongs to another data source.
    #[error(
        "the output directory {dir} belongs to another data source (id {owner}, removed since, \
         or its directory was put here by hand), so this run was refused rather than write \
         next to its files; move that directory away (for example into {removed}/) or delete \
         it if its files are no longer needed, then run again"
    )]
    Foreign {
        /// The directory.
        dir: String,
        /// The id its marker names.
        owner: SourceId,
        /// Where removed data sources' directories go.
        removed: String,
    },
    /// The marker is not an id.
    #[error(
        "the output directory {dir} has a marker file {MARKER} that does not hold a data source \
         id; if the directory belongs to this data source, write its id ({id}) into the file, \
         else move the directory away; then run again"
    )]
    BadMarker {
        /// The directory.
        dir: String,
        /// The id of the data source that wanted to run.
        id: SourceId,
    },
    /// The marker cannot be read or written.
    #[error("cannot read or write {path}: {error}")]
    Io {
        /// The marker file.
        path: String,
        /// Why.
        error: io::Error,
    },
}

/// The data source id the marker in `dir` names: `Ok(None)` if there is
/// no marker, `Err(None)` if it is not an id.
fn marker(dir: &Path) -> io::Result<Result<Option<SourceId>, ()>> {
    match File::open(dir.join(MARKER)) {
        Ok(file) => read_marker(&file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(None)),
        Err(e) => Err(e),
    }
}

/// The id an open marker file holds (see [`marker`]).
fn read_marker(file: &File) -> io::Result<Result<Option<SourceId>, ()>> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    // Empty (or zeros): never claimed, or a claim cut short by a crash
    // before it reached the disk; claimed again.
    if text
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .is_empty()
    {
        return Ok(Ok(None));
    }
    Ok(text.trim().parse::<SourceId>().map(Some).map_err(|_| ()))
}

/// Makes sure that the output directory `dir` belongs to data source `id`:
/// writes the id into its lock file `lock` (open for writing, locked by the
/// caller) if it holds none, refuses if it names another data source.
pub fn claim(dir: &Path, lock: &File, id: SourceId) -> Result<(), ClaimError> {
    use std::os::unix::fs::FileExt;
    let io_err = |error| ClaimError::Io {
        path: dir.join(MARKER).display().to_string(),
        error,
    };
    match read_marker(lock).map_err(io_err)? {
        Ok(Some(owner)) if owner == id => Ok(()),
        Ok(Some(owner)) => Err(ClaimError::Foreign {
            dir: dir.display().to_string(),
            owner,
            removed: dir
                .parent()
                .map(|p| p.join(REMOVED).display().to_string())
                .unwrap_or_else(|| REMOVED.to_owned()),
        }),
        Err(()) => Err(ClaimError::BadMarker {
            dir: dir.display().to_string(),
            id,
        }),
        // One write of a few bytes: a crash leaves all of it or none (an
        // empty file, claimed again), never part of an id. Not synced, for
        // the same reason.
        Ok(None) => lock
            .write_all_at(format!("{id}\n").as_bytes(), 0)
            .map_err(io_err),
    }
}

/// Takes the run lock of data source `name`'s output directory under
/// `output` (the lock a run holds), if the directory exists: `Ok(None)` if
/// it does not, an error of kind [`io::ErrorKind::WouldBlock`] if a run of
/// the data source holds it now. Held until the returned file is dropped.
pub fn lock(output: &Path, name: &str) -> io::Result<Option<File>> {
    let dir = output.join(name);
    if !dir.is_dir() {
        return Ok(None);
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(".lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "a run of this data source is in progress",
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// What [`retire`] did with a removed data source's output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retired {
    /// Moved to this directory.
    Moved(PathBuf),
    /// There was none.
    NoDirectory,
    /// Left where it was: its marker names another data source (this one
    /// never wrote there).
    NotItsOwn(SourceId),
}

/// Moves the output directory of removed data source `id` named `name`,
/// under `output`, to `output/.removed/NAME-ID-TIMESTAMP` (UTC). Call it
/// holding the data source's run lock ([`lock`]).
pub fn retire(output: &Path, name: &str, id: SourceId) -> io::Result<Retired> {
    let dir = output.join(name);
    if !dir.is_dir() {
        return Ok(Retired::NoDirectory);
    }
    match marker(&dir)? {
        Ok(Some(owner)) if owner != id => return Ok(Retired::NotItsOwn(owner)),
        _ => {}
    }
    let removed = output.join(REMOVED);
    fs::create_dir_all(&removed)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = removed.join(format!("{name}-{id}-{stamp}"));
    if fs::symlink_metadata(&target).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists already", target.display()),
        ));
    }
    fs::rename(&dir, &target)?;
    File::open(output)?.sync_all()?;
    Ok(Retired::Moved(target))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_directory_is_claimed_once_and_refused_to_others() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("acme-us");
        fs::create_dir_all(&dir).unwrap();
        let lock = lock(out.path(), "acme-us").unwrap().unwrap();
        claim(&dir, &lock, 7).unwrap();
        claim(&dir, &lock, 7).unwrap();
        assert_eq!(fs::read_to_string(dir.join(MARKER)).unwrap(), "7\n");
        let err = claim(&dir, &lock, 8).unwrap_err();
        assert!(matches!(err, ClaimError::Foreign { owner: 7, .. }), "{err}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        fs::write(dir.join(MARKER), "x").unwrap();
        assert!(matches!(
            claim(&dir, &lock, 7),
            Err(ClaimError::BadMarker { .. })
        ));
        // What a crash may leave of a claim not yet on disk: claimed again.
        fs::write(dir.join(MARKER), "\0\0").unwrap();
        claim(&dir, &lock, 8).unwrap();
        assert_eq!(fs::read_to_string(dir.join(MARKER)).unwrap(), "8\n");
    }

    #[test]
    fn a_removed_data_source_directory_moves_aside() {
        let out = tempfile::tempdir().unwrap();
        assert_eq!(retire(out.path(), "a", 1).unwrap(), Retired::NoDirectory);
        let dir = out.path().join("a");
        fs::create_dir_all(&dir).unwrap();
        claim(&dir, &lock(out.path(), "a").unwrap().unwrap(), 2).unwrap();
        assert_eq!(retire(out.path(), "a", 1).unwrap(), Retired::NotItsOwn(2));
        let _lock = lock(out.path(), "a").unwrap().unwrap();
        let err = lock(out.path(), "a").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let Retired::Moved(to) = retire(out.path(), "a", 2).unwrap() else {
            panic!("not moved");
        };
        assert!(!dir.exists());
        assert!(to.starts_with(out.path().join(REMOVED)));
        let moved = to.file_name().unwrap().to_str().unwrap();
        assert!(moved.starts_with("a-2-"), "{moved}");
        assert!(to.join(MARKER).is_file());
    }
}
