//! The intake connector plugin for AdSample Ads, the sample ad platform (see
//! `docs/sample-platform.md`).
//!
//! It fetches daily campaign statistics of one ad account, one API page per
//! `fetch` call, as JSON Lines (each row as the platform sent it).
//!
//! The plugin never holds a bearer token or a password: requests carry
//! credential placeholders that the host replaces as they leave. It does see
//! the tokens the platform returns from an OAuth refresh, which it stores at
//! once with `credentials::update` and never logs. Authentication is chosen from
//! the fields the credential has:
//!
//! * `access_token`: `authorization: Bearer {{intake:access_token}}`; on a 401,
//!   if the credential also has `refresh_token` and `client_id`, the token is
//!   refreshed once and the request retried;
//! * else `username` and `password`:
//!   `authorization: Basic {{intake:basic:username:password}}`;
//! * else `refresh_token` and `client_id`: refresh first (`POST /oauth/token`),
//!   then bearer with the new access token.
//!
//! Refresh tokens are single use and data sources sharing a credential run at
//! once, so two of them may refresh together and the platform refuse one
//! (`invalid_grant`). That one then waits briefly for the other's new access
//! token to be saved in the shared credential and retries with it, instead of
//! failing (which would mark a working credential broken).

mod logic;

use intake_plugin_sdk::credentials::{self, basic_auth_placeholder};
use intake_plugin_sdk::http::{Request, Response, url::encode_path_segment};
use intake_plugin_sdk::{
    Config, ConfigField, Connector, ConnectorError, CredentialField, FetchRequest, Page, Spec,
    config, info,
};
use serde::Deserialize;

use crate::logic::{
    AuthMode, Cursor, DEFAULT_SINCE, StatsPage, auth_mode, check_page_size, error_for_status,
    is_date, platform_error_code, platform_message, process_page,
};

/// The AdSample Ads connector.
#[derive(Debug)]
pub struct AdSample;

intake_plugin_sdk::export!(AdSample);

/// The origin every credential field may go to and the plugin may reach.
const BASE_URL_HOST: &str = "{base_url}";

fn credential_field(name: &str, label: &str, secret: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required: false,
        hosts: vec![BASE_URL_HOST.into()],
    }
}

fn config_field(name: &str, label: &str, required: bool, default: Option<&str>) -> ConfigField {
    ConfigField {
        name: name.into(),
        label: label.into(),
        required,
        default: default.map(Into::into),
    }
}

impl Connector for AdSample {
    fn spec() -> Spec {
        Spec {
            platform: "adsample".into(),
            display_name: "AdSample Ads".into(),
            version: "0.1.0".into(),
            credential_fields: vec![
                credential_field("access_token", "Access token", true),
                credential_field("username", "Username", false),
                credential_field("password", "Password", true),
                credential_field("refresh_token", "Refresh token", true),
                credential_field("client_id", "OAuth client id", false),
            ],
            config_fields: vec![
                config_field(
                    "base_url",
                    "API base URL, e.g. http://127.0.0.1:8787",
                    true,
                    None,
                ),
                config_field("account_id", "Ad account id", true, None),
                config_field(
                    "since",
                    "First date to fetch (YYYY-MM-DD)",
                    false,
                    Some(DEFAULT_SINCE),
                ),
                config_field("page_size", "Rows per page (1 to 500)", false, Some("100")),
            ],
            hosts: vec![BASE_URL_HOST.into()],
        }
    }

    fn check(config: Config) -> Result<(), ConnectorError> {
        // Every setting is checked as a run checks it, so that `--check`
        // fails on what the first run would reject.
        let settings = Settings::from_config(&config)?;
        let url = format!("{}/v1/me", settings.base_url);
        let response = send_authenticated(&settings.base_url, || Request::get(url.as_str()))?;
        if !response.is_success() {
            return Err(error_for_status(
                response.status,
                response.header("retry-after"),
                &response.body,
            ));
        }
        let me: Me = response.json()?;
        if !me.accounts.contains(&settings.account_id) {
            return Err(ConnectorError::InvalidConfig(format!(
                "the credential cannot access account {}",
                settings.account_id
            )));
        }
        info!(
            "check passed: the credential can access account {}",
            settings.account_id
        );
        Ok(())
    }

