//! Every port without NAT (`[server] ports`), as root, in network namespaces: a client in
//! another namespace dials 1,000 random ports over IPv4 and IPv6 and 20 addresses of a routed
//! prefix; every connection is held and recorded with the exact port and address it dialled
//! (`target_port_source = 'sk_lookup'`), a port with a real listener is answered by it, an
//! excluded port and an address outside the prefixes are refused, and conntrack gains no entry
//! (where REDIRECT makes one per connection). Also: a service started later gets its port
//! back, socketless hold and the adaptive mode work on steered ports, and without privileges
//! `sk_lookup = "on"` refuses to start while `"auto"` falls back to the single port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::netns::{Lab, SENSOR_V4, SENSOR_V4_SECOND, SENSOR_V6, prerequisites_met, request};
use common::{Tarpit, wait_for};

/// The routed prefixes: the client routes them to the sensor, which takes every address in
/// them as its own (`ip route add local ... dev lo`), as a provider routes a /24 to a host.
fn route_prefixes(lab: &Lab) {
    lab.in_sensor(
        "ip route add local 10.78.0.0/24 dev lo && ip -6 route add local fd00:78::/64 dev lo",
    );
    lab.in_client(
        "ip route add 10.78.0.0/24 via 10.77.0.1 && ip -6 route add fd00:78::/64 via fd00:77::1",
    );
}

/// Starts the tarpit in the sensor namespace with `[server]` = the lines given (plus host and
/// port) and the extra arguments.
fn start(lab: &Lab, dir: &Path, server: &str, args: &[&str]) -> Tarpit {
    let path = dir.join("tarpit.toml");
    let config = format!("[server]\nhost = \"127.0.0.1\"\nport = 8080\n{server}\n");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let args = [&["--config", path.as_str(), "--ebpf-mode", "on"][..], args].concat();
    let tarpit = Tarpit::start_in_netns(&lab.sensor, &args);
    let stderr = tarpit.stderr();
    assert!(stderr.contains("sk_lookup on"), "{stderr}");
    // Attaching needed privileges; once attached they are gone (socketless hold alone keeps
    // CAP_NET_ADMIN), and the allow-list permits the port map's updates.
    let socketless = args.contains(&"socketless");
    assert!(
        stderr.contains(if socketless {
            "kept=[CAP_NET_ADMIN]"
        } else {
            "all capabilities dropped"
        }),
        "{stderr}"
    );
    assert!(
        stderr.contains("system-call allow-list on") && stderr.contains("ebpf_maps: true"),
        "{stderr}"
    );
    tarpit
}

/// The lab's prerequisites and a kernel with sk_lookup (5.9+): a kernel without it skips with
/// a clear message (a failure under `TARPIT_E2E`, like any missing prerequisite).
fn lab_ready(tools: &[&str]) -> bool {
    if !prerequisites_met(tools) {
        return false;
    }
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut number = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    if (number(), number()) >= (5, 9) {
        return true;
    }
    let message = format!("kernel {release} has no BPF sk_lookup (5.9+)");
    assert!(
        std::env::var_os("TARPIT_E2E").is_none(),
        "TARPIT_E2E is set and {message}"
    );
    eprintln!("SKIPPED: {message}");
    false
}

