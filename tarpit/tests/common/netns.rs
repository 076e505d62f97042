//! A two-host lab in network namespaces: a "sensor" (two IPv4 addresses and one IPv6) and a
//! "client", joined by a veth pair. Everything is created by the test and removed on drop.
//! Needs root; without it (or without `ip`, `iptables`, `nft`) a test skips, unless
//! `TARPIT_E2E` is set, which makes a missing prerequisite a failure.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Sensor addresses inside the lab.
pub const SENSOR_V4: &str = "10.77.0.1";
/// The sensor's second IPv4 address (REDIRECT rewrites to the primary one).
pub const SENSOR_V4_SECOND: &str = "10.77.0.3";
/// The sensor's IPv6 address.
pub const SENSOR_V6: &str = "fd00:77::1";
/// The client's IPv4 address.
pub const CLIENT_V4: &str = "10.77.0.2";

/// Runs a shell command, panicking with its output when it fails.
pub fn sh(command: &str) -> String {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(
        out.status.success(),
        "`{command}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the lab can run here; with `TARPIT_E2E` set, a missing prerequisite panics.
pub fn prerequisites_met(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("`{tool}` (cargo xtask ci-setup installs it)"));
        }
    }
    if tarpit::ebpf::OBJECT.is_none() {
        missing.push("the eBPF object (cargo xtask build-ebpf, then rebuild)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("missing prerequisites: {}", missing.join(", "));
    if std::env::var_os("TARPIT_E2E").is_some() {
        panic!("TARPIT_E2E is set and {message}");
    }
    eprintln!("SKIPPED: {message} (TARPIT_E2E=1 makes this a failure)");
    false
}

/// The two namespaces.
pub struct Lab {
    /// The sensor's namespace name.
    pub sensor: String,
    /// The client's namespace name.
    pub client: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Creates the namespaces, the veth pair and the addresses.
    pub fn new() -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            sensor: format!("tps{id}"),
            client: format!("tpc{id}"),
        };
        let (s, c) = (&lab.sensor, &lab.client);
        sh(&format!("ip netns add {s} && ip netns add {c}"));
        sh(&format!(
            "ip link add vs{id} netns {s} type veth peer name vc{id} netns {c}"
        ));
        sh(&format!(
            "ip -n {s} addr add {SENSOR_V4}/24 dev vs{id} && \
             ip -n {s} addr add {SENSOR_V4_SECOND}/24 dev vs{id} && \
             ip -n {s} addr add {SENSOR_V6}/64 dev vs{id} nodad && \
             ip -n {c} addr add {CLIENT_V4}/24 dev vc{id} && \
             ip -n {c} addr add fd00:77::2/64 dev vc{id} nodad && \
             ip -n {s} link set lo up && ip -n {c} link set lo up && \
             ip -n {s} link set vs{id} up && ip -n {c} link set vc{id} up"
        ));
        lab
    }

    /// Runs `command` inside the sensor namespace.
    pub fn in_sensor(&self, command: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{command}'", self.sensor))
    }

    /// Runs `command` inside the client namespace.
    pub fn in_client(&self, command: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{command}'", self.client))
    }

    /// Gives the client the extra IPv4 addresses `addresses` (in `prefix`, a network outside
    /// the lab's /24 that the sensor is given a route to), so a test can connect from many.
    pub fn add_client_addresses(&self, prefix: &str, addresses: &[std::net::Ipv4Addr]) {
        let id = &self.client["tpc".len()..];
        let batch: String = addresses
            .iter()
            .map(|a| format!("addr add {a}/32 dev vc{id}\n"))
            .collect();
        let file = std::env::temp_dir().join(format!("tarpit-addrs-{}", self.client));
        std::fs::write(&file, batch).unwrap();
        sh(&format!("ip -n {} -b {}", self.client, file.display()));
        let _ = std::fs::remove_file(&file);
        sh(&format!(
            "ip -n {} route add {prefix} dev vs{id}",
            self.sensor
        ));
    }

    /// Runs `f` on a thread that has joined the client namespace.
    pub fn as_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_namespace(&self.client, f)
    }

    /// Runs `f` on a thread that has joined the sensor namespace (to reach the tarpit's
    /// loopback-only endpoints, such as metrics).
    pub fn as_sensor<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_namespace(&self.sensor, f)
    }
}

/// Runs `f` on a thread that has joined the network namespace `name`.
fn in_namespace<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.sensor, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Connects (optionally from a fixed local address) and sends one request for `path`; returns
/// the open stream once the response has started.
pub fn request(to: SocketAddr, from: Option<SocketAddr>, path: &str) -> TcpStream {
    use std::io::{Read, Write};
    let domain = socket2::Domain::for_address(to);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    if let Some(from) = from {
        socket.set_reuse_address(true).unwrap();
        socket.bind(&from.into()).unwrap();
    }
    socket
        .connect_timeout(&to.into(), std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: sensor\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    stream
}
