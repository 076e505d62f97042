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
}

/// A server under test.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    stderr: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// Sleeps through the measurement window and returns the server's CPU use over it (% of
    /// one core, kernel share) and its RSS at the end.
    fn measure(&self, window: Duration) -> Measured {
        let (user0, sys0) = self.cpu_split();
        let started = Instant::now();
        std::thread::sleep(window);
        let rss = self.rss();
        let (user1, sys1) = self.cpu_split();
        let used = (user1 - user0) + (sys1 - sys0);
        Measured {
            cpu_percent: used / started.elapsed().as_secs_f64() * 100.0,
            system_share: (used > 0.0).then(|| (sys1 - sys0) / used),
            rss,
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

fn dropped_events(stderr: &str) -> Option<u64> {
    let at = stderr.rfind("dropped=")?;
    stderr[at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs the `role` clients (`per_process` connections or loops each) against `server` and
/// measures the server over the `duration`-second window; returns the clients' merged report.
fn load(
    server: &Server,
    role: &str,
    per_process: Vec<u64>,
    duration: u64,
) -> anyhow::Result<(ClientReport, Measured)> {
    let extra = vec![format!("--duration {duration}")];
    let mut children = spawn_clients(role, server.addr, &per_process, &extra)?;
    let mut window = Measured::default();
    let reports = run_clients(&mut children, || {
        window = server.measure(Duration::from_secs(duration));
        Ok(())
    })?;
    Ok((merge(reports), window))
}

/// `bench hold`: open `conns`, hold them `duration` seconds, measure.
pub fn hold(
    command: &str,
    name: &str,
    conns: u64,
    duration: u64,
    processes: u64,
) -> anyhow::Result<Figures> {
    let server = Server::start(command)?;
    let rss_before = server.rss();
    let (report, window) = load(&server, "hold", split(conns, processes), duration)?;
    let (stderr, dir) = server.stop()?;
    let held = report.held.max(1);
    Ok(Figures {
        name: name.into(),
        rss_per_conn: Some(window.rss.saturating_sub(rss_before) as f64 / held as f64),
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
    let (report, window) = load(&server, "churn", split(workers, processes), duration)?;
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
