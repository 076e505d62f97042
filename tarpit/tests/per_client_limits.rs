//! The per-client cap behind real front ends (HAProxy with `send-proxy-v2`, nginx with
//! X-Real-IP, both from apt): every scanner reaches the tarpit from the proxy's one address, so
//! the cap must count the client the proxy names. A client at its cap cannot starve another,
//! and the refused connection is recorded with the refused client's own address.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::fronts::{self, free_port};
use common::netns::prerequisites_met;
use common::{Tarpit, wait_for};

/// Slow enough that every admitted connection is still held while the test looks.
const HELD: &[&str] = &[
    "--response-delay",
    "0.5",
    "--max-response-bytes",
    "1000",
    "--workers",
    "2",
    "--max-connections-per-ip",
    "2",
];

/// Connects to the front end from `source` (another loopback address: another client).
fn connect_from(source: &str, front: u16) -> TcpStream {
    let stream = common::connect_from(source, format!("127.0.0.1:{front}").parse().unwrap());
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends a request and returns the first bytes of the answer (empty when the connection was
/// closed without one).
fn ask(stream: &mut TcpStream, path: &str) -> Vec<u8> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: sensor\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0; 256];
    let n = stream.read(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Scanner A (127.0.0.2) fills its cap and is refused one more; scanner B (127.0.0.3) is
/// still served; the database shows who was refused.
fn a_capped_client_cannot_starve_another(tarpit: &Tarpit, front: u16, expected_source: &str) {
    wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", front)).ok()
    })
    .expect("the front end listens");
    let mut held = Vec::new();
    for i in 0..2 {
        let mut stream = wait_for(Duration::from_secs(10), || {
            let mut stream = connect_from("127.0.0.2", front);
            let answer = ask(&mut stream, &format!("/a-{i}"));
            answer.starts_with(b"HTTP/1.1 200").then_some(stream)
        })
        .expect("scanner A's first two connections are served");
        held.push(stream.try_clone().unwrap());
        stream.flush().unwrap();
    }
    let mut third = connect_from("127.0.0.2", front);
    let answer = ask(&mut third, "/a-refused");
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "scanner A over its cap is refused: {}",
        String::from_utf8_lossy(&answer)
    );
    for i in 0..2 {
        let mut other = connect_from("127.0.0.3", front);
        let answer = ask(&mut other, &format!("/b-{i}"));
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "scanner B is served while A is at its cap: {}",
            String::from_utf8_lossy(&answer)
        );
        held.push(other);
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/a-refused' AND end_reason IS NOT NULL",
        1,
    );
    let (ip, source, reason): (String, String, String) = tarpit
        .db()
        .query_row(
            "SELECT client_ip, client_ip_source, end_reason FROM events
             WHERE http_path = '/a-refused'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (ip.as_str(), source.as_str(), reason.as_str()),
        ("127.0.0.2", expected_source, "refused_per_ip")
    );
    let refused_b: i64 = tarpit.count(
        "SELECT COUNT(*) FROM events WHERE client_ip = '127.0.0.3' AND end_reason LIKE 'refused%'",
    );
    assert_eq!(refused_b, 0);
    drop(held);
}

#[test]
fn behind_haproxy_the_cap_counts_each_scanner_not_the_proxy() {
    if !prerequisites_met(&["haproxy"]) {
        return;
    }
    let tarpit = Tarpit::start(&[HELD, &["--proxy-protocol", "true"]].concat());
    let front = free_port();
    let _haproxy = fronts::haproxy(&tarpit, front);
    a_capped_client_cannot_starve_another(&tarpit, front, "proxy-protocol");
}

#[test]
fn behind_nginx_the_cap_counts_each_scanner_not_the_proxy() {
    if !prerequisites_met(&["nginx"]) {
        return;
    }
    let tarpit = Tarpit::start(HELD);
    let front = free_port();
    let _nginx = fronts::nginx(&tarpit, front);
    a_capped_client_cannot_starve_another(&tarpit, front, "x-real-ip");
}
