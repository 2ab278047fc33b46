//! The HTTP API of `docs/sample-platform.md`: `GET /v1/me`,
//! `GET /v1/accounts/{account_id}/campaign-stats` and `POST /oauth/token`, plus
//! `/redirect` (a redirect anywhere), the middleware that logs every request, answers
//! injected failures and (on a careless platform) echoes `TRACE` requests, and the JSON
//! error type every refusal goes through (`{"error": ..., "message": ...}`).

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::RefreshError;
use crate::data::Date;
use crate::state::{Cursor, RequestRecord, Shared, decode_page_token, encode_page_token, lock};

/// The largest request body read (only `POST /oauth/token` has one).
const MAX_BODY: usize = 64 * 1024;
/// Rows per page when `page_size` is not given.
const DEFAULT_PAGE_SIZE: u64 = 100;
/// The largest `page_size` allowed.
const MAX_PAGE_SIZE: u64 = 500;

/// The router of the whole API over `shared`.
pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/me", get(me))
        .route(
            "/v1/accounts/{account_id}/campaign-stats",
            get(campaign_stats),
        )
        .route("/oauth/token", post(oauth_token))
        .route("/redirect", axum::routing::any(redirect))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            log_and_inject,
        ))
        .with_state(shared)
}

/// A refusal, answered as `{"error": code, "message": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn rate_limited(seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests, retry later",
            )
        }
    }

    /// The answer to a failure injected with `fail_next`; statuses that are not errors
    /// (or not valid) become 500.
    fn injected(status: u16) -> ApiError {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = "injected failure";
        match status {
            StatusCode::TOO_MANY_REQUESTS => ApiError::rate_limited(1),
            StatusCode::BAD_REQUEST => ApiError::bad_request(message),
            StatusCode::UNAUTHORIZED => ApiError::new(status, "invalid_token", message),
            StatusCode::FORBIDDEN => ApiError::new(status, "forbidden", message),
            StatusCode::NOT_FOUND => ApiError::new(status, "not_found", message),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::new(status, "unavailable", message),
            _ => ApiError::new(status, "internal", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.code, "message": self.message}));
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Logs every request with its answer, and answers queued injected failures for
/// `/v1/*` before anything else (authentication included).
async fn log_and_inject(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let uri = request.uri();
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_v1 = uri.path().starts_with("/v1/");
    let (delay, padding) = {
        let mut state = lock(&shared);
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        (state.delay, state.padding)
    };
    // Counted out however the handler ends (also if the client goes away).
    let _counted = InFlight(shared.clone());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut body = None;
    let echo_trace = request.method() == Method::TRACE && lock(&shared).echo_authorization;
    let response = if echo_trace {
        trace_echo(&request)
    } else if request.method() == Method::POST {
        let (parts, request_body) = request.into_parts();
        match axum::body::to_bytes(request_body, MAX_BODY).await {
            Ok(bytes) => {
                body = Some(String::from_utf8_lossy(&bytes).into_owned());
                answer(
                    &shared,
                    is_v1,
                    Request::from_parts(parts, Body::from(bytes)),
                    next,
                )
                .await
            }
            Err(_) => ApiError::bad_request("request body too large or unreadable").into_response(),
        }
    } else {
        answer(&shared, is_v1, request, next).await
    };

    let status = response.status().as_u16();
    let response = if padding > 0 {
        pad(response, padding).await
    } else {
        response
    };
    lock(&shared).log.push(RequestRecord {
        method,
        path,
        authorization,
        status,
        body,
    });
    response
}

/// `response` with `padding` spaces after its body (and the length updated).
async fn pad(response: Response, padding: usize) -> Response {
    let (mut parts, body) = response.into_parts();
    let mut bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes.to_vec(),
        Err(_) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot pad the answer",
            )
            .into_response();
        }
    };
    bytes.resize(bytes.len() + padding, b' ');
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// The injected failure due for this request, or the real answer.
async fn answer(shared: &Shared, is_v1: bool, request: Request, next: Next) -> Response {
    let injected = if is_v1 {
        lock(shared).failures.pop_front()
    } else {
        None
    };
    match injected {
        Some(status) => ApiError::injected(status).into_response(),
        None => next.run(request).await,
    }
}

