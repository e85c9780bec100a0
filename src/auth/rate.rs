//! Per-principal rate limits (`detokenize_per_minute`).
//!
//! A token bucket per principal (an API key name, a certificate identity,
//! an IAM role: never a session, so logging in again does not reset it),
//! refilled continuously from the injected clock so tests move time instead
//! of sleeping. Limits count on each replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;

/// Buckets kept at most; beyond it, full (idle) buckets are dropped first.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at_ms: i64,
    /// The bucket's own rate (per minute), for refilling it when swept.
    per_minute: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate now; it passes after this many seconds.
    RetryAfter(u64),
    /// Costs more than a whole minute's allowance: it never passes.
    TooLarge,
}

/// The limiter shared by all requests.
pub struct RateLimiter {
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> i64 {
        (self.clock.now().unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Takes `cost` from `principal`'s bucket of `per_minute` (burst up to a
    /// minute's worth).
    pub fn take(&self, principal: &str, per_minute: u32, cost: u32) -> Result<(), Refusal> {
        let capacity = f64::from(per_minute);
        let per_ms = capacity / 60_000.0;
        let cost = f64::from(cost);
        if cost > capacity {
            return Err(Refusal::TooLarge);
        }
        let now = self.now_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(principal) {
            // Drop buckets that have refilled completely at their own rate.
            buckets.retain(|_, b| {
                let cap = f64::from(b.per_minute);
                b.tokens + (now - b.at_ms) as f64 * cap / 60_000.0 < cap
            });
        }
        let b = buckets.entry(principal.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at_ms: now,
            per_minute,
        });
        b.per_minute = per_minute;
        b.tokens = (b.tokens + (now - b.at_ms).max(0) as f64 * per_ms).min(capacity);
        b.at_ms = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            Ok(())
        } else {
            let wait_ms = (cost - b.tokens) / per_ms;
            Err(Refusal::RetryAfter(
                (wait_ms / 1000.0).ceil().max(1.0) as u64
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn trips_and_refills_with_the_clock() {
        let clock = ManualClock::new();
        let l = RateLimiter::new(clock.clone());
        for _ in 0..3 {
            assert!(l.take("apikey:a", 3, 1).is_ok());
        }
        assert_eq!(l.take("apikey:a", 3, 1), Err(Refusal::RetryAfter(20)));
        assert!(
            l.take("apikey:b", 3, 1).is_ok(),
            "buckets are per principal"
        );
        clock.advance(20);
        assert!(l.take("apikey:a", 3, 1).is_ok());
        assert!(l.take("apikey:a", 3, 1).is_err());
        assert_eq!(l.take("apikey:a", 3, 4), Err(Refusal::TooLarge));
    }
}
