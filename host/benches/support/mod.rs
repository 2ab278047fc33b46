//! Fixtures shared by the benchmarks (`intake.rs`, criterion; `report.rs`,
//! the side-by-side table): the guest plugins, an intake home with its
//! database, configuration and loaded [`Runtime`], and the baselines intake
//! is compared with: a bare wasmtime embedding of the same component (the
//! floor), a native process per fetch, and a raw redb + AES-GCM secret read.
//!
//! Everything here goes through the library's public API, as `intake run`
//! does; nothing is mocked.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use intake::broker::{Binding, Broker, Session, Use};
use intake::config::Config;
use intake::crypto::Keyring;
use intake::origin::Origin;
use intake::plugin::bindings::PluginPre;
use intake::plugin::bindings::connector::FetchRequest;
use intake::plugin::{PageSink, Runtime};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, NewSecrets, NewSource, SourceRecord, Store};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The origin the `hostile` plugin's token is for in the benchmarks. Nothing
/// listens there: the workloads used (`empty`, `bulk`) make no request.
pub const BASE_URL: &str = "http://127.0.0.1:9";

/// The root of the repository (the parent of `host/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent directory")
}

/// The component of guest plugin `name` (`hostile`, `adsample`, …), built
/// once per process like the integration tests do: `cargo build --release
/// --target wasm32-wasip2` of its workspace into `target/wasm-guests`.
pub fn guest(name: &str) -> PathBuf {
    static PLUGINS: OnceLock<PathBuf> = OnceLock::new();
    static TEST_PLUGINS: OnceLock<PathBuf> = OnceLock::new();
    let root = repo_root();
    let (cell, workspace) = if root.join("plugins").join(name).is_dir() {
        (&PLUGINS, root.join("plugins"))
    } else {
        (&TEST_PLUGINS, root.join("tests").join("plugins"))
    };
    let dir = cell.get_or_init(|| build_guests(&workspace));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "no guest plugin at {}", path.display());
    path
}

fn build_guests(workspace: &Path) -> PathBuf {
    let target_dir = repo_root().join("target").join("wasm-guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cannot run cargo to build the guest plugins");
    assert!(
        output.status.success(),
        "building the guest plugins of {} failed:\n{}",
        workspace.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir.join("wasm32-wasip2").join("release")
}

/// A new temporary directory under `target/bench-homes`: on the same disk
/// as the repository (not a tmpfs), so that durable writes cost what they
/// cost. Removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    let parent = repo_root().join("target").join("bench-homes");
    std::fs::create_dir_all(&parent).expect("create target/bench-homes");
    tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&parent)
        .expect("a temporary directory")
}

/// Settings of a data source of the `hostile` plugin running `workload`.
pub fn hostile_config(workload: &str) -> Vec<(String, String)> {
    vec![
        ("attack".into(), workload.into()),
        ("base_url".into(), BASE_URL.into()),
    ]
}

/// A `[[plugin]]` entry of a benchmark home.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// Its platform id.
    pub platform: String,
    /// Its component.
    pub path: PathBuf,
    /// Origins it may reach.
    pub allow: Vec<String>,
}

impl PluginEntry {
    /// The `noop` test plugin: the trivial plugin, an empty page per fetch.
    pub fn noop() -> Self {
        Self {
            platform: "noop".into(),
            path: guest("noop"),
            allow: Vec::new(),
        }
    }

    /// The `hostile` test plugin, allowed to reach [`BASE_URL`].
    pub fn hostile() -> Self {
        Self {
            platform: "hostile".into(),
            path: guest("hostile"),
            allow: vec![BASE_URL.into()],
        }
    }
}

/// An intake home in a temporary directory: configuration, database (with a
/// fresh master key), output and compile cache.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    /// The parsed `intake.toml`.
    pub config: Config,
    /// The open database.
    pub store: Store,
}

