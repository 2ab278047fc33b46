//! The on-disk cache of compiled components.
//!
//! Compiling a component takes 100 ms to seconds; loading a compiled one,
//! well under a millisecond. Entries are keyed on the SHA-256 of the wasm and
//! of the engine's compatibility hash, so a changed plugin or engine config
//! never loads a stale artifact. Deserialising runs native code as written, so
//! every entry carries an HMAC made with a key derived from the master key:
//! only artifacts this host wrote are ever loaded; anything else is
//! recompiled and overwritten.
//!
//! The key is derived from the master key's current version, so `intake keys
//! rotate` changes it; each entry names the version it was written under. An
//! entry whose HMAC checks out under a key derived from an older version the
//! keyring still holds was written by this host before a rotation, and one
//! naming a version the keyring no longer holds was written before that
//! version was retired: both are recompiled and rewritten quietly (a debug
//! log line). An entry that names a version the keyring holds but does not
//! check out, tampered with or written by a host with another master key, is
//! reported with a warning before it is replaced.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

use crate::crypto::Keyring;

type HmacSha256 = Hmac<Sha256>;

/// The largest cache entry read, in bytes: compiled code is a few times the
/// size of the component.
const MAX_ENTRY_BYTES: u64 = 4 * super::file::MAX_COMPONENT_BYTES;

/// What an entry starts with, before the master key version it was written
/// under (4 bytes, big-endian), its HMAC (32 bytes) and the artifact.
const MAGIC: &[u8; 8] = b"intakecc";

/// Bytes before the artifact.
const HEADER: usize = MAGIC.len() + 4 + 32;

