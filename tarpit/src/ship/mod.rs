//! Shipping: the sensor's SQLite file is the outbox, and a shipper on the pipeline runtime sends
//! its requests to one ClickHouse for the whole fleet.
//!
//! Why this shape: a sensor must keep recording while the store is down, the network is cut or the
//! tarpit is restarted (`kill -9` included), and the store must end up with every request once. So
//! nothing is shipped from memory: the SQLite sink numbers every change of a request row
//! (`changed_seq`), and the shipper reads the rows past its cursor in `id` order, and those it
//! watches that changed ([`outbox`]), inserts them (`INSERT ... FORMAT JSONEachRow` over HTTP,
//! [`clickhouse`]) and moves the cursor once the store acknowledged them. The store's table is a
//! `ReplacingMergeTree` keyed by (sensor, conn_id, request_seq) with `changed_seq` as the version:
//! a batch resent after a crash, or a request shipped while open and again when it ended, collapses
//! to its latest version (`SELECT ... FINAL`). The DDL is `deploy/clickhouse/requests.sql`;
//! `docs/fleet.md` is the operator's guide.
//!
//! While ClickHouse is down the shipper backs off (1 s doubling to 60 s), logs one error a
//! minute and lets the backlog grow in SQLite; the workers never notice.
//! `tarpit_ship_pending_rows` and `tarpit_ship_oldest_pending_seconds` (and a `tarpit stats`
//! line) show the backlog.

pub mod batch_size;
pub mod canary;
pub mod clickhouse;
pub mod fleet;
pub mod outbox;
pub mod row;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::config::{ClickHouseConfig, Config};
use crate::log_throttle::LogThrottle;
use batch_size::BatchSize;
use clickhouse::{ClickHouse, PASSWORD_VAR};
use outbox::{Backlog, Batch, Outbox, unix_now};
use row::Stamp;

/// The `ship_state` name of the ClickHouse target.
pub const TARGET: &str = "clickhouse";

/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts while ClickHouse is down.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most one error line per this interval while failures repeat.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How long a shipper that stopped on a panic waits before it starts again.
pub const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Everything the shipper needs, gathered at start.
#[derive(Debug)]
pub struct ShipperSetup {
    outbox: Outbox,
    client: ClickHouse,
    config: ClickHouseConfig,
    /// What it takes to open it again (after a panic).
    reopen: Reopen,
}

/// What a shipper is opened from, kept to open it again.
#[derive(Debug, Clone)]
struct Reopen {
    database: std::path::PathBuf,
    stamp: Stamp,
    config: ClickHouseConfig,
    password: Option<crate::secret::Secret>,
}

impl Reopen {
    /// A fresh shipper: the outbox opened again (its cursor is in SQLite), a new client.
    fn open(&self) -> anyhow::Result<ShipperSetup> {
        let outbox = Outbox::open(&self.database, self.stamp.clone(), TARGET)
            .with_context(|| format!("opening {} for shipping", self.database.display()))?;
        Ok(ShipperSetup {
            outbox,
            client: ClickHouse::new(&self.config, self.password.clone())?,
            config: self.config.clone(),
            reopen: self.clone(),
        })
    }
}

impl ShipperSetup {
    /// The shipper for `config`'s `[ship.clickhouse]` and database, or `None` when shipping is
    /// off. The database must already be migrated (it is the outbox).
    pub fn from_config(config: &Config, database: &Path) -> anyhow::Result<Option<Self>> {
        let ch = &config.ship.clickhouse;
        if !ch.enabled() {
            return Ok(None);
        }
        let password = crate::secret::Secret::from_env(PASSWORD_VAR);
        if password.is_none() {
            tracing::info!("{PASSWORD_VAR} is not set (environment or .env): no password sent");
        }
        let reopen = Reopen {
            database: database.to_owned(),
            stamp: stamp(config),
            config: ch.clone(),
            password,
        };
        reopen.open().map(Some)
    }
}

/// This sensor's id and labels, as every shipped row carries them.
fn stamp(config: &Config) -> Stamp {
    let (label_names, label_values) = config
        .sensor
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unzip();
    Stamp {
        sensor_id: config.sensor.effective_id(),
        label_names,
        label_values,
    }
}

/// The running shipper; [`Shipper::finish`] ships what the last moments recorded, then stops.
#[derive(Debug)]
pub struct Shipper {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    /// Starts shipping on the current tokio runtime (the pipeline's).
    pub fn start(setup: ShipperSetup) -> Self {
        tracing::info!(
            url = %setup.config.url,
            table = %format!("{}.{}", setup.config.database, setup.config.table),
            "shipping requests to ClickHouse"
        );
        let (stop, stopped) = watch::channel(false);
        let reopen = setup.reopen.clone();
        let mut first = Some(setup);
        let task = tokio::spawn(supervise(
            "the ClickHouse shipper",
            stopped.clone(),
            RESTART_AFTER,
            move || {
                let setup = match first.take() {
                    Some(setup) => Ok(setup),
                    None => reopen.open(),
                };
                setup.map(|setup| run(setup, stopped.clone()))
            },
        ));
        Self { stop, task }
    }

