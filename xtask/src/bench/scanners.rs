//! `cargo xtask bench scanners`: real scanners (gobuster, ffuf, nmap with `http-enum`,
//! dirsearch and wapiti from Debian's packages, feroxbuster from crates.io, and curl without a
//! timeout), each with its default settings and one fixed word list, for a fixed window,
//! against (a) nginx serving a small site (found pages 200, the rest 404, at once), (b) the
//! tarpit in its default drip, (c) the tarpit in the adaptive mode, and every extra
//! configuration named with `--tarpit-args`; then each tarpit column against the drip.
//!
//! Before each scanner, a different tool visits the tarpit from the same address and gives up
//! ([`PREVIOUS`]: gobuster, or ffuf before gobuster, with a 3 s timeout), as on a sensor where
//! one operator runs several tools: the adaptive mode must not plan the scanner with the other
//! tool's figure. Only the scanner's own requests are counted.
//!
//! Per scanner and target it reports what the server recorded (requests, distinct paths,
//! seconds held: the sum of request hold times; attacker-seconds: the same with a request the
//! client gave up on counted only until the client's FIN, since a tarpit notices a departure
//! only at its next write) and how the scanner ended: finished, aborted (a non-zero exit), or
//! still scanning when the window closed (then it is stopped).
//! Loopback only; every run is bounded by the window.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Server, free_port};

/// The fixed word list: dirb's big list (20,469 words), from Debian's `dirb` package. No
/// scanner gets through it against the tarpit within a window of minutes.
pub const WORDLIST: &str = "/usr/share/dirb/wordlists/big.txt";

/// The scanners, by name, with their command lines (`{url}`, `{port}`, `{wordlist}` replaced).
/// Only output options are added to the defaults (no progress bar).
pub const SCANNERS: &[(&str, &str)] = &[
    ("gobuster", "gobuster dir -q -z -u {url}/ -w {wordlist}"),
    ("ffuf", "ffuf -s -u {url}/FUZZ -w {wordlist}"),
    (
        "nmap http-enum",
        "nmap -n -Pn -p {port} -sV --script http-enum 127.0.0.1",
    ),
    (
        "feroxbuster",
        "feroxbuster -u {url} -w {wordlist} --silent --no-state",
    ),
    // Debian's wrapper runs `python3` from PATH: the system one, which has its dependencies.
    (
        "dirsearch",
        "env PATH=/usr/bin:/bin dirsearch -u {url}/ -w {wordlist} -q -o {logs}/dirsearch.txt",
    ),
    (
        "wapiti",
        "env PATH=/usr/bin:/bin wapiti -u {url}/ --flush-session -f txt -o {logs}/wapiti",
    ),
    // A client with no timeout at all: the drip's best case, which adaptive must not spoil.
    ("curl (no timeout)", "curl -s -o /dev/null {url}/index.html"),
];

/// The tool that visits each tarpit target before a scanner, from the same address, and gives
/// up after 3 s (`{url}` replaced): gobuster, or ffuf before gobuster itself. At most
/// [`PREVIOUS_WINDOW`].
pub const PREVIOUS: [(&str, &str); 2] = [
    (
        "gobuster",
        "gobuster dir -q -z --timeout 3s -u {url}/ -w {wordlist}",
    ),
    ("ffuf", "ffuf -s -timeout 3 -u {url}/FUZZ -w {wordlist}"),
];

/// How long the previous tool may run.
pub const PREVIOUS_WINDOW: Duration = Duration::from_secs(8);

/// What one scanner did against one target.
#[derive(Debug, Clone)]
pub struct Run {
    /// Requests the server recorded.
    pub requests: u64,
    /// Distinct paths among them.
    pub distinct_paths: u64,
    /// Seconds the server held the scanner's requests, summed (until it noticed each end).
    pub held_seconds: f64,
    /// The same, but a request the client gave up on counts until the client's FIN
    /// (`client_fin_s`): the time the scanner itself spent.
    pub attacker_seconds: f64,
    /// `finished`, `aborted (exit N)` or `still scanning`.
    pub outcome: String,
    /// Seconds until the scanner ended (or the window closed).
    pub wall_seconds: f64,
}

/// A server the scanners are pointed at.
enum Target {
    /// nginx with a private configuration and root.
    Nginx {
        child: std::process::Child,
        dir: tempfile::TempDir,
        port: u16,
    },
    /// The tarpit (its own database in its temporary directory).
    Tarpit(Server),
}

impl Target {
    fn port(&self) -> u16 {
        match self {
            Target::Nginx { port, .. } => *port,
            Target::Tarpit(server) => server.addr.port(),
        }
    }

