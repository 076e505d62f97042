use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use super::*;
use crate::event::{ConnectionClosed, ConnectionOpened, RequestRecord, ResponseEnd};

/// A recorder that counts how often each series is registered and keeps its value.
#[derive(Default)]
struct Registrations {
    counters: Mutex<HashMap<String, (u64, Arc<AtomicU64>)>>,
}

impl Registrations {
    /// `name{labels}` as registered: (registrations, value).
    fn of(&self, series: &str) -> (u64, u64) {
        let counters = self.counters.lock().unwrap();
        counters
            .get(series)
            .map_or((0, 0), |(n, value)| (*n, value.load(Ordering::Relaxed)))
    }

    fn series(&self) -> usize {
        self.counters.lock().unwrap().len()
    }
}

impl Recorder for Registrations {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut counters = self.counters.lock().unwrap();
        let entry = counters.entry(name).or_default();
        entry.0 += 1;
        Counter::from_arc(entry.1.clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The events of one churned connection: opened, a request for `port` with `method`, its
/// end, closed.
fn connection(conn_id: u64, method: &str, port: u16) -> [Event; 4] {
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let mut request = RequestRecord::sample(ip);
    request.conn_id = conn_id;
    request.http_method = Some(method.to_owned());
    request.target_port = port;
    request.tags = vec![Arc::from("tool:curl")];
    [
        Event::ConnectionOpened(ConnectionOpened {
            conn_id,
            timestamp: SystemTime::now(),
            peer_ip: ip,
            peer_port: 1,
            local_ip: ip,
            local_port: 8080,
            worker: 0,
        }),
        Event::Request(Box::new(request)),
        Event::ResponseEnd(ResponseEnd {
            conn_id,
            request_seq: 1,
            closed_at: SystemTime::now(),
            bytes_sent: 3,
            duration_s: 1.5,
            end_reason: "client_reset",
            client_fin_s: None,
        }),
        Event::ConnectionClosed(ConnectionClosed {
            conn_id,
            closed_at: SystemTime::now(),
            requests: 1,
            bytes_sent: 3,
            duration_s: 1.5,
            end_reason: "client_reset",
        }),
    ]
}

#[test]
fn each_series_is_registered_once_and_counts_every_event() {
    let recorder = Registrations::default();
    metrics::with_local_recorder(&recorder, || {
        let mut sink = MetricsSink::new(8080, Arc::new(PipelineStats::default()));
        for conn_id in 0..1_000 {
            for event in connection(conn_id, "GET", 80) {
                sink.observe(&event);
            }
        }
    });
    for (series, value) in [
        ("tarpit_connections_accepted_total{}", 1_000),
        ("tarpit_requests_total{method=GET,target_port=80}", 1_000),
        ("tarpit_request_tags_total{tag=tool:curl}", 1_000),
        ("tarpit_response_end_total{reason=client_reset}", 1_000),
        ("tarpit_connection_end_total{reason=client_reset}", 1_000),
        ("tarpit_bytes_dripped_total{}", 3_000),
        ("tarpit_attacker_seconds_total{}", 1_500),
    ] {
        // Registering on every event (what `counter!` does) made 1,000 registrations here.
        assert_eq!(recorder.of(series), (1, value), "{series}");
    }
}

#[test]
fn a_client_varying_methods_and_ports_adds_no_series() {
    let recorder = Registrations::default();
    metrics::with_local_recorder(&recorder, || {
        let mut sink = MetricsSink::new(8080, Arc::new(PipelineStats::default()));
        for conn_id in 0..5_000u64 {
            let method = format!("M{conn_id}");
            let port = 20_000 + conn_id as u16;
            for event in connection(conn_id, &method, port) {
                sink.observe(&event);
            }
        }
        assert_eq!(sink.counters.len(), recorder.series());
    });
    assert_eq!(
        recorder.of("tarpit_requests_total{method=other,target_port=other}"),
        (1, 5_000)
    );
    assert!(recorder.series() < 15, "{} series", recorder.series());
}