impl Home {
    /// A home loading `plugins`, running `concurrency` data sources at once,
    /// in a [`scratch`] directory.
    pub fn new(plugins: &[PluginEntry], concurrency: usize) -> Self {
        let dir = scratch();
        let quote = |s: &str| serde_json::to_string(s).expect("a string encodes");
        let mut text = format!(
            "[store]\npath = \"intake.redb\"\n[output]\ndir = \"output\"\n[cache]\ndir = \"cache\"\n\
             [scheduler]\nconcurrency = {concurrency}\nmax_attempts = 1\n"
        );
        for p in plugins {
            let allow: Vec<String> = p.allow.iter().map(|a| quote(a)).collect();
            text.push_str(&format!(
                "\n[[plugin]]\nplatform = {}\npath = {}\nallow = [{}]\n",
                quote(&p.platform),
                quote(&p.path.display().to_string()),
                allow.join(", ")
            ));
        }
        let config =
            Config::parse(&text, "intake.toml", dir.path().to_owned()).expect("valid config");
        let keyring = Keyring::generate().expect("a master key");
        let store =
            Store::open(&config.resolve(&config.store.path), keyring).expect("open the store");
        Self { dir, config, store }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The output directory.
    pub fn output_dir(&self) -> PathBuf {
        self.config.resolve(&self.config.output.dir)
    }

    /// Loads every plugin, with the compile cache if `cached` (keyed as
    /// `intake run` keys it).
    pub fn runtime(&self, cached: bool) -> Runtime {
        let key = cached.then(|| intake::plugin::CacheKeys::from_keyring(&self.store.keyring()));
        let runtime = Runtime::load(&self.config, Broker::new(self.store.clone()), key)
            .expect("the runtime loads");
        if let Some(err) = runtime.load_errors().next() {
            panic!("a plugin failed to load: {err}");
        }
        runtime
    }

    /// Adds `users` users (`u0`, `u1`, …) and `per_user` data sources of
    /// `platform` for each, with `config`; each user's first data source gets
    /// a new credential ([`new_secrets`]), the others reuse it. Returns the
    /// data sources, in creation order.
    pub fn add_sources(
        &self,
        platform: &str,
        users: usize,
        per_user: usize,
        config: &[(String, String)],
    ) -> Vec<SourceRecord> {
        self.add_sources_with(platform, users, per_user, config, &new_secrets())
    }

    /// [`Home::add_sources`] with each user's credential holding `secrets`.
    pub fn add_sources_with(
        &self,
        platform: &str,
        users: usize,
        per_user: usize,
        config: &[(String, String)],
        secrets: &NewSecrets,
    ) -> Vec<SourceRecord> {
        let mut out = Vec::with_capacity(users * per_user);
        for u in 0..users {
            let owner = format!("u{u}");
            if self.store.user(&owner).expect("read users").is_none() {
                self.store.add_user(&owner).expect("add a user");
            }
            let mut credential = None;
            for _ in 0..per_user {
                let choice = match credential {
                    Some(id) => CredentialChoice::Existing(id),
                    None => CredentialChoice::New(secrets.clone()),
                };
                let source = self
                    .store
                    .connect(NewSource {
                        name: None,
                        owner: owner.clone(),
                        platform: platform.into(),
                        config: config.to_vec(),
                        credential: choice,
                    })
                    .expect("connect a data source");
                credential = source.credential;
                out.push(source);
            }
        }
        out
    }
}

/// Secrets of a new `hostile` credential: one `token`.
pub fn new_secrets() -> NewSecrets {
    let mut fields = SecretFields::new();
    fields.insert("token", SecretString::from("bench-token-0123456789abcdef"));
    NewSecrets {
        title: "bench".into(),
        fields,
    }
}

/// A sink that counts what it is given and keeps nothing (the invocation
/// benchmarks measure the plugin path, not the disk).
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Bytes received.
    pub bytes: u64,
}

impl PageSink for CountingSink {
    fn write_page(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.bytes += records.len() as u64;
        Ok(())
    }
}

/// The floor: the least a host must do to run one fetch of the same
/// component. An engine with the same settings as intake's (component model,
/// epoch interruption, pooling allocator of the same shape and reset), every import
/// stubbed with a trap, and per invocation only a fresh `Store` with no data,
/// instantiation through the `InstancePre`, one `fetch` call and drop. No
/// WASI context, no resource table, no limits, no timeout, no broker binding.
pub struct Floor {
    engine: Engine,
    pre: PluginPre<()>,
    request: FetchRequest,
}