/// Distinct pseudo-random ports (a fixed xorshift seed, so a failure can be replayed), none
/// of them in `avoid`.
fn random_ports(count: usize, avoid: &[u16]) -> Vec<u16> {
    let mut state: u64 = 0x5eed_1234_abcd_0042;
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = (state % 65_535) as u16 + 1;
        if !avoid.contains(&port) && !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// Entries in the sensor namespace's conntrack table.
fn conntrack_entries(lab: &Lab) -> u64 {
    lab.in_sensor("cat /proc/sys/net/netfilter/nf_conntrack_count")
        .trim()
        .parse()
        .unwrap()
}

/// A listener of another service in the sensor namespace that answers `REAL` to everyone;
/// it stops listening when dropped.
struct RealService(TcpListener);

impl Drop for RealService {
    fn drop(&mut self) {
        // Shutting a listener down closes it for good (its accept thread ends too).
        use std::os::fd::AsRawFd;
        let _ = nix::sys::socket::shutdown(self.0.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

fn real_service(lab: &Lab, port: u16) -> RealService {
    let listener = lab.as_sensor(move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    let accepting = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for stream in accepting.incoming() {
            let Ok(mut stream) = stream else { break };
            // Read the request first: closing with unread bytes would reset the connection.
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"REAL\n");
        }
    });
    RealService(listener)
}

/// What a client gets first from `to`: `Ok(first bytes)` or the connect error.
fn first_bytes(lab: &Lab, to: SocketAddr) -> std::io::Result<String> {
    lab.as_client(move || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /probe HTTP/1.1\r\nHost: sensor\r\n\r\n")?;
        // Up to 8 bytes: the real service closes after its answer, the tarpit does not.
        let mut first = Vec::new();
        stream.take(8).read_to_end(&mut first)?;
        Ok(String::from_utf8_lossy(&first).into_owned())
    })
}

#[test]
fn every_port_and_a_routed_prefix_are_held_with_the_dialled_port_and_address() {
    if !lab_ready(&["ip"]) {
        return;
    }
    let lab = Lab::new();
    route_prefixes(&lab);
    let dir = tempfile::tempdir().unwrap();
    let (real_port, excluded) = (4321u16, 4444u16);
    let _real = real_service(&lab, real_port);
    let tarpit = start(
        &lab,
        dir.path(),
        &format!(
            "ports = \"1-65535\"\nexclude_ports = \"{excluded}\"\n\
             prefixes = [\"{SENSOR_V4}\", \"{SENSOR_V6}\", \"10.78.0.0/24\", \"fd00:78::/64\"]"
        ),
        &["--response-delay", "0.5", "--max-response-bytes", "1000"],
    );
    let conntrack_before = conntrack_entries(&lab);

    // 500 ports on each family of the sensor's own addresses, 20 addresses of the prefixes.
    let ports = random_ports(1_020, &[real_port, excluded, 9464]);
    let mut dials: Vec<SocketAddr> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let address = match i {
            0..500 => SENSOR_V4.to_owned(),
            500..1_000 => format!("[{SENSOR_V6}]"),
            1_000..1_010 => format!("10.78.0.{}", 10 + i - 1_000),
            _ => format!("[fd00:78::{:x}]", 0x100 + i - 1_010),
        };
        dials.push(format!("{address}:{port}").parse().unwrap());
    }
    let to_dial = dials.clone();
    let streams: Vec<TcpStream> = lab.as_client(move || {
        to_dial
            .iter()
            .enumerate()
            .map(|(i, to)| request(*to, None, &format!("/dial/{i}")))
            .collect()
    });
    assert_eq!(streams.len(), 1_020);

    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE target_port_source = 'sk_lookup'",
        1_020,
    );
    let rows: Vec<(String, String, i64, i64)> = tarpit.rows(
        "SELECT http_path, local_ip, local_port, target_port FROM events \
         WHERE http_path LIKE '/dial/%'",
    );
    assert_eq!(rows.len(), 1_020);
    for (path, local_ip, local_port, target_port) in rows {
        let i: usize = path["/dial/".len()..].parse().unwrap();
        let dialled = dials[i];
        assert_eq!(
            (local_ip.parse::<std::net::IpAddr>().unwrap(), target_port),
            (dialled.ip(), i64::from(dialled.port())),
            "{path}"
        );
        assert_eq!(local_port, target_port);
    }
    // Every connection is still held: open on both sides, and still being dripped to.
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM connections WHERE closed_at IS NULL"),
        1_020
    );
    for mut stream in streams.into_iter().step_by(50) {
        let mut rest = Vec::new();
        let mut byte = [0u8; 1];
        while !rest.ends_with(b"\r\n.\r\n") {
            stream.read_exact(&mut byte).expect("still dripping");
            rest.push(byte[0]);
        }
    }

    // A port with a real listener is answered by it, on every address.
    for host in [SENSOR_V4, "10.78.0.77"] {
        let to: SocketAddr = format!("{host}:{real_port}").parse().unwrap();
        assert_eq!(first_bytes(&lab, to).unwrap(), "REAL\n", "{to}");
    }
    // An excluded port and an address outside the prefixes are not taken.
    let refused = |to: &str| {
        let error = first_bytes(&lab, to.parse().unwrap()).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{to}: {error}"
        );
    };
    refused(&format!("{SENSOR_V4}:{excluded}"));
    refused(&format!("{SENSOR_V4_SECOND}:{}", ports[0]));
    // No NAT, so no conntrack entry for any of them.
    assert_eq!(conntrack_entries(&lab), conntrack_before);
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE target_port_source <> 'sk_lookup'"),
        0
    );
    // `tarpit ports` reads the new source like any other.
    let ports_report = common::run_tool(&tarpit.dir, &["ports"], &[]);
    let winner = ports_report
        .lines()
        .find(|l| l.starts_with("sk_lookup "))
        .unwrap_or_else(|| panic!("{ports_report}"));
    assert_eq!(
        winner.split_whitespace().nth(1),
        Some("1020"),
        "{ports_report}"
    );
}

