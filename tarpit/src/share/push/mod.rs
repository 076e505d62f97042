//! The live sharing outputs: DShield ([`dshield`]), TAXII ([`taxii`]) and HPFeeds
//! ([`hpfeeds`]), each a task on the pipeline's runtime that reads SQLite after its cursor.
//!
//! SQLite is the outbox, as for shipping: a pass reads the requests recorded after the
//! output's cursor (`share_state`), keeps those [`crate::share`] allows, sends them, and only
//! then moves the cursor. A destination that is down, slow or refusing makes the task wait
//! (doubling, up to the interval) and try the same requests again; recording never waits for
//! it, and a restart resumes at the cursor. A fresh output starts at the newest request: a
//! sensor does not submit its history the first time sharing is turned on.
//!
//! Requests are shared only once they are `settle` old (the reverse DNS timeout and a
//! margin), so a research scanner proven a moment after its first request is left out too.
//! Per pass at most `batch` requests; DShield sends one batch per interval (the ISC's pace),
//! the others catch up at once.

pub mod dshield;
pub mod hpfeeds;
pub mod taxii;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use super::rows::{SharedRequest, read_after};
use crate::config::Config;

/// Where a live output sends.
pub enum Destination {
    /// The ISC.
    Dshield(dshield::Dshield),
    /// A TAXII 2.1 collection.
    Taxii(taxii::Taxii),
    /// An HPFeeds broker.
    Hpfeeds(hpfeeds::Hpfeeds),
}

impl Destination {
    /// The output's name (`share_state.output`, metric label).
    pub fn name(&self) -> &'static str {
        match self {
            Destination::Dshield(_) => "dshield",
            Destination::Taxii(_) => "taxii",
            Destination::Hpfeeds(_) => "hpfeeds",
        }
    }

    /// Sends the requests (all of them, or an error: the cursor then stays).
    async fn send(
        &mut self,
        requests: &[SharedRequest],
        context: &ShareContext,
    ) -> Result<(), String> {
        match self {
            Destination::Dshield(d) => d.send(requests, &context.sensor_addresses).await,
            Destination::Taxii(t) => t.send(requests, context).await,
            Destination::Hpfeeds(h) => h.send(requests, context).await,
        }
    }

    /// Whether a full batch is followed at once by the next (else one batch per interval).
    fn catches_up(&self) -> bool {
        !matches!(self, Destination::Dshield(_))
    }
}

/// What every output knows of the sensor.
#[derive(Debug, Clone)]
pub struct ShareContext {
    /// The sensor's id.
    pub sensor: String,
    /// The sensor's own addresses beyond the ones requests arrived on (`[abuseipdb]
    /// sensor_addresses`): never sent, written `[sensor]` in texts.
    pub sensor_addresses: Vec<IpNet>,
    /// Include verified research scanners (`[scanners] share`).
    pub include_scanners: bool,
    /// When the sensor first recorded (`sensors.first_seen`): its STIX identity's creation.
    pub sensor_since: Option<SystemTime>,
}

/// One configured live output.
pub struct PushSetup {
    /// Where it sends.
    pub destination: Destination,
    /// What it reads.
    pub spec: Arc<Spec>,
}

/// What a live output reads, and how often.
#[derive(Debug)]
pub struct Spec {
    /// The database (its `share_state` holds the cursor).
    pub database: PathBuf,
    /// Time between passes.
    pub interval: Duration,
    /// Requests per pass at most.
    pub batch: usize,
    /// How old a request must be to be shared.
    pub settle: Duration,
    /// The sensor.
    pub context: ShareContext,
}

