//! The per-invocation store data: what one run of a plugin for one data
//! source can reach, and nothing more.
//!
//! WASI is linked so that components built with a standard library load, but
//! its context is empty: no preopened directories, no environment, no
//! arguments, closed stdin, discarded stdout, and no sockets. Of stderr only
//! the last few KiB are kept in memory ([`StderrTail`]), so that a crash can
//! say what the plugin's panic message was. HTTP goes through
//! [`super::http::HttpPolicy`]; secrets through the broker.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::broker::{Binding, Broker};

use super::http::HttpPolicy;
use super::scrub::Scrubber;

/// Credential calls (`fields`, `reveal`, `update`) one invocation may make.
/// Each is audited, so without a bound a plugin calling in a loop would grow
/// the audit buffer (host memory) and the audit log without end.
pub(super) const MAX_CREDENTIAL_CALLS: u32 = 10_000;

/// A per-invocation limit that a plugin exceeded in a host call: the call
/// traps, which ends the invocation with [`super::RunError::Limit`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct LimitExceeded(pub String);

/// Why the host fails an invocation whatever the plugin returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    /// A limit was exceeded (`limits.NAME`): not retried.
    Limit(String),
    /// The host itself failed (the credential store): not the plugin's doing,
    /// and not a refusal by policy.
    Host(String),
}

/// Set when the invocation exceeds a limit where the host cannot trap the
/// plugin at once (an HTTP response too large, the request budget used up),
/// or when the host fails while serving it (the credential store cannot be
/// read): the plugin only sees an HTTP or credential error, which it may
/// report as anything or even ignore, but the run fails with
/// [`super::RunError::Limit`] or [`super::RunError::Host`] all the same.
/// Clones share the same flag; the first fault is kept.
#[derive(Debug, Clone, Default)]
pub(super) struct Tripwire(Arc<Mutex<Option<Fault>>>);

impl Tripwire {
    /// Records that a limit was exceeded, saying which (`limits.NAME`).
    pub fn trip(&self, what: String) {
        self.set(Fault::Limit(what));
    }

    /// Records that the host failed, saying how.
    pub fn fail(&self, why: String) {
        self.set(Fault::Host(why));
    }

    fn set(&self, fault: Fault) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(fault);
        }
    }

    /// The first fault, if any.
    pub fn tripped(&self) -> Option<Fault> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Host resources (streams, HTTP requests and responses, header sets, …) a
/// plugin may hold at once: each lives in host memory, outside the plugin's
/// memory limit.
pub const MAX_RESOURCES: usize = 4096;

/// Bytes of one set of HTTP header fields a plugin builds (host memory too).
pub const MAX_FIELDS_BYTES: usize = 32 * 1024;

/// Store data of one invocation.
pub struct InvocationState {
    pub(super) table: ResourceTable,
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) hooks: HttpPolicy,
    pub(super) limits: super::limiter::InvocationLimiter,
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
    /// Values revealed to the plugin or injected into its requests in this
    /// invocation, scrubbed from its log lines and error texts.
    pub scrubber: Scrubber,
    /// Limits exceeded outside a host call the host could trap.
    pub tripwire: Tripwire,
    /// Log rate limit.
    pub log_budget: LogBudget,
    /// Notes on what the host refused, added to the error if the run fails.
    pub notes: Arc<Mutex<Vec<String>>>,
    /// The end of what the plugin wrote to stderr.
    pub stderr: StderrTail,
    /// Credential calls made so far.
    pub credential_calls: u32,
}

impl GuestContext {
    /// Plugin text made safe to show on one line of about `max` bytes (see
    /// [`safe_line`]).
    pub fn safe_line(&self, text: &str, max: usize) -> String {
        safe_line(&self.scrubber, text, max)
    }

    /// Counts a credential call; past [`MAX_CREDENTIAL_CALLS`] it traps.
    pub fn count_credential_call(&mut self) -> wasmtime::Result<()> {
        self.credential_calls = self.credential_calls.saturating_add(1);
        if self.credential_calls > MAX_CREDENTIAL_CALLS {
            return Err(wasmtime::Error::new(LimitExceeded(format!(
                "the plugin made more than {MAX_CREDENTIAL_CALLS} credential calls in one invocation"
            ))));
        }
        Ok(())
    }
}