/// Authenticates the request and takes a rate-limit token: the principal, or 401/429.
fn authenticate(state: &mut crate::state::State, headers: &HeaderMap) -> Result<String, ApiError> {
    let header = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let principal = state.credentials.authenticate(header).map_err(|e| {
        let message = match header {
            Some(value) if state.echo_authorization => format!(
                "{}; received authorization: \"{}\"",
                e.message(),
                String::from_utf8_lossy(value)
            ),
            _ => e.message().to_owned(),
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    })?;
    state
        .limiter
        .take(&principal, Instant::now())
        .map_err(ApiError::rate_limited)?;
    Ok(principal)
}

/// `GET /v1/me`.
async fn me(State(shared): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let mut state = lock(&shared);
    let principal = authenticate(&mut state, &headers)?;
    let accounts = state.accounts_of(&principal);
    Ok(Json(json!({"principal": principal, "accounts": accounts})))
}

/// The query of `campaign-stats`; parsed by hand for precise 400 messages.
#[derive(Debug, Deserialize)]
struct StatsQuery {
    since: Option<String>,
    page_size: Option<String>,
    page_token: Option<String>,
}

/// `GET /v1/accounts/{account_id}/campaign-stats`.
async fn campaign_stats(
    State(shared): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut state = lock(&shared);
    let principal = authenticate(&mut state, &headers)?;
    let Path(account_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !state.accounts.contains_key(&account_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no account {account_id}"),
        ));
    }
    if !state.may_read(&principal, &account_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{principal} may not read account {account_id}"),
        ));
    }
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;

    let since = match &query.since {
        Some(text) => Some(Date::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!("since must be a date YYYY-MM-DD, not {text:?}"))
        })?),
        None => None,
    };
    let page_size = match &query.page_size {
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "page_size must be 1 to {MAX_PAGE_SIZE}, not {text:?}"
                ))
            })?,
        None => DEFAULT_PAGE_SIZE,
    };
    let cursor = match &query.page_token {
        Some(token) => {
            let cursor = decode_page_token(&account_id, token)
                .ok_or_else(|| ApiError::bad_request("invalid page_token"))?;
            if query.since.is_some() && since != cursor.since {
                return Err(ApiError::bad_request("since does not match page_token"));
            }
            cursor
        }
        None => Cursor { offset: 0, since },
    };

    let rows = state
        .rows(&account_id, cursor.since)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account"))?;
    let data = rows.page(cursor.offset, page_size);
    let next = cursor.offset.saturating_add(page_size);
    let next_page_token = (next < rows.len()).then(|| {
        encode_page_token(
            &account_id,
            Cursor {
                offset: next,
                since: cursor.since,
            },
        )
    });
    Ok(Json(
        json!({"data": data, "next_page_token": next_page_token}),
    ))
}

/// The form of `POST /oauth/token`.
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
}

/// `POST /oauth/token`: trades a single-use refresh token for an access token and the
/// next refresh token.
async fn oauth_token(
    State(shared): State<Shared>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Json<Value>, ApiError> {
    let Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match form.grant_type.as_deref() {
        Some("refresh_token") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported grant_type {other:?}"
            )));
        }
        None => return Err(ApiError::bad_request("missing grant_type")),
    }
    let refresh_token = form
        .refresh_token
        .ok_or_else(|| ApiError::bad_request("missing refresh_token"))?;
    let client_id = form
        .client_id
        .ok_or_else(|| ApiError::bad_request("missing client_id"))?;
    let issued = lock(&shared)
        .credentials
        .refresh(&client_id, &refresh_token)
        .map_err(|RefreshError::InvalidGrant| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token is invalid, used or revoked, or not this client's",
            )
        })?;
    Ok(Json(json!({
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "token_type": "bearer",
        "expires_in": 3600,
    })))
}

/// `TRACE` on a careless platform: the request line and headers sent back
/// as they came, as RFC 9110 describes (authorization included).
fn trace_echo(request: &Request) -> Response {
    let mut echo = format!(
        "TRACE {} HTTP/1.1\r\n",
        request.uri().path_and_query().map_or("/", |pq| pq.as_str())
    );
    for (name, value) in request.headers() {
        echo.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "message/http")],
        echo,
    )
        .into_response()
}

/// Any method on `/redirect?to=URL`: `302 Found` to `URL`, as a platform
/// moving an endpoint would (tests check that nothing follows it).
async fn redirect(Query(query): Query<Vec<(String, String)>>) -> Response {
    match query.iter().find(|(k, _)| k == "to") {
        Some((_, to)) => match HeaderValue::from_str(to) {
            Ok(location) => (
                StatusCode::FOUND,
                [(axum::http::header::LOCATION, location)],
                Json(json!({"moved_to": to})),
            )
                .into_response(),
            Err(_) => ApiError::bad_request("`to` is not a valid header value").into_response(),
        },
        None => ApiError::bad_request("`to` is required").into_response(),
    }
}

/// Any other path or method.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
}

/// Takes a request off the in-flight count when dropped.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).in_flight -= 1;
    }
}
