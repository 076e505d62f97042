//! Warnings that fire at most once per interval, with a count of what was suppressed.
//!
//! Conditions like a full event channel or EMFILE on accept can repeat thousands of times a
//! second; logging each would turn one problem (no fds) into two (a flooded journal and a busy
//! CPU). Each call site owns one [`LogThrottle`].

use std::time::{Duration, Instant};

/// Decides whether a repeated warning may be logged now.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle allowing one message per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(n)` when a message may be logged now, `n` being how many were suppressed
    /// since the last one; `None` when this occurrence should be counted and skipped.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_interval_with_the_suppressed_count() {
        let mut throttle = LogThrottle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(throttle.check(t0), Some(0));
        assert_eq!(throttle.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(throttle.check(t0 + Duration::from_secs(59)), None);
        assert_eq!(throttle.check(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(throttle.check(t0 + Duration::from_secs(61)), None);
    }
}

/// A [`LogThrottle`] that many threads can share without a lock: for warnings raised on the
/// io_uring workers' hot path.
#[derive(Debug)]
pub struct SharedLogThrottle {
    epoch: Instant,
    interval_ms: u64,
    /// Milliseconds since `epoch` before which nothing may be logged.
    next_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl SharedLogThrottle {
    /// A throttle allowing one message per `interval` across all threads.
    pub fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: interval.as_millis() as u64,
            next_ms: Default::default(),
            suppressed: Default::default(),
        }
    }

    /// Like [`LogThrottle::check`], for the current time.
    pub fn check(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.interval_ms, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn shared_throttle_lets_one_through_per_interval() {
        let throttle = SharedLogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.check(), Some(0));
        assert_eq!(throttle.check(), None);
        assert_eq!(throttle.check(), None);
        // Force the interval to have passed.
        throttle
            .next_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(throttle.check(), Some(2));
    }
}
