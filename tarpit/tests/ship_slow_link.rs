//! Shipping through a link too slow for a full batch within the timeout (Debian's ClickHouse
//! behind a loopback proxy that forwards the tarpit's bytes at 1 MB/s): batches are cut in bytes
//! and halved after each timeout, so every row arrives instead of one batch being retried, and
//! timing out, forever.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::clickhouse::{ClickHouse, PASSWORD, SERVER, ship_section};
use common::netns::prerequisites_met;
use common::{Tarpit, read_response, wait_for};

/// Bytes per second the proxy forwards towards ClickHouse.
const RATE: usize = 1 << 20;

/// A proxy to `upstream` that forwards what the client sends at [`RATE`], and the answers at
/// once. Its port.
fn slow_proxy(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut chunk = vec![0u8; 16 << 10];
                let started = Instant::now();
                let mut sent = 0usize;
                while let Ok(n) = client_in.read(&mut chunk) {
                    if n == 0 || server_out.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    let due = Duration::from_secs_f64(sent as f64 / RATE as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let _ = server_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut server_in, mut client_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_in, &mut client_out);
                let _ = client_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn a_slow_link_gets_every_row_through_smaller_batches() {
    if !prerequisites_met(&[SERVER, "curl"]) {
        return;
    }
    let server = ClickHouse::start();
    let proxy = slow_proxy(server.http_port);
    let ship = ship_section(&server, "timeout = 1.0")
        .replace(&server.url(), &format!("http://127.0.0.1:{proxy}"));
    // The rows are recorded first (shipping off), so that the shipper starts with all of them:
    // 40 requests whose User-Agent is 16,000 '"', about 100 KB each once shipped (JSON inside
    // JSON escapes it twice), 4 MB in all: four seconds through the link, against a 1 s timeout.
    let dir = tempfile::tempdir().unwrap();
    // The CRS off: this test is about the link, not about how long the CRS takes on these rows
    // (tests/crs_stop.rs).
    let base = "[server]\nworkers = 2\n[tarpit]\nresponse_delay = 0.02\nmax_response_bytes = 3\n\
                [classify]\ncrs = \"off\"\n";
    std::fs::write(dir.path().join("tarpit.toml"), base).unwrap();
    let env = [("TARPIT_CLICKHOUSE_PASSWORD", PASSWORD)];
    let mut tarpit = Tarpit::launch(dir.path(), &env, &["--config", "tarpit.toml"], 0);
    let user_agent = "\"".repeat(16_000);
    for n in 0..40 {
        let mut stream = TcpStream::connect(tarpit.addr).unwrap();
        let request = format!("GET /p{n} HTTP/1.1\r\nHost: t\r\nUser-Agent: {user_agent}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(read_response(&mut stream).starts_with(b"HTTP/1.1 200"));
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        40,
    );
    tarpit.terminate(Duration::from_secs(10));
    std::fs::write(dir.path().join("tarpit.toml"), format!("{base}{ship}")).unwrap();
    let tarpit = Tarpit::launch(dir.path(), &env, &["--config", "tarpit.toml"], 1);
    let shipped = wait_for(Duration::from_secs(180), || {
        let n = server.count("SELECT count() FROM tarpit.requests FINAL");
        (n >= 40).then_some(n)
    });
    let stderr = tarpit.stderr();
    assert_eq!(shipped, Some(40), "{stderr}");
    assert!(
        stderr.contains("shipping smaller batches"),
        "the first batch was too large for the link: {stderr}"
    );
    assert_eq!(
        server.count("SELECT min(length(user_agent)) FROM tarpit.requests FINAL"),
        16_000
    );
}
