//! `cargo xtask bench ship`: how fast a sensor's record reaches ClickHouse.
//!
//! The rows are real: the tarpit records `duration` seconds of the churn load (connect,
//! request, first byte, close), then stops. Its database is shipped with `tarpit ship --once`
//! into a private Debian `clickhouse-server` (`xtask/clickhouse/*.xml`, the repository's DDL) at
//! several batch sizes, each from a fresh copy into a fresh table; every run must leave exactly
//! the recorded rows in ClickHouse (after FINAL). The reference, in the same run: ClickHouse's
//! own ingest of the same rows as one JSONEachRow INSERT sent by curl (no SQLite, no tarpit).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Server, count_rows, free_port, load, split};

/// The batch sizes shipped (`[ship.clickhouse] batch_rows`; 5,000 is the default).
const BATCHES: &[usize] = &[1000, 5000, 20_000];

/// The password of the private server's `tarpit` user.
const PASSWORD: &str = "bench";

/// A private ClickHouse, killed on drop.
struct ClickHouse {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ClickHouse {
    fn start(root: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (port, tcp_port) = (free_port()?, free_port()?);
        for name in ["server.xml", "users.xml"] {
            let text = std::fs::read_to_string(root.join("xtask/clickhouse").join(name))?
                .replace("{dir}", &dir.path().display().to_string())
                .replace("{http_port}", &port.to_string())
                .replace("{tcp_port}", &tcp_port.to_string())
                .replace("{password}", PASSWORD);
            std::fs::write(dir.path().join(name), text)?;
        }
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!(
                "--config-file={}",
                dir.path().join("server.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting clickhouse-server (cargo xtask ci-setup installs it)")?;
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.query("SELECT 1").is_err() {
            if Instant::now() > deadline {
                bail!("ClickHouse did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// POSTs `body` (a query, or rows after `?query=INSERT ...`); the answer.
    fn post(&self, query_string: &str, body: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body"])
            .arg(format!("{}{query_string}", self.url()))
            .args(body)
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("ClickHouse: {text}{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(text)
    }

    fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.post("", &["--data-binary", sql])
    }

    /// Drops and recreates the table from `deploy/clickhouse/requests.sql`.
    fn fresh_table(&self, root: &Path) -> anyhow::Result<()> {
        self.query("DROP TABLE IF EXISTS tarpit.requests")?;
        let ddl = std::fs::read_to_string(root.join("deploy/clickhouse/requests.sql"))?;
        let code: Vec<&str> = ddl.lines().filter(|l| !l.starts_with("--")).collect();
        for statement in code.join("\n").split(';').map(str::trim) {
            if !statement.is_empty() {
                self.query(statement)?;
            }
        }
        Ok(())
    }

    fn rows_final(&self) -> anyhow::Result<u64> {
        Ok(self
            .query("SELECT count() FROM tarpit.requests FINAL")?
            .trim()
            .parse()?)
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the result table.
struct Run {
    what: String,
    rows: u64,
    inserts: u64,
    seconds: f64,
}

/// Records `duration` seconds of churn with `tarpit`, then ships it at each batch size.
pub fn ship(
    root: &Path,
    tarpit: &Path,
    duration: u64,
    workers: u64,
    processes: u64,
) -> anyhow::Result<()> {
    let server = Server::start(&format!(
        "{} --host 127.0.0.1 --port {{port}}",
        tarpit.display()
    ))?;
    let (report, _) = load(&server, "churn", split(workers, processes), (duration, 0))?;
    let (_, dir) = server.stop()?;
    let db = dir.path().join("data/tarpit_events.db");
    let rows = count_rows(&db).context("counting the recorded rows")?;
    eprintln!(
        "xtask: {} churn cycles recorded as {rows} rows; shipping them",
        report.cycles
    );

    let clickhouse = ClickHouse::start(root)?;
    let work = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for &batch in BATCHES {
        clickhouse.fresh_table(root)?;
        let copy = work.path().join(format!("ship-{batch}.db"));
        std::fs::copy(&db, &copy)?;
        let config = work.path().join("tarpit.toml");
        std::fs::write(
            &config,
            format!(
                "[sensor]\nid = \"bench\"\n[ship.clickhouse]\nurl = \"{}\"\nuser = \"tarpit\"\n\
                 batch_rows = {batch}\n",
                clickhouse.url()
            ),
        )?;
        let out = Command::new(tarpit)
            .arg("--config")
            .arg(&config)
            .args(["ship", "--once", "--db"])
            .arg(&copy)
            .env("TARPIT_CLICKHOUSE_PASSWORD", PASSWORD)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "tarpit ship failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let run = parse_once(&stdout, batch).context("reading tarpit ship's summary")?;
        let landed = clickhouse.rows_final()?;
        if run.rows != rows || landed != rows {
            bail!(
                "{rows} rows recorded, {} shipped, {landed} in ClickHouse",
                run.rows
            );
        }
        runs.push(run);
    }
    // The reference: the same rows as ClickHouse exports them, back in one INSERT by curl.
    let dump = work.path().join("rows.jsonl");
    let exported = clickhouse.query("SELECT * FROM tarpit.requests FORMAT JSONEachRow")?;
    std::fs::write(&dump, exported)?;
    clickhouse.fresh_table(root)?;
    let started = Instant::now();
    clickhouse.post(
        "?query=INSERT%20INTO%20tarpit.requests%20FORMAT%20JSONEachRow",
        &["--data-binary", &format!("@{}", dump.display())],
    )?;
    runs.push(Run {
        what: "reference: curl, one INSERT of ClickHouse's own export".into(),
        rows,
        inserts: 1,
        seconds: started.elapsed().as_secs_f64(),
    });
    let version = clickhouse.query("SELECT version()")?;
    print(&runs, version.trim(), duration);
    Ok(())
}

/// Reads "shipped N requests in K inserts, S s" from `tarpit ship --once`.
fn parse_once(stdout: &str, batch: usize) -> Option<Run> {
    let rest = &stdout[stdout.find("shipped ")? + 8..];
    let mut words = rest.split_whitespace();
    let rows = words.next()?.parse().ok()?;
    let inserts = words.nth(2)?.parse().ok()?;
    let seconds = words.nth(1)?.trim_end_matches(',').parse().ok()?;
    Some(Run {
        what: format!("tarpit ship --once, batch_rows {batch}"),
        rows,
        inserts,
        seconds,
    })
}

fn print(runs: &[Run], version: &str, duration: u64) {
    println!("\nship: {duration} s of churn shipped into ClickHouse {version} (release build)\n");
    println!("| shipped by | rows | inserts | seconds | rows/s |");
    println!("|---|---:|---:|---:|---:|");
    for run in runs {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} |",
            run.what,
            run.rows,
            run.inserts,
            run.seconds,
            run.rows as f64 / run.seconds.max(1e-9)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_of_ship_once_is_read() {
        let run = parse_once(
            "data/t.db: shipped 5333 requests in 2 inserts, 1.09 s (4875 rows/s)\n",
            5000,
        )
        .unwrap();
        assert_eq!((run.rows, run.inserts), (5333, 2));
        assert!((run.seconds - 1.09).abs() < 1e-9);
    }
}
