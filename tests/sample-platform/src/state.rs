//! The mutable state of a running sample platform, shared (behind one mutex) by the HTTP
//! handlers and the [`crate::SamplePlatform`] control methods: credentials, rate-limit
//! buckets, accounts and the number of days of data, queued injected failures and the
//! request log. Also the opaque page tokens of the statistics endpoint.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::auth::Credentials;
use crate::data::{AccountRows, Date, hash};
use crate::fixture::{Account, Fixture};
use crate::ratelimit::RateLimiter;

/// One request the platform received, as [`crate::SamplePlatform::requests`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path and query as sent, e.g. `/v1/accounts/acme-us/campaign-stats?page_size=10`.
    pub path: String,
    /// The `authorization` header value exactly as received (lossily decoded as UTF-8).
    pub authorization: Option<String>,
    /// The status code answered.
    pub status: u16,
    /// The request body (lossily decoded as UTF-8), for `POST` requests.
    pub body: Option<String>,
}

/// The state behind the mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub credentials: Credentials,
    pub limiter: RateLimiter,
    /// Account id -> account.
    pub accounts: BTreeMap<String, Account>,
    /// Principal -> the ids of its accounts, sorted.
    pub access: HashMap<String, Vec<String>>,
    pub first_day: Date,
    pub days: u32,
    /// Statuses the next `/v1/*` requests answer, front first.
    pub failures: VecDeque<u16>,
    /// How long every request waits before it is answered (tests slow the platform
    /// down to catch a run in flight).
    pub delay: Duration,
    /// Whether a 401 quotes the `authorization` header it got (as careless real APIs
    /// do) and `TRACE` echoes the request, so that tests can check a secret echoed
    /// back goes no further.
    pub echo_authorization: bool,
    /// Bytes of whitespace appended to every answer's body (valid JSON all the same),
    /// so that tests can make responses larger than a size limit.
    pub padding: usize,
    /// Requests being answered now, and the most there have been at once
    /// (tests check concurrency limits with it).
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub log: Vec<RequestRecord>,
}

/// The state as handlers and control methods share it.
pub(crate) type Shared = Arc<Mutex<State>>;

/// Locks the state; a panic while it was held (there should be none) does not make it
/// unusable.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A position in an account's rows, carried by a page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub offset: u64,
    pub since: Option<Date>,
}

impl State {
    pub fn new(fixture: &Fixture) -> State {
        let mut accounts = BTreeMap::new();
        let mut access: HashMap<String, Vec<String>> = HashMap::new();
        for principal in &fixture.principals {
            let ids = access.entry(principal.name.clone()).or_default();
            for account in &principal.accounts {
                ids.push(account.id.clone());
                accounts
                    .entry(account.id.clone())
                    .or_insert_with(|| account.clone());
            }
            ids.sort();
            ids.dedup();
        }
        State {
            credentials: Credentials::new(fixture),
            limiter: RateLimiter::new(fixture.rate_limit),
            accounts,
            access,
            first_day: fixture.first_day,
            days: fixture.days,
            failures: VecDeque::new(),
            delay: Duration::ZERO,
            echo_authorization: false,
            padding: 0,
            in_flight: 0,
            max_in_flight: 0,
            log: Vec::new(),
        }
    }

    /// The ids of the accounts `principal` may read, sorted.
    pub fn accounts_of(&self, principal: &str) -> &[String] {
        self.access.get(principal).map_or(&[], Vec::as_slice)
    }

    /// Whether `principal` may read account `account_id`.
    pub fn may_read(&self, principal: &str, account_id: &str) -> bool {
        self.accounts_of(principal)
            .iter()
            .any(|id| id == account_id)
    }

    /// The rows of `account_id` from `since`, or `None` for an unknown account.
    pub fn rows(&self, account_id: &str, since: Option<Date>) -> Option<AccountRows<'_>> {
        let account = self.accounts.get(account_id)?;
        Some(AccountRows::new(
            &account.id,
            &account.label,
            account.campaigns,
            self.first_day,
            self.days,
            since,
        ))
    }

    /// Every row of `account_id` from `since` (all of them if `None`).
    pub fn all_rows(&self, account_id: &str, since: Option<Date>) -> Vec<Value> {
        self.rows(account_id, since)
            .map(|rows| rows.page(0, rows.len()))
            .unwrap_or_default()
    }
}

/// The check value that makes a page token tamper-evident.
fn token_check(account_id: &str, offset: &str, since: &str) -> String {
    format!(
        "{:016x}",
        hash(&["adsample-page-token", account_id, offset, since])
    )
}

/// The opaque `next_page_token` for `cursor` in account `account_id`.
pub(crate) fn encode_page_token(account_id: &str, cursor: Cursor) -> String {
    let offset = cursor.offset.to_string();
    let since = cursor.since.map(|d| d.to_string()).unwrap_or_default();
    let check = token_check(account_id, &offset, &since);
    URL_SAFE_NO_PAD.encode(format!("{offset}.{since}.{check}"))
}

/// The cursor in a page token, or `None` if the token was not made by
/// [`encode_page_token`] for this account.
pub(crate) fn decode_page_token(account_id: &str, token: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('.');
    let (offset, since, check) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || check != token_check(account_id, offset, since) {
        return None;
    }
    let since = match since {
        "" => None,
        date => Some(Date::parse(date)?),
    };
    Some(Cursor {
        offset: offset.parse().ok()?,
        since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_detect_tampering() {
        let cursor = Cursor {
            offset: 42,
            since: Date::parse("2026-11-03"),
        };
        let token = encode_page_token("acme-us", cursor);
        assert_eq!(decode_page_token("acme-us", &token), Some(cursor));
        assert_eq!(decode_page_token("acme-eu", &token), None);
        let no_since = Cursor {
            offset: 0,
            since: None,
        };
        assert_eq!(
            decode_page_token("x", &encode_page_token("x", no_since)),
            Some(no_since)
        );
        let mut tampered = token.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(decode_page_token("acme-us", &tampered), None);
        assert_eq!(decode_page_token("acme-us", "not base64!"), None);
        assert_eq!(decode_page_token("acme-us", ""), None);
    }

    #[test]
    fn access_is_sorted() {
        let state = State::new(&Fixture::demo());
        assert_eq!(state.accounts_of("acme"), ["acme-eu", "acme-us"]);
        assert!(state.may_read("globex", "globex"));
        assert!(!state.may_read("globex", "acme-us"));
        assert!(state.accounts_of("nobody").is_empty());
        assert_eq!(state.all_rows("acme-us", None).len(), 90);
        assert!(state.all_rows("nope", None).is_empty());
    }
}
