//! `cargo xtask bench hold|churn`: measures a tarpit (ours by default, any other with
//! `--server-cmd`, both in one run with `--compare-cmd`) the same way, on loopback.
//!
//! The load comes from child processes (this binary again, `bench-client`), each holding part
//! of the connections so the client side stays under the per-process fd limit, binding source
//! addresses 127.0.0.2 to 127.0.0.250 so N can pass one address's ephemeral port range. The
//! server's soft fd limit is raised to the hard one. Every loop is bounded in count and time.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// What `bench-client` reports back (microseconds).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientReport {
    /// Connections opened.
    pub opened: u64,
    /// Connections open and still receiving at the end of the hold.
    pub held: u64,
    /// Failures by kind.
    pub connect_failed: u64,
    /// Connection closed by the server (EOF) during the hold.
    pub eof: u64,
    /// Connection reset or another read error.
    pub read_error: u64,
    /// Connect durations.
    pub connect_us: Vec<u32>,
    /// Request sent to first byte received.
    pub ttfb_us: Vec<u32>,
    /// Gaps between consecutive reads during the hold.
    pub gap_us: Vec<u32>,
    /// Churn: completed connect-request-first byte-close cycles.
    pub cycles: u64,
}

/// Figures for one server.
#[derive(Debug, Default)]
pub struct Figures {
    name: String,
    report: ClientReport,
    requested: u64,
    rss_per_conn: Option<f64>,
    cpu_percent: Option<f64>,
    /// Share of that CPU spent in the kernel (sockets, TCP, timers).
    cpu_system_share: Option<f64>,
    cycles_per_s: Option<f64>,
    dropped_events: Option<u64>,
    rows: Option<u64>,
    settle: Option<Duration>,
    rss_start_end: Option<(u64, u64)>,
}

