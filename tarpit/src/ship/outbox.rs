//! The SQLite side of shipping: reading batches in change order, and the cursor.
//!
//! Every insert or change of an `events` row gives it a new `changed_seq` (migration 7; the
//! sink, crash recovery and `tarpit classify` set it), a number that only grows. The cursor,
//! one `ship_state` row per target, is the (`changed_seq`, `id`) of the last row the store
//! acknowledged: a batch is the next rows in that order, and after the store's answer the
//! cursor moves past them in one SQLite commit. So a restart, an outage or `kill -9` resumes
//! where the acknowledgements stopped, and at worst resends the batch that was in flight (the
//! store keeps one version of each row). A row changed after it was shipped has a new number,
//! past the cursor, and is shipped again. Rows written before migration 7 have no number: they
//! are the history, shipped first, in `id` order, behind a cursor of their own.
//!
//! A request still being answered stops the batch until it has been open `open_after`: rows
//! wait behind it at most that long, and it is then shipped as it stands (and again when it
//! ends, under its new number).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::row::{self, Stamp};

/// Where shipping to one target stands: rows up to here are acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    /// History rows (no `changed_seq`) are shipped up to this `id`.
    history_id: i64,
    /// Changed rows are shipped up to this (`changed_seq`, `id`).
    seq: i64,
    id: i64,
}

/// A batch ready to send: the body of `INSERT ... FORMAT JSONEachRow` and where it ends.
#[derive(Debug, Default)]
pub struct Batch {
    /// One JSON object per line.
    pub body: Vec<u8>,
    /// Requests in the body.
    pub rows: usize,
    /// The cursor once the store has the body.
    next: Cursor,
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
    /// Requests waiting to be shipped (or shipped again after a change), history included.
    pub rows: u64,
    /// Seconds since the oldest waiting change was made; 0 when none waits (history rows have
    /// no change time).
    pub oldest_age_s: f64,
}

/// A connection to the sensor's database used only for shipping to one target.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    stamp: Stamp,
    target: String,
    cursor: Cursor,
}

impl Outbox {
    /// Opens the (already migrated) database for shipping to `target` (its `ship_state`
    /// name, e.g. `clickhouse`), stamping rows with `stamp`; resumes from the stored cursor.
    pub fn open(path: &Path, stamp: Stamp, target: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // As the sink's connection: no fsync per cursor move. A power cut can undo the last
        // moves, which only resends rows the store then keeps once.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let cursor = read_cursor(&conn, target)?;
        Ok(Self {
            conn,
            stamp,
            target: target.to_owned(),
            cursor,
        })
    }

    /// Reads up to `limit` requests past the cursor: history first, then changes in order,
    /// stopping at a request still open whose change is newer than `open_before` (Unix
    /// seconds; `f64::INFINITY` ships open requests at once).
    pub fn next_batch(&mut self, limit: usize, open_before: f64) -> rusqlite::Result<Batch> {
        let tx = self.conn.transaction()?;
        let mut batch = Batch {
            next: self.cursor,
            ..Batch::default()
        };
        let select = row::select_list();
        {
            let mut history = tx.prepare_cached(&format!(
                "SELECT {select} FROM events WHERE changed_seq IS NULL AND id > ?1
                 ORDER BY id LIMIT ?2"
            ))?;
            let mut rows = history.query(params![self.cursor.history_id, limit as i64])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(row::ID)?;
                append(&mut batch, &tx, r, id, &self.stamp)?;
                batch.next.history_id = id;
            }
        }
        let room = limit - batch.rows;
        if room > 0 {
            let open_before_us = (open_before * 1e6).min(i64::MAX as f64) as i64;
            let mut changes = tx.prepare_cached(&format!(
                "SELECT {select} FROM events
                 WHERE changed_seq IS NOT NULL AND (changed_seq, id) > (?1, ?2)
                 ORDER BY changed_seq, id LIMIT ?3"
            ))?;
            let mut rows = changes.query(params![self.cursor.seq, self.cursor.id, room as i64])?;
            while let Some(r) = rows.next()? {
                let (id, seq): (i64, i64) = (r.get(row::ID)?, r.get(row::CHANGED_SEQ)?);
                let open = r.get_ref(row::END_REASON)?.as_str_or_null()?.is_none()
                    && r.get_ref(row::CONN_ID)?.as_i64_or_null()?.is_some();
                if open && seq > open_before_us {
                    break; // young and open: it and what follows wait
                }
                append(&mut batch, &tx, r, id, &self.stamp)?;
                (batch.next.seq, batch.next.id) = (seq, id);
            }
        }
        drop(tx);
        Ok(batch)
    }

    /// Records that the store has `batch`: the cursor moves past it, in SQLite.
    pub fn acknowledge(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        let next = batch.next;
        self.conn.execute(
            "INSERT INTO ship_state (target, history_id, cursor_seq, cursor_id, shipped_rows,
                                     last_shipped_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (target) DO UPDATE SET history_id = ?2, cursor_seq = ?3, cursor_id = ?4,
                 shipped_rows = shipped_rows + ?5, last_shipped_at = ?6",
            params![
                self.target,
                next.history_id,
                next.seq,
                next.id,
                batch.rows as i64,
                crate::event::format_timestamp(SystemTime::now())
            ],
        )?;
        self.cursor = next;
        Ok(())
    }

    /// The backlog now.
    pub fn backlog(&self) -> rusqlite::Result<Backlog> {
        backlog(&self.conn, &self.target)
    }
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

