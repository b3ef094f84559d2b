//! Rate limits: GraphQL operations per tenant and subject, tracking events per write key.
//!
//! Both use `governor`'s keyed GCRA limiter (a token bucket without a timer: one timestamp per key, checked and
//! updated with a compare-and-swap, no lock held across keys). Limits are per instance: behind a load balancer with N
//! instances a subject can make up to N × the limit.
use std::{
    hash::Hash,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use crate::{auth::TenantId, error::ErrorCode};

/// A rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Stale keys are dropped once every this many checks, so the key set stays bounded by the keys seen since the
/// last sweep plus the ones still limited, without a background task.
const SWEEP_EVERY: u64 = 1024;

/// A keyed limiter with the metric and the housekeeping every use needs.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
    burst: NonZeroU32,
    /// `kind` label of `kontakt_rate_limited_total`.
    kind: &'static str,
    checks: AtomicU64,
}

/// A refusal: how long until the same request would be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds, rounded up, at least 1: what `Retry-After` and `retryAfterSeconds` say.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }

    /// The GraphQL error of a limited operation: `RATE_LIMITED` with `retryAfterSeconds`.
    pub fn graphql_error(&self) -> async_graphql::ServerError {
        let seconds = self.retry_after_secs();
        let mut error =
            async_graphql::ServerError::new(format!("too many requests for this subject; retry in {seconds} s"), None);
        let extensions = error.extensions.get_or_insert_with(Default::default);
        extensions.set("code", ErrorCode::RateLimited.as_str());
        extensions.set("retryAfterSeconds", seconds);
        error
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(kind: &'static str, limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        KeyedLimiter {
            inner: DefaultKeyedRateLimiter::keyed(quota),
            burst: limit.burst,
            kind,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes `cost` cells for `key`, or none and says how long to wait. A cost above the burst costs the whole
    /// burst (a request that big can never fit otherwise, and a retry would not help).
    pub fn check(&self, key: &K, cost: u32) -> Result<(), Limited> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let cost = NonZeroU32::new(cost.min(self.burst.get())).unwrap_or(NonZeroU32::MIN);
        let outcome = match self.inner.check_key_n(key, cost) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => Limited { retry_after: not_until.wait_time_from(self.inner.clock().now()) },
            // Cannot happen with the cost capped at the burst; answer as if the whole bucket were spent.
            Err(_) => Limited { retry_after: Duration::from_secs(1) },
        };
        metrics::counter!("kontakt_rate_limited_total", "kind" => self.kind).increment(1);
        Err(outcome)
    }

    /// Keys held now (stale ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Drops the keys whose state is no different from a fresh one.
    pub fn sweep(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// GraphQL operations, per tenant and subject (the token's `sub`).
pub type GraphqlLimiter = KeyedLimiter<(TenantId, String)>;

/// Tracking events, per write key.
pub type TrackingLimiter = KeyedLimiter<String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second: NonZeroU32::new(per_second).unwrap(), burst: NonZeroU32::new(burst).unwrap() }
    }

    #[test]
    fn a_burst_is_let_through_then_refused_with_a_wait() {
        let limiter = TrackingLimiter::new("tracking", limit(2, 3));
        let key = "k".to_owned();
        for _ in 0..3 {
            limiter.check(&key, 1).expect("within the burst");
        }
        let limited = limiter.check(&key, 1).expect_err("over the burst");
        assert!(limited.retry_after <= Duration::from_millis(500), "{limited:?}");
        assert_eq!(limited.retry_after_secs(), 1);
        limiter.check(&"other".to_owned(), 3).expect("another key has its own bucket");
    }

    #[test]
    fn a_cost_above_the_burst_spends_the_whole_burst() {
        let limiter = TrackingLimiter::new("tracking", limit(10, 5));
        let key = "k".to_owned();
        limiter.check(&key, 50).expect("a fresh bucket takes it");
        assert!(limiter.check(&key, 1).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let at = |ms| Limited { retry_after: Duration::from_millis(ms) }.retry_after_secs();
        assert_eq!(at(0), 1);
        assert_eq!(at(1), 1);
        assert_eq!(at(1000), 1);
        assert_eq!(at(1001), 2);
    }

    #[test]
    fn stale_keys_are_dropped() {
        let limiter = TrackingLimiter::new("tracking", limit(1000, 1));
        for i in 0..100 {
            limiter.check(&format!("k{i}"), 1).expect("fresh");
        }
        assert_eq!(limiter.len(), 100);
        std::thread::sleep(Duration::from_millis(20));
        limiter.sweep();
        assert_eq!(limiter.len(), 0);
    }
}
