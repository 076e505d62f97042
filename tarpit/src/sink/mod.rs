//! Sinks: the places events end up (JSON lines log, SQLite; later metrics and AbuseIPDB).
//!
//! Each file-backed sink runs on its own thread behind its own bounded queue ([`SinkThread`]), so
//! a slow or full disk stalls only that sink: the pipeline keeps feeding the others, and the
//! workers only pace their accepts while a queue is over half full (at most 10 ms each, see
//! `server::throttle`). A sink writes what has queued up over its [`Batching::linger`] as one
//! batch (one SQLite transaction, one flush), or at once when a whole batch is waiting.

pub mod jsonl;
pub mod sqlite;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::log_throttle::LogThrottle;
use crate::queue::{ByteBudget, PipelineStats};

/// How a sink's thread gathers its batches: what is queued is written as one batch, after
/// waiting `linger` for more unless `max_events` are already waiting. Most of a batch's cost
/// can be per batch, not per event (a SQLite commit writes every page it touched), so a sink
/// says how long a row may wait in memory to save it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// How long a batch short of `max_events` gathers before it is written. A row is on disk
    /// this much later (a drip tick is 1.5 s); a full batch is written at once, so a sink that
    /// falls behind never waits.
    pub linger: Duration,
    /// Most events written in one batch.
    pub max_events: usize,
}

impl Batching {
    /// The JSON log's, and any sink's that does not choose: 20 ms, at most 4,096 events. A
    /// file's write costs per byte, not per batch: longer gathers made the JSON log's writes
    /// larger and cost it more than they saved (docs/benchmarks.md, fifth pass).
    pub const DEFAULT: Self = Self {
        linger: Duration::from_millis(20),
        max_events: 4096,
    };
}

/// A writer's queue holds this many times `storage.event_queue` events, within the same
/// `storage.event_queue_bytes`. The ends of 100,000 socketless flows whose clients leave within
/// one tick come as 200,000 small events in about a second and a half, faster than SQLite
/// updates their rows; bounded by the channel's count, the SQLite writer's queue dropped up to
/// a third of them. Bytes, not the count, are the memory bound: such events are small.
const QUEUE_FACTOR: usize = 4;

/// The bounds of each writer's queue, (events, bytes), for `storage`.
pub fn writer_queue(storage: &crate::config::StorageConfig) -> (usize, usize) {
    (
        storage.event_queue.saturating_mul(QUEUE_FACTOR),
        storage.event_queue_bytes,
    )
}

/// An error a sink reports for a batch it could not write.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// SQLite refused the batch.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file system refused the batch.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A destination for events that writes them in batches on its own thread.
pub trait Sink: Send + 'static {
    /// Short name for diagnostics ("sqlite", "jsonl").
    fn name(&self) -> &'static str;
    /// Writes a batch, in order. On error the batch is counted as dropped and the sink carries
    /// on with the next one.
    fn write_batch(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError>;
    /// How this sink's thread gathers its batches.
    fn batching(&self) -> Batching {
        Batching::DEFAULT
    }
}

/// A sink running on its own thread, fed through a queue bounded in events and in bytes.
#[derive(Debug)]
pub struct SinkThread {
    name: &'static str,
    /// Each event with its [`Event::queued_bytes`], so the writer gives the bytes back without
    /// reading every event again.
    tx: SyncSender<(Arc<Event>, usize)>,
    bytes: Arc<ByteBudget>,
    thread: JoinHandle<()>,
    stats: Arc<PipelineStats>,
}

