//! Prometheus metrics, derived from the event stream on the pipeline.
//!
//! Metrics are one more consumer of events, so the io_uring workers pay nothing for them: every
//! counter below is computed from the events the workers already send (a dropped event is
//! missing here too, and `tarpit_events_dropped_total` says how many). The exposition is served
//! by `metrics-exporter-prometheus` on `[metrics] listen`; no hand-written HTTP.
//!
//! Labels stay low-cardinality: no addresses, no paths; methods from the standard list (else
//! `other`); target ports from a fixed set of commonly scanned ports plus the tarpit's own (else
//! `other`).

mod counters;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{counter, gauge};

use counters::{Counters, Series, Value};

use crate::adaptive::FamilyKind;
use crate::event::Event;
use crate::queue::PipelineStats;

/// Ports that get their own `target_port` label value; every other port is `other`.
const LABELLED_PORTS: &[u16] = &[
    21, 22, 23, 25, 80, 81, 88, 443, 1433, 2375, 3000, 3306, 5000, 5432, 5601, 6379, 6443, 7001,
    8000, 8008, 8080, 8081, 8443, 8888, 9000, 9090, 9200, 10000,
];

/// Methods that get their own `method` label value.
const LABELLED_METHODS: &[&str] = &[
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PRI",
];

/// Bucket bounds (seconds) of `tarpit_sink_batch_seconds`: a batch takes well under a
/// millisecond on a healthy disk and seconds on a stalled one.
const SINK_BATCH_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the Prometheus recorder and starts its HTTP listener on the current runtime.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    let err = |reason: String| MetricsError { addr, reason };
    // The batch latency is a real histogram (the dashboard takes its p99 with
    // histogram_quantile); the exporter would otherwise render it as a summary.
    let batch = metrics_exporter_prometheus::Matcher::Full("tarpit_sink_batch_seconds".into());
    let (recorder, exporter) = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(batch, SINK_BATCH_BUCKETS)
        .map_err(|e| err(e.to_string()))?
        .build()
        .map_err(|e| err(e.to_string()))?;
    metrics::set_global_recorder(recorder).map_err(|e| err(e.to_string()))?;
    describe();
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::error!("metrics listener stopped: {e:?}");
        }
    });
    tracing::info!("Prometheus metrics on http://{addr}/metrics");
    Ok(())
}