fn percentile(samples: &mut [u32], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    Some(samples[index] as f64 / 1000.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

/// Prints one table with a column per server.
pub fn print_table(title: &str, columns: &mut [Figures]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |label: &str, values: Vec<String>| rows.push((label.to_owned(), values));
    add("server", columns.iter().map(|c| c.name.clone()).collect());
    add(
        "held / requested",
        columns
            .iter()
            .map(|c| format!("{} / {}", c.report.held, c.requested))
            .collect(),
    );
    add(
        "failures (connect, eof, read)",
        columns
            .iter()
            .map(|c| {
                format!(
                    "{}, {}, {}",
                    c.report.connect_failed, c.report.eof, c.report.read_error
                )
            })
            .collect(),
    );
    add(
        "server RSS per held connection",
        columns
            .iter()
            .map(|c| c.rss_per_conn.map_or("-".into(), |b| format!("{b:.0} B")))
            .collect(),
    );
    add(
        "server CPU (% of one core)",
        columns
            .iter()
            .map(|c| c.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%")))
            .collect(),
    );
    add(
        "  of which in the kernel",
        columns
            .iter()
            .map(|c| {
                c.cpu_system_share
                    .map_or("-".into(), |p| format!("{:.0}%", p * 100.0))
            })
            .collect(),
    );
    let mut stat = |label: &str, pick: fn(&mut ClientReport) -> &mut Vec<u32>, p: f64| {
        let values = columns
            .iter_mut()
            .map(|c| fmt_ms(percentile(pick(&mut c.report), p)))
            .collect();
        (label.to_owned(), values)
    };
    let more = [
        stat("connect p99", |r| &mut r.connect_us, 0.99),
        stat("accept -> first byte p50", |r| &mut r.ttfb_us, 0.50),
        stat("accept -> first byte p99", |r| &mut r.ttfb_us, 0.99),
        stat("drip gap p50", |r| &mut r.gap_us, 0.50),
        stat("drip gap p99", |r| &mut r.gap_us, 0.99),
        stat("drip gap max", |r| &mut r.gap_us, 1.0),
    ];
    rows.extend(more);
    let mut add = |label: &str, values: Vec<String>| rows.push((label.to_owned(), values));
    add(
        "churn cycles/s",
        columns
            .iter()
            .map(|c| c.cycles_per_s.map_or("-".into(), |v| format!("{v:.0}")))
            .collect(),
    );
    add(
        "dropped events",
        columns
            .iter()
            .map(|c| c.dropped_events.map_or("-".into(), |v| v.to_string()))
            .collect(),
    );
    add(
        "rows written / expected",
        columns
            .iter()
            .map(|c| match (c.rows, c.cycles_per_s) {
                (Some(rows), Some(_)) => format!("{rows} / {}", c.report.cycles),
                (Some(rows), None) => format!("{rows} / {}", c.report.opened),
                _ => "-".into(),
            })
            .collect(),
    );
    add(
        "rows settled after load",
        columns
            .iter()
            .map(|c| {
                c.settle
                    .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
            })
            .collect(),
    );
    add(
        "server RSS start -> end",
        columns
            .iter()
            .map(|c| {
                c.rss_start_end.map_or("-".into(), |(a, b)| {
                    format!("{} -> {} MB", a >> 20, b >> 20)
                })
            })
            .collect(),
    );
    println!("\n{title}\n");
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(10);
    for (label, values) in rows {
        print!("| {label:<width$} |");
        for v in values {
            print!(" {v:>24} |");
        }
        println!();
    }
}

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

/// The load generator, run as `xtask bench-client` in a child process.
pub fn client(
    role: &str,
    addr: SocketAddr,
    count: u64,
    index: u64,
    duration: u64,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async move {
        match role {
            "hold" => hold_client(addr, count, index, duration).await,
            "churn" => churn_client(addr, count, index, duration).await,
            other => bail!("unknown role {other}"),
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Source address for connection `n` of client `index`: spread over 127.0.0.2-127.0.0.250.
fn source(index: u64, n: u64) -> IpAddr {
    let spread = (index * 7919 + n) % 249;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + spread as u8))
}

async fn connect_from(addr: SocketAddr, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

async fn wait_for_go() {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .ok();
}

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: tarpit-bench\r\n\r\n";

async fn hold_client(
    addr: SocketAddr,
    count: u64,
    index: u64,
    duration: u64,
) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = Arc::new(tokio::sync::Notify::new());
    let hold_started = Arc::new(std::sync::OnceLock::<Instant>::new());
    let ramped = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    for n in 0..count {
        let (go, hold_started, ramped, limit) = (
            go.clone(),
            hold_started.clone(),
            ramped.clone(),
            limit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut r = ClientReport::default();
            let permit = limit.acquire_owned().await.expect("open semaphore");
            let t0 = Instant::now();
            let stream = connect_from(addr, source(index, n)).await;
            let Ok(mut stream) = stream else {
                r.connect_failed = 1;
                ramped.fetch_add(1, Ordering::Relaxed);
                return r;
            };
            r.opened = 1;
            let _ramp_connect = t0.elapsed();
            let mut buf = [0u8; 512];
            if stream.write_all(REQUEST).await.is_err() {
                r.read_error = 1;
                ramped.fetch_add(1, Ordering::Relaxed);
                return r;
            }
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => {
                    r.eof = 1;
                    ramped.fetch_add(1, Ordering::Relaxed);
                    return r;
                }
            }
            drop(permit);
            ramped.fetch_add(1, Ordering::Relaxed);
            go.notified().await;
            let start = *hold_started.get().expect("set before notify");
            let end = start + Duration::from_secs(duration);
            let mut last = None;
            loop {
                let read = tokio::time::timeout_at(end.into(), stream.read(&mut buf)).await;
                match read {
                    Err(_) => break, // the hold window ended
                    Ok(Ok(0)) => {
                        r.eof = 1;
                        return r;
                    }
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        if let Some(previous) = last {
                            let gap: Duration = now - previous;
                            r.gap_us.push(gap.as_micros() as u32);
                        }
                        last = Some(now);
                    }
                    Ok(Err(_)) => {
                        r.read_error = 1;
                        return r;
                    }
                }
            }
            // Held: still open and receiving in the last few seconds of the window.
            if last.is_some_and(|l| end.duration_since(l) < Duration::from_secs(5)) {
                r.held = 1;
            }
            r
        }));
    }
    // Ramp: wait until every connection has its first byte (or failed), bounded in time.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ramped.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready");
    std::io::stdout().flush()?;
    wait_for_go().await;
    hold_started.set(Instant::now()).ok();
    go.notify_waiters();
    // Latency under load: while the connections are held, a few probes spaced over the window
    // time connect and request -> first byte (the ramp would measure the client's own burst).
    let probes = tokio::spawn(probe_latency(addr, index, duration));
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    all.push(probes.await??);
    Ok(merge(all))
}

