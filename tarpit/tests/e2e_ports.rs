//! End to end, as root, in network namespaces: iptables or nft REDIRECT 80 and 8888 to the
//! tarpit, clients dial every port over IPv4 and IPv6 and both sensor addresses, and the
//! database must show the dialled port from the eBPF hook and from SO_ORIGINAL_DST.

mod common;

use std::net::SocketAddr;

use common::Tarpit;
use common::netns::{
    CLIENT_V4, Lab, SENSOR_V4, SENSOR_V4_SECOND, SENSOR_V6, prerequisites_met, request,
};

/// What one client connection dialled, by the path it requested.
struct Dial {
    path: String,
    port: u16,
}

/// The tarpit's arguments in these labs: the hook required, on `host`:`port`, a fast drip of
/// `bytes` bytes, then `extra`.
fn lab_args<'a>(host: &'a str, port: &'a str, bytes: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--host",
        host,
        "--port",
        port,
        "--ebpf-mode",
        "on",
        "--response-delay",
        "0.05",
        "--max-response-bytes",
        bytes,
    ];
    args.extend_from_slice(extra);
    args
}

fn run_lab(install_rules: &str, remove_rules: &str) {
    if !prerequisites_met(&["ip", "iptables", "ip6tables", "nft"]) {
        return;
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let lab = Lab::new();
    lab.in_sensor(&format!("{deploy}/{install_rules}"));
    let tarpit = Tarpit::start_in_netns(&lab.sensor, &lab_args("::", "8080", "4", &[]));
    assert!(
        tarpit.stderr().contains("eBPF hook live"),
        "{}",
        tarpit.stderr()
    );

    let mut dials = Vec::new();
    let (v6, second) = (format!("[{SENSOR_V6}]"), SENSOR_V4_SECOND.to_owned());
    for (host, label) in [(SENSOR_V4.to_owned(), "v4"), (second, "v4b"), (v6, "v6")] {
        for port in [80u16, 8888, 8080] {
            let path = format!("/{label}/{port}");
            let to: SocketAddr = format!("{host}:{port}").parse().unwrap();
            let p = path.clone();
            lab.as_client(move || drop(request(to, None, &p)));
            dials.push(Dial { path, port });
        }
    }
    // One fixed source port to 80 and 8888 at once: after REDIRECT both would be
    // 10.77.0.2:40123 -> 10.77.0.1:8080, so conntrack rewrites the second one's source port.
    let from: SocketAddr = format!("{CLIENT_V4}:40123").parse().unwrap();
    let to80: SocketAddr = format!("{SENSOR_V4}:80").parse().unwrap();
    let to8888: SocketAddr = format!("{SENSOR_V4}:8888").parse().unwrap();
    lab.as_client(move || {
        let a = request(to80, Some(from), "/clash/80");
        let b = request(to8888, Some(from), "/clash/8888");
        drop((a, b));
    });
    dials.push(Dial {
        path: "/clash/80".into(),
        port: 80,
    });
    dials.push(Dial {
        path: "/clash/8888".into(),
        port: 8888,
    });

    tarpit.wait_count("SELECT COUNT(*) FROM events", dials.len() as i64);
    let db = tarpit.db();
    for dial in &dials {
        let (target, source, ebpf, lookup, orig, local): (
            i64,
            String,
            Option<i64>,
            Option<String>,
            Option<i64>,
            i64,
        ) = db
            .query_row(
                "SELECT target_port, target_port_source, target_port_ebpf, ebpf_lookup,
                        target_port_original_dst, local_port
                 FROM events WHERE http_path = ?1",
                [&dial.path],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", dial.path));
        let dialled = i64::from(dial.port);
        assert_eq!(local, 8080, "{}", dial.path);
        assert_eq!(ebpf, Some(dialled), "eBPF port of {}", dial.path);
        assert_eq!(orig, Some(dialled), "SO_ORIGINAL_DST port of {}", dial.path);
        assert_eq!(
            (target, source.as_str()),
            (dialled, "ebpf"),
            "{}",
            dial.path
        );
        let expected = if dial.port == 8080 {
            "untranslated"
        } else {
            "translated"
        };
        assert_eq!(lookup.as_deref(), Some(expected), "{}", dial.path);
    }
    // The clash really happened: the second connection's peer port was rewritten.
    let clash_ports: Vec<i64> = db
        .prepare("SELECT peer_port FROM events WHERE http_path LIKE '/clash/%' ORDER BY http_path")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(clash_ports.len(), 2);
    assert!(clash_ports.contains(&40123), "{clash_ports:?}");
    assert!(clash_ports.iter().any(|p| *p != 40123), "{clash_ports:?}");
    lab.in_sensor(&format!("{deploy}/{remove_rules}"));
}

#[test]
fn iptables_redirect_is_attributed_by_ebpf_and_original_dst() {
    run_lab(
        "iptables-redirect.sh add 8080 80 8888",
        "iptables-redirect.sh remove 8080 80 8888",
    );
}

#[test]
fn nft_redirect_is_attributed_by_ebpf_and_original_dst() {
    run_lab("nft-redirect.sh add 8080 80 8888", "nft-redirect.sh remove");
}

#[test]
fn a_second_tarpit_in_the_namespace_does_not_break_the_first() {
    if !prerequisites_met(&["ip", "iptables", "ip6tables"]) {
        return;
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let lab = Lab::new();
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh add 8080 80"));
    let args = |port: &'static str| lab_args("0.0.0.0", port, "2", &[]);
    let first = Tarpit::start_in_netns(&lab.sensor, &args("8080"));
    let mut second = Tarpit::start_in_netns(&lab.sensor, &args("9090"));
    // One BPF program per hook and priority: the second takes the next free priority.
    assert!(
        first.stderr().contains("priorities [101, 101]"),
        "{}",
        first.stderr()
    );
    assert!(
        second.stderr().contains("priorities [102, 102]"),
        "{}",
        second.stderr()
    );
    let to80: SocketAddr = format!("{SENSOR_V4}:80").parse().unwrap();
    lab.as_client(move || drop(request(to80, None, "/while-both-run")));
    // Stopping the second detaches its hook only.
    let (status, _) = second.terminate(std::time::Duration::from_secs(5));
    assert!(status.success());
    lab.as_client(move || drop(request(to80, None, "/after-second-stopped")));
    first.wait_count("SELECT COUNT(*) FROM events", 2);
    for path in ["/while-both-run", "/after-second-stopped"] {
        let (ebpf, source): (Option<i64>, String) = first
            .db()
            .query_row(
                "SELECT target_port_ebpf, target_port_source FROM events WHERE http_path = ?1",
                [path],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((ebpf, source.as_str()), (Some(80), "ebpf"), "{path}");
    }
}

/// Scrapes the metrics endpoint on 127.0.0.1:`port` inside the sensor namespace.
fn scrape_in(lab: &Lab, port: u16) -> String {
    lab.as_sensor(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
}

/// Under a SYN flood the hook's LRU map evicts entries before their connections are accepted:
/// such a miss must not override SO_ORIGINAL_DST, which still shows the translation, and each
/// is counted in `tarpit_ebpf_map_misses_total`. The flood is made certain by stopping the
/// tarpit (SIGSTOP) while the clients connect: the kernel completes the handshakes and the
/// hook records them into a map of one entry.
#[test]
fn an_evicted_ebpf_entry_never_overrides_original_dst_and_is_counted() {
    if !prerequisites_met(&["ip", "iptables", "ip6tables"]) {
        return;
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let lab = Lab::new();
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh add 8080 80"));
    let extra = [
        "--ebpf-map-entries",
        "1",
        "--metrics-listen",
        "127.0.0.1:9464",
    ];
    let tarpit = Tarpit::start_in_netns(&lab.sensor, &lab_args("0.0.0.0", "8080", "2", &extra));
    let pid = nix::unistd::Pid::from_raw(tarpit.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    const N: usize = 30;
    let to80: SocketAddr = format!("{SENSOR_V4}:80").parse().unwrap();
    let streams = lab.as_client(move || {
        (0..N)
            .map(|_| {
                std::net::TcpStream::connect_timeout(&to80, std::time::Duration::from_secs(5))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    for (i, mut stream) in streams.into_iter().enumerate() {
        use std::io::Write;
        write!(stream, "GET /flood/{i} HTTP/1.1\r\nHost: sensor\r\n\r\n").unwrap();
    }
    tarpit.wait_count("SELECT COUNT(*) FROM events", N as i64);
    let db = tarpit.db();
    let (wrong, misses): (i64, i64) = db
        .query_row(
            "SELECT SUM(target_port != 80),
                    SUM(ebpf_lookup = 'untranslated' AND target_port_source = 'original_dst'
                        AND target_port_original_dst = 80)
             FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(wrong, 0, "every connection dialled 80");
    assert!(misses >= (N as i64) / 2, "evicted entries: {misses} of {N}");
    let counted = common::wait_for(std::time::Duration::from_secs(10), || {
        let text = scrape_in(&lab, 9464);
        let value: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tarpit_ebpf_map_misses_total "))?
            .trim()
            .parse()
            .ok()?;
        (value == misses).then_some(value)
    });
    assert_eq!(counted, Some(misses));
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh remove 8080 80"));
}

/// Without NAT, accepting asks neither the hook's map (while the hook has inserted nothing,
/// `ebpf/inserts.rs`) nor getsockname (a listener bound to one address): two system calls less
/// per connection. Behind REDIRECT each connection still gets its lookup and its dialled port,
/// and once every entry is taken out, direct connections go back to none. Counted by perf on
/// the syscall tracepoints.
#[test]
fn without_nat_an_accept_asks_neither_the_map_nor_getsockname() {
    if !prerequisites_met(&["ip", "iptables", "ip6tables", "perf"]) {
        return;
    }
    const N: usize = 20;
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let lab = Lab::new();
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh add 8080 80"));
    let tarpit = Tarpit::start_in_netns(&lab.sensor, &lab_args(SENSOR_V4, "8080", "2", &[]));
    let dial = |port: u16, label: &'static str| {
        let to: SocketAddr = format!("{SENSOR_V4}:{port}").parse().unwrap();
        lab.as_client(move || {
            for i in 0..N {
                drop(request(to, None, &format!("/{label}/{i}")));
            }
        })
    };
    let calls = ["bpf", "getsockname"];
    let (direct, ()) =
        common::syscalls::count_during(tarpit.pid(), &calls, || dial(8080, "direct"));
    assert_eq!(
        direct,
        [0, 0],
        "bpf and getsockname calls for {N} direct connections"
    );
    let (redirected, ()) =
        common::syscalls::count_during(tarpit.pid(), &calls, || dial(80, "redirected"));
    assert_eq!(redirected, [N as u64, 0], "for {N} redirected connections");
    let (again, ()) = common::syscalls::count_during(tarpit.pid(), &calls, || dial(8080, "again"));
    assert_eq!(
        again,
        [0, 0],
        "for {N} direct connections after the redirected ones"
    );

    tarpit.wait_count("SELECT COUNT(*) FROM events", 3 * N as i64);
    let rows: Vec<(String, i64, String, String)> = tarpit
        .db()
        .prepare(
            "SELECT http_path, target_port, target_port_source, local_ip || ':' || local_port
             FROM events",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (path, port, source, local) in &rows {
        // The hook's answer either way: translated (80) or not (the socket's own port).
        let expected = if path.starts_with("/redirected/") {
            80
        } else {
            8080
        };
        assert_eq!((*port, source.as_str()), (expected, "ebpf"), "{path}");
        assert_eq!(local, &format!("{SENSOR_V4}:8080"), "{path}");
    }
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh remove 8080 80"));
}
