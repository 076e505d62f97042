//! `cargo xtask bench hold|churn`: measures a tarpit (ours by default, any other with
//! `--server-cmd`, both in one run with `--compare-cmd`) the same way, on loopback.
//!
//! The load comes from child processes (this binary again, `bench-client`), each holding part
//! of the connections so the client side stays under the per-process fd limit, binding source
//! addresses 127.0.0.2 to 127.0.0.250 so N can pass one address's ephemeral port range. The
//! server's soft fd limit is raised to the hard one. Every loop is bounded in count and time.

mod client;
mod isolate;
mod report;
pub mod scanners;
pub mod ship;
pub mod synflood;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use client::client;
pub use isolate::{ISOLATED_ENV, rerun_isolated};
pub use report::{ClientReport, Figures, print_table};

/// What [`Server::measure`] saw over a window.
#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    cpu_percent: f64,
    system_share: Option<f64>,
    rss: u64,
    /// Kernel memory of the server's BPF maps (`memlock` in their fdinfo).
    bpf_maps: u64,
    /// Open file descriptors.
    fds: u64,
}

/// A server under test.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    stderr: PathBuf,
}

/// A loopback port nothing listens on, for a server started next: picked at random below the
/// kernel's ephemeral range, because a port the kernel hands out is free again once checked and
/// the load generator's tens of thousands of outgoing connections could take it as their source
/// port before the server binds it.
fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, RandomState};
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let ephemeral_low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .context("reading ip_local_port_range")?;
    let (low, span) = (10_000, ephemeral_low.saturating_sub(10_000).max(1000));
    for _ in 0..1000 {
        let port = low + (RandomState::new().hash_one(0u8) % u64::from(span)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port between {low} and {}", low + span)
}

impl Server {
    /// Starts `command` (with `{port}` and `{dir}` replaced) under `sh`, with its soft fd limit
    /// raised to the hard one, and waits until it accepts connections.
    fn start(command: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let command = command
            .replace("{port}", &port.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let stderr = dir.path().join("server.stderr");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n $(ulimit -Hn); exec {command}"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("starting {command}"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // Generous: it returns as soon as the server accepts, and a loaded machine is slow.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "{command} did not start: {}",
                    std::fs::read_to_string(&stderr)?
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The probe connection above is the server's first; let it be accounted for.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            child,
            dir,
            addr,
            stderr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in bytes.
    fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The `memlock` of every BPF map the server has open (bytes; each map once, however many
    /// fds it has), and its open fds.
    fn bpf_maps_and_fds(&self) -> (u64, u64) {
        let (mut memlock, mut fds) = (0, 0);
        let mut seen = std::collections::HashSet::new();
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return (0, 0);
        };
        for entry in entries.flatten() {
            fds += 1;
            let is_map = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map");
            if !is_map {
                continue;
            }
            let info = format!(
                "/proc/{}/fdinfo/{}",
                self.pid(),
                entry.file_name().to_string_lossy()
            );
            let info = std::fs::read_to_string(info).unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if seen.insert(field("map_id:")) {
                memlock += field("memlock:").unwrap_or(0);
            }
        }
        (memlock, fds)
    }

    /// Sleeps through the measurement window and returns the server's CPU use over it (% of
    /// one core, kernel share) and its RSS at the end.
    fn measure(&self, window: Duration) -> Measured {
        let (user0, sys0) = self.cpu_split();
        let started = Instant::now();
        std::thread::sleep(window);
        let rss = self.rss();
        let (user1, sys1) = self.cpu_split();
        let used = (user1 - user0) + (sys1 - sys0);
        let (bpf_maps, fds) = self.bpf_maps_and_fds();
        Measured {
            cpu_percent: used / started.elapsed().as_secs_f64() * 100.0,
            system_share: (used > 0.0).then(|| (sys1 - sys0) / used),
            rss,
            bpf_maps,
            fds,
        }
    }

    /// CPU time used so far as (user, system) seconds.
    fn cpu_split(&self) -> (f64, f64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Fields 14 and 15 of /proc/PID/stat; index 11 and 12 after the name.
        let hz = 100.0;
        (ticks(11) / hz, ticks(12) / hz)
    }

    /// SIGTERM, then wait (up to 30 s).
    fn stop(mut self) -> anyhow::Result<(String, tempfile::TempDir)> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
        Ok((
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            self.dir,
        ))
    }
}

/// Runs `processes` bench-client children; returns them with their stdin/stdout.
fn spawn_clients(
    role: &str,
    addr: SocketAddr,
    per_process: &[u64],
    extra: &[String],
) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    per_process
        .iter()
        .enumerate()
        .map(|(i, count)| {
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ulimit -n $(ulimit -Hn); exec {} bench-client --role {role} --addr {addr} \
                     --count {count} --index {i} {}",
                    exe.display(),
                    extra.join(" ")
                ))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a bench client")
        })
        .collect()
}

