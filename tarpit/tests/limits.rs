//! Connection caps: the extra connection is accepted, recorded as refused and closed at once.

mod common;

use std::io::{Read, Write};

use common::Tarpit;

fn assert_refused_at_once(tarpit: &Tarpit) {
    let mut extra = tarpit.connect();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 64];
    // Closed by the server without a byte of response (EOF, or a reset if our bytes raced it).
    assert!(matches!(extra.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn max_connections_refuses_the_extra_one() {
    let tarpit = Tarpit::start(&["--max-connections", "2", "--response-delay", "0.5"]);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut s = tarpit.connect();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut first = [0u8; 8];
            s.read_exact(&mut first).unwrap();
            s
        })
        .collect();
    assert_refused_at_once(&tarpit);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'refused_max_connections'",
        1,
    );
    // Refused connections make no request row.
    assert_eq!(tarpit.count("SELECT COUNT(*) FROM events"), 2);
    drop(held);
    // Once the held ones are gone (closing with unread data makes the kernel send RST), new
    // connections are served again.
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason IN ('client_closed', 'client_reset')",
        2,
    );
    tarpit.assert_still_answers();
}

#[test]
fn max_connections_per_ip_refuses_the_extra_one() {
    // Loopback is a trusted proxy by default, whose own address is never capped (its clients
    // are, once named: tests/per_client_limits.rs); here it is an ordinary client.
    let tarpit = Tarpit::start(&[
        "--max-connections-per-ip",
        "3",
        "--response-delay",
        "10",
        "--trusted-proxies",
        "192.0.2.0/24",
    ]);
    let held: Vec<_> = (0..3).map(|_| tarpit.connect()).collect();
    tarpit.wait_count("SELECT COUNT(*) FROM connections", 3);
    assert_refused_at_once(&tarpit);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'refused_per_ip'",
        1,
    );
    drop(held);
}

#[test]
fn a_trusted_proxys_own_address_is_never_capped() {
    // Loopback is trusted by default: connections that name no client are the proxy's own.
    let tarpit = Tarpit::start(&["--max-connections-per-ip", "2", "--response-delay", "10"]);
    let held: Vec<_> = (0..5)
        .map(|_| {
            let mut s = tarpit.connect();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut first = [0u8; 12];
            s.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            s
        })
        .collect();
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM connections WHERE end_reason LIKE 'refused%'"),
        0
    );
    drop(held);
}
