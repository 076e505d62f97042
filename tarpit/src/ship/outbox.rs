//! The SQLite side of shipping: what to send next, and the cursor.
//!
//! Rows are shipped in `id` order behind a cursor, one `ship_state` row per target: the last
//! `id` the store acknowledged. After the store's answer the cursor moves past the batch in one
//! SQLite commit, so a restart, an outage or `kill -9` resumes where the acknowledgements
//! stopped, and at worst resends the batch that was in flight (the store keeps one version of
//! each row, the highest `changed_seq`). Rows written before shipping existed (the replaced
//! tool's too) are simply the first ids.
//!
//! A request still being answered ends the batch until it has been open `open_after`: rows wait
//! behind it at most that long. It is then shipped as it stands and put on `ship_watch` with the
//! version shipped; every batch first ships the watched rows whose `changed_seq` has moved since
//! (the request ended, crash recovery marked it), and forgets those that are complete. Rare
//! writers that change a row which may be shipped already (an AbuseIPDB report) put it on the
//! watch list with version -1; `tarpit classify` moves the cursor back instead. Nothing here
//! needs an index on `changed_seq`, so the sink pays nothing per row for shipping but the
//! column.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::row::{self, Stamp};

/// A batch ready to send: the body of `INSERT ... FORMAT JSONEachRow` and what it covers.
#[derive(Debug, Default)]
pub struct Batch {
    /// One JSON object per line.
    pub body: Vec<u8>,
    /// Requests in the body.
    pub rows: usize,
    /// The cursor when the batch was read, and once the store has the body.
    start_id: i64,
    next_id: i64,
    /// Rows shipped while still open: watched, with the version shipped.
    watch: Vec<(i64, i64)>,
    /// Watched rows shipped complete, with the version shipped: no longer watched.
    unwatch: Vec<(i64, i64)>,
}

impl Batch {
    /// Whether nothing was ready.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// The backlog, for the metrics and `tarpit stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Requests waiting to be shipped (or shipped again after a change).
    pub rows: u64,
    /// Seconds since the oldest request not shipped yet arrived; 0 when none waits.
    pub oldest_age_s: f64,
}

/// A connection to the sensor's database used only for shipping to one target.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    stamp: Stamp,
    target: String,
}

impl Outbox {
    /// Opens the (already migrated) database for shipping to `target` (its `ship_state`
    /// name, e.g. `clickhouse`), stamping rows with `stamp`. The cursor is read from
    /// `ship_state` for every batch, so a move by another process (`tarpit classify`) counts.
    pub fn open(path: &Path, stamp: Stamp, target: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // As the sink's connection: no fsync per cursor move. A power cut can undo the last
        // moves, which only resends rows the store then keeps once.
        crate::db::configure_writer(&conn)?;
        Ok(Self {
            conn,
            stamp,
            target: target.to_owned(),
        })
    }

