//! A small synchronous HTTP client over the host's `wasi:http/outgoing-handler`.
//!
//! ```ignore
//! use intake_plugin_sdk::http::Request;
//!
//! let token = intake_plugin_sdk::credentials::placeholder("access_token")?;
//! let response = Request::get("https://api.example.com/v1/me")
//!     .header("authorization", format!("Bearer {token}"))
//!     .send()?;
//! if response.status == 200 {
//!     let me: serde_json::Value = response.json()?;
//! }
//! ```
//!
//! Every request goes through the host, which allows it only to an origin the
//! plugin's spec declares *and* the operator allows; otherwise [`send`] fails
//! with [`HttpError::Denied`]. The host also replaces credential placeholders
//! (see [`crate::credentials`]) in header values, the query string and the body.
//! Because the host may change the body's length that way, the client never
//! sets `content-length` itself.
//!
//! A response of any status is an `Ok(Response)`: look at [`Response::status`].
//! The response body is read whole, up to a maximum size
//! ([`DEFAULT_MAX_RESPONSE_BYTES`] unless [`Request::max_response_bytes`] says
//! otherwise). Redirects are not followed.
//!
//! [`send`]: Request::send

pub mod url;

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ConnectorError;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, HeaderError, IncomingBody, IncomingResponse,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// The HTTP method of a request (`Method::Get`, `Method::Post`, ...,
/// `Method::Other(String)`).
pub use crate::bindings::wasi::http::types::Method;

use self::url::{UrlParts, UrlScheme};

/// The default maximum size of a response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The most bytes written to the request body stream in one call.
const WRITE_CHUNK: usize = 4096;
/// The most bytes asked for in one read of the response body stream.
const READ_CHUNK: u64 = 64 * 1024;

/// Why a request failed before a response (of any status) came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not an absolute `http://` or `https://` URL the client can send to.
    InvalidUrl(String),
    /// The request could not be built (an invalid or forbidden header, say).
    InvalidRequest(String),
    /// The host refused the request: its origin is not declared in the plugin's
    /// spec or not allowed by the operator, or a credential placeholder in it
    /// may not go to that origin.
    Denied(String),
    /// The response body was larger than the allowed maximum, in bytes.
    TooLarge {
        /// The maximum that was exceeded, in bytes.
        limit: usize,
    },
    /// The request or response failed on the way (DNS, connection, timeout,
    /// protocol error, ...).
    Transport(String),
    /// The response body was not what [`Response::json`] was asked to decode.
    Decode(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(why) => write!(f, "invalid URL {why}"),
            HttpError::InvalidRequest(why) => write!(f, "invalid HTTP request: {why}"),
            HttpError::Denied(why) => write!(f, "HTTP request denied: {why}"),
            HttpError::TooLarge { limit } => {
                write!(f, "the HTTP response body is larger than {limit} bytes")
            }
            HttpError::Transport(why) => write!(f, "HTTP request failed: {why}"),
            HttpError::Decode(why) => write!(f, "unexpected HTTP response body: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ConnectorError {
    /// [`HttpError::Transport`] becomes [`ConnectorError::Transient`] (retried
    /// with backoff); every other case becomes [`ConnectorError::Other`].
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Transport(_) => ConnectorError::Transient(error.to_string()),
            _ => ConnectorError::Other(error.to_string()),
        }
    }
}

/// An HTTP request being built; send it with [`Request::send`].
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_response_bytes: usize,
    timeout: Option<Duration>,
}

impl fmt::Debug for Request {
    /// Shows header names but not their values, which may hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &header_names)
            .field("body_len", &self.body.len())
            .field("max_response_bytes", &self.max_response_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Request {
    /// A request with `method` to the absolute `http://` or `https://` `url`.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            timeout: None,
        }
    }

    /// A `GET` request to `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `POST` request to `url`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A `PUT` request to `url`.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// A `DELETE` request to `url`.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// Adds a header. Names are sent in lowercase; a name may be added more
    /// than once. The value may hold credential placeholders.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Appends `name=value` to the URL's query string, percent-encoded except
    /// for credential placeholders (see [`url::encode_component`]).
    pub fn query(mut self, name: &str, value: &str) -> Self {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        self.url.push(separator);
        self.url.push_str(&url::encode_component(name));
        self.url.push('=');
        self.url.push_str(&url::encode_component(value));
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets an `application/x-www-form-urlencoded` body from name/value pairs
    /// (and the `content-type` header). Values may be credential placeholders,
    /// which are kept as they are for the host to replace.
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(url::form_encode(pairs))
    }

