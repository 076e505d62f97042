//! The pipeline: an ordinary tokio runtime, off the io_uring workers, that takes events from the
//! bounded channel and hands each to every sink.
//!
//! This is where enrichment (GeoIP) and reporting (AbuseIPDB) plug in: they are async, may be
//! slow, and must never make a worker wait. The workers' only contact with it is
//! [`EventSender::send`], which never blocks.

pub mod canary;
mod channel;
pub mod learner;
pub mod scanner;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub use crate::queue::PipelineStats;
pub use channel::{EventReceiver, EventSender, event_channel};

use tokio::sync::mpsc;

use crate::abuseipdb::Reporter;
use crate::adaptive::model::FamilyBatch;
use crate::classify::{LiveRules, RequestView};
use crate::event::{Event, RequestRecord};
use crate::fingerprint::Fingerprint;
use crate::geoip::GeoIp;
use crate::metrics::MetricsSink;
use crate::sink::SinkThread;
use learner::Learner;

/// How often lost events are reported in the diagnostics log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// The running pipeline; [`Pipeline::finish`] drains it.
#[derive(Debug)]
pub struct Pipeline {
    thread: JoinHandle<()>,
}

impl Pipeline {
    /// Starts the pipeline thread, which runs until every [`EventSender`] is dropped, then
    /// writes out everything queued.
    pub fn start(
        rx: EventReceiver,
        enrichment: Enrichment,
        sinks: Vec<SinkThread>,
        stats: Arc<PipelineStats>,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the pipeline runtime")?;
        let thread = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || runtime.block_on(run(rx, enrichment, sinks, stats)))
            .context("starting the pipeline thread")?;
        Ok(Self { thread })
    }

    /// Waits until every event sent before the senders were dropped has been written.
    pub fn finish(self) {
        if self.thread.join().is_err() {
            tracing::error!("the pipeline thread panicked");
        }
    }
}

/// What the pipeline does with requests besides recording them.
#[derive(Debug, Default)]
pub struct Enrichment {
    /// GeoIP/ASN lookups of the client address.
    pub geoip: Option<GeoIp>,
    /// AbuseIPDB reporting, started on the pipeline runtime.
    pub reporter: Option<crate::abuseipdb::ReporterSetup>,
    /// Prometheus metrics: where to serve them, and the tarpit's own port (for labels).
    pub metrics: Option<(std::net::SocketAddr, u16)>,
    /// The classification rules (re-read when the operator file changes).
    pub rules: Option<LiveRules>,
    /// The adaptive mode's give-up model (learns from responses, publishes to the workers).
    pub learner: Option<Learner>,
    /// Shipping to ClickHouse (reads the SQLite outbox, so it runs beside the sinks).
    pub shipper: Option<crate::ship::ShipperSetup>,
    /// The adaptive mode's exchange of give-up figures with the fleet (needs `learner`).
    pub fleet: Option<crate::ship::fleet::FleetSetup>,
    /// Canary tokens: issued ones noted, every request searched (`TARPIT_CANARY_KEY` set).
    pub canary: Option<canary::CanaryStage>,
    /// The fleet's canary tokens through ClickHouse (needs `canary`).
    pub canary_fleet: Option<crate::ship::canary::CanaryFleetSetup>,
    /// Research scanners: the `scanner:<org>` tags (`[scanners] enabled`).
    pub scanners: Option<scanner::ScannerStage>,
    /// The live sharing outputs (`[share.*]`), reading SQLite after their cursors.
    pub sharing: Vec<crate::share::push::PushSetup>,
}

/// How often the operator's rule file is checked for changes.
const RULES_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How long a stopping tarpit keeps shipping what its last moments recorded.
const SHIP_GRACE: Duration = Duration::from_secs(5);

/// How often the give-up model publishes its figures and stores its changes.
const LEARNER_INTERVAL: Duration = Duration::from_millis(500);

/// Most events taken from the workers' channel in one go.
const BURST_MAX: usize = 1024;

/// How long the pipeline lets events gather once it has caught up. A worker's send wakes the
/// pipeline's thread only when the pipeline is waiting on the channel, and that wake-up (an
/// `eventfd` write on the worker, a context switch here) cost more than handling the event: at
/// 40,000 events a second, waking for each cost the workers a system call per event. Waiting
/// this long makes it one wake-up per burst, for a few milliseconds more before a row is
/// written, which nothing downstream notices (a drip tick is 1.5 s).
const LINGER: Duration = Duration::from_millis(2);