#[test]
fn conntrack_gains_an_entry_per_connection_behind_redirect_and_none_with_sk_lookup() {
    if !lab_ready(&["ip", "iptables"]) {
        return;
    }
    let ports = random_ports(200, &[8080, 9464]);
    let dial_all = |lab: &Lab| {
        let ports = ports.clone();
        let streams: Vec<TcpStream> = lab.as_client(move || {
            ports
                .iter()
                .map(|port| {
                    let to = format!("{SENSOR_V4}:{port}").parse().unwrap();
                    request(to, None, &format!("/p/{port}"))
                })
                .collect()
        });
        streams
    };

    let steered = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let tarpit = start(&steered, dir.path(), "ports = \"1-65535\"", &[]);
    let before = conntrack_entries(&steered);
    let _held = dial_all(&steered);
    tarpit.wait_count("SELECT COUNT(*) FROM events", 200);
    let sk_lookup_entries = conntrack_entries(&steered) - before;

    let redirected = Lab::new();
    redirected.in_sensor("iptables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 8080");
    let tarpit = Tarpit::start_in_netns(
        &redirected.sensor,
        &["--host", "0.0.0.0", "--port", "8080", "--ebpf-mode", "on"],
    );
    let before = conntrack_entries(&redirected);
    let _held = dial_all(&redirected);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE target_port_source = 'ebpf'",
        200,
    );
    let redirect_entries = conntrack_entries(&redirected) - before;
    eprintln!(
        "conntrack entries for 200 connections: sk_lookup {sk_lookup_entries}, REDIRECT {redirect_entries}"
    );
    assert_eq!(sk_lookup_entries, 0);
    assert!(redirect_entries >= 200, "{redirect_entries}");
}

#[test]
fn a_service_started_later_gets_its_port_back_and_adaptive_answers_steered_ports() {
    if !lab_ready(&["ip"]) {
        return;
    }
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let tarpit = start(
        &lab,
        dir.path(),
        "ports = \"1000-2000\"",
        &["--mode", "adaptive"],
    );
    let to: SocketAddr = format!("{SENSOR_V4}:1500").parse().unwrap();
    assert_eq!(first_bytes(&lab, to).unwrap(), "HTTP/1.1");
    // Outside `ports`: not taken.
    let outside: SocketAddr = format!("{SENSOR_V4}:2001").parse().unwrap();
    assert!(first_bytes(&lab, outside).is_err());

    let service = real_service(&lab, 1500);
    wait_for(Duration::from_secs(10), || {
        (first_bytes(&lab, to).ok()? == "REAL\n").then_some(())
    })
    .expect("the port goes to the service that listens on it");
    assert!(
        tarpit
            .stderr()
            .contains("another service listens on port 1500: left to it"),
        "{}",
        tarpit.stderr()
    );
    drop(service);
    wait_for(Duration::from_secs(10), || {
        (first_bytes(&lab, to).ok()? == "HTTP/1.1").then_some(())
    })
    .expect("the port comes back to the tarpit once the service is gone");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE target_port = 1500 AND target_port_source = 'sk_lookup' \
         AND response_mode IS NOT NULL AND local_ip = '10.77.0.1'",
        2,
    );
}

