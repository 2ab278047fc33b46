//! The embedded database: users, credentials, data sources, cursors and audit.
//!
//! One redb file holds everything. Credentials are stored sealed (see
//! [`crate::crypto`]); everything else is metadata in the clear. The database
//! is opened in redb's multi-writer mode so that CLI commands (reconnect, key
//! rotation, listing) work while `intake run` or `intake serve` holds it open.
//!
//! Opening checks the on-disk format version and that the master key is the
//! one the database was created with, before anything is read or written:
//! through a read-only handle first, which writes nothing to the file (redb
//! writes to it when it opens and closes it for writing), and only then
//! opens the database for writing. The one exception is a file that needs
//! redb's crash recovery (a process was killed while writing): only a
//! writable open recovers it, so there the key is checked right after.
//!
//! The `meta` table holds, besides the format version and id counters, one
//! key check value per master key version in use (`key_check:N`), a marker
//! per retired version (`key_retired:N`, no key material), the Argon2id salt
//! and parameters of a passphrase database (`passphrase_kdf`) and the key
//! version they derive (`passphrase_version`, absent for 1), the host's
//! transit key sealed under the master key (`host_key`), and the marker of an
//! unfinished rotation.

mod audit;
mod credentials;
mod maintenance;
mod manage;
mod model;
mod runs;
mod snapshot;
mod source_admin;
mod sources;
mod transit;
mod users;

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::crypto::{
    CryptoError, KeyError, KeySource, Keyring, PassphraseKdf, Sealed, TransitError,
};
use crate::secret::SecretString;

pub use audit::AuditFilter;
pub use credentials::{CredentialSummary, NewSecrets, PluginWrite, UpdatedBy, check_secret_values};
pub use maintenance::{Rotation, Verification};
pub use manage::Deleted;
pub use model::{
    AuditAction, AuditRecord, Broken, CredentialId, CredentialRecord, CredentialState,
    RemovedSource, SealedField, SourceId, SourceRecord, User,
};
pub use runs::{Attempt, RunRecord, Schedule, Unpublished};
pub use snapshot::Linked;
pub use source_admin::SourceRemoval;
pub use sources::{CredentialChoice, NewSource};

/// The on-disk format this build writes. Bumped on incompatible changes.
///
/// - 1: the first.
/// - 2: a data key's associated data also names the credential's fields
///   (`intake/data-key/v2`), so that a field removed from a record is
///   detected. Records written by format 1 are still read (their data keys
///   are re-wrapped under the new binding by the next rotation); a format 1
///   database is marked format 2 when this build first opens it, so that an
///   older intake refuses it ("upgrade intake") instead of taking the new
///   records for tampered ones.
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(crate) const CREDENTIALS: TableDefinition<u64, &[u8]> = TableDefinition::new("credentials");
pub(crate) const CREDENTIAL_STATE: TableDefinition<u64, &[u8]> =
    TableDefinition::new("credential_state");
pub(crate) const SOURCES: TableDefinition<u64, &[u8]> = TableDefinition::new("sources");
pub(crate) const SOURCE_NAMES: TableDefinition<&str, u64> = TableDefinition::new("source_names");
pub(crate) const CURSORS: TableDefinition<u64, &str> = TableDefinition::new("cursors");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");
pub(crate) const SCHEDULES: TableDefinition<u64, &[u8]> = TableDefinition::new("schedules");
/// When each data source's last run that counts for its schedule started.
pub(crate) const LAST_RUNS: TableDefinition<u64, u64> = TableDefinition::new("last_runs");
/// Committed runs whose output file may not be renamed into place yet.
pub(crate) const UNPUBLISHED: TableDefinition<u64, &[u8]> = TableDefinition::new("unpublished");
/// The runs recorded as running (an index of the run history).
pub(crate) const RUNNING: TableDefinition<u64, ()> = TableDefinition::new("running_runs");
/// Data sources that were removed, by id: their name, owner and platform, so
/// that the audit log and run history stay searchable by name.
pub(crate) const REMOVED_SOURCES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("removed_sources");

const META_FORMAT: &str = "format_version";
const META_NEXT_ID: &str = "next_id";
const META_PASSPHRASE_KDF: &str = "passphrase_kdf";
const META_PASSPHRASE_VERSION: &str = "passphrase_version";

