//! Raw `wasi:http` requests, without the SDK's URL checks, so that the host's
//! own checks are what stands between an odd authority and the network.

use intake_plugin_sdk::bindings::wasi::http::outgoing_handler;
use intake_plugin_sdk::bindings::wasi::http::types::{
    ErrorCode, Fields, OutgoingBody, OutgoingRequest, Scheme,
};

/// The scheme of a raw request.
#[derive(Debug, Clone, Copy)]
pub enum RawScheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
    /// Any other scheme.
    Other(&'static str),
}

impl RawScheme {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            RawScheme::Http => "http",
            RawScheme::Https => "https",
            RawScheme::Other(name) => name,
        }
    }

    fn wasi(self) -> Scheme {
        match self {
            RawScheme::Http => Scheme::Http,
            RawScheme::Https => Scheme::Https,
            RawScheme::Other(name) => Scheme::Other(name.into()),
        }
    }
}

/// Sends a `GET` with `authorization` to `scheme://authority/path`: `Ok` with
/// the status if a response came back, `Err` with the reason otherwise.
pub fn send(
    scheme: RawScheme,
    authority: &str,
    path: &str,
    authorization: &str,
) -> Result<String, String> {
    let headers = Fields::new();
    headers
        .append("authorization", authorization.as_bytes())
        .map_err(|e| format!("header refused by wasi: {e:?}"))?;
    let request = OutgoingRequest::new(headers);
    request
        .set_scheme(Some(&scheme.wasi()))
        .map_err(|()| "scheme refused by wasi".to_owned())?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority refused by wasi".to_owned())?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "path refused by wasi".to_owned())?;
    let body = request.body().map_err(|()| "no request body".to_owned())?;
    let future = outgoing_handler::handle(request, None).map_err(|code| describe(&code))?;
    OutgoingBody::finish(body, None).map_err(|code| describe(&code))?;
    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(format!("status {}", response.status())),
            Some(Ok(Err(code))) => return Err(describe(&code)),
            Some(Err(())) => return Err("the response was taken".into()),
            None => future.subscribe().block(),
        }
    }
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "denied by the host".into(),
        other => format!("{other:?}"),
    }
}
