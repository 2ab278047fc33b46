//! Master keys (key-encryption keys): where they come from and how they are kept.
//!
//! A keyring holds one or more versions of the master key; the highest version
//! wraps new data keys, older ones still unwrap what they wrapped. The keyring
//! comes from a key file (mode 0600, refused if others can read it), from an
//! environment variable, or from a passphrase stretched with Argon2id under
//! the salt and parameters stored in the database (see
//! [`Keyring::from_passphrase`]; such a keyring holds one version, the one
//! the database records for its current passphrase). Changing the
//! passphrase ([`PassphraseChange`]) derives the next version under a fresh
//! salt. The file holds one line per version:
//!
//! ```text
//! intake-master-key 1 <base64 of 32 random bytes>
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::{Zeroize, Zeroizing};

use super::envelope::{open_with, seal_with};
use super::{Aad, CryptoError, PassphraseKdf, Sealed, random_bytes};
use crate::secret::SecretString;

const LINE_TAG: &str = "intake-master-key";
const CHECK_PLAINTEXT: &[u8] = b"intake master key check";

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file, which must not be readable by group or others.
    File(PathBuf),
    /// An environment variable holding the key file's text, or just the
    /// base64 key (taken as version 1).
    Env(String),
    /// A passphrase, stretched with Argon2id under the salt and parameters
    /// stored in the database: from the environment variable `env` if set,
    /// else (when `prompt`) asked for on the terminal by the command line.
    /// Open the database with [`crate::store::Store::open_with_passphrase`].
    Passphrase {
        /// The environment variable holding the passphrase.
        env: Option<String>,
        /// Whether the command line may prompt for it on a terminal.
        prompt: bool,
    },
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable {v}"),
            KeySource::Passphrase { env: Some(v), .. } => {
                write!(f, "passphrase (environment variable {v})")
            }
            KeySource::Passphrase { env: None, .. } => f.write_str("passphrase (prompt)"),
        }
    }
}

/// A problem with the master key. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file does not exist.
    #[error(
        "{0} does not exist: create one with `intake init`, or set `[keys] file` (or `env`) in intake.toml"
    )]
    Missing(PathBuf),
    /// The key file can be read by other users.
    #[error(
        "{path} can be read by other users (mode {mode:o}); run `chmod 600 {path}` and check who may have copied it"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists already (when creating one).
    #[error("{0} exists already; intake will not overwrite a master key")]
    Exists(PathBuf),
    /// The environment variable is not set.
    #[error(
        "environment variable {0} is not set; set it to the key file's text (or a base64 key), \
         or use `[keys] file` in intake.toml"
    )]
    EnvMissing(String),
    /// The environment variable is set but is not UTF-8 text.
    #[error(
        "environment variable {0} is not valid UTF-8 text, so it cannot hold a key; set it to \
         the key file's text (or a base64 key)"
    )]
    EnvNotText(String),
    /// The key file path is not a regular file.
    #[error(
        "{} is {what}, not a key file; point `[keys] file` in intake.toml at the key file \
         (`intake init` creates one in a new directory)",
        .path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, e.g. "a directory".
        what: &'static str,
    },
    /// The key text is malformed.
    #[error("{source_name} is not a valid intake master key: {reason}")]
    Malformed {
        /// Where the text came from.
        source_name: String,
        /// What is wrong (never key bytes).
        reason: String,
    },
    /// Reading or writing the file failed.
    #[error("cannot access {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// No passphrase was given.
    #[error(
        "no passphrase: set the environment variable {0}, or set `[keys] passphrase = true` and run in a terminal to be asked"
    )]
    PassphraseMissing(String),
    /// The passphrase is too short for a new database.
    #[error(
        "the passphrase is too short: a new database needs at least {min} characters (a long sentence is best)"
    )]
    PassphraseTooShort {
        /// The minimum.
        min: usize,
    },
    /// The new passphrase (when changing it) is too short.
    #[error(
        "the new passphrase is too short: it needs at least {min} characters (a long sentence \
         is best); nothing was changed"
    )]
    NewPassphraseTooShort {
        /// The minimum.
        min: usize,
    },
    /// The new passphrase is the current one.
    #[error(
        "the new passphrase is the same as the current one; choose another (nothing was changed)"
    )]
    SamePassphrase,
    /// A passphrase change was asked of a keyring that is not from a passphrase.
    #[error(
        "the master key comes from a key file (or key variable), not a passphrase: \
         `intake keys rotate` adds a key version to the key file instead"
    )]
    NotFromPassphrase,
    /// The passphrase was changed by someone else since the database was opened.
    #[error(
        "the passphrase of the database was changed meanwhile (by another `intake keys rotate`); \
         nothing was changed here: run `intake keys verify` with the passphrase that is current now"
    )]
    PassphraseChangedMeanwhile,
    /// A passphrase keyring was asked for without the database's salt.
    #[error(
        "a passphrase key is derived with the salt stored in the database; open the database with its passphrase"
    )]
    PassphraseNeedsDatabase,
    /// The stored key derivation parameters are not usable.
    #[error("the database's passphrase parameters are not usable: {0}")]
    BadKdf(String),
    /// Randomness or key derivation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// One version of the master key. Wiped on drop, never printed.
