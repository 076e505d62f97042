//! Test harness: runs the real `tarpit` binary in a temporary directory on an ephemeral
//! loopback port, and gives tests raw sockets, the SQLite database and the JSON log.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod clickhouse;
pub mod dataset;
pub mod dns;
pub mod fake_api;
pub mod fronts;
pub mod netns;
pub mod syscalls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rusqlite::Connection;

/// Fast drip used by most tests: 10 one-byte chunks 50 ms apart.
pub const FAST: &[&str] = &[
    "--response-delay",
    "0.05",
    "--max-response-bytes",
    "10",
    "--workers",
    "2",
];

/// The exact body of a complete fast response.
pub const FAST_BODY: &[u8] = b"1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n1\r\n.\r\n0\r\n\r\n";

/// A running tarpit process.
pub struct Tarpit {
    child: Option<Child>,
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    pub addr: SocketAddr,
    run: u32,
}

impl Tarpit {
    /// Starts the binary in a fresh temporary directory with `args` (plus `--port 0`).
    pub fn start(args: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("temporary directory");
        let dir = tempdir.path().to_path_buf();
        let mut tarpit = Self::start_in(&dir, args, 0);
        tarpit._tempdir = Some(tempdir);
        tarpit
    }

    /// Starts the binary in `dir` (whose database may already exist); `run` numbers the stderr
    /// file so restarts keep each run's diagnostics.
    pub fn start_in(dir: &Path, args: &[&str], run: u32) -> Self {
        Self::launch(dir, &[], args, run)
    }

    /// Starts the binary in `dir` with extra environment variables (`ABUSEIPDB_API_KEY` is
    /// cleared first, so no test depends on the caller's environment). Reverse DNS of
    /// clients is off unless `args` ask for it: test traffic stays on this machine.
    pub fn launch(dir: &Path, env: &[(&str, &str)], args: &[&str], run: u32) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tarpit"));
        command.args(["--port", "0"]).args(no_rdns(args)).args(args);
        command.env_remove("ABUSEIPDB_API_KEY");
        command.envs(env.iter().copied());
        Self::spawn(command, dir, run)
    }

    /// Starts the binary in a fresh directory holding `tarpit.toml` = `config`.
    pub fn start_with_config(config: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(tempdir.path().join("tarpit.toml"), config).unwrap();
        let args = [&["--config", "tarpit.toml"], args].concat();
        let mut tarpit = Self::launch(tempdir.path(), env, &args, 0);
        tarpit._tempdir = Some(tempdir);
        tarpit
    }

    /// Starts the binary inside network namespace `netns` (`ip netns exec`), in a fresh
    /// temporary directory; `args` must name the address and port.
    pub fn start_in_netns(netns: &str, args: &[&str]) -> Self {
        Self::start_wrapped(&["ip", "netns", "exec", netns], args)
    }

    /// Starts the binary under a wrapper command (`ip netns exec NS`, `setpriv ...`), in a
    /// fresh temporary directory; `args` must name the address and port.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("temporary directory");
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_tarpit"))
            .args(no_rdns(args))
            .args(args)
            .env_remove("ABUSEIPDB_API_KEY");
        let mut tarpit = Self::spawn(command, tempdir.path(), 0);
        tarpit._tempdir = Some(tempdir);
        tarpit
    }

    fn spawn(mut command: Command, dir: &Path, run: u32) -> Self {
        let stderr_path = dir.join(format!("stderr-{run}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = command
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tarpit binary starts");
        // Generous: it returns as soon as the line is there. Two tarpits starting together on
        // a loaded 2-core CI machine once took over 15 s to load their rules.
        let addr = wait_for(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&stderr_path).ok()?;
            let rest = &text[text.find("listening on ")? + "listening on ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "tarpit did not start: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            )
        });
        Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            _tempdir: None,
            addr,
            run,
        }
    }

    /// One GET of `target` whose client, as the trusted (loopback) proxy reports it in
    /// `X-Real-IP`, is `client`; the whole response.
    pub fn request_as(&self, client: &str, target: &str, user_agent: &str) -> Vec<u8> {
        let mut stream = self.connect();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nX-Real-IP: {client}\r\nUser-Agent: {user_agent}\r\n\r\n"
        )
        .unwrap();
        read_response(&mut stream)
    }

    /// The process id (of the wrapper's exec'd tarpit).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The diagnostics the process has written so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stderr-{}.log", self.run)))
            .unwrap_or_default()
    }

    /// A read-only connection to the process's database.
    pub fn db(&self) -> Connection {
        let conn = Connection::open_with_flags(
            self.dir.join("data/tarpit_events.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("database opens");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// One integer from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    /// Every row of a query, each as a tuple of its columns.
    pub fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'a> TryFrom<&'a rusqlite::Row<'a>, Error = rusqlite::Error>,
    {
        let db = self.db();
        let mut statement = db.prepare(sql).expect(sql);
        statement
            .query_map([], |row| T::try_from(row))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    }

    /// Waits (up to 30 s) until `sql` counts at least `n`; returns the count.
    pub fn wait_count(&self, sql: &str, n: i64) -> i64 {
        // Generous: it returns as soon as the rows are there, and a busy CI machine can take
        // seconds to get a batch through the pipeline.
        wait_for(Duration::from_secs(30), || {
            let c = self.count(sql);
            (c >= n).then_some(c)
        })
        .unwrap_or_else(|| panic!("timed out waiting for {n} from {sql}: {}", self.count(sql)))
    }

    /// Every whole JSON line written so far (a last line still being written, without its
    /// newline yet, is left out).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("logs/tarpit.log")).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    }

    /// The JSON lines once `ready` holds for them (polled up to 30 s). Why: the JSON log is a
    /// sink of its own behind its own queue, so rows in SQLite say nothing of the log; on a
    /// busy machine it was seen two lines behind.
    pub fn wait_json_lines(
        &self,
        ready: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        wait_for(Duration::from_secs(30), || {
            let lines = self.json_lines();
            ready(&lines).then_some(lines)
        })
        .unwrap_or_else(|| panic!("the JSON log never got there: {:?}", self.json_lines()))
    }

    /// Sends SIGTERM and waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let sent = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_for(within, || child.try_wait().unwrap()).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("tarpit did not exit within {within:?} of SIGTERM")
        });
        (status, sent.elapsed())
    }

    /// Kills the process with SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A fresh client connection with generous timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Sends a well-formed request and checks that the response starts: the server still
    /// accepts and answers (a full response may take long, depending on the test's drip).
    pub fn assert_still_answers(&self) {
        let mut stream = self.connect();
        stream
            .write_all(b"GET /alive HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            received.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "server no longer answers: {:?}",
            String::from_utf8_lossy(&received[..received.len().min(300)])
        );
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The official MaxMind test databases in `../shared/testdata/geoip` (beside the repository;
/// CI has them). Without them a test skips, unless `TARPIT_E2E` is set: then it fails.
pub fn shared_geoip_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/geoip");
    if dir.join("GeoLite2-City-Test.mmdb").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("TARPIT_E2E").is_none(),
        "TARPIT_E2E is set but {} has no MaxMind test databases",
        dir.display()
    );
    eprintln!("SKIPPED: no ../shared/testdata/geoip (TARPIT_E2E=1 makes this a failure)");
    None
}

