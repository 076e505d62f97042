//! Canary tokens across the fleet: every `[ship.clickhouse] interval` the exchange
//! 1. ships this sensor's new `canary_tokens` rows (who was issued which token: the sensor, the
//!    client address, the kind and slot, when and for which path; never the token) and its new
//!    `token_sightings` rows to the tables `tokens_table` and `sightings_table`
//!    (`deploy/clickhouse/requests.sql`), each behind a cursor in `ship_state`
//!    (`clickhouse:canary_tokens`, `clickhouse:token_sightings`), so nothing is sent twice or
//!    lost across restarts;
//! 2. reads the tokens the other sensors issued since the last pass (the last 30 days at
//!    start) and hands them to the pipeline, which recomputes each with the fleet's key
//!    (`TARPIT_CANARY_KEY`, the same on every sensor) and recognises it from then on.
//!
//! A sighting of another sensor's token then joins the two addresses here as a local one does
//! (`sink::sqlite::actors`), with the issuing sensor in its evidence; the fleet's actors are
//! rebuilt from the shipped sightings by `tarpit actors --fleet`.
//!
//! Against crafted traffic and a poisoned sensor: what is read is bounded ([`FLEET_ISSUES`]
//! rows a pass, and the pipeline's index keeps at most its bound); a row names a recipient,
//! not a token, so a sensor (or anyone who can insert into the table) without the key cannot
//! make a token that another sensor recognises for a client of its choosing: the token is
//! recomputed here with the key. Failures are logged at most once a minute and retried at the
//! next pass; recording never waits on them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::clickhouse::ClickHouse;
use crate::log_throttle::LogThrottle;

/// Most issues read from the fleet in one pass.
pub const FLEET_ISSUES: usize = 100_000;

/// Most rows of each table shipped in one pass.
const SHIP_ROWS: usize = 5_000;

/// How far back the first pass reads the fleet's issues.
const FIRST_LOOK_BACK_S: i64 = 30 * 86_400;

/// The `ship_state` targets of the two tables.
const TOKENS_TARGET: &str = "clickhouse:canary_tokens";
const SIGHTINGS_TARGET: &str = "clickhouse:token_sightings";

/// What the exchange needs, gathered at start.
#[derive(Debug)]
pub struct CanaryFleetSetup {
    /// The store.
    pub client: ClickHouse,
    /// `database.table` of the issues.
    pub tokens_table: String,
    /// `database.table` of the sightings.
    pub sightings_table: String,
    /// This sensor's id (its rows are shipped under it; the fleet's are everyone else's).
    pub sensor_id: String,
    /// The sensor's SQLite database.
    pub database: PathBuf,
    /// Time between passes.
    pub interval: Duration,
}

impl CanaryFleetSetup {
    /// The exchange, when canary tokens are on (`canary`) and `[ship.clickhouse]` is set.
    pub fn from_config(
        config: &crate::config::Config,
        database: &std::path::Path,
        canary: bool,
    ) -> anyhow::Result<Option<Self>> {
        let ch = &config.ship.clickhouse;
        if !(canary && ch.enabled()) {
            return Ok(None);
        }
        let password = crate::secret::Secret::from_env(super::clickhouse::PASSWORD_VAR);
        Ok(Some(Self {
            client: ClickHouse::new(ch, password)?,
            tokens_table: format!("{}.{}", ch.database, ch.tokens_table),
            sightings_table: format!("{}.{}", ch.database, ch.sightings_table),
            sensor_id: config.sensor.effective_id(),
            database: database.to_owned(),
            interval: Duration::from_secs_f64(ch.interval.max(0.1)),
        }))
    }
}

/// A token another sensor issued: whom to, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FleetIssue {
    /// The issuing sensor.
    pub sensor_id: String,
    /// The client.
    pub client_ip: String,
    /// The kind's name.
    pub kind: String,
    /// The slot.
    pub ordinal: u8,
    /// When first issued (Unix seconds).
    pub first_issued: i64,
    /// The path that first issued it.
    pub first_path: String,
    /// When it reached the store (Unix seconds): the next pass reads from the latest.
    pub shipped_at: i64,
}