    /// Sets a JSON body (and the `content-type` header). String values may be
    /// credential placeholders.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| HttpError::InvalidRequest(format!("cannot encode the JSON body: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sets the maximum size of the response body, in bytes (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]); a larger body fails the request with
    /// [`HttpError::TooLarge`].
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Asks the host to time out connecting, waiting for the first byte of the
    /// response, and between bytes of it, after `timeout` each. Hosts may
    /// ignore or cap it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response. Blocks until done.
    ///
    /// A response of any status is `Ok`; an error means no (complete)
    /// response came back.
    pub fn send(self) -> Result<Response, HttpError> {
        let parts = url::split_url(&self.url)?;
        let request = self.build(&parts)?;
        // The body must be taken before `handle` consumes the request; it is
        // written and finished after `handle`, and always finished, even when
        // empty (a GET), or the host sees the request body as aborted.
        let outgoing_body = request
            .body()
            .map_err(|()| HttpError::InvalidRequest("the request body was already taken".into()))?;
        let options = self.timeout.map(request_options);
        let future = outgoing_handler::handle(request, options)
            .map_err(|code| error_from_code(code, &parts))?;

        let sent = write_body(&outgoing_body, &self.body, &parts).and_then(|()| {
            OutgoingBody::finish(outgoing_body, None).map_err(|code| error_from_code(code, &parts))
        });
        // If writing the body failed, the response future usually has the
        // reason (the connection failed, say): prefer its error.
        let response = wait_for_response(&future, &parts)?;
        sent?;
        read_response(response, self.max_response_bytes, &parts)
    }

    /// Builds the `wasi:http` request (without its body).
    fn build(&self, parts: &UrlParts) -> Result<OutgoingRequest, HttpError> {
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| HttpError::InvalidRequest(header_problem(name, &e)))?;
        }
        let request = OutgoingRequest::new(headers);
        request
            .set_method(&self.method)
            .map_err(|()| HttpError::InvalidRequest(format!("invalid method {:?}", self.method)))?;
        let scheme = match parts.scheme {
            UrlScheme::Http => Scheme::Http,
            UrlScheme::Https => Scheme::Https,
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| HttpError::InvalidUrl(format!("`{}`: invalid scheme", self.url)))?;
        request
            .set_authority(Some(&parts.authority))
            .map_err(|()| HttpError::InvalidUrl(format!("`{}`: invalid host", self.url)))?;
        request
            .set_path_with_query(Some(&parts.path_with_query))
            .map_err(|()| {
                HttpError::InvalidUrl(format!("`{}`: invalid path or query", self.url))
            })?;
        Ok(request)
    }
}

/// Request options with all three timeouts set to `timeout`.
fn request_options(timeout: Duration) -> RequestOptions {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    // A host that does not support a timeout refuses to set it; then the
    // host's own default applies.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    options
}

/// Writes `body` to the outgoing body stream in chunks, then drops the stream.
fn write_body(outgoing: &OutgoingBody, body: &[u8], parts: &UrlParts) -> Result<(), HttpError> {
    let stream = outgoing.write().map_err(|()| {
        HttpError::InvalidRequest("the request body stream was already taken".into())
    })?;
    for chunk in body.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| error_from_stream(e, parts, "writing the request body"))?;
    }
    drop(stream);
    Ok(())
}

/// Blocks until the response head arrives.
fn wait_for_response(
    future: &FutureIncomingResponse,
    parts: &UrlParts,
) -> Result<IncomingResponse, HttpError> {
    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(error_from_code(code, parts)),
            Some(Err(())) => {
                return Err(HttpError::Transport(
                    "the response was already taken".into(),
                ));
            }
            None => future.subscribe().block(),
        }
    }
}

/// Reads status, headers and the whole body (up to `limit` bytes).
fn read_response(
    response: IncomingResponse,
    limit: usize,
    parts: &UrlParts,
) -> Result<Response, HttpError> {
    let status = response.status();
    let headers: Vec<(String, String)> = {
        let fields = response.headers();
        fields
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect()
    };
    let declared_len = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limit as u64) {
        return Err(HttpError::TooLarge { limit });
    }

    let incoming_body = response
        .consume()
        .map_err(|()| HttpError::Transport("the response body was already taken".into()))?;
    let stream = incoming_body
        .stream()
        .map_err(|()| HttpError::Transport("the response body stream was already taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(HttpError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(e) => return Err(error_from_stream(e, parts, "reading the response body")),
        }
    }
    // Children before parents: the stream, then the body, then the response.
    drop(stream);
    drop(IncomingBody::finish(incoming_body));
    drop(response);
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn header_problem(name: &str, error: &HeaderError) -> String {
    match error {
        HeaderError::InvalidSyntax => format!("header `{name}` has an invalid name or value"),
        HeaderError::Forbidden => format!("header `{name}` may not be set"),
        HeaderError::Immutable => format!("header `{name}` cannot be changed"),
    }
}

