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

mod logic;

use intake_plugin_sdk::credentials::{self, basic_auth_placeholder};
use intake_plugin_sdk::http::{Request, Response, url::encode_path_segment};
use intake_plugin_sdk::{
    Config, ConfigField, Connector, ConnectorError, CredentialField, FetchRequest, Page, Spec,
    config, info,
};
use serde::Deserialize;

use crate::logic::{
    AuthMode, Cursor, DEFAULT_PAGE_SIZE, DEFAULT_SINCE, MAX_PAGE_SIZE, StatsPage, auth_mode,
    error_for_status, platform_error_code, platform_message, process_page,
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
        let config_since = config::get_or(&request.config, "since", DEFAULT_SINCE);
        let page_size =
            config::parse::<u32>(&request.config, "page_size")?.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ConnectorError::InvalidConfig(format!(
                "the setting `page_size` must be from 1 to {MAX_PAGE_SIZE}, not {page_size}"
            )));
        }
        let cursor = Cursor::resume(request.cursor.as_deref(), config_since)?;

        let url = format!(
            "{}/v1/accounts/{}/campaign-stats",
            settings.base_url,
            encode_path_segment(&settings.account_id)
        );
        let page_size_text = page_size.to_string();
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

/// The settings every call needs.
#[derive(Debug)]
struct Settings {
    /// `scheme://host[:port]`, without a trailing `/`.
    base_url: String,
    account_id: String,
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
        Ok(Settings {
            base_url: base_url.to_owned(),
            account_id: account_id.to_owned(),
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

/// Sends the request `make` builds with the credential's authentication,
/// refreshing the OAuth access token first if there is none yet, or once after
/// a 401 if the credential can be refreshed. Returns the answer of any status.
fn send_authenticated(
    base_url: &str,
    make: impl Fn() -> Request,
) -> Result<Response, ConnectorError> {
    let fields = credentials::fields()?;
    let mode = auth_mode(&fields)?;
    let mut can_refresh = match mode {
        AuthMode::Bearer { can_refresh } => can_refresh,
        AuthMode::Basic => false,
        AuthMode::OAuth => {
            refresh_access_token(base_url)?;
            false
        }
    };
    loop {
        let authorization = match mode {
            AuthMode::Basic => format!("Basic {}", basic_auth_placeholder("username", "password")),
            AuthMode::Bearer { .. } | AuthMode::OAuth => {
                format!("Bearer {}", credentials::placeholder("access_token")?)
            }
        };
        let response = make()
            .header("accept", "application/json")
            .header("authorization", authorization)
            .send()?;
        if response.status == 401 && can_refresh {
            can_refresh = false;
            info!("AdSample rejected the access token; refreshing it");
            refresh_access_token(base_url)?;
            continue;
        }
        return Ok(response);
    }
}

/// Exchanges the refresh token for a new access token (and a new, single-use
/// refresh token) and stores both in the credential, the refresh token first.
fn refresh_access_token(base_url: &str) -> Result<(), ConnectorError> {
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
            return Err(ConnectorError::AuthFailed(format!(
                "the refresh token was rejected (it is single use); reconnect the credential: {}",
                platform_message(response.status, &response.body)
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
    // The refresh token is single use: store the new one before anything else.
    if let Some(new_refresh_token) = &tokens.refresh_token {
        credentials::update("refresh_token", new_refresh_token)?;
    }
    credentials::update("access_token", &tokens.access_token)?;
    info!("refreshed the AdSample access token");
    Ok(())
}
