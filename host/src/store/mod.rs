//! The embedded database: users, credentials, data sources, cursors and audit.
//!
//! One redb file holds everything. Credentials are stored sealed (see
//! [`crate::crypto`]); everything else is metadata in the clear. The database
//! is opened in redb's multi-writer mode so that CLI commands (reconnect, key
//! rotation, listing) work while `intake run` or `intake serve` holds it open.
//!
//! Opening checks the on-disk format version and that the master key is the
//! one the database was created with, before anything is read or written.
//!
//! The `meta` table holds, besides the format version and id counters, one
//! key check value per master key version (`key_check:N`), the Argon2id salt
//! and parameters of a passphrase database (`passphrase_kdf`), the host's
//! transit key sealed under the master key (`host_key`), and the marker of an
//! unfinished rotation.

mod audit;
mod credentials;
mod maintenance;
mod manage;
mod model;
mod runs;
mod sources;
mod transit;
mod users;

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::crypto::{CryptoError, KeyError, Keyring, PassphraseKdf, Sealed, TransitError};
use crate::secret::SecretString;

pub use audit::AuditFilter;
pub use credentials::{CredentialSummary, NewSecrets, UpdatedBy};
pub use maintenance::{Rotation, Verification};
pub use manage::Deleted;
pub use model::{
    AuditAction, AuditRecord, Broken, CredentialId, CredentialRecord, CredentialState, SealedField,
    SourceId, SourceRecord, User,
};
pub use runs::{Attempt, RunRecord, Schedule};
pub use sources::{CredentialChoice, NewSource};

/// The on-disk format this build writes. Bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

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

const META_FORMAT: &str = "format_version";
const META_NEXT_ID: &str = "next_id";
const META_PASSPHRASE_KDF: &str = "passphrase_kdf";

