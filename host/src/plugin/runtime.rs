//! Loading plugins and invoking them for data sources.
//!
//! [`Runtime::load`] reads the operator's `[[plugin]]` entries; a plugin that
//! fails to load is recorded with its error and fails only its own data
//! sources. [`Runtime::fetch`] runs one data source: a fresh store with its
//! limits, a binding to that data source, `fetch` called page by page until
//! the plugin says there is no more. The broker's audit records are made
//! durable before a request with injected secrets leaves the host and before
//! revealed values reach the plugin, and whatever is still buffered when the
//! invocation ends, on tokio's blocking pool (see [`Broker::flush_async`]);
//! an invocation cancelled midway (its future dropped) writes them as it is
//! dropped ([`FlushOnDrop`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

use crate::broker::{Binding, Broker};
use crate::config::{Config, Limits, PluginConfig};
use crate::origin::Origin;
use crate::secret::SecretFields;
use crate::store::SourceRecord;

use super::bindings::connector::{ConnectorError, FetchRequest};
use super::bindings::{PluginPre, credentials, log, types};
use super::cache::{CacheKeys, CompileCache};
use super::engine::{EngineSettings, new_engine};
use super::file::{MAX_COMPONENT_BYTES, read_regular_file};
use super::http::HttpPolicy;
use super::limiter::InvocationLimiter;
use super::scrub::Scrubber;
use super::spec::{PluginSpec, Reach};
use super::state::{
    Fault, GuestContext, InvocationState, LimitExceeded, LogBudget, StderrTail, Tripwire, one_line,
    safe_line,
};

/// The `intake:connector` package version this host implements.
const PACKAGE_VERSION: &str = "0.1.0";

/// The longest cursor a plugin may return, in bytes; it is stored with the
/// data source.
const MAX_CURSOR_BYTES: usize = 64 * 1024;

/// The longest error text kept from a plugin (or about one), in bytes.
const MAX_ERROR_BYTES: usize = 4096;

/// Why a plugin could not be loaded, naming the file and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin `{platform}` ({path}): {reason}")]
pub struct LoadError {
    /// The platform in the configuration.
    pub platform: String,
    /// The component file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Why a run of a data source failed. Each kind tells the scheduler what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The platform rejected the credential: mark it broken, do not retry.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The platform asked to slow down.
    #[error("rate limited by the platform: {message}")]
    RateLimited {
        /// How long it asked to wait.
        retry_after: Option<Duration>,
        /// Its message.
        message: String,
    },
    /// A temporary failure: retry with backoff.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The data source's settings are wrong: do not retry.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The plugin reported another error.
    #[error("plugin error: {0}")]
    Plugin(String),
    /// The invocation exceeded a limit.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The plugin trapped (crashed).
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// The data source's credential is broken or gone: skipped until the
    /// owner reconnects it.
    #[error("needs reconnecting: {0}")]
    NeedsReconnect(String),
    /// Another run of the same data source is in progress (in this or
    /// another intake process); this one was skipped.
    #[error("skipped: {0}")]
    Busy(String),
    /// The run was cancelled (shutdown).
    #[error("cancelled: intake was shutting down")]
    Cancelled,
    /// No plugin is loaded for the platform.
    #[error("{0}")]
    NoPlugin(String),
    /// The host failed (store, output).
    #[error("host error: {0}")]
    Host(String),
}

/// Where the records of a run go, page by page.
pub trait PageSink: Send {
    /// Writes one page of JSON Lines.
    fn write_page(&mut self, records: &[u8]) -> std::io::Result<()>;
}

/// What a successful fetch produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Pages fetched.
    pub pages: u32,
    /// Records (lines) written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The cursor to save for the next run.
    pub cursor: Option<String>,
}

/// A plugin, the binding, the effective config and the origins of one
/// invocation.
type Prepared = (Arc<LoadedPlugin>, Binding, Vec<(String, String)>, Reach);

