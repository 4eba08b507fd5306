//! Issuance rate limits: a token bucket per user and per agent, refilled continuously. A refused
//! request is told how long to wait (`Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;

/// Most keys tracked before full buckets are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// Token buckets of `per_minute` capacity, keyed by user or agent. `per_minute = 0` disables.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` per key, in bursts of up to `per_minute`.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now_ms`; when none is left, the seconds until one is.
    pub fn check(&self, key: &str, now_ms: i64) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_ms = capacity / 60_000.0;
        let mut map = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_KEYS {
            map.retain(|_, b| b.tokens + (now_ms - b.last_ms) as f64 * per_ms < capacity);
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            last_ms: now_ms,
        });
        let elapsed = (now_ms - b.last_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * per_ms).min(capacity);
        b.last_ms = now_ms.max(b.last_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - b.tokens) / per_ms;
            Err((wait_ms / 1000.0).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_wait_then_refill() {
        let r = RateLimiter::new(3);
        assert!(r.check("alice", 0).is_ok());
        assert!(r.check("alice", 0).is_ok());
        assert!(r.check("alice", 0).is_ok());
        assert_eq!(r.check("alice", 0), Err(20), "one token every 20 s");
        assert!(r.check("bob", 0).is_ok(), "keys are independent");
        assert_eq!(r.check("alice", 10_000), Err(10));
        assert!(r.check("alice", 20_000).is_ok());
    }

    #[test]
    fn zero_disables() {
        let r = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(r.check("x", 0).is_ok());
        }
    }
}