impl std::fmt::Debug for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Floor")
    }
}

/// An engine configured like intake's (`host/src/plugin/engine.rs`) with its
/// default sizing, without the epoch ticker thread. `tuned`: with intake's
/// reset of dirty pages in place (where the kernel supports it); otherwise
/// wasmtime's default pooling settings.
pub fn floor_engine(tuned: bool) -> Engine {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(1 << 20);
    let components = 64;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(components);
    pool.total_core_instances(components * 8);
    pool.total_memories(components * 2);
    pool.total_tables(components * 4);
    pool.max_memories_per_component(4);
    pool.max_tables_per_component(8);
    pool.max_core_instances_per_component(16);
    pool.max_memory_size(64 << 20);
    if tuned && PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes);
        pool.linear_memory_keep_resident(2 << 20);
        pool.table_keep_resident(64 << 10);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).expect("a wasmtime engine")
}

impl Floor {
    /// The floor for the component at `wasm`, whose `fetch` gets `config`,
    /// on an engine tuned like intake's (`tuned`) or wasmtime's defaults.
    pub fn new(wasm: &Path, config: Vec<(String, String)>, tuned: bool) -> Self {
        let engine = floor_engine(tuned);
        let component = Component::from_file(&engine, wasm).expect("a component");
        let mut linker = Linker::<()>::new(&engine);
        linker
            .define_unknown_imports_as_traps(&component)
            .expect("stub the imports");
        let pre = PluginPre::new(linker.instantiate_pre(&component).expect("instantiate_pre"))
            .expect("the connector export");
        Self {
            engine,
            pre,
            request: FetchRequest {
                config,
                cursor: None,
            },
        }
    }

    /// One invocation: new store, instantiate, `fetch`, drop. Returns the
    /// bytes of records the page held.
    pub async fn fetch(&self) -> usize {
        let mut store = wasmtime::Store::new(&self.engine, ());
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let page = instance
            .intake_connector_connector()
            .call_fetch(&mut store, &self.request)
            .await
            .expect("fetch does not trap")
            .expect("fetch succeeds");
        page.records.len()
    }
}

/// The request a process-per-fetch connector gets on its standard input.
pub const PROCESS_REQUEST: &[u8] =
    br#"{"config":{"attack":"empty","base_url":"http://127.0.0.1:9"},"cursor":null}"#;

/// A process per fetch, the cheapest form of it: spawn `/bin/true` and wait.
pub fn process_true() {
    let status = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn /bin/true");
    assert!(status.success());
}

/// A process per fetch as Singer taps and Airbyte sources work: spawn the
/// connector (`/bin/cat`, a native program that answers at once), write the
/// request to its standard input, read its answer from standard output,
/// wait for it to exit.
pub fn process_cat() -> usize {
    let mut child = Command::new("/bin/cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn /bin/cat");
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(PROCESS_REQUEST).expect("write the request");
    }
    let mut answer = Vec::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut answer)
        .expect("read the answer");
    assert!(child.wait().expect("wait").success());
    answer.len()
}

/// A granted secret request through the choke point: a data source of the
/// `hostile` platform whose credential holds `token`, and the binding a
/// plugin invocation for it gets (the field may be revealed and injected
/// into [`BASE_URL`]).
#[derive(Debug)]
pub struct SecretFixture {
    /// The broker.
    pub broker: Broker,
    /// The invocation's binding.
    pub binding: Binding,
    /// The destination of an injection.
    pub origin: Origin,
}

impl SecretFixture {
    /// Adds a user and a data source with a new credential to `home`.
    pub fn new(home: &Home) -> Self {
        let source = home
            .add_sources("hostile", 1, 1, &hostile_config("empty"))
            .pop()
            .expect("one data source");
        let origin = Origin::parse(BASE_URL).expect("an origin");
        let binding = Binding {
            source: source.id,
            owner: source.owner.clone(),
            platform: source.platform.clone(),
            fields: Arc::new([("token".to_owned(), vec![origin.clone()])].into()),
            reveal: Arc::new(["token".to_owned()].into()),
            pending: None,
            pending_of: None,
            // One binding serves every measured request: no per-invocation
            // cap on its audit records.
            session: Arc::new(Session::with_max_records(u32::MAX)),
        };
        Self {
            broker: Broker::new(home.store.clone()),
            binding,
            origin,
        }
    }