fn error_from_stream(error: StreamError, parts: &UrlParts, doing: &str) -> HttpError {
    match error {
        StreamError::Closed => HttpError::Transport(format!(
            "{doing} for {}: the stream was closed",
            parts.origin()
        )),
        StreamError::LastOperationFailed(io_error) => {
            match crate::bindings::wasi::http::types::http_error_code(&io_error) {
                Some(code) => error_from_code(code, parts),
                None => HttpError::Transport(format!(
                    "{doing} for {}: {}",
                    parts.origin(),
                    io_error.to_debug_string()
                )),
            }
        }
    }
}

/// Maps a `wasi:http` error code to an [`HttpError`].
fn error_from_code(code: ErrorCode, parts: &UrlParts) -> HttpError {
    let origin = parts.origin();
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied(format!(
            "the host refused the request to {origin}: the origin (or a credential placeholder \
             in the request) is not declared in the plugin's spec or not allowed by the operator"
        )),
        ErrorCode::HttpResponseBodySize(_) => HttpError::Transport(format!(
            "the response from {origin} was larger than the host allows"
        )),
        other => HttpError::Transport(format!("{origin}: {}", describe_code(&other))),
    }
}

/// A short description of a `wasi:http` error code.
fn describe_code(code: &ErrorCode) -> String {
    match code {
        ErrorCode::DnsTimeout => "DNS lookup timed out".into(),
        ErrorCode::DnsError(payload) => match &payload.rcode {
            Some(rcode) => format!("DNS lookup failed ({rcode})"),
            None => "DNS lookup failed".into(),
        },
        ErrorCode::DestinationNotFound => "host not found".into(),
        ErrorCode::DestinationUnavailable => "host unavailable".into(),
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTerminated => "connection closed unexpectedly".into(),
        ErrorCode::ConnectionTimeout => "connecting timed out".into(),
        ErrorCode::ConnectionReadTimeout => "reading timed out".into(),
        ErrorCode::ConnectionWriteTimeout => "writing timed out".into(),
        ErrorCode::HttpResponseTimeout => "the response timed out".into(),
        ErrorCode::HttpResponseIncomplete => "the response was incomplete".into(),
        ErrorCode::TlsProtocolError => "TLS protocol error".into(),
        ErrorCode::TlsCertificateError => "TLS certificate error".into(),
        ErrorCode::HttpProtocolError => "HTTP protocol error".into(),
        ErrorCode::InternalError(Some(message)) => format!("host error: {message}"),
        ErrorCode::InternalError(None) => "host error".into(),
        other => format!("{other:?}"),
    }
}

/// A response: status, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The headers as name/value pairs, names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Decodes the body as JSON into `T`.
    ///
    /// The error says where decoding failed but quotes none of the body, which
    /// may hold tokens.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::Decode(format!(
                "the body (status {}) is not the expected JSON ({:?} error at line {}, column {})",
                self.status,
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> Response {
        Response {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "3".into()),
            ],
            body: br#"{"a": 1}"#.to_vec(),
        }
    }

    #[test]
    fn response_helpers() {
        let r = response();
        assert_eq!(r.header("Retry-After"), Some("3"));
        assert_eq!(r.header("x"), None);
        assert!(r.is_success());
        let v: serde_json::Value = r.json().unwrap_or_default();
        assert_eq!(v["a"], 1);
        let bad = Response {
            body: b"nope".to_vec(),
            ..r
        };
        match bad.json::<serde_json::Value>() {
            Err(HttpError::Decode(m)) => assert!(!m.contains("nope")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_conversion() {
        assert!(matches!(
            ConnectorError::from(HttpError::Transport("x".into())),
            ConnectorError::Transient(_)
        ));
        assert!(matches!(
            ConnectorError::from(HttpError::Denied("x".into())),
            ConnectorError::Other(_)
        ));
        assert!(matches!(
            ConnectorError::from(HttpError::TooLarge { limit: 1 }),
            ConnectorError::Other(_)
        ));
    }

    #[test]
    fn builder_encodes_query_and_form() {
        let r = Request::get("http://h/x")
            .query("since", "2026-11-01")
            .query("page_token", "a b/c")
            .header("Authorization", "Bearer {{intake:access_token}}");
        assert_eq!(r.url, "http://h/x?since=2026-11-01&page_token=a%20b%2Fc");
        assert_eq!(r.headers[0].0, "authorization");
        let debug = format!("{r:?}");
        assert!(!debug.contains("Bearer"));
        let f = Request::post("http://h/t").form(&[("a", "{{intake:x}}"), ("b", "1 2")]);
        assert_eq!(f.body, b"a={{intake:x}}&b=1%202");
    }
}