/// The pipeline's work on a request before it is recorded: the fingerprint strings from what
/// the worker captured, then the tags, then the canary tokens (the request is decoded once,
/// for both).
fn fingerprint_and_classify(
    record: &mut RequestRecord,
    rules: Option<&LiveRules>,
    canary: Option<&mut canary::CanaryStage>,
) {
    record.fingerprint = Some(Box::new(Fingerprint::compute(
        record.syn.as_ref(),
        record.client_hello.as_deref(),
        record.header_order.take(),
    )));
    record.client_hello = None; // fingerprinted: no sink needs the bytes
    if rules.is_none() && canary.is_none() {
        return;
    }
    let fields = crate::classify::normalize::Fields::of(&request_view(record));
    if let Some(rules) = rules {
        record.tags = rules
            .classifier()
            .classify_fields(&request_view(record), &fields);
    }
    if let Some(canary) = canary {
        canary.on_request(record, &fields);
    }
}

/// The classifier's view of a live request: the same fields `tarpit classify` reads back from
/// the database, so a stored row re-tags to what it was tagged live.
pub fn request_view(record: &RequestRecord) -> RequestView<'_> {
    RequestView {
        method: record.http_method.as_deref(),
        path: record.http_path.as_deref(),
        query: record.http_query.as_deref(),
        headers: &record.headers_json,
        user_agent: record.user_agent.as_deref(),
        body: record.body_preview.as_deref(),
        raw: record.raw_preview.as_deref(),
    }
}

