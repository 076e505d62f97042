//! The CRS stage: a thread that evaluates the CRS on rows SQLite already holds, past its cursor.
//!
//! Why after SQLite and not on the pipeline: the engine costs 0.3-1 ms per distinct request
//! (native or libmodsecurity), a burst of distinct requests would stall the pipeline, and a stalled pipeline drops
//! events. Here a burst only makes the stage fall behind: the rows are written untagged at once,
//! wait in SQLite (the backlog: `tarpit_classify_backlog_rows`), and are tagged when the stage
//! catches up, across restarts and `kill -9` (each batch's tags, scores and cursor commit
//! together). Shipping waits for the stage (see `crate::ship::outbox`), so the fleet's store gets
//! rows with their CRS tags. `tarpit classify` runs the same batches offline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::Crs;
use super::catalog::Catalog;
use crate::classify::stored::read_batch;

/// The stage's name in `classify_state`.
pub const STAGE: &str = "crs";

/// Most rows per transaction.
const BATCH: i64 = 512;

/// How long the running stage evaluates before it commits what it has: a commit every few
/// hundred milliseconds when behind, however slow the rows.
const BATCH_TIME: Duration = Duration::from_millis(200);

/// How long the stage sleeps when it has caught up. Every commit of the stage makes the SQLite
/// sink's connection drop its page cache and read its pages again, so the stage takes what
/// gathered meanwhile in a few large batches rather than many small ones.
const IDLE: Duration = Duration::from_millis(200);

/// How long a stopping tarpit lets the stage catch up before it leaves the rest for the next
/// start.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows read (the cursor moved past them).
    pub rows: usize,
    /// Rows on which at least one rule fired.
    pub tagged: usize,
    /// Rows passed over to keep the backlog bounded.
    pub skipped: usize,
    /// Rows still waiting past the new cursor (by id, as of the batch's start).
    pub waiting: u64,
    /// The batch took every row there was: nothing more to do until new rows come.
    pub caught_up: bool,
}

/// Marks whether a tarpit with the CRS on writes this database (shipping waits for the stage
/// only then), and creates the stage's cursor at 0 the first time.
pub fn set_active(conn: &Connection, active: bool) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO classify_state (stage, cursor_id, active, evaluated_rows)
         VALUES (?1, 0, ?2, 0)
         ON CONFLICT (stage) DO UPDATE SET active = ?2",
        params![STAGE, active],
    )?;
    Ok(())
}

/// Stores the loaded rule set's messages and levels (`crs_rules`), which `tarpit stats` and
/// `report` show beside the rule ids.
pub fn store_catalog(conn: &mut Connection, catalog: &Catalog) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO crs_rules (rule_id, message, paranoia, version)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (id, rule) in catalog.iter() {
            insert.execute(params![id, rule.message, rule.paranoia, catalog.version()])?;
        }
    }
    tx.commit()
}

/// Evaluates every row again, from the first (`tarpit classify`, after it has replaced the
/// stored tags): returns rows read and rows tagged.
pub fn evaluate_all(conn: &mut Connection, crs: &mut Crs) -> rusqlite::Result<BatchOutcome> {
    store_catalog(conn, crs.catalog())?;
    rewind(conn)?;
    let mut total = BatchOutcome::default();
    loop {
        let outcome = tag_batch(conn, crs, u64::MAX, &|| true)?;
        if outcome.rows == 0 {
            return Ok(total);
        }
        total.rows += outcome.rows;
        total.tagged += outcome.tagged;
    }
}

/// Moves the cursor back to the start, so every row is evaluated again (`tarpit classify`).
pub fn rewind(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE classify_state SET cursor_id = 0, evaluated_rows = 0 WHERE stage = ?1",
        [STAGE],
    )?;
    Ok(())
}