#[test]
fn socketless_hold_holds_steered_connections_without_a_socket() {
    if !lab_ready(&["ip", "ss"]) {
        return;
    }
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let tarpit = start(
        &lab,
        dir.path(),
        "ports = \"1-65535\"",
        &["--hold", "socketless", "--response-delay", "0.3"],
    );
    assert!(
        tarpit.stderr().contains("socketless hold on"),
        "{}",
        tarpit.stderr()
    );
    let targets: Vec<SocketAddr> = [
        format!("{SENSOR_V4}:22"),
        format!("{SENSOR_V4}:31337"),
        format!("[{SENSOR_V6}]:443"),
    ]
    .iter()
    .map(|t| t.parse().unwrap())
    .collect();
    let to_dial = targets.clone();
    let streams: Vec<TcpStream> = lab.as_client(move || {
        to_dial
            .iter()
            .map(|to| request(*to, None, &format!("/held/{}", to.port())))
            .collect()
    });
    // The sensor lets go of every socket, and the clients keep receiving the drip.
    wait_for(Duration::from_secs(15), || {
        let sockets: usize = lab
            .in_sensor("ss -Htn state established | wc -l")
            .trim()
            .parse()
            .ok()?;
        (sockets == 0).then_some(())
    })
    .expect("no socket left on the sensor");
    for mut stream in streams {
        let mut dots = 0;
        let mut byte = [0u8; 1];
        while dots < 3 {
            stream.read_exact(&mut byte).expect("the drip goes on");
            dots += usize::from(byte[0] == b'.');
        }
    }
    let rows: Vec<(i64, String)> =
        tarpit.rows("SELECT target_port, target_port_source FROM events ORDER BY target_port");
    assert_eq!(
        rows,
        [22, 443, 31337]
            .map(|p| (p, "sk_lookup".to_owned()))
            .to_vec()
    );
    // The SYN fingerprint is read from steered connections as from any other.
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE syn_ttl IS NOT NULL"),
        3
    );
}

#[test]
fn without_privileges_on_refuses_to_start_and_auto_falls_back_to_the_port() {
    if !lab_ready(&["ip", "setpriv"]) {
        return;
    }
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let config = |mode: &str| {
        let path = dir.path().join(format!("{mode}.toml"));
        std::fs::write(
            &path,
            format!(
                "[server]\nhost = \"127.0.0.1\"\nport = 8080\nports = \"1-65535\"\nsk_lookup = \"{mode}\"\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    // Root with an empty bounding set: no capability, as a unit without CAP_BPF would be.
    let unprivileged = [
        "ip",
        "netns",
        "exec",
        &lab.sensor,
        "setpriv",
        "--bounding-set=-all",
        "--inh-caps=-all",
    ];
    let on = config("on");
    let out = std::process::Command::new(unprivileged[0])
        .args(&unprivileged[1..])
        .args([
            env!("CARGO_BIN_EXE_tarpit"),
            "--config",
            &on,
            "--scanner-rdns",
            "false",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[server] ports: the sk_lookup program cannot start")
            && stderr.contains("sk_lookup = \"auto\""),
        "{stderr}"
    );

    let auto = config("auto");
    let tarpit = Tarpit::start_wrapped(&unprivileged, &["--config", &auto]);
    assert!(
        tarpit
            .stderr()
            .contains("sk_lookup = \"auto\": answering on port 8080 only"),
        "{}",
        tarpit.stderr()
    );
    let to: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let answer = lab.as_sensor(move || {
        let mut stream = TcpStream::connect(to).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut first = [0u8; 8];
        stream.read_exact(&mut first).unwrap();
        first
    });
    assert_eq!(&answer, b"HTTP/1.1");
    let other: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    assert!(lab.as_sensor(move || TcpStream::connect(other)).is_err());
}
