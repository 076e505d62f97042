//! The metrics as a real Prometheus sees them (Debian's `prometheus` and `promtool`): the
//! exposition passes `promtool check metrics`, Prometheus scrapes the tarpit, and every query of
//! the Grafana dashboard is valid there and returns data for what the traffic produced.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fronts::free_port;
use common::netns::prerequisites_met;
use common::{FAST, Tarpit, read_response, wait_for};
use percent_encoding::NON_ALPHANUMERIC;

/// An HTTP/1.0 GET on loopback; the body.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

/// Kills Prometheus when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_tarpit_and_the_dashboard_queries_return_data() {
    if !prerequisites_met(&["prometheus", "promtool"]) {
        return;
    }
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let args = [
        FAST,
        &["--metrics-listen", &listen, "--max-connections", "1"],
    ]
    .concat();
    let tarpit = Tarpit::start(&args);
    // Traffic for the dashboard: requests (one tagged), a refused connection, dripped bytes.
    for path in ["/wp-login.php", "/"] {
        let mut stream = tarpit.connect();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n").as_bytes(),
            )
            .unwrap();
        if path == "/" {
            // Held; a second connection is over the cap of one.
            let mut second = tarpit.connect();
            let mut byte = [0u8; 1];
            let _ = second.read(&mut byte);
            read_response(&mut stream);
        } else {
            read_response(&mut stream);
        }
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason IS NOT NULL",
        3,
    );

    // The exposition passes promtool's lint.
    let exposition = wait_for(Duration::from_secs(10), || {
        get(metrics_port, "/metrics").filter(|body| body.contains("tarpit_requests_total"))
    })
    .expect("the exposition");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Prometheus scrapes it every second.
    let dir = tempfile::tempdir().unwrap();
    let prometheus_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tarpit\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .current_dir(dir.path())
        .args([
            "--config.file=prometheus.yml",
            "--storage.tsdb.path=data",
            &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    let _prometheus = Killed(child);
    let query = |expr: &str| -> Option<serde_json::Value> {
        let encoded = percent_encoding::utf8_percent_encode(expr, NON_ALPHANUMERIC);
        let body = get(prometheus_port, &format!("/api/v1/query?query={encoded}"))?;
        serde_json::from_str(&body).ok()
    };
    // Enough scrapes for rate() over the dashboard's windows (two samples at least).
    wait_for(Duration::from_secs(30), || {
        let answer = query("count_over_time(up{job=\"tarpit\"}[1m])")?;
        let samples = answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (samples >= 3.0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "Prometheus did not scrape the tarpit: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        )
    });

    // Every dashboard query is valid; those about what the traffic produced return data.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/tarpit.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Nothing in this test makes these: no AbuseIPDB key, no GeoIP database, no eBPF hook
    // asked, the drip mode (no give-up figures), no lost events.
    let quiet = [
        "tarpit_abuseipdb_reports_total",
        "tarpit_geoip_lookups_total",
        "tarpit_ebpf_lookups_total",
        "tarpit_giveup_seconds",
        "tarpit_events_dropped_total",
        "attack:",
    ];
    let mut with_data = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let answer = query(expr).unwrap_or_else(|| panic!("no answer for {expr}"));
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
            let results = answer["data"]["result"].as_array().unwrap();
            if quiet.iter().any(|q| expr.contains(q)) {
                continue;
            }
            assert!(
                !results.is_empty(),
                "{}: no data for {expr}",
                panel["title"]
            );
            with_data += 1;
        }
    }
    assert!(with_data >= 10, "{with_data} queries returned data");
}
