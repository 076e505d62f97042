//! HAProxy (from apt) in front of the tarpit with `send-proxy-v2`: the tarpit records the
//! scanner's own address and port from the PROXY v2 preamble, using deploy/haproxy/tarpit.cfg.

mod common;

use std::io::Write;
use std::time::Duration;

use common::fronts;
use common::netns::prerequisites_met;
use common::{FAST, FAST_BODY, Tarpit, read_response, wait_for};

#[test]
fn haproxy_send_proxy_v2_gives_the_scanners_address() {
    if !prerequisites_met(&["haproxy"]) {
        return;
    }
    let tarpit = Tarpit::start(&[FAST, &["--proxy-protocol", "true"]].concat());
    let front = fronts::free_port();
    let _haproxy = fronts::haproxy(&tarpit, front);
    let mut stream = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", front)).ok()
    })
    .expect("haproxy listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let scanner_port = stream.local_addr().unwrap().port();
    stream
        .write_all(b"GET /via-haproxy HTTP/1.1\r\nHost: sensor\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/via-haproxy'",
        1,
    );
    let (client_port, source, header, peer_port, error): (
        i64,
        String,
        Option<i64>,
        i64,
        Option<String>,
    ) = tarpit
        .db()
        .query_row(
            "SELECT client_port, client_ip_source, target_port_header, peer_port, error_message
                 FROM events WHERE http_path = '/via-haproxy'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(source, "proxy-protocol");
    assert_eq!(
        client_port,
        i64::from(scanner_port),
        "the scanner's own port"
    );
    assert_ne!(
        peer_port,
        i64::from(scanner_port),
        "the TCP peer is HAProxy"
    );
    assert_eq!(
        header,
        Some(i64::from(front)),
        "the port the scanner reached"
    );
    assert_eq!(error, None);
}