/// The keys that authenticate compile cache entries: the one new entries are
/// written with, derived from the master key's current version, and those
/// derived from its older versions still in the keyring, which identify
/// entries written before a rotation. Never printed.
pub struct CacheKeys {
    current: Zeroizing<[u8; 32]>,
    /// The master key version `current` is derived from.
    current_version: u32,
    /// By master key version, newest first.
    previous: Vec<(u32, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for CacheKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKeys")
            .field(
                "previous_versions",
                &self.previous.iter().map(|(v, _)| v).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl CacheKeys {
    /// What the keys are derived for ([`Keyring::derive`]).
    const PURPOSE: &'static str = "compile cache";

    /// The keys for every version of `keyring`.
    pub fn from_keyring(keyring: &Keyring) -> Self {
        let current = keyring.current().version();
        let previous = keyring
            .versions()
            .into_iter()
            .rev()
            .filter(|&v| v != current)
            .filter_map(|v| keyring.derive_for(v, Self::PURPOSE).map(|key| (v, key)))
            .collect();
        Self {
            current: keyring.derive(Self::PURPOSE),
            current_version: current,
            previous,
        }
    }

    /// Whether the keyring these keys come from holds master key `version`.
    fn knows(&self, version: u32) -> bool {
        version == self.current_version || self.previous.iter().any(|(v, _)| *v == version)
    }
}

/// What a cache lookup found.
enum Lookup {
    /// A valid entry, loaded.
    Hit(Component),
    /// No entry (or none that could be read, or one this engine cannot
    /// load although this host wrote it).
    Missing,
    /// An entry this host wrote under an older master key version, before
    /// a rotation.
    Stale {
        /// That version.
        version: u32,
    },
    /// An entry written under a master key version the keyring no longer
    /// holds (retired since), or in an older format.
    Retired {
        /// That version (0: an older format, which names none).
        version: u32,
    },
    /// An entry that checks out under none of the keys it could be from.
    Foreign,
}

/// A directory of compiled components.
pub struct CompileCache {
    dir: PathBuf,
    keys: CacheKeys,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// A cache in `dir` (created 0700), authenticated with `keys`.
    pub fn new(dir: PathBuf, keys: CacheKeys) -> Self {
        Self { dir, keys }
    }

    fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(b"intake compile cache v1");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.write(&Sha256::digest(wasm));
        let digest = hasher.0.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The HMAC of an entry: its artifact bound to its name (the wasm's
    /// hash and the engine's), so that an entry copied to another name (one
    /// plugin's code under another's) does not verify.
    fn hmac(key: &[u8; 32], name: &str, version: u32) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"intake compile cache entry v3\0");
        mac.update(name.as_bytes());
        mac.update(b"\0");
        mac.update(&version.to_be_bytes());
        mac
    }

    fn mac(key: &[u8; 32], name: &str, version: u32, artifact: &[u8]) -> [u8; 32] {
        let mut mac = Self::hmac(key, name, version);
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }

    /// The compiled component for `wasm`: from the cache when a valid entry
    /// exists, otherwise compiled and stored. Returns whether it was cached.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let name = Self::entry_name(engine, wasm);
        let path = self.dir.join(format!("{name}.cwasm"));
        match self.lookup(engine, &name, &path) {
            Lookup::Hit(component) => return Ok((component, true)),
            Lookup::Missing => {}
            Lookup::Stale { version } => tracing::debug!(
                "compile cache entry {} was written under master key version {version}, before \
                 a key rotation; recompiling it",
                path.display()
            ),
            Lookup::Retired { version: 0 } => tracing::debug!(
                "compile cache entry {} is of an older format; recompiling it",
                path.display()
            ),
            Lookup::Retired { version } => tracing::debug!(
                "compile cache entry {} was written under master key version {version}, which \
                 the key file no longer holds (retired); recompiling it",
                path.display()
            ),
            Lookup::Foreign => tracing::warn!(
                "ignoring compile cache entry {}: not written by this host (it does not carry \
                 this host's authentication tag: it was altered, or written by a host with \
                 another master key); recompiling it",
                path.display()
            ),
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&name, &path, &component) {
            tracing::warn!("cannot write the compile cache {}: {e}", path.display());
        }
        Ok((component, false))
    }

    fn lookup(&self, engine: &Engine, name: &str, path: &Path) -> Lookup {
        // Never block on or exhaust memory with whatever sits at the path.
        let data = match super::file::read_regular_file(path, MAX_ENTRY_BYTES) {
            Ok(data) => data,
            Err(e) => {
                if path.exists() {
                    tracing::debug!("cannot read compile cache entry {}: {e}", path.display());
                }
                return Lookup::Missing;
            }
        };
        let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
            return Lookup::Retired { version: 0 };
        };
        if rest.len() < HEADER - MAGIC.len() {
            return Lookup::Foreign;
        }
        let (version, rest) = rest.split_at(4);
        let version = u32::from_be_bytes(version.try_into().unwrap_or_default());
        let (tag, artifact) = rest.split_at(32);
        let verifies = |key: &[u8; 32]| {
            // `verify_slice` compares in constant time.
            let mut mac = Self::hmac(key, name, version);
            mac.update(artifact);
            mac.verify_slice(tag).is_ok()
        };
        if version == self.keys.current_version && verifies(&self.keys.current) {
            return match deserialize(engine, artifact) {
                Ok(component) => Lookup::Hit(component),
                Err(e) => {
                    tracing::debug!(
                        "cannot load compile cache entry {}: {e}; recompiling it",
                        path.display()
                    );
                    Lookup::Missing
                }
            };
        }
        if !self.keys.knows(version) {
            // Never loaded either way; only how it is reported differs.
            return Lookup::Retired { version };
        }
        match self
            .keys
            .previous
            .iter()
            .find(|(v, key)| *v == version && verifies(key))
        {
            Some(&(version, _)) => Lookup::Stale { version },
            None => Lookup::Foreign,
        }
    }

    fn store(&self, name: &str, path: &Path, component: &Component) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let artifact = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        // A new file of our own: never through a link planted at that name.
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)?;
        let version = self.keys.current_version;
        file.write_all(MAGIC)?;
        file.write_all(&version.to_be_bytes())?;
        file.write_all(&Self::mac(&self.keys.current, name, version, &artifact))?;
        file.write_all(&artifact)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    }
}

