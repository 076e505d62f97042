//! Socketless hold end to end, as root, in network namespaces (`[tarpit] hold =
//! "socketless"`): real clients (curl, Python's urllib, plain sockets) on another namespace keep
//! receiving the whole drip, with no reset, while the sensor holds no socket for them; behind
//! iptables/ip6tables REDIRECT and direct; the client's FIN and RST are recorded; a dropped
//! segment is sent again; after `kill -9` nothing is left behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::netns::{CLIENT_V4, Lab, SENSOR_V4, SENSOR_V6, prerequisites_met};
use common::{Tarpit, wait_for};

/// The sensor's established TCP sockets on the tarpit's port (its held clients, if it had
/// sockets for them).
fn sensor_sockets(lab: &Lab) -> usize {
    lab.in_sensor("ss -Htn state established sport = :8080 | wc -l")
        .trim()
        .parse()
        .unwrap()
}

fn start(lab: &Lab, extra: &[&str]) -> Tarpit {
    let args = [
        &[
            "--host",
            "::",
            "--port",
            "8080",
            "--ebpf-mode",
            "on",
            "--hold",
            "socketless",
        ][..],
        extra,
    ]
    .concat();
    let tarpit = Tarpit::start_in_netns(&lab.sensor, &args);
    assert!(
        tarpit.stderr().contains("socketless hold on"),
        "{}",
        tarpit.stderr()
    );
    assert!(
        tarpit.stderr().contains("kept=[CAP_NET_ADMIN]"),
        "only CAP_NET_ADMIN is kept: {}",
        tarpit.stderr()
    );
    // Every socketless test below runs under the allow-list with TCP repair and map commands.
    let stderr = tarpit.stderr();
    assert!(
        stderr.contains("system-call allow-list on")
            && stderr.contains("ebpf_maps: true, tcp_repair: true"),
        "{stderr}"
    );
    tarpit
}

/// Connects from the client namespace, sends a request and reads the head with the first
/// tick; returns the stream.
fn held_client(lab: &Lab, to: SocketAddr, path: &str) -> TcpStream {
    held_client_from(lab, to, None, path)
}

/// [`held_client`] from a fixed source address and port, when `from` is given.
fn held_client_from(lab: &Lab, to: SocketAddr, from: Option<SocketAddr>, path: &str) -> TcpStream {
    let path = path.to_owned();
    lab.as_client(move || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        if let Some(from) = from {
            socket.set_reuse_address(true).unwrap();
            socket.bind(&from.into()).unwrap();
        }
        socket
            .connect_timeout(&to.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {to} from {from:?}: {e}"));
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: sensor\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n1\r\n.\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        stream
    })
}

/// What is left of a response, read to its end.
fn read_rest(mut stream: TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    rest
}