/// A plugin ready to run.
pub struct LoadedPlugin {
    /// What it declares.
    pub spec: PluginSpec,
    /// The component file.
    pub path: PathBuf,
    /// Whether it came from the compile cache.
    pub cached: bool,
    pre: PluginPre<InvocationState>,
    allow: Vec<Origin>,
    reveal: Arc<BTreeSet<String>>,
    /// Credential fields the spec declares not secret.
    public_fields: Arc<BTreeSet<String>>,
    limits: Limits,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("platform", &self.spec.platform)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The engine, the linker and every loaded plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InvocationState>,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    failed: BTreeMap<String, LoadError>,
    broker: Broker,
    cache: Option<CompileCache>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("plugins", &self.plugins.keys())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<InvocationState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    credentials::add_to_linker::<_, HasSelf<InvocationState>>(&mut linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<InvocationState>>(&mut linker, |s| s)?;
    types::add_to_linker::<_, HasSelf<InvocationState>>(&mut linker, |s| s)?;
    Ok(linker)
}

impl Runtime {
    /// Builds the engine and loads every plugin of `config`. Plugins that fail
    /// to load are kept in [`Runtime::load_errors`]; the rest work.
    /// `cache_keys` authenticate the compile cache (none disables it).
    pub fn load(
        config: &Config,
        broker: Broker,
        cache_keys: Option<CacheKeys>,
    ) -> Result<Self, String> {
        // The pool's slots fit the largest memory limit; each store's own
        // limit is enforced by its limiter. Limits are range-checked when the
        // configuration loads, but a `Config` can be built in code too.
        let max_memory = config
            .plugins
            .iter()
            .map(|p| p.limits.memory_mib.clamp(1, crate::config::MAX_MEMORY_MIB))
            .max()
            .unwrap_or(64);
        let largest =
            |limit: fn(&Limits) -> u32| config.plugins.iter().map(|p| limit(&p.limits)).max();
        let defaults = Limits::default();
        let settings = EngineSettings {
            max_core_instances: largest(|l| l.instances).unwrap_or(defaults.instances),
            max_tables: largest(|l| l.tables).unwrap_or(defaults.tables),
            max_table_elements: largest(|l| l.table_elements).unwrap_or(defaults.table_elements),
            max_instances: config
                .scheduler
                .concurrency
                .min(crate::config::MAX_CONCURRENCY)
                .checked_mul(2)
                .and_then(|n| n.checked_add(8))
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1024),
            max_memory_bytes: max_memory << 20,
        };
        let engine = new_engine(settings).map_err(|e| format!("cannot start wasmtime: {e:#}"))?;
        let linker = linker(&engine).map_err(|e| format!("cannot link host interfaces: {e:#}"))?;
        let cache =
            cache_keys.map(|keys| CompileCache::new(config.resolve(&config.cache.dir), keys));
        let mut runtime = Self {
            engine,
            linker,
            plugins: BTreeMap::new(),
            failed: BTreeMap::new(),
            broker,
            cache,
        };
        for plugin in &config.plugins {
            let path = config.resolve(&plugin.path);
            match runtime.load_one(plugin, &path) {
                Ok(loaded) => {
                    runtime
                        .plugins
                        .insert(plugin.platform.clone(), Arc::new(loaded));
                }
                Err(reason) => {
                    let err = LoadError {
                        platform: plugin.platform.clone(),
                        path: path.display().to_string(),
                        reason: one_line(&reason, MAX_ERROR_BYTES),
                    };
                    tracing::error!("{err}");
                    runtime.failed.insert(plugin.platform.clone(), err);
                }
            }
        }
        Ok(runtime)
    }