/// Loads a compiled component whose HMAC was verified.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` was written by `CompileCache::store` of a host holding
    // the same master key (its HMAC verified), from `Component::serialize`
    // with an engine of the same compatibility hash (part of the entry name).
    unsafe { Component::deserialize(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cache: &CompileCache, engine: &Engine, wasm: &[u8]) -> PathBuf {
        cache
            .dir
            .join(format!("{}.cwasm", CompileCache::entry_name(engine, wasm)))
    }

    fn found(cache: &CompileCache, engine: &Engine, wasm: &[u8]) -> &'static str {
        let name = CompileCache::entry_name(engine, wasm);
        match cache.lookup(engine, &name, &entry(cache, engine, wasm)) {
            Lookup::Hit(_) => "hit",
            Lookup::Missing => "missing",
            Lookup::Stale { version: 1 } => "stale v1",
            Lookup::Stale { .. } => "stale, another version",
            Lookup::Retired { version: 0 } => "older format",
            Lookup::Retired { .. } => "retired",
            Lookup::Foreign => "foreign",
        }
    }

    #[test]
    fn an_entry_from_before_a_rotation_is_stale_and_a_forged_one_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let wasm = wat::parse_str("(component)").unwrap();
        let mut keyring = Keyring::generate().unwrap();
        let cache = |keyring: &Keyring| {
            CompileCache::new(dir.path().to_owned(), CacheKeys::from_keyring(keyring))
        };

        let v1 = cache(&keyring);
        assert_eq!(found(&v1, &engine, &wasm), "missing");
        assert!(!v1.load_or_compile(&engine, &wasm).unwrap().1);
        assert!(v1.load_or_compile(&engine, &wasm).unwrap().1);

        // A rotation: the entry was written by this host under version 1.
        keyring.add_version().unwrap();
        let v2 = cache(&keyring);
        assert_eq!(found(&v2, &engine, &wasm), "stale v1");
        // Recompiled and rewritten under version 2, then loaded.
        assert!(!v2.load_or_compile(&engine, &wasm).unwrap().1);
        assert_eq!(found(&v2, &engine, &wasm), "hit");
        assert!(v2.load_or_compile(&engine, &wasm).unwrap().1);

        // An altered artifact checks out under no key.
        let path = entry(&v2, &engine, &wasm);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(found(&v2, &engine, &wasm), "foreign");
        assert!(!v2.load_or_compile(&engine, &wasm).unwrap().1);

        // Neither does an entry of a host with another master key, nor a
        // stub too short to hold a tag.
        assert_eq!(found(&v2, &engine, &wasm), "hit");
        let mut other_keyring = Keyring::generate().unwrap();
        other_keyring.add_version().unwrap();
        let other = cache(&other_keyring);
        assert_eq!(found(&other, &engine, &wasm), "foreign");
        let mut short = MAGIC.to_vec();
        short.extend_from_slice(b"short");
        std::fs::write(&path, &short).unwrap();
        assert_eq!(found(&v2, &engine, &wasm), "foreign");
        // An entry of an older format names no version: recompiled quietly.
        std::fs::write(&path, b"an entry without the magic number").unwrap();
        assert_eq!(found(&v2, &engine, &wasm), "older format");
    }

    #[test]
    fn an_entry_under_a_retired_version_is_recompiled_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let wasm = wat::parse_str("(component)").unwrap();
        let mut keyring = Keyring::generate().unwrap();
        let v1 = CompileCache::new(dir.path().to_owned(), CacheKeys::from_keyring(&keyring));
        v1.load_or_compile(&engine, &wasm).unwrap();
        keyring.add_version().unwrap();
        assert!(keyring.remove_version(1));
        let v2 = CompileCache::new(dir.path().to_owned(), CacheKeys::from_keyring(&keyring));
        assert_eq!(found(&v2, &engine, &wasm), "retired");
        assert!(!v2.load_or_compile(&engine, &wasm).unwrap().1);
        assert_eq!(found(&v2, &engine, &wasm), "hit");
    }

    #[test]
    fn an_entry_copied_to_another_name_is_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let keyring = Keyring::generate().unwrap();
        let cache = CompileCache::new(dir.path().to_owned(), CacheKeys::from_keyring(&keyring));
        let a = wat::parse_str("(component)").unwrap();
        let b = wat::parse_str("(component (core module))").unwrap();
        cache.load_or_compile(&engine, &a).unwrap();
        cache.load_or_compile(&engine, &b).unwrap();
        assert_eq!(found(&cache, &engine, &b), "hit");
        // A's host-written entry put where B's belongs: it is A's code, so
        // it must not load as B (under B's allowances).
        std::fs::copy(entry(&cache, &engine, &a), entry(&cache, &engine, &b)).unwrap();
        assert_eq!(found(&cache, &engine, &b), "foreign");
        assert_eq!(found(&cache, &engine, &a), "hit");
    }

    #[test]
    fn cache_keys_per_version_match_what_each_version_derived() {
        let mut keyring = Keyring::generate().unwrap();
        let v1 = keyring.derive(CacheKeys::PURPOSE);
        keyring.add_version().unwrap();
        let v2 = keyring.derive(CacheKeys::PURPOSE);
        keyring.add_version().unwrap();
        let keys = CacheKeys::from_keyring(&keyring);
        assert_eq!(*keys.current, *keyring.derive(CacheKeys::PURPOSE));
        let previous: Vec<_> = keys.previous.iter().map(|(v, k)| (*v, **k)).collect();
        assert_eq!(previous, [(2, *v2), (1, *v1)]);
        assert_ne!(*v1, *v2);
        // Never printed.
        let shown = format!("{keys:?}");
        assert!(!shown.contains(&format!("{:?}", *v1)), "{shown}");
    }
}
