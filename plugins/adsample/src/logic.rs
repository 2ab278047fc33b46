//! The pure parts of the AdSample connector: dates, the cursor, choosing the
//! authentication mode, mapping the platform's error answers, and turning a
//! page of rows into JSON Lines.
//!
//! Nothing here calls the host, so `cargo test --target x86_64-unknown-linux-gnu
//! -p adsample --lib` runs these tests on the build machine.

use intake_plugin_sdk::{ConnectorError, RateLimit};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `since` used when neither the cursor nor the config gives one.
pub const DEFAULT_SINCE: &str = "2026-11-01";
/// The page size used when the config does not give one.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page size the platform accepts.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The page size a `page_size` setting asks for (the default if unset),
/// refused outside 1 to [`MAX_PAGE_SIZE`].
pub fn check_page_size(setting: Option<u32>) -> Result<u32, ConnectorError> {
    let page_size = setting.unwrap_or(DEFAULT_PAGE_SIZE);
    if (1..=MAX_PAGE_SIZE).contains(&page_size) {
        Ok(page_size)
    } else {
        Err(ConnectorError::InvalidConfig(format!(
            "the setting `page_size` must be from 1 to {MAX_PAGE_SIZE}, not {page_size}"
        )))
    }
}

/// Where a run resumes: the first date to fetch and, within a run, the
/// platform's token for the next page. Stored by the host as JSON:
/// `{"since":"YYYY-MM-DD","page_token":"..."|null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// First date to fetch, `YYYY-MM-DD`, inclusive.
    pub since: String,
    /// The `next_page_token` of the previous page, if the run is mid-way.
    pub page_token: Option<String>,
}

impl Cursor {
    /// The cursor to start from: the stored one, or `since` from the config.
    pub fn resume(stored: Option<&str>, config_since: &str) -> Result<Cursor, ConnectorError> {
        let cursor = match stored {
            None => Cursor {
                since: config_since.to_owned(),
                page_token: None,
            },
            Some(text) => serde_json::from_str::<Cursor>(text).map_err(|_| {
                ConnectorError::Other(format!(
                    "the stored cursor is not an AdSample cursor: {text}"
                ))
            })?,
        };
        if !is_date(&cursor.since) {
            let message = format!("`since` must be a date YYYY-MM-DD, not `{}`", cursor.since);
            return Err(if stored.is_some() {
                ConnectorError::Other(format!("the stored cursor is invalid: {message}"))
            } else {
                ConnectorError::InvalidConfig(message)
            });
        }
        Ok(cursor)
    }

    /// The cursor as the JSON text the host stores.
    pub fn to_json(&self) -> Result<String, ConnectorError> {
        serde_json::to_string(self)
            .map_err(|e| ConnectorError::Other(format!("cannot encode the cursor: {e}")))
    }
}

/// Whether `text` is a valid calendar date `YYYY-MM-DD`.
pub fn is_date(text: &str) -> bool {
    parse_date(text).is_some()
}

fn parse_date(text: &str) -> Option<(u32, u32, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((year, month, day))
}

fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The day after the date `YYYY-MM-DD`, or `None` if `date` is not a valid
/// date (or is 9999-12-31).
pub fn next_day(date: &str) -> Option<String> {
    let (mut year, mut month, mut day) = parse_date(date)?;
    day += 1;
    if day > days_in_month(year, month) {
        day = 1;
        month += 1;
        if month > 12 {
            month = 1;
            year += 1;
            if year > 9999 {
                return None;
            }
        }
    }
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

/// How requests to the platform authenticate, chosen from the credential's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `authorization: Bearer {{intake:access_token}}`; `can_refresh` when the
    /// credential also has `refresh_token` and `client_id`.
    Bearer {
        /// Whether a 401 may be answered by refreshing the access token once.
        can_refresh: bool,
    },
    /// `authorization: Basic {{intake:basic:username:password}}`.
    Basic,
    /// No access token yet: refresh first, then use bearer.
    OAuth,
}

