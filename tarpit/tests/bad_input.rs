//! Hostile and broken clients: each is recorded with a reason, none crashes or stalls a worker.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{FAST, FAST_BODY, Tarpit, read_response, split_head};

/// Fast drip plus a short head timeout, so timeouts are quick to reach.
fn start() -> Tarpit {
    Tarpit::start(&[FAST, &["--request-timeout", "0.5"]].concat())
}

/// Waits for the single row of the test's one bad connection and returns
/// (error_message, raw_preview, response_status, end_reason).
fn bad_row(tarpit: &Tarpit) -> (String, Option<String>, Option<i64>, String) {
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL AND error_message IS NOT NULL",
        1,
    );
    tarpit
        .db()
        .query_row(
            "SELECT error_message, raw_preview, response_status, end_reason FROM events
             WHERE error_message IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

/// Sends `bytes`, expects the (HTTP/1.1, closing) drip in return, and returns the row.
fn send_and_expect_drip(tarpit: &Tarpit, bytes: &[u8]) -> (String, Option<String>) {
    let mut stream = tarpit.connect();
    stream.write_all(bytes).unwrap();
    let response = read_response(&mut stream);
    let (head, body) = split_head(&response);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(body, FAST_BODY);
    let (error, preview, status, end) = bad_row(tarpit);
    assert_eq!(status, Some(200));
    assert_eq!(end, "complete");
    tarpit.assert_still_answers();
    (error, preview)
}

#[test]
fn malformed_request_line() {
    let tarpit = start();
    let (error, preview) = send_and_expect_drip(&tarpit, b"GET /\x01 HTTP/1.1\r\n\r\n");
    assert!(error.starts_with("malformed_request: "), "{error}");
    assert_eq!(preview.as_deref(), Some("GET /\\x01 HTTP/1.1\\r\\n\\r\\n"));
}

#[test]
fn header_of_64_kib() {
    let tarpit = start();
    let mut request = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    request.resize(64 * 1024, b'A');
    request.extend_from_slice(b"\r\n\r\n");
    let (error, preview) = send_and_expect_drip(&tarpit, &request);
    assert_eq!(error, "head_too_large");
    // The preview is bounded, and says how much more there was.
    let preview = preview.unwrap();
    assert!(preview.len() < 1024, "{}", preview.len());
    assert!(preview.ends_with("more bytes]"), "{preview}");
}

#[test]
fn a_thousand_headers() {
    let tarpit = start();
    let mut request = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..1000 {
        request.extend_from_slice(format!("X{i}: y\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let (error, _) = send_and_expect_drip(&tarpit, &request);
    assert_eq!(error, "too_many_headers");
}

#[test]
fn nul_bytes() {
    let tarpit = start();
    let (error, preview) = send_and_expect_drip(&tarpit, b"\0\0\0\0GET / HTTP/1.1\r\n\r\n");
    assert!(error.starts_with("malformed_request"), "{error}");
    assert!(preview.unwrap().starts_with("\\x00\\x00"));
}

#[test]
fn tls_client_hello() {
    let tarpit = start();
    // The start of a real TLS 1.2 ClientHello record.
    let hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5b, 0x90, 0x9d, 0x9b,
    ];
    let (error, preview) = send_and_expect_drip(&tarpit, hello);
    assert_eq!(error, "tls_client_hello");
    assert!(preview.unwrap().starts_with("\\x16\\x03\\x01"));
}

#[test]
fn client_that_says_nothing() {
    let tarpit = start();
    let mut stream = tarpit.connect();
    // Nothing is sent; after the head timeout the silent client is tarpitted anyway.
    let response = read_response(&mut stream);
    assert!(response.ends_with(FAST_BODY), "{response:?}");
    let (error, preview, status, _) = bad_row(&tarpit);
    assert_eq!(error, "no_request");
    assert_eq!(preview, None);
    assert_eq!(status, Some(200));
    tarpit.assert_still_answers();
}

#[test]
fn slowloris_sender() {
    let tarpit = start();
    let mut stream = tarpit.connect();
    let started = Instant::now();
    // One byte every 100 ms: never a complete head within the 0.5 s head timeout.
    for byte in b"GET / HTTP/1.1\r\nX-a: b" {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        if started.elapsed() > Duration::from_millis(900) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let response = read_response(&mut stream);
    assert!(response.ends_with(FAST_BODY));
    let (error, preview, _, _) = bad_row(&tarpit);
    assert_eq!(error, "head_timeout");
    assert!(preview.unwrap().starts_with("GET "));
    tarpit.assert_still_answers();
}

#[test]
fn client_that_leaves_before_a_request() {
    let tarpit = start();
    let mut stream = tarpit.connect();
    stream.write_all(b"GET / HT").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (error, preview, status, end) = bad_row(&tarpit);
    assert_eq!(error, "client_closed_before_request");
    assert_eq!(preview.as_deref(), Some("GET / HT"));
    assert_eq!(status, None);
    assert_eq!(end, "client_closed");
    tarpit.assert_still_answers();
}

#[test]
fn reset_mid_drip() {
    let tarpit = Tarpit::start(&["--response-delay", "0.05", "--max-response-bytes", "1000"]);
    let mut stream = tarpit.connect();
    stream.write_all(b"GET /rst HTTP/1.1\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read(&mut stream, &mut first).unwrap();
    // SO_LINGER 0 makes close send RST instead of FIN.
    let socket = socket2::SockRef::from(&stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IN ('client_reset', 'client_closed')",
        1,
    );
    let (sent, end): (i64, String) = tarpit
        .db()
        .query_row("SELECT bytes_sent, end_reason FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(end, "client_reset");
    assert!(sent < 1000, "{sent}");
    tarpit.assert_still_answers();
}

#[test]
fn client_that_never_reads() {
    // Big chunks so the client's receive window fills; the lifetime ceiling ends it.
    let chunk = "x".repeat(1024);
    let tarpit = Tarpit::start(&[
        "--response-delay",
        "0.001",
        "--response-chunk",
        &chunk,
        "--max-response-bytes",
        "100000000",
        "--max-connection-lifetime",
        "1.5",
    ]);
    let stream = TcpStream::connect(tarpit.addr).unwrap();
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(4096)
        .unwrap();
    (&stream)
        .write_all(b"GET /never-read HTTP/1.1\r\n\r\n")
        .unwrap();
    // While it is stuck, others are still served.
    std::thread::sleep(Duration::from_millis(300));
    tarpit.assert_still_answers();
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason = 'lifetime_exceeded' AND http_path = '/never-read'",
        1,
    );
    let sent: i64 = tarpit
        .db()
        .query_row(
            "SELECT bytes_sent FROM events WHERE http_path = '/never-read'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sent > 0 && sent < 100_000_000, "{sent}");
    drop(stream);
}

#[test]
fn reset_is_noticed_at_once_not_at_the_next_tick() {
    // Ten seconds between ticks: a reset must not wait for the next one to be noticed.
    let tarpit = Tarpit::start(&["--response-delay", "10", "--max-response-bytes", "100"]);
    let mut stream = tarpit.connect();
    stream.write_all(b"GET /rst-fast HTTP/1.1\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read(&mut stream, &mut first).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // let the dripper take it over
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let reset_at = Instant::now();
    drop(stream);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'client_reset'",
        1,
    );
    assert!(
        reset_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        reset_at.elapsed()
    );
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE end_reason = 'client_reset'"),
        1
    );
}

#[test]
fn sixteen_kib_of_blank_lines_are_tarpitted_and_recorded() {
    let tarpit = start();
    let (error, preview) = send_and_expect_drip(&tarpit, &b"\r\n".repeat(8 * 1024));
    assert_eq!(error, "head_too_large");
    assert!(preview.unwrap().starts_with("\\r\\n\\r\\n"));
}