    /// Reads up to `limit` requests: the watched rows that changed, then the rows past the
    /// cursor, stopping at a request still open that arrived after `open_before` (Unix seconds;
    /// `f64::INFINITY` ships open requests at once).
    pub fn next_batch(&mut self, limit: Limit, open_before: f64) -> rusqlite::Result<Batch> {
        let tx = self.conn.transaction()?;
        let cursor_id = read_cursor(&tx, &self.target)?;
        let mut batch = Batch {
            start_id: cursor_id,
            next_id: cursor_id,
            ..Batch::default()
        };
        let select = row::select_list();
        let mut shipped = std::collections::HashSet::new();
        {
            let mut watched = tx.prepare_cached(&format!(
                "SELECT {select} FROM ship_watch w JOIN events ON events.id = w.event_id
                 WHERE IFNULL(events.changed_seq, 0) > w.version LIMIT ?1"
            ))?;
            let mut rows = watched.query([limit.rows as i64])?;
            while let Some(r) = rows.next()? {
                if batch.body.len() >= limit.bytes {
                    break; // the rest stay watched for the next batch
                }
                let (id, seq, open) = state(r)?;
                append(&mut batch, &tx, r, id, &self.stamp)?;
                if open {
                    batch.watch.push((id, seq));
                } else {
                    batch.unwatch.push((id, seq));
                }
                shipped.insert(id);
            }
        }
        let room = if batch.body.len() >= limit.bytes {
            0
        } else {
            limit.rows - batch.rows
        };
        if room > 0 {
            let open_before_us = (open_before * 1e6).min(i64::MAX as f64) as i64;
            // While the CRS stage runs, rows wait for it, so they ship with their CRS tags.
            let classified_up_to: i64 = tx
                .query_row(
                    "SELECT CASE WHEN active THEN cursor_id ELSE ?2 END
                     FROM classify_state WHERE stage = ?1",
                    params![crate::classify::crs::stage::STAGE, i64::MAX],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(i64::MAX);
            let mut next = tx.prepare_cached(&format!(
                "SELECT {select} FROM events WHERE id > ?1 AND id <= ?3 ORDER BY id LIMIT ?2"
            ))?;
            let mut rows = next.query(params![cursor_id, room as i64, classified_up_to])?;
            while let Some(r) = rows.next()? {
                let (id, seq, open) = state(r)?;
                if open && seq > open_before_us {
                    break; // young and open: it and what follows wait
                }
                if batch.body.len() >= limit.bytes {
                    break; // full: the cursor stops before this row
                }
                if shipped.insert(id) {
                    append(&mut batch, &tx, r, id, &self.stamp)?;
                    if open {
                        batch.watch.push((id, seq));
                    }
                }
                batch.next_id = id;
            }
        }
        drop(tx);
        Ok(batch)
    }

    /// Records that the store has `batch`: the cursor moves past it and the watch list follows
    /// what was shipped, in one SQLite transaction.
    pub fn acknowledge(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO ship_state (target, cursor_id, shipped_rows, last_shipped_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (target) DO UPDATE SET
                 -- Unless it was moved meanwhile (`tarpit classify` moves it back): then it stays.
                 cursor_id = CASE WHEN cursor_id = ?5 THEN ?2 ELSE cursor_id END,
                 shipped_rows = shipped_rows + ?3, last_shipped_at = ?4",
            params![
                self.target,
                batch.next_id,
                batch.rows as i64,
                crate::event::format_timestamp(SystemTime::now()),
                batch.start_id
            ],
        )?;
        for (id, version) in &batch.watch {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO ship_watch (event_id, version) VALUES (?1, ?2)",
            )?
            .execute([id, version])?;
        }
        for (id, version) in &batch.unwatch {
            // Only if unchanged since it was read: a newer change keeps it watched.
            tx.prepare_cached(
                "DELETE FROM ship_watch WHERE event_id = ?1
                 AND (SELECT IFNULL(changed_seq, 0) FROM events WHERE id = ?1) = ?2",
            )?
            .execute([id, version])?;
        }
        tx.commit()
    }

    /// The backlog now.
    pub fn backlog(&self) -> rusqlite::Result<Backlog> {
        backlog(&self.conn, &self.target)
    }
}

/// A row's id, `changed_seq` (0 when it has none) and whether it is a request still open.
fn state(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, bool)> {
    let open = r.get_ref(row::END_REASON)?.as_str_or_null()?.is_none()
        && r.get_ref(row::CONN_ID)?.as_i64_or_null()?.is_some();
    let seq: Option<i64> = r.get(row::CHANGED_SEQ)?;
    Ok((r.get(row::ID)?, seq.unwrap_or(0), open))
}

/// Adds row `r` (with its tags) to the batch.
fn append(
    batch: &mut Batch,
    conn: &Connection,
    r: &rusqlite::Row<'_>,
    id: i64,
    stamp: &Stamp,
) -> rusqlite::Result<()> {
    let tags: Vec<String> = conn
        .prepare_cached("SELECT tag FROM request_tags WHERE event_id = ?1 ORDER BY tag")?
        .query_map([id], |t| t.get(0))?
        .collect::<Result<_, _>>()?;
    let object = row::to_json(r, tags, stamp)?;
    serde_json::to_writer(&mut batch.body, &object).expect("JSON to memory");
    batch.body.push(b'\n');
    batch.rows += 1;
    Ok(())
}

/// How large a batch may grow: requests, and bytes of INSERT body. The row that crosses the
/// byte limit is the last one taken (a single row is always taken, however large: a row is
/// bounded by the preview sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests at most.
    pub rows: usize,
    /// Body bytes after which no further row is added.
    pub bytes: usize,
}

