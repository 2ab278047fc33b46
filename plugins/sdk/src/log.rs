//! Log lines from the plugin to the host's log.
//!
//! The host attributes every line to the data source the plugin runs for,
//! rate-limits them and scrubs revealed secret values from them. Still, never
//! log a secret (a token the platform returned, say): log what happened, not
//! what was sent.
//!
//! ```ignore
//! use intake_plugin_sdk::{info, log};
//!
//! log::warn("the platform sent a row without a date; skipped");
//! info!("fetched {} records", 42);
//! ```

use crate::bindings::intake::connector::log as host;

/// How important a log line is: `Trace`, `Debug`, `Info`, `Warn` or `Error`.
pub use crate::bindings::intake::connector::log::Level;

/// Writes one log line at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Writes a log line of very detailed tracing.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes a log line useful when debugging the plugin.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes a log line about normal progress.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a log line about something unexpected the plugin recovered from.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes a log line about a failure.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Formats its arguments like `format!` and writes them as a `trace` log line.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        $crate::log::trace(&::std::format!($($arg)*))
    };
}

/// Formats its arguments like `format!` and writes them as a `debug` log line.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        $crate::log::debug(&::std::format!($($arg)*))
    };
}

/// Formats its arguments like `format!` and writes them as an `info` log line.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::info(&::std::format!($($arg)*))
    };
}

/// Formats its arguments like `format!` and writes them as a `warn` log line.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::warn(&::std::format!($($arg)*))
    };
}

/// Formats its arguments like `format!` and writes them as an `error` log line.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::log::error(&::std::format!($($arg)*))
    };
}