    /// One granted request for `token` (for injection, as placeholders are
    /// served); returns the value's length.
    pub fn request(&self) -> usize {
        let granted = self
            .broker
            .request(
                &self.binding,
                &["token"],
                &Use::Inject {
                    origin: self.origin.clone(),
                },
            )
            .expect("granted");
        granted.values.get("token").map_or(0, SecretString::len)
    }
}

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("secrets");

/// The baseline of a secret read: a plain redb database (default settings)
/// holding one AES-256-GCM ciphertext per key; a read is one read
/// transaction, one `get` and one decrypt under a key held in memory.
pub struct RawSecrets {
    _dir: tempfile::TempDir,
    db: redb::Database,
    key: [u8; 32],
}

impl std::fmt::Debug for RawSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawSecrets")
    }
}

impl RawSecrets {
    /// A database of 1,000 sealed values.
    pub fn new() -> Self {
        let dir = scratch();
        let db = redb::Database::create(dir.path().join("raw.redb")).expect("create redb");
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("random key");
        let cipher = Aes256Gcm::new(&key.into());
        let txn = db.begin_write().expect("write txn");
        {
            let mut table = txn.open_table(RAW).expect("table");
            for id in 0..1000u64 {
                let mut nonce = [0u8; 12];
                getrandom::fill(&mut nonce).expect("random nonce");
                let mut value = nonce.to_vec();
                value.extend(
                    cipher
                        .encrypt(
                            &Nonce::from(nonce),
                            Payload {
                                msg: b"bench-token-0123456789abcdef",
                                aad: &id.to_be_bytes(),
                            },
                        )
                        .expect("encrypt"),
                );
                table.insert(id, value.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        Self { _dir: dir, db, key }
    }

    /// Reads and decrypts value `id % 1000`; returns its length.
    pub fn read(&self, id: u64) -> usize {
        let id = id % 1000;
        let txn = self.db.begin_read().expect("read txn");
        let table = txn.open_table(RAW).expect("table");
        let value = table.get(id).expect("get").expect("present");
        let (nonce, ciphertext) = value.value().split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes");
        let cipher = Aes256Gcm::new(&self.key.into());
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &id.to_be_bytes(),
                },
            )
            .expect("decrypt");
        plain.len()
    }
}

/// The peak resident set size of this process so far (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// The resident set size of this process now (`VmRSS`), in bytes.
pub fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (`/proc/self/clear_refs`, value
/// 5), so that [`peak_rss`] measures from now. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A multi-threaded tokio runtime like `intake run`'s.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Times `iterations` calls of `f`; returns the mean per call.
pub fn time_per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations.max(1)
}

/// `n` copies of the `hostile` component that differ only in their platform
/// id (`hostil0`, `hostil1`, …, written over `hostile` in their bytes, the
/// same length), so that each is a plugin of its own with its own compile
/// cache entry. Written to `dir`; returned as `[[plugin]]` entries.
pub fn distinct_plugins(dir: &Path, n: usize) -> Vec<PluginEntry> {
    assert!(n <= 10, "platform ids `hostil0`…`hostil9` only");
    let wasm = std::fs::read(guest("hostile")).expect("read hostile.wasm");
    (0..n)
        .map(|i| {
            let platform = format!("hostil{i}");
            let mut bytes = wasm.clone();
            let from = b"hostile";
            let mut at = 0;
            while let Some(pos) = bytes[at..].windows(from.len()).position(|w| w == from) {
                bytes[at + pos..at + pos + from.len()].copy_from_slice(platform.as_bytes());
                at += pos + from.len();
            }
            let path = dir.join(format!("{platform}.wasm"));
            std::fs::write(&path, bytes).expect("write a plugin copy");
            PluginEntry {
                platform,
                path,
                allow: vec![BASE_URL.into()],
            }
        })
        .collect()
}
