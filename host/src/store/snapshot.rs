//! The records the secret choke point reads on every request, cached for as
//! long as the database file is unchanged.
//!
//! The broker re-reads a data source and the credential it links to on every
//! secret request, so that a reconnect, a detach or a tampered link takes
//! effect at once. In redb's multi-process mode a read transaction costs
//! several system calls (byte-range locks and a read of the file header, to
//! see other processes' commits): most of a request's time. Yet every commit,
//! by this process or another, rewrites the file's header (its transaction
//! id at least), and nothing else changes what a read sees.
//!
//! So a request reads the header (one `pread` of a few hundred bytes) and is
//! served the records cached under exactly that header, if any; otherwise it
//! reads them in a real transaction and caches them under the header read
//! *before* that transaction. A hit therefore means no commit has been made
//! since the records were read: the same answer a transaction would give.
//! A torn read of a header being written either differs (a miss: a real
//! transaction) or matches the old one (the commit has not finished: the
//! old state is still a correct answer).
//!
//! Only records are cached, never secret values: fields stay sealed until
//! the broker opens them for a permitted request.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::model::{CredentialRecord, SourceId, SourceRecord};

/// Bytes of the file header compared: redb's header (320 bytes in redb 5:
/// magic number, god byte, both commit slots with their transaction ids and
/// checksums), and a margin.
const HEADER_BYTES: usize = 512;

/// Data sources cached at most; the cache is emptied when full.
const MAX_ENTRIES: usize = 4096;

/// A data source and the credential its link points at, as read together.
pub type Linked = (SourceRecord, Option<CredentialRecord>);

#[derive(Debug, Default)]
struct Cached {
    /// The header the entries were read under.
    header: Option<Box<[u8; HEADER_BYTES]>>,
    entries: HashMap<SourceId, Arc<Linked>>,
}

/// The cache of one open database.
#[derive(Debug)]
pub(super) struct Snapshots {
    /// Our own handle on the database file, to read its header; `None`
    /// disables the cache (every read is a transaction).
    file: Option<File>,
    cached: Mutex<Cached>,
    /// Requests served from the cache (for tests).
    #[cfg(test)]
    hits: std::sync::atomic::AtomicU64,
}

impl Snapshots {
    /// A cache for the database file at `path`, which redb has open. If
    /// the file cannot be opened, or the path no longer names the file just
    /// opened, the cache stays off.
    pub fn open(path: &Path) -> Self {
        let file =
            File::open(path)
                .ok()
                .filter(|file| match (file.metadata(), std::fs::metadata(path)) {
                    (Ok(ours), Ok(named)) => ours.dev() == named.dev() && ours.ino() == named.ino(),
                    _ => false,
                });
        Self {
            file,
            cached: Mutex::default(),
            #[cfg(test)]
            hits: Default::default(),
        }
    }

    /// A cache that is always off.
    #[cfg(test)]
    pub fn off() -> Self {
        Self {
            file: None,
            cached: Mutex::default(),
            hits: Default::default(),
        }
    }

