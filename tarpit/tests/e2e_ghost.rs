//! Ghost connections: a scanner that vanishes without FIN or RST (here: its host starts
//! dropping every packet) must not be held for the whole drip. TCP_USER_TIMEOUT ends it
//! within `peer_timeout`, recorded as `peer_gone`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Tarpit;
use common::netns::{Lab, SENSOR_V4, prerequisites_met, request};

#[test]
fn a_peer_that_vanishes_mid_drip_ends_as_peer_gone() {
    if !prerequisites_met(&["ip", "iptables"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = Tarpit::start_in_netns(
        &lab.sensor,
        &[
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--peer-timeout",
            "2",
            "--response-delay",
            "0.2",
            "--max-response-bytes",
            "1000", // 200 s of drip: far longer than the test may take
        ],
    );
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let held = lab.as_client(move || request(to, None, "/ghost"));
    tarpit.wait_count("SELECT COUNT(*) FROM events WHERE http_path = '/ghost'", 1);
    // The client's host vanishes: it silently drops everything from the sensor.
    lab.in_client(&format!("iptables -A INPUT -s {SENSOR_V4} -j DROP"));
    let vanished = Instant::now();
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/ghost' AND end_reason = 'peer_gone'",
        1,
    );
    let took = vanished.elapsed();
    assert!(took < Duration::from_secs(10), "noticed after {took:?}");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'peer_gone'",
        1,
    );
    drop(held);
}