    fn load_one(&self, cfg: &PluginConfig, path: &Path) -> Result<LoadedPlugin, String> {
        let wasm = read_regular_file(path, MAX_COMPONENT_BYTES).map_err(|e| e.to_string())?;
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err("it is not a WebAssembly file".into());
        }
        if wasm[4..8] == [1, 0, 0, 0] {
            return Err(
                "it is a core WebAssembly module, not a component; build the plugin for the \
                 wasm32-wasip2 target"
                    .into(),
            );
        }
        let (component, cached) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &wasm),
            None => wasmtime::component::Component::new(&self.engine, &wasm).map(|c| (c, false)),
        }
        .map_err(|e| match memory_too_small(&e, &cfg.limits) {
            Some(why) => why,
            None => format!("it is not a valid component: {e:#}"),
        })?;
        if let Some(version) = foreign_package_version(&self.engine, &component) {
            return Err(format!(
                "it was built for intake:connector@{version}, but this host implements \
                 intake:connector@{PACKAGE_VERSION}; rebuild it with this host's WIT and plugin SDK"
            ));
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!("it needs an import the host does not provide (intake plugins may import only intake:connector, wasi:http and basic WASI): {e:#}")
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            format!("it does not export the intake:connector/connector@0.1.0 interface this host expects: {e:#}")
        })?;
        let allow = cfg
            .allow
            .iter()
            .map(|a| Origin::parse(a).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut loaded = LoadedPlugin {
            spec: PluginSpec {
                platform: cfg.platform.clone(),
                display_name: String::new(),
                version: String::new(),
                credential_fields: Vec::new(),
                config_fields: Vec::new(),
                hosts: Vec::new(),
            },
            path: path.to_owned(),
            cached,
            pre,
            allow,
            reveal: Arc::new(cfg.reveal.iter().cloned().collect()),
            public_fields: Arc::default(),
            limits: cfg.limits.clone(),
        };
        let spec = self.call_spec(&loaded)?;
        spec.validate()
            .map_err(|e| format!("its spec is invalid: {e}"))?;
        if spec.platform != cfg.platform {
            return Err(format!(
                "its spec says platform `{}`, but the configuration loads it as `{}`",
                spec.platform, cfg.platform
            ));
        }
        if let Some(f) = cfg.reveal.iter().find(|f| spec.field(f).is_none()) {
            return Err(format!(
                "`reveal` names `{f}`, which its spec does not declare"
            ));
        }
        loaded.public_fields = Arc::new(
            spec.credential_fields
                .iter()
                .filter(|f| !f.secret)
                .map(|f| f.name.clone())
                .collect(),
        );
        loaded.spec = spec;
        Ok(loaded)
    }

    fn call_spec(&self, plugin: &LoadedPlugin) -> Result<PluginSpec, String> {
        let mut store = self.new_store(plugin, None, Reach::default(), "loading".into());
        let stderr = store.data().guest.stderr.clone();
        let fut = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance
                .intake_connector_connector()
                .call_spec(&mut store)
                .await
        };
        let result =
            block_on_or_spawn(async { tokio::time::timeout(Duration::from_secs(10), fut).await });
        match result {
            Ok(Ok(spec)) => Ok(spec.into()),
            Ok(Err(e)) => Err(format!(
                "calling its `spec` failed: {}",
                trap(&e, &plugin.limits, &stderr)
            )),
            Err(_) => Err("its `spec` did not return within 10 s".into()),
        }
    }

    fn new_store(
        &self,
        plugin: &LoadedPlugin,
        binding: Option<Binding>,
        reach: Reach,
        label: String,
    ) -> Store<InvocationState> {
        let notes = Arc::new(Mutex::new(Vec::new()));
        let scrubber = Scrubber::default();
        let tripwire = Tripwire::default();
        let hooks = HttpPolicy {
            allowed: reach.hosts,
            declared: reach.declared,
            operator: plugin.allow.clone(),
            binding: binding.clone(),
            broker: binding.as_ref().map(|_| self.broker.clone()),
            max_requests: plugin.limits.http_requests,
            requests_left: plugin.limits.http_requests,
            max_response_mib: plugin.limits.http_response_mib,
            public_fields: plugin.public_fields.clone(),
            label: label.clone(),
            notes: notes.clone(),
            scrubber: scrubber.clone(),
            tripwire: tripwire.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(super::http::MAX_IN_FLIGHT)),
        };
        let guest = GuestContext {
            broker: binding.as_ref().map(|_| self.broker.clone()),
            binding,
            label,
            scrubber,
            tripwire,
            log_budget: LogBudget::new(),
            notes,
            stderr: StderrTail::default(),
            credential_calls: 0,
        };
        let state = InvocationState::new(hooks, InvocationLimiter::new(&plugin.limits), guest);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// The loaded plugin for `platform`, or why there is none.
    pub fn plugin(&self, platform: &str) -> Result<&Arc<LoadedPlugin>, RunError> {
        self.plugins.get(platform).ok_or_else(|| {
            RunError::NoPlugin(match self.failed.get(platform) {
                Some(err) => err.to_string(),
                None => format!(
                    "no plugin is configured for platform `{platform}`; add a [[plugin]] entry to intake.toml"
                ),
            })
        })
    }

    /// Every loaded plugin, by platform.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.values()
    }

    /// Plugins that failed to load, by platform.
    pub fn load_errors(&self) -> impl Iterator<Item = &LoadError> {
        self.failed.values()
    }

    /// The broker plugins' secret requests go through.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Binding, effective config and reachable origins for one data source.
    fn prepare(
        &self,
        source: &SourceRecord,
        pending: Option<Arc<Mutex<SecretFields>>>,
        pending_of: Option<crate::store::CredentialId>,
    ) -> Result<Prepared, RunError> {
        let plugin = self.plugin(&source.platform)?.clone();
        let config = plugin
            .spec
            .effective_config(&source.config)
            .map_err(RunError::InvalidConfig)?;
        let mut reach = plugin
            .spec
            .origins_for(&config, &plugin.allow)
            .map_err(RunError::InvalidConfig)?;
        let binding = Binding {
            source: source.id,
            owner: source.owner.clone(),
            platform: plugin.spec.platform.clone(),
            fields: Arc::new(std::mem::take(&mut reach.fields)),
            reveal: plugin.reveal.clone(),
            pending,
            pending_of,
            session: Arc::default(),
        };
        Ok((plugin, binding, config, reach))
    }

    /// Fetches every page for `source`, starting from `cursor`, writing
    /// records to `sink`. Audit records are flushed whatever the outcome.
    pub async fn fetch(
        &self,
        source: &SourceRecord,
        cursor: Option<String>,
        sink: &mut dyn PageSink,
    ) -> Result<FetchOutcome, RunError> {
        let (plugin, binding, config, reach) = self.prepare(source, None, None)?;
        let flush_on_drop = FlushOnDrop(Some(self.broker.clone()));
        let label = format!("{} ({})", source.name, source.platform);
        let mut store = self.new_store(&plugin, Some(binding), reach, label);
        let limits = plugin.limits.clone();
        let stderr = store.data().guest.stderr.clone();
        let run = async {
            let instance = plugin
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap(&e, &limits, &stderr))?;
            let connector = instance.intake_connector_connector();
            let mut outcome = FetchOutcome {
                cursor: cursor.clone(),
                ..FetchOutcome::default()
            };
            loop {
                let request = FetchRequest {
                    config: config.clone(),
                    cursor: outcome.cursor.clone(),
                };
                let page = connector
                    .call_fetch(&mut store, &request)
                    .await
                    .map_err(|e| trap(&e, &limits, &stderr))?
                    .map_err(connector_error)?;
                if let Some(cursor) = page.cursor.as_ref().filter(|c| c.len() > MAX_CURSOR_BYTES) {
                    return Err(RunError::Limit(format!(
                        "the plugin returned a cursor of {} bytes; at most {} KiB are stored",
                        cursor.len(),
                        MAX_CURSOR_BYTES >> 10
                    )));
                }
                outcome.pages += 1;
                outcome.bytes = outcome.bytes.saturating_add(page.records.len() as u64);
                if outcome.bytes > limits.output_bytes() {
                    return Err(RunError::Limit(format!(
                        "the plugin returned more than {} MiB of records (limits.output_mib)",
                        limits.output_mib
                    )));
                }
                // A value the plugin was given or saw goes no further, even
                // as data (records and cursors are stored in the clear).
                let scrubber = &store.data().guest.scrubber;
                if scrubber.holds_any(&page.records)
                    || page
                        .cursor
                        .as_deref()
                        .is_some_and(|c| scrubber.holds_any(c.as_bytes()))
                {
                    return Err(RunError::Plugin(
                        "the plugin returned a credential value in its records or cursor; \
                         none of them is kept"
                            .into(),
                    ));
                }
                if !page.records.is_empty() && page.records.last() != Some(&b'\n') {
                    return Err(RunError::Plugin(
                        "records must be JSON Lines, each line ending in a newline".into(),
                    ));
                }
                outcome.records += page.records.iter().filter(|b| **b == b'\n').count() as u64;
                if outcome.records > limits.max_records {
                    return Err(RunError::Limit(format!(
                        "the plugin returned more than {} records (limits.max_records)",
                        limits.max_records
                    )));
                }
                sink.write_page(&page.records)
                    .map_err(|e| RunError::Host(format!("cannot write records: {e}")))?;
                outcome.cursor = page.cursor;
                if !page.more {
                    return Ok(outcome);
                }
                if outcome.pages >= limits.max_pages {
                    return Err(RunError::Limit(format!(
                        "the plugin had more pages to return than limits.max_pages = {} allows",
                        limits.max_pages
                    )));
                }
            }
        };
        let timed = tokio::time::timeout(limits.wall_time, run).await;
        let result = self.conclude(store, timed, "fetch", limits.wall_time).await;
        flush_on_drop.disarm();
        result
    }

    /// Ends an invocation: a timeout becomes a `limits.wall_time` error,
    /// dropped log lines are reported, the error is scrubbed and gets the
    /// host's notes, the store is dropped (freeing its pool slot for the
    /// next invocation) and then the audit records are written.
    async fn conclude<T>(
        &self,
        store: Store<InvocationState>,
        timed: Result<Result<T, RunError>, tokio::time::error::Elapsed>,
        what: &str,
        wall_time: Duration,
    ) -> Result<T, RunError> {
        let result = timed.unwrap_or_else(|_| {
            Err(RunError::Limit(format!(
                "the {what} took longer than {} (limits.wall_time)",
                humantime::format_duration(wall_time)
            )))
        });
        let guest = &store.data().guest;
        report_dropped_logs(guest);
        let result = finish(result, guest);
        drop(store);
        if let Err(e) = self.broker.flush_async().await {
            tracing::error!("cannot write the audit log: {e}");
        }
        result
    }
}

