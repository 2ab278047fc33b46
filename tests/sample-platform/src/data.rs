//! Calendar dates and the deterministic campaign statistics of the sample platform.
//!
//! Every row is a pure function of the account, the campaign and the date (a hash of the
//! three), so the API, [`crate::SamplePlatform::expected_rows`] and any test agree on the
//! values without storing them. Rows of an account are ordered by `(date, campaign_id)`
//! and addressed by their index in that order, which is what pagination counts in.

use std::fmt;

use serde_json::{Value, json};

/// A calendar day (proleptic Gregorian), formatted and parsed as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    /// The date `year-month-day`, or `None` if there is no such day or the year is
    /// outside 1..=9999.
    pub const fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 {
            return None;
        }
        if day > days_in_month(year, month) {
            return None;
        }
        Some(Date {
            days: days_from_civil(year as i64, month as i64, day as i64),
        })
    }

    /// Parses a strict `YYYY-MM-DD` (four-digit year, two-digit month and day).
    pub fn parse(text: &str) -> Option<Date> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = text.get(range)?;
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let year = i32::try_from(digits(0..4)?).ok()?;
        Date::from_ymd(year, digits(5..7)?, digits(8..10)?)
    }

    /// The date `n` days later (`n` may be negative).
    pub const fn plus_days(self, n: i64) -> Date {
        Date {
            days: self.days + n,
        }
    }

    /// The number of days from `earlier` to `self` (negative if `self` is before).
    pub const fn days_since(self, earlier: Date) -> i64 {
        self.days - earlier.days
    }

    /// `(year, month, day)`.
    pub const fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.days)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.ymd();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

const fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

const fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`.
const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = if month <= 2 {
        yoe + era * 400 + 1
    } else {
        yoe + era * 400
    };
    (year, month, day)
}

/// FNV-1a over the parts (each followed by a separator), finished with a splitmix64
/// mix so that neighbouring inputs give unrelated outputs.
pub(crate) fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rows of one account: its campaigns over a run of days.
#[derive(Debug, Clone)]
pub(crate) struct AccountRows<'a> {
    pub account_id: &'a str,
    pub label: &'a str,
    /// Campaign numbers, ordered so that their ids sort (`c1`, `c10`, `c2`, ...).
    pub campaigns: Vec<u32>,
    /// The first day returned (after applying `since`).
    pub from: Date,
    /// How many days from `from` are returned.
    pub days: u64,
}

impl<'a> AccountRows<'a> {
    /// Rows of `account_id` with `campaigns` campaigns, for the days `first_day` up to
    /// `first_day + total_days - 1`, starting at `since` if that is later.
    pub fn new(
        account_id: &'a str,
        label: &'a str,
        campaigns: u32,
        first_day: Date,
        total_days: u32,
        since: Option<Date>,
    ) -> AccountRows<'a> {
        let mut numbers: Vec<u32> = (1..=campaigns).collect();
        numbers.sort_by_key(|n| campaign_id(account_id, *n));
        let skip = since.map_or(0, |s| s.days_since(first_day).max(0));
        let days = i64::from(total_days).saturating_sub(skip).max(0);
        AccountRows {
            account_id,
            label,
            campaigns: numbers,
            from: first_day.plus_days(skip),
            days: u64::try_from(days).unwrap_or(0),
        }
    }

    /// The number of rows.
    pub fn len(&self) -> u64 {
        self.days * self.campaigns.len() as u64
    }

    /// The row at `index` in `(date, campaign_id)` order, if there is one.
    pub fn row(&self, index: u64) -> Option<Value> {
        if index >= self.len() {
            return None;
        }
        let per_day = self.campaigns.len() as u64;
        let day = self.from.plus_days(i64::try_from(index / per_day).ok()?);
        let number = *self.campaigns.get(usize::try_from(index % per_day).ok()?)?;
        Some(make_row(self.account_id, self.label, number, day))
    }

    /// The rows from `offset`, at most `limit` of them.
    pub fn page(&self, offset: u64, limit: u64) -> Vec<Value> {
        let end = offset.saturating_add(limit).min(self.len());
        (offset..end).filter_map(|i| self.row(i)).collect()
    }
}

fn campaign_id(account_id: &str, number: u32) -> String {
    format!("{account_id}-c{number}")
}

/// One row of campaign statistics; the numbers are derived from a hash of account,
/// campaign and date.
fn make_row(account_id: &str, label: &str, number: u32, date: Date) -> Value {
    let campaign = campaign_id(account_id, number);
    let date = date.to_string();
    let h = hash(&[account_id, &campaign, &date]);
    let impressions = 1_000 + h % 49_001;
    // Click-through rate between 0.5% and 5%, cost per click between 0.10 and 2.00.
    let ctr_basis_points = 50 + (h >> 20) % 451;
    let cpc_micros = 100_000 + ((h >> 40) % 191) * 10_000;
    let clicks = impressions * ctr_basis_points / 10_000;
    json!({
        "account_id": account_id,
        "date": date,
        "campaign_id": campaign,
        "campaign_name": format!("{label} Campaign {number}"),
        "impressions": impressions,
        "clicks": clicks,
        "spend_micros": clicks * cpc_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let d = Date::parse("2026-11-01").expect("valid");
        assert_eq!(d.to_string(), "2026-11-01");
        assert_eq!(d.plus_days(29).to_string(), "2026-11-30");
        assert_eq!(d.plus_days(30).to_string(), "2026-12-01");
        assert_eq!(d.plus_days(61).to_string(), "2027-01-01");
        assert_eq!(
            Date::parse("2024-02-29")
                .map(|d| d.plus_days(1).to_string())
                .as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(Date::parse("1970-01-01"), Date::from_ymd(1970, 1, 1));
    }

    #[test]
    fn bad_dates_are_rejected() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-11-31",
            "2026-1-01",
            "26-11-01",
            "2026-11-0a",
            "",
            "2026-11-01x",
            "+026-11-01",
            "2026-00-10",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_are_ordered_and_deterministic() {
        let first = Date::parse("2026-11-01").expect("valid");
        let rows = AccountRows::new("x", "X", 11, first, 2, None);
        assert_eq!(rows.len(), 22);
        let all = rows.page(0, 100);
        let keys: Vec<(String, String)> = all
            .iter()
            .map(|r| (r["date"].to_string(), r["campaign_id"].to_string()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(all, rows.page(0, 100));
        let since = AccountRows::new("x", "X", 11, first, 2, first.plus_days(1).into());
        assert_eq!(since.page(0, 100), all[11..]);
        assert!(
            AccountRows::new("x", "X", 11, first, 2, first.plus_days(5).into())
                .page(0, 9)
                .is_empty()
        );
    }
}
