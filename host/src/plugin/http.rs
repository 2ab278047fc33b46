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

use crate::broker::{Binding, Broker, Denial, Use};
use crate::origin::{Origin, Scheme};
use crate::secret::SecretString;

use super::placeholder::{self, Context, Placeholder};
use super::scrub::{InFlight, Scrubber};
#[cfg(test)]
use super::state::Fault;
use super::state::{Tripwire, safe_line};

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

/// A request ready to send, with the guards of the values injected into it.
struct Injected {
    request: http::Request<WasiBody>,
    in_flight: Vec<InFlight>,
    /// Whether the broker granted values for it (its records must be
    /// durable before it is sent).
    granted: bool,
}

/// Replaces placeholders in a request that is known to go to an allowed origin.
struct Injector {
    binding: Option<Binding>,
    broker: Option<Broker>,
    label: String,
    notes: Arc<Mutex<Vec<String>>>,
    scrubber: Scrubber,
    public_fields: Arc<BTreeSet<String>>,
    tripwire: Tripwire,
}

impl Injector {
    fn refuse(&self, why: String) -> Error {
        note_refusal(&self.notes, &self.label, &self.scrubber, &why)
    }

    /// Makes the buffered audit records durable; if they cannot be written,
    /// the request is refused (no secret is used unrecorded) and the run
    /// fails as a host error.
    async fn durable_audit(&self) -> Result<(), Error> {
        let Some(broker) = &self.broker else {
            return Ok(());
        };
        broker.flush_async().await.map_err(|e| {
            let why = format!(
                "the audit log cannot be written ({e}); a request with injected secrets is \
                 not sent unrecorded"
            );
            self.tripwire.fail(why.clone());
            self.refuse(why)
        })
    }

    /// Ends the invocation for a limit of the audit or the scrubber: the
    /// request is not sent, and the run fails naming the limit.
    fn limit(&self, what: String) -> Error {
        self.tripwire.trip(what);
        Error::HttpRequestDenied
    }

    /// Refuses a request that carries, verbatim, a secret value the plugin
    /// was given or saw (revealed, written back, or echoed by a platform
    /// after an injection) to an origin its field may not be injected into:
    /// the plugin cannot pass a value on where a placeholder would not go.
    /// Audited as a denied injection of those fields.
    fn refuse_values_passed_on(
        &self,
        uri: &str,
        headers: &http::HeaderMap,
        body: &[u8],
        origin: &Origin,
    ) -> Result<(), Error> {
        let mut fields = self.scrubber.fields_in(uri.as_bytes());
        for value in headers.values() {
            fields.extend(self.scrubber.fields_in(value.as_bytes()));
        }
        fields.extend(self.scrubber.fields_in(body));
        let Some(binding) = &self.binding else {
            return Ok(());
        };
        let refused: Vec<&str> = fields
            .iter()
            .filter(|f| {
                !binding
                    .fields
                    .get(f.as_str())
                    .is_some_and(|origins| origins.contains(origin))
            })
            .map(String::as_str)
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let why = format!(
            "the request carries the value of credential field {}, which may not be sent to \
             {origin}",
            refused
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(broker) = &self.broker
            && let Err(Denial::Limit(what)) =
                broker.record_refused_inject(binding, &refused, &format!("request refused: {why}"))
        {
            return Err(self.limit(what));
        }
        Err(self.refuse(why))
    }

    /// Hands every value about to be substituted for `found` to the
    /// scrubber, with its encodings: a field's value unless the spec
    /// declares the field not secret, and always a basic-auth token. Returns
    /// the guards that keep them remembered while the request is open.
    fn remember(
        &self,
        found: &[&Placeholder],
        values: &crate::secret::SecretFields,
    ) -> Result<Vec<InFlight>, Error> {
        let mut guards = Vec::new();
        let limit = |e: super::scrub::ScrubLimit| self.limit(e.0);
        for p in found {
            if let Placeholder::Basic(user, password) = p {
                let pair = SecretString::new(format!(
                    "{}:{}",
                    values
                        .get(user)
                        .map(SecretString::expose)
                        .unwrap_or_default(),
                    values
                        .get(password)
                        .map(SecretString::expose)
                        .unwrap_or_default()
                ));
                guards.push(
                    self.scrubber
                        .inject_basic(user, password, &pair)
                        .map_err(limit)?,
                );
            }
            for field in p.fields() {
                if self.public_fields.contains(field) {
                    continue;
                }
                if let Some(value) = values.get(field) {
                    guards.push(self.scrubber.inject(field, value).map_err(limit)?);
                }
            }
        }
        Ok(guards)
    }

    async fn inject(
        &self,
        request: http::Request<WasiBody>,
        origin: &Origin,
    ) -> Result<Injected, Error> {
        let (mut parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_REQUEST_BODY)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(None))?
            .to_bytes();

        let uri_text = parts.uri.to_string();
        let malformed = |e: placeholder::Malformed| self.refuse(e.to_string());
        let in_uri = placeholder::find(uri_text.as_bytes(), "URI").map_err(malformed)?;
        // Every header value on its own: a name may be given several times,
        // each value with its own placeholders (or none).
        let mut in_headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let found = placeholder::find(value.as_bytes(), "headers").map_err(malformed)?;
            in_headers.push((name.clone(), value.clone(), found));
        }
        let in_body = placeholder::find(&body, "body").map_err(malformed)?;
        self.refuse_values_passed_on(&uri_text, &parts.headers, &body, origin)?;
        if in_uri.is_empty()
            && in_headers.iter().all(|(_, _, f)| f.is_empty())
            && in_body.is_empty()
        {
            return Ok(Injected {
                request: http::Request::from_parts(parts, full(body)),
                in_flight: Vec::new(),
                granted: false,
            });
        }

