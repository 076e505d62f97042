//! Fingerprints through the real server: the client's SYN as its own stack sent it (TTL, MSS,
//! window scaling, SACK and timestamps set inside the client's network namespace), also after
//! iptables REDIRECT; a TLS ClientHello from real clients (`openssl s_client`, `curl`); the
//! header order; and no SYN fingerprint for a proxy's connection.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::Tarpit;
use common::netns::{Lab, SENSOR_V4, SENSOR_V6, prerequisites_met, request};
use rusqlite::types::Value;

/// One row's fingerprint columns, by path (or by error message for non-HTTP input).
fn row(tarpit: &Tarpit, column: &str, key: &str, value: &str) -> Vec<Value> {
    let columns = "syn_ttl, syn_initial_ttl, syn_df, syn_window, syn_mss, syn_wscale, \
                   syn_options, syn_fp, tls_version, tls_sni, tls_alpn, ja4, header_order, \
                   header_order_hash, target_port";
    tarpit.wait_count(
        &format!("SELECT COUNT(*) FROM events WHERE {column} = '{value}'"),
        1,
    );
    tarpit
        .db()
        .query_row(
            &format!("SELECT {columns} FROM events WHERE {column} = ?1 {key}"),
            [value],
            |r| (0..15).map(|i| r.get(i)).collect(),
        )
        .unwrap()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(v: &Value) -> &str {
    match v {
        Value::Text(t) => t,
        other => panic!("not text: {other:?}"),
    }
}

#[test]
fn syn_fields_follow_the_clients_stack_and_survive_redirect() {
    if !prerequisites_met(&["ip", "iptables", "sysctl"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = Tarpit::start_in_netns(
        &lab.sensor,
        &[
            "--host",
            "::",
            "--port",
            "8080",
            "--response-delay",
            "0.05",
            "--max-response-bytes",
            "2",
        ],
    );
    let dial = |host: &str, port: u16, path: &'static str| {
        let to: SocketAddr = format!("{host}:{port}").parse().unwrap();
        lab.as_client(move || drop(request(to, None, path)));
    };
    // A fresh namespace: Linux defaults (TTL 64, SACK, timestamps, window scaling).
    dial(SENSOR_V4, 8080, "/default");
    dial(&format!("[{SENSOR_V6}]"), 8080, "/v6");
    // The client's own settings: TTL 100, MSS 1300 on the route, no timestamps, no window
    // scaling, SACK kept.
    lab.in_client(
        "sysctl -qw net.ipv4.ip_default_ttl=100 net.ipv4.tcp_timestamps=0 \
         net.ipv4.tcp_window_scaling=0 net.ipv4.tcp_sack=1",
    );
    let route = lab.in_client("ip route show 10.77.0.0/24");
    lab.in_client(&format!("ip route change {} advmss 1300", route.trim()));
    dial(SENSOR_V4, 8080, "/tuned");
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh add 8080 80"));
    dial(SENSOR_V4, 80, "/redirected");
    // Nothing but SACK: the option layout changes again.
    lab.in_client("sysctl -qw net.ipv4.tcp_sack=0");
    dial(SENSOR_V4, 8080, "/bare");

    let default = row(&tarpit, "http_path", "", "/default");
    assert_eq!(int(&default[0]), 64, "TTL as sent (no router between)");
    assert_eq!(int(&default[1]), 64);
    assert_eq!(int(&default[2]), 1, "Linux sets DF");
    assert_eq!(int(&default[4]), 1460, "MSS of a 1500-byte veth");
    assert!(int(&default[5]) > 0, "window scaling on");
    assert_eq!(text(&default[6]), "mss,sok,ts,nop,ws");
    let expected_fp = format!(
        "4:64:1:{}:1460:{}:mss,sok,ts,nop,ws",
        int(&default[3]),
        int(&default[5])
    );
    assert_eq!(text(&default[7]), expected_fp);

    let v6 = row(&tarpit, "http_path", "", "/v6");
    assert_eq!(v6[2], Value::Null, "IPv6 has no DF bit");
    assert_eq!(int(&v6[4]), 1440, "IPv6 MSS of a 1500-byte veth");
    assert!(text(&v6[7]).starts_with("6:64:-:"), "{v6:?}");

    let tuned = row(&tarpit, "http_path", "", "/tuned");
    assert_eq!(int(&tuned[0]), 100);
    assert_eq!(int(&tuned[1]), 128, "the next common initial TTL");
    assert_eq!(int(&tuned[4]), 1300, "the route's advmss");
    assert_eq!(tuned[5], Value::Null, "no window scaling");
    assert_eq!(text(&tuned[6]), "mss,nop,nop,sok");
    assert_eq!(
        text(&tuned[7]),
        format!("4:128:1:{}:1300:-:mss,nop,nop,sok", int(&tuned[3]))
    );

    let redirected = row(&tarpit, "http_path", "", "/redirected");
    assert_eq!(int(&redirected[14]), 80, "the dialled port");
    assert_eq!(
        redirected[..8],
        tuned[..8],
        "REDIRECT keeps the SYN's TTL and options"
    );

    let bare = row(&tarpit, "http_path", "", "/bare");
    assert_eq!(text(&bare[6]), "mss");
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh remove 8080 80"));
}

#[test]
fn a_proxys_connection_has_no_syn_fingerprint() {
    // Loopback is a trusted proxy by default: the client comes from X-Real-IP, the SYN was
    // the proxy's own.
    let tarpit = Tarpit::start(common::FAST);
    let mut stream = tarpit.connect();
    stream
        .write_all(b"GET /proxied HTTP/1.1\r\nHost: s\r\nX-Real-IP: 203.0.113.9\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    let mut direct = tarpit.connect();
    direct
        .write_all(b"GET /direct HTTP/1.1\r\nHost: s\r\n\r\n")
        .unwrap();
    direct.read_exact(&mut first).unwrap();
    let proxied = row(&tarpit, "http_path", "", "/proxied");
    assert!(
        proxied[..8].iter().all(|v| *v == Value::Null),
        "{proxied:?}"
    );
    let direct = row(&tarpit, "http_path", "", "/direct");
    assert!(text(&direct[7]).starts_with("4:64:1:"), "{direct:?}");
}

#[test]
fn header_order_keeps_names_as_sent_with_repeats() {
    let tarpit = Tarpit::start(common::FAST);
    let mut stream = tarpit.connect();
    stream
        .write_all(
            b"GET /order HTTP/1.1\r\nHost: s\r\nAccept: */*\r\nX-B: 1\r\nx-b: 2\r\n\
              User-Agent: z\r\n\r\n",
        )
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    let row = row(&tarpit, "http_path", "", "/order");
    let order = "host,accept,x-b,x-b,user-agent";
    assert_eq!(text(&row[12]), order);
    let sha = Command::new("sh")
        .args(["-c", &format!("printf %s '{order}' | sha256sum")])
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(text(&row[13]), &sha[..16]);
    // The JSON log carries the same fields.
    let line = common::wait_for(Duration::from_secs(30), || {
        tarpit
            .json_lines()
            .into_iter()
            .find(|l| l["event"] == "request" && l["http_path"] == "/order")
    })
    .expect("the request's JSON line");
    assert_eq!(line["header_order"], order);
    assert_eq!(line["syn_options"], "mss,sok,ts,nop,ws");
}

/// Runs a TLS client against the HTTP port; it fails (the answer is not TLS), which is fine.
fn tls_client(command: &str) {
    // The exit status is the client's failed handshake: not what is tested.
    let _ = Command::new("sh")
        .args(["-c", &format!("{command} </dev/null >/dev/null 2>&1")])
        .status()
        .expect("sh");
}

#[test]
fn real_tls_clients_give_sni_alpn_and_ja4() {
    if !prerequisites_met(&["openssl", "curl"]) {
        return;
    }
    let tarpit = Tarpit::start(common::FAST);
    let port = tarpit.addr.port();
    // TLS 1.3 only, two suites: the hello offers exactly those plus the renegotiation SCSV.
    tls_client(&format!(
        "timeout 5 openssl s_client -connect 127.0.0.1:{port} -servername scanner.example \
         -alpn http/1.1 -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
    ));
    let openssl = row(&tarpit, "tls_sni", "", "scanner.example");
    assert_eq!(text(&openssl[8]), "1.3");
    assert_eq!(text(&openssl[10]), "http/1.1");
    let ja4 = text(&openssl[11]);
    assert!(ja4.starts_with("t13d03"), "{ja4}");
    assert_eq!(&ja4[8..10], "h1", "{ja4}");
    // JA4_b: SHA-256 of the sorted cipher list the client was told to offer.
    let sha = Command::new("sh")
        .args(["-c", "printf %s 00ff,1301,1303 | sha256sum"])
        .output()
        .unwrap();
    assert_eq!(&ja4[11..23], &String::from_utf8_lossy(&sha.stdout)[..12]);

    tls_client(&format!("curl -sk --max-time 5 https://localhost:{port}/"));
    let curl = row(&tarpit, "tls_sni", "", "localhost");
    assert_eq!(
        text(&curl[10]),
        "h2,http/1.1",
        "Debian's curl offers HTTP/2"
    );
    let ja4 = text(&curl[11]);
    assert!(ja4.starts_with("t13d") && &ja4[8..10] == "h2", "{ja4}");
    assert_eq!(ja4.len(), 36, "{ja4}");
    // Both are tls_client_hello rows, tarpitted like any other input.
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE error_message = 'tls_client_hello'"),
        2
    );
}