/// Chooses the authentication mode from the names of the credential's fields.
pub fn auth_mode(fields: &[String]) -> Result<AuthMode, ConnectorError> {
    let has = |name: &str| fields.iter().any(|field| field == name);
    let can_refresh = has("refresh_token") && has("client_id");
    if has("access_token") {
        Ok(AuthMode::Bearer { can_refresh })
    } else if has("username") && has("password") {
        Ok(AuthMode::Basic)
    } else if can_refresh {
        Ok(AuthMode::OAuth)
    } else {
        Err(ConnectorError::AuthFailed(
            "credential has neither access_token nor username/password nor refresh_token/client_id"
                .into(),
        ))
    }
}

/// The platform's error body: `{"error": "...", "message": "..."}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

/// The `error` code of the platform's error body, if it has one.
pub fn platform_error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body).ok()?.error
}

/// The platform's message for an error answer, for the error text.
pub fn platform_message(status: u16, body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (code, message) = match parsed {
        Some(ErrorBody { error, message }) => (error, message),
        None => (None, None),
    };
    match (code, message) {
        (Some(code), Some(message)) => format!("AdSample answered {status} {code}: {message}"),
        (Some(code), None) => format!("AdSample answered {status} {code}"),
        (None, Some(message)) => format!("AdSample answered {status}: {message}"),
        (None, None) => format!("AdSample answered {status}"),
    }
}

/// Parses a `retry-after` header given in seconds into milliseconds.
pub fn retry_after_ms(header: Option<&str>) -> Option<u64> {
    let value = header?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let seconds = value.parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).ceil() as u64)
}

/// The connector error for a non-2xx answer of the platform.
pub fn error_for_status(status: u16, retry_after: Option<&str>, body: &[u8]) -> ConnectorError {
    let message = platform_message(status, body);
    match status {
        401 => ConnectorError::AuthFailed(message),
        403 | 404 => ConnectorError::InvalidConfig(message),
        429 => ConnectorError::RateLimited(RateLimit {
            retry_after_ms: retry_after_ms(retry_after),
            message,
        }),
        500..=599 => ConnectorError::Transient(message),
        _ => ConnectorError::Other(message),
    }
}

/// One page of `campaign-stats` as the platform answers it. Rows are kept as
/// received.
#[derive(Debug, Deserialize)]
pub struct StatsPage {
    /// The rows, as raw JSON.
    pub data: Vec<Box<RawValue>>,
    /// The token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// The one field of a row the connector reads.
#[derive(Debug, Deserialize)]
struct RowDate<'a> {
    #[serde(borrow)]
    date: std::borrow::Cow<'a, str>,
}

/// What a page of rows becomes.
#[derive(Debug, PartialEq, Eq)]
pub struct PageOutput {
    /// The rows as JSON Lines.
    pub records: Vec<u8>,
    /// How many rows.
    pub count: usize,
    /// The cursor after this page.
    pub cursor: Cursor,
    /// Whether another page follows.
    pub more: bool,
}

