//! The bounded channel between the io_uring workers and the pipeline.
//!
//! A worker must never wait on a slow disk, so [`EventSender::send`] never blocks: when the
//! channel is full (in events, or in bytes: see [`crate::queue`]) the event is dropped and
//! counted in [`PipelineStats::dropped_events`], and the pipeline warns about it once a
//! minute. Sizing (`storage.event_queue`, `storage.event_queue_bytes`) makes that rare.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::event::Event;
use crate::queue::{ByteBudget, PipelineStats};

/// The worker side of the channel: cloneable, never blocks.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    bytes: Arc<ByteBudget>,
    stats: Arc<PipelineStats>,
}

/// The pipeline side of the channel: gives each event's bytes back to the budget as it is
/// taken.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::Receiver<Event>,
    bytes: Arc<ByteBudget>,
}

/// Makes a channel holding at most `capacity` events and `max_bytes` bytes of them.
pub fn event_channel(
    capacity: usize,
    max_bytes: usize,
    stats: Arc<PipelineStats>,
) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let bytes = Arc::new(ByteBudget::new(max_bytes));
    (
        EventSender {
            tx,
            bytes: bytes.clone(),
            stats,
        },
        EventReceiver { rx, bytes },
    )
}

impl EventSender {
    /// The channel's byte budget (watched by [`crate::queue::RecordingBacklog`]).
    pub fn budget(&self) -> Arc<ByteBudget> {
        self.bytes.clone()
    }

    /// Queues an event, or drops and counts it when the channel is full. Never blocks.
    pub fn send(&self, event: Event) {
        let size = event.queued_bytes();
        if !self.bytes.try_reserve(size) {
            self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.release(size);
                self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
            // The pipeline has stopped: only at the very end of shutdown, nothing to record.
            Err(mpsc::error::TrySendError::Closed(_)) => self.bytes.release(size),
        }
    }
}

impl EventReceiver {
    /// Waits for at least one event, then moves every queued event (at most `limit`) into
    /// `buffer`; returns how many, 0 once every sender is gone and the channel is empty.
    /// Taking what has queued up in one go is what lets the pipeline wake once per burst
    /// rather than once per event.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Event>, limit: usize) -> usize {
        let before = buffer.len();
        let taken = self.rx.recv_many(buffer, limit).await;
        self.bytes
            .release(buffer[before..].iter().map(Event::queued_bytes).sum());
        taken
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok()?;
        self.bytes.release(event.queued_bytes());
        Some(event)
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
        let (tx, mut rx) = event_channel(2, usize::MAX / 2, stats.clone());
        for id in 0..5 {
            tx.send(closed(id));
        }
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_recv().unwrap().conn_id(), 0);
        assert_eq!(rx.try_recv().unwrap().conn_id(), 1);
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn the_channel_is_bounded_in_bytes_as_well_as_events() {
        let stats = Arc::new(PipelineStats::default());
        let one = closed(0).queued_bytes();
        let (tx, mut rx) = event_channel(1000, one * 3, stats.clone());
        for id in 0..10 {
            tx.send(closed(id));
        }
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 7);
        assert_eq!(rx.try_recv().unwrap().conn_id(), 0);
        // Taking an event gives its bytes back.
        tx.send(closed(10));
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 7);
        let rest: Vec<u64> = std::iter::from_fn(|| rx.try_recv().map(|e| e.conn_id())).collect();
        assert_eq!(rest, vec![1, 2, 10]);
    }

    /// A burst taken at once gives back the bytes of every event in it, and leaves what is
    /// past its limit queued, in order.
    #[tokio::test]
    async fn a_burst_taken_at_once_gives_its_bytes_back() {
        let stats = Arc::new(PipelineStats::default());
        let one = closed(0).queued_bytes();
        let (tx, mut rx) = event_channel(1000, one * 4, stats.clone());
        for id in 0..4 {
            tx.send(closed(id));
        }
        let mut burst = Vec::new();
        assert_eq!(rx.recv_many(&mut burst, 3).await, 3);
        let ids: Vec<u64> = burst.iter().map(Event::conn_id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        // Three events' bytes are free again: three more fit, the fourth does not.
        for id in 4..8 {
            tx.send(closed(id));
        }
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 1);
        burst.clear();
        assert_eq!(rx.recv_many(&mut burst, 100).await, 4);
        let ids: Vec<u64> = burst.iter().map(Event::conn_id).collect();
        assert_eq!(ids, vec![3, 4, 5, 6]);
        drop(tx);
        assert_eq!(rx.recv_many(&mut burst, 100).await, 0, "closed and empty");
    }
}