    /// Stops the server and reads what it recorded on connections after `after` (the
    /// previous tool's).
    fn finish(self, after: i64) -> anyhow::Result<(u64, u64, f64, f64)> {
        match self {
            Target::Nginx { child, dir, .. } => {
                stop_nginx(child);
                let log = std::fs::read_to_string(dir.path().join("access.log"))?;
                let mut paths = std::collections::HashSet::new();
                let (mut requests, mut held) = (0, 0.0);
                for line in log.lines() {
                    // `$request_time $uri`
                    let Some((time, uri)) = line.split_once(' ') else {
                        continue;
                    };
                    requests += 1;
                    held += time.parse::<f64>().unwrap_or(0.0);
                    paths.insert(uri.to_owned());
                }
                Ok((requests, paths.len() as u64, held, held))
            }
            Target::Tarpit(server) => {
                let (_, dir) = server.stop()?;
                // Read with Python's sqlite3, as the other benches do (xtask links no SQLite).
                let out = Command::new("python3")
                    .arg("-c")
                    .arg(
                        "import sqlite3,sys; print(*sqlite3.connect(sys.argv[1]).execute(\
                         'select count(*), count(distinct http_path), total(duration_s), \
                         total(case when client_fin_s is not null and end_reason in \
                         (\\'client_closed\\', \\'client_reset\\') then client_fin_s \
                         else duration_s end) from events where conn_id > ?', \
                         (int(sys.argv[2]),)).fetchone())",
                    )
                    .arg(dir.path().join("data/tarpit_events.db"))
                    .arg(after.to_string())
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                let fields: Vec<&str> = text.split_whitespace().collect();
                let [requests, paths, held, attacker] = fields[..] else {
                    bail!("reading the tarpit's database: {text}");
                };
                Ok((
                    requests.parse()?,
                    paths.parse()?,
                    held.parse()?,
                    attacker.parse()?,
                ))
            }
        }
    }
}

/// nginx on a free loopback port: `/index.html`, `/admin/` and `/login.php` exist, the rest is
/// 404; every request is logged with its time.
fn start_nginx() -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("admin"))?;
    for page in ["index.html", "admin/index.html", "login.php"] {
        std::fs::write(root.join(page), "<html><body>It works.</body></html>\n")?;
    }
    let d = dir.path().display();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\n\
             events {{}}\nhttp {{\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  \
             log_format timed '$request_time $uri';\n  access_log {d}/access.log timed;\n  \
             server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n",
            root = root.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light)")?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The readiness probe is not a scanner's request.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(dir.path().join("access.log"), "")?;
    Ok(Target::Nginx { child, dir, port })
}

