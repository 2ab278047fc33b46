//! Host side of `intake:connector/log`: plugin log lines into the host's log.
//!
//! Lines are attributed to the data source, truncated, rate-limited, and
//! scrubbed of any secret value revealed to the plugin.

use super::bindings::log::{Host, Level};
use super::state::InvocationState;

const MAX_LINE: usize = 4096;

impl Host for InvocationState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.guest.log_budget.take() {
            return Ok(());
        }
        let mut message = self.guest.scrub(&message);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
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
