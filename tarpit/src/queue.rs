//! What the bounded queues between the workers, the pipeline and the sinks share: the loss
//! counters, and a byte budget that bounds each queue in memory as well as in events.
//!
//! A queue bounded only in events can still hold gigabytes: 65,536 requests with 16 KiB heads
//! are a gigabyte of strings while a slow disk holds the SQLite sink back. So every queue also
//! takes a [`ByteBudget`]: an event is queued only if its estimated size
//! ([`crate::event::Event::queued_bytes`]) fits, and is dropped and counted otherwise, exactly
//! as when the queue is full. Lives below `pipeline`, `sink` and `metrics`, which all use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters shared by the workers and the pipeline; atomics, so the hot path takes no lock.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events a worker could not queue because the channel was full (in events or bytes).
    pub dropped_events: AtomicU64,
    /// Events a sink could not queue or could not write (its own backlog was full in events
    /// or bytes, or the disk refused).
    pub sink_dropped: AtomicU64,
    /// Events handed to the sinks.
    pub delivered: AtomicU64,
    /// Accepts a worker held back because the recording had fallen behind (see
    /// [`RecordingBacklog`]).
    pub throttled_accepts: AtomicU64,
}

/// Bytes a queue may hold at once; reserved when an event is queued, released when it has
/// been taken (by the pipeline) or written (by a sink). Lock-free: one atomic add per event.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Reserves `bytes`, or refuses (reserving nothing) when they do not fit.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.limit {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back bytes reserved earlier.
    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// More than half of the budget is in use: the queue's reader is falling behind.
    pub fn over_half(&self) -> bool {
        self.used() > self.limit / 2
    }
}

/// The queues that stand between an accepted connection and its rows: the channel to the
/// pipeline and each sink's queue. The workers read it before each accept (a relaxed atomic
/// load per queue, no lock) and hold back while any is more than half full, so that on a
/// saturated CPU the threads that record catch up instead of their queues overflowing and
/// losing rows of connections already accepted (see `server::throttle`).
#[derive(Debug, Clone, Default)]
pub struct RecordingBacklog {
    queues: Vec<Arc<ByteBudget>>,
}

impl RecordingBacklog {
    /// Watches these queues' budgets.
    pub fn new(queues: Vec<Arc<ByteBudget>>) -> Self {
        Self { queues }
    }

    /// Some queue is more than half full.
    pub fn behind(&self) -> bool {
        self.queues.iter().any(|queue| queue.over_half())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recording_is_behind_once_a_queue_is_over_half_full() {
        let quiet = Arc::new(ByteBudget::new(100));
        let busy = Arc::new(ByteBudget::new(100));
        let backlog = RecordingBacklog::new(vec![quiet, busy.clone()]);
        assert!(busy.try_reserve(50));
        assert!(!backlog.behind(), "exactly half full is not behind");
        assert!(busy.try_reserve(1));
        assert!(backlog.behind());
        busy.release(1);
        assert!(!backlog.behind());
    }

    #[test]
    fn reserves_up_to_the_limit_and_refuses_beyond() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(41));
        assert_eq!(budget.used(), 60);
        assert!(budget.try_reserve(40));
        budget.release(60);
        assert!(budget.try_reserve(50));
        assert_eq!(budget.used(), 90);
    }
}