/// A store error. Messages say what to do; none carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
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
    #[error("no user named `{0}`; add one with `intake user add {0}`")]
    UnknownUser(String),
    /// The user exists already.
    #[error("a user named `{0}` exists already")]
    UserExists(String),
    /// No such data source.
    #[error("no data source `{0}`; `intake sources list` shows them")]
    UnknownSource(String),
    /// The data source name is taken.
    #[error("a data source named `{0}` exists already; choose another --name")]
    SourceExists(String),
    /// No credential with that id that this user may use. Deliberately the same
    /// for a credential that does not exist and one that belongs to someone
    /// else, so that ids cannot be probed.
    #[error(
        "user `{user}` has no credential {id}; `intake credentials list --user {user}` shows theirs"
    )]
    NoSuchCredential {
        /// The user asking.
        user: String,
        /// The id given.
        id: CredentialId,
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
        "credential {id} is used by data sources {}; reconnect them with another credential, or pass --detach to leave them disconnected",
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
        "user `{user}` owns {credentials} credentials and {sources} data sources; pass --purge to delete them with the user"
    )]
    UserOwnsData {
        /// The user.
        user: String,
        /// Credentials owned.
        credentials: usize,
        /// Data sources owned.
        sources: usize,
    },
    /// A name is not acceptable.
    #[error("invalid {what} `{value}`: {rule}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
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
    keyring: Keyring,
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
    /// exist. Refuses a master key that does not match the database.
    pub fn open(path: &Path, keyring: Keyring) -> Result<Self> {
        let db = open_db(path)?;
        Self::with_db(db, path, keyring)
    }

    /// Opens (or creates) a database protected by a passphrase: reads the
    /// Argon2id salt and parameters from its meta table (creating them for a
    /// new database), derives the master key, and checks it like any other.
    /// A wrong passphrase is refused before anything else is read or written.
    pub fn open_with_passphrase(path: &Path, passphrase: &SecretString) -> Result<Self> {
        let db = open_db(path)?;
        let shown = path.display().to_string();
        let stored = {
            let txn = db.begin_read()?;
            match txn.open_table(META) {
                Ok(meta) => stored_kdf(&meta)?,
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let kdf = match stored {
            Some(kdf) => kdf,
            None => {
                // A new database (or one made with a key): decide in one write
                // transaction, so that two first opens agree on one salt.
                let txn = db.begin_write()?;
                let kdf = {
                    let mut meta = txn.open_table(META)?;
                    match stored_kdf(&meta)? {
                        Some(kdf) => kdf,
                        None => {
                            if meta.range("key_check:"..="key_check;")?.next().is_some() {
                                return Err(StoreError::KeyFileRequired { path: shown });
                            }
                            let min = crate::crypto::MIN_PASSPHRASE_CHARS;
                            if passphrase.expose().chars().count() < min {
                                return Err(KeyError::PassphraseTooShort { min }.into());
                            }
                            let kdf = PassphraseKdf::generate()?;
                            meta.insert(META_PASSPHRASE_KDF, model::encode(&kdf)?.as_slice())?;
                            kdf
                        }
                    }
                };
                txn.commit()?;
                kdf
            }
        };
        let keyring = Keyring::from_passphrase(passphrase, &kdf)?;
        Self::with_db(db, path, keyring).map_err(|e| match e {
            StoreError::WrongKey { path, .. } => StoreError::WrongPassphrase { path },
            other => other,
        })
    }

    fn with_db(db: Database, path: &Path, keyring: Keyring) -> Result<Self> {
        let store = Self {
            inner: Arc::new(Inner {
                db,
                keyring,
                path: path.to_owned(),
            }),
        };
        store.initialise()?;
        Ok(store)
    }

    /// Creates missing tables, records the format version and key check
    /// values, and verifies the key against existing check values.
    fn initialise(&self) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if let Some(found) = meta.get(META_FORMAT)? {
                let found = u32_from(found.value());
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: self.path_shown(),
                        found,
                    });
                }
            } else {
                meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
            }
            let passphrase_db = meta.get(META_PASSPHRASE_KDF)?.is_some();
            if passphrase_db && !self.keyring().is_from_passphrase() {
                return Err(StoreError::PassphraseRequired {
                    path: self.path_shown(),
                });
            }
            let mut any_check = false;
            for version in self.keyring().versions() {
                let name = check_key(version);
                if let Some(check) = meta.get(name.as_str())? {
                    any_check = true;
                    let check: Sealed = model::decode(check.value(), "key check")?;
                    if !self.keyring().verify_check_value(version, &check) {
                        return Err(StoreError::WrongKey {
                            path: self.path_shown(),
                            version,
                        });
                    }
                }
            }
            // A database that has check values for none of our versions was
            // made with another key, unless it has none at all (new database).
            let existing: Vec<String> = meta
                .range("key_check:"..="key_check;")?
                .map(|r| r.map(|(k, _)| k.value().to_owned()))
                .collect::<Result<_, _>>()?;
            if !any_check && !existing.is_empty() {
                return Err(StoreError::WrongKey {
                    path: self.path_shown(),
                    version: self.keyring().current().version(),
                });
            }
            for version in self.keyring().versions() {
                let name = check_key(version);
                if meta.get(name.as_str())?.is_none()
                    && let Some(check) = self.keyring().check_value(version)?
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
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The master keyring this store was opened with.
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
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

/// The passphrase salt and parameters stored in `meta`, if any.
fn stored_kdf(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<PassphraseKdf>> {
    meta.get(META_PASSPHRASE_KDF)?
        .map(|v| model::decode::<PassphraseKdf>(v.value(), "passphrase parameters"))
        .transpose()
}

/// Opens the redb file at `path` for many processes, creating it with mode
/// 0600 first so that it is never readable by others.
fn open_db(path: &Path) -> Result<Database> {
    let shown = path.display().to_string();
    let open_err = |reason: String| StoreError::Open {
        path: shown.clone(),
        reason,
    };
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(open_err(e.to_string())),
    }
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| open_err(e.to_string()))
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

/// Checks a credential title: 1 to 100 characters, no control characters.
pub(crate) fn check_title(value: &str) -> Result<()> {
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