/// Probe connections during the hold: connect, request, first byte, close, 25 per process.
async fn probe_latency(
    addr: SocketAddr,
    index: u64,
    duration: u64,
) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PROBES: u64 = 25;
    let mut r = ClientReport::default();
    let spacing = Duration::from_millis(duration * 1000 / (PROBES + 1));
    for n in 0..PROBES {
        tokio::time::sleep(spacing).await;
        let t0 = Instant::now();
        let Ok(mut stream) = connect_from(addr, source(index + 1000, n)).await else {
            r.connect_failed += 1;
            continue;
        };
        r.connect_us.push(t0.elapsed().as_micros() as u32);
        let t1 = Instant::now();
        let mut buf = [0u8; 512];
        if stream.write_all(REQUEST).await.is_ok()
            && matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        {
            r.ttfb_us.push(t1.elapsed().as_micros() as u32);
        }
        let _ = stream.set_zero_linger();
    }
    Ok(r)
}

async fn churn_client(
    addr: SocketAddr,
    workers: u64,
    index: u64,
    duration: u64,
) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    println!("ready");
    std::io::stdout().flush()?;
    wait_for_go().await;
    let end = Instant::now() + Duration::from_secs(duration);
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut r = ClientReport::default();
            let mut n = w * 1_000_003;
            let mut buf = [0u8; 1024];
            while Instant::now() < end {
                n += 1;
                let t0 = Instant::now();
                let Ok(mut stream) = connect_from(addr, source(index, n)).await else {
                    r.connect_failed += 1;
                    continue;
                };
                r.connect_us.push(t0.elapsed().as_micros() as u32);
                let t1 = Instant::now();
                if stream.write_all(REQUEST).await.is_err() {
                    r.read_error += 1;
                    continue;
                }
                // Read until the first body byte (after the blank line that ends the head).
                let mut seen = Vec::with_capacity(256);
                let got_body = loop {
                    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
                    {
                        Ok(Ok(0)) | Err(_) => break false,
                        Ok(Ok(k)) => {
                            seen.extend_from_slice(&buf[..k]);
                            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n")
                                && seen.len() > end + 4
                            {
                                break true;
                            }
                        }
                        Ok(Err(_)) => break false,
                    }
                };
                if got_body {
                    r.ttfb_us.push(t1.elapsed().as_micros() as u32);
                    r.cycles += 1;
                } else {
                    r.eof += 1;
                }
                // Close with RST, as many scanners do; avoids client-side TIME_WAIT pile-up.
                let _ = stream.set_zero_linger();
                drop(stream);
            }
            r
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    Ok(merge(all))
}

/// Set in the re-run of an `--isolate-rx` bench, inside its namespace.
pub const ISOLATED_ENV: &str = "TARPIT_BENCH_ISOLATED";

/// `--isolate-rx`: re-runs this bench in a new network namespace whose loopback hands received
/// packets to CPU 1 (RPS), with the whole bench on CPU 1 and the server pinned to CPU 0 (see
/// `main`). On loopback the receiver's protocol work otherwise runs in the sender's system
/// call and is charged to the server; on a sensor it happens on the scanner's machine.
pub fn rerun_isolated() -> anyhow::Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("--isolate-rx needs at least 2 CPUs");
    }
    let namespace = format!("tarpit-bench-{}", std::process::id());
    let outcome = (|| {
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let status = Command::new("ip")
                .args(args)
                .status()
                .context("running ip")?;
            anyhow::ensure!(status.success(), "ip {} failed ({status})", args.join(" "));
            Ok(())
        };
        ip(&["netns", "add", &namespace])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        ip(&[
            "netns",
            "exec",
            &namespace,
            "sh",
            "-c",
            "echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus",
        ])?;
        let status = Command::new("ip")
            .args(["netns", "exec", &namespace, "taskset", "-c", "1"])
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(ISOLATED_ENV, "1")
            .status()
            .context("re-running the bench in its namespace")?;
        anyhow::ensure!(status.success(), "the isolated bench failed ({status})");
        Ok(())
    })();
    let _ = Command::new("ip")
        .args(["netns", "del", &namespace])
        .status();
    outcome
}
