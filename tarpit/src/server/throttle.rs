//! Holding accepts back while the recording is behind.
//!
//! Under a load that saturates the CPU, the workers can accept connections faster than the
//! threads that record them (pipeline, JSON log, SQLite) write their rows; the queues between
//! them are bounded, so once one is full the events of connections already accepted are lost
//! (docs/benchmarks.md, ninth pass: 2,761 events in one of six 20 s adaptive churns, with the
//! workers already yielding the CPU, see `worker::yield_to_recording`). Before each accept, a
//! worker's accept loop looks at those queues ([`RecordingBacklog`]); while one is more than
//! half full it waits, a millisecond at a time, for the recording to catch up. A connection not
//! yet accepted waits in the kernel's backlog, where it costs no row; one accepted is always
//! recorded.
//!
//! The wait is bounded ([`MAX_WAIT`] per accept): a sink stalled by a slow disk must not stall
//! the tarpit (the brief's rule for every queue here). While a queue stays over half full,
//! each of a worker's accept loops still takes a connection every [`MAX_WAIT`], 100 a second
//! per loop (1,600 with two workers), far above a sensor's normal rate, and what overflows is
//! dropped and counted as before.
//!
//! Against a flood: a client cannot make the tarpit stop accepting, only make it accept at the
//! pace it records, which is what a flood gets anyway once the CPU is saturated; every
//! throttled accept is counted (`tarpit_accepts_throttled_total`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::queue::{PipelineStats, RecordingBacklog};

/// How often a held-back accept looks again.
const RECHECK: Duration = Duration::from_millis(1);

/// The longest one accept is held back.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(10);

/// Returns at once while the recording keeps up; otherwise waits until it has caught up (no
/// queue over half full) or [`MAX_WAIT`] has passed, and counts the accept as throttled.
pub(super) async fn wait_for_recording(backlog: &RecordingBacklog, stats: &PipelineStats) {
    if !backlog.behind() {
        return;
    }
    stats.throttled_accepts.fetch_add(1, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    while backlog.behind() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::queue::ByteBudget;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn an_accept_is_not_held_while_the_queues_are_at_most_half_full() {
        let queue = Arc::new(ByteBudget::new(1000));
        assert!(queue.try_reserve(500));
        let backlog = RecordingBacklog::new(vec![queue]);
        let stats = PipelineStats::default();
        runtime().block_on(wait_for_recording(&backlog, &stats));
        assert_eq!(stats.throttled_accepts.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_accept_waits_while_a_queue_is_over_half_full_but_not_for_ever() {
        let idle = Arc::new(ByteBudget::new(1000));
        let full = Arc::new(ByteBudget::new(1000));
        assert!(full.try_reserve(501));
        let backlog = RecordingBacklog::new(vec![idle, full]);
        let stats = PipelineStats::default();
        let started = Instant::now();
        runtime().block_on(wait_for_recording(&backlog, &stats));
        // Held for the whole bound (a lower bound: a loaded machine only makes it longer).
        assert!(started.elapsed() >= MAX_WAIT, "{:?}", started.elapsed());
        assert_eq!(stats.throttled_accepts.load(Ordering::Relaxed), 1);
    }
}
