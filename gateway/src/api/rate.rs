//! Token buckets per caller: how many labels a principal may post (`server.labels_per_second`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bucket per key (a principal's name, or `anonymous`: the key set is bounded by the config).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` units refill each second, up to `burst` held.
    pub fn new(per_second: u64, burst: u64) -> RateLimiter {
        RateLimiter { per_second: per_second.max(1) as f64, burst: burst.max(1) as f64, buckets: Mutex::default() }
    }

    /// Units refilled each second.
    pub fn per_second(&self) -> u64 {
        self.per_second as u64
    }

    /// Takes `n` units of `key`'s bucket, or says how long until they would be there.
    pub fn take(&self, key: &str, n: usize) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        let n = n as f64;
        if n <= *tokens {
            *tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((n - *tokens) / self.per_second).min(3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_key() {
        let r = RateLimiter::new(100, 1000);
        assert!(r.take("a", 1000).is_ok());
        let wait = r.take("a", 50).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(r.take("b", 1000).is_ok(), "keys do not share a bucket");
        assert!(r.take("c", 1001).is_err(), "never more than the burst at once");
        std::thread::sleep(Duration::from_millis(120));
        assert!(r.take("a", 10).is_ok(), "refilled at 100 a second");
    }
}