/// The live outputs `config` turns on; an output whose secret is missing is an error naming
/// the variable.
pub fn setups_from_config(
    config: &Config,
    database: &std::path::Path,
    sensor: &str,
) -> anyhow::Result<Vec<PushSetup>> {
    let share = &config.share;
    let sensor_since = Connection::open(database)
        .and_then(|conn| super::clients::sensor_since(&conn, sensor))
        .with_context(|| format!("reading {}", database.display()))?;
    let context = ShareContext {
        sensor: sensor.to_owned(),
        sensor_addresses: config.abuseipdb.sensor_addresses.clone(),
        include_scanners: config.scanners.share,
        sensor_since,
    };
    let settle = if config.scanners.enabled && config.scanners.rdns {
        Duration::from_secs_f64(config.scanners.rdns_timeout) + Duration::from_secs(2)
    } else {
        Duration::from_secs(1)
    };
    let secret = |variable: &str, section: &str| {
        crate::secret::Secret::from_env(variable).with_context(|| {
            format!("[{section}] is set but {variable} is not (environment or .env)")
        })
    };
    let mut setups = Vec::new();
    let mut add = |destination, interval: f64, batch| {
        setups.push(PushSetup {
            destination,
            spec: Arc::new(Spec {
                database: database.to_owned(),
                interval: Duration::from_secs_f64(interval),
                batch,
                settle,
                context: context.clone(),
            }),
        })
    };
    if share.dshield.user_id != 0 {
        let key = secret(dshield::KEY_VARIABLE, "share.dshield")?;
        let d = dshield::Dshield::new(&share.dshield, key)?;
        add(
            Destination::Dshield(d),
            share.dshield.interval,
            share.dshield.batch,
        );
    }
    if !share.taxii.url.is_empty() {
        let password = secret(taxii::PASSWORD_VARIABLE, "share.taxii")?;
        let t = taxii::Taxii::new(&share.taxii, password)?;
        add(
            Destination::Taxii(t),
            share.taxii.interval,
            share.taxii.batch,
        );
    }
    if !share.hpfeeds.host.is_empty() {
        let secret = secret(hpfeeds::SECRET_VARIABLE, "share.hpfeeds")?;
        let h = hpfeeds::Hpfeeds::new(&share.hpfeeds, secret);
        add(
            Destination::Hpfeeds(h),
            share.hpfeeds.interval,
            share.hpfeeds.batch,
        );
    }
    Ok(setups)
}

/// What `tarpit check-config` says of the sharing outputs: one line each (secrets named,
/// never shown); `Err` names the variable a configured output lacks (the start would fail).
pub fn describe(config: &Config) -> Result<Vec<String>, String> {
    let share = &config.share;
    let scanners = &config.scanners;
    let mut lines = vec![if scanners.enabled {
        format!(
            "scanners: catalogue {}, reverse DNS {}; verified research scanners {}",
            scanners
                .file
                .as_ref()
                .map_or("built in".to_owned(), |f| f.display().to_string()),
            if scanners.rdns { "on" } else { "off" },
            if scanners.share {
                "shared"
            } else {
                "left out of sharing and AbuseIPDB"
            }
        )
    } else {
        "scanners: off (no scanner: tags; nothing is left out of sharing)".to_owned()
    }];
    let secret = |variable: &str| crate::secret::Secret::from_env(variable).is_some();
    for (name, on, variable, what) in [
        (
            "share.dshield",
            share.dshield.user_id != 0,
            dshield::KEY_VARIABLE,
            format!(
                "submitting to {} as user {}{}",
                share.dshield.url,
                share.dshield.user_id,
                if share.dshield.dry_run {
                    " (dry run)"
                } else {
                    ""
                }
            ),
        ),
        (
            "share.taxii",
            !share.taxii.url.is_empty(),
            taxii::PASSWORD_VARIABLE,
            format!(
                "adding to collection {} at {} as {}",
                share.taxii.collection, share.taxii.url, share.taxii.user
            ),
        ),
        (
            "share.hpfeeds",
            !share.hpfeeds.host.is_empty(),
            hpfeeds::SECRET_VARIABLE,
            format!(
                "publishing on {} at {}:{} as {}",
                share.hpfeeds.channel, share.hpfeeds.host, share.hpfeeds.port, share.hpfeeds.ident
            ),
        ),
    ] {
        match (on, secret(variable)) {
            (false, _) => lines.push(format!("{name}: off")),
            (true, true) => lines.push(format!("{name}: {what} ({variable} set, value not shown)")),
            (true, false) => {
                return Err(format!(
                    "[{name}] is set but {variable} is not (environment or .env)"
                ));
            }
        }
    }
    Ok(lines)
}

/// A live output's progress, as `tarpit stats` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    /// `dshield`, `taxii` or `hpfeeds`.
    pub output: String,
    /// Requests recorded after its cursor (sent or left out at its next passes).
    pub waiting: i64,
    /// Requests sent so far.
    pub sent: i64,
    /// When it last sent (RFC 3339).
    pub last_success: Option<String>,
    /// Its last error, with when, until the next success.
    pub last_error: Option<String>,
}

/// Every output's progress (those that ever ran).
pub fn progress(conn: &Connection) -> rusqlite::Result<Vec<Progress>> {
    let mut statement = conn.prepare(
        "SELECT output, (SELECT COALESCE(MAX(id), 0) FROM events) - cursor_id, sent,
                last_success, last_error
         FROM share_state ORDER BY output",
    )?;
    statement
        .query_map([], |r| {
            Ok(Progress {
                output: r.get(0)?,
                waiting: r.get::<_, i64>(1)?.max(0),
                sent: r.get(2)?,
                last_success: r.get(3)?,
                last_error: r.get(4)?,
            })
        })?
        .collect()
}

