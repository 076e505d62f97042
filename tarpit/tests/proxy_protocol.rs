//! The PROXY protocol from HAProxy-style front ends: believed from trusted peers when enabled,
//! recorded and ignored from anyone else.

mod common;

use std::io::Write;

use common::{FAST, FAST_BODY, Tarpit, read_response};

fn v2_tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out
}

/// Sends `preamble` then `request`, expects the whole drip, and waits for the row.
fn send_after(tarpit: &Tarpit, preamble: &[u8], request: &[u8]) {
    let mut stream = tarpit.connect();
    stream.write_all(&[preamble, request].concat()).unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        1,
    );
}

/// Sends `preamble` then a request; returns the row's client columns and header port.
fn exchange(
    tarpit: &Tarpit,
    preamble: &[u8],
    path: &str,
) -> (String, Option<i64>, String, Option<i64>, Option<String>) {
    let request = format!("GET {path} HTTP/1.1\r\nX-Real-Port: 9\r\n\r\n");
    send_after(tarpit, preamble, request.as_bytes());
    tarpit
        .db()
        .query_row(
            "SELECT client_ip, client_port, client_ip_source, target_port_header, error_message
             FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap()
}

#[test]
fn trusted_v2_preamble_gives_the_client_and_its_port() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let preamble = v2_tcp4([203, 0, 113, 5], [198, 51, 100, 7], 4444, 8888);
    let (ip, port, source, header, error) = exchange(&tarpit, &preamble, "/v2");
    assert_eq!(
        (ip.as_str(), port, source.as_str()),
        ("203.0.113.5", Some(4444), "proxy-protocol")
    );
    assert_eq!(header, Some(8888));
    assert_eq!(error, None);
}

#[test]
fn trusted_v1_preamble_gives_the_client_and_its_port() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let preamble = b"PROXY TCP4 192.0.2.9 198.51.100.7 5555 80\r\n";
    let (ip, port, source, header, _) = exchange(&tarpit, preamble, "/v1");
    assert_eq!(
        (ip.as_str(), port, source.as_str()),
        ("192.0.2.9", Some(5555), "proxy-protocol")
    );
    assert_eq!(header, Some(80));
}

#[test]
fn a_peer_without_a_preamble_is_served_as_plain_http() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let (ip, _, source, _, error) = exchange(&tarpit, b"", "/plain");
    assert_eq!((ip.as_str(), source.as_str()), ("127.0.0.1", "socket"));
    assert_eq!(error, None);
}

#[test]
fn untrusted_peer_preamble_and_proxy_headers_are_ignored_and_recorded() {
    let tarpit = Tarpit::start(
        &[
            FAST,
            &[
                "--proxy-protocol",
                "true",
                "--trusted-proxies",
                "10.0.0.0/8",
            ],
        ]
        .concat(),
    );
    let preamble = b"PROXY TCP4 192.0.2.9 198.51.100.7 5555 80\r\n";
    let mut stream = tarpit.connect();
    stream.write_all(preamble).unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        1,
    );
    let (ip, source, header, error, raw): (String, String, Option<i64>, String, String) = tarpit
        .db()
        .query_row(
            "SELECT client_ip, client_ip_source, target_port_header, error_message, raw_preview
             FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (ip.as_str(), source.as_str(), header),
        ("127.0.0.1", "socket", None)
    );
    assert_eq!(error, "proxy_header_from_untrusted_peer");
    assert!(raw.starts_with("PROXY TCP4 192.0.2.9"), "{raw}");

    // Proxy headers from the untrusted peer change nothing either.
    let mut stream = tarpit.connect();
    let local_port = stream.local_addr().unwrap().port();
    stream
        .write_all(
            b"GET /hdr HTTP/1.1\r\nX-Real-IP: 192.0.2.1\r\nX-Real-Port: 9\r\n\
              X-Local-Addr: 10.0.0.1:80\r\nX-Tarpit-Target-Port: 80\r\n\r\n",
        )
        .unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/hdr' AND end_reason IS NOT NULL",
        1,
    );
    let (port, header, target): (i64, Option<i64>, i64) = tarpit
        .db()
        .query_row(
            "SELECT client_port, target_port_header, target_port FROM events WHERE http_path = '/hdr'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((port, header), (i64::from(local_port), None));
    assert_eq!(target, i64::from(tarpit.addr.port()));
}

#[test]
fn malformed_preamble_from_a_trusted_peer_is_recorded() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let mut stream = tarpit.connect();
    stream
        .write_all(b"PROXY TCP4 not-an-ip 198.51.100.7 5555 80\r\n")
        .unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        1,
    );
    let error: String = tarpit
        .db()
        .query_row("SELECT error_message FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(error.starts_with("malformed_proxy_header: "), "{error}");
    tarpit.assert_still_answers();
}

/// Sends `preamble` and a request carrying the scanner's own forwarding headers; returns
/// (client_ip, client_ip_source, target_port_header, target_port).
fn forged_headers_after(tarpit: &Tarpit, preamble: &[u8]) -> (String, String, Option<i64>, i64) {
    send_after(
        tarpit,
        preamble,
        b"GET /forged HTTP/1.1\r\nX-Real-IP: 8.8.4.4\r\nX-Forwarded-For: 8.8.8.8\r\n\
          X-Real-Port: 53\r\nX-Local-Addr: 10.9.9.9:22\r\nX-Tarpit-Target-Port: 31337\r\n\r\n",
    );
    tarpit
        .db()
        .query_row(
            "SELECT client_ip, client_ip_source, target_port_header, target_port FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

#[test]
fn after_a_preamble_the_scanners_own_target_port_header_is_not_believed() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let preamble = v2_tcp4([203, 0, 113, 5], [198, 51, 100, 7], 4444, 8888);
    let (ip, source, header, target) = forged_headers_after(&tarpit, &preamble);
    assert_eq!(
        (ip.as_str(), source.as_str()),
        ("203.0.113.5", "proxy-protocol")
    );
    assert_eq!(
        header,
        Some(8888),
        "the preamble's port, not the scanner's 31337"
    );
    assert_eq!(target, 8888);
}

#[test]
fn proxy_unknown_leaves_the_client_unresolved_whatever_the_headers_say() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let (ip, source, header, target) = forged_headers_after(&tarpit, b"PROXY UNKNOWN\r\n");
    assert_eq!(
        (ip.as_str(), source.as_str()),
        ("127.0.0.1", "proxy-protocol-unknown")
    );
    assert_eq!(header, None);
    assert_ne!(target, 31337);
}

#[test]
fn proxy_v2_local_leaves_the_client_unresolved_whatever_the_headers_say() {
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    // Version 2, command LOCAL (0x20), family UNSPEC, no address block.
    let mut preamble = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    preamble.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let (ip, source, header, target) = forged_headers_after(&tarpit, &preamble);
    assert_eq!(
        (ip.as_str(), source.as_str()),
        ("127.0.0.1", "proxy-protocol-unknown")
    );
    assert_eq!(header, None);
    assert_ne!(target, 31337);
}
