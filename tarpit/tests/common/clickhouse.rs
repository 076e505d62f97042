//! A private ClickHouse server (Debian's `clickhouse-server`, 18.16 on Debian 12) for the
//! shipping tests: its own data directory, free loopback ports (`xtask/clickhouse/*.xml`), the repository's DDL applied,
//! and a `tarpit` user with a password. Stopped and restarted on the same ports and data to play
//! an outage.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::fronts::free_port;
use super::wait_for;

/// The server binary Debian's package installs.
pub const SERVER: &str = "/usr/sbin/clickhouse-server";

/// The password of the `tarpit` user.
pub const PASSWORD: &str = "fleet-s3cret";

/// Which ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Debian 12's `clickhouse-server` (18.16).
    Debian,
    /// A current release (chDB from PyPI behind `xtask/clickhouse/current.py`).
    Current,
}

/// A running (or stopped) ClickHouse.
pub struct ClickHouse {
    child: Option<Child>,
    dir: tempfile::TempDir,
    engine: Engine,
    /// The HTTP interface's port.
    pub http_port: u16,
}

/// Whether a current ClickHouse can be served (`cargo xtask ci-setup` installs chDB).
pub fn current_available() -> bool {
    Command::new("python3")
        .args(["-c", "import chdb"])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl ClickHouse {
    /// Starts Debian's server with the repository's `deploy/clickhouse/requests.sql` applied.
    pub fn start() -> Self {
        Self::start_engine(Engine::Debian)
    }

    /// Starts `engine` with the repository's `deploy/clickhouse/requests.sql` applied.
    pub fn start_engine(engine: Engine) -> Self {
        // A port found free can be taken by another program before the server binds it: then
        // the server fails with "Address already in use", and is started again on others.
        for _ in 0..4 {
            let mut server = Self::configure(engine);
            match server.try_resume() {
                Ok(()) => {
                    for statement in statements(&ddl()) {
                        server.query(&statement);
                    }
                    return server;
                }
                Err(log) if log.contains("Address already in use") => {
                    server.stop();
                    continue;
                }
                Err(log) => panic!("ClickHouse did not answer: {log}"),
            }
        }
        panic!("ClickHouse found no free ports in four tries")
    }

    /// A server's directory and configuration on two free ports, not started.
    fn configure(engine: Engine) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let http_port = free_port();
        let tcp_port = free_port();
        let fill = |template: &str| {
            std::fs::read_to_string(repo_file(template))
                .unwrap()
                .replace("{dir}", &dir.path().display().to_string())
                .replace("{http_port}", &http_port.to_string())
                .replace("{tcp_port}", &tcp_port.to_string())
                .replace("{password}", PASSWORD)
        };
        std::fs::write(
            dir.path().join("config.xml"),
            fill("xtask/clickhouse/server.xml"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("users.xml"),
            fill("xtask/clickhouse/users.xml"),
        )
        .unwrap();
        Self {
            child: None,
            dir,
            engine,
            http_port,
        }
    }

    /// The URL for `[ship.clickhouse] url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server process (again) on the same ports and data; waits until it answers.
    pub fn resume(&mut self) {
        if let Err(log) = self.try_resume() {
            panic!("ClickHouse did not answer: {log}");
        }
    }

    /// [`ClickHouse::resume`], or its error log when it does not answer within 30 s.
    fn try_resume(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let mut command = match self.engine {
            Engine::Debian => {
                let mut command = Command::new(SERVER);
                command.arg(format!(
                    "--config-file={}",
                    self.dir.path().join("config.xml").display()
                ));
                command
            }
            Engine::Current => {
                let mut command = Command::new("python3");
                command
                    .arg(repo_file("xtask/clickhouse/current.py"))
                    .args([
                        "--port",
                        &self.http_port.to_string(),
                        "--password",
                        PASSWORD,
                    ])
                    .arg("--dir")
                    .arg(self.dir.path().join("chdb"));
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server starts");
        self.child = Some(child);
        let log = || std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let answered = wait_for(Duration::from_secs(30), || {
            if log().contains("Address already in use") {
                return Some(false);
            }
            self.try_query("SELECT 1")
                .ok()
                .filter(|r| r.trim() == "1")
                .map(|_| true)
        });
        match answered {
            Some(true) => Ok(()),
            _ => Err(log()),
        }
    }

    /// Stops the server (SIGKILL: an outage, not a maintenance window).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `sql` as the `default` user; the answer (TabSeparated). Panics on an error.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("ClickHouse query failed: {sql}: {e}"))
    }

    /// One number from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql).trim().parse().expect(sql)
    }

    /// Runs `sql`; the answer, or the error text.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
            .arg(format!("{}/", self.url()))
            .args(["--data-binary", sql])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        if status == "200" {
            Ok(body.to_owned())
        } else {
            Err(format!(
                "HTTP {status}: {body}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The repository's DDL.
pub fn ddl() -> String {
    std::fs::read_to_string(repo_file("deploy/clickhouse/requests.sql")).unwrap()
}

/// A file of the repository.
pub fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

/// The statements of an SQL file: `--` comment lines dropped, split at `;`.
pub fn statements(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `[ship.clickhouse]` for `server`, shipping quickly (tests wait on it).
pub fn ship_section(server: &ClickHouse, extra: &str) -> String {
    format!(
        "[ship.clickhouse]\nurl = \"{}\"\nuser = \"tarpit\"\ninterval = 0.2\n{extra}\n",
        server.url()
    )
}
