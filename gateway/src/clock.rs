//! The time rollouts run on: the system clock, or (with `serve --test-clock`) the system clock
//! plus an offset that tests move forward through the admin API, so a rollout with 5-minute
//! steps is driven in seconds without sleeping. Only rollout timers read it; inference tables
//! keep wall-clock timestamps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A clock handle; clones share the offset.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    test: bool,
    offset_us: AtomicI64,
    advanced: Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { inner: Arc::new(Inner { test: false, offset_us: AtomicI64::new(0), advanced: Notify::new() }) }
    }

    /// A clock that [`Clock::advance`] can move forward.
    pub fn test() -> Clock {
        Clock { inner: Arc::new(Inner { test: true, offset_us: AtomicI64::new(0), advanced: Notify::new() }) }
    }

    pub fn is_test(&self) -> bool {
        self.inner.test
    }

    /// Microseconds since the Unix epoch.
    pub fn now_us(&self) -> i64 {
        system_now_us() + self.inner.offset_us.load(Ordering::Relaxed)
    }

    /// Moves a test clock forward by `by` and wakes whoever waits on [`Clock::advanced`];
    /// refused on the system clock.
    pub fn advance(&self, by: Duration) -> Result<i64, ClockError> {
        if !self.inner.test {
            return Err(ClockError::NotTestClock);
        }
        let us = i64::try_from(by.as_micros()).map_err(|_| ClockError::TooLarge)?;
        self.inner.offset_us.fetch_add(us, Ordering::Relaxed);
        self.inner.advanced.notify_waiters();
        Ok(self.now_us())
    }

    /// Resolves when a test clock is advanced (never for the system clock).
    pub async fn advanced(&self) {
        if self.inner.test {
            self.inner.advanced.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// Microseconds since the Unix epoch by the system clock (0 before 1970).
pub fn system_now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Why a clock could not be moved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClockError {
    #[error("the clock can only be moved on a gateway started with --test-clock")]
    NotTestClock,
    #[error("advance is too large")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_test_clock_moves() {
        let c = Clock::test();
        let before = c.now_us();
        c.advance(Duration::from_secs(300)).unwrap();
        assert!(c.now_us() - before >= 300_000_000);
        assert_eq!(
            Clock::system().advance(Duration::from_secs(1)).unwrap_err().to_string(),
            "the clock can only be moved on a gateway started with --test-clock"
        );
    }
}