    /// Asks the shipper to send what is left (every row is closed by now) and waits at most
    /// `grace` for it; what is not sent by then stays in the outbox for the next start or
    /// `tarpit ship --once`.
    pub async fn finish(self, grace: Duration) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("shipping stopped before the outbox was empty; it resumes at start");
        }
    }
}

/// Runs the task built by `start` (the shipper, the fleet exchange) until it returns (asked
/// to stop); one that ends on a panic (a bug: no input should cause one) is logged and started
/// again after `pause` ([`RESTART_AFTER`]), the shipper from its cursor in SQLite, so shipping
/// never ends silently. `what` names it in the log.
pub async fn supervise<F>(
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    pause: Duration,
    mut start: impl FnMut() -> anyhow::Result<F> + Send,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let ended = match start() {
            Ok(shipper) => match tokio::spawn(shipper).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(_) => return,
            },
            Err(e) => format!("could not start again: {e:#}"),
        };
        metrics::counter!("tarpit_ship_restarts_total").increment(1);
        tracing::error!(
            "{what} {ended}; starting it again in {} s (nothing recorded is lost: what it \
             ships stays in SQLite)",
            pause.as_secs_f64()
        );
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// A panic's message, when it has one.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Runs blocking outbox work off the runtime's thread, handing the outbox back.
async fn with_outbox<T: Send + 'static>(
    outbox: Outbox,
    work: impl FnOnce(&mut Outbox) -> rusqlite::Result<T> + Send + 'static,
) -> (Outbox, rusqlite::Result<T>) {
    tokio::task::spawn_blocking(move || {
        let mut outbox = outbox;
        let result = work(&mut outbox);
        (outbox, result)
    })
    .await
    .expect("the outbox task does not panic")
}

async fn run(setup: ShipperSetup, mut stop: watch::Receiver<bool>) {
    let ShipperSetup {
        mut outbox,
        client,
        config,
        ..
    } = setup;
    let interval = Duration::from_secs_f64(config.interval);
    let mut retry = Retry::default();
    let mut size = BatchSize::default();
    let columns = row::shipped_columns();
    let mut table_checked = false;
    let mut pending = 0;
    let mut counted: Option<Instant> = None;
    loop {
        let stopping = *stop.borrow();
        // Counting the backlog reads every row behind the cursor: once per interval, not once
        // per batch while a long backlog goes out back to back.
        if counted.is_none_or(|at| at.elapsed() >= interval) {
            let (back, backlog) = with_outbox(outbox, |o| o.backlog()).await;
            outbox = back;
            if let Ok(backlog) = backlog {
                pending = backlog.rows;
                publish(backlog);
            }
            counted = Some(Instant::now());
        }
        if !table_checked {
            match client.check_table(&columns).await {
                Ok(()) => table_checked = true,
                Err(e) if stopping => {
                    tracing::warn!("not shipping at stop: {e}");
                    return;
                }
                Err(e) => {
                    let wait = retry.failed(pending, &e.to_string());
                    wait_or_stop(wait, &mut stop).await;
                    continue;
                }
            }
        }
        let open_before = if stopping {
            f64::INFINITY
        } else {
            unix_now() - config.open_after
        };
        let limit = size.limit(&config);
        let (back, read) = with_outbox(outbox, move |o| o.next_batch(limit, open_before)).await;
        outbox = back;
        let outcome = match read {
            Ok(batch) if batch.is_empty() => Outcome::Idle,
            Ok(batch) => {
                let full = batch.rows >= limit.rows || batch.body.len() >= limit.bytes;
                let (back, shipped) = ship(&client, outbox, batch).await;
                outbox = back;
                match shipped {
                    Ok(rows) => Outcome::Shipped(rows, full),
                    Err(failure) => Outcome::Failed(failure),
                }
            }
            Err(e) => Outcome::Failed(Failure::other(format!("reading the outbox: {e}"))),
        };
        let wait = match outcome {
            Outcome::Shipped(rows, full) => {
                retry.succeeded();
                size.succeeded();
                metrics::counter!("tarpit_ship_rows_total").increment(rows as u64);
                if full { Duration::ZERO } else { interval }
            }
            Outcome::Idle if stopping => return,
            Outcome::Idle => interval,
            Outcome::Failed(_) if stopping => return,
            Outcome::Failed(failure) => {
                if failure.timed_out {
                    size.timed_out();
                }
                retry.failed(pending, &failure.error)
            }
        };
        if !stopping {
            wait_or_stop(wait, &mut stop).await;
        }
    }
}

/// Sleeps `wait`, waking at once when asked to stop (a final pass follows).
async fn wait_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) {
    if wait.is_zero() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.changed() => {}
    }
}