/// The output's cursor, created at the newest request the first time.
fn cursor(conn: &Connection, output: &str) -> rusqlite::Result<i64> {
    let known: Option<i64> = conn
        .query_row(
            "SELECT cursor_id FROM share_state WHERE output = ?1",
            [output],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(cursor) = known {
        return Ok(cursor);
    }
    let newest: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
    conn.execute(
        "INSERT OR IGNORE INTO share_state (output, cursor_id) VALUES (?1, ?2)",
        params![output, newest],
    )?;
    Ok(newest)
}

/// What one pass read: the requests to send, the id to move the cursor to, and the backlog.
struct Read {
    send: Vec<SharedRequest>,
    to: i64,
    full: bool,
    backlog: i64,
}

fn read_pass(spec: &Spec, output: &str) -> rusqlite::Result<Read> {
    let conn = open(spec)?;
    let from = cursor(&conn, output)?;
    let settled = SystemTime::now() - spec.settle;
    let (rows, to) = read_after(&conn, from, settled, spec.batch)?;
    let newest: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
    let full = rows.len() >= spec.batch;
    let context = &spec.context;
    let send = rows
        .into_iter()
        .filter(|r| r.client_is_shareable(&context.sensor_addresses))
        .filter(|r| !r.carried_token())
        .filter(|r| context.include_scanners || !r.from_verified_scanner())
        .collect();
    Ok(Read {
        send,
        to,
        full,
        backlog: newest - to,
    })
}

fn open(spec: &Spec) -> rusqlite::Result<Connection> {
    let conn = Connection::open(&spec.database)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    crate::db::configure_writer(&conn)?;
    Ok(conn)
}

/// Moves the cursor past what was sent (`Ok`), or notes the error (the cursor stays).
fn store(spec: &Spec, output: &str, outcome: Result<(i64, usize), &str>) -> rusqlite::Result<()> {
    let conn = open(spec)?;
    let now = crate::event::format_timestamp(SystemTime::now());
    match outcome {
        Ok((to, sent)) => conn.execute(
            "UPDATE share_state SET cursor_id = ?2, sent = sent + ?3, last_success = ?4,
                 last_error = NULL WHERE output = ?1",
            params![output, to, sent as i64, now],
        )?,
        Err(error) => conn.execute(
            "UPDATE share_state SET last_error = ?2 WHERE output = ?1",
            params![output, format!("{now}: {error}")],
        )?,
    };
    Ok(())
}

impl std::fmt::Debug for PushSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No secret in it: the destinations are named, not printed.
        f.debug_struct("PushSetup")
            .field("output", &self.destination.name())
            .field("spec", &self.spec)
            .finish()
    }
}

/// Runs one output until `stopped` says so.
pub async fn run(mut setup: PushSetup, mut stopped: watch::Receiver<bool>) {
    let output = setup.destination.name();
    let interval = setup.spec.interval;
    tracing::info!(output, interval_s = interval.as_secs_f64(), "sharing on");
    let mut failures = 0u32;
    loop {
        let wait = match pass(&mut setup, output).await {
            Ok(true) if setup.destination.catches_up() => Duration::from_millis(100),
            Ok(_) => {
                failures = 0;
                interval
            }
            Err(error) => {
                failures += 1;
                metrics::counter!("tarpit_share_failures_total", "output" => output).increment(1);
                tracing::warn!(output, failures, "sharing failed (will try again): {error}");
                let spec = setup.spec.clone();
                let _ =
                    tokio::task::spawn_blocking(move || store(&spec, output, Err(&error))).await;
                // 5 s, 10 s, 20 s ... never longer than the interval.
                (Duration::from_secs(5) * 2u32.saturating_pow(failures.min(10) - 1)).min(interval)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// One pass; whether the batch was full (more may be waiting).
async fn pass(setup: &mut PushSetup, output: &'static str) -> Result<bool, String> {
    let spec = setup.spec.clone();
    let read = tokio::task::spawn_blocking(move || read_pass(&spec, output))
        .await
        .map_err(|e| format!("reading the record: {e}"))?
        .map_err(|e| format!("reading the record: {e}"))?;
    metrics::gauge!("tarpit_share_backlog", "output" => output).set(read.backlog as f64);
    if !read.send.is_empty() {
        setup
            .destination
            .send(&read.send, &setup.spec.context)
            .await?;
        metrics::counter!("tarpit_share_sent_total", "output" => output)
            .increment(read.send.len() as u64);
    }
    let (spec, to, sent) = (setup.spec.clone(), read.to, read.send.len());
    tokio::task::spawn_blocking(move || store(&spec, output, Ok((to, sent))))
        .await
        .map_err(|e| format!("storing the cursor: {e}"))?
        .map_err(|e| format!("storing the cursor: {e}"))?;
    Ok(read.full)
}
