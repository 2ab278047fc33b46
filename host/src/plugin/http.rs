//! Outgoing HTTP policy: deny by default, inject secrets, bound responses.
//!
//! Every request a plugin sends passes [`HttpPolicy::send_request`]. It is
//! refused (and the body never sent) unless its origin is one the plugin's
//! spec declares for this data source *and* the operator allows, and unless
//! the invocation still has request budget (every attempt counts, refused or
//! not). Placeholders for credential fields are then replaced, through the
//! broker, only for fields allowed to go to that origin. Response bodies are cut off at the configured size. A
//! refused request that carries placeholders in its URI or headers is audited
//! as a denied injection of those fields.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{Error, RequestOptions, WasiHttpHooks};

use crate::broker::{Binding, Broker, Use};
use crate::origin::{Origin, Scheme};

use super::placeholder::{self, Context};

type WasiBody = wasmtime_wasi_http::WasiBody;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

/// The largest request body a plugin may send, in bytes.
pub const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

/// The HTTP policy of one invocation.
pub struct HttpPolicy {
    /// Origins this invocation may reach.
    pub allowed: Vec<Origin>,
    /// The data source, for secret injection; none while loading.
    pub binding: Option<Binding>,
    /// The choke point; none while loading.
    pub broker: Option<Broker>,
    /// Requests this invocation may still send.
    pub requests_left: u32,
    /// Largest response body, in bytes.
    pub max_response: u64,
    /// Data source label for log lines.
    pub label: String,
    /// Notes on refusals, for the run's error message.
    pub notes: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for HttpPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl HttpPolicy {
    fn refuse(&self, why: String) -> Error {
        note_refusal(&self.notes, &self.label, why)
    }

    /// Checks the destination and the budget; returns the origin. A refused
    /// request that carries placeholders is audited as a denied injection of
    /// their fields.
    fn admit(&mut self, request: &http::Request<WasiBody>) -> Result<Origin, Error> {
        self.check(request).map_err(|(why, more)| {
            self.audit_refused(request, &why);
            self.refuse(format!("{why}{more}"))
        })
    }

    /// The origin of an admissible request, or why not (and more for people).
    /// Every attempt, refused or not, counts against the request budget.
    fn check(&mut self, request: &http::Request<WasiBody>) -> Result<Origin, (String, String)> {
        if self.requests_left == 0 {
            return Err((
                "the limit of HTTP requests per invocation is reached".into(),
                String::new(),
            ));
        }
        self.requests_left -= 1;
        let uri = request.uri();
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err((
                    format!("{uri}: only http and https are allowed"),
                    String::new(),
                ));
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(("a request without a host".into(), String::new()));
        };
        let origin = Origin::from_authority(scheme, authority.as_str())
            .map_err(|why| (format!("{authority}: {why}"), String::new()))?;
        if !self.allowed.contains(&origin) {
            let allowed = if self.allowed.is_empty() {
                "none".to_owned()
            } else {
                self.allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err((
                format!("{origin} is not allowed for this plugin"),
                format!(" (allowed: {allowed})"),
            ));
        }
        Ok(origin)
    }

    /// Audits the credential fields whose placeholders stand in the URI or
    /// headers of a request refused for `why` (the body of a refused request
    /// is never read).
    fn audit_refused(&self, request: &http::Request<WasiBody>, why: &str) {
        let (Some(binding), Some(broker)) = (&self.binding, &self.broker) else {
            return;
        };
        let uri = request.uri().to_string();
        let found = std::iter::once(uri.as_bytes())
            .chain(request.headers().values().map(http::HeaderValue::as_bytes))
            .filter_map(|text| placeholder::find(text, "request").ok())
            .flatten()
            .collect::<Vec<_>>();
        let mut fields: Vec<&str> = Vec::new();
        for (_, _, p) in &found {
            for f in p.fields() {
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
        }
        if !fields.is_empty() {
            broker.record_refused_inject(binding, &fields, &format!("request refused: {why}"));
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
        };
        let max_response = self.max_response;
        Box::new(async move {
            let origin = admitted?;
            let request = injector.inject(request, &origin).await?;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let response = response.map(|body| {
                Limited::new(body, usize::try_from(max_response).unwrap_or(usize::MAX))
                    .map_err(move |e| match e.downcast::<Error>() {
                        Ok(e) => *e,
                        Err(_) => Error::HttpResponseBodySize(Some(max_response)),
                    })
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// Replaces placeholders in a request that is known to go to an allowed origin.
struct Injector {
    binding: Option<Binding>,
    broker: Option<Broker>,
    label: String,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Injector {
    fn refuse(&self, why: String) -> Error {
        note_refusal(&self.notes, &self.label, why)
    }

    async fn inject(
        &self,
        request: http::Request<WasiBody>,
        origin: &Origin,
    ) -> Result<http::Request<WasiBody>, Error> {
        let (mut parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_REQUEST_BODY)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(None))?
            .to_bytes();

        let uri_text = parts.uri.to_string();
        let malformed = |e: placeholder::Malformed| self.refuse(e.to_string());
        let in_uri = placeholder::find(uri_text.as_bytes(), "URI").map_err(malformed)?;
        let mut in_headers = Vec::new();
        for (name, value) in &parts.headers {
            let found = placeholder::find(value.as_bytes(), "headers").map_err(malformed)?;
            if !found.is_empty() {
                in_headers.push((name.clone(), found));
            }
        }
        let in_body = placeholder::find(&body, "body").map_err(malformed)?;
        if in_uri.is_empty() && in_headers.is_empty() && in_body.is_empty() {
            return Ok(http::Request::from_parts(parts, full(body)));
        }

        let mut fields: Vec<&str> = Vec::new();
        for (_, _, p) in in_uri
            .iter()
            .chain(in_headers.iter().flat_map(|(_, f)| f.iter()))
            .chain(in_body.iter())
        {
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
            .map_err(|d| self.refuse(format!("placeholder for {origin}: {d}")))?;
        let values = &granted.values;
        let unencodable = |e: placeholder::Unencodable| self.refuse(e.to_string());

        if !in_uri.is_empty() {
            let new = placeholder::substitute(uri_text.as_bytes(), &in_uri, values, Context::Uri)
                .map_err(unencodable)?;
            parts.uri = http::Uri::try_from(new.as_slice())
                .map_err(|_| self.refuse("the URI is invalid after substitution".into()))?;
        }
        for (name, found) in &in_headers {
            let Some(old) = parts.headers.get(name) else {
                continue;
            };
            let new = placeholder::substitute(old.as_bytes(), found, values, Context::Header)
                .map_err(unencodable)?;
            let mut value = http::HeaderValue::from_bytes(&new).map_err(|_| {
                self.refuse(format!("header `{name}` is invalid after substitution"))
            })?;
            value.set_sensitive(true);
            parts.headers.insert(name.clone(), value);
        }
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
        Ok(http::Request::from_parts(parts, full(body)))
    }
}

/// The most refusals logged and noted per invocation.
const MAX_NOTES: usize = 20;

/// Logs and notes (for the run's error) why a request was refused, the first
/// [`MAX_NOTES`] times in an invocation: a plugin retrying in a loop cannot
/// flood the host's log.
fn note_refusal(notes: &Mutex<Vec<String>>, label: &str, why: String) -> Error {
    if let Ok(mut notes) = notes.lock()
        && notes.len() < MAX_NOTES
    {
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
