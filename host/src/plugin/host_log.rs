//! Host side of `intake:connector/log`: plugin log lines into the host's log.
//!
//! Lines are attributed to the data source, truncated, kept to one line with
//! control characters escaped, rate-limited (the number dropped is logged when
//! the invocation ends), and scrubbed of every secret value revealed to the
//! plugin or injected into its requests (see [`super::scrub`]).

use super::bindings::log::{Host, Level};
use super::state::{InvocationState, one_line};

const MAX_LINE: usize = 4096;

impl Host for InvocationState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.guest.log_budget.take() {
            return Ok(());
        }
        // One line each: a plugin cannot forge log lines or send terminal
        // escapes.
        let message = one_line(&self.guest.scrub(&message), MAX_LINE);
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
