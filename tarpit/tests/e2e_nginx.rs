//! End to end behind nginx (from apt) in a network namespace: nginx on port 80 proxies to the
//! tarpit with the client's 4-tuple and X-Tarpit-Target-Port, and iptables redirects 8888 to
//! nginx. A request to 8888 must show header 80 and eBPF 8888, and `tarpit ports` must report
//! that disagreement; a request to 80 is untranslated and agrees with the header.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::Tarpit;
use common::netns::{Lab, SENSOR_V4, prerequisites_met, request};

/// nginx running in the sensor namespace; killed on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT lets the master stop its workers; SIGKILL would orphan them.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let _ = self.0.wait();
    }
}

#[test]
fn nginx_header_and_ebpf_disagree_after_a_redirect_in_front_of_nginx() {
    if !prerequisites_met(&["ip", "iptables", "ip6tables", "nginx"]) {
        return;
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let lab = Lab::new();
    let tarpit = Tarpit::start_in_netns(
        &lab.sensor,
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "8080",
            "--ebpf-mode",
            "on",
            "--response-delay",
            "0.05",
            "--max-response-bytes",
            "4",
        ],
    );
    let conf = tarpit.dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\nevents {{}}\n\
             http {{\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  \
             include {deploy}/nginx/tarpit-site.conf;\n}}\n",
            dir = tarpit.dir.display()
        ),
    )
    .unwrap();
    let nginx = Nginx(
        Command::new("ip")
            .args(["netns", "exec", &lab.sensor, "nginx", "-c"])
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx starts"),
    );
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh add 80 8888"));

    for (port, path) in [(8888u16, "/via-redirect"), (80, "/direct")] {
        let to: SocketAddr = format!("{SENSOR_V4}:{port}").parse().unwrap();
        let path = path.to_owned();
        // nginx may need a moment to bind; retry the connect briefly.
        lab.as_client(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                match std::panic::catch_unwind(|| drop(request(to, None, &path))) {
                    Ok(()) => break,
                    Err(e) if std::time::Instant::now() > deadline => std::panic::resume_unwind(e),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
                }
            }
        });
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path IN ('/via-redirect', '/direct')",
        2,
    );
    let row = |path: &str| -> (
        Option<i64>,
        Option<i64>,
        Option<String>,
        String,
        i64,
        String,
    ) {
        tarpit
            .db()
            .query_row(
                "SELECT target_port_header, target_port_ebpf, ebpf_lookup, target_port_source,
                        target_port, client_ip
                 FROM events WHERE http_path = ?1",
                [path],
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
            .unwrap()
    };
    let (header, ebpf, lookup, source, target, client) = row("/via-redirect");
    assert_eq!((header, ebpf), (Some(80), Some(8888)));
    assert_eq!(lookup.as_deref(), Some("translated"));
    assert_eq!((source.as_str(), target), ("ebpf", 8888));
    assert_eq!(client, common::netns::CLIENT_V4); // from X-Real-IP, nginx being trusted
    let (header, ebpf, lookup, ..) = row("/direct");
    assert_eq!((header, ebpf), (Some(80), Some(80)));
    assert_eq!(lookup.as_deref(), Some("untranslated"));

    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(["ports", "--json", "--db"])
        .arg(tarpit.dir.join("data/tarpit_events.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pair = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["a"] == "ebpf" && p["b"] == "header")
        .unwrap()
        .clone();
    assert_eq!(
        (pair["compared"].as_u64(), pair["agree"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        report["top_header_ebpf_disagreements"],
        serde_json::json!([{ "header": 80, "ebpf": 8888, "count": 1 }])
    );
    lab.in_sensor(&format!("{deploy}/iptables-redirect.sh remove 80 8888"));
    drop(nginx);
}
