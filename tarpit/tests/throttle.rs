//! Accepts held back while the recording is behind (`server::throttle`): a sink that cannot
//! write (the JSON log is a FIFO nobody reads) fills its queue past half, and from then on each
//! accept waits a bounded moment for it; the tarpit still answers every connection, and
//! SQLite, which keeps up, records every one.

mod common;

use std::io::Write;
use std::time::Duration;

use common::Tarpit;

#[test]
fn a_stalled_sink_holds_accepts_back_without_stopping_them() {
    let dir = tempfile::tempdir().unwrap();
    // The JSON log's writes stall once the pipe's buffer is full, and its queue (64 KiB, the
    // smallest allowed) fills behind them.
    let (fifo, _reader) = common::stalled_log(dir.path());
    let metrics_port = common::fronts::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut tarpit = Tarpit::start_in(
        dir.path(),
        &[
            "--metrics-listen",
            &listen,
            "--json-log",
            fifo.to_str().unwrap(),
            "--event-queue-bytes",
            "65536",
            "--response-delay",
            "0.01",
            "--max-response-bytes",
            "1",
            "--workers",
            "2",
        ],
        0,
    );
    const CONNECTIONS: usize = 300;
    for i in 0..CONNECTIONS {
        let mut stream = tarpit.connect();
        write!(
            stream,
            "GET /held-back/{i} HTTP/1.1\r\nHost: sensor\r\n\r\n"
        )
        .unwrap();
        let response = common::read_response(&mut stream);
        assert!(response.starts_with(b"HTTP/1.1 200"), "connection {i}");
    }
    // SQLite keeps up: every connection has its row.
    assert_eq!(
        tarpit.wait_count(
            "SELECT COUNT(*) FROM events WHERE http_path LIKE '/held-back/%'",
            CONNECTIONS as i64
        ),
        CONNECTIONS as i64
    );
    // The counter of held-back accepts (the pipeline publishes it with each burst). The
    // tarpit is killed afterwards: a stalled JSON log keeps a clean stop waiting.
    let throttled = common::wait_for(Duration::from_secs(30), || {
        let text = common::scrape_metrics(metrics_port)?;
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tarpit_accepts_throttled_total "))?
            .trim()
            .parse()
            .ok()?;
        // The pipe (64 KiB) and half the queue (32 KiB) take the JSON lines of a few dozen
        // connections; every accept after that was held back.
        (value >= (CONNECTIONS / 2) as f64).then_some(value)
    });
    assert!(
        throttled.is_some(),
        "fewer than {} of {CONNECTIONS} accepts held back: {:?}",
        CONNECTIONS / 2,
        common::scrape_metrics(metrics_port)
    );
    tarpit.kill9();
}
