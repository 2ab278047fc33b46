//! Schedules: when a data source is due.
//!
//! A data source has no schedule (it runs only when asked), an interval
//! (`every = 1h`: due that long after its last run started), or a cron
//! expression in UTC (due once the first occurrence after its last run has
//! passed). A data source that never ran is due at once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::store::Schedule;

/// A cron expression whose next occurrence is further away than this (in
/// days) is refused: it would never, in practice, run its data source.
/// Five years leave room for 29 February.
const NEVER_DAYS: i64 = 5 * 365;

/// Parses `--every DURATION` or `--cron EXPR` into a schedule. Refuses an
/// interval under a second and a cron expression that never fires.
pub fn parse(every: Option<&str>, cron: Option<&str>) -> Result<Option<Schedule>, String> {
    match (every, cron) {
        (Some(_), Some(_)) => Err("give either an interval or a cron expression, not both".into()),
        (Some(e), None) => {
            let d = humantime::parse_duration(e).map_err(|err| {
                format!(
                    "`{}` is not an interval like 15m or 1h: {err}",
                    crate::store::shown(e)
                )
            })?;
            if d < Duration::from_secs(1) {
                return Err("the interval must be at least 1s".into());
            }
            Ok(Some(Schedule::Every(d.as_secs())))
        }
        (None, Some(c)) => {
            let shown = crate::store::shown(c);
            let cron = Cron::from_str(c)
                .map_err(|err| format!("`{shown}` is not a cron expression: {err}"))?;
            // A pattern that never matches (`0 0 30 2 *`: 30 February) parses,
            // and would leave the data source silently never running.
            let now = Utc::now();
            let horizon = now + chrono::Duration::days(NEVER_DAYS);
            match cron.find_next_occurrence(&now, false) {
                Ok(next) if next <= horizon => Ok(Some(Schedule::Cron(c.to_owned()))),
                _ => Err(format!(
                    "the cron expression `{shown}` never fires in the next {} years (a date \
                     that does not exist, such as 30 February?); the data source would never run",
                    NEVER_DAYS / 365
                )),
            }
        }
        (None, None) => Ok(None),
    }
}

/// Whether a data source with `schedule`, whose last run started at
/// `last_ms` (none if never), is due at `now_ms`.
pub fn is_due(schedule: &Schedule, last_ms: Option<u64>, now_ms: u64) -> bool {
    let Some(last) = last_ms else {
        return true;
    };
    match next_after(schedule, last) {
        Some(next) => now_ms >= next,
        None => false,
    }
}

/// When a data source is next due after a run that started at `last_ms`.
pub fn next_after(schedule: &Schedule, last_ms: u64) -> Option<u64> {
    match schedule {
        Schedule::Every(secs) => Some(last_ms.saturating_add(secs.saturating_mul(1000))),
        Schedule::Cron(expr) => {
            let cron = Cron::from_str(expr).ok()?;
            let last = DateTime::<Utc>::from_timestamp_millis(i64::try_from(last_ms).ok()?)?;
            let next = cron.find_next_occurrence(&last, false).ok()?;
            u64::try_from(next.timestamp_millis()).ok()
        }
    }
}

/// A schedule for people: `every 1h` or `cron 0 6 * * *`.
pub fn describe(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Every(secs) => format!(
            "every {}",
            humantime::format_duration(Duration::from_secs(*secs))
        ),
        Schedule::Cron(expr) => format!("cron {expr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn never_run_is_due() {
        assert!(is_due(&Schedule::Every(3600), None, 0));
    }

    #[test]
    fn intervals_count_from_the_last_start() {
        let s = Schedule::Every(3600);
        assert!(!is_due(&s, Some(10 * HOUR), 10 * HOUR + HOUR - 1));
        assert!(is_due(&s, Some(10 * HOUR), 11 * HOUR));
    }

    #[test]
    fn cron_is_due_after_the_next_occurrence() {
        // 2026-12-03T05:30:00Z, daily at 06:00 UTC.
        let last = 1_796_362_200_000;
        let s = Schedule::Cron("0 6 * * *".into());
        assert!(!is_due(&s, Some(last), last + HOUR / 2 - 1));
        assert!(is_due(&s, Some(last), last + HOUR / 2));
    }

    #[test]
    fn parse_refuses_nonsense() {
        assert_eq!(parse(Some("15m"), None), Ok(Some(Schedule::Every(900))));
        assert!(parse(Some("soon"), None).is_err());
        assert!(parse(None, Some("61 * * * *")).is_err());
        assert!(parse(Some("1h"), Some("* * * * *")).is_err());
        assert_eq!(parse(None, None), Ok(None));
    }

    #[test]
    fn parse_refuses_a_cron_that_never_fires() {
        let err = parse(None, Some("0 0 30 2 *")).unwrap_err();
        assert!(err.contains("never fires"), "{err}");
        let err = parse(None, Some("0 0 31 4 *")).unwrap_err();
        assert!(err.contains("never fires"), "{err}");
        // 29 February comes at least every eight years; within five from most dates.
        assert!(parse(None, Some("0 6 * * *")).is_ok());
        assert!(parse(None, Some("0 0 1 1 *")).is_ok());
    }
}
