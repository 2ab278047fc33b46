//! Outgoing HTTP policy: deny by default, inject secrets, bound and redact
//! responses.
//!
//! Every request a plugin sends passes [`HttpPolicy::send_request`]. It is
//! refused (and the body never sent) unless its method is one of
//! [`ALLOWED_METHODS`] (`TRACE` would have a server echo the injected headers
//! back; `CONNECT` opens a tunnel; extension methods are refused as unknown),
//! its origin is one the plugin's spec declares for this data source *and*
//! the operator allows, and the invocation still has request budget (every
//! attempt counts, refused or not). Placeholders for credential fields are
//! then replaced, through the broker, only for fields allowed to go to that
//! origin, and every value substituted is handed to the invocation's
//! [`Scrubber`]. Before a request with injected values leaves the host, the
//! audit records of the invocation are made durable
//! ([`Broker::flush_async`]); if they cannot be, the request is refused. A
//! refused request that carries placeholders of declared fields in its URI
//! or headers is audited as a denied injection of those fields (bounded: one
//! record per declared field).
//!
//! The response reaches the plugin with every remembered secret form
//! redacted from its headers and body ([`super::response`]), so that a
//! platform echoing an injected value cannot hand it to the plugin; its body
//! is cut off at the configured size as it arrives.
//!
//! Using up the request budget, receiving a response over the size limit or
//! reaching a limit of the scrubber or the audit trips the invocation's
//! [`Tripwire`]: the plugin sees an HTTP error, and the run fails with a limit
//! error naming the setting, whatever the plugin makes of it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{Error, RequestOptions, WasiHttpHooks};

use crate::broker::{Binding, Broker, Denial};
use crate::origin::{Origin, Scheme};

use super::placeholder;
use super::scrub::Scrubber;
#[cfg(test)]
use super::state::Fault;
use super::state::{Tripwire, safe_line};

mod inject;
use inject::{Injected, Injector};

type WasiBody = wasmtime_wasi_http::WasiBody;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

/// The largest request body a plugin may send, in bytes.
pub const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

/// The methods a plugin may use: the standard ones whose requests a server
/// answers without echoing them (not `TRACE`) and that do not open a tunnel
/// (not `CONNECT`). Any other method, extension methods included, is refused.
pub const ALLOWED_METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::OPTIONS,
];

/// The longest refusal text kept (logged, noted for the run's error and
/// audited), in bytes: it may quote plugin-controlled text (a URI).
const MAX_REFUSAL_BYTES: usize = 1024;

/// The most of a URI or authority quoted in a refusal, in bytes.
const MAX_QUOTED_BYTES: usize = 200;

/// `text` cut to [`MAX_QUOTED_BYTES`] (at a character boundary), marked if cut.
fn quoted(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_owned();
    }
    let mut at = MAX_QUOTED_BYTES;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}… ({} bytes)", &text[..at], text.len())
}

/// Requests of one invocation open at once (sent and not yet finished with):
/// more wait for one to end, so that a plugin cannot hold thousands of
/// connections (and the host's file descriptors) open.
pub const MAX_IN_FLIGHT: usize = 8;