/// Evaluates the next batch past the cursor and stores the tags, scores and the new cursor in
/// one transaction. When more than `backlog_max` rows wait, the oldest of them are passed over
/// (counted in `skipped_rows`, left for `tarpit classify`), so under a sustained flood the tags
/// lag by at most `backlog_max` rows rather than without bound.
pub fn tag_batch(
    conn: &mut Connection,
    crs: &mut Crs,
    backlog_max: u64,
    keep_going: &dyn Fn() -> bool,
) -> rusqlite::Result<BatchOutcome> {
    let mut cursor: i64 = conn
        .query_row(
            "SELECT cursor_id FROM classify_state WHERE stage = ?1",
            [STAGE],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let newest: i64 = conn.query_row("SELECT IFNULL(MAX(id), 0) FROM events", [], |r| r.get(0))?;
    let mut skipped = 0;
    let backlog_max = i64::try_from(backlog_max).unwrap_or(i64::MAX);
    if newest.saturating_sub(cursor) > backlog_max {
        let to = newest - backlog_max;
        skipped = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE id > ?1 AND id <= ?2",
            params![cursor, to],
            |r| r.get::<_, i64>(0),
        )?;
        conn.execute(
            "INSERT INTO classify_state (stage, cursor_id, active, evaluated_rows, skipped_rows)
             VALUES (?1, ?2, 0, 0, ?3)
             ON CONFLICT (stage) DO UPDATE SET cursor_id = ?2,
                 skipped_rows = skipped_rows + ?3",
            params![STAGE, to, skipped],
        )?;
        tracing::warn!(
            skipped,
            backlog_max,
            "CRS stage behind by more than [classify] crs_backlog_max rows: the oldest were passed \
             over (tarpit classify evaluates them)"
        );
        cursor = to;
    }
    let mut batch = read_batch(conn, cursor, BATCH)?;
    let all_there_was = (batch.len() as i64) < BATCH;
    // Evaluated in order; once `keep_going` says no (a stopping tarpit), the batch ends after
    // the rows evaluated so far (at least one), and the cursor stops there.
    let mut verdicts = Vec::new();
    let mut evaluated = 0;
    for r in &batch {
        if evaluated > 0 && !keep_going() {
            break;
        }
        evaluated += 1;
        // A row that was no request (garbage, TLS, nothing sent) has nothing for the CRS.
        if r.method.is_some() {
            let verdict = crs.evaluate(&r.view(), r.client_ip.as_deref().unwrap_or("0.0.0.0"));
            verdicts.push((r.id, r.conn_id, r.request_seq, verdict));
        }
    }
    let caught_up = all_there_was && evaluated == batch.len();
    batch.truncate(evaluated);
    let Some(last) = batch.last().map(|r| r.id) else {
        return Ok(BatchOutcome {
            skipped: skipped as usize,
            caught_up: true,
            ..BatchOutcome::default()
        });
    };
    let mut outcome = BatchOutcome {
        rows: batch.len(),
        tagged: 0,
        skipped: skipped as usize,
        waiting: u64::try_from(newest - last).unwrap_or(0),
        caught_up,
    };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut score = tx.prepare_cached("UPDATE events SET crs_score = ?2 WHERE id = ?1")?;
        let mut tag = tx.prepare_cached(
            "INSERT OR IGNORE INTO request_tags (event_id, conn_id, request_seq, tag)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (id, conn_id, request_seq, verdict) in &verdicts {
            score.execute(params![id, verdict.score])?;
            let tags = verdict.tags(crs.catalog());
            outcome.tagged += usize::from(!tags.is_empty());
            for t in tags {
                tag.execute(params![id, conn_id, request_seq, t])?;
            }
        }
    }
    tx.execute(
        "INSERT INTO classify_state (stage, cursor_id, active, evaluated_rows)
         VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (stage) DO UPDATE SET cursor_id = ?2,
             evaluated_rows = evaluated_rows + ?3",
        params![STAGE, last, batch.len() as i64],
    )?;
    tx.commit()?;
    Ok(outcome)
}

/// The running stage; [`CrsStage::stop`] ends it.
#[derive(Debug)]
pub struct CrsStage {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CrsStage {
    /// Starts the stage on the database at `path` (already migrated) with a loaded CRS; it
    /// lets at most `backlog_max` rows wait (see [`tag_batch`]), and leaves the WAL's copying
    /// to `checkpointer`.
    pub fn start(
        path: &Path,
        crs: Crs,
        backlog_max: u64,
        checkpointer: &crate::db::checkpoint::Checkpointer,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut conn = Connection::open(path).context("opening the database for the CRS stage")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        crate::db::configure_writer(&conn)?;
        checkpointer.attach(&mut conn)?;
        set_active(&conn, true).context("marking the CRS stage active")?;
        store_catalog(&mut conn, crs.catalog()).context("storing the CRS rule messages")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("crs-stage".into())
            .spawn(move || run(&mut conn, crs, backlog_max, &flag))
            .context("starting the CRS stage thread")?;
        Ok(Self { stop, thread })
    }

    /// Lets the stage catch up for a moment, then stops it; what is left is evaluated at the
    /// next start.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("the CRS stage panicked");
        }
    }
}

fn run(conn: &mut Connection, mut crs: Crs, backlog_max: u64, stop: &AtomicBool) {
    let mut stopping_since: Option<Instant> = None;
    let mut last_error: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() > STOP_GRACE {
                break;
            }
        }
        // A stop ends a batch at the row being evaluated: a backlog of slow rows never holds
        // up a shutdown beyond one row past the grace.
        let started = Instant::now();
        match tag_batch(conn, &mut crs, backlog_max, &|| {
            !stop.load(Ordering::Relaxed) && started.elapsed() < BATCH_TIME
        }) {
            Ok(outcome) => {
                metrics::counter!("tarpit_crs_evaluated_rows_total").increment(outcome.rows as u64);
                metrics::counter!("tarpit_crs_skipped_rows_total")
                    .increment(outcome.skipped as u64);
                metrics::gauge!("tarpit_classify_backlog_rows").set(outcome.waiting as f64);
                if stopping_since.is_some() {
                    if outcome.rows == 0 {
                        break;
                    }
                } else if outcome.caught_up {
                    std::thread::sleep(IDLE);
                }
            }
            Err(error) => {
                // SQLite busy for 10 s or a disk error: try again, saying so once a minute.
                if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!("CRS stage: {error}; retrying");
                    last_error = Some(Instant::now());
                }
                if stopping_since.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    tracing::debug!(
        cache_hits = crs.hits,
        evaluated = crs.misses,
        "CRS stage stopped"
    );
}