impl Runtime {
    /// Runs the plugin's `check` for `source`. With `pending`, the plugin is
    /// served those secrets instead of the stored credential (for checking
    /// before saving; `pending_of` names the stored credential they are a
    /// version of, for the audit). [`Checked::secrets`] holds them as the
    /// check left them, with any value the plugin wrote back (a refreshed
    /// token), whether the check passed or not: a single-use refresh token
    /// used by a check that failed is gone all the same.
    pub async fn check(
        &self,
        source: &SourceRecord,
        pending: Option<SecretFields>,
        pending_of: Option<crate::store::CredentialId>,
    ) -> Checked {
        let pending = pending.map(|p| Arc::new(Mutex::new(p)));
        let outcome = self.check_with(source, pending.clone(), pending_of).await;
        Checked {
            outcome,
            secrets: pending
                .map(|p| std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner()))),
        }
    }

    async fn check_with(
        &self,
        source: &SourceRecord,
        pending: Option<Arc<Mutex<SecretFields>>>,
        pending_of: Option<crate::store::CredentialId>,
    ) -> Result<(), RunError> {
        let (plugin, binding, config, reach) = self.prepare(source, pending, pending_of)?;
        let flush_on_drop = FlushOnDrop(Some(self.broker.clone()));
        let label = format!("{} ({}, check)", source.name, source.platform);
        let mut store = self.new_store(&plugin, Some(binding), reach, label);
        let limits = plugin.limits.clone();
        let stderr = store.data().guest.stderr.clone();
        let run = async {
            let instance = plugin
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap(&e, &limits, &stderr))?;
            instance
                .intake_connector_connector()
                .call_check(&mut store, &config)
                .await
                .map_err(|e| trap(&e, &limits, &stderr))?
                .map_err(connector_error)
        };
        let timed = tokio::time::timeout(limits.wall_time, run).await;
        let result = self.conclude(store, timed, "check", limits.wall_time).await;
        flush_on_drop.disarm();
        result
    }
}