/// A store error. Messages say what to do; none carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(redb::Error),
    /// The database file is damaged: redb found a page or record that does
    /// not check out, or failed reading it.
    #[error(
        "the database {} is damaged ({}); restore it from a backup (stop intake, copy the \
         backup over it; see docs/security.md, \"Files\"), then run `intake keys verify`",
        .path.as_deref().unwrap_or("file"),
        .reason
    )]
    Damaged {
        /// The database file, when known where the damage was found.
        path: Option<String>,
        /// What redb reported.
        reason: String,
    },
    /// The database file does not exist.
    #[error(
        "the database {path} does not exist; run `intake init` to create it (or pass --db / set \
         [store] path in intake.toml to use another one)"
    )]
    Missing {
        /// The database file.
        path: String,
    },
    /// The database file exists but is empty.
    #[error(
        "the database {path} is empty (0 bytes), not an intake database; restore it from a backup, \
         or delete it and run `intake init` to start over"
    )]
    Empty {
        /// The database file.
        path: String,
    },
    /// Encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The master key does not open this database.
    #[error(
        "the master key does not match the database {path} (key version {version} fails its check); \
         use the key file this database was created with"
    )]
    WrongKey {
        /// The database file.
        path: String,
        /// The failing version.
        version: u32,
    },
    /// Every version the master key holds was retired from the database.
    #[error(
        "the master key holds only key {versions}, retired from the database {path} by \
         `intake keys retire`, so it no longer opens it: use the current key file (the database \
         uses key version {current}). A backup taken before the retirement opens with the copy \
         of the key file kept with it"
    )]
    KeyRetired {
        /// The database file.
        path: String,
        /// The versions held, e.g. "version 1".
        versions: String,
        /// The newest version the database uses.
        current: u32,
    },
    /// The passphrase does not open the database.
    #[error(
        "the passphrase does not open the database {path} (it fails the key check); nothing was read or written"
    )]
    WrongPassphrase {
        /// The database file.
        path: String,
    },
    /// The database is protected by a passphrase, but a key was given.
    #[error(
        "the database {path} is protected by a passphrase, not a key file: set `[keys] passphrase_env` \
         (or `passphrase = true`) in intake.toml"
    )]
    PassphraseRequired {
        /// The database file.
        path: String,
    },
    /// The database was created with a key, but a passphrase was given.
    #[error(
        "the database {path} was created with a key file (or key variable), not a passphrase: \
         set `[keys] file` (or `env`) in intake.toml"
    )]
    KeyFileRequired {
        /// The database file.
        path: String,
    },
    /// The master key or passphrase cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The database moved on to a master key version this process does not
    /// hold (a rotation or a change of passphrase by another process), and
    /// it cannot re-read its key by itself.
    #[error(
        "the master key of the database {path} changed after this intake process loaded it \
         (the database now uses key version {version}; this process holds {held}); {todo}"
    )]
    KeyChanged {
        /// The database file.
        path: String,
        /// The newest key version the database uses.
        version: u32,
        /// The versions this process holds, e.g. "version 1".
        held: String,
        /// What to do.
        todo: String,
    },
    /// A sealed bundle or public key was refused.
    #[error(transparent)]
    Transit(#[from] TransitError),
    /// The database was written by a newer intake.
    #[error(
        "the database {path} has format version {found}, newer than this intake understands ({FORMAT_VERSION}); upgrade intake"
    )]
    NewerFormat {
        /// The database file.
        path: String,
        /// The version found.
        found: u32,
    },
    /// A master key version cannot be retired (yet).
    #[error("cannot retire key version {version}: {reason}")]
    CannotRetire {
        /// The version.
        version: u32,
        /// Why not, and what to do.
        reason: String,
    },
    /// The file cannot be created or opened.
    #[error("cannot open the database {path}: {reason}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The backup file cannot be written.
    #[error("cannot write the backup {path}: {reason}")]
    Backup {
        /// The backup file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A record cannot be decoded.
    #[error("the database holds a damaged record ({0}); restore it from a backup")]
    Corrupt(String),
    /// No such user.
    #[error("no user named `{}`; `intake user list` shows the users", shown(.0))]
    UnknownUser(String),
    /// The user exists already (names are compared ignoring case).
    #[error(
        "a user named `{}` exists already (user names are compared ignoring case); \
         `intake user list` shows the users",
        shown(.0)
    )]
    UserExists(String),
    /// No such data source.
    #[error("no data source `{}`; `intake sources list` shows them", shown(.0))]
    UnknownSource(String),
    /// The user has no data source of that name or id. Deliberately the
    /// same for a data source that does not exist and one that belongs to
    /// someone else, so that names cannot be probed.
    #[error(
        "user `{}` has no data source `{}`; `intake sources list --user {}` shows theirs",
        shown(.user),
        shown(.name),
        shown(.user)
    )]
    NoSuchSourceOf {
        /// The user asking.
        user: String,
        /// The name or id given.
        name: String,
    },
    /// The data source name is taken.
    #[error(
        "a data source named `{}` exists already (data source names are compared ignoring \
         case); choose another --name",
        shown(.0)
    )]
    SourceExists(String),
    /// A name given matches several records that differ only in case (a
    /// database made before names were compared ignoring case).
    #[error(
        "`{}` matches more than one {what} ({}); give the name exactly as listed",
        shown(.given),
        .matches.iter().map(|m| shown(m)).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        given: String,
        /// The names it matches.
        matches: Vec<String>,
    },
    /// No credential with that id that this user may use. Deliberately the same
    /// for a credential that does not exist and one that belongs to someone
    /// else, so that ids cannot be probed.
    #[error(
        "user `{}` has no credential {id}; `intake credentials list --user {}` shows theirs",
        shown(.user),
        shown(.user)
    )]
    NoSuchCredential {
        /// The user asking.
        user: String,
        /// The id given.
        id: CredentialId,
    },
    /// A write based on one version of a credential found another version
    /// current (someone changed it meanwhile); nothing was written.
    #[error(
        "credential {id} changed meanwhile (it is at version {current}; the write was based on \
         version {read}); nothing was written"
    )]
    VersionChanged {
        /// The credential.
        id: CredentialId,
        /// The version the write was based on.
        read: u32,
        /// The version it is at.
        current: u32,
    },
    /// The credential is for another platform.
    #[error("credential {id} is for platform `{actual}`, not `{expected}`")]
    PlatformMismatch {
        /// The credential.
        id: CredentialId,
        /// The platform wanted.
        expected: String,
        /// The credential's platform.
        actual: String,
    },
    /// The credential is still used by data sources.
    #[error(
        "credential {id} is used by data sources {}; link them to another credential first (`intake reconnect SOURCE --user USER --credential ID`), or pass --detach to leave them disconnected",
        sources.join(", ")
    )]
    InUse {
        /// The credential.
        id: CredentialId,
        /// The data sources using it.
        sources: Vec<String>,
    },
    /// The user still owns credentials or data sources.
    #[error(
        "user `{}` owns {}; pass --purge to delete them with the user",
        shown(.user),
        owned(*.credentials, *.sources)
    )]
    UserOwnsData {
        /// The user.
        user: String,
        /// Credentials owned.
        credentials: usize,
        /// Data sources owned.
        sources: usize,
    },
    /// A secret value holds a control character.
    #[error(
        "the value of credential field `{}` contains a control character (such as a NUL byte, \
         a tab, a line break, ESC or DEL), which no platform accepts; check how the secret was \
         copied",
        shown(.field)
    )]
    InvalidSecret {
        /// The field (never its value).
        field: String,
    },
    /// A name is not acceptable.
    #[error("invalid {what} `{}`: {rule}", shown(.value))]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(reason) => StoreError::Damaged { path: None, reason },
            other => StoreError::Db(other),
        }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the database; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// The records secret requests read, cached while the file is unchanged.
    snapshots: snapshot::Snapshots,
    /// Replaced (never changed in place) when the key file is re-read after
    /// another process rotated the key; see [`Store::reload_keyring`].
    keyring: RwLock<Arc<Keyring>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `path`, creating it (mode 0600) if it does not
    /// exist or is empty. Refuses a master key that does not match the
    /// database. Only `intake init` (and tests) should create a database:
    /// everything else opens with [`Store::open_existing`].
    pub fn open(path: &Path, keyring: Keyring) -> Result<Self> {
        precheck_key(path, &keyring)?;
        let db = open_db(path, true)?;
        Self::with_db(db, path, keyring)
    }

    /// Opens the existing database at `path`, like [`Store::open`] but never
    /// creating one: a missing or empty file is refused with
    /// [`StoreError::Missing`] or [`StoreError::Empty`], so that a typo in a
    /// path or a database moved away is not silently replaced by a new one.
    pub fn open_existing(path: &Path, keyring: Keyring) -> Result<Self> {
        require_existing(path)?;
        precheck_key(path, &keyring)?;
        let db = open_db(path, false)?;
        Self::with_db(db, path, keyring)
    }

    /// [`Store::open_with_passphrase`] for an existing database only (see
    /// [`Store::open_existing`]).
    pub fn open_existing_with_passphrase(path: &Path, passphrase: &SecretString) -> Result<Self> {
        require_existing(path)?;
        Self::open_with_passphrase(path, passphrase)
    }

    /// Opens (or creates) a database protected by a passphrase: reads the
    /// Argon2id salt and parameters from its meta table (creating them for a
    /// new database), derives the master key, and checks it like any other.
    /// A wrong passphrase is refused before anything else is read or written.
    pub fn open_with_passphrase(path: &Path, passphrase: &SecretString) -> Result<Self> {
        let shown = path.display().to_string();
        // An existing database: salt, parameters and key check read through
        // a read-only handle, so that a wrong passphrase writes nothing.
        let checked = read_only_meta(path, |meta| match stored_kdf(meta)? {
            Some((kdf, version)) => {
                let keyring = Keyring::from_passphrase(passphrase, &kdf, version)?;
                check_meta(&shown, meta, &keyring).map_err(wrong_passphrase)?;
                Ok(Some(keyring))
            }
            None if newest_check(meta)?.is_some() => Err(StoreError::KeyFileRequired {
                path: shown.clone(),
            }),
            None => Ok(None),
        })?
        .flatten();
        let db = open_db(path, true)?;
        let keyring = match checked {
            Some(keyring) => keyring,
            None => Self::passphrase_keyring(&db, &shown, passphrase)?,
        };
        Self::with_db(db, path, keyring).map_err(wrong_passphrase)
    }

    /// The passphrase keyring of the database `db` opened for writing: from
    /// its stored salt and parameters, or, for a new database, from new ones
    /// that this writes (unless the database was made with a key file).
    fn passphrase_keyring(
        db: &Database,
        shown: &str,
        passphrase: &SecretString,
    ) -> Result<Keyring> {
        let stored = {
            let txn = db.begin_read()?;
            match txn.open_table(META) {
                Ok(meta) => stored_kdf(&meta)?,
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let (kdf, version) = match stored {
            Some(stored) => stored,
            None => {
                // A new database (or one made with a key): decide in one write
                // transaction, so that two first opens agree on one salt.
                let txn = db.begin_write()?;
                let kdf = {
                    let mut meta = txn.open_table(META)?;
                    match stored_kdf(&meta)? {
                        Some(stored) => stored,
                        None => {
                            if newest_check(&meta)?.is_some() {
                                return Err(StoreError::KeyFileRequired {
                                    path: shown.to_owned(),
                                });
                            }
                            let min = crate::crypto::MIN_PASSPHRASE_CHARS;
                            if passphrase.expose().chars().count() < min {
                                return Err(KeyError::PassphraseTooShort { min }.into());
                            }
                            let kdf = PassphraseKdf::generate()?;
                            meta.insert(META_PASSPHRASE_KDF, model::encode(&kdf)?.as_slice())?;
                            (kdf, 1)
                        }
                    }
                };
                txn.commit()?;
                kdf
            }
        };
        Ok(Keyring::from_passphrase(passphrase, &kdf, version)?)
    }

    fn with_db(db: Database, path: &Path, keyring: Keyring) -> Result<Self> {
        let store = Self {
            inner: Arc::new(Inner {
                db,
                snapshots: snapshot::Snapshots::open(path),
                keyring: RwLock::new(Arc::new(keyring)),
                path: path.to_owned(),
            }),
        };
        store.initialise(&store.keyring())?;
        Ok(store)
    }

    /// Creates missing tables, records the format version (marking a format 1
    /// database as this format) and key check values, and verifies the key
    /// against existing check values.
    ///
    /// Most opens find everything in place: that is checked in a read
    /// transaction, and nothing is written (so a listing neither waits for
    /// writers in other processes nor writes to a file that may be damaged).
    fn initialise(&self, keyring: &Keyring) -> Result<()> {
        let shown = self.path_shown();
        {
            let txn = self.db().begin_read()?;
            match txn.open_table(META) {
                Ok(meta) => {
                    if !check_meta(&shown, &meta, keyring)? && all_tables_exist(&txn)? {
                        return Ok(());
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let txn = self.db().begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            check_meta(&shown, &meta, keyring)?;
            let format = meta.get(META_FORMAT)?.map(|v| u32_from(v.value()));
            if format.is_none_or(|found| found < FORMAT_VERSION) {
                meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
            }
            for version in keyring.versions() {
                let name = check_key(version);
                // A retired version's check value is never written back.
                if meta.get(name.as_str())?.is_none()
                    && meta.get(retired_key(version).as_str())?.is_none()
                    && let Some(check) = keyring.check_value(version)?
                {
                    meta.insert(name.as_str(), model::encode(&check)?.as_slice())?;
                }
            }
            txn.open_table(USERS)?;
            txn.open_table(CREDENTIALS)?;
            txn.open_table(CREDENTIAL_STATE)?;
            txn.open_table(SOURCES)?;
            txn.open_table(SOURCE_NAMES)?;
            txn.open_table(CURSORS)?;
            txn.open_table(AUDIT)?;
            txn.open_table(RUNS)?;
            txn.open_table(SCHEDULES)?;
            txn.open_table(UNPUBLISHED)?;
            if !table_exists(&txn, LAST_RUNS)? || !table_exists(&txn, RUNNING)? {
                runs::backfill_indexes(&txn)?;
            }
            txn.open_table(REMOVED_SOURCES)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The master keyring in use: the one this store was opened with, or
    /// the key file as re-read since ([`Store::reload_keyring`]).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.inner
            .keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Catches up with a master key that another process changed.
    ///
    /// If the keyring came from a key file, re-reads the file, verifies its
    /// versions against the database's check values (writing the check value
    /// of a version the database lacks yet, as opening does) and uses it from
    /// now on; an unusable file is refused and the keyring in use is kept.
    /// A keyring from an environment variable or a passphrase cannot change
    /// while the process runs: it is kept if the database still uses its
    /// version, else [`StoreError::KeyChanged`] says to restart.
    pub fn reload_keyring(&self) -> Result<Arc<Keyring>> {
        let old = self.keyring();
        if let Some(source @ KeySource::File(_)) = old.source() {
            let fresh = Keyring::load(source)?;
            self.initialise(&fresh)?;
            let fresh = Arc::new(fresh);
            *self
                .inner
                .keyring
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
            return Ok(fresh);
        }
        let txn = self.db().begin_read()?;
        let meta = txn.open_table(META)?;
        self.require_current_key(&meta, &old)?;
        Ok(old)
    }

    /// Runs `op` with the keyring in use; if it fails because the database
    /// moved on to a master key version that keyring lacks (a data key
    /// wrapped by an unknown version, or [`Store::require_current_key`]
    /// refusing to wrap), reloads the keyring ([`Store::reload_keyring`])
    /// and runs `op` once more. `op` must not have committed anything when
    /// it fails (a write transaction it drops is rolled back).
    pub(crate) fn with_current_key<T>(
        &self,
        mut op: impl FnMut(&Keyring) -> Result<T>,
    ) -> Result<T> {
        let keyring = self.keyring();
        match op(&keyring) {
            Err(e) if key_moved_on(&e, &keyring) => {
                let fresh = self.reload_keyring()?;
                op(&fresh)
            }
            other => other,
        }
    }

    /// Refuses to wrap or seal anything with `keyring` unless its current
    /// version is the database's current one, read from `meta` (inside the
    /// write transaction that will wrap): the version's check value exists
    /// and no newer version has one. So a process started before a rotation
    /// (and a retirement) or a change of passphrase never writes under a
    /// stale or removed version.
    pub(crate) fn require_current_key(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        keyring: &Keyring,
    ) -> Result<()> {
        let current = keyring.current().version();
        let held = meta.get(check_key(current).as_str())?.is_some();
        let newest = newest_check(meta)?.unwrap_or(current);
        if held && newest <= current {
            return Ok(());
        }
        let held = versions_shown(&keyring.versions());
        let todo = match keyring.source() {
            Some(KeySource::File(path)) => format!(
                "the key file {} does not hold the database's current key version: restore the \
                 key file that `intake keys rotate` wrote, then restart this process",
                path.display()
            ),
            Some(KeySource::Env(var)) => format!(
                "set the environment variable {var} to the new key file's text and restart this \
                 process (a key from a variable is read only at start)"
            ),
            _ if keyring.is_from_passphrase() => {
                "restart this process with the new passphrase".to_owned()
            }
            _ => "restart this process with the new key".to_owned(),
        };
        Err(StoreError::KeyChanged {
            path: self.path_shown(),
            version: newest,
            held,
            todo,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn path_shown(&self) -> String {
        self.inner.path.display().to_string()
    }

    /// The on-disk format version of the open database.
    pub fn format_version(&self) -> Result<u32> {
        let txn = self.db().begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(META_FORMAT)?.map_or(0, |v| u32_from(v.value())))
    }
}

/// Whether every table exists (an older database may lack newer ones).
fn all_tables_exist(txn: &redb::ReadTransaction) -> Result<bool> {
    macro_rules! exists {
        ($($table:expr),*) => {{
            let mut all = true;
            $(
                match txn.open_table($table) {
                    Ok(_) => {}
                    Err(redb::TableError::TableDoesNotExist(_)) => all = false,
                    Err(e) => return Err(e.into()),
                }
            )*
            all
        }};
    }
    Ok(exists!(
        USERS,
        CREDENTIALS,
        CREDENTIAL_STATE,
        SOURCES,
        SOURCE_NAMES,
        CURSORS,
        AUDIT,
        RUNS,
        SCHEDULES,
        LAST_RUNS,
        UNPUBLISHED,
        RUNNING,
        REMOVED_SOURCES
    ))
}

/// Whether `table` exists, in a write transaction (before opening it would
/// create it).
fn table_exists<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<bool> {
    Ok(txn
        .list_tables()?
        .any(|t| redb::TableHandle::name(&t) == redb::TableHandle::name(&table)))
}

/// The passphrase salt and parameters stored in `meta`, if any, and the
/// master key version they derive (1 unless the passphrase was changed).
fn stored_kdf(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<(PassphraseKdf, u32)>> {
    let Some(kdf) = meta
        .get(META_PASSPHRASE_KDF)?
        .map(|v| model::decode::<PassphraseKdf>(v.value(), "passphrase parameters"))
        .transpose()?
    else {
        return Ok(None);
    };
    let version = meta
        .get(META_PASSPHRASE_VERSION)?
        .map_or(1, |v| u32_from(v.value()));
    Ok(Some((kdf, version)))
}

/// Checks the format version, the kind of key and the key itself against
/// the `meta` table of the database `path`. Returns whether something is
/// missing that opening writes: the format version (or an older one), or
/// the check value of one of the keyring's versions that was not retired.
fn check_meta(
    path: &str,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    keyring: &Keyring,
) -> Result<bool> {
    let mut missing = false;
    match meta.get(META_FORMAT)?.map(|v| u32_from(v.value())) {
        Some(found) if found > FORMAT_VERSION => {
            return Err(StoreError::NewerFormat {
                path: path.to_owned(),
                found,
            });
        }
        Some(found) => missing |= found < FORMAT_VERSION,
        None => missing = true,
    }
    let passphrase_db = meta.get(META_PASSPHRASE_KDF)?.is_some();
    if passphrase_db && !keyring.is_from_passphrase() {
        return Err(StoreError::PassphraseRequired {
            path: path.to_owned(),
        });
    }
    let mut any_check = false;
    let mut retired = Vec::new();
    for version in keyring.versions() {
        let name = check_key(version);
        if let Some(check) = meta.get(name.as_str())? {
            any_check = true;
            let check: Sealed = model::decode(check.value(), "key check")?;
            if !keyring.verify_check_value(version, &check) {
                return Err(StoreError::WrongKey {
                    path: path.to_owned(),
                    version,
                });
            }
        } else if meta.get(retired_key(version).as_str())?.is_some() {
            retired.push(version);
        } else {
            missing = true;
        }
    }
    // A database that has check values for none of our versions was made
    // with another key (or retired every version we hold), unless it has
    // none at all (a new database).
    if !any_check && let Some(current) = newest_check(meta)? {
        if retired.len() == keyring.versions().len() {
            return Err(StoreError::KeyRetired {
                path: path.to_owned(),
                versions: versions_shown(&retired),
                current,
            });
        }
        return Err(StoreError::WrongKey {
            path: path.to_owned(),
            version: keyring.current().version(),
        });
    }
    Ok(missing)
}

/// Runs `f` on the meta table of the existing database at `path`, read
/// through a read-only handle: opening, reading and closing it writes
/// nothing to the file. `None` if there is nothing to read that way: no
/// file (or an empty one), no meta table yet, or a file that a read-only
/// handle cannot open, such as one that needs redb's crash recovery first
/// (which only a writable open does; it then reports any other problem).
fn read_only_meta<T>(
    path: &Path,
    f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T>,
) -> Result<Option<T>> {
    if !fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0) {
        return Ok(None);
    }
    let Ok(db) = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .open_read_only(path)
    else {
        return Ok(None);
    };
    // A file this handle cannot read (cut short, damaged) is left to the
    // writable open, which explains what is wrong with it.
    let Ok(txn) = db.begin_read() else {
        return Ok(None);
    };
    let Ok(meta) = txn.open_table(META) else {
        return Ok(None);
    };
    f(&meta).map(Some)
}

/// Refuses `keyring` for the existing database at `path` if it does not
/// match (see [`check_meta`]), through a read-only handle, before the
/// database is opened for writing.
fn precheck_key(path: &Path, keyring: &Keyring) -> Result<()> {
    let shown = path.display().to_string();
    read_only_meta(path, |meta| check_meta(&shown, meta, keyring))?;
    Ok(())
}

/// A wrong key, when the key was derived from a passphrase, is a wrong
/// passphrase.
fn wrong_passphrase(e: StoreError) -> StoreError {
    match e {
        StoreError::WrongKey { path, .. } => StoreError::WrongPassphrase { path },
        other => other,
    }
}

/// Key versions for a message: "version 1", "versions 1, 2".
fn versions_shown(versions: &[u32]) -> String {
    match versions {
        [one] => format!("version {one}"),
        many => format!(
            "versions {}",
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Refuses a database file that does not exist or is empty (see
/// [`Store::open_existing`]).
pub fn require_existing(path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(StoreError::Open {
            path: shown,
            reason: "it is a directory; point --db or [store] path at the database file".into(),
        }),
        Ok(meta) if !meta.is_file() => Err(StoreError::Open {
            path: shown,
            reason: "it is not a regular file (a device, a pipe or a socket); point --db or \
                     [store] path at the database file"
                .into(),
        }),
        Ok(meta) if meta.len() == 0 => Err(StoreError::Empty { path: shown }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::Missing { path: shown })
        }
        Err(e) => Err(StoreError::Open {
            path: shown,
            reason: e.to_string(),
        }),
    }
}

/// Opens the redb file at `path` for many processes. With `create`, a
/// missing file is created with mode 0600 first (so that it is never
/// readable by others) and an empty one initialised; without, both are
/// refused.
fn open_db(path: &Path, create: bool) -> Result<Database> {
    let shown = path.display().to_string();
    let open_err = |e: redb::DatabaseError| match e {
        // A file that is not (or no longer) a redb database: zeroed or
        // overwritten header pages.
        // A file cut short reads past its end.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Damaged {
                path: Some(shown.clone()),
                reason: io.to_string(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            StoreError::Damaged {
                path: Some(shown.clone()),
                reason,
            }
        }
        other => StoreError::Open {
            path: shown.clone(),
            reason: other.to_string(),
        },
    };
    if create {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Open {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        }
        Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(open_err)
    } else {
        require_existing(path)?;
        Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .open(path)
            .map_err(open_err)
    }
}

/// How [`check_file`] found a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheck {
    /// Every page of the committed trees verified.
    Intact,
    /// The pages verified, but redb's record of free space had to be
    /// rebuilt (as after a crash); no data was lost.
    Repaired,
}

/// Checks the integrity of the whole database file at `path` with redb
/// (the checksum of every page of the committed trees), opening its own
/// handle on it. A damaged file is [`StoreError::Damaged`], never a panic.
/// Holds the writer lock while it runs: writers in other processes wait.
pub fn check_file(path: &Path) -> Result<FileCheck> {
    let shown = path.display().to_string();
    let damaged = |reason: String| StoreError::Damaged {
        path: Some(shown.clone()),
        reason,
    };
    let checked = std::panic::catch_unwind(|| -> Result<bool> {
        let mut db = open_db(path, false)?;
        let clean = db.check_integrity().map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => damaged(reason),
            other => StoreError::from(other),
        })?;
        Ok(clean)
    });
    match checked {
        Ok(Ok(true)) => Ok(FileCheck::Intact),
        Ok(Ok(false)) => Ok(FileCheck::Repaired),
        Ok(Err(StoreError::Damaged { reason, .. })) => Err(damaged(reason)),
        Ok(Err(e)) => Err(e),
        Err(panic) => Err(damaged(format!(
            "reading it failed: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The message of a panic payload (a `&str` or `String`), if it has one.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// A name given by a person, made safe to show inside an error message:
/// control characters (a terminal escape, a line break) and quotes escaped,
/// at most 80 characters.
pub fn shown(name: &str) -> String {
    let mut out: String = name.chars().take(80).flat_map(char::escape_debug).collect();
    if name.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Allocates the next id of a kind of record (`"source"`, `"credential"`).
pub(crate) fn next_id(txn: &redb::WriteTransaction, kind: &str) -> Result<u64> {
    let mut meta = txn.open_table(META)?;
    let key = format!("{META_NEXT_ID}:{kind}");
    let id = meta.get(key.as_str())?.map_or(1, |v| u64_from(v.value()));
    meta.insert(key.as_str(), (id + 1).to_be_bytes().as_slice())?;
    Ok(id)
}

fn check_key(version: u32) -> String {
    format!("key_check:{version}")
}

/// The marker of a retired master key version (see
/// [`Store::retire_key_version`]).
fn retired_key(version: u32) -> String {
    format!("key_retired:{version}")
}

/// The newest master key version that `meta` has a check value for.
fn newest_check(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Option<u32>> {
    let mut newest = None;
    for entry in meta.range("key_check:"..="key_check;")? {
        let (name, _) = entry?;
        if let Some(version) = name
            .value()
            .strip_prefix("key_check:")
            .and_then(|v| v.parse::<u32>().ok())
        {
            newest = newest.max(Some(version));
        }
    }
    Ok(newest)
}

/// Whether `e` says that the database moved on to a master key version
/// `keyring` lacks, so that re-reading the key may help.
fn key_moved_on(e: &StoreError, keyring: &Keyring) -> bool {
    match e {
        StoreError::KeyChanged { .. } => true,
        StoreError::Crypto(CryptoError::UnknownKeyVersion { version, .. }) => {
            keyring.get(*version).is_none()
        }
        _ => false,
    }
}

fn u32_from(bytes: &[u8]) -> u32 {
    bytes.try_into().map(u32::from_be_bytes).unwrap_or(0)
}

fn u64_from(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Checks a user, data source or credential title name: 1 to 64 of
/// `[A-Za-z0-9._-]`, starting with a letter or digit.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            value: value.chars().take(80).collect(),
            rule: "use 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
        })
    }
}

/// Checks a data source name: [`check_name`], and not digits only (which
/// would be mistaken for an id).
pub fn check_source_name(value: &str) -> Result<()> {
    check_name("data source name", value)?;
    if value.chars().all(|c| c.is_ascii_digit()) {
        return Err(StoreError::InvalidName {
            what: "data source name",
            value: value.to_owned(),
            rule: "a name of digits only would be mistaken for an id; add a letter",
        });
    }
    Ok(())
}

/// "1 credential and 2 data sources": what a user owns, in words.
pub fn owned(credentials: usize, sources: usize) -> String {
    format!(
        "{} and {}",
        count(credentials, "credential", "credentials"),
        count(sources, "data source", "data sources")
    )
}

/// `n` and the noun, singular for one: "1 credential", "2 credentials".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Checks a credential title: 1 to 100 characters, no control characters.
pub fn check_title(value: &str) -> Result<()> {
    if !value.trim().is_empty()
        && value.chars().count() <= 100
        && !value.chars().any(char::is_control)
    {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what: "credential title",
            value: value.chars().filter(|c| !c.is_control()).take(80).collect(),
            rule: "use 1 to 100 characters without control characters",
        })
    }
}