/// The shipper's failure streak: how long to back off, and when the error may be logged.
#[derive(Debug)]
struct Retry {
    failures: u64,
    backoff: Duration,
    errors: LogThrottle,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            failures: 0,
            backoff: FIRST_BACKOFF,
            errors: LogThrottle::new(ERROR_LOG_INTERVAL),
        }
    }
}

impl Retry {
    /// Counts a failure, logs it at most once a minute, and returns how long to back off.
    fn failed(&mut self, pending: u64, error: &str) -> Duration {
        self.failures += 1;
        metrics::counter!("tarpit_ship_failures_total").increment(1);
        if let Some(suppressed) = self.errors.check(Instant::now()) {
            tracing::error!(
                failures = self.failures,
                suppressed,
                pending,
                retry_in_s = self.backoff.as_secs(),
                "shipping to ClickHouse failed: {error}; the rows stay queued in SQLite"
            );
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }

    /// Ends a failure streak (and says so, once).
    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "shipping to ClickHouse resumed");
        }
        self.failures = 0;
        self.backoff = FIRST_BACKOFF;
    }
}

/// Why a pass failed, and whether it was a timeout.
struct Failure {
    error: String,
    timed_out: bool,
}

impl Failure {
    fn other(error: String) -> Self {
        Self {
            error,
            timed_out: false,
        }
    }
}

/// What one pass did.
enum Outcome {
    /// Rows were shipped (and acknowledged in SQLite); whether the batch was full.
    Shipped(usize, bool),
    /// Nothing was ready.
    Idle,
    /// The insert or the outbox failed.
    Failed(Failure),
}

/// Sends `batch` (never empty) and acknowledges it in SQLite: the rows shipped, or why not.
async fn ship(
    client: &ClickHouse,
    outbox: Outbox,
    batch: Batch,
) -> (Outbox, Result<usize, Failure>) {
    if let Err(e) = client.insert(batch.body.clone()).await {
        let timed_out = matches!(e, clickhouse::ClickHouseError::TimedOut { .. });
        let failure = Failure {
            error: e.to_string(),
            timed_out,
        };
        return (outbox, Err(failure));
    }
    let rows = batch.rows;
    let (outbox, acked) = with_outbox(outbox, move |o| o.acknowledge(&batch)).await;
    let shipped = acked
        .map(|()| rows)
        .map_err(|e| Failure::other(format!("acknowledging a shipped batch in SQLite: {e}")));
    (outbox, shipped)
}

/// Sets the backlog gauges.
fn publish(backlog: Backlog) {
    metrics::gauge!("tarpit_ship_pending_rows").set(backlog.rows as f64);
    metrics::gauge!("tarpit_ship_oldest_pending_seconds").set(backlog.oldest_age_s);
}

/// What `tarpit ship --once` did.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnceReport {
    /// Requests shipped.
    pub rows: usize,
    /// INSERTs made.
    pub batches: usize,
    /// Seconds it took.
    pub elapsed_s: f64,
}

/// Ships everything the outbox holds now, open requests included, then returns; the first
/// failure ends it with the error (what was acknowledged before stays acknowledged).
pub async fn ship_once(setup: ShipperSetup) -> anyhow::Result<OnceReport> {
    let ShipperSetup {
        mut outbox,
        client,
        config,
        ..
    } = setup;
    let started = Instant::now();
    client.check_table(&row::shipped_columns()).await?;
    let mut report = OnceReport::default();
    loop {
        let limit = BatchSize::default().limit(&config);
        let (back, read) = with_outbox(outbox, move |o| o.next_batch(limit, f64::INFINITY)).await;
        let batch = read.context("reading the outbox")?;
        if batch.is_empty() {
            break;
        }
        let full = batch.rows >= limit.rows || batch.body.len() >= limit.bytes;
        let (back, shipped) = ship(&client, back, batch).await;
        outbox = back;
        report.rows += shipped.map_err(|failure| anyhow::Error::msg(failure.error))?;
        report.batches += 1;
        if !full {
            break;
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_a_success_resets_it() {
        let mut retry = Retry::default();
        let waits: Vec<u64> = (0..9).map(|_| retry.failed(0, "down").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        retry.succeeded();
        assert_eq!(retry.failed(0, "down again"), FIRST_BACKOFF);
    }

    /// A shipper that panics is started again (after the pause) and its next run is the one
    /// that ends the supervision; a stop ends it at once.
    #[tokio::test]
    async fn a_shipper_that_panics_is_started_again() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_stop, stopped) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        supervise("test", stopped, Duration::from_millis(10), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            Ok(async move {
                if run == 0 {
                    panic!("an error text cut off a char boundary");
                }
            })
        })
        .await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        let (stop, stopped) = watch::channel(false);
        stop.send(true).unwrap();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        supervise("test", stopped, Duration::from_millis(10), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(async { panic!("again") })
        })
        .await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            1,
            "a stopping shipper is not restarted"
        );
    }
}