    fn fetch(request: FetchRequest) -> Result<Page, ConnectorError> {
        let settings = Settings::from_config(&request.config)?;
        let cursor = Cursor::resume(request.cursor.as_deref(), &settings.since)?;

        let url = format!(
            "{}/v1/accounts/{}/campaign-stats",
            settings.base_url,
            encode_path_segment(&settings.account_id)
        );
        let page_size_text = settings.page_size.to_string();
        let response = send_authenticated(&settings.base_url, || {
            let request = Request::get(url.as_str())
                .query("since", &cursor.since)
                .query("page_size", &page_size_text);
            match &cursor.page_token {
                Some(token) => request.query("page_token", token),
                None => request,
            }
        })?;
        if !response.is_success() {
            return Err(error_for_status(
                response.status,
                response.header("retry-after"),
                &response.body,
            ));
        }
        let stats: StatsPage = response.json()?;
        let output = process_page(&cursor.since, &stats)?;
        info!(
            "fetched {} records of account {} since {}{}; more: {}",
            output.count,
            settings.account_id,
            cursor.since,
            if cursor.page_token.is_some() {
                " (continued page)"
            } else {
                ""
            },
            output.more
        );
        Ok(Page {
            records: output.records,
            cursor: Some(output.cursor.to_json()?),
            more: output.more,
        })
    }
}

/// The settings, checked: `check` and `fetch` refuse the same ones.
#[derive(Debug)]
struct Settings {
    /// `scheme://host[:port]`, without a trailing `/`.
    base_url: String,
    account_id: String,
    /// The first date to fetch when there is no cursor yet, `YYYY-MM-DD`.
    since: String,
    /// Rows per page, 1 to [`crate::logic::MAX_PAGE_SIZE`].
    page_size: u32,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, ConnectorError> {
        let base_url = config::require(config, "base_url")?
            .trim()
            .trim_end_matches('/');
        let lower = base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(ConnectorError::InvalidConfig(format!(
                "the setting `base_url` must be an http:// or https:// URL, not `{base_url}`"
            )));
        }
        let account_id = config::require(config, "account_id")?.trim();
        let since = config::get_or(config, "since", DEFAULT_SINCE).trim();
        if !is_date(since) {
            return Err(ConnectorError::InvalidConfig(format!(
                "the setting `since` must be a date YYYY-MM-DD, not `{since}`"
            )));
        }
        let page_size = check_page_size(config::parse::<u32>(config, "page_size")?)?;
        Ok(Settings {
            base_url: base_url.to_owned(),
            account_id: account_id.to_owned(),
            since: since.to_owned(),
            page_size,
        })
    }
}

/// The answer of `GET /v1/me`.
#[derive(Debug, Deserialize)]
struct Me {
    accounts: Vec<String>,
}

/// The answer of `POST /oauth/token`. Holds secrets: no `Debug`, never logged.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
}

/// How long to wait, one wait after the other, for a data source sharing the
/// credential to save the tokens of a refresh that used up the refresh token
/// this one sent (about 1.3 s in all).
const SHARED_REFRESH_WAITS_MS: [u64; 6] = [20, 40, 80, 160, 320, 640];

/// What became of a refresh.
enum Refresh {
    /// The new tokens are saved in the credential.
    Saved,
    /// The platform refused the refresh token (`invalid_grant`), with its message.
    Refused(String),
}

