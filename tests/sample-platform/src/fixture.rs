//! The fixture a sample platform starts from: who may sign in, with which credential,
//! which ad accounts each principal sees, how many days of data there are and the rate
//! limit. [`Fixture::demo`] is the table in `docs/sample-platform.md`; its
//! [`Display`](std::fmt::Display) form is what the binary prints at start.

use std::fmt;

use crate::data::Date;

/// Everything the sample platform serves, fixed at start (the [`crate::SamplePlatform`]
/// methods change some of it afterwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// The principals (users or agencies) and their credentials and accounts.
    pub principals: Vec<Principal>,
    /// The first day every account has data for.
    pub first_day: Date,
    /// How many days of data every account has, from `first_day`.
    pub days: u32,
    /// The per-principal token bucket.
    pub rate_limit: RateLimit,
}

/// Someone who can authenticate, with the accounts they may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name, as `GET /v1/me` reports it (e.g. `acme`).
    pub name: String,
    /// How the principal authenticates.
    pub credential: Credential,
    /// The ad accounts the principal may read.
    pub accounts: Vec<Account>,
}

/// How a principal authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `authorization: Bearer TOKEN`.
    Bearer {
        /// The static token.
        token: String,
    },
    /// `authorization: Basic base64(username:password)`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth client: `POST /oauth/token` trades the refresh token for an access
    /// token (used as a bearer token) and a new, single-use refresh token.
    OAuth {
        /// The OAuth client id sent as `client_id`.
        client_id: String,
        /// The first refresh token.
        refresh_token: String,
    },
}

/// An ad account with its campaigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id used in URLs and rows (e.g. `acme-us`).
    pub id: String,
    /// The human name campaign names start with (e.g. `Acme US` gives
    /// `Acme US Campaign 1`).
    pub label: String,
    /// The number of campaigns, numbered from 1 (`acme-us-c1`, ...).
    pub campaigns: u32,
}

/// A token bucket: `per_second` requests per second on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second; 0 turns rate limiting off.
    pub per_second: u32,
    /// The bucket size (at least 1 is used).
    pub burst: u32,
}

/// The first day of the demo data, 2026-11-01.
const DEMO_FIRST_DAY: Date = match Date::from_ymd(2026, 11, 1) {
    Some(day) => day,
    None => panic!("2026-11-01 is a date"),
};

impl Fixture {
    /// The built-in fixture of `docs/sample-platform.md`: `acme` (bearer, accounts
    /// `acme-us` and `acme-eu`), `globex` (bearer), `initech` (basic auth) and
    /// `umbrella` (OAuth), 30 days from 2026-11-01, 50 requests per second with bursts
    /// of 100.
    pub fn demo() -> Fixture {
        let account = |id: &str, label: &str, campaigns| Account {
            id: id.to_owned(),
            label: label.to_owned(),
            campaigns,
        };
        Fixture {
            principals: vec![
                Principal {
                    name: "acme".to_owned(),
                    credential: Credential::Bearer {
                        token: "adsample-token-acme".to_owned(),
                    },
                    accounts: vec![
                        account("acme-us", "Acme US", 3),
                        account("acme-eu", "Acme EU", 2),
                    ],
                },
                Principal {
                    name: "globex".to_owned(),
                    credential: Credential::Bearer {
                        token: "adsample-token-globex".to_owned(),
                    },
                    accounts: vec![account("globex", "Globex", 4)],
                },
                Principal {
                    name: "initech".to_owned(),
                    credential: Credential::Basic {
                        username: "initech".to_owned(),
                        password: "initech-secret".to_owned(),
                    },
                    accounts: vec![account("initech", "Initech", 2)],
                },
                Principal {
                    name: "umbrella".to_owned(),
                    credential: Credential::OAuth {
                        client_id: "intake-demo".to_owned(),
                        refresh_token: "adsample-refresh-umbrella-0".to_owned(),
                    },
                    accounts: vec![account("umbrella", "Umbrella", 2)],
                },
            ],
            first_day: DEMO_FIRST_DAY,
            days: 30,
            rate_limit: RateLimit {
                per_second: 50,
                burst: 100,
            },
        }
    }

    /// The last day with data, or `None` if `days` is 0.
    pub fn last_day(&self) -> Option<Date> {
        (self.days > 0).then(|| self.first_day.plus_days(i64::from(self.days) - 1))
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer { token } => write!(f, "bearer {token}"),
            Credential::Basic { username, password } => write!(f, "basic {username} / {password}"),
            Credential::OAuth {
                client_id,
                refresh_token,
            } => write!(f, "oauth client {client_id}, refresh token {refresh_token}"),
        }
    }
}

/// A plain-text table of the principals, their credentials and accounts, then the data
/// range and rate limit.
impl fmt::Display for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 3]> = self
            .principals
            .iter()
            .map(|p| {
                let accounts = p
                    .accounts
                    .iter()
                    .map(|a| format!("{} ({})", a.id, a.campaigns))
                    .collect::<Vec<_>>()
                    .join(", ");
                [p.name.clone(), p.credential.to_string(), accounts]
            })
            .collect();
        let header = ["principal", "credential", "accounts (campaigns)"];
        let width = |i: usize| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let (w0, w1) = (width(0), width(1));
        writeln!(f, "{:w0$}  {:w1$}  {}", header[0], header[1], header[2])?;
        for [name, credential, accounts] in &rows {
            writeln!(f, "{name:w0$}  {credential:w1$}  {accounts}")?;
        }
        match self.last_day() {
            Some(last) => writeln!(
                f,
                "data: {} to {} ({} days)",
                self.first_day, last, self.days
            )?,
            None => writeln!(f, "data: none (0 days)")?,
        }
        if self.rate_limit.per_second == 0 {
            write!(f, "rate limit: off")
        } else {
            write!(
                f,
                "rate limit: {} requests per second per principal, bursts of {}",
                self.rate_limit.per_second, self.rate_limit.burst
            )
        }
    }
}