impl Limit {
    /// A limit on requests only.
    pub const fn rows(rows: usize) -> Self {
        Self {
            rows,
            bytes: usize::MAX,
        }
    }
}

/// The stored cursor of `target` (0 when it has none).
fn read_cursor(conn: &Connection, target: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row(
            "SELECT cursor_id FROM ship_state WHERE target = ?1",
            [target],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// The backlog of `target` in the database `conn` (also read by `tarpit stats`).
pub fn backlog(conn: &Connection, target: &str) -> rusqlite::Result<Backlog> {
    let cursor = read_cursor(conn, target)?;
    let (new, first): (i64, Option<String>) = conn.query_row(
        "SELECT COUNT(*), (SELECT timestamp FROM events WHERE id > ?1 ORDER BY id LIMIT 1)
         FROM events WHERE id > ?1",
        [cursor],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let changed: i64 = conn.query_row(
        "SELECT COUNT(*) FROM ship_watch w JOIN events ON events.id = w.event_id
         WHERE IFNULL(events.changed_seq, 0) > w.version",
        [],
        |r| r.get(0),
    )?;
    let oldest_age_s = first
        .as_deref()
        .and_then(row::parse_time)
        .map_or(0.0, |ms| (unix_now() - ms as f64 / 1000.0).max(0.0));
    Ok(Backlog {
        rows: (new + changed) as u64,
        oldest_age_s,
    })
}

/// Each shipping target's total and last success, for `tarpit stats`.
pub fn shipped(conn: &Connection) -> rusqlite::Result<Vec<(String, i64, Option<String>)>> {
    conn.prepare("SELECT target, shipped_rows, last_shipped_at FROM ship_state ORDER BY target")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            sensor_id: "s1".into(),
            label_names: vec!["region".into()],
            label_values: vec!["eu".into()],
        }
    }

    fn setup() -> (tempfile::TempDir, Connection, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        let outbox = Outbox::open(&path, stamp(), "clickhouse").unwrap();
        (dir, conn, outbox)
    }

    fn lines(batch: &Batch) -> Vec<serde_json::Value> {
        String::from_utf8(batch.body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Inserts a request row as the sink does (with the next change number).
    fn insert(conn: &Connection, conn_id: i64, end_reason: Option<&str>) {
        let seq = crate::db::next_change_seq(conn).unwrap();
        crate::db::store_change_seq(conn, seq).unwrap();
        conn.execute(
            "INSERT INTO events (timestamp, conn_id, request_seq, end_reason, client_port,
                                 changed_seq)
             VALUES ('2026-11-30T00:00:01.500Z', ?1, 1, ?2, 'not a port', ?3)",
            params![conn_id, end_reason, seq],
        )
        .unwrap();
    }

    #[test]
    fn rows_wait_for_an_active_crs_stage_and_not_for_an_inactive_one() {
        let (_dir, conn, mut outbox) = setup();
        for id in 1..=3 {
            insert(&conn, id, Some("complete"));
        }
        crate::classify::crs::stage::set_active(&conn, true).unwrap();
        conn.execute("UPDATE classify_state SET cursor_id = 1", [])
            .unwrap();
        let batch = outbox.next_batch(Limit::rows(100), f64::INFINITY).unwrap();
        assert_eq!(
            lines(&batch).len(),
            1,
            "rows 2 and 3 are not classified yet"
        );
        assert_eq!(batch.next_id, 1);
        // A tarpit started with the CRS off: nothing waits.
        crate::classify::crs::stage::set_active(&conn, false).unwrap();
        let batch = outbox.next_batch(Limit::rows(100), f64::INFINITY).unwrap();
        assert_eq!(lines(&batch).len(), 3);
    }

    #[test]
    fn an_open_request_holds_the_batch_until_open_after_then_is_watched_until_it_ends() {
        let (dir, conn, mut outbox) = setup();
        insert(&conn, 1, Some("complete"));
        insert(&conn, 2, None); // still being answered
        insert(&conn, 3, Some("complete"));
        conn.execute(
            "INSERT INTO request_tags (event_id, tag) VALUES (1, 'tool:curl')",
            [],
        )
        .unwrap();
        // The open row is young: row 1 goes, 3 waits behind 2.
        let batch = outbox.next_batch(Limit::rows(100), 0.0).unwrap();
        let rows = lines(&batch);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["conn_id"], 1);
        assert_eq!(rows[0]["sensor_id"], "s1");
        assert_eq!(rows[0]["tags"], serde_json::json!(["tool:curl"]));
        assert_eq!(rows[0]["sensor_label_values"], serde_json::json!(["eu"]));
        // `date -u -d 2026-11-30T00:00:01Z +%s` = 1795996801
        assert_eq!(rows[0]["timestamp"], 1_795_996_801);
        assert_eq!(rows[0]["timestamp_ms"], 1_795_996_801_500_i64);
        assert_eq!(rows[0]["client_port"], serde_json::Value::Null);
        assert!(rows[0]["version"].as_i64().unwrap() > 0);
        outbox.acknowledge(&batch).unwrap();
        assert_eq!(outbox.backlog().unwrap().rows, 2);
        // Past `open_after`, the open row goes as it stands, and 3 after it.
        let late = outbox
            .next_batch(Limit::rows(100), unix_now() + 1.0)
            .unwrap();
        let ids: Vec<_> = lines(&late).iter().map(|r| r["conn_id"].clone()).collect();
        assert_eq!(ids, [2, 3]);
        let open_version = lines(&late)[0]["version"].as_i64().unwrap();
        outbox.acknowledge(&late).unwrap();
        assert_eq!(outbox.backlog().unwrap(), Backlog::default());
        assert!(
            outbox
                .next_batch(Limit::rows(100), unix_now())
                .unwrap()
                .is_empty()
        );
        // The watched row ends (as the sink records it): shipped again, newer, then forgotten.
        let seq = crate::db::next_change_seq(&conn).unwrap();
        conn.execute(
            "UPDATE events SET end_reason = 'client_closed', changed_seq = ?1 WHERE id = 2",
            [seq],
        )
        .unwrap();
        crate::db::store_change_seq(&conn, seq).unwrap();
        assert_eq!(outbox.backlog().unwrap().rows, 1);
        let ended = outbox.next_batch(Limit::rows(100), 0.0).unwrap();
        let rows = lines(&ended);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["end_reason"], "client_closed");
        assert!(rows[0]["version"].as_i64().unwrap() > open_version);
        outbox.acknowledge(&ended).unwrap();
        assert!(outbox.next_batch(Limit::rows(100), 0.0).unwrap().is_empty());
        // A rare writer's change to a shipped row (an AbuseIPDB report) asks for it again; the
        // cursor survives a reopen.
        conn.execute(
            "INSERT OR REPLACE INTO ship_watch (event_id, version) VALUES (3, -1)",
            [],
        )
        .unwrap();
        let mut reopened = Outbox::open(&dir.path().join("t.db"), stamp(), "clickhouse").unwrap();
        let again = lines(&reopened.next_batch(Limit::rows(100), 0.0).unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["conn_id"], 3);
        let totals = shipped(&conn).unwrap();
        assert_eq!(totals[0].0, "clickhouse");
        assert_eq!(totals[0].1, 4);
    }

    #[test]
    fn a_cursor_moved_back_while_a_batch_is_in_flight_stays_back() {
        let (_dir, conn, mut outbox) = setup();
        insert(&conn, 1, Some("complete"));
        insert(&conn, 2, Some("complete"));
        let first = outbox.next_batch(Limit::rows(1), 0.0).unwrap();
        outbox.acknowledge(&first).unwrap();
        let second = outbox.next_batch(Limit::rows(1), 0.0).unwrap();
        // `tarpit classify` re-tags everything meanwhile.
        conn.execute("UPDATE ship_state SET cursor_id = 0", [])
            .unwrap();
        outbox.acknowledge(&second).unwrap();
        let again = lines(&outbox.next_batch(Limit::rows(10), 0.0).unwrap());
        let ids: Vec<_> = again.iter().map(|r| r["conn_id"].clone()).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn rows_written_before_shipping_existed_ship_in_id_order_at_version_0() {
        let (_dir, conn, mut outbox) = setup();
        insert(&conn, 1, Some("complete"));
        conn.execute(
            "INSERT INTO events (timestamp, conn_id, request_seq, end_reason)
             VALUES ('2026-01-01T00:00:00Z', 7, 1, 'complete')",
            [],
        )
        .unwrap();
        let rows = lines(&outbox.next_batch(Limit::rows(100), 0.0).unwrap());
        let order: Vec<_> = rows.iter().map(|r| r["conn_id"].clone()).collect();
        assert_eq!(order, [1, 7]);
        assert_eq!(rows[1]["version"], 0);
        // One at a time, the cursor moves on.
        let one = outbox.next_batch(Limit::rows(1), 0.0).unwrap();
        outbox.acknowledge(&one).unwrap();
        assert_eq!(outbox.backlog().unwrap().rows, 1);
        let rest = lines(&outbox.next_batch(Limit::rows(10), 0.0).unwrap());
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0]["conn_id"], 7);
    }

    #[test]
    fn the_replaced_tools_rows_ship_with_this_sensor_and_their_row_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        // The replaced tool's table (no conn_id), adopted by `db::open`.
        let columns: Vec<String> = crate::db::legacy::LEGACY_COLUMNS
            .iter()
            .map(|c| match *c {
                "id" => "id INTEGER PRIMARY KEY AUTOINCREMENT".to_owned(),
                c => format!("{c} TEXT"),
            })
            .collect();
        let old = Connection::open(&path).unwrap();
        old.execute_batch(&format!(
            "CREATE TABLE events ({});
             INSERT INTO events (timestamp, client_ip)
               VALUES ('2024-03-01T10:15:30.123456+00:00', '192.0.2.1');",
            columns.join(", ")
        ))
        .unwrap();
        drop(old);
        let conn = crate::db::open(&path).unwrap();
        conn.execute("UPDATE events SET body_preview = x'00ff'", [])
            .unwrap();
        let mut outbox = Outbox::open(&path, stamp(), "clickhouse").unwrap();
        let rows = lines(&outbox.next_batch(Limit::rows(10), 0.0).unwrap());
        assert_eq!(rows[0]["conn_id"], 0);
        assert_eq!(rows[0]["request_seq"], rows[0]["event_id"]);
        assert_eq!(rows[0]["sensor_id"], "s1");
        assert_eq!(rows[0]["timestamp"], 1_709_288_130);
        assert_eq!(rows[0]["body_preview_hex"], "00ff");
        assert_eq!(rows[0]["reported_to_abuseipdb"], 0);
    }

    /// A batch stops at its byte limit (the row crossing it is the last), and the next batch
    /// goes on from there: every row once, however large.
    #[test]
    fn a_batch_stops_at_its_byte_limit_and_the_next_goes_on() {
        let (_dir, conn, mut outbox) = setup();
        for conn_id in 1..=6 {
            insert(&conn, conn_id, Some("complete"));
            // 20 KB of '"' per User-Agent: escaped twice in the shipped JSON.
            conn.execute(
                "UPDATE events SET user_agent = ?1 WHERE conn_id = ?2",
                params!["\"".repeat(20_000), conn_id],
            )
            .unwrap();
        }
        let limit = Limit {
            rows: 100,
            bytes: 50_000,
        };
        let mut seen = Vec::new();
        loop {
            let batch = outbox.next_batch(limit, 0.0).unwrap();
            if batch.is_empty() {
                break;
            }
            let one_row_over = batch.body.len() - batch.body.len() / batch.rows;
            assert!(
                one_row_over < 50_000,
                "{} bytes in {} rows",
                batch.body.len(),
                batch.rows
            );
            seen.extend(lines(&batch).iter().map(|r| r["conn_id"].as_i64().unwrap()));
            outbox.acknowledge(&batch).unwrap();
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
        // A single row above the limit still goes, alone.
        insert(&conn, 7, Some("complete"));
        conn.execute(
            "UPDATE events SET user_agent = ?1 WHERE conn_id = 7",
            ["x".repeat(80_000)],
        )
        .unwrap();
        let big = outbox.next_batch(limit, 0.0).unwrap();
        assert_eq!(big.rows, 1);
    }
}
