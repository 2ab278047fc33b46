//! The per-invocation store data: what one run of a plugin for one data
//! source can reach, and nothing more.
//!
//! WASI is linked so that components built with a standard library load, but
//! its context is empty: no preopened directories, no environment, no
//! arguments, closed stdin, discarded stdout and stderr, and no sockets. HTTP
//! goes through [`super::http::HttpPolicy`]; secrets through the broker.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::broker::{Binding, Broker};
use crate::secret::SecretString;

use super::http::HttpPolicy;

/// Store data of one invocation.
pub struct InvocationState {
    pub(super) table: ResourceTable,
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) hooks: HttpPolicy,
    pub(super) limits: StoreLimits,
    pub(super) guest: GuestContext,
}

impl std::fmt::Debug for InvocationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationState")
            .field("label", &self.guest.label)
            .finish_non_exhaustive()
    }
}

/// What the intake host interfaces (credentials, log) see of an invocation.
pub(super) struct GuestContext {
    /// The data source the plugin runs for; none while loading (spec).
    pub binding: Option<Binding>,
    /// The choke point; none while loading.
    pub broker: Option<Broker>,
    /// "data source NAME (platform)" for log lines.
    pub label: String,
    /// Values revealed to the plugin in this invocation, scrubbed from its
    /// log lines and error texts.
    pub revealed: Vec<SecretString>,
    /// Log rate limit.
    pub log_budget: LogBudget,
    /// Notes on what the host refused, added to the error if the run fails.
    pub notes: Arc<Mutex<Vec<String>>>,
}

impl GuestContext {
    /// Replaces every revealed value in `text` with `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.revealed)
    }
}

/// Replaces every value of `secrets` in `text` with `[redacted]`.
pub(super) fn scrub(text: &str, secrets: &[SecretString]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.len() >= 4 && out.contains(s.expose()) {
            out = out.replace(s.expose(), "[redacted]");
        }
    }
    out
}

/// A token bucket for plugin log lines.
#[derive(Debug)]
pub(super) struct LogBudget {
    tokens: f64,
    last: Instant,
    pub dropped: u64,
}

impl LogBudget {
    const BURST: f64 = 200.0;
    const PER_SECOND: f64 = 50.0;

    pub fn new() -> Self {
        Self {
            tokens: Self::BURST,
            last: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether one more line may be written now.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl InvocationState {
    pub(super) fn new(hooks: HttpPolicy, limits: StoreLimits, guest: GuestContext) -> Self {
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks,
            limits,
            guest,
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}