/// Every metric's help text and unit (`promtool check metrics` wants them; Grafana shows them).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for (name, help) in [
        (
            "tarpit_connections_accepted_total",
            "Connections accepted (refused ones included).",
        ),
        (
            "tarpit_connections_refused_total",
            "Connections refused by a cap, by reason.",
        ),
        (
            "tarpit_connection_end_total",
            "Connections ended, by reason.",
        ),
        (
            "tarpit_requests_total",
            "Requests recorded, by method and target port.",
        ),
        (
            "tarpit_port_attribution_total",
            "Requests by the source of their target port.",
        ),
        (
            "tarpit_response_mode_total",
            "Requests by response mode (drip or adaptive).",
        ),
        (
            "tarpit_ebpf_lookups_total",
            "eBPF map lookups of accepted sockets, by result.",
        ),
        (
            "tarpit_ebpf_map_misses_total",
            "Translated connections the eBPF map did not know.",
        ),
        (
            "tarpit_request_tags_total",
            "Requests per classification tag.",
        ),
        ("tarpit_response_end_total", "Responses ended, by reason."),
        (
            "tarpit_abuseipdb_reports_total",
            "AbuseIPDB report outcomes.",
        ),
        (
            "tarpit_events_dropped_total",
            "Events dropped because the event queue was full.",
        ),
        (
            "tarpit_sink_events_dropped_total",
            "Events a sink dropped because its queue was full.",
        ),
        (
            "tarpit_accepts_throttled_total",
            "Accepts held back (at most 10 ms each) while a recording queue was over half full.",
        ),
        (
            "tarpit_geoip_lookups_total",
            "GeoIP lookups of client addresses, by result.",
        ),
        (
            "tarpit_ship_rows_total",
            "Requests shipped to ClickHouse (a request shipped open and again ended counts twice).",
        ),
        (
            "tarpit_ship_failures_total",
            "Shipping attempts that failed (ClickHouse down, refused, or SQLite busy).",
        ),
        (
            "tarpit_ship_restarts_total",
            "Times the shipper or the fleet exchange stopped on a panic and was started again.",
        ),
        (
            "tarpit_fleet_failures_total",
            "Exchanges of give-up figures with the fleet that failed.",
        ),
        (
            "tarpit_canary_tokens_issued_total",
            "Canary tokens served in bait (a client served the same bait again counts again).",
        ),
        (
            "tarpit_canary_sightings_total",
            "Issued canary tokens found in requests, by where in the request.",
        ),
        (
            "tarpit_scanner_hosts_verified_total",
            "Client addresses proven research scanners' by forward-confirmed reverse DNS, by organisation.",
        ),
        (
            "tarpit_share_sent_total",
            "Requests sent by a live sharing output (DShield, TAXII, HPFeeds), by output.",
        ),
        (
            "tarpit_share_failures_total",
            "Passes of a live sharing output that failed (they are tried again), by output.",
        ),
    ] {
        describe_counter!(name, help);
    }
    describe_gauge!(
        "tarpit_fleet_families",
        "Families the fleet gives a give-up figure for (the adaptive mode's fleet exchange)."
    );
    describe_counter!(
        "tarpit_bytes_dripped_total",
        Unit::Bytes,
        "Payload bytes dripped to clients."
    );
    describe_counter!(
        "tarpit_attacker_seconds_total",
        Unit::Seconds,
        "Seconds clients were held, summed over requests."
    );
    describe_gauge!("tarpit_connections_active", "Connections open now.");
    describe_gauge!(
        "tarpit_classify_backlog_rows",
        "Stored requests the OWASP CRS stage has not evaluated yet."
    );
    describe_counter!(
        "tarpit_crs_evaluated_rows_total",
        "Stored requests the OWASP CRS stage has evaluated."
    );
    describe_counter!(
        "tarpit_crs_skipped_rows_total",
        "Stored requests the OWASP CRS stage passed over to keep its backlog under crs_backlog_max."
    );
    describe_gauge!(
        "tarpit_giveup_seconds",
        Unit::Seconds,
        "The adaptive mode's learned give-up time, per tool."
    );
    describe_gauge!(
        "tarpit_share_backlog",
        "Requests recorded after a live sharing output's cursor, by output."
    );
    describe_gauge!(
        "tarpit_ship_pending_rows",
        "Requests in the shipping outbox: not yet acknowledged by ClickHouse."
    );
    describe_gauge!(
        "tarpit_ship_oldest_pending_seconds",
        Unit::Seconds,
        "Age of the oldest change in the shipping outbox."
    );
    describe_histogram!(
        "tarpit_sink_batch_seconds",
        Unit::Seconds,
        "Seconds one batch took to write, by sink."
    );
}

/// Turns events into metric updates.
#[derive(Debug)]
pub struct MetricsSink {
    own_port: u16,
    stats: Arc<PipelineStats>,
    active: i64,
    /// Seconds scanners have been held, summed exactly (counters take whole numbers).
    held_seconds: f64,
    /// The counters' handles, so an event is counted without a registry look-up.
    counters: Counters,
}

impl MetricsSink {
    /// `own_port` is the tarpit's listening port (it gets its own label value).
    pub fn new(own_port: u16, stats: Arc<PipelineStats>) -> Self {
        Self {
            own_port,
            stats,
            active: 0,
            held_seconds: 0.0,
            counters: Counters::default(),
        }
    }

    fn port_label(&self, port: u16) -> Value {
        Value::Port((port == self.own_port || LABELLED_PORTS.contains(&port)).then_some(port))
    }

    /// Adds `n` to `series`.
    fn count(&mut self, series: Series, n: u64) {
        self.counters.get(series).increment(n);
    }

