//! Secret injection: replacing placeholders in a request that is known to go
//! to an allowed origin, through the broker, for fields allowed to go there;
//! refusing values passed on verbatim where their field may not go;
//! remembering every value substituted for the scrubber; and making the audit
//! records durable before the request is sent.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use wasmtime_wasi_http::Error;

use crate::broker::{Binding, Broker, Denial, Use};
use crate::origin::Origin;
use crate::secret::SecretString;

use super::super::placeholder::{self, Context, Placeholder};
use super::super::scrub::{InFlight, Scrubber};
use super::super::state::Tripwire;
use super::{MAX_REQUEST_BODY, WasiBody, full, note_refusal};

/// A request ready to send, with the guards of the values injected into it.
pub(super) struct Injected {
    pub(super) request: http::Request<WasiBody>,
    pub(super) in_flight: Vec<InFlight>,
    /// Whether the broker granted values for it (its records must be
    /// durable before it is sent).
    pub(super) granted: bool,
}

/// Replaces placeholders in a request that is known to go to an allowed origin.
pub(super) struct Injector {
    pub(super) binding: Option<Binding>,
    pub(super) broker: Option<Broker>,
    pub(super) label: String,
    pub(super) notes: Arc<Mutex<Vec<String>>>,
    pub(super) scrubber: Scrubber,
    pub(super) public_fields: Arc<BTreeSet<String>>,
    pub(super) tripwire: Tripwire,
}

impl Injector {
    fn refuse(&self, why: String) -> Error {
        note_refusal(&self.notes, &self.label, &self.scrubber, &why)
    }

    /// Makes the buffered audit records durable; if they cannot be written,
    /// the request is refused (no secret is used unrecorded) and the run
    /// fails as a host error.
    pub(super) async fn durable_audit(&self) -> Result<(), Error> {
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
        let limit = |e: super::super::scrub::ScrubLimit| self.limit(e.0);
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

    pub(super) async fn inject(
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