/// Stops nginx by its fast shutdown (SIGTERM: the master ends its workers, then itself), and
/// kills it only if it has not ended within 10 s. A SIGKILL to the master alone left its
/// worker running, orphaned, with the listening socket, after every run.
fn stop_nginx(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `command` until it exits or `window` passes; returns its outcome and wall time.
fn run_scanner(command: &str, window: Duration, log: &Path) -> anyhow::Result<(String, f64)> {
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::options().append(true).open(log)?)
        .spawn()
        .with_context(|| format!("starting {command}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            let outcome = match status.code() {
                Some(0) => "finished".to_owned(),
                Some(code) => format!("aborted (exit {code})"),
                None => "killed".to_owned(),
            };
            return Ok((outcome, started.elapsed().as_secs_f64()));
        }
        if started.elapsed() >= window {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(("still scanning".to_owned(), window.as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The highest connection id the tarpit recorded so far, once the previous tool's requests
/// are all in its database (the pipeline writes within a second).
fn last_conn_id(server: &Server) -> anyhow::Result<i64> {
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\
             'select coalesce(max(conn_id), 0) from events').fetchone()[0])",
        )
        .arg(server.dir.path().join("data/tarpit_events.db"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("reading the last connection id: {text}"))
}

/// How to install each program the bench may run.
const INSTALL: &[(&str, &str)] = &[
    ("gobuster", "apt-get install gobuster"),
    ("ffuf", "apt-get install ffuf"),
    ("nmap", "apt-get install nmap"),
    ("curl", "apt-get install curl"),
    ("nginx", "apt-get install nginx-light"),
    ("dirsearch", "apt-get install dirsearch"),
    ("wapiti", "apt-get install wapiti"),
    ("feroxbuster", "cargo install feroxbuster"),
];

/// The program a command line runs (after any `env VAR=...`).
fn program(command: &str) -> &str {
    command
        .split_whitespace()
        .find(|word| *word != "env" && !word.contains('='))
        .unwrap_or("")
}

/// Every program the selected scanners (and the tools run before them) need, or how to
/// install the missing ones.
fn check_prerequisites(only: Option<&str>) -> anyhow::Result<()> {
    let mut needed = vec!["nginx"];
    for (scanner, command) in SCANNERS {
        if only.is_none_or(|o| scanner.starts_with(o)) {
            needed.push(program(command));
        }
    }
    needed.extend(PREVIOUS.iter().map(|(_, command)| program(command)));
    needed.sort_unstable();
    needed.dedup();
    let mut missing: Vec<&str> = needed
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|tool| {
            INSTALL
                .iter()
                .find(|(name, _)| *name == tool)
                .map_or(tool, |(_, how)| how)
        })
        .collect();
    if !Path::new(WORDLIST).exists() {
        missing.push("apt-get install dirb");
    }
    if !missing.is_empty() {
        bail!(
            "the scanner bench needs: {} (scanners from crates.io are looked up on PATH, \
             ~/.cargo/bin included)",
            missing.join("; ")
        );
    }
    Ok(())
}

/// Runs every scanner against every target; `tarpits` are (column name, tarpit command line
/// with `{port}`). Returns, per scanner, the runs in target order (nginx first).
pub fn scanners(
    tarpits: &[(String, String)],
    window: Duration,
    only: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, Vec<Run>)>> {
    check_prerequisites(only)?;
    let logs = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (scanner, template) in SCANNERS {
        if only.is_some_and(|o| !scanner.starts_with(o)) {
            continue;
        }
        let mut runs = Vec::new();
        let targets = std::iter::once(None).chain(tarpits.iter().map(Some));
        for (index, tarpit) in targets.enumerate() {
            let target = match tarpit {
                None => start_nginx()?,
                Some((_, command)) => Target::Tarpit(Server::start(command)?),
            };
            let port = target.port();
            let fill = |template: &str| {
                template
                    .replace("{url}", &format!("http://127.0.0.1:{port}"))
                    .replace("{port}", &port.to_string())
                    .replace("{wordlist}", WORDLIST)
                    .replace("{logs}", &logs.path().display().to_string())
            };
            let log: PathBuf = logs
                .path()
                .join(format!("{}-{index}.log", scanner.replace(' ', "-")));
            let after = match &target {
                Target::Tarpit(server) => {
                    let (previous, template) = PREVIOUS
                        .iter()
                        .find(|(name, _)| !scanner.starts_with(name))
                        .expect("two previous tools");
                    eprintln!("xtask: {previous} first, against target {index}");
                    run_scanner(&fill(template), PREVIOUS_WINDOW, &log)?;
                    last_conn_id(server)?
                }
                Target::Nginx { .. } => 0,
            };
            let command = fill(template);
            eprintln!("xtask: {scanner} against target {index}: {command}");
            let (outcome, wall_seconds) = run_scanner(&command, window, &log)?;
            let (requests, distinct_paths, held_seconds, attacker_seconds) =
                target.finish(after)?;
            runs.push(Run {
                requests,
                distinct_paths,
                held_seconds,
                attacker_seconds,
                outcome,
                wall_seconds,
            });
        }
        results.push((*scanner, runs));
    }
    Ok(results)
}

/// The results as a Markdown table, one row per scanner and target.
pub fn print(results: &[(&str, Vec<Run>)], columns: &[String], window: Duration) {
    println!(
        "\nscanners: dirb big.txt ({WORDLIST}), window {} s\n",
        window.as_secs()
    );
    println!(
        "| scanner | target | requests recorded | distinct paths | seconds held | attacker-seconds | outcome | ran for |"
    );
    println!("|---|---|---:|---:|---:|---:|---|---:|");
    for (scanner, runs) in results {
        for (run, column) in runs.iter().zip(columns) {
            println!(
                "| {scanner} | {column} | {} | {} | {:.1} | {:.1} | {} | {:.1} s |",
                run.requests,
                run.distinct_paths,
                run.held_seconds,
                run.attacker_seconds,
                run.outcome,
                run.wall_seconds
            );
        }
    }
    // Every further tarpit column against the drip (column 1), as the adaptive goal states it.
    if columns.len() > 2 {
        println!(
            "\n| scanner | target | requests vs drip | seconds held vs drip | attacker-seconds vs drip |"
        );
        println!("|---|---|---:|---:|---:|");
        for (scanner, runs) in results {
            let Some(drip) = runs.get(1) else { continue };
            for (run, column) in runs.iter().zip(columns).skip(2) {
                println!(
                    "| {scanner} | {column} | {} | {} | {} |",
                    ratio(run.requests as f64, drip.requests as f64),
                    ratio(run.held_seconds, drip.held_seconds),
                    ratio(run.attacker_seconds, drip.attacker_seconds),
                );
            }
        }
    }
}

/// `a / b` as `12.3x` (`-` when `b` is zero).
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_and_its_worker_are_gone_once_the_bench_has_read_its_log() {
        if Command::new("nginx").arg("-v").output().is_err() {
            assert!(
                std::env::var_os("TARPIT_E2E").is_none(),
                "nginx is missing (cargo xtask ci-setup installs it)"
            );
            eprintln!("skipped: nginx is not installed");
            return;
        }
        let target = start_nginx().unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], target.port()));
        target.finish(0).unwrap();
        // An orphaned worker would still hold the listening socket and accept.
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn every_program_the_bench_runs_says_how_to_install_it() {
        assert_eq!(
            program("env PATH=/usr/bin:/bin dirsearch -u x"),
            "dirsearch"
        );
        assert_eq!(program("gobuster dir -q"), "gobuster");
        for command in SCANNERS.iter().chain(&PREVIOUS).map(|(_, c)| c) {
            let name = program(command);
            assert!(
                INSTALL.iter().any(|(tool, _)| *tool == name),
                "{name} has no install line"
            );
        }
    }
}
