//! Prometheus metrics: the endpoint serves counters derived from the events, with bounded
//! labels, and the Grafana dashboard only asks for metrics the tarpit exports.

mod common;

use std::io::Write;
use std::time::Duration;

use common::fronts::free_port;
use common::{FAST, Tarpit, read_response, scrape_metrics, wait_for};

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_what_happened_with_bounded_labels() {
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let tarpit = Tarpit::start(&[FAST, &["--metrics-listen", &listen]].concat());
    for (method, path) in [
        ("GET", "/a"),
        ("GET", "/b?x=1"),
        ("POST", "/c"),
        ("FOO", "/d"),
    ] {
        let mut s = tarpit.connect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        read_response(&mut s);
    }
    let port = tarpit.addr.port();
    let text = wait_for(Duration::from_secs(10), || {
        let text = scrape_metrics(metrics_port)?;
        (sample(&text, "tarpit_connection_end_total") == Some(4.0)).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "metrics never showed 4 ended connections: {:?}",
            scrape_metrics(metrics_port)
        )
    });
    assert_eq!(
        sample(&text, "tarpit_connections_accepted_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("tarpit_requests_total{{method=\"GET\",target_port=\"{port}\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("tarpit_requests_total{{method=\"other\",target_port=\"{port}\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    // Four responses of ten payload bytes each.
    assert_eq!(
        sample(&text, "tarpit_bytes_dripped_total"),
        Some(40.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tarpit_connections_active"),
        Some(0.0),
        "{text}"
    );
    assert!(text.contains("tarpit_sink_batch_seconds"), "{text}");
    // No addresses or paths in any label.
    assert!(
        !text.contains("127.0.0.1") && !text.contains("/a\""),
        "{text}"
    );
}

#[test]
fn the_grafana_dashboard_is_valid_and_uses_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/tarpit.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dashboard["title"], "tarpit");
    let exported = [
        "tarpit_connections_active",
        "tarpit_connections_accepted_total",
        "tarpit_connections_refused_total",
        "tarpit_attacker_seconds_total",
        "tarpit_requests_total",
        "tarpit_connection_end_total",
        "tarpit_abuseipdb_reports_total",
        "tarpit_port_attribution_total",
        "tarpit_ebpf_lookups_total",
        "tarpit_bytes_dripped_total",
        "tarpit_events_dropped_total",
        "tarpit_sink_events_dropped_total",
        "tarpit_accepts_throttled_total",
        "tarpit_sink_batch_seconds_bucket",
        "tarpit_geoip_lookups_total",
        "tarpit_request_tags_total",
        "tarpit_response_end_total",
        "tarpit_response_mode_total",
        "tarpit_giveup_seconds",
    ];
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 4);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let used: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tarpit_"))
                .collect();
            assert!(!used.is_empty(), "{expr}");
            for name in used {
                assert!(
                    exported.contains(&name),
                    "{} uses unknown metric {name}",
                    panel["title"]
                );
            }
        }
    }
}
