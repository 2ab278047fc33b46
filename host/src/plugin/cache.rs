//! The on-disk cache of compiled components.
//!
//! Compiling a component takes 100 ms to seconds; loading a compiled one,
//! well under a millisecond. Entries are keyed on the SHA-256 of the wasm and
//! of the engine's compatibility hash, so a changed plugin or engine config
//! never loads a stale artifact. Deserialising runs native code as written, so
//! every entry carries an HMAC made with a key derived from the master key:
//! only artifacts this host wrote are ever loaded; anything else is
//! recompiled and overwritten.

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

type HmacSha256 = Hmac<Sha256>;

/// The largest cache entry read, in bytes: compiled code is a few times the
/// size of the component.
const MAX_ENTRY_BYTES: u64 = 4 * super::file::MAX_COMPONENT_BYTES;

/// A directory of compiled components.
pub struct CompileCache {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
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
    /// A cache in `dir` (created 0700), authenticated with `key`.
    pub fn new(dir: PathBuf, key: Zeroizing<[u8; 32]>) -> Self {
        Self { dir, key }
    }

    fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(b"intake compile cache v1");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.write(&Sha256::digest(wasm));
        let digest = hasher.0.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self, bytes: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.key.as_ref())
            .expect("HMAC takes any key length");
        mac.update(bytes);
        mac.finalize().into_bytes().to_vec()
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
        if let Some(component) = self.load(engine, &path) {
            return Ok((component, true));
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!("cannot write the compile cache {}: {e}", path.display());
        }
        Ok((component, false))
    }

    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        // Never block on or exhaust memory with whatever sits at the path.
        let data = super::file::read_regular_file(path, MAX_ENTRY_BYTES).ok()?;
        if data.len() < 32 {
            return None;
        }
        let (tag, artifact) = data.split_at(32);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.key.as_ref()).ok()?;
        mac.update(artifact);
        if mac.verify_slice(tag).is_err() {
            tracing::warn!(
                "ignoring compile cache entry {}: not written by this host",
                path.display()
            );
            return None;
        }
        deserialize(engine, artifact).ok()
    }

    fn store(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let artifact = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&self.mac(&artifact))?;
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
