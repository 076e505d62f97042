//! X-Forwarded-For and X-Real-IP decide the client address only from trusted proxies.

mod common;

use std::io::Write;

use common::{FAST, Tarpit, read_response};

fn request_with_forwarding_headers(tarpit: &Tarpit) {
    let mut stream = tarpit.connect();
    stream
        .write_all(
            b"GET /fwd HTTP/1.1\r\nX-Forwarded-For: 198.51.100.23, 203.0.113.7\r\n\
              X-Real-Port: 40000\r\n\r\n",
        )
        .unwrap();
    read_response(&mut stream);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        1,
    );
}

fn client_row(tarpit: &Tarpit) -> (String, Option<i64>, String, String, String) {
    tarpit
        .db()
        .query_row(
            "SELECT client_ip, client_port, client_ip_source, peer_ip, headers_json FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap()
}

#[test]
fn trusted_proxy_headers_set_the_client() {
    // Default trusted_proxies is loopback, and the test client is on loopback.
    let tarpit = Tarpit::start(FAST);
    request_with_forwarding_headers(&tarpit);
    let (ip, port, source, peer, _) = client_row(&tarpit);
    assert_eq!(ip, "203.0.113.7"); // the rightmost hop not in trusted_proxies
    assert_eq!(port, Some(40000));
    assert_eq!(source, "x-forwarded-for");
    assert_eq!(peer, "127.0.0.1");
}

#[test]
fn untrusted_peer_headers_are_kept_but_ignored() {
    let tarpit = Tarpit::start(&[FAST, &["--trusted-proxies", "10.0.0.0/8"]].concat());
    request_with_forwarding_headers(&tarpit);
    let (ip, port, source, peer, headers) = client_row(&tarpit);
    assert_eq!(ip, "127.0.0.1");
    assert_ne!(port, Some(40000));
    assert_eq!(source, "socket");
    assert_eq!(peer, "127.0.0.1");
    let headers: serde_json::Value = serde_json::from_str(&headers).unwrap();
    assert_eq!(headers["X-Forwarded-For"], "198.51.100.23, 203.0.113.7");
}
