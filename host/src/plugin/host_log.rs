//! Host side of `intake:connector/log`: plugin log lines into the host's log.
//!
//! Lines are attributed to the data source, rate-limited (the number dropped
//! is logged when the invocation ends), cut to [`MAX_LINE`] bytes, scrubbed of
//! every secret value revealed to the plugin, written by it or injected into
//! its requests (see [`super::scrub`]; cut first, so that a line of any length
//! costs the same, but without leaving half a value visible at the cut), and
//! kept to one line with control characters escaped.

use super::bindings::log::{Host, Level};
use super::state::InvocationState;

/// The longest log line kept from a plugin, in bytes.
const MAX_LINE: usize = 4096;

impl Host for InvocationState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.guest.log_budget.take() {
            return Ok(());
        }
        // One line each: a plugin cannot forge log lines or send terminal
        // escapes.
        let message = self.guest.safe_line(&message, MAX_LINE);
        let source = self.guest.label.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "intake::plugin", %source, "{message}"),
            Level::Debug => tracing::debug!(target: "intake::plugin", %source, "{message}"),
            Level::Info => tracing::info!(target: "intake::plugin", %source, "{message}"),
            Level::Warn => tracing::warn!(target: "intake::plugin", %source, "{message}"),
            Level::Error => tracing::error!(target: "intake::plugin", %source, "{message}"),
        }
        Ok(())
    }
}
