//! Reading component files and compile-cache entries without trusting them
//! to be ordinary files.
//!
//! A configured `path` may name anything: a FIFO (opening it for reading
//! would block until a writer came), a device such as `/dev/zero` (reading it
//! to the end would never end, and exhaust memory), a directory. Only regular
//! files are read: the type is checked before opening, the file is opened
//! non-blocking (so a FIFO swapped in after the check cannot hang the open),
//! checked again on the open descriptor, and read through a bounded reader.

use std::fs::{File, FileType, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest component file intake loads, in bytes.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing is at the path.
    #[error(
        "there is no such file; check `path` of this [[plugin]] entry in the configuration \
         file (intake.toml unless --config names another; a relative path is taken from that \
         file's directory)"
    )]
    Missing,
    /// The file system refused.
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    /// It is not a regular file.
    #[error("it is {0}, not a regular file; point `path` at a .wasm component file")]
    NotAFile(&'static str),
    /// It is larger than allowed.
    #[error("it is larger than {} MiB, the largest file intake reads here", .0 >> 20)]
    TooLarge(u64),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            Self::Missing
        } else {
            Self::Io(e)
        }
    }
}

fn describe(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// The bytes of the regular file at `path` (symbolic links followed), at
/// most `max` of them.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    if let Some(what) = describe(std::fs::metadata(path)?.file_type()) {
        return Err(ReadError::NotAFile(what));
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // The path may have been replaced between the check and the open.
    let meta = file.metadata()?;
    if let Some(what) = describe(meta.file_type()) {
        return Err(ReadError::NotAFile(what));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge(max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.wasm");
        std::fs::write(&path, b"\0asm1234").expect("write");
        assert_eq!(read_regular_file(&path, 8).expect("read"), b"\0asm1234");
        let err = read_regular_file(&path, 7).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn refuses_devices_directories_and_fifos_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_regular_file(Path::new("/dev/zero"), MAX_COMPONENT_BYTES).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file; point `path` at a .wasm component file"
        );
        let err = read_regular_file(dir.path(), MAX_COMPONENT_BYTES).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let fifo = dir.path().join("fifo.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo");
        let err = read_regular_file(&fifo, MAX_COMPONENT_BYTES).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let err = read_regular_file(&dir.path().join("missing"), 8).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("there is no such file; check `path` of this [[plugin]] entry"),
            "{err}"
        );
    }
}