/// The stored cursor of `target` (the start when it has none).
fn read_cursor(conn: &Connection, target: &str) -> rusqlite::Result<Cursor> {
    Ok(conn
        .query_row(
            "SELECT history_id, cursor_seq, cursor_id FROM ship_state WHERE target = ?1",
            [target],
            |r| {
                Ok(Cursor {
                    history_id: r.get(0)?,
                    seq: r.get(1)?,
                    id: r.get(2)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

/// The backlog of `target` in the database `conn` (also read by `tarpit stats`).
pub fn backlog(conn: &Connection, target: &str) -> rusqlite::Result<Backlog> {
    let cursor = read_cursor(conn, target)?;
    let history: i64 = conn.query_row(
        "SELECT COUNT(*) FROM events WHERE changed_seq IS NULL AND id > ?1",
        [cursor.history_id],
        |r| r.get(0),
    )?;
    let (changes, oldest): (i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), MIN(changed_seq) FROM events
         WHERE changed_seq IS NOT NULL AND (changed_seq, id) > (?1, ?2)",
        [cursor.seq, cursor.id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let oldest_age_s = oldest.map_or(0.0, |seq| (unix_now() - seq as f64 / 1e6).max(0.0));
    Ok(Backlog {
        rows: (history + changes) as u64,
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
        conn.execute(
            "INSERT INTO events (timestamp, conn_id, request_seq, end_reason, client_port,
                                 changed_seq)
             VALUES ('2026-11-30T00:00:01.500Z', ?1, 1, ?2, 'not a port', ?3)",
            params![conn_id, end_reason, seq],
        )
        .unwrap();
    }

    #[test]
    fn rows_ship_in_change_order_an_open_one_holds_them_until_open_after_changes_ship_again() {
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
        let batch = outbox.next_batch(100, 0.0).unwrap();
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
        let first_version = rows[0]["version"].as_i64().unwrap();
        assert!(first_version > 0);
        outbox.acknowledge(&batch).unwrap();
        assert_eq!(outbox.backlog().unwrap().rows, 2);
        // Past `open_after`, the open row goes as it stands, and 3 after it.
        let late = outbox.next_batch(100, unix_now() + 1.0).unwrap();
        let ids: Vec<_> = lines(&late).iter().map(|r| r["conn_id"].clone()).collect();
        assert_eq!(ids, [2, 3]);
        outbox.acknowledge(&late).unwrap();
        assert_eq!(outbox.backlog().unwrap(), Backlog::default());
        assert!(outbox.next_batch(100, unix_now()).unwrap().is_empty());
        // A change (the sink completing row 1 again, say) ships it again, with a higher version;
        // the cursor survives a reopen.
        let seq = crate::db::next_change_seq(&conn).unwrap();
        conn.execute(
            "UPDATE events SET bytes_sent = 5, changed_seq = ?1 WHERE id = 1",
            [seq],
        )
        .unwrap();
        let mut reopened = Outbox::open(&dir.path().join("t.db"), stamp(), "clickhouse").unwrap();
        let again = lines(&reopened.next_batch(100, 0.0).unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["bytes_sent"], 5);
        assert!(again[0]["version"].as_i64().unwrap() > first_version);
        let totals = shipped(&conn).unwrap();
        assert_eq!(totals[0].0, "clickhouse");
        assert_eq!(totals[0].1, 3);
    }

    #[test]
    fn rows_written_before_shipping_existed_are_history_shipped_first_at_version_0() {
        let (_dir, conn, mut outbox) = setup();
        insert(&conn, 1, Some("complete"));
        conn.execute(
            "INSERT INTO events (timestamp, conn_id, request_seq, end_reason)
             VALUES ('2026-01-01T00:00:00Z', 7, 1, 'complete')",
            [],
        )
        .unwrap();
        let rows = lines(&outbox.next_batch(100, 0.0).unwrap());
        let order: Vec<_> = rows.iter().map(|r| r["conn_id"].clone()).collect();
        assert_eq!(order, [7, 1]);
        assert_eq!(rows[0]["version"], 0);
        // One at a time, the history cursor moves on its own.
        let one = outbox.next_batch(1, 0.0).unwrap();
        outbox.acknowledge(&one).unwrap();
        assert_eq!(outbox.backlog().unwrap().rows, 1);
        let rest = lines(&outbox.next_batch(10, 0.0).unwrap());
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0]["conn_id"], 1);
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
        let rows = lines(&outbox.next_batch(10, 0.0).unwrap());
        assert_eq!(rows[0]["conn_id"], 0);
        assert_eq!(rows[0]["request_seq"], rows[0]["event_id"]);
        assert_eq!(rows[0]["sensor_id"], "s1");
        assert_eq!(rows[0]["timestamp"], 1_709_288_130);
        assert_eq!(rows[0]["body_preview_hex"], "00ff");
        assert_eq!(rows[0]["reported_to_abuseipdb"], 0);
    }
}
