//! The SQLite side of shipping: reading batches from the outbox and acknowledging them.
//!
//! `ship_outbox` (migration 7, kept by triggers) holds one entry per request whose latest change
//! has not been acknowledged by the store, numbered in change order. A batch is the oldest
//! entries whose request is complete, or was queued more than `open_after` ago; after the
//! store's acknowledgement exactly those entries are deleted. An entry whose request changed
//! while its batch was in flight was replaced under a new number, so it stays and is sent
//! again. That deletion is the cursor: it is committed in SQLite, so a restart, an outage or
//! `kill -9` resumes where the store's acknowledgements stopped, and at worst resends a batch
//! that the store already had (its table keeps one version of each row).

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
    /// The outbox entries to delete once the store has the body.
    entries: Vec<i64>,
}

impl Batch {
    /// Whether the batch covers no outbox entry (nothing was ready).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Outbox entries covered (requests in the body, and rows deleted by hand).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }
}

/// The outbox's backlog, for the metrics and `tarpit stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Requests waiting to be shipped (or shipped again after a change).
    pub rows: u64,
    /// Seconds since the oldest waiting change was made; 0 when none waits.
    pub oldest_age_s: f64,
}

/// A connection to the sensor's database used only for shipping.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    stamp: Stamp,
    target: String,
}

impl Outbox {
    /// Opens the (already migrated) database for shipping to `target` (a name for the
    /// `ship_state` row, e.g. `clickhouse`), stamping rows with `stamp`.
    pub fn open(path: &Path, stamp: Stamp, target: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // As the sink's connection: no fsync per acknowledgement. A power cut can undo the last
        // acknowledgements, which only resends rows the store then keeps once.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Self {
            conn,
            stamp,
            target: target.to_owned(),
        })
    }

    /// Reads up to `limit` requests to ship: complete ones, the replaced tool's, and open ones
    /// queued before `open_before` (Unix seconds). Empty when nothing is ready.
    pub fn next_batch(&mut self, limit: usize, open_before: f64) -> rusqlite::Result<Batch> {
        let tx = self.conn.transaction()?;
        let entries: Vec<(i64, i64)> = tx
            .prepare_cached(
                "SELECT o.seq, o.event_id FROM ship_outbox o LEFT JOIN events e ON e.id = o.event_id
                 WHERE e.id IS NULL OR e.end_reason IS NOT NULL OR e.conn_id IS NULL
                       OR o.queued_at <= ?1
                 ORDER BY o.seq LIMIT ?2",
            )?
            .query_map(params![open_before, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut batch = Batch {
            entries: entries.iter().map(|(seq, _)| *seq).collect(),
            ..Batch::default()
        };
        let select = format!("SELECT {} FROM events WHERE id = ?1", row::select_list());
        for (seq, event_id) in entries {
            let tags: Vec<String> = tx
                .prepare_cached("SELECT tag FROM request_tags WHERE event_id = ?1 ORDER BY tag")?
                .query_map([event_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let object = tx
                .prepare_cached(&select)?
                .query_row([event_id], |r| row::to_json(r, tags, seq, &self.stamp))
                .optional()?;
            // A row deleted by hand is acknowledged without being sent.
            if let Some(object) = object {
                serde_json::to_writer(&mut batch.body, &object).expect("JSON to memory");
                batch.body.push(b'\n');
                batch.rows += 1;
            }
        }
        tx.commit()?;
        Ok(batch)
    }

    /// Records that the store has `batch`: its entries leave the outbox (those replaced by a
    /// newer change meanwhile are no longer there and stay queued under their new number).
    pub fn acknowledge(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM ship_outbox WHERE seq = ?1")?;
            for seq in &batch.entries {
                delete.execute([seq])?;
            }
        }
        tx.execute(
            "INSERT INTO ship_state (target, shipped_rows, last_shipped_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (target) DO UPDATE SET shipped_rows = shipped_rows + ?2,
                                                last_shipped_at = ?3",
            params![
                self.target,
                batch.rows as i64,
                crate::event::format_timestamp(SystemTime::now())
            ],
        )?;
        tx.commit()
    }

    /// The backlog now.
    pub fn backlog(&self) -> rusqlite::Result<Backlog> {
        backlog(&self.conn)
    }
}

/// The backlog of the database `conn` (also read by `tarpit stats`).
pub fn backlog(conn: &Connection) -> rusqlite::Result<Backlog> {
    let (rows, oldest): (i64, Option<f64>) = conn.query_row(
        "SELECT COUNT(*), (SELECT queued_at FROM ship_outbox ORDER BY seq LIMIT 1)
         FROM ship_outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let oldest_age_s = oldest.map_or(0.0, |queued| (unix_now() - queued).max(0.0));
    Ok(Backlog {
        rows: rows as u64,
        oldest_age_s,
    })
}

/// Each shipping target's total and last success, for `tarpit stats`.
pub fn shipped(conn: &Connection) -> rusqlite::Result<Vec<(String, i64, Option<String>)>> {
    conn.prepare("SELECT target, shipped_rows, last_shipped_at FROM ship_state ORDER BY target")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Seconds since the Unix epoch, as the outbox's `queued_at` counts them.
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

    #[test]
    fn complete_rows_ship_open_ones_wait_then_ship_and_changes_ship_again() {
        let (_dir, conn, mut outbox) = setup();
        conn.execute_batch(
            "INSERT INTO events (timestamp, conn_id, request_seq, end_reason, client_port)
               VALUES ('2026-11-30T00:00:01.500Z', 1, 1, 'complete', 'not a port');
             INSERT INTO events (timestamp, conn_id, request_seq) VALUES ('t', 2, 1);
             INSERT INTO request_tags (event_id, tag) VALUES (1, 'tool:curl');",
        )
        .unwrap();
        // The open row (2) is young: only row 1 goes.
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
        // A change while the batch is in flight keeps the row queued.
        conn.execute("UPDATE events SET bytes_sent = 5 WHERE id = 1", [])
            .unwrap();
        outbox.acknowledge(&batch).unwrap();
        assert_eq!(outbox.backlog().unwrap().rows, 2);
        let again = lines(&outbox.next_batch(100, 0.0).unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["bytes_sent"], 5);
        assert!(again[0]["version"].as_i64().unwrap() > first_version);
        // Past `open_after`, the open row goes as it stands.
        let late = outbox.next_batch(100, unix_now() + 1.0).unwrap();
        assert_eq!(late.rows, 2);
        outbox.acknowledge(&late).unwrap();
        assert_eq!(outbox.backlog().unwrap(), Backlog::default());
        let totals = shipped(&conn).unwrap();
        assert_eq!(totals[0].0, "clickhouse");
        assert_eq!(totals[0].1, 3);
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

    #[test]
    fn rows_written_before_the_outbox_existed_are_queued_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A version-6 file: today's schema without migration 7's tables, and a row.
        drop(crate::db::open(&path).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DELETE FROM ship_outbox;
             DROP TRIGGER ship_event_inserted;
             INSERT INTO events (timestamp, conn_id, request_seq, end_reason)
               VALUES ('2026-01-01T00:00:00Z', 1, 1, 'complete');
             DROP TABLE ship_outbox; DROP TABLE ship_state;
             DROP TRIGGER ship_event_updated; DROP TRIGGER ship_tag_inserted;
             DROP TRIGGER ship_tag_deleted;
             PRAGMA user_version = 6;",
        )
        .unwrap();
        crate::db::migrate(&mut conn).unwrap();
        assert_eq!(backlog(&conn).unwrap().rows, 1);
    }
}