/// The HTTP policy of one invocation.
pub struct HttpPolicy {
    /// Origins this invocation may reach: those of [`HttpPolicy::declared`]
    /// that [`HttpPolicy::operator`] also lists.
    pub allowed: Vec<Origin>,
    /// Origins the plugin's spec declares, resolved for this data source.
    pub declared: Vec<Origin>,
    /// Origins the operator allows this plugin (`allow` in intake.toml).
    pub operator: Vec<Origin>,
    /// The data source, for secret injection; none while loading.
    pub binding: Option<Binding>,
    /// The choke point; none while loading.
    pub broker: Option<Broker>,
    /// Requests this invocation may send in all (`limits.http_requests`).
    pub max_requests: u32,
    /// Requests this invocation may still send.
    pub requests_left: u32,
    /// Largest response body, in MiB (`limits.http_response_mib`).
    pub max_response_mib: u64,
    /// Credential fields the spec declares not secret (a user name, a
    /// client id): injected, but not scrubbed from messages on their own.
    pub public_fields: Arc<BTreeSet<String>>,
    /// Data source label for log lines.
    pub label: String,
    /// Notes on refusals, for the run's error message.
    pub notes: Arc<Mutex<Vec<String>>>,
    /// Values injected in this invocation, to scrub from what leaves it.
    pub scrubber: Scrubber,
    /// Set when a limit is exceeded.
    pub tripwire: Tripwire,
    /// Permits for requests open at once ([`MAX_IN_FLIGHT`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for HttpPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// Why a request is not admitted.
enum Refusal {
    /// Refused by the policy: why, and more for people (not audited).
    Policy(String, String),
    /// The request budget is used up: a limit, not a policy decision.
    Budget(String),
}

fn list(origins: &[Origin]) -> String {
    if origins.is_empty() {
        "none".to_owned()
    } else {
        origins
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl HttpPolicy {
    fn refuse(&self, why: String) -> Error {
        note_refusal(&self.notes, &self.label, &self.scrubber, &why)
    }

    /// Checks the method, the destination and the budget; returns the
    /// origin. A refused request that carries placeholders of declared
    /// fields is audited as a denied injection of those fields.
    fn admit(&mut self, request: &http::Request<WasiBody>) -> Result<Origin, Error> {
        match self.check(request) {
            Ok(origin) => Ok(origin),
            Err(Refusal::Policy(why, more)) => {
                let why = safe_line(&self.scrubber, &why, MAX_REFUSAL_BYTES);
                self.audit_refused(request, &why);
                Err(self.refuse(format!("{why}{more}")))
            }
            Err(Refusal::Budget(why)) => {
                self.audit_refused(request, &why);
                self.tripwire.trip(why);
                Err(Error::ConnectionLimitReached)
            }
        }
    }

    /// The origin of an admissible request, or why not. Every attempt,
    /// refused or not, counts against the request budget.
    fn check(&mut self, request: &http::Request<WasiBody>) -> Result<Origin, Refusal> {
        let policy = |why: String| Refusal::Policy(why, String::new());
        if self.requests_left == 0 {
            return Err(Refusal::Budget(format!(
                "the plugin tried to send more HTTP requests in one invocation than \
                 limits.http_requests = {} allows; raise it in intake.toml if the plugin \
                 needs more",
                self.max_requests
            )));
        }
        self.requests_left -= 1;
        let method = request.method();
        if !ALLOWED_METHODS.contains(method) {
            return Err(policy(format!(
                "method {} is not allowed (only {}; TRACE would have the server echo the \
                 request's headers, CONNECT opens a tunnel)",
                quoted(method.as_str()),
                ALLOWED_METHODS.map(|m| m.to_string()).join(", ")
            )));
        }
        let uri = request.uri();
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err(policy(format!(
                    "{}: only http and https are allowed",
                    quoted(&uri.to_string())
                )));
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(policy("a request without a host".into()));
        };
        let origin = Origin::from_authority(scheme, authority.as_str())
            .map_err(|why| policy(format!("{}: {why}", quoted(authority.as_str()))))?;
        if !self.allowed.contains(&origin) {
            return Err(Refusal::Policy(
                format!("{origin} is not allowed for this plugin"),
                self.why_not_allowed(&origin),
            ));
        }
        Ok(origin)
    }

    /// Why `origin` is not among the allowed ones, naming both lists a
    /// request must pass: the spec's (for this data source) and the
    /// operator's.
    fn why_not_allowed(&self, origin: &Origin) -> String {
        let declared = self.declared.contains(origin);
        let operator = self.operator.contains(origin);
        let detail = match (declared, operator) {
            (true, false) => format!(
                "the data source's settings point the plugin there, but intake.toml's \
                 `allow` for the plugin does not list it; allow: {}",
                list(&self.operator)
            ),
            (false, true) => format!(
                "intake.toml's `allow` lists it, but the plugin's spec does not declare it \
                 for this data source; declared: {}",
                list(&self.declared)
            ),
            _ => format!(
                "a request must go to an origin that the plugin's spec declares for this \
                 data source and intake.toml's `allow` lists; declared: {}; allow: {}",
                list(&self.declared),
                list(&self.operator)
            ),
        };
        format!(" ({detail})")
    }

    /// Audits the declared credential fields whose placeholders stand in the
    /// URI or headers of a request refused for `why` (bounded by the caller;
    /// the body of a refused request is never read): one record per declared
    /// field, however many placeholders the request holds. Past the audit
    /// allowance, the invocation fails with a limit error.
    fn audit_refused(&self, request: &http::Request<WasiBody>, why: &str) {
        let (Some(binding), Some(broker)) = (&self.binding, &self.broker) else {
            return;
        };
        let uri = request.uri().to_string();
        let mut fields: Vec<&str> = Vec::new();
        let texts = std::iter::once(uri.as_bytes())
            .chain(request.headers().values().map(http::HeaderValue::as_bytes));
        for text in texts {
            for (_, _, p) in placeholder::find(text, "request").unwrap_or_default() {
                for f in p.fields() {
                    if let Some((declared, _)) = binding.fields.get_key_value(f)
                        && !fields.contains(&declared.as_str())
                    {
                        fields.push(declared);
                    }
                }
            }
        }
        if let Err(Denial::Limit(what)) =
            broker.record_refused_inject(binding, &fields, &format!("request refused: {why}"))
        {
            self.tripwire.trip(what);
        }
    }
}

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let admitted = self.admit(&request);
        let injector = Injector {
            binding: self.binding.clone(),
            broker: self.broker.clone(),
            label: self.label.clone(),
            notes: self.notes.clone(),
            scrubber: self.scrubber.clone(),
            public_fields: self.public_fields.clone(),
            tripwire: self.tripwire.clone(),
        };
        let max_mib = self.max_response_mib;
        let max_response = max_mib.saturating_mul(1 << 20);
        let tripwire = self.tripwire.clone();
        let in_flight = self.in_flight.clone();
        let scrubber = self.scrubber.clone();
        Box::new(async move {
            let origin = admitted?;
            // Held until the connection is done with (the I/O future ends or
            // the plugin drops the response).
            let permit = in_flight
                .acquire_owned()
                .await
                .map_err(|_| Error::InternalError(None))?;
            let Injected {
                request,
                in_flight,
                granted,
            } = injector.inject(request, &origin).await?;
            if granted {
                // On record before any secret leaves the host.
                injector.durable_audit().await?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let io = async move {
                let done = io.await;
                drop(permit);
                done
            };
            let limited = response.map(|body| {
                Limited::new(body, usize::try_from(max_response).unwrap_or(usize::MAX)).map_err(
                    move |e| match e.downcast::<Error>() {
                        Ok(e) => *e,
                        Err(_) => {
                            tripwire.trip(format!(
                                "a response from {origin} was larger than \
                                 limits.http_response_mib = {max_mib} MiB allows"
                            ));
                            Error::HttpResponseBodySize(Some(max_response))
                        }
                    },
                )
            });
            let response =
                super::response::redact(limited, &scrubber, in_flight).map(BodyExt::boxed_unsync);
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// The most refusals logged and noted per invocation.
const MAX_NOTES: usize = 20;

/// Logs and notes (for the run's error) why a request was refused, the first
/// [`MAX_NOTES`] times in an invocation, scrubbed and cut to
/// [`MAX_REFUSAL_BYTES`]: a plugin retrying in a loop, or with a huge URI,
/// cannot flood the host's log.
fn note_refusal(notes: &Mutex<Vec<String>>, label: &str, scrubber: &Scrubber, why: &str) -> Error {
    if let Ok(mut notes) = notes.lock()
        && notes.len() < MAX_NOTES
    {
        let why = safe_line(scrubber, why, MAX_REFUSAL_BYTES);
        tracing::warn!(target: "intake::http", source = %label, "refused a request: {why}");
        notes.push(why);
    }
    Error::HttpRequestDenied
}

fn full(body: Bytes) -> WasiBody {
    Full::new(body)
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> Origin {
        Origin::parse(text).expect("an origin")
    }

    fn policy(declared: &[&str], operator: &[&str], requests: u32) -> HttpPolicy {
        let declared: Vec<Origin> = declared.iter().map(|o| origin(o)).collect();
        let operator: Vec<Origin> = operator.iter().map(|o| origin(o)).collect();
        HttpPolicy {
            allowed: declared
                .iter()
                .filter(|o| operator.contains(o))
                .cloned()
                .collect(),
            declared,
            operator,
            binding: None,
            broker: None,
            max_requests: requests,
            requests_left: requests,
            max_response_mib: 1,
            public_fields: Arc::default(),
            label: "test".into(),
            notes: Arc::default(),
            scrubber: Scrubber::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            tripwire: Tripwire::default(),
        }
    }

    fn get(uri: &str) -> http::Request<WasiBody> {
        http::Request::get(uri)
            .body(full(Bytes::new()))
            .expect("a request")
    }

    fn refusal(policy: &mut HttpPolicy, uri: &str) -> String {
        match policy.check(&get(uri)) {
            Err(Refusal::Policy(why, more)) => format!("{why}{more}"),
            Err(Refusal::Budget(why)) => format!("budget: {why}"),
            Ok(o) => format!("admitted {o}"),
        }
    }

    #[test]
    fn refusals_name_the_lists_that_are_enforced() {
        let (a, b, c) = ("http://a.test", "http://b.test", "http://c.test");
        let mut p = policy(&[a, b], &[a, c], 10);
        assert_eq!(
            refusal(&mut p, "http://a.test/x"),
            "admitted http://a.test:80"
        );
        assert_eq!(
            refusal(&mut p, "http://b.test/x"),
            "http://b.test:80 is not allowed for this plugin (the data source's settings \
             point the plugin there, but intake.toml's `allow` for the plugin does not list \
             it; allow: http://a.test:80, http://c.test:80)"
        );
        assert_eq!(
            refusal(&mut p, "http://c.test/x"),
            "http://c.test:80 is not allowed for this plugin (intake.toml's `allow` lists \
             it, but the plugin's spec does not declare it for this data source; declared: \
             http://a.test:80, http://b.test:80)"
        );
        let mut p = policy(&[], &[], 10);
        assert_eq!(
            refusal(&mut p, "http://d.test/x"),
            "http://d.test:80 is not allowed for this plugin (a request must go to an origin \
             that the plugin's spec declares for this data source and intake.toml's `allow` \
             lists; declared: none; allow: none)"
        );
    }

    #[test]
    fn only_standard_methods_that_do_not_echo_or_tunnel_are_admitted() {
        let mut p = policy(&["http://a.test"], &["http://a.test"], 100);
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let request = http::Request::builder()
                .method(method)
                .uri("http://a.test/x")
                .body(full(Bytes::new()))
                .expect("a request");
            assert!(p.check(&request).is_ok(), "{method}");
        }
        for method in ["TRACE", "CONNECT", "PROPFIND", "TRACK", "get"] {
            let request = http::Request::builder()
                .method(method)
                .uri("http://a.test/x")
                .body(full(Bytes::new()))
                .expect("a request");
            match p.check(&request) {
                Err(Refusal::Policy(why, _)) => {
                    assert!(
                        why.starts_with(&format!("method {method} is not allowed")),
                        "{why}"
                    );
                }
                _ => panic!("{method} was admitted"),
            }
        }
    }

    #[test]
    fn refusals_quote_at_most_a_bounded_part_of_the_request() {
        let mut p = policy(&["http://a.test"], &["http://a.test"], 100);
        let long_host = format!("http://{}.test/x", "h".repeat(20_000));
        let why = refusal(&mut p, &long_host);
        assert!(why.len() < 600, "{} bytes: {why}", why.len());
        assert!(why.contains("longer than 253 bytes"), "{why}");
        // Noted (and logged) refusals are cut too.
        let error = p.refuse("w".repeat(1 << 20));
        assert!(matches!(error, Error::HttpRequestDenied));
        let notes = p.notes.lock().expect("notes");
        assert!(notes[0].len() < 2 * MAX_REFUSAL_BYTES, "{}", notes[0].len());
    }

    #[test]
    fn the_request_budget_trips_the_limit() {
        let mut p = policy(&["http://a.test"], &["http://a.test"], 1);
        assert!(p.admit(&get("http://a.test/1")).is_ok());
        assert!(p.tripwire.tripped().is_none());
        assert!(matches!(
            p.admit(&get("http://a.test/2")),
            Err(Error::ConnectionLimitReached)
        ));
        let Some(Fault::Limit(tripped)) = p.tripwire.tripped() else {
            panic!("not a limit: {:?}", p.tripwire.tripped());
        };
        assert!(tripped.contains("limits.http_requests = 1"), "{tripped}");
        // A limit is not a refusal by the policy: no note blames the origin.
        assert!(p.notes.lock().expect("notes").is_empty());
    }
}