/// Writes the broker's buffered audit records if an invocation is dropped
/// before it concludes (cancelled: its future dropped at an `await`), so that
/// its denials are not lost; [`FlushOnDrop::disarm`] once it concluded, which
/// wrote them. The write is synchronous (a drop cannot wait for the blocking
/// pool, and the runtime may be shutting down): one commit, on cancellation
/// only.
struct FlushOnDrop(Option<Broker>);

impl FlushOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        if let Some(broker) = self.0.take()
            && let Err(e) = broker.flush()
        {
            tracing::error!("cannot write the audit log of a cancelled invocation: {e}");
        }
    }
}

/// What [`Runtime::check`] found.
#[derive(Debug)]
pub struct Checked {
    /// Whether the credentials and config work against the platform.
    pub outcome: Result<(), RunError>,
    /// The pending secrets as the check left them (see [`Runtime::check`]).
    pub secrets: Option<SecretFields>,
}

/// Logs how many of the plugin's log lines the rate limit dropped.
fn report_dropped_logs(guest: &GuestContext) {
    let dropped = guest.log_budget.dropped;
    if dropped > 0 {
        tracing::warn!(
            target: "intake::plugin",
            source = %guest.label,
            "{dropped} log lines dropped: the plugin logged faster than {} a second",
            LogBudget::PER_SECOND
        );
    }
}