/// Sends the request `make` builds with the credential's authentication,
/// refreshing the OAuth access token first if there is none yet, or once after
/// a 401 if the credential can be refreshed. Returns the answer of any status.
///
/// Data sources sharing a credential run at once, and refresh tokens are
/// single use: when two refresh together, the platform refuses one of them.
/// The refused one does not give up: the other has just saved (or is saving)
/// a new access token in the shared credential, which the access-token
/// placeholder resolves to, so it retries its request with that for a short
/// while ([`SHARED_REFRESH_WAITS_MS`]) before reporting the refusal.
fn send_authenticated(
    base_url: &str,
    make: impl Fn() -> Request,
) -> Result<Response, ConnectorError> {
    let fields = credentials::fields()?;
    let mode = auth_mode(&fields)?;
    let can_refresh = match mode {
        AuthMode::Bearer { can_refresh } => can_refresh,
        AuthMode::Basic => false,
        AuthMode::OAuth => {
            if let Refresh::Refused(message) = refresh_access_token(base_url)? {
                return wait_for_shared_refresh(&make, &refused(&message));
            }
            // Another data source may refresh right after (invalidating this
            // access token): one more refresh after a 401 is allowed.
            true
        }
    };
    let response = send(&make, mode)?;
    if response.status != 401 || !can_refresh {
        return Ok(response);
    }
    info!("AdSample rejected the access token; refreshing it");
    if let Refresh::Refused(message) = refresh_access_token(base_url)? {
        return wait_for_shared_refresh(&make, &refused(&message));
    }
    let response = send(&make, AuthMode::OAuth)?;
    if response.status == 401 {
        // Another data source sharing the credential refreshed right after
        // this one, which invalidated the access token just saved.
        return wait_for_shared_refresh(
            &make,
            &format!(
                "the access token just refreshed was rejected: {}",
                platform_message(response.status, &response.body)
            ),
        );
    }
    Ok(response)
}

/// Why a refresh failed when the platform refused the refresh token.
fn refused(message: &str) -> String {
    format!("the refresh token was rejected (it is single use): {message}")
}

/// Sends the request `make` builds, authenticated for `mode` with placeholders.
fn send(make: &impl Fn() -> Request, mode: AuthMode) -> Result<Response, ConnectorError> {
    let authorization = match mode {
        AuthMode::Basic => format!("Basic {}", basic_auth_placeholder("username", "password")),
        AuthMode::Bearer { .. } | AuthMode::OAuth => {
            format!("Bearer {}", credentials::placeholder("access_token")?)
        }
    };
    Ok(make()
        .header("accept", "application/json")
        .header("authorization", authorization)
        .send()?)
}

/// After a refresh lost a race with another data source sharing the
/// credential (`why`): waits for that one to save the access token of its
/// refresh, and sends the request with it. Fails with `why` if none comes.
fn wait_for_shared_refresh(
    make: &impl Fn() -> Request,
    why: &str,
) -> Result<Response, ConnectorError> {
    info!("waiting for a data source sharing the credential to save a new access token");
    for wait_ms in SHARED_REFRESH_WAITS_MS {
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        if !credentials::has_field("access_token")? {
            continue;
        }
        let response = send(make, AuthMode::OAuth)?;
        if response.status != 401 {
            info!("using the access token another data source sharing the credential refreshed");
            return Ok(response);
        }
    }
    Err(ConnectorError::AuthFailed(format!(
        "{why}; no data source sharing the credential saved a new access token either: \
         reconnect the credential"
    )))
}

/// Exchanges the refresh token for a new access token (and a new, single-use
/// refresh token) and stores both in the credential, the refresh token first.
fn refresh_access_token(base_url: &str) -> Result<Refresh, ConnectorError> {
    let refresh_token = credentials::placeholder("refresh_token")?;
    let client_id = credentials::placeholder("client_id")?;
    let response = Request::post(format!("{base_url}/oauth/token"))
        .header("accept", "application/json")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", &client_id),
        ])
        .send()?;
    match response.status {
        200..=299 => {}
        401 => {
            return Err(ConnectorError::AuthFailed(format!(
                "refreshing the access token failed: {}",
                platform_message(response.status, &response.body)
            )));
        }
        400 if platform_error_code(&response.body).as_deref() == Some("invalid_grant") => {
            return Ok(Refresh::Refused(platform_message(
                response.status,
                &response.body,
            )));
        }
        status => {
            return Err(error_for_status(
                status,
                response.header("retry-after"),
                &response.body,
            ));
        }
    }
    let tokens: TokenAnswer = response.json()?;
    // The refresh token is single use: store the new one before anything
    // else, with the access token in the same version.
    let mut fields = vec![("access_token", tokens.access_token.as_str())];
    if let Some(new_refresh_token) = &tokens.refresh_token {
        fields.push(("refresh_token", new_refresh_token.as_str()));
    }
    credentials::update(&fields)?;
    info!("refreshed the AdSample access token");
    Ok(Refresh::Saved)
}
