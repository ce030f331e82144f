//! The per-user rate limit of preview fetches: a token bucket per user (`rate_limit_burst`
//! fetches, `rate_limit_per_minute` regained), bounded in memory.

use std::collections::HashMap;
use std::time::Instant;

/// Users tracked at once; past it, buckets that have filled up again are dropped (they carry
/// no information), and if none has, the fullest one goes.
const MAX_TRACKED: usize = 100_000;

/// Token buckets per caller.
pub struct RateLimiter {
    buckets: parking_lot::Mutex<HashMap<String, (f64, Instant)>>,
    burst: f64,
    per_ms: f64,
}

impl RateLimiter {
    /// `burst` fetches at once, `per_minute` regained each minute.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            buckets: parking_lot::Mutex::new(HashMap::new()),
            burst: f64::from(burst.max(1)),
            per_ms: f64::from(per_minute.max(1)) / 60_000.0,
        }
    }

    fn level(&self, (tokens, at): (f64, Instant), now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(at).as_secs_f64() * 1000.0;
        (tokens + elapsed * self.per_ms).min(self.burst)
    }

    /// Takes one token of `caller`'s bucket, or says in how many ms one is back.
    pub fn take(&self, caller: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(caller) {
            buckets.retain(|_, b| self.level(*b, now) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                let fullest = buckets
                    .iter()
                    .max_by(|a, b| self.level(*a.1, now).total_cmp(&self.level(*b.1, now)))
                    .map(|(k, _)| k.clone());
                if let Some(k) = fullest {
                    buckets.remove(&k);
                }
            }
        }
        let level = buckets
            .get(caller)
            .map_or(self.burst, |b| self.level(*b, now));
        if level >= 1.0 {
            buckets.insert(caller.to_owned(), (level - 1.0, now));
            Ok(())
        } else {
            let wait_ms = ((1.0 - level) / self.per_ms).ceil();
            Err(wait_ms as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_the_wait() {
        let r = RateLimiter::new(3, 60);
        for _ in 0..3 {
            assert!(r.take("@a:x").is_ok());
        }
        let wait = r.take("@a:x").unwrap_err();
        assert!((900..=1000).contains(&wait), "{wait}");
        // Another user has a bucket of their own.
        assert!(r.take("@b:x").is_ok());
    }
}
