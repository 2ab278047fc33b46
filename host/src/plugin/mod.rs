//! The plugin runtime: loading connector components and running them sandboxed.
//!
//! One wasmtime [`Engine`](wasmtime::Engine) serves the whole process (async,
//! epoch interruption, pooling allocator). Each plugin is validated against
//! the `intake:connector/plugin` world when loaded, compiled once (and cached
//! on disk), and pre-instantiated; every invocation gets a fresh store, so no
//! state leaks between data sources or users.

pub mod bindings;
mod cache;
mod engine;
mod file;
mod host_credentials;
mod host_log;
mod http;
mod limiter;
mod matcher;
pub mod placeholder;
mod response;
mod runtime;
mod scrub;
mod spec;
mod state;

pub use cache::CacheKeys;
pub use runtime::{Checked, FetchOutcome, LoadError, LoadedPlugin, PageSink, RunError, Runtime};
pub use spec::{ConfigSpec, FieldSpec, MAX_FIELD_BYTES, PluginSpec};