/// Rows of one local table past its cursor, as JSON lines for the store, and the last id.
fn rows_past(
    conn: &Connection,
    (target, sql): (&str, &str),
    row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<serde_json::Value>,
) -> rusqlite::Result<(Vec<u8>, i64, usize)> {
    let cursor: i64 = conn
        .query_row(
            "SELECT cursor_id FROM ship_state WHERE target = ?1",
            [target],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query(params![cursor, SHIP_ROWS as i64])?;
    let (mut body, mut last, mut count) = (Vec::new(), cursor, 0);
    while let Some(r) = rows.next()? {
        last = r.get(0)?;
        serde_json::to_writer(&mut body, &row(r)?).expect("a JSON value serialises");
        body.push(b'\n');
        count += 1;
    }
    Ok((body, last, count))
}

/// Unix seconds of a stored RFC 3339 time (0 when unreadable).
fn unix(text: &str) -> i64 {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// The two batches to ship: this sensor's new issues and sightings.
fn pending(
    conn: &Connection,
    sensor: &str,
    now: i64,
) -> rusqlite::Result<[(Vec<u8>, i64, usize); 2]> {
    let tokens = rows_past(
        conn,
        (
            TOKENS_TARGET,
            "SELECT id, client_ip, kind, ordinal, first_issued, COALESCE(first_path, '')
             FROM canary_tokens WHERE id > ?1 ORDER BY id LIMIT ?2",
        ),
        |r| {
            Ok(serde_json::json!({
                "sensor_id": sensor,
                "client_ip": r.get::<_, String>(1)?,
                "kind": r.get::<_, String>(2)?,
                "ordinal": r.get::<_, u8>(3)?,
                "first_issued": unix(&r.get::<_, String>(4)?),
                "first_path": r.get::<_, String>(5)?,
                "shipped_at": now,
            }))
        },
    )?;
    let sightings = rows_past(
        conn,
        (
            SIGHTINGS_TARGET,
            "SELECT id, timestamp, client_ip, kind, ordinal, location, issued_to, issued_by,
                    first_issued, merged
             FROM token_sightings WHERE id > ?1 ORDER BY id LIMIT ?2",
        ),
        |r| {
            Ok(serde_json::json!({
                "sensor_id": sensor,
                "sighting_id": r.get::<_, i64>(0)?,
                "timestamp": unix(&r.get::<_, String>(1)?),
                "client_ip": r.get::<_, String>(2)?,
                "kind": r.get::<_, String>(3)?,
                "ordinal": r.get::<_, u8>(4)?,
                "location": r.get::<_, String>(5)?,
                "issued_to": r.get::<_, String>(6)?,
                "issued_by": r.get::<_, String>(7)?,
                "first_issued": unix(&r.get::<_, String>(8)?),
                "merged": r.get::<_, i64>(9)?,
                "shipped_at": now,
            }))
        },
    )?;
    Ok([tokens, sightings])
}

/// Moves a table's cursor once the store has its rows.
fn store_cursor(conn: &Connection, target: &str, last: i64, count: usize) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ship_state (target, cursor_id, shipped_rows, last_shipped_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (target) DO UPDATE SET cursor_id = excluded.cursor_id,
             shipped_rows = shipped_rows + excluded.shipped_rows,
             last_shipped_at = excluded.last_shipped_at",
        params![
            target,
            last,
            count as i64,
            crate::event::format_timestamp(SystemTime::now())
        ],
    )?;
    Ok(())
}

/// The query for the fleet's issues shipped at or after `since` (Unix seconds).
pub fn fleet_query(table: &str, sensor_id: &str, since: i64) -> String {
    format!(
        "SELECT sensor_id, client_ip, kind, ordinal, toUnixTimestamp(first_issued) AS first_issued, \
         first_path, toUnixTimestamp(shipped_at) AS shipped_at FROM {table} \
         WHERE sensor_id != '{}' AND shipped_at >= toDateTime({since}) \
         ORDER BY shipped_at LIMIT {FLEET_ISSUES} FORMAT JSONEachRow",
        sensor_id.replace(['\\', '\''], "")
    )
}

/// The exchange's loop, on the pipeline's runtime, until `stop` changes.
pub async fn run(
    setup: Arc<CanaryFleetSetup>,
    issues: mpsc::Sender<Vec<FleetIssue>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut errors = LogThrottle::new(Duration::from_secs(60));
    let mut since = super::outbox::unix_now() as i64 - FIRST_LOOK_BACK_S;
    loop {
        match exchange(&setup, since).await {
            Ok(read) => {
                if let Some(last) = read.iter().map(|issue| issue.shipped_at).max() {
                    since = last; // inclusive: a row shipped in the same second is read again
                }
                if !read.is_empty() && issues.send(read).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                metrics::counter!("tarpit_ship_failures_total").increment(1);
                if let Some(suppressed) = errors.check(Instant::now()) {
                    tracing::warn!(
                        suppressed,
                        "canary tokens not exchanged with the fleet: {error:#}; tokens of other \
                         sensors are recognised from what was read before"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(setup.interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One pass: ship what is new here, read what is new elsewhere.
async fn exchange(setup: &CanaryFleetSetup, since: i64) -> anyhow::Result<Vec<FleetIssue>> {
    use anyhow::Context;
    let now = super::outbox::unix_now() as i64;
    let (database, sensor) = (setup.database.clone(), setup.sensor_id.clone());
    let open = move || -> rusqlite::Result<Connection> {
        let conn = Connection::open(&database)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        crate::db::configure_writer(&conn)?;
        Ok(conn)
    };
    let reader = open.clone();
    let [tokens, sightings] =
        tokio::task::spawn_blocking(move || pending(&reader()?, &sensor, now))
            .await
            .expect("reading the outbox does not panic")
            .context("reading this sensor's canary tokens and sightings")?;
    for ((body, last, count), (table, target)) in [tokens, sightings].into_iter().zip([
        (&setup.tokens_table, TOKENS_TARGET),
        (&setup.sightings_table, SIGHTINGS_TARGET),
    ]) {
        if count == 0 {
            continue;
        }
        setup
            .client
            .insert_into(table, body)
            .await
            .with_context(|| format!("shipping to {table}"))?;
        let open = open.clone();
        tokio::task::spawn_blocking(move || store_cursor(&open()?, target, last, count))
            .await
            .expect("storing a cursor does not panic")
            .context("storing the canary shipping cursor")?;
    }
    let text = setup
        .client
        .select(fleet_query(&setup.tokens_table, &setup.sensor_id, since))
        .await
        .context("reading the fleet's canary tokens")?;
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_query_leaves_out_this_sensor_and_cannot_be_broken_out_of() {
        let query = fleet_query("tarpit.canary_tokens", "s1' OR '1'='1", 1_700_000_000);
        assert!(query.contains("sensor_id != 's1 OR 1=1'"), "{query}");
        assert!(query.contains("shipped_at >= toDateTime(1700000000)"));
        assert!(query.contains(&format!("LIMIT {FLEET_ISSUES}")));
    }

    #[test]
    fn rows_are_shipped_once_behind_their_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
        for n in 0..3 {
            conn.execute(
                "INSERT INTO canary_tokens (sensor_id, client_ip, kind, ordinal, first_issued,
                     last_issued, issues, first_path)
                 VALUES ('s1', ?1, 'password', 0, '2026-12-06T10:00:00.000Z',
                     '2026-12-06T10:00:00.000Z', 1, '/.env')",
                [format!("192.0.2.{n}")],
            )
            .unwrap();
        }
        let [(body, last, count), (_, _, sightings)] = pending(&conn, "s1", 5).unwrap();
        assert_eq!((last, count, sightings), (3, 3, 0));
        let first: serde_json::Value =
            serde_json::from_str(std::str::from_utf8(&body).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(first["first_issued"], 1_796_551_200);
        assert_eq!(first["client_ip"], "192.0.2.0");
        store_cursor(&conn, TOKENS_TARGET, last, count).unwrap();
        let [(_, _, again), _] = pending(&conn, "s1", 6).unwrap();
        assert_eq!(again, 0);
    }
}