impl SinkThread {
    /// Starts `sink` on a thread with a queue of `(events, bytes)` at most. An event's bytes
    /// count until the batch holding it is written.
    pub fn spawn(
        sink: impl Sink,
        (capacity, max_bytes): (usize, usize),
        stats: Arc<PipelineStats>,
    ) -> std::io::Result<Self> {
        let name = sink.name();
        let (tx, rx) = mpsc::sync_channel(capacity);
        let bytes = Arc::new(ByteBudget::new(max_bytes));
        let thread_stats = stats.clone();
        let thread_bytes = bytes.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || run(sink, rx, thread_bytes, thread_stats))?;
        Ok(Self {
            name,
            tx,
            bytes,
            thread,
            stats,
        })
    }

    /// Queues an event of `size` bytes ([`Event::queued_bytes`], which the pipeline reckons
    /// once for every sink) without waiting; a queue full in events or bytes drops it and
    /// counts it.
    pub fn offer(&self, event: Arc<Event>, size: usize) {
        if !self.bytes.try_reserve(size) {
            self.stats.sink_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send((event, size))
        {
            self.bytes.release(size);
            self.stats.sink_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The queue's byte budget (watched by [`crate::queue::RecordingBacklog`]).
    pub fn budget(&self) -> Arc<ByteBudget> {
        self.bytes.clone()
    }

    /// Closes the queue and waits until everything queued is written.
    pub fn finish(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!(sink = self.name, "sink thread panicked");
        }
    }
}

fn run(
    mut sink: impl Sink,
    rx: mpsc::Receiver<(Arc<Event>, usize)>,
    bytes: Arc<ByteBudget>,
    stats: Arc<PipelineStats>,
) {
    let Batching { linger, max_events } = sink.batching();
    let mut batch = Vec::with_capacity(max_events);
    let mut failures = LogThrottle::new(Duration::from_secs(60));
    while let Ok((first, size)) = rx.recv() {
        batch.push(first);
        let mut batch_bytes = size;
        take_queued(&rx, (&mut batch, max_events), &mut batch_bytes);
        if batch.len() < max_events {
            std::thread::sleep(linger);
            take_queued(&rx, (&mut batch, max_events), &mut batch_bytes);
        }
        let started = Instant::now();
        let written = sink.write_batch(&batch);
        metrics::histogram!("tarpit_sink_batch_seconds", "sink" => sink.name())
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = written {
            stats
                .sink_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if let Some(suppressed) = failures.check(Instant::now()) {
                tracing::warn!(
                    sink = sink.name(),
                    lost = batch.len(),
                    suppressed,
                    "cannot write events: {error}"
                );
            }
        }
        bytes.release(batch_bytes);
        batch.clear();
    }
}

/// Moves what is queued into `batch`, up to `max_events` in it, adding the events' sizes to
/// `batch_bytes`.
fn take_queued(
    rx: &mpsc::Receiver<(Arc<Event>, usize)>,
    (batch, max_events): (&mut Vec<Arc<Event>>, usize),
    batch_bytes: &mut usize,
) {
    while batch.len() < max_events {
        match rx.try_recv() {
            Ok((event, size)) => {
                batch.push(event);
                *batch_bytes += size;
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnectionClosed;
    use std::sync::Mutex;
    use std::time::SystemTime;

    struct Recorder {
        seen: Arc<Mutex<Vec<u64>>>,
        fail_first: bool,
    }

    impl Sink for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn write_batch(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
            if std::mem::take(&mut self.fail_first) {
                return Err(SinkError::Io(std::io::Error::other("disk full")));
            }
            let mut seen = self.seen.lock().unwrap();
            seen.extend(events.iter().map(|e| e.conn_id()));
            Ok(())
        }
    }

    /// Offers `event` as the pipeline does, with its size.
    fn offer(thread: &SinkThread, event: Arc<Event>) {
        let size = event.queued_bytes();
        thread.offer(event, size);
    }

    fn event(conn_id: u64) -> Arc<Event> {
        Arc::new(Event::ConnectionClosed(ConnectionClosed {
            conn_id,
            closed_at: SystemTime::now(),
            requests: 0,
            bytes_sent: 0,
            duration_s: 0.0,
            end_reason: "client_closed",
        }))
    }

    #[test]
    fn writes_everything_in_order_then_finishes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(PipelineStats::default());
        let sink = Recorder {
            seen: seen.clone(),
            fail_first: false,
        };
        let thread = SinkThread::spawn(sink, (10_000, usize::MAX / 2), stats.clone()).unwrap();
        for id in 0..1000 {
            offer(&thread, event(id));
        }
        thread.finish();
        assert_eq!(*seen.lock().unwrap(), (0..1000).collect::<Vec<_>>());
        assert_eq!(stats.sink_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failed_batch_is_counted_and_the_sink_carries_on() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(PipelineStats::default());
        let sink = Recorder {
            seen: seen.clone(),
            fail_first: true,
        };
        let thread = SinkThread::spawn(sink, (10, usize::MAX / 2), stats.clone()).unwrap();
        offer(&thread, event(1));
        // Wait until the failing batch has been taken, then send one that must succeed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.sink_dropped.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        offer(&thread, event(2));
        thread.finish();
        assert_eq!(stats.sink_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(*seen.lock().unwrap(), vec![2]);
    }

    /// A sink that counts its batches, keeps the ids of what it wrote and its largest batch,
    /// and gathers as `batching` says.
    struct Counting {
        seen: Arc<Mutex<Vec<u64>>>,
        batches: Arc<std::sync::atomic::AtomicUsize>,
        largest: Arc<std::sync::atomic::AtomicUsize>,
        batching: Batching,
    }

    impl Counting {
        fn new(batching: Batching) -> Self {
            Self {
                seen: Arc::default(),
                batches: Arc::default(),
                largest: Arc::default(),
                batching,
            }
        }
    }

    impl Sink for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn write_batch(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.largest.fetch_max(events.len(), Ordering::Relaxed);
            let mut seen = self.seen.lock().unwrap();
            seen.extend(events.iter().map(|e| e.conn_id()));
            Ok(())
        }
        fn batching(&self) -> Batching {
            self.batching
        }
    }

    /// Events that trickle in are written in batches of what gathered over the linger, not one
    /// by one: each small batch costs the sink at least its linger of waiting, so however the
    /// machine schedules the threads, the batches can be no more than the time taken over the
    /// linger. (A sink that wrote each event as it came wrote 300 batches here.)
    #[test]
    fn a_trickle_of_events_is_written_in_few_batches() {
        const LINGER: Duration = Batching::DEFAULT.linger;
        let stats = Arc::new(PipelineStats::default());
        let sink = Counting::new(Batching::DEFAULT);
        let (seen, batches) = (sink.seen.clone(), sink.batches.clone());
        let thread = SinkThread::spawn(sink, (10_000, usize::MAX / 2), stats.clone()).unwrap();
        let started = Instant::now();
        for id in 0..300 {
            offer(&thread, event(id));
            std::thread::sleep(Duration::from_micros(200));
        }
        thread.finish();
        let elapsed = started.elapsed();
        let batches = batches.load(Ordering::Relaxed);
        let most = (elapsed.as_micros() / LINGER.as_micros()) as usize + 1;
        assert!(
            batches <= most,
            "{batches} batches in {elapsed:?}: more than one per {LINGER:?}"
        );
        assert_eq!(*seen.lock().unwrap(), (0..300).collect::<Vec<_>>());
    }

    /// A busy stream is written a batch per linger too, not a batch per wake-up: each commit
    /// costs SQLite every page it touched, so committing whenever a few hundred events had
    /// queued wrote the same index pages over and over. Each batch short of `max_events` costs
    /// the sink its linger of waiting, so however the threads are scheduled, there are at most
    /// the time taken over the linger plus the full batches. (The sink that wrote at once any
    /// batch of 512 or more wrote 53 batches here.) Returns the largest batch.
    fn busy_stream(batching: Batching) -> usize {
        let stats = Arc::new(PipelineStats::default());
        let sink = Counting::new(batching);
        let (seen, batches, largest) = (
            sink.seen.clone(),
            sink.batches.clone(),
            sink.largest.clone(),
        );
        let thread = SinkThread::spawn(sink, (100_000, usize::MAX / 2), stats.clone()).unwrap();
        let started = Instant::now();
        let (bursts, per_burst) = (100, 600);
        for burst in 0..bursts {
            for id in 0..per_burst {
                offer(&thread, event(burst * per_burst + id));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        thread.finish();
        let elapsed = started.elapsed();
        let batches = batches.load(Ordering::Relaxed);
        let total = (bursts * per_burst) as usize;
        let Batching { linger, max_events } = batching;
        let most = (elapsed.as_micros() / linger.as_micros()) as usize + total / max_events + 1;
        assert!(
            batches <= most,
            "{batches} batches in {elapsed:?}: more than one per {linger:?} and the full ones"
        );
        assert_eq!(stats.sink_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(*seen.lock().unwrap(), (0..total as u64).collect::<Vec<_>>());
        largest.load(Ordering::Relaxed)
    }

    #[test]
    fn a_busy_stream_is_written_a_batch_per_linger() {
        busy_stream(Batching::DEFAULT);
    }

    /// The thread gathers as the sink asks: a longer linger makes fewer batches (at 20 ms this
    /// stream takes at least ten), and no batch holds more than the sink's `max_events`.
    #[test]
    fn a_sink_s_own_batching_is_followed() {
        let long = Batching {
            linger: Duration::from_millis(80),
            max_events: 30_000,
        };
        assert!(busy_stream(long) <= long.max_events);
        let small = Batching {
            linger: Duration::from_millis(20),
            max_events: 500,
        };
        let largest = busy_stream(small);
        assert!(largest <= small.max_events, "a batch of {largest}");
    }

    /// At the default bounds, a writer's queue takes the ends of 100,000 held flows (a
    /// response end and a connection end each) by count and by bytes, so a socketless hold's
    /// clients leaving at once never lose their rows' ends.
    #[test]
    fn a_writer_queue_takes_the_ends_of_100000_flows_at_the_default_bounds() {
        let (count, bytes) = writer_queue(&crate::config::StorageConfig::default());
        let response_end = Event::ResponseEnd(crate::event::ResponseEnd {
            conn_id: 1,
            request_seq: 1,
            closed_at: SystemTime::now(),
            bytes_sent: 1200,
            duration_s: 900.0,
            end_reason: "client_reset",
            client_fin_s: None,
        });
        let per_flow = response_end.queued_bytes() + event(1).queued_bytes();
        assert!(count >= 200_000, "{count} events");
        assert!(
            per_flow * 100_000 <= bytes,
            "{per_flow} B a flow, {bytes} B"
        );
    }

    /// A sink that waits until it is let go: what it has not written stays queued.
    struct Stalled {
        open: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Sink for Stalled {
        fn name(&self) -> &'static str {
            "stalled"
        }
        fn write_batch(&mut self, _: &[Arc<Event>]) -> Result<(), SinkError> {
            while !self.open.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_holds_at_most_its_byte_budget() {
        let stats = Arc::new(PipelineStats::default());
        let one = event(0).queued_bytes();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = SinkThread::spawn(
            Stalled { open: open.clone() },
            (1000, one * 5),
            stats.clone(),
        )
        .unwrap();
        for id in 0..100 {
            offer(&thread, event(id));
        }
        // At most five events' worth queued (with the stalled batch); the rest dropped and
        // counted.
        assert!(thread.bytes.used() <= one * 5);
        assert_eq!(stats.sink_dropped.load(Ordering::Relaxed), 95);
        // Written batches give their bytes back.
        open.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while thread.bytes.used() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(thread.bytes.used(), 0);
        offer(&thread, event(100));
        thread.finish();
        assert_eq!(stats.sink_dropped.load(Ordering::Relaxed), 95);
    }
}