#[derive(Clone)]
pub struct MasterKey {
    version: u32,
    key: Zeroizing<[u8; 32]>,
    /// The AES-256-GCM cipher of `key`, set up once: its key schedule and
    /// GHASH tables cost more than opening a small value with them, on every
    /// secret request (wiped on drop too).
    cipher: aes_gcm::Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(v{}, [redacted])", self.version)
    }
}

impl MasterKey {
    fn new(version: u32, key: Zeroizing<[u8; 32]>) -> Self {
        use aes_gcm::KeyInit;
        let cipher = aes_gcm::Aes256Gcm::new((&*key).into());
        Self {
            version,
            key,
            cipher,
        }
    }

    /// The cipher of this key.
    pub(super) fn cipher(&self) -> &aes_gcm::Aes256Gcm {
        &self.cipher
    }

    /// The key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

/// All known versions of the master key.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u32, MasterKey>,
    from_passphrase: bool,
    /// Where it was loaded from ([`Keyring::load`]), so that a long-running
    /// process can re-read it after a rotation; `None` if generated or
    /// derived from a passphrase.
    source: Option<KeySource>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.versions())
            .field("from_passphrase", &self.from_passphrase)
            .field("source", &self.source)
            .finish()
    }
}

impl Keyring {
    /// A new keyring with one random key, version 1.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut keyring = Self {
            keys: BTreeMap::new(),
            from_passphrase: false,
            source: None,
        };
        keyring.add_version()?;
        Ok(keyring)
    }

    /// Adds a new random version, which becomes current. Returns its number.
    pub fn add_version(&mut self) -> Result<u32, CryptoError> {
        let version = self.keys.keys().next_back().map_or(1, |v| v + 1);
        let mut key = Zeroizing::new([0u8; 32]);
        random_bytes(key.as_mut())?;
        self.keys.insert(version, MasterKey::new(version, key));
        Ok(version)
    }

    /// Removes a version that nothing is wrapped with any more.
    pub fn remove_version(&mut self, version: u32) -> bool {
        self.keys.len() > 1 && self.keys.remove(&version).is_some()
    }

    /// The current (highest) version, which wraps new data keys.
    pub fn current(&self) -> &MasterKey {
        // A keyring is never empty: every constructor adds a version.
        self.keys
            .values()
            .next_back()
            .expect("a keyring always holds at least one key")
    }

    /// The key of `version`, if held.
    pub fn get(&self, version: u32) -> Option<&MasterKey> {
        self.keys.get(&version)
    }

    /// Versions held, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Where this keyring was loaded from by [`Keyring::load`] (a key file
    /// or an environment variable); `None` for a generated keyring or one
    /// derived from a passphrase.
    pub fn source(&self) -> Option<&KeySource> {
        self.source.as_ref()
    }

    /// Loads the keyring from `source`.
    pub fn load(source: &KeySource) -> Result<Self, KeyError> {
        let mut keyring = Self::load_from(source)?;
        keyring.source = Some(source.clone());
        Ok(keyring)
    }

    fn load_from(source: &KeySource) -> Result<Self, KeyError> {
        match source {
            KeySource::File(path) => Self::load_file(path),
            KeySource::Env(var) => {
                let text = Zeroizing::new(std::env::var(var).map_err(|e| match e {
                    std::env::VarError::NotPresent => KeyError::EnvMissing(var.clone()),
                    std::env::VarError::NotUnicode(raw) => {
                        std::os::unix::ffi::OsStringExt::into_vec(raw).zeroize();
                        KeyError::EnvNotText(var.clone())
                    }
                })?);
                Self::parse(&text, &source.to_string())
            }
            KeySource::Passphrase { .. } => Err(KeyError::PassphraseNeedsDatabase),
        }
    }

    /// The keyring of one key, `version`, derived from `passphrase` with
    /// Argon2id under `kdf` (the database's stored salt and parameters, and
    /// the version it records for them: 1 until the passphrase is changed).
    pub fn from_passphrase(
        passphrase: &SecretString,
        kdf: &PassphraseKdf,
        version: u32,
    ) -> Result<Self, KeyError> {
        if passphrase.is_empty() {
            return Err(KeyError::PassphraseTooShort {
                min: super::MIN_PASSPHRASE_CHARS,
            });
        }
        if version == 0 {
            return Err(KeyError::BadKdf("key version 0".into()));
        }
        kdf.check().map_err(KeyError::BadKdf)?;
        let key = kdf.derive(passphrase)?;
        let mut keys = BTreeMap::new();
        keys.insert(version, MasterKey::new(version, key));
        Ok(Self {
            keys,
            from_passphrase: true,
            source: None,
        })
    }

    /// Whether this keyring was derived from a passphrase.
    pub fn is_from_passphrase(&self) -> bool {
        self.from_passphrase
    }

    fn load_file(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            error: source,
        };
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing(path.to_owned()));
            }
            Err(e) => return Err(io(e)),
        };
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_owned(),
                what: if meta.is_dir() {
                    "a directory"
                } else {
                    "a special file (a pipe, socket or device)"
                },
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.display().to_string(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        Self::parse(&text, &format!("key file {}", path.display()))
    }

    /// Parses key file text (or a bare base64 key, taken as version 1).
    fn parse(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            source_name: source_name.to_owned(),
            reason,
        };
        let mut keys = BTreeMap::new();
        let trimmed = text.trim();
        if !trimmed.is_empty() && !trimmed.contains(char::is_whitespace) {
            let key = decode_key(trimmed).map_err(malformed)?;
            keys.insert(1, MasterKey::new(1, key));
        } else {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (Some(LINE_TAG), Some(version), Some(b64), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(malformed(format!(
                        "line {} is not `{LINE_TAG} VERSION BASE64KEY`",
                        n + 1
                    )));
                };
                let version: u32 = version
                    .parse()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| malformed(format!("line {} has a bad version", n + 1)))?;
                let key = decode_key(b64)
                    .map_err(|reason| malformed(format!("line {}: {reason}", n + 1)))?;
                if keys.insert(version, MasterKey::new(version, key)).is_some() {
                    return Err(malformed(format!("version {version} appears twice")));
                }
            }
        }
        if keys.is_empty() {
            return Err(malformed("it holds no key".into()));
        }
        Ok(Self {
            keys,
            from_passphrase: false,
            source: None,
        })
    }

    /// The key file text for this keyring. Secret: write it only to a 0600 file.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(
            "# intake master key. Keep it secret and mode 0600; back it up apart from the database.\n",
        ));
        for key in self.keys.values() {
            text.push_str(&format!(
                "{LINE_TAG} {} {}\n",
                key.version,
                Zeroizing::new(BASE64.encode(key.key.as_ref())).as_str()
            ));
        }
        text
    }

    /// Creates a key file at `path` with mode 0600; refuses to overwrite.
    pub fn create_file(&self, path: &Path) -> Result<(), KeyError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists(path.to_owned())
                } else {
                    KeyError::Io {
                        path: path.display().to_string(),
                        error: e,
                    }
                }
            })?;
        file.write_all(self.to_file_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Io {
                path: path.display().to_string(),
                error: source,
            })
    }

    /// A 256-bit key for `purpose` derived from the current master key
    /// (HMAC-SHA256), e.g. to authenticate the compile cache.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        derive_from(self.current(), purpose)
    }

    /// What [`Keyring::derive`] gave for `purpose` while `version` was the
    /// current one (e.g. to accept what was authenticated before a
    /// rotation); `None` if this keyring does not hold `version`.
    pub fn derive_for(&self, version: u32, purpose: &str) -> Option<Zeroizing<[u8; 32]>> {
        self.get(version).map(|key| derive_from(key, purpose))
    }

    /// Replaces the key file at `path` atomically (temporary file with mode
    /// 0600, synced, renamed over it), so that a crash leaves either the old
    /// or the new file, never a partial one.
    pub fn replace_file(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            error: source,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        self.create_file(&tmp)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Takes the exclusive lock that every command editing the key file at
    /// `path` holds from reading it to writing it back (`PATH.lock`, mode
    /// 0600), so that two of them (a rotation and a retirement, say) never
    /// write over each other's version and lose a key in use. Waits for the
    /// other command, calling `waiting` first if it has to. Released when
    /// the file is dropped (or the process ends).
    pub fn lock_file(path: &Path, waiting: impl FnOnce()) -> Result<fs::File, KeyError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let io = |error| KeyError::Io {
            path: lock_path.display().to_string(),
            error,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                waiting();
                file.lock().map_err(io)?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(file)
    }

    /// A check value for `version`: proves later that a key is the same.
    pub fn check_value(&self, version: u32) -> Result<Option<Sealed>, CryptoError> {
        let Some(key) = self.get(version) else {
            return Ok(None);
        };
        seal_with(key.bytes(), &check_aad(version), CHECK_PLAINTEXT).map(Some)
    }

    /// Whether this keyring's `version` opens `check`.
    pub fn verify_check_value(&self, version: u32, check: &Sealed) -> bool {
        self.get(version).is_some_and(|key| {
            open_with(key.bytes(), &check_aad(version), check, String::new)
                .is_ok_and(|p| p.as_slice() == CHECK_PLAINTEXT)
        })
    }
}