fn split(total: u64, parts: u64) -> Vec<u64> {
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

fn merge(reports: Vec<ClientReport>) -> ClientReport {
    let mut all = ClientReport::default();
    for r in reports {
        all.opened += r.opened;
        all.held += r.held;
        all.connect_failed += r.connect_failed;
        all.eof += r.eof;
        all.read_error += r.read_error;
        all.cycles += r.cycles;
        all.connect_us.extend(r.connect_us);
        all.ttfb_us.extend(r.ttfb_us);
        all.gap_us.extend(r.gap_us);
    }
    all
}

/// Reads "ready" from every client, then says "go" to all; returns the reports.
fn run_clients(
    children: &mut [Child],
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<ClientReport>> {
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("piped")))
        .collect();
    for reader in &mut readers {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("a bench client failed before it was ready: {line:?}");
        }
    }
    for child in children.iter_mut() {
        writeln!(child.stdin.as_mut().expect("piped"), "go")?;
    }
    during()?;
    let mut reports = Vec::new();
    for (reader, child) in readers.iter_mut().zip(children.iter_mut()) {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        reports.push(serde_json::from_str(&line).context("a bench client's report")?);
        child.wait()?;
    }
    Ok(reports)
}

/// Rows in the events table of a SQLite file, if there is one.
fn count_rows(db: &Path) -> Option<u64> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from events').fetchone()[0])")
        .arg(db)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Events the server lost, from its last words ("stopped; ... dropped=N sink_dropped=M"): those