/// Reads until the terminating chunk, the end of the stream, or the read timeout.
pub fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.ends_with(b"0\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Splits a response into its head (up to the blank line) and what follows.
pub fn split_head(response: &[u8]) -> (String, Vec<u8>) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (
        String::from_utf8(response[..end].to_vec()).unwrap(),
        response[end..].to_vec(),
    )
}

/// Polls `check` every 20 ms until it gives a value or `timeout` passes.
/// Connects to `to` from `source`, another loopback address (127.0.0.0/8 is all local): a
/// client of another network, as far as the tarpit can tell. Reads time out after 10 s.
pub fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

impl Tarpit {
    /// Clients from `sources` (one per network) each send `request` for `path` and give up
    /// after `after`; returns once the tarpit recorded every give-up.
    pub fn give_up_from(&self, sources: &[&str], path: &str, request: &str, after: Duration) {
        let streams: Vec<TcpStream> = sources
            .iter()
            .map(|source| {
                let mut stream = connect_from(source, self.addr);
                stream.write_all(request.as_bytes()).unwrap();
                stream
            })
            .collect();
        std::thread::sleep(after);
        drop(streams);
        self.wait_count(
            &format!(
                "SELECT COUNT(*) FROM events WHERE http_path = '{path}'
                 AND end_reason IN ('client_closed', 'client_reset')"
            ),
            sources.len() as i64,
        );
    }
}

/// Runs the tarpit binary in `dir` with `args` and `env` (an offline command: `actors`,
/// `report`, ...), asserting that it succeeds; its standard output.
pub fn run_tool(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the tarpit binary runs");
    assert!(
        out.status.success(),
        "tarpit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--scanner-rdns false` unless `args` set it: a tarpit under test never asks the machine's
/// DNS servers about the (public, made-up) client addresses the tests send.
fn no_rdns(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--scanner-rdns") {
        &[]
    } else {
        &["--scanner-rdns", "false"]
    }
}

/// Whether python3 can import `modules` (`"a, b"`); with `TARPIT_E2E` set, their absence
/// fails the test instead of skipping it.
pub fn python_has(modules: &str) -> bool {
    let present = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        let message = format!("python3 lacks {modules} (cargo xtask ci-setup installs them)");
        assert!(
            std::env::var_os("TARPIT_E2E").is_none(),
            "TARPIT_E2E is set and {message}"
        );
        eprintln!("SKIPPED: {message} (TARPIT_E2E=1 makes this a failure)");
    }
    present
}

/// A FIFO in `dir` for the JSON log, with a reader that never reads (keep the returned file
/// open): the tarpit can open the log, then its writes stall once the pipe's buffer is full,
/// as on a disk that never answers.
pub fn stalled_log(dir: &Path) -> (PathBuf, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = dir.join("stalled.log");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    (fifo, reader)
}

/// The Prometheus exposition the tarpit serves on `port`, or `None` while it cannot.
pub fn scrape_metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}
