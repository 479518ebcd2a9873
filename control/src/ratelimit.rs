//! Rate limits: a token bucket (GCRA, the `governor` crate) per key — an
//! organization for request budgets, an account or an address for
//! sign-in attempts.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use schemas::TenantId;

/// Requests per second per key (a tenant by default), with a burst
/// allowance. Disabled when the rate is 0.
pub struct RateLimits<K: Hash + Eq + Clone = TenantId> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    clock: DefaultClock,
    per_sec: u32,
}

/// A refused request: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub per_sec: u32,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for a `Retry-After` header (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl<K: Hash + Eq + Clone> RateLimits<K> {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_sec)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
            per_sec,
        }
    }

    /// `per_minute` with a burst of `burst`: for rare events such as
    /// sign-in attempts.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
            per_sec: per_minute.div_ceil(60),
        }
    }

    pub fn unlimited() -> Self {
        Self::new(0, 0)
    }

    /// Takes one token from `key`'s bucket.
    pub fn check(&self, key: &K) -> Result<(), Limited> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let result = limiter.check_key(key).map_err(|not_until| Limited {
            per_sec: self.per_sec,
            retry_after: not_until.wait_time_from(self.clock.now()),
        });
        // Keys are client-chosen (addresses, emails): drop full buckets so
        // the map cannot grow without bound.
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_tenant() {
        let limits = RateLimits::new(1, 2);
        let a = TenantId::new("a").unwrap();
        let b = TenantId::new("b").unwrap();
        assert!(limits.check(&a).is_ok());
        assert!(limits.check(&a).is_ok());
        let refused = limits.check(&a).unwrap_err();
        assert_eq!(refused.per_sec, 1);
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(
            limits.check(&b).is_ok(),
            "another tenant has its own bucket"
        );
        assert!(RateLimits::unlimited().check(&a).is_ok());
    }
}