/// the workers' channel refused plus those a sink's queue refused.
fn dropped_events(stderr: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains("sink_dropped="))?;
    let count = |name: &str| -> Option<u64> {
        let at = line
            .match_indices(name)
            .find(|(at, _)| *at == 0 || line.as_bytes()[at - 1] == b' ')?
            .0;
        line[at + name.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(count("dropped=")? + count("sink_dropped=")?)
}

/// Echoes the server's lines worth seeing beside the table: the socketless holder's late ticks,
/// and where events were lost.
fn echo_notable(name: &str, stderr: &str) {
    for line in stderr.lines().filter(|l| {
        l.contains("socketless holder stopping")
            || l.contains("events were lost")
            || l.contains("stopped; every queued event written")
    }) {
        eprintln!("xtask: {name}: {}", line.trim());
    }
}

/// Runs the `role` clients (`per_process` connections or loops each) against `server` and
/// measures the server over the `duration`-second window; returns the clients' merged report.
fn load(
    server: &Server,
    role: &str,
    per_process: Vec<u64>,
    (duration, ramp_rate): (u64, u64),
) -> anyhow::Result<(ClientReport, Measured)> {
    let processes = per_process.len() as u64;
    let extra = vec![
        format!("--duration {duration}"),
        format!("--ramp-rate {}", ramp_rate.div_ceil(processes.max(1))),
    ];
    let mut children = spawn_clients(role, server.addr, &per_process, &extra)?;
    let mut window = Measured::default();
    let reports = run_clients(&mut children, || {
        window = server.measure(Duration::from_secs(duration));
        Ok(())
    })?;
    Ok((merge(reports), window))
}

/// Connections one client process holds at most (its fd limit is 20,000 here).
const CONNS_PER_PROCESS: u64 = 15_000;

/// `bench hold`: open `conns` (at most `ramp_rate` a second when not 0), hold them
/// `duration` seconds, measure.
pub fn hold(
    command: &str,
    name: &str,
    conns: u64,
    (duration, processes, ramp_rate): (u64, u64, u64),
) -> anyhow::Result<Figures> {
    let server = Server::start(command)?;
    // Warm up first (3 s of churn, then 11 s for a socketless server's memory trimmer to
    // pass), so the baseline includes the pipeline's bounded caches (SQLite pages, regex
    // states) and the delta is what the held connections cost.
    load(&server, "churn", vec![8], (3, 0))?;
    std::thread::sleep(Duration::from_secs(11));
    let rss_before = server.rss();
    let (bpf_before, _) = server.bpf_maps_and_fds();
    let processes = processes.max(conns.div_ceil(CONNS_PER_PROCESS));
    let (report, window) = load(
        &server,
        "hold",
        split(conns, processes),
        (duration, ramp_rate),
    )?;
    let (stderr, dir) = server.stop()?;
    // The socketless holder says how many of its ticks were late (server-side cadence).
    echo_notable(name, &stderr);
    let held = report.held.max(1);
    let rss_delta = window.rss.saturating_sub(rss_before) as f64;
    let bpf_delta = window.bpf_maps.saturating_sub(bpf_before) as f64;
    Ok(Figures {
        name: name.into(),
        rss_per_conn: Some(rss_delta / held as f64),
        bpf_per_conn: Some(bpf_delta / held as f64),
        fds: Some(window.fds),
        cpu_percent: Some(window.cpu_percent),
        cpu_system_share: window.system_share,
        dropped_events: dropped_events(&stderr),
        rows: count_rows(&dir.path().join("data/tarpit_events.db")),
        report,
        requested: conns,
        ..Default::default()
    })
}

/// `bench churn`: `workers` loops of connect, request, first body byte, close.
pub fn churn(
    command: &str,
    name: &str,
    workers: u64,
    duration: u64,
    processes: u64,
) -> anyhow::Result<Figures> {
    let server = Server::start(command)?;
    let rss_start = server.rss();
    let (report, window) = load(&server, "churn", split(workers, processes), (duration, 0))?;
    let rss_end = server.rss();
    // How long until every cycle has its row (polled while the server still runs).
    let db = server.dir.path().join("data/tarpit_events.db");
    let load_end = Instant::now();
    let mut settle = None;
    while load_end.elapsed() < Duration::from_secs(60) {
        if count_rows(&db).is_some_and(|rows| rows >= report.cycles) {
            settle = Some(load_end.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (stderr, dir) = server.stop()?;
    echo_notable(name, &stderr);
    Ok(Figures {
        name: name.into(),
        cpu_percent: Some(window.cpu_percent),
        cpu_system_share: window.system_share,
        cycles_per_s: Some(report.cycles as f64 / duration as f64),
        dropped_events: dropped_events(&stderr),
        rows: count_rows(&dir.path().join("data/tarpit_events.db")),
        settle,
        rss_start_end: Some((rss_start, rss_end)),
        report,
        requested: workers,
        ..Default::default()
    })
}

/// `cargo xtask bench hold|churn`'s options (see `main`'s `Bench`).
pub struct LoadArgs {
    pub conns: u64,
    pub workers: u64,
    pub duration: u64,
    pub processes: u64,
    pub server_cmd: Option<String>,
    pub compare_cmd: Option<String>,
    pub isolate_rx: bool,
    /// `--hold socketless`: our tarpit socketless at `conns` and on sockets at `socket_conns`.
    pub socketless: bool,
    pub socket_conns: u64,
    pub ramp_rate: Option<u64>,
    /// `--sk-lookup`: ours on its port and with sk_lookup steering every port, same run.
    pub sk_lookup: bool,
}

/// `cargo xtask bench hold|churn`: each server in turn (ours, or `--server-cmd`; then
/// `--compare-cmd`; with `--hold socketless`, ours both ways), one table.
pub fn hold_or_churn(root: &Path, kind: crate::BenchKind, args: LoadArgs) -> anyhow::Result<()> {
    use crate::BenchKind;
    let LoadArgs {
        conns,
        workers,
        duration,
        processes,
        server_cmd,
        compare_cmd,
        isolate_rx,
        socketless,
        socket_conns,
        ramp_rate,
        sk_lookup,
    } = args;
    if cfg!(debug_assertions) {
        return crate::rerun_release(root);
    }
    if isolate_rx && std::env::var_os(ISOLATED_ENV).is_none() {
        return rerun_isolated();
    }
    if sk_lookup && !isolate_rx && std::env::var_os(isolate::PRIVATE_ENV).is_none() {
        return isolate::rerun_private();
    }
    let ours = match server_cmd {
        Some(cmd) => cmd,
        None => {
            crate::run(crate::cargo(root).args(["build", "--release", "-p", "tarpit"]))?;
            format!(
                "{} --host 127.0.0.1 --port {{port}}",
                crate::target_dir(root).join("release/tarpit").display()
            )
        }
    };
    let socketless = socketless && matches!(kind, BenchKind::Hold);
    let ramp_rate = ramp_rate.unwrap_or(if socketless { 4_000 } else { 0 });
    let mut servers = vec![("server", ours.clone(), conns)];
    if socketless {
        servers = vec![
            (
                "socketless",
                format!("{ours} --hold socketless --ebpf-mode on"),
                conns,
            ),
            ("socket", ours.clone(), socket_conns),
        ];
    }
    // Kept until the end of the run: the sk_lookup column's configuration.
    let steer_config = tempfile::tempdir()?;
    if sk_lookup {
        let path = steer_config.path().join("every-port.toml");
        std::fs::write(&path, "[server]\nports = \"1-65535\"\n")?;
        let steered = format!("{ours} --config {}", path.display());
        servers = vec![("port", ours.clone(), conns), ("sk_lookup", steered, conns)];
    }
    if let Some(cmd) = compare_cmd {
        servers.push(("compared", cmd, conns));
    }
    if isolate_rx {
        for (_, cmd, _) in &mut servers {
            *cmd = format!("taskset -c 0 {cmd}");
        }
    }
    if servers
        .iter()
        .any(|(_, cmd, _)| cmd.contains("baseline.py"))
    {
        crate::ensure_python_module("aiohttp", "aiohttp")?;
    }
    let mut columns = Vec::new();
    for (name, cmd, conns) in servers {
        eprintln!("xtask: bench against {cmd}");
        let figures = match kind {
            BenchKind::Hold => hold(&cmd, name, conns, (duration, processes, ramp_rate))?,
            BenchKind::Churn => churn(&cmd, name, workers, duration, processes)?,
            BenchKind::Classify
            | BenchKind::Canary
            | BenchKind::Sinks
            | BenchKind::Scanners
            | BenchKind::Ship
            | BenchKind::Synflood => {
                unreachable!("handled above")
            }
        };
        columns.push(figures);
    }
    let title = match kind {
        BenchKind::Hold if socketless => format!(
            "hold: {conns} connections socketless, {socket_conns} on sockets, \
             {duration} s measured, opened at {ramp_rate}/s"
        ),
        BenchKind::Hold => format!("hold: {conns} connections, {duration} s measured"),
        BenchKind::Churn => format!("churn: {workers} loops, {duration} s measured"),
        BenchKind::Classify
        | BenchKind::Canary
        | BenchKind::Sinks
        | BenchKind::Scanners
        | BenchKind::Ship
        | BenchKind::Synflood => {
            unreachable!("handled above")
        }
    };
    print_table(&title, &mut columns);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_events_count_the_channel_and_the_sinks() {
        let stderr = "2026-12-06T16:35:29Z  WARN tarpit::pipeline: events were lost dropped_events=3\n\
                      2026-12-06T16:35:30Z  INFO tarpit::server: stopped; every queued event \
                      written dropped=2 sink_dropped=34694\n";
        assert_eq!(dropped_events(stderr), Some(34_696));
        assert_eq!(dropped_events("no summary"), None);
    }
}