/// A change of passphrase, prepared in memory: the current passphrase's
/// keyring and the next master key version, derived from the new passphrase
/// with Argon2id under a fresh random salt (the parameters of a new
/// database). Nothing is written: [`crate::store::Store::change_passphrase`]
/// re-wraps every data key from the one to the other and switches the
/// database's record of the passphrase in a single transaction.
#[derive(Clone)]
pub struct PassphraseChange {
    /// The current version(s) and the new one; the new one is current.
    transition: Keyring,
    /// Just the new version: what the new passphrase opens afterwards.
    new: Keyring,
    old_version: u32,
    kdf: PassphraseKdf,
}

impl std::fmt::Debug for PassphraseChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseChange")
            .field("old_version", &self.old_version)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl PassphraseChange {
    /// Refuses a new passphrase that is too short (the minimum of a new
    /// database) or the same as the current one. Cheap: check it before
    /// deriving anything.
    pub fn check_new(current: &SecretString, new: &SecretString) -> Result<(), KeyError> {
        let min = super::MIN_PASSPHRASE_CHARS;
        if new.expose().chars().count() < min {
            return Err(KeyError::NewPassphraseTooShort { min });
        }
        if new.expose() == current.expose() {
            return Err(KeyError::SamePassphrase);
        }
        Ok(())
    }

    /// Prepares changing the passphrase of a database opened with
    /// `current` (a keyring derived from `current_passphrase`) to
    /// `new_passphrase`: a fresh salt, the next key version.
    pub fn prepare(
        current: &Keyring,
        current_passphrase: &SecretString,
        new_passphrase: &SecretString,
    ) -> Result<Self, KeyError> {
        Self::prepare_with(
            current,
            current_passphrase,
            new_passphrase,
            PassphraseKdf::generate()?,
        )
    }

    fn prepare_with(
        current: &Keyring,
        current_passphrase: &SecretString,
        new_passphrase: &SecretString,
        kdf: PassphraseKdf,
    ) -> Result<Self, KeyError> {
        if !current.is_from_passphrase() {
            return Err(KeyError::NotFromPassphrase);
        }
        Self::check_new(current_passphrase, new_passphrase)?;
        let old_version = current.current().version();
        let version = old_version + 1;
        let new = Keyring::from_passphrase(new_passphrase, &kdf, version)?;
        let mut transition = current.clone();
        transition.keys.insert(
            version,
            new.get(version)
                .expect("a passphrase keyring holds its version")
                .clone(),
        );
        Ok(Self {
            transition,
            new,
            old_version,
            kdf,
        })
    }

    /// The keyring holding the current version and the new one (which is
    /// its current, so it wraps): for re-wrapping.
    pub fn transition(&self) -> &Keyring {
        &self.transition
    }

    /// The keyring the new passphrase opens once the change is done.
    pub fn new_keyring(&self) -> &Keyring {
        &self.new
    }

    /// The version the current passphrase derives.
    pub fn old_version(&self) -> u32 {
        self.old_version
    }

    /// The new version, derived from the new passphrase.
    pub fn version(&self) -> u32 {
        self.new.current().version()
    }

    /// The new salt and parameters, to store in place of the old.
    pub fn kdf(&self) -> &PassphraseKdf {
        &self.kdf
    }

    /// The check value of the new version.
    pub fn check_value(&self) -> Result<Sealed, CryptoError> {
        let version = self.version();
        let key = self
            .new
            .get(version)
            .expect("a passphrase keyring holds its version");
        seal_with(key.bytes(), &check_aad(version), CHECK_PLAINTEXT)
    }
}

