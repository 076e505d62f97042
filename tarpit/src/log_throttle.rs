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
