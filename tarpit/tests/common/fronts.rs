//! Real front ends from apt, started by a test in front of its tarpit on a free loopback port:
//! HAProxy with the shipped `deploy/haproxy/tarpit.cfg` (send-proxy-v2) and nginx with the
//! shipped `deploy/nginx/tarpit-site.conf`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Tarpit;

/// A front end in the foreground: SIGQUIT (nginx's master stops its workers on it), then
/// kill, on drop.
pub struct Front(Child);

impl Drop for Front {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on right now, for a server the test starts next.
///
/// Picked at random below the kernel's ephemeral range: a port the kernel hands out (`bind` to
/// port 0) is free again once checked, and any outgoing connection (curl's, a load generator's)
/// could take it as its source port before the server binds it, failing that bind. Below the
/// range only another test's pick can collide, one chance in ~20,000.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    // Never the same port twice in one test process: two servers started at once (two ports of
    // one ClickHouse, or two tests) would otherwise be told the same free port.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let ephemeral_low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    let (low, span) = (10_000, ephemeral_low.saturating_sub(10_000).max(1000));
    for _ in 0..1000 {
        let port = low + (RandomState::new().hash_one(0u8) % u64::from(span)) as u16;
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port between {low} and {}", low + span)
}

/// HAProxy on 127.0.0.1:`front`, passing to `tarpit` with a PROXY v2 preamble.
pub fn haproxy(tarpit: &Tarpit, front: u16) -> Front {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/haproxy/tarpit.cfg"
    ))
    .unwrap();
    // This machine caps descriptors at 20,000; HAProxy wants two per connection.
    let config = shipped
        .replace("maxconn 100000", "maxconn 4000")
        .replace("bind :80", &format!("bind 127.0.0.1:{front}"))
        .replace("127.0.0.1:8080", &tarpit.addr.to_string());
    let path = tarpit.dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    Front(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts"),
    )
}

/// nginx on 127.0.0.1:`front`, proxying to `tarpit` with X-Real-IP and the other headers.
pub fn nginx(tarpit: &Tarpit, front: u16) -> Front {
    let site = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/nginx/tarpit-site.conf"
    ))
    .unwrap()
    .replace(
        "listen 80 default_server;",
        &format!("listen 127.0.0.1:{front} default_server;"),
    )
    .replace("listen [::]:80 default_server;", "")
    .replace("127.0.0.1:8080", &tarpit.addr.to_string());
    let dir = tarpit.dir.display();
    let conf = tarpit.dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\nevents {{}}\n\
             http {{\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n{site}\n}}\n"
        ),
    )
    .unwrap();
    Front(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts"),
    )
}
