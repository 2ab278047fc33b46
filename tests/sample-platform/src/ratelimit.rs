//! Per-principal token buckets. Each authenticated `/v1` request takes one token; a
//! bucket holds at most `burst` tokens and refills at `per_second`. An empty bucket means
//! `429 rate_limited` with a `retry-after` of the whole seconds until a token is back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fixture::RateLimit;

/// The buckets of all principals, all with the same limit.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Changes the limit; every bucket starts full again.
    pub fn set_limit(&mut self, limit: RateLimit) {
        self.limit = limit;
        self.buckets.clear();
    }

    fn capacity(&self) -> f64 {
        f64::from(self.limit.burst.max(1))
    }

    /// Takes a token from `principal`'s bucket at `now`: `Ok(())`, or `Err(seconds)` to
    /// wait before retrying (at least 1).
    pub fn take(&mut self, principal: &str, now: Instant) -> Result<(), u64> {
        if self.limit.per_second == 0 {
            return Ok(());
        }
        let capacity = self.capacity();
        let rate = f64::from(self.limit.per_second);
        let bucket = self.buckets.entry(principal.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            Err(wait.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut limiter = RateLimiter::new(RateLimit {
            per_second: 2,
            burst: 3,
        });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("a", start), Ok(()));
        }
        assert_eq!(limiter.take("a", start), Err(1));
        // Other principals have their own bucket.
        assert_eq!(limiter.take("b", start), Ok(()));
        // Half a second later one token is back.
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.take("a", later), Ok(()));
        assert_eq!(limiter.take("a", later), Err(1));
    }

    #[test]
    fn slow_refill_reports_whole_seconds() {
        let mut limiter = RateLimiter::new(RateLimit {
            per_second: 1,
            burst: 1,
        });
        let now = Instant::now();
        assert_eq!(limiter.take("a", now), Ok(()));
        assert_eq!(limiter.take("a", now), Err(1));
        limiter.set_limit(RateLimit {
            per_second: 0,
            burst: 0,
        });
        for _ in 0..1000 {
            assert_eq!(limiter.take("a", now), Ok(()));
        }
    }
}
