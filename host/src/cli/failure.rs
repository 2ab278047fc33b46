//! How a failed command ends: one clear `error:` line (or one JSON log event
//! with `--log-format json`), exit code 1, never a panic's backtrace.
//!
//! A damaged database file can make redb panic instead of returning an
//! error. Every command runs inside [`CatchPanic`], so that such a panic
//! becomes an ordinary error naming the file and saying to restore it from a
//! backup; the panic hook installed by [`install_panic_hook`] stays silent
//! for panics that are caught this way and only records where they happened.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use crate::store::{StoreError, panic_message};

use super::LogFormat;

/// Where the last panic happened, recorded by the hook for [`CatchPanic`]
/// (the payload carries only the message).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// Whether this thread is polling a [`CatchPanic`] future: a panic here is
    /// caught and reported as an error, so the hook need not print it.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Installs the process's panic hook: silent (recording the location) for a
/// panic inside [`CatchPanic`], which becomes an error; otherwise one line
/// saying what happened where, in the chosen log format, with no backtrace.
pub fn install_panic_hook(format: LogFormat) {
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()) = Some(place.clone());
        if CATCHING.with(Cell::get) {
            return;
        }
        let what = panic_message(info.payload());
        let message = if in_redb(&place) {
            format!(
                "the database failed while reading a damaged page ({what} at {place}); restore \
                 the database from a backup and check it with `intake keys verify`"
            )
        } else {
            format!("intake hit an internal error at {place}: {what}; please report this")
        };
        print_error(format, &message);
    }));
}

/// Whether a panic location is inside redb, the database library.
fn in_redb(place: &str) -> bool {
    place.contains("/redb-") || place.contains("\\redb-")
}

/// A future that turns a panic while polling `inner` into `Err(payload)`.
/// The inner future, with whatever it held open, is dropped at once, still
/// inside `catch_unwind` (dropping a database handle after a failed read may
/// panic too).
pub struct CatchPanic<'a, T> {
    inner: Option<Pin<Box<dyn Future<Output = T> + 'a>>>,
}

impl<T> std::fmt::Debug for CatchPanic<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchPanic")
            .field("finished", &self.inner.is_none())
            .finish()
    }
}

impl<'a, T> CatchPanic<'a, T> {
    /// Wraps `inner`.
    pub fn new(inner: impl Future<Output = T> + 'a) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<T> Future for CatchPanic<'_, T> {
    type Output = Result<T, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        let was = CATCHING.with(|c| c.replace(true));
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        let result = match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => {
                self.inner = None;
                Poll::Ready(Ok(value))
            }
            Err(payload) => {
                let inner = self.inner.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(inner)));
                Poll::Ready(Err(payload))
            }
        };
        CATCHING.with(|c| c.set(was));
        result
    }
}

/// The error for a caught panic: a damaged database if it happened inside
/// redb, an internal error otherwise. `db` is the database file, if known.
pub fn panic_error(payload: &(dyn Any + Send), db: Option<&Path>) -> anyhow::Error {
    let what = panic_message(payload);
    let place = LAST_PANIC
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    if in_redb(&place) {
        StoreError::Damaged {
            path: db.map(|p| p.display().to_string()),
            reason: format!("reading it failed: {what}"),
        }
        .into()
    } else {
        anyhow::anyhow!("intake hit an internal error at {place}: {what}; please report this")
    }
}

/// Names the database file in a [`StoreError::Damaged`] found without it.
pub fn name_damaged_database(error: anyhow::Error, db: Option<&Path>) -> anyhow::Error {
    match (error.downcast_ref::<StoreError>(), db) {
        (Some(StoreError::Damaged { path: None, reason }), Some(db)) => StoreError::Damaged {
            path: Some(db.display().to_string()),
            reason: reason.clone(),
        }
        .into(),
        _ => error,
    }
}

/// Prints the final error of a failed command on stderr: `error: …` in text
/// mode, one JSON log event (like tracing's) with `--log-format json`.
/// Control characters are escaped, so that nothing a user typed (or a
/// damaged file held) can drive the terminal.
pub fn print_error(format: LogFormat, message: &str) {
    use std::io::Write as _;
    let message = escape_controls(message);
    let line = match format {
        LogFormat::Text => format!("error: {message}"),
        LogFormat::Json => serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "ERROR",
            "fields": { "message": message },
            "target": "intake",
        })
        .to_string(),
    };
    // Not `eprintln!`, which panics if stderr is gone (and this runs in the
    // panic hook too).
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Escapes control characters other than line breaks and tabs (a terminal
/// escape sequence, a carriage return that would overwrite a line).
pub fn escape_controls(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '\n' | '\t' => vec![c],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_only() {
        assert_eq!(escape_controls("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\nc");
        assert_eq!(escape_controls("naïve `x`"), "naïve `x`");
    }

    #[test]
    fn catches_a_panic_and_drops_the_future() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let result = rt.block_on(CatchPanic::new(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            1
        }));
        let payload = result.expect_err("caught");
        assert_eq!(panic_message(payload.as_ref()), "boom");
        let ok = rt.block_on(CatchPanic::new(async { 2 }));
        assert_eq!(ok.ok(), Some(2));
    }
}