/// The outcome of an invocation as it leaves it: a limit exceeded where the
/// host could not trap, or a failure of the host itself (see [`Tripwire`]),
/// fails it whatever the plugin returned; an error gets what the host refused added, every secret value
/// revealed or injected scrubbed, and is kept to one bounded line.
fn finish<T>(result: Result<T, RunError>, guest: &GuestContext) -> Result<T, RunError> {
    let result = match guest.tripwire.tripped() {
        Some(Fault::Limit(what)) => Err(RunError::Limit(what)),
        Some(Fault::Host(why)) => Err(RunError::Host(why)),
        None => result,
    };
    result.map_err(|e| finish_error(e, &guest.scrubber, &guest.notes))
}

/// Adds what the host refused to the error, scrubs the invocation's secret
/// values, and keeps plugin-controlled text to one bounded line.
fn finish_error(err: RunError, scrubber: &Scrubber, notes: &Mutex<Vec<String>>) -> RunError {
    let notes = notes.lock().map(|n| n.clone()).unwrap_or_default();
    let extra = if notes.is_empty() {
        String::new()
    } else {
        format!(" (the host refused: {})", notes.join("; "))
    };
    // Cut while scrubbing (see `safe_line`): a plugin's megabytes of error
    // text cost what 4 KiB do. With notes, the plugin's text gets half, so
    // that the cut never hides why the host refused something.
    let fix = |s: String| {
        if extra.is_empty() {
            return safe_line(scrubber, &s, MAX_ERROR_BYTES);
        }
        let head = safe_line(scrubber, &s, MAX_ERROR_BYTES / 2);
        safe_line(scrubber, &format!("{head}{extra}"), MAX_ERROR_BYTES)
    };
    let clean = |s: String| safe_line(scrubber, &s, MAX_ERROR_BYTES);
    match err {
        RunError::AuthFailed(s) => RunError::AuthFailed(fix(s)),
        RunError::RateLimited {
            retry_after,
            message,
        } => RunError::RateLimited {
            retry_after,
            message: fix(message),
        },
        RunError::Transient(s) => RunError::Transient(fix(s)),
        RunError::InvalidConfig(s) => RunError::InvalidConfig(fix(s)),
        RunError::Plugin(s) => RunError::Plugin(fix(s)),
        RunError::Trap(s) => RunError::Trap(fix(s)),
        RunError::Limit(s) => RunError::Limit(clean(s)),
        other => other,
    }
}

/// The error of a component whose initial memory is larger than the pool's
/// slots, which are as large as the largest `limits.memory_mib`: the plugin
/// needs more memory than its limit.
fn memory_too_small(e: &wasmtime::Error, limits: &Limits) -> Option<String> {
    const SAYS: &str = "memory has a minimum byte size of ";
    let text = format!("{e:#}");
    let at = text.find(SAYS)? + SAYS.len();
    let needed = text[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok());
    let needs = match needed {
        Some(bytes) => format!("at least {} MiB", bytes.div_ceil(1 << 20)),
        None => "more".to_owned(),
    };
    Some(format!(
        "it needs {needs} of memory to start, more than limits.memory_mib = {} MiB allows; \
         raise limits.memory_mib for it in intake.toml",
        limits.memory_mib
    ))
}

fn connector_error(e: ConnectorError) -> RunError {
    match e {
        ConnectorError::AuthFailed(s) => RunError::AuthFailed(s),
        ConnectorError::RateLimited(r) => RunError::RateLimited {
            retry_after: r.retry_after_ms.map(Duration::from_millis),
            message: r.message,
        },
        ConnectorError::Transient(s) => RunError::Transient(s),
        ConnectorError::InvalidConfig(s) => RunError::InvalidConfig(s),
        ConnectorError::Other(s) => RunError::Plugin(s),
    }
}