    /// Updates the metrics for one event.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::ConnectionOpened(_) => {
                self.count(Series::plain("tarpit_connections_accepted_total"), 1);
                self.active += 1;
            }
            Event::ConnectionClosed(e) => {
                if let Some(reason) = e.end_reason.strip_prefix("refused_") {
                    let series = Series::labelled(
                        "tarpit_connections_refused_total",
                        "reason",
                        Value::Text(reason),
                    );
                    self.count(series, 1);
                }
                let reason = Value::Text(e.end_reason);
                self.count(
                    Series::labelled("tarpit_connection_end_total", "reason", reason),
                    1,
                );
                self.active -= 1;
            }
            Event::Request(r) => {
                let method = match r.http_method.as_deref() {
                    Some(m) => LABELLED_METHODS
                        .iter()
                        .find(|known| known.eq_ignore_ascii_case(m))
                        .copied()
                        .unwrap_or("other"),
                    None => "none",
                };
                let port = self.port_label(r.target_port);
                let requests = Series::labelled_twice(
                    "tarpit_requests_total",
                    ("method", Value::Text(method)),
                    ("target_port", port),
                );
                self.count(requests, 1);
                let source = Value::Text(r.target_port_source);
                self.count(
                    Series::labelled("tarpit_port_attribution_total", "source", source),
                    1,
                );
                let mode = Value::Text(r.response_mode);
                self.count(
                    Series::labelled("tarpit_response_mode_total", "mode", mode),
                    1,
                );
                if let Some(lookup) = r.ebpf_lookup {
                    let result = Value::Text(lookup);
                    self.count(
                        Series::labelled("tarpit_ebpf_lookups_total", "result", result),
                        1,
                    );
                }
                if crate::attribution::recorded_ebpf_miss(r.ebpf_lookup, r.target_port_source) {
                    self.count(Series::plain("tarpit_ebpf_map_misses_total"), 1);
                }
                if let Some(canary) = r.canary.as_deref() {
                    let issued = canary.issued.len() as u64;
                    self.count(Series::plain("tarpit_canary_tokens_issued_total"), issued);
                    // Locations are a fixed set of six names.
                    for sighting in &canary.sightings {
                        let location = Value::Text(sighting.location);
                        self.count(
                            Series::labelled("tarpit_canary_sightings_total", "location", location),
                            1,
                        );
                    }
                }
                // Label values come only from the rule set's tags, so the series are bounded.
                for tag in &r.tags {
                    let tag = Value::Shared(tag.clone());
                    self.count(Series::labelled("tarpit_request_tags_total", "tag", tag), 1);
                }
            }
            Event::ResponseEnd(e) => {
                self.count(Series::plain("tarpit_bytes_dripped_total"), e.bytes_sent);
                // The tarpit's headline figure: how long scanners were kept busy.
                self.held_seconds += e.duration_s;
                self.counters
                    .get(Series::plain("tarpit_attacker_seconds_total"))
                    .absolute(self.held_seconds as u64);
                let reason = Value::Text(e.end_reason);
                self.count(
                    Series::labelled("tarpit_response_end_total", "reason", reason),
                    1,
                );
            }
            Event::AbuseReport(e) => {
                let outcome = Value::Text(e.outcome);
                self.count(
                    Series::labelled("tarpit_abuseipdb_reports_total", "outcome", outcome),
                    1,
                );
            }
            Event::ScannerHost(e) => {
                // Organisations come only from the scanner catalogue: bounded.
                let org = Value::Shared(e.org.clone());
                self.count(
                    Series::labelled("tarpit_scanner_hosts_verified_total", "org", org),
                    1,
                );
            }
            Event::GiveUpFamilies(batch) => {
                // Tool names come only from the rule set's tags and the priors: bounded.
                for row in batch
                    .rows
                    .iter()
                    .filter(|r| r.family.kind == FamilyKind::Tool)
                {
                    if let Some(seconds) = row.give_up_s {
                        gauge!("tarpit_giveup_seconds", "tool" => row.family.name.clone())
                            .set(seconds);
                    }
                }
            }
        }
    }

    /// Publishes the totals that are states rather than counts of events (connections open,
    /// events lost so far): once per burst of events and on the pipeline's periodic report,
    /// not for every event (three registry look-ups each, a fifth of a connection's metrics
    /// work under churn).
    pub fn publish_totals(&self) {
        gauge!("tarpit_connections_active").set(self.active as f64);
        counter!("tarpit_events_dropped_total")
            .absolute(self.stats.dropped_events.load(Ordering::Relaxed));
        counter!("tarpit_sink_events_dropped_total")
            .absolute(self.stats.sink_dropped.load(Ordering::Relaxed));
        counter!("tarpit_accepts_throttled_total")
            .absolute(self.stats.throttled_accepts.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests;