        let found: Vec<&Placeholder> = in_uri
            .iter()
            .chain(in_headers.iter().flat_map(|(_, _, f)| f.iter()))
            .chain(in_body.iter())
            .map(|(_, _, p)| p)
            .collect();
        let mut fields: Vec<&str> = Vec::new();
        for p in &found {
            for f in p.fields() {
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
        }
        let (Some(binding), Some(broker)) = (&self.binding, &self.broker) else {
            return Err(self.refuse("placeholders outside a data source run".into()));
        };
        let granted = broker
            .request(
                binding,
                &fields,
                &Use::Inject {
                    origin: origin.clone(),
                },
            )
            .map_err(|d| match d {
                // Not a refusal: the host failed, and the run says so.
                Denial::Store(_) => {
                    self.tripwire.fail(d.to_string());
                    Error::InternalError(None)
                }
                Denial::Limit(what) => self.limit(what),
                d => self.refuse(format!("placeholder for {origin}: {d}")),
            })?;
        let values = &granted.values;
        // Before anything is sent: the answer may echo them.
        let in_flight = self.remember(&found, values)?;
        let unencodable = |e: placeholder::Unencodable| self.refuse(e.to_string());

        if !in_uri.is_empty() {
            let new = placeholder::substitute(uri_text.as_bytes(), &in_uri, values, Context::Uri)
                .map_err(unencodable)?;
            parts.uri = http::Uri::try_from(new.as_slice())
                .map_err(|_| self.refuse("the URI is invalid after substitution".into()))?;
        }
        let mut headers = http::HeaderMap::with_capacity(in_headers.len());
        for (name, old, found) in in_headers {
            if found.is_empty() {
                headers.append(name, old);
                continue;
            }
            let new = placeholder::substitute(old.as_bytes(), &found, values, Context::Header)
                .map_err(unencodable)?;
            let mut value = http::HeaderValue::from_bytes(&new).map_err(|_| {
                self.refuse(format!("header `{name}` is invalid after substitution"))
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        parts.headers = headers;
        let body = if in_body.is_empty() {
            body
        } else {
            let ctx = body_context(&parts.headers);
            let new = placeholder::substitute(&body, &in_body, values, ctx).map_err(unencodable)?;
            let len = new.len();
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            Bytes::from(new.to_vec())
        };
        Ok(Injected {
            request: http::Request::from_parts(parts, full(body)),
            in_flight,
            granted: true,
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

fn body_context(headers: &http::HeaderMap) -> Context {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        Context::Form
    } else if ct.starts_with("application/json") || ct.contains("+json") {
        Context::Json
    } else {
        Context::Raw
    }
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