/// What a trap (or another error out of wasm) means for people: a memory
/// limit, or a one-line crash report with the plugin's panic message or the
/// function it was in.
fn trap(e: &wasmtime::Error, limits: &Limits, stderr: &StderrTail) -> RunError {
    if let Some(LimitExceeded(what)) = e.downcast_ref::<LimitExceeded>() {
        return RunError::Limit(what.clone());
    }
    if let Some(what) = super::limiter::count_exceeded(e, limits) {
        return RunError::Limit(what);
    }
    if e.chain().any(|cause| {
        cause
            .downcast_ref::<wasmtime::component::ResourceTableError>()
            .is_some_and(|t| matches!(t, wasmtime::component::ResourceTableError::Full))
    }) {
        return RunError::Limit(format!(
            "the plugin held more than {} host resources (streams, HTTP requests and \
             responses, header sets) at once",
            super::state::MAX_RESOURCES
        ));
    }
    let cause = match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::StackOverflow) => {
            "its call stack overflowed (unbounded recursion?)".to_owned()
        }
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            "it aborted (wasm `unreachable` executed)".to_owned()
        }
        Some(other) => other.to_string(),
        // A host call failed: the whole chain, without the backtrace.
        None => e
            .chain()
            .map(ToString::to_string)
            .filter(|cause| !cause.starts_with("error while executing at wasm backtrace"))
            .collect::<Vec<_>>()
            .join(": "),
    };
    let message = match stderr.panic_message() {
        Some(panic) => panic,
        None => match e
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name()))
        {
            Some(function) => format!("{cause} in `{}`", demangle(function)),
            None => cause,
        },
    };
    // Not cut here: `finish_error` cuts it after scrubbing a wider window.
    RunError::Trap(message)
}

/// `crate::module::function` for a legacy-mangled Rust symbol
/// (`_ZN5crate6module8function17h0123456789abcdefE`); any other name as is.
fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN").and_then(|r| r.strip_suffix('E')) else {
        return name.to_owned();
    };
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        // Checked: a name section may claim any length (`_ZN99999…`).
        let Some(part) = rest[..digits]
            .parse::<usize>()
            .ok()
            .filter(|len| *len > 0)
            .and_then(|len| digits.checked_add(len))
            .and_then(|end| rest.get(digits..end))
        else {
            return name.to_owned();
        };
        parts.push(part);
        rest = &rest[digits + part.len()..];
    }
    if parts
        .last()
        .is_some_and(|p| p.len() == 17 && p.starts_with('h'))
    {
        parts.pop();
    }
    if parts.is_empty() {
        return name.to_owned();
    }
    parts.join("::")
}

/// The first `intake:connector` version among the component's imports and
/// exports that this host cannot serve (semver: same major, or the same minor
/// for 0.x).
fn foreign_package_version(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Option<String> {
    let ty = component.component_type();
    let compatible = |v: &str| {
        let key = |v: &str| -> Vec<String> {
            let mut parts = v.split(['.', '-', '+']).map(str::to_owned);
            let major = parts.next().unwrap_or_default();
            if major == "0" {
                vec![major, parts.next().unwrap_or_default()]
            } else {
                vec![major]
            }
        };
        key(v) == key(PACKAGE_VERSION)
    };
    ty.imports(engine)
        .map(|(name, _)| name.to_owned())
        .chain(ty.exports(engine).map(|(name, _)| name.to_owned()))
        .filter_map(|name| {
            let (_, version) = name.strip_prefix("intake:connector/")?.split_once('@')?;
            Some(version.to_owned())
        })
        .find(|v| !compatible(v))
}

/// Runs `fut` to completion from sync code, on the current tokio runtime if
/// there is one (in a blocking section) or on a temporary one.
fn block_on_or_spawn<F: Future>(fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(fut)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for plugin loading")
            .block_on(fut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_legacy_rust_names() {
        assert_eq!(
            demangle("_ZN7hostile7recurse17hd895f4a6734b931bE"),
            "hostile::recurse"
        );
        assert_eq!(demangle("abort"), "abort");
        assert_eq!(demangle("_ZN99shortE"), "_ZN99shortE");
        // A length that overflows `usize` when added to its digits.
        let huge = format!("_ZN{}xE", usize::MAX);
        assert_eq!(demangle(&huge), huge);
        assert_eq!(demangle("_ZNE"), "_ZNE");
        assert_eq!(demangle("_ZN0E"), "_ZN0E");
    }

    #[test]
    fn finds_incompatible_package_versions() {
        let engine = Engine::default();
        let exporting = |version: &str| {
            let wat = format!(
                r#"(component (instance $c) (export "intake:connector/connector@{version}" (instance $c)))"#
            );
            let wasm = wat::parse_str(&wat).expect("valid WAT");
            wasmtime::component::Component::new(&engine, wasm).expect("a component")
        };
        for (version, foreign) in [
            ("0.1.0", false),
            ("0.1.7", false),
            ("0.2.0", true),
            ("1.0.0", true),
        ] {
            assert_eq!(
                foreign_package_version(&engine, &exporting(version)),
                foreign.then(|| version.to_owned()),
                "{version}"
            );
        }
    }
}