async fn run(
    mut rx: EventReceiver,
    mut enrichment: Enrichment,
    sinks: Vec<SinkThread>,
    stats: Arc<PipelineStats>,
) {
    let mut report = tokio::time::interval(DROP_REPORT_INTERVAL);
    report.tick().await;
    let mut rules_check = tokio::time::interval(RULES_CHECK_INTERVAL);
    rules_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut learner_tick = tokio::time::interval(LEARNER_INTERVAL);
    learner_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = (0, 0);
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let verifier = enrichment.scanners.as_ref().and_then(|s| s.verifier());
    let mut reporter = enrichment
        .reporter
        .take()
        .map(|setup| Reporter::start(setup, outcome_tx, verifier));
    let shipper = enrichment.shipper.take().map(crate::ship::Shipper::start);
    let fleet = match (enrichment.fleet.take(), enrichment.learner.as_mut()) {
        (Some(setup), Some(learner)) => {
            let (figures, received) = tokio::sync::watch::channel(Default::default());
            learner.follow_fleet(received);
            let (setup, figures) = (Arc::new(setup), Arc::new(figures));
            Some(supervised("the fleet exchange", move |stopped| {
                crate::ship::fleet::run(setup.clone(), figures.clone(), stopped)
            }))
        }
        _ => None,
    };
    let (canary_fleet, mut fleet_issues) =
        match (enrichment.canary_fleet.take(), &enrichment.canary) {
            (Some(setup), Some(_)) => {
                let (issues, received) = mpsc::channel(4);
                let setup = Arc::new(setup);
                let task = supervised("the canary token exchange", move |stopped| {
                    crate::ship::canary::run(setup.clone(), issues.clone(), stopped)
                });
                (Some(task), Some(received))
            }
            _ => (None, None),
        };
    let (sharing_stop, sharing_stopped) = tokio::sync::watch::channel(false);
    let sharing: Vec<_> = enrichment
        .sharing
        .drain(..)
        .map(|setup| tokio::spawn(crate::share::push::run(setup, sharing_stopped.clone())))
        .collect();
    let mut metrics =
        enrichment
            .metrics
            .and_then(|(addr, own_port)| match crate::metrics::serve(addr) {
                Ok(()) => Some(MetricsSink::new(own_port, stats.clone())),
                Err(e) => {
                    tracing::warn!("{e}; metrics off");
                    None
                }
            });
    let mut burst = Vec::with_capacity(BURST_MAX);
    loop {
        tokio::select! {
            taken = rx.recv_many(&mut burst, BURST_MAX) => {
                if taken == 0 {
                    break;
                }
                for mut event in burst.drain(..) {
                    if let (Event::ResponseEnd(end), Some(learner)) =
                        (&event, enrichment.learner.as_mut())
                    {
                        learner.on_response_end(end);
                    }
                    if let Event::Request(record) = &mut event {
                        fingerprint_and_classify(
                            record,
                            enrichment.rules.as_ref(),
                            enrichment.canary.as_mut(),
                        );
                        if let Some(scanners) = enrichment.scanners.as_mut() {
                            scanners.on_request(record);
                        }
                        if let Some(learner) = enrichment.learner.as_mut() {
                            learner.on_request(record);
                        }
                        if let Some(geoip) = enrichment.geoip.as_mut() {
                            geoip.enrich(record);
                        }
                        if let Some(reporter) = reporter.as_mut() {
                            reporter.offer(record);
                        }
                    }
                    if let Some(metrics) = metrics.as_mut() {
                        metrics.observe(&event);
                    }
                    deliver(event, &sinks, &stats)
                }
                if let Some(metrics) = metrics.as_ref() {
                    metrics.publish_totals();
                }
                if taken < BURST_MAX {
                    // Caught up: let the next events gather instead of being woken for each.
                    tokio::time::sleep(LINGER).await;
                }
            }
            Some(issues) = async {
                match fleet_issues.as_mut() {
                    Some(received) => received.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(canary) = enrichment.canary.as_mut() {
                    canary.add_fleet(issues);
                }
            }
            proven = async {
                match enrichment.scanners.as_mut() {
                    Some(scanners) => scanners.next_proven().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(metrics) = metrics.as_mut() {
                    metrics.observe(&proven);
                }
                deliver(proven, &sinks, &stats)
            }
            Some(outcome) = outcomes.recv() => {
                if let Some(metrics) = metrics.as_mut() {
                    metrics.observe(&outcome);
                }
                deliver(outcome, &sinks, &stats)
            }
            _ = report.tick() => {
                reported = report_drops(&stats, reported);
                if let Some(metrics) = metrics.as_ref() {
                    metrics.publish_totals();
                }
            }
            _ = learner_tick.tick() => {
                store_families(enrichment.learner.as_mut(), metrics.as_mut(), &sinks, &stats);
            }
            _ = rules_check.tick() => {
                if let Some(rules) = enrichment.rules.as_mut() {
                    rules.reload_if_changed();
                }
            }
        }
    }
    if let Some(reporter) = reporter {
        reporter.stop();
    }
    for (stop, task) in fleet.into_iter().chain(canary_fleet) {
        let _ = stop.send(true);
        task.abort();
    }
    // Whatever the outputs had not sent waits in SQLite behind their cursors.
    let _ = sharing_stop.send(true);
    for task in sharing {
        task.abort();
    }
    while let Ok(outcome) = outcomes.try_recv() {
        deliver(outcome, &sinks, &stats);
    }
    store_families(
        enrichment.learner.as_mut(),
        metrics.as_mut(),
        &sinks,
        &stats,
    );
    for sink in sinks {
        sink.finish();
    }
    // Every row is in SQLite now: one last pass ships the rows the shutdown closed.
    if let Some(shipper) = shipper {
        shipper.finish(SHIP_GRACE).await;
    }
    report_drops(&stats, reported);
}

/// Starts a task on the pipeline's runtime under [`crate::ship::supervise`] (started again
/// after a panic), given what tells it to stop; returns what stops it, and its handle.
fn supervised<F>(
    what: &'static str,
    task: impl Fn(tokio::sync::watch::Receiver<bool>) -> F + Send + 'static,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let restart = stopped.clone();
    let handle = tokio::spawn(crate::ship::supervise(
        what,
        restart,
        crate::ship::RESTART_AFTER,
        move || Ok(task(stopped.clone())),
    ));
    (stop, handle)
}

/// Publishes the give-up model's figures and sends its changed families to the sinks.
fn store_families(
    learner: Option<&mut Learner>,
    metrics: Option<&mut MetricsSink>,
    sinks: &[SinkThread],
    stats: &PipelineStats,
) {
    if let Some(learner) = learner
        && let Some(rows) = learner.tick()
    {
        let keep = learner.max_families();
        let event = Event::GiveUpFamilies(Arc::new(FamilyBatch { rows, keep }));
        if let Some(metrics) = metrics {
            metrics.observe(&event);
        }
        deliver(event, sinks, stats);
    }
}

fn deliver(event: Event, sinks: &[SinkThread], stats: &PipelineStats) {
    let size = event.queued_bytes();
    let event = Arc::new(event);
    for sink in sinks {
        sink.offer(event.clone(), size);
    }
    stats.delivered.fetch_add(1, Ordering::Relaxed);
}

/// Warns when events were lost since the last report; returns the new totals.
fn report_drops(stats: &PipelineStats, (channel_before, sinks_before): (u64, u64)) -> (u64, u64) {
    let channel = stats.dropped_events.load(Ordering::Relaxed);
    let sinks = stats.sink_dropped.load(Ordering::Relaxed);
    if channel > channel_before || sinks > sinks_before {
        tracing::warn!(
            dropped_events = channel,
            sink_dropped = sinks,
            new_dropped_events = channel - channel_before,
            new_sink_dropped = sinks - sinks_before,
            "events were lost: the event queue or a sink could not keep up"
        );
    }
    (channel, sinks)
}
