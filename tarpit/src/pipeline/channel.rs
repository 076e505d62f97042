//! The bounded channel between the io_uring workers and the pipeline.
//!
//! A worker must never wait on a slow disk, so [`EventSender::send`] never blocks: when the
//! channel is full the event is dropped and counted in [`PipelineStats::dropped_events`], and the
//! pipeline warns about it once a minute. Sizing (`storage.event_queue`) makes that rare.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::event::Event;

/// Counters shared by the workers and the pipeline; atomics, so the hot path takes no lock.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events a worker could not queue because the channel was full.
    pub dropped_events: AtomicU64,
    /// Events a sink could not queue or could not write (its own backlog was full, or the
    /// disk refused).
    pub sink_dropped: AtomicU64,
    /// Events handed to the sinks.
    pub delivered: AtomicU64,
}

/// The worker side of the channel: cloneable, never blocks.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    stats: Arc<PipelineStats>,
}

/// The pipeline side of the channel.
pub type EventReceiver = mpsc::Receiver<Event>;

/// Makes a channel holding at most `capacity` events.
pub fn event_channel(capacity: usize, stats: Arc<PipelineStats>) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    (EventSender { tx, stats }, rx)
}

impl EventSender {
    /// Queues an event, or drops and counts it when the channel is full. Never blocks.
    pub fn send(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
            // The pipeline has stopped: only at the very end of shutdown, nothing to record.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnectionClosed;
    use std::time::SystemTime;

    fn closed(conn_id: u64) -> Event {
        Event::ConnectionClosed(ConnectionClosed {
            conn_id,
            closed_at: SystemTime::now(),
            requests: 0,
            bytes_sent: 0,
            duration_s: 0.0,
            end_reason: "client_closed",
        })
    }

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_blocking() {
        let stats = Arc::new(PipelineStats::default());
        let (tx, mut rx) = event_channel(2, stats.clone());
        for id in 0..5 {
            tx.send(closed(id));
        }
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_recv().unwrap().conn_id(), 0);
        assert_eq!(rx.try_recv().unwrap().conn_id(), 1);
        assert!(rx.try_recv().is_err());
    }
}