/// Plugin-controlled text made safe to show: cut to about `max` bytes and
/// scrubbed of every secret form `scrubber` remembers — cut first, so that
/// the cost is bounded by `max` whatever the text's length, but scrubbed over
/// a window a form's length longer, so that a value standing across the cut
/// is redacted rather than left half visible — then kept to one line
/// ([`one_line`]). Markers and escapes may make the line longer than `max`,
/// by half of it at most.
pub(super) fn safe_line(scrubber: &Scrubber, text: &str, max: usize) -> String {
    let (kept, dropped) = scrubber.scrub_prefix(text, max);
    one_line_more(&kept, max.saturating_add(max / 2), dropped)
}

/// Makes plugin-controlled text safe to show on one line of a table or log:
/// line breaks and tabs become spaces, other control characters (terminal
/// escapes) and invisible direction overrides are escaped, and the text is
/// cut after about `max` bytes.
pub(super) fn one_line(text: &str, max: usize) -> String {
    one_line_more(text, max, 0)
}

/// [`one_line`] of a text from which `more` bytes were already cut off.
fn one_line_more(text: &str, max: usize, more: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    let mut cut = false;
    for (at, c) in text.char_indices() {
        if out.len() >= max {
            out.push_str(&format!("… ({} more bytes)", text.len() - at + more));
            cut = true;
            break;
        }
        match c {
            '\n' | '\t' => out.push(' '),
            '\r' => {}
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    if !cut && more > 0 {
        out.push_str(&format!("… ({more} more bytes)"));
    }
    out
}

/// The last [`StderrTail::KEEP`] bytes a plugin wrote to its stderr. Writes
/// always succeed; older bytes are dropped.
#[derive(Debug, Clone, Default)]
pub(super) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    const KEEP: usize = 4096;

    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(Self::KEEP)..];
        let excess = (tail.len() + bytes.len()).saturating_sub(Self::KEEP);
        tail.drain(..excess);
        tail.extend(bytes);
    }

    /// The panic message in what was kept (`panicked at FILE:LINE:COL: MESSAGE`),
    /// if the plugin panicked the way Rust's standard library reports it.
    pub fn panic_message(&self) -> Option<String> {
        let bytes: Vec<u8> = {
            let tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
            tail.iter().copied().collect()
        };
        let text = String::from_utf8_lossy(&bytes);
        let at = text.rfind("panicked at ")?;
        let message = &text[at..];
        let message = message
            .find("\nnote: ")
            .map_or(message, |end| &message[..end]);
        Some(message.trim().to_owned())
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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
    pub const PER_SECOND: f64 = 50.0;

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
    pub(super) fn new(
        hooks: HttpPolicy,
        limits: super::limiter::InvocationLimiter,
        guest: GuestContext,
    ) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stderr(guest.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        Self {
            table,
            wasi,
            http,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_neutralises_control_characters() {
        assert_eq!(
            one_line("a\r\nb\tc \u{1b}[31mred \u{202e}x", 100),
            "a b c \\u{1b}[31mred \\u{202e}x"
        );
        let long = "é".repeat(1000);
        let cut = one_line(&long, 100);
        assert!(cut.len() < 130, "{cut}");
        assert!(cut.ends_with("… (1900 more bytes)"), "{cut}");
    }

    #[test]
    fn safe_lines_are_cut_before_scrubbing_and_hide_a_value_across_the_cut() {
        let scrubber = Scrubber::default();
        scrubber
            .hold(
                "token",
                &crate::secret::SecretString::from("0123456789abcdef"),
            )
            .expect("room");
        // 16 MiB of text: only about `max` bytes of it are looked at.
        let text = format!(
            "{}0123456789abcdef\n{}",
            "x".repeat(95),
            "y".repeat(16 << 20)
        );
        let line = safe_line(&scrubber, &text, 100);
        assert_eq!(
            line,
            format!(
                "{}[redacted]… ({} more bytes)",
                "x".repeat(95),
                text.len() - 100
            )
        );
        assert!(!line.contains("01234"), "{line}");
        // Short text is kept whole, scrubbed and on one line.
        assert_eq!(
            safe_line(&scrubber, "a\nb 0123456789ABCDEF", 100),
            "a b [redacted]"
        );
    }

    #[test]
    fn stderr_keeps_the_tail_and_finds_the_panic() {
        let tail = StderrTail::default();
        tail.push(&vec![b'x'; 10_000]);
        tail.push(b"\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1`\n");
        assert_eq!(
            tail.panic_message().as_deref(),
            Some("panicked at src/lib.rs:3:5:\nboom")
        );
        assert_eq!(
            tail.0.lock().map(|t| t.len()).unwrap_or(0),
            StderrTail::KEEP
        );
        assert_eq!(StderrTail::default().panic_message(), None);
    }
}
