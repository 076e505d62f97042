//! The pipeline: an ordinary tokio runtime, off the io_uring workers, that takes events from the
//! bounded channel and hands each to every sink.
//!
//! This is where enrichment (GeoIP) and reporting (AbuseIPDB) plug in: they are async, may be
//! slow, and must never make a worker wait. The workers' only contact with it is
//! [`EventSender::send`], which never blocks.

mod channel;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub use crate::queue::PipelineStats;
pub use channel::{EventReceiver, EventSender, event_channel};

use tokio::sync::mpsc;

use crate::abuseipdb::Reporter;
use crate::event::Event;
use crate::geoip::GeoIp;
use crate::metrics::MetricsSink;
use crate::sink::SinkThread;

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
}

async fn run(
    mut rx: EventReceiver,
    mut enrichment: Enrichment,
    sinks: Vec<SinkThread>,
    stats: Arc<PipelineStats>,
) {
    let mut report = tokio::time::interval(DROP_REPORT_INTERVAL);
    report.tick().await;
    let mut reported = (0, 0);
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let mut reporter = enrichment
        .reporter
        .take()
        .map(|setup| Reporter::start(setup, outcome_tx));
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
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(mut event) => {
                    if let Event::Request(record) = &mut event {
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
                None => break,
            },
            Some(outcome) = outcomes.recv() => {
                if let Some(metrics) = metrics.as_mut() {
                    metrics.observe(&outcome);
                }
                deliver(outcome, &sinks, &stats)
            }
            _ = report.tick() => reported = report_drops(&stats, reported),
        }
    }
    if let Some(reporter) = reporter {
        reporter.stop();
    }
    while let Ok(outcome) = outcomes.try_recv() {
        deliver(outcome, &sinks, &stats);
    }
    for sink in sinks {
        sink.finish();
    }
    report_drops(&stats, reported);
}

fn deliver(event: Event, sinks: &[SinkThread], stats: &PipelineStats) {
    let event = Arc::new(event);
    for sink in sinks {
        sink.offer(event.clone());
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