/// A 256-bit key for `purpose` derived from `key` (HMAC-SHA256).
fn derive_from(key: &MasterKey, purpose: &str) -> Zeroizing<[u8; 32]> {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.bytes())
        .expect("HMAC takes any key length");
    mac.update(b"intake/derive/v1\0");
    mac.update(purpose.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn check_aad(version: u32) -> Aad {
    Aad::new("intake/key-check/v1").u64(u64::from(version))
}

fn decode_key(b64: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(
        BASE64
            .decode(b64.trim())
            .map_err(|_| "the key is not valid base64".to_string())?,
    );
    if bytes.len() != 32 {
        return Err(format!(
            "the key is {} bytes long; it must be 32",
            bytes.len()
        ));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("intake.key");
        let mut keyring = Keyring::generate().expect("rng");
        keyring.add_version().expect("rng");
        keyring.create_file(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Keyring::load(&KeySource::File(path.clone())).expect("load");
        assert_eq!(loaded.versions(), [1, 2]);
        let check = keyring.check_value(2).expect("rng").expect("v2");
        assert!(loaded.verify_check_value(2, &check));
        assert!(matches!(
            keyring.create_file(&path),
            Err(KeyError::Exists(_))
        ));
    }

    #[test]
    fn group_readable_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("intake.key");
        Keyring::generate()
            .expect("rng")
            .create_file(&path)
            .expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = Keyring::load(&KeySource::File(path)).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn wrong_key_fails_the_check() {
        let a = Keyring::generate().expect("rng");
        let b = Keyring::generate().expect("rng");
        let check = a.check_value(1).expect("rng").expect("v1");
        assert!(!b.verify_check_value(1, &check));
    }

    const OLD: &str = "the old passphrase, long enough";
    const NEW: &str = "the new passphrase, long enough";

    #[test]
    fn passphrase_change_derives_the_next_version_under_a_fresh_salt() {
        use crate::crypto::DataKey;
        let (old_pass, new_pass) = (SecretString::from(OLD), SecretString::from(NEW));
        let old_kdf = PassphraseKdf::generate().expect("rng");
        let current = Keyring::from_passphrase(&old_pass, &old_kdf, 1).expect("derive");
        let old_check = current.check_value(1).expect("rng").expect("v1");
        let aad = Aad::new("intake/test/v1").u64(7);
        let dek = DataKey::generate().expect("rng");
        let wrapped_old = dek.wrap(&current, &aad).expect("wrap");
        let sealed = dek.seal(&aad, b"hunter2").expect("seal");

        let change = PassphraseChange::prepare(&current, &old_pass, &new_pass).expect("prepare");
        assert_eq!((change.old_version(), change.version()), (1, 2));
        assert_ne!(change.kdf().salt, old_kdf.salt, "the salt is fresh");
        let policy = PassphraseKdf::generate().expect("rng");
        assert_eq!(
            (
                change.kdf().m_cost_kib,
                change.kdf().t_cost,
                change.kdf().p_cost
            ),
            (policy.m_cost_kib, policy.t_cost, policy.p_cost),
            "the parameters of a new database"
        );
        assert!(!format!("{change:?}").contains("key:"));

        // While switching, both versions are held and the new one wraps.
        let transition = change.transition();
        assert_eq!(transition.versions(), [1, 2]);
        assert!(transition.is_from_passphrase());
        let rewrapped = DataKey::unwrap(transition, &wrapped_old, &aad, || "k".into())
            .expect("the old version unwraps")
            .wrap(transition, &aad)
            .expect("wrap");
        assert_eq!(rewrapped.kek_version, 2);

        // Afterwards the new passphrase, with the new salt and version, opens
        // the new check value and the re-wrapped key, to the same data key.
        let reopened = Keyring::from_passphrase(&new_pass, change.kdf(), 2).expect("derive");
        assert_eq!(reopened.versions(), change.new_keyring().versions());
        let check = change.check_value().expect("rng");
        assert!(reopened.verify_check_value(2, &check));
        let back = DataKey::unwrap(&reopened, &rewrapped, &aad, || "k".into()).expect("unwrap");
        let opened = back
            .open(&aad, &sealed, || "x".into())
            .expect("same data key");
        assert_eq!(opened.as_slice(), b"hunter2");
        assert!(matches!(
            DataKey::unwrap(&reopened, &wrapped_old, &aad, || "k".into()),
            Err(CryptoError::UnknownKeyVersion { version: 1, .. })
        ));

        // The old passphrase opens neither under the new salt, nor does the
        // new one under the old salt.
        let old_new_salt = Keyring::from_passphrase(&old_pass, change.kdf(), 2).expect("derive");
        assert!(!old_new_salt.verify_check_value(2, &check));
        let new_old_salt = Keyring::from_passphrase(&new_pass, &old_kdf, 1).expect("derive");
        assert!(!new_old_salt.verify_check_value(1, &old_check));
        assert!(!change.new_keyring().verify_check_value(1, &old_check));

        // A second change goes on to version 3.
        let again = PassphraseChange::prepare(&reopened, &new_pass, &old_pass).expect("prepare");
        assert_eq!((again.old_version(), again.version()), (2, 3));
        assert_ne!(again.kdf().salt, change.kdf().salt);
    }

    #[test]
    fn passphrase_change_refuses_a_short_or_same_passphrase_or_a_key_file() {
        let old_pass = SecretString::from(OLD);
        let kdf = PassphraseKdf::generate().expect("rng");
        let current = Keyring::from_passphrase(&old_pass, &kdf, 1).expect("derive");
        let err = PassphraseChange::prepare(&current, &old_pass, &SecretString::from("too short"))
            .unwrap_err();
        assert!(
            matches!(err, KeyError::NewPassphraseTooShort { min: 12 }),
            "{err}"
        );
        assert!(
            err.to_string().contains("new passphrase is too short"),
            "{err}"
        );
        // Counted in characters, not bytes.
        let err =
            PassphraseChange::check_new(&old_pass, &SecretString::from("ééééééééééé")).unwrap_err();
        assert!(
            matches!(err, KeyError::NewPassphraseTooShort { .. }),
            "{err}"
        );
        let err =
            PassphraseChange::prepare(&current, &old_pass, &SecretString::from(OLD)).unwrap_err();
        assert!(matches!(err, KeyError::SamePassphrase), "{err}");
        let from_file = Keyring::generate().expect("rng");
        let err =
            PassphraseChange::prepare(&from_file, &old_pass, &SecretString::from(NEW)).unwrap_err();
        assert!(matches!(err, KeyError::NotFromPassphrase), "{err}");
        assert!(matches!(
            Keyring::from_passphrase(&old_pass, &kdf, 0),
            Err(KeyError::BadKdf(_))
        ));
    }

    #[test]
    fn malformed_text_is_explained_without_key_bytes() {
        let err = Keyring::parse("intake-master-key 1 c2hvcnQ=\n", "test").unwrap_err();
        assert!(err.to_string().contains("must be 32"), "{err}");
        let err = Keyring::parse("garbage here\n", "test").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
