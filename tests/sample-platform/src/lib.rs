//! AdSample Ads, a fake advertising platform on 127.0.0.1 for intake's demo and tests.
//!
//! It serves the reporting API described in `docs/sample-platform.md`: several ad
//! accounts with deterministic daily campaign statistics, each readable only with its own
//! credential (bearer token, basic auth or OAuth with single-use refresh tokens), with
//! pagination, rate limiting and JSON errors. [`SamplePlatform::start`] runs it on its
//! own thread, and its methods let tests revoke credentials, inject failures, add data
//! and inspect the requests received.
//!
//! ```no_run
//! use intake_sample_platform::{Fixture, SamplePlatform};
//!
//! let platform = SamplePlatform::start(Fixture::demo())?;
//! println!("try: curl -H 'authorization: Bearer adsample-token-acme' {}/v1/me", platform.base_url());
//! # anyhow::Ok(())
//! ```

mod api;
mod auth;
mod data;
mod fixture;
mod ratelimit;
mod state;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::sync::watch;

pub use data::Date;
pub use fixture::{Account, Credential, Fixture, Principal, RateLimit};
pub use state::RequestRecord;

use state::{Shared, State, lock};

/// How long in-flight requests may take to finish once the platform is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A running sample platform. Dropping it stops the server and joins its thread.
pub struct SamplePlatform {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl SamplePlatform {
    /// Binds 127.0.0.1 on a free port and serves `fixture` on its own thread with its
    /// own tokio runtime, so it keeps serving while the caller blocks (sync tests
    /// running commands, or async tests). Returns once listening.
    pub fn start(fixture: Fixture) -> anyhow::Result<SamplePlatform> {
        SamplePlatform::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), fixture)
    }

    /// Like [`SamplePlatform::start`], listening on `addr` (port 0 picks a free port).
    pub fn start_on(addr: SocketAddr, fixture: Fixture) -> anyhow::Result<SamplePlatform> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared: Shared = Arc::new(Mutex::new(State::new(&fixture)));
        let app = api::router(shared.clone());
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("sample-platform-{}", addr.port()))
            .spawn(move || serve(listener, app, stopped, ready_tx))
            .context("cannot start the sample platform thread")?;
        let ready = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the sample platform thread ended before serving"));
        if let Err(err) = ready.and_then(|r| r.context("cannot start the sample platform")) {
            let _ = thread.join();
            return Err(err);
        }
        Ok(SamplePlatform {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the platform listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Revokes a bearer, OAuth access or refresh token (or a basic-auth password): later
    /// requests with it get 401 (`invalid_grant` for a refresh token).
    pub fn revoke_token(&self, token: &str) {
        lock(&self.shared).credentials.revoke(token);
    }

    /// Adds another valid bearer token for `principal` (an unknown name authenticates as
    /// a principal without accounts). Also undoes a revocation of `token`.
    pub fn add_bearer_token(&self, token: &str, principal: &str) {
        lock(&self.shared).credentials.add_bearer(token, principal);
    }

    /// The next `n` requests to `/v1/*` answer `status` before authentication (429 with
    /// `retry-after: 1`, 500 `internal`, 503 `unavailable`, ...; a status that is not
    /// 4xx or 5xx becomes 500). Calls queue up behind each other.
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.shared)
            .failures
            .extend(std::iter::repeat_n(status, n));
    }

    /// Changes the per-principal rate limit (0 per second turns it off); every bucket
    /// starts full again.
    pub fn set_rate_limit(&self, per_second: u32, burst: u32) {
        lock(&self.shared)
            .limiter
            .set_limit(RateLimit { per_second, burst });
    }

    /// Makes every request (any path) wait `delay` before it is answered; requests
    /// wait concurrently. `Duration::ZERO` (the default) answers at once. Tests use it
    /// to keep a run in flight, or to make concurrent requests overlap.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared).delay = delay;
    }

    /// The most requests the platform was answering at once since it started
    /// or since the last call, which starts counting again.
    pub fn take_max_in_flight(&self) -> usize {
        let mut state = lock(&self.shared);
        let now = state.in_flight;
        std::mem::replace(&mut state.max_in_flight, now)
    }

    /// With `on`, every 401 answer's message quotes the `authorization` header the
    /// request carried (`...; received authorization: "Bearer TOKEN"`), and a `TRACE`
    /// request to any path is answered `200` with its request line and headers echoed
    /// (`message/http`), as a careless platform might: tests use it to check that a
    /// secret echoed back by the platform reaches no plugin, log, error or file. Off by
    /// default.
    pub fn echo_authorization(&self, on: bool) {
        lock(&self.shared).echo_authorization = on;
    }

    /// Appends `bytes` bytes of whitespace to the body of every answer (JSON stays
    /// valid), so that tests can exceed a response size limit. 0 (the default) turns
    /// it off.
    pub fn pad_responses(&self, bytes: usize) {
        lock(&self.shared).padding = bytes;
    }

    /// Extends every account's data by `n` more days.
    pub fn add_days(&self, n: u32) {
        let mut state = lock(&self.shared);
        state.days = state.days.saturating_add(n);
    }

    /// Invalidates every access token issued by `/oauth/token` so far (requests with
    /// them get 401); refresh tokens keep working.
    pub fn expire_access_tokens(&self) {
        lock(&self.shared).credentials.expire_access_tokens();
    }

    /// The refresh token that works next for OAuth principal `principal`, or `None` if
    /// it is not an OAuth principal.
    pub fn current_refresh_token(&self, principal: &str) -> Option<String> {
        lock(&self.shared)
            .credentials
            .current_refresh_token(principal)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared).log.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.shared).log.clear();
    }

    /// Drops the failures queued by [`SamplePlatform::fail_next`] that are not
    /// answered yet.
    pub fn clear_failures(&self) {
        lock(&self.shared).failures.clear();
    }

    /// All rows the API returns for `account_id` from `since` (`YYYY-MM-DD`, inclusive),
    /// across all pages and in order. Empty for an unknown account or a bad date.
    pub fn expected_rows(&self, account_id: &str, since: Option<&str>) -> Vec<Value> {
        let since = match since.map(Date::parse) {
            None => None,
            Some(Some(date)) => Some(date),
            Some(None) => return Vec::new(),
        };
        lock(&self.shared).all_rows(account_id, since)
    }
}

impl fmt::Debug for SamplePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamplePlatform")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SamplePlatform {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server thread: builds a runtime, reports readiness, serves until `stopped`
/// turns true (or its sender is dropped), then gives in-flight requests
/// [`SHUTDOWN_GRACE`] to finish.
fn serve(
    listener: std::net::TcpListener,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
    ready: mpsc::Sender<std::io::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut grace = stopped.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        tokio::select! {
            result = server => {
                if let Err(err) = result {
                    eprintln!("sample platform: {err}");
                }
            }
            () = async move {
                let _ = grace.wait_for(|stop| *stop).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {}
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}