/// Turns a page of rows into JSON Lines and the cursor after it.
///
/// With a `next_page_token`, the cursor keeps `since` and carries the token.
/// On the last page, `since` moves to the day after the latest date seen (or
/// stays if there were no rows) and the token is cleared.
pub fn process_page(since: &str, page: &StatsPage) -> Result<PageOutput, ConnectorError> {
    let mut records = Vec::new();
    let mut max_date: Option<String> = None;
    for (index, row) in page.data.iter().enumerate() {
        let text = row.get();
        if !text.starts_with('{') {
            return Err(ConnectorError::Other(format!(
                "AdSample sent row {index} that is not a JSON object"
            )));
        }
        let RowDate { date } = serde_json::from_str(text).map_err(|_| {
            ConnectorError::Other(format!("AdSample sent row {index} without a `date` string"))
        })?;
        if !is_date(&date) {
            return Err(ConnectorError::Other(format!(
                "AdSample sent row {index} with an invalid date `{date}`"
            )));
        }
        if max_date.as_deref().is_none_or(|max| *date > *max) {
            max_date = Some(date.into_owned());
        }
        if text.contains(['\n', '\r']) {
            // Keep one record per line: re-encode compactly.
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                ConnectorError::Other(format!("AdSample sent row {index} that is not JSON: {e}"))
            })?;
            serde_json::to_writer(&mut records, &value)
                .map_err(|e| ConnectorError::Other(format!("cannot encode row {index}: {e}")))?;
        } else {
            records.extend_from_slice(text.as_bytes());
        }
        records.push(b'\n');
    }
    let (cursor, more) = match &page.next_page_token {
        Some(token) => (
            Cursor {
                since: since.to_owned(),
                page_token: Some(token.clone()),
            },
            true,
        ),
        None => {
            let since = match &max_date {
                Some(max) => next_day(max).ok_or_else(|| {
                    ConnectorError::Other(format!("no day after the latest date `{max}`"))
                })?,
                None => since.to_owned(),
            };
            (
                Cursor {
                    since,
                    page_token: None,
                },
                false,
            )
        }
    };
    Ok(PageOutput {
        records,
        count: page.data.len(),
        cursor,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_out_of_range_are_invalid_config() {
        assert_eq!(check_page_size(None).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(check_page_size(Some(500)).ok(), Some(500));
        for bad in [0, MAX_PAGE_SIZE + 1] {
            assert!(matches!(
                check_page_size(Some(bad)),
                Err(ConnectorError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn next_day_rolls_over() {
        assert_eq!(next_day("2026-11-01").as_deref(), Some("2026-11-02"));
        assert_eq!(next_day("2026-11-30").as_deref(), Some("2026-12-01"));
        assert_eq!(next_day("2026-12-31").as_deref(), Some("2027-01-01"));
        assert_eq!(next_day("2024-02-28").as_deref(), Some("2024-02-29"));
        assert_eq!(next_day("2024-02-29").as_deref(), Some("2024-03-01"));
        assert_eq!(next_day("2026-02-28").as_deref(), Some("2026-03-01"));
        assert_eq!(next_day("1900-02-28").as_deref(), Some("1900-03-01"));
        assert_eq!(next_day("2000-02-28").as_deref(), Some("2000-02-29"));
        assert_eq!(next_day("2026-04-30").as_deref(), Some("2026-05-01"));
        assert_eq!(next_day("9999-12-31"), None);
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "x",
            "2026-11-31",
            "2026/11/01",
            "+026-11-01",
        ] {
            assert_eq!(next_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursor_parse_and_print() {
        let c = Cursor::resume(None, "2026-11-05").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c,
            Cursor {
                since: "2026-11-05".into(),
                page_token: None
            }
        );
        assert_eq!(
            c.to_json().ok().as_deref(),
            Some(r#"{"since":"2026-11-05","page_token":null}"#)
        );

        let stored = r#"{"since":"2026-11-02","page_token":"abc"}"#;
        let c = Cursor::resume(Some(stored), "2026-11-05").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c,
            Cursor {
                since: "2026-11-02".into(),
                page_token: Some("abc".into())
            }
        );
        assert_eq!(c.to_json().ok().as_deref(), Some(stored));

        assert!(matches!(
            Cursor::resume(Some("nope"), "2026-11-05"),
            Err(ConnectorError::Other(_))
        ));
        assert!(matches!(
            Cursor::resume(Some(r#"{"since":"11/02","page_token":null}"#), "2026-11-05"),
            Err(ConnectorError::Other(_))
        ));
        assert!(matches!(
            Cursor::resume(None, "yesterday"),
            Err(ConnectorError::InvalidConfig(_))
        ));
    }

    #[test]
    fn chooses_auth_mode() {
        let f = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            auth_mode(&f(&["access_token"])).ok(),
            Some(AuthMode::Bearer { can_refresh: false })
        );
        assert_eq!(
            auth_mode(&f(&["access_token", "refresh_token", "client_id"])).ok(),
            Some(AuthMode::Bearer { can_refresh: true })
        );
        assert_eq!(
            auth_mode(&f(&["username", "password"])).ok(),
            Some(AuthMode::Basic)
        );
        assert_eq!(
            auth_mode(&f(&["refresh_token", "client_id"])).ok(),
            Some(AuthMode::OAuth)
        );
        assert!(matches!(
            auth_mode(&f(&["username"])),
            Err(ConnectorError::AuthFailed(_))
        ));
        assert!(matches!(
            auth_mode(&f(&["refresh_token"])),
            Err(ConnectorError::AuthFailed(_))
        ));
    }

    #[test]
    fn maps_statuses() {
        let body = br#"{"error":"invalid_token","message":"token revoked"}"#;
        match error_for_status(401, None, body) {
            ConnectorError::AuthFailed(m) => {
                assert_eq!(m, "AdSample answered 401 invalid_token: token revoked")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error_for_status(403, None, b"{}"),
            ConnectorError::InvalidConfig(_)
        ));
        assert!(matches!(
            error_for_status(404, None, b""),
            ConnectorError::InvalidConfig(_)
        ));
        assert!(matches!(
            error_for_status(400, None, b""),
            ConnectorError::Other(_)
        ));
        assert!(matches!(
            error_for_status(500, None, b""),
            ConnectorError::Transient(_)
        ));
        assert!(matches!(
            error_for_status(503, None, b"<html>"),
            ConnectorError::Transient(_)
        ));
        match error_for_status(
            429,
            Some("2"),
            br#"{"error":"rate_limited","message":"slow down"}"#,
        ) {
            ConnectorError::RateLimited(RateLimit {
                retry_after_ms,
                message,
            }) => {
                assert_eq!(retry_after_ms, Some(2000));
                assert!(message.contains("slow down"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(retry_after_ms(Some(" 0.5 ")), Some(500));
        assert_eq!(retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after_ms(None), None);
        assert_eq!(
            platform_error_code(br#"{"error":"invalid_grant","message":"used"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(platform_error_code(b"oops"), None);
    }

    fn page(json: &str) -> StatsPage {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn processes_pages() {
        let p = page(
            r#"{"data": [
                {"account_id": "a", "date": "2026-11-01", "campaign_id": "c1", "impressions": 1},
                {"account_id": "a", "date": "2026-11-02", "campaign_id": "c1", "impressions": 2}
            ], "next_page_token": "t2"}"#,
        );
        let out = process_page("2026-11-01", &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.count, 2);
        assert!(out.more);
        assert_eq!(
            out.cursor,
            Cursor {
                since: "2026-11-01".into(),
                page_token: Some("t2".into())
            }
        );
        let text = String::from_utf8(out.records).unwrap_or_default();
        assert_eq!(
            text,
            "{\"account_id\": \"a\", \"date\": \"2026-11-01\", \"campaign_id\": \"c1\", \"impressions\": 1}\n\
             {\"account_id\": \"a\", \"date\": \"2026-11-02\", \"campaign_id\": \"c1\", \"impressions\": 2}\n"
        );

        let last = page(
            r#"{"data": [{"date": "2026-11-30", "x": 1}, {"date": "2026-11-29"}], "next_page_token": null}"#,
        );
        let out = process_page("2026-11-01", &last).unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.more);
        assert_eq!(
            out.cursor,
            Cursor {
                since: "2026-12-01".into(),
                page_token: None
            }
        );

        let empty = page(r#"{"data": [], "next_page_token": null}"#);
        let out = process_page("2026-12-01", &empty).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.count, out.more, out.records.len()), (0, false, 0));
        assert_eq!(
            out.cursor,
            Cursor {
                since: "2026-12-01".into(),
                page_token: None
            }
        );

        let multiline =
            page("{\"data\": [{\n\"date\": \"2026-11-03\"\n}], \"next_page_token\": null}");
        let out = process_page("2026-11-01", &multiline).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.records, b"{\"date\":\"2026-11-03\"}\n");

        assert!(
            process_page(
                "2026-11-01",
                &page(r#"{"data": [1], "next_page_token": null}"#)
            )
            .is_err()
        );
        assert!(
            process_page(
                "2026-11-01",
                &page(r#"{"data": [{"x": 1}], "next_page_token": null}"#)
            )
            .is_err()
        );
        assert!(
            process_page(
                "2026-11-01",
                &page(r#"{"data": [{"date": "soon"}], "next_page_token": null}"#)
            )
            .is_err()
        );
    }
}