/// Waits until the sensor holds none of its clients on a socket.
fn wait_all_socketless(lab: &Lab) {
    wait_for(Duration::from_secs(10), || {
        (sensor_sockets(lab) == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("still on sockets: {}", sensor_sockets(lab)));
}

#[test]
fn curl_and_python_keep_receiving_without_a_socket_behind_redirect_v4_and_v6() {
    if !prerequisites_met(&["ip", "iptables", "ip6tables", "ss", "curl", "python3"]) {
        return;
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let lab = Lab::new();
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh add 8080 80"));
    let tarpit = start(
        &lab,
        &["--response-delay", "0.25", "--max-response-bytes", "24"],
    );
    let client = lab.client.clone();
    let v6 = format!("[{SENSOR_V6}]");
    // Each client writes what it received and its exit status into a file.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display();
    let clients = [
        format!(
            "curl -sS --max-time 30 http://{SENSOR_V4}/curl-v4 > {dir}/curl-v4; echo $? >> {dir}/curl-v4"
        ),
        format!(
            "curl -sS --max-time 30 -0 http://{v6}/curl-v6-http10 > {dir}/curl-v6; echo $? >> {dir}/curl-v6"
        ),
        format!(
            "curl -sS --max-time 30 http://{SENSOR_V4}:8080/curl-direct > {dir}/curl-direct; echo $? >> {dir}/curl-direct"
        ),
        format!(
            "python3 -c \"import urllib.request,sys; b=urllib.request.urlopen(\\\"http://{v6}/python-v6\\\", timeout=30).read(); sys.stdout.write(b.decode())\" > {dir}/python-v6; echo $? >> {dir}/python-v6"
        ),
    ];
    let started = Instant::now();
    let children: Vec<_> = clients
        .iter()
        .map(|command| {
            std::process::Command::new("ip")
                .args(["netns", "exec", &client, "sh", "-c", command])
                .spawn()
                .unwrap()
        })
        .collect();
    // Every request is recorded, then every client leaves its socket while still receiving.
    tarpit.wait_count("SELECT COUNT(*) FROM events", 4);
    wait_all_socketless(&lab);
    let handed_over = started.elapsed();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    // 24 ticks of 0.25 s: the drip went on for seconds after the hand-over.
    assert!(
        started.elapsed() >= handed_over + Duration::from_secs(3),
        "{handed_over:?} {:?}",
        started.elapsed()
    );
    for name in ["curl-v4", "curl-v6", "curl-direct", "python-v6"] {
        let text = std::fs::read_to_string(out.path().join(name)).unwrap();
        assert_eq!(
            text,
            format!("{}0\n", ".".repeat(24)),
            "{name}: no reset, every byte"
        );
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason = 'complete' AND bytes_sent = 24",
        4,
    );
    let rows: Vec<(String, i64, Option<i64>, f64)> = tarpit.rows(
        "SELECT http_path, local_port, target_port, duration_s FROM events ORDER BY http_path",
    );
    assert_eq!(rows.len(), 4);
    for (path, local_port, dialled, duration) in &rows {
        assert_eq!(*local_port, 8080, "{path}");
        let expected = if path == "/curl-direct" { 8080 } else { 80 };
        assert_eq!(*dialled, Some(expected), "{path}: the dialled port");
        assert!((5.5..12.0).contains(duration), "{path}: {duration}");
    }
    assert_eq!(
        tarpit.count(
            "SELECT COUNT(*) FROM connections WHERE end_reason = 'response_complete' AND bytes_sent = 24 AND requests = 1"
        ),
        4
    );
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh remove 8080 80"));
}

#[test]
fn a_client_fin_then_close_and_a_client_reset_are_recorded() {
    if !prerequisites_met(&["ip", "ss"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = start(&lab, &["--response-delay", "0.3"]);
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let closer = held_client(&lab, to, "/fin-then-close");
    // From a fixed port: once its end is recorded, its flow must be gone from the hook's map,
    // or a new connection from the same port would be dropped.
    let from: SocketAddr = format!("{CLIENT_V4}:40444").parse().unwrap();
    let resetter = held_client_from(&lab, to, Some(from), "/reset");
    wait_all_socketless(&lab);
    let fin_sent = Instant::now();
    lab.as_client(move || {
        // The FIN: the client may still read, and the drip goes on.
        let mut closer = closer;
        closer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut tick = [0u8; 6];
        closer.read_exact(&mut tick).unwrap();
        assert_eq!(&tick, b"1\r\n.\r\n");
        std::thread::sleep(Duration::from_millis(700));
        drop(closer); // then gone: the next tick meets a reset
        let resetter = socket2::Socket::from(resetter);
        resetter.set_linger(Some(Duration::ZERO)).unwrap();
        drop(resetter); // RST at once
    });
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        2,
    );
    let rows: Vec<(String, String, Option<f64>, f64)> = tarpit.rows(
        "SELECT http_path, end_reason, client_fin_s, duration_s FROM events ORDER BY http_path",
    );
    let closed = &rows[0];
    assert_eq!(
        (closed.0.as_str(), closed.1.as_str()),
        ("/fin-then-close", "client_closed")
    );
    let fin_s = closed.2.expect("the client's FIN is on record");
    assert!(fin_s > 0.0 && fin_s < closed.3, "{rows:?}");
    assert!(
        closed.3 - fin_s >= 0.6,
        "held after the FIN until the close: {rows:?}"
    );
    let reset = &rows[1];
    assert_eq!(
        (reset.0.as_str(), reset.1.as_str(), reset.2),
        ("/reset", "client_reset", None)
    );
    assert!(fin_sent.elapsed() < Duration::from_secs(5));
    let again = held_client_from(&lab, to, Some(from), "/same-port-again");
    drop(again);
    assert_eq!(
        tarpit.count(
            "SELECT COUNT(*) FROM connections WHERE end_reason IN ('client_closed', 'client_reset')"
        ),
        2
    );
}

#[test]
fn a_dropped_segment_is_sent_again_from_the_clients_last_ack() {
    if !prerequisites_met(&["ip", "ss", "iptables"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = start(
        &lab,
        &["--response-delay", "0.2", "--max-response-bytes", "20"],
    );
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let from: SocketAddr = format!("{CLIENT_V4}:40555").parse().unwrap();
    let stream = held_client_from(&lab, to, Some(from), "/lossy");
    wait_all_socketless(&lab);
    // The client's side loses every segment from the tarpit for a while.
    let rule = "INPUT -p tcp --sport 8080 -j DROP";
    lab.in_client(&format!("iptables -I {rule}"));
    std::thread::sleep(Duration::from_millis(700));
    let dropped: u64 = lab
        .in_client("iptables -L INPUT -v -x -n | awk '\\''/tcp spt:8080/ {print $1}'\\''")
        .trim()
        .parse()
        .unwrap();
    lab.in_client(&format!("iptables -D {rule}"));
    assert!(dropped >= 2, "segments were dropped: {dropped}");
    let rest = lab.as_client(move || read_rest(stream));
    // Every tick after the first, in order, then the end: nothing lost, nothing doubled.
    let mut expected = b"1\r\n.\r\n".repeat(19);
    expected.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&rest),
        String::from_utf8_lossy(&expected)
    );
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason = 'complete' AND bytes_sent = 20",
        1,
    );
    // The client closed after the end; the holder acknowledges its FIN and forgets the flow:
    // the client's socket leaves LAST_ACK and the same port connects again (a flow left in the
    // hook's map would keep dropping its FIN and then its new SYN).
    wait_for(Duration::from_secs(10), || {
        let left = lab.in_client("ss -Htan sport = :40555 | wc -l");
        (left.trim() == "0").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", lab.in_client("ss -tan sport = :40555")));
    let again = held_client_from(&lab, to, Some(from), "/same-port-again");
    drop(again);
}

#[test]
fn a_silent_client_is_peer_gone_after_peer_timeout() {
    if !prerequisites_met(&["ip", "ss", "iptables"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = start(&lab, &["--response-delay", "0.2", "--peer-timeout", "1.5"]);
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let _stream = held_client(&lab, to, "/vanished");
    wait_all_socketless(&lab);
    lab.in_client("iptables -I INPUT -p tcp --sport 8080 -j DROP");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason = 'peer_gone'",
        1,
    );
    let duration: Vec<(f64,)> = tarpit.rows("SELECT duration_s FROM events");
    let duration = duration[0].0;
    assert!((1.5..6.0).contains(&duration), "{duration}");
}

#[test]
fn after_kill_9_nothing_is_left_held_and_a_restart_starts_clean() {
    if !prerequisites_met(&["ip", "ss"]) {
        return;
    }
    let lab = Lab::new();
    let mut tarpit = start(&lab, &["--response-delay", "0.3"]);
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let stream = held_client(&lab, to, "/before-kill");
    wait_all_socketless(&lab);
    // While held, the client's own packets are dropped by the hook: no reset.
    let stream = lab.as_client(move || {
        let mut stream = stream;
        stream.write_all(b"x").unwrap();
        let mut tick = [0u8; 6];
        stream.read_exact(&mut tick).unwrap();
        assert_eq!(&tick, b"1\r\n.\r\n");
        stream
    });
    tarpit.kill9();
    // The hook and its map went with the process: the client's next packet meets the kernel,
    // which has no socket for it, and is reset.
    let reset = lab.as_client(move || {
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(b"y");
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return "eof".to_owned(),
                Ok(_) => continue, // ticks already in flight
                Err(e) => return e.kind().to_string(),
            }
        }
    });
    assert!(reset.contains("reset"), "{reset}");
    // No program is left on the hook: a fresh tarpit in the same namespace attaches and holds.
    let restarted = start(&lab, &["--response-delay", "0.3"]);
    let stream = held_client(&lab, to, "/after-restart");
    wait_all_socketless(&lab);
    drop(stream);
    restarted.wait_count("SELECT COUNT(*) FROM events", 1);
}

#[test]
fn shutdown_ends_held_responses_with_the_terminating_chunk() {
    if !prerequisites_met(&["ip", "ss"]) {
        return;
    }
    let lab = Lab::new();
    let mut tarpit = start(&lab, &["--response-delay", "0.3"]);
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let stream = held_client(&lab, to, "/at-shutdown");
    wait_all_socketless(&lab);
    let (status, _) = tarpit.terminate(Duration::from_secs(10));
    assert!(status.success());
    let rest = lab.as_client(move || {
        let mut stream = stream;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        rest
    });
    assert!(
        rest.ends_with(b"0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    let rows: Vec<(String, String)> = tarpit
        .rows("SELECT e.end_reason, c.end_reason FROM events e JOIN connections c USING (conn_id)");
    assert_eq!(rows, vec![("shutdown".to_owned(), "shutdown".to_owned())]);
}

/// The adaptive mode: a page with no planned early end (a client family never seen to give
/// up) is held without a socket too, its body and HEAD's head end dripped to the last byte.
#[test]
fn an_adaptive_page_with_no_planned_end_is_held_without_a_socket() {
    if !prerequisites_met(&["ip", "ss", "curl"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = start(&lab, &["--mode", "adaptive", "--response-delay", "0.005"]);
    let client = lab.client.clone();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display();
    let base = format!("http://{SENSOR_V4}:8080");
    let command = format!(
        "curl -sS -m 60 -o {dir}/page -w \"%{{http_code}} %{{size_download}}\" {base}/no-such-page-7f3a > {dir}/get; \
         curl -sS -m 60 -I {base}/head-7f3a > {dir}/head"
    );
    let mut curl = std::process::Command::new("ip")
        .args(["netns", "exec", &client, "sh", "-c", &command])
        .spawn()
        .unwrap();
    tarpit.wait_count("SELECT COUNT(*) FROM events", 1);
    wait_all_socketless(&lab);
    assert!(curl.wait().unwrap().success());
    let page = std::fs::read(out.path().join("page")).unwrap();
    let get = std::fs::read_to_string(out.path().join("get")).unwrap();
    assert_eq!(get, format!("404 {}", page.len()));
    assert!(
        page.starts_with(b"<html>"),
        "{}",
        String::from_utf8_lossy(&page)
    );
    let head = std::fs::read_to_string(out.path().join("head")).unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason = 'complete'",
        2,
    );
    let rows: Vec<(String, String, i64)> =
        tarpit.rows("SELECT http_path, response_mode, bytes_sent FROM events ORDER BY id");
    assert_eq!(
        rows[0],
        (
            "/no-such-page-7f3a".into(),
            "adaptive".into(),
            page.len() as i64
        )
    );
    assert_eq!(rows[1].1, "adaptive");
}

/// Issue 24, item 3: held flows count against their client's per-client cap as sockets do, so
/// one client cannot take every socketless slot; the places come back when the flows end.
#[test]
fn held_flows_count_against_their_clients_cap() {
    if !prerequisites_met(&["ip", "ss", "iptables"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = start(
        &lab,
        &["--response-delay", "0.2", "--max-connections-per-ip", "2"],
    );
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let first = held_client(&lab, to, "/one");
    let second = held_client(&lab, to, "/two");
    wait_all_socketless(&lab);
    // Two flows held without a socket: a third connection of the same client is refused.
    let _third = lab.as_client(move || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        let _ = write!(stream, "GET /three HTTP/1.1\r\nHost: sensor\r\n\r\n");
        stream
    });
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'refused_per_ip'",
        1,
    );
    // The held flows end (the client resets them): the client's places come back.
    drop((first, second));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IN ('client_reset', 'client_closed')",
        2,
    );
    let fourth = held_client(&lab, to, "/four");
    drop(fourth);
    tarpit.wait_count("SELECT COUNT(*) FROM events WHERE http_path = '/four'", 1);
}

/// Issue 24, item 4: a RST or FIN with a guessed sequence number for a held flow's 4-tuple (a
/// blind reset, here from the client's own address) does not end it: the drip goes on.
#[test]
fn a_blind_reset_does_not_end_a_held_flow() {
    if !prerequisites_met(&["ip", "ss", "iptables", "hping3"]) {
        return;
    }
    let lab = Lab::new();
    let tarpit = start(&lab, &["--response-delay", "0.2"]);
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let from: SocketAddr = format!("{CLIENT_V4}:40123").parse().unwrap();
    let stream = held_client_from(&lab, to, Some(from), "/blind");
    wait_all_socketless(&lab);
    // Forged segments of the flow's 4-tuple, their sequence numbers far from the window.
    for flags in ["-R", "-F", "-R -A -L 7"] {
        let out = lab.in_client(&format!(
            "hping3 -q -c 2 -i u10000 {flags} -s 40123 -k -p 8080 -M 12345 {SENSOR_V4} 2>&1 || true"
        ));
        assert!(
            out.contains("2 packets transmitted"),
            "hping3 {flags}: {out}"
        );
    }
    // Still dripping: more bytes come, and nothing has ended.
    let received = lab.as_client(move || {
        let mut stream = stream;
        let mut buf = [0u8; 64];
        let mut got = 0;
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            got += stream.read(&mut buf).unwrap();
        }
        got
    });
    assert!(received > 0, "the drip stopped");
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL"),
        0,
        "{:?}",
        tarpit.rows::<(Option<String>,)>("SELECT end_reason FROM events")
    );
}

/// A held flow's tick reads what its client said from the hook's status array, mapped into
/// the server's memory (`ebpf/held.rs`): while four responses are dripped, three of them
/// socketless, the tarpit makes no `bpf()` system call at all (it made one per flow and tick
/// before). The flows still see their clients' ACKs through it: each runs to its end,
/// `complete`. With `socketless_max = 3` the fourth finds no free status slot and stays on its
/// socket. Counted by perf on the syscall tracepoints.
#[test]
fn held_ticks_read_their_status_from_memory_with_no_system_call() {
    if !prerequisites_met(&["ip", "ss", "perf"]) {
        return;
    }
    const CLIENTS: usize = 4;
    const TICKS_COUNTED: usize = 10;
    let lab = Lab::new();
    let tarpit = start(
        &lab,
        &"--response-delay 0.1 --max-response-bytes 80 --workers 1 --socketless-max 3"
            .split(' ')
            .collect::<Vec<_>>(),
    );
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    let streams: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| held_client(&lab, to, &format!("/mapped/{i}")))
        .collect();
    wait_for(Duration::from_secs(10), || {
        (sensor_sockets(&lab) == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("on sockets: {}, not 1", sensor_sockets(&lab)));
    let stderr = tarpit.stderr();
    assert!(
        stderr.contains("worker's share of socketless_max (3) is held"),
        "{stderr}"
    );
    let (calls, streams) = common::syscalls::count_during(tarpit.pid(), &["bpf"], || {
        lab.as_client(move || {
            let mut streams = streams;
            let mut tick = [0u8; 6];
            for _ in 0..TICKS_COUNTED {
                for stream in &mut streams {
                    stream.read_exact(&mut tick).unwrap();
                    assert_eq!(&tick, b"1\r\n.\r\n");
                }
            }
            streams
        })
    });
    assert_eq!(
        calls,
        [0],
        "bpf calls while {CLIENTS} responses sent {TICKS_COUNTED} ticks each"
    );
    // The rest of every response, each read to its end.
    let mut expected = b"1\r\n.\r\n".repeat(80 - 1 - TICKS_COUNTED);
    expected.extend_from_slice(b"0\r\n\r\n");
    let rests = lab.as_client(move || streams.into_iter().map(read_rest).collect::<Vec<_>>());
    assert!(rests.iter().all(|rest| *rest == expected), "{rests:?}");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason = 'complete' AND bytes_sent = 80",
        CLIENTS as i64,
    );
}