    fn header(&self) -> Option<Box<[u8; HEADER_BYTES]>> {
        let file = self.file.as_ref()?;
        let mut buf = Box::new([0u8; HEADER_BYTES]);
        let n = file.read_at(&mut buf[..], 0).ok()?;
        // A file shorter than that is not a database redb would have opened.
        (n == HEADER_BYTES).then_some(buf)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // Plain map updates: a poisoned lock leaves a usable cache.
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `source`'s records: cached if the file is unchanged since they were
    /// read, else from `read` (a transaction), then cached.
    pub fn get<E>(
        &self,
        source: SourceId,
        read: impl FnOnce() -> Result<Option<Linked>, E>,
    ) -> Result<Option<Arc<Linked>>, E> {
        let header = self.header();
        if let Some(header) = &header {
            let cached = self.lock();
            if cached.header.as_ref() == Some(header)
                && let Some(hit) = cached.entries.get(&source)
            {
                #[cfg(test)]
                self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(Some(hit.clone()));
            }
        }
        let Some(linked) = read()?.map(Arc::new) else {
            return Ok(None);
        };
        if let Some(header) = header {
            let mut cached = self.lock();
            if cached.header.as_ref() != Some(&header) {
                cached.entries.clear();
                cached.header = Some(header);
            }
            if cached.entries.len() >= MAX_ENTRIES {
                cached.entries.clear();
            }
            cached.entries.insert(source, linked.clone());
        }
        Ok(Some(linked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;
    use crate::secret::{SecretFields, SecretString};
    use crate::store::{CredentialChoice, NewSecrets, NewSource, Store};
    use std::cell::Cell;

    fn record(id: SourceId) -> Linked {
        (
            SourceRecord {
                id,
                name: format!("s{id}"),
                owner: "alice".into(),
                platform: "p".into(),
                credential: None,
                config: Vec::new(),
                created_ms: 0,
            },
            None,
        )
    }

    #[test]
    fn served_from_cache_until_the_header_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let cache = Snapshots::open(&path);
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok::<_, ()>(Some(record(1)))
        };
        cache.get(1, read).unwrap();
        cache.get(1, read).unwrap();
        assert_eq!(reads.get(), 1, "the second read was not a hit");
        // Another data source: read once.
        cache.get(2, read).unwrap();
        assert_eq!(reads.get(), 2);
        // A commit rewrites the header: every entry is read again.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_at(&[8], 100).unwrap();
        cache.get(1, read).unwrap();
        cache.get(1, read).unwrap();
        assert_eq!(reads.get(), 3);
        // Bytes past the header do not matter.
        file.write_at(&[9], 3000).unwrap();
        cache.get(1, read).unwrap();
        assert_eq!(reads.get(), 3);
        // Nothing is cached for a source that does not exist.
        let none = cache.get(5, || Ok::<_, ()>(None)).unwrap();
        assert!(none.is_none());
        // Off: every read is a transaction.
        let off = Snapshots::off();
        off.get(1, read).unwrap();
        off.get(1, read).unwrap();
        assert_eq!(reads.get(), 5);
    }

    #[test]
    fn a_commit_by_another_handle_is_seen_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let keyring = Keyring::generate().unwrap();
        let a = Store::open(&path, keyring.clone()).unwrap();
        // A second handle on the file, as another process has.
        let b = Store::open(&path, keyring).unwrap();
        a.add_user("alice").unwrap();
        let mut fields = SecretFields::new();
        fields.insert("token", SecretString::from("v1"));
        let source = a
            .connect(NewSource {
                name: Some("s".into()),
                owner: "alice".into(),
                platform: "p".into(),
                config: Vec::new(),
                credential: CredentialChoice::New(NewSecrets {
                    title: "t".into(),
                    fields,
                }),
            })
            .unwrap();
        let version = |store: &Store| {
            store
                .linked(source.id)
                .unwrap()
                .unwrap()
                .1
                .as_ref()
                .unwrap()
                .version
        };
        assert_eq!(version(&a), 1);
        assert_eq!(version(&a), 1);
        // Reads (of this handle or the other) do not change the file: hits.
        let _ = b.linked(source.id).unwrap();
        assert_eq!(version(&a), 1);
        let hits = || {
            a.inner
                .snapshots
                .hits
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(
            hits(),
            2,
            "repeated requests were not served from the cache"
        );
        let mut fields = SecretFields::new();
        fields.insert("token", SecretString::from("v2"));
        let id = source.credential.unwrap();
        b.update_credential(id, "alice", &fields).unwrap();
        assert_eq!(version(&a), 2, "a commit by another handle was missed");
        let opened = a
            .open_fields(
                a.linked(source.id).unwrap().unwrap().1.as_ref().unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(opened.get("token").unwrap().expose(), "v2");
        // Deleted (and detached) by the other handle: seen at once too.
        b.delete_credential(id, "alice", true).unwrap();
        let (src, cred) = &*a.linked(source.id).unwrap().unwrap();
        assert_eq!(src.credential, None);
        assert!(cred.is_none());
    }
}
