//! What to do after a failed attempt: retry (after how long) or give up.
//!
//! Transient errors back off exponentially with jitter; a rate limit waits
//! for the platform's retry-after (bounded); authentication failures, invalid
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

impl RetryPolicy {
    /// After attempt number `attempt` (1-based) failed with `err`: the delay
    /// before the next attempt, or `None` to give up. `jitter` is a random
    /// number in [0, 1).
    pub fn next_delay(&self, attempt: u32, err: &RunError, jitter: f64) -> Option<Duration> {
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
            RunError::RateLimited { retry_after, .. } => {
                Some(retry_after.map_or_else(backoff, |d| d.min(self.max)))
            }
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
        assert_eq!(p.next_delay(1, &e, 0.3), Some(Duration::from_secs(3)));
        let e = RunError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            message: String::new(),
        };
        assert_eq!(p.next_delay(1, &e, 0.3), Some(Duration::from_secs(10)));
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
