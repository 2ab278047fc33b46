//! What to do after a failed attempt: retry (after how long) or give up.
//!
//! Transient errors back off exponentially with jitter; a rate limit waits
//! for the platform's retry-after (if that is longer than `retry_max`, the
//! run ends and the data source is not due again before the time the
//! platform gave); authentication failures, invalid
//! config, plugin errors, crashes and limits are not retried: trying again
//! would fail the same way, or, for credentials, get the user locked out.

use std::time::Duration;

use crate::config::SchedulerConfig;
use crate::plugin::RunError;

/// The retry policy of a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per run, at least 1.
    pub max_attempts: u32,
    /// First backoff delay.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl From<&SchedulerConfig> for RetryPolicy {
    fn from(c: &SchedulerConfig) -> Self {
        Self {
            max_attempts: c.max_attempts.max(1),
            base: c.retry_base,
            max: c.retry_max,
        }
    }
}

/// The error kind as shown in run history and metrics.
pub fn kind(err: &RunError) -> &'static str {
    match err {
        RunError::AuthFailed(_) => "auth-failed",
        RunError::RateLimited { .. } => "rate-limited",
        RunError::Transient(_) => "transient",
        RunError::InvalidConfig(_) => "invalid-config",
        RunError::Plugin(_) => "plugin-error",
        RunError::Limit(_) => "limit",
        RunError::Trap(_) => "crashed",
        RunError::NeedsReconnect(_) => "needs-reconnect",
        RunError::NoPlugin(_) => "no-plugin",
        RunError::Cancelled => "cancelled",
        RunError::Busy(_) => "busy",
        _ => "host-error",
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    Retry(Duration),
    /// The platform asked to wait this long, longer than a run waits
    /// (`retry_max`): end the run, and do not start another one for the
    /// data source before then. Retrying sooner would ignore what the
    /// platform said, and platforms ban accounts that do.
    WaitLonger(Duration),
    /// Give up: the error is final, or the attempts are used up.
    GiveUp,
}

impl RetryPolicy {
    /// After attempt number `attempt` (1-based) failed with `err`: whether
    /// and when to try again. `jitter` is a random number in [0, 1).
    pub fn next(&self, attempt: u32, err: &RunError, jitter: f64) -> Next {
        if let RunError::RateLimited {
            retry_after: Some(wait),
            ..
        } = err
            && *wait > self.max
        {
            return Next::WaitLonger(*wait);
        }
        match self.next_delay(attempt, err, jitter) {
            Some(delay) => Next::Retry(delay),
            None => Next::GiveUp,
        }
    }

    /// After attempt number `attempt` (1-based) failed with `err`: the delay
    /// before the next attempt, or `None` to give up. A retry-after longer
    /// than `max` gives up (see [`Next::WaitLonger`]).
    fn next_delay(&self, attempt: u32, err: &RunError, jitter: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let backoff = || {
            let exp = self
                .base
                .saturating_mul(
                    1u32.checked_shl(attempt.saturating_sub(1))
                        .unwrap_or(u32::MAX),
                )
                .min(self.max);
            // "Equal jitter": between half and all of the backoff.
            exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
        };
        match err {
            RunError::Transient(_) => Some(backoff()),
            RunError::RateLimited { retry_after, .. } => match retry_after {
                Some(wait) if *wait > self.max => None,
                Some(wait) => Some(*wait),
                None => Some(backoff()),
            },
            _ => None,
        }
    }
}

/// A random number in [0, 1) for jitter.
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn transient_backs_off_exponentially_with_jitter_and_a_cap() {
        let p = policy();
        let e = RunError::Transient("503".into());
        assert_eq!(p.next_delay(1, &e, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(
            p.next_delay(2, &e, 0.999_999),
            Some(Duration::from_secs(2).mul_f64(0.5 + 0.5 * 0.999_999))
        );
        assert_eq!(p.next_delay(3, &e, 0.0), Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(4, &e, 0.0), None, "attempts are limited");
        let capped = RetryPolicy {
            max_attempts: 40,
            ..p
        };
        assert!(capped.next_delay(30, &e, 1.0).unwrap() <= Duration::from_secs(10));
    }

    #[test]
    fn rate_limits_wait_for_retry_after_within_the_cap() {
        let p = policy();
        let e = RunError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            message: String::new(),
        };
        assert_eq!(p.next(1, &e, 0.3), Next::Retry(Duration::from_secs(3)));
        // Asked to wait longer than a run waits: the run ends, and the data
        // source waits as long as it was told (even on its last attempt).
        let e = RunError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            message: String::new(),
        };
        assert_eq!(
            p.next(1, &e, 0.3),
            Next::WaitLonger(Duration::from_secs(3600))
        );
        assert_eq!(
            p.next(4, &e, 0.3),
            Next::WaitLonger(Duration::from_secs(3600))
        );
        // Without a retry-after it backs off like a transient error.
        let e = RunError::RateLimited {
            retry_after: None,
            message: String::new(),
        };
        assert_eq!(p.next(1, &e, 0.0), Next::Retry(Duration::from_millis(500)));
        assert_eq!(p.next(4, &e, 0.0), Next::GiveUp);
    }

    #[test]
    fn auth_config_and_crashes_are_not_retried() {
        let p = policy();
        for e in [
            RunError::AuthFailed("401".into()),
            RunError::InvalidConfig("x".into()),
            RunError::Trap("boom".into()),
            RunError::Limit("memory".into()),
            RunError::Plugin("x".into()),
        ] {
            assert_eq!(p.next_delay(1, &e, 0.5), None, "{e}");
        }
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
