//! The SQLite sink's tests: rows written in batches against rows written event by event, the
//! give-up model's bound, and the WAL pages a batch writes.

use super::*;
use crate::adaptive::model::{FamilyRow, family_from_row};
use std::time::{Duration, SystemTime};

/// A connection's four events (opened, request with a tag, response end, closed).
fn connection_events(conn_id: u64) -> Vec<Arc<Event>> {
    connection_events_from(conn_id, "192.0.2.7".parse().unwrap())
}

/// [`connection_events`] from the client at `ip`.
fn connection_events_from(conn_id: u64, ip: std::net::IpAddr) -> Vec<Arc<Event>> {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + conn_id);
    let mut request = RequestRecord::sample(ip);
    request.conn_id = conn_id;
    request.timestamp = at;
    request.tags = vec!["tool:curl".into()];
    vec![
        Arc::new(Event::ConnectionOpened(ConnectionOpened {
            conn_id,
            timestamp: at,
            peer_ip: ip,
            peer_port: 40000,
            local_ip: ip,
            local_port: 8080,
            worker: 1,
        })),
        Arc::new(Event::Request(Box::new(request))),
        Arc::new(Event::ResponseEnd(ResponseEnd {
            conn_id,
            request_seq: 1,
            closed_at: at + Duration::from_millis(3),
            bytes_sent: 150,
            duration_s: 0.003,
            end_reason: "client_reset",
            client_fin_s: Some(0.002),
        })),
        Arc::new(Event::ConnectionClosed(ConnectionClosed {
            conn_id,
            closed_at: at + Duration::from_millis(4),
            requests: 1,
            bytes_sent: 150,
            duration_s: 0.004,
            end_reason: "client_reset",
        })),
    ]
}

/// Every column of both tables and the tags, for comparing two files: all but the change
/// number and the row ids (an insert that finds its row there already still uses an id).
fn dump(conn: &Connection) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in [
        "SELECT * FROM connections ORDER BY conn_id",
        "SELECT * FROM events ORDER BY id",
        "SELECT * FROM request_tags ORDER BY event_id, tag",
    ] {
        let mut statement = conn.prepare(sql).unwrap();
        let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
        let mut found = statement.query([]).unwrap();
        while let Some(row) = found.next().unwrap() {
            let mut text = String::new();
            for (i, name) in names.iter().enumerate() {
                if !["changed_seq", "id", "event_id"].contains(&name.as_str()) {
                    let value: rusqlite::types::Value = row.get(i).unwrap();
                    text.push_str(&format!("{name}={value:?} "));
                }
            }
            rows.push(text);
        }
    }
    rows
}

/// A row whose end is in its own batch is inserted complete, and is then the same row,
/// column for column, as one written event by event; a start that finds its row there
/// already still gets its end.
#[test]
fn rows_ended_in_their_own_batch_are_the_rows_written_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let open =
        |name: &str| SqliteSink::new(crate::db::open(&dir.path().join(name)).unwrap(), "sensor-a");
    let (mut one_batch, mut one_by_one) = (open("batch.db"), open("single.db"));
    for sink in [&one_batch, &one_by_one] {
        sink.conn
            .execute_batch(
                "CREATE TEMP TABLE updates (tab TEXT);
                 CREATE TEMP TRIGGER e AFTER UPDATE ON main.events
                     BEGIN INSERT INTO updates VALUES ('events'); END;
                 CREATE TEMP TRIGGER c AFTER UPDATE ON main.connections
                     BEGIN INSERT INTO updates VALUES ('connections'); END;",
            )
            .unwrap();
    }
    let updates = |sink: &SqliteSink| -> i64 {
        sink.conn
            .query_row("SELECT COUNT(*) FROM temp.updates", [], |r| r.get(0))
            .unwrap()
    };
    let events: Vec<Arc<Event>> = (1..=3).flat_map(connection_events).collect();
    one_batch.write_batch(&events).unwrap();
    for event in &events {
        one_by_one.write_batch(std::slice::from_ref(event)).unwrap();
    }
    assert_eq!(updates(&one_batch), 0, "every row inserted complete");
    assert_eq!(updates(&one_by_one), 6, "each end an update");
    let written = dump(&one_batch.conn);
    assert_eq!(written.len(), 9, "3 connections, 3 requests, 3 tags");
    assert!(
        written[0].contains("end_reason=Text(\"client_reset\")"),
        "{}",
        written[0]
    );
    assert!(
        written[3].contains("bytes_sent=Integer(150)"),
        "{}",
        written[3]
    );
    assert_eq!(written, dump(&one_by_one.conn));
    // The same batch again: every start is ignored, every end written as an update.
    let mut again = open("again.db");
    again.write_batch(&events[..2]).unwrap();
    again.write_batch(&events).unwrap();
    assert_eq!(dump(&again.conn), dump(&one_by_one.conn));
}

/// Storing changes keeps the table at the model's bound, the least recently seen going
/// first, and never fails the batch it is part of.
#[test]
fn stored_families_are_pruned_to_the_bound_least_recently_seen_first() {
    let dir = tempfile::tempdir().unwrap();
    let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
    let rows: Vec<FamilyRow> = (0..10)
        .map(|i| FamilyRow {
            family: family_from_row(
                "user_agent",
                format!("agent/{i}"),
                &[],
                (0, 0, 0),
                None,
                1_000 + i,
            )
            .unwrap(),
            give_up_s: None,
        })
        .collect();
    store_families(&conn, &FamilyBatch { rows, keep: 4 }).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM giveup_families ORDER BY last_seen")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["agent/6", "agent/7", "agent/8", "agent/9"]);
    let back = crate::adaptive::store::load_families(&conn, 2).unwrap();
    let back: Vec<&str> = back.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        back,
        ["agent/8", "agent/9"],
        "a start reads the newest, at most its bound"
    );
}

/// One of the connection's pager counters since it opened (`sqlite3_db_status`): pages
/// written out mid-transaction (`SQLITE_DBSTATUS_CACHE_SPILL`) or read from the file
/// (`SQLITE_DBSTATUS_CACHE_MISS`).
fn pager_count(conn: &Connection, counter: i32) -> i32 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: the handle is the live connection's, and the two outputs are plain integers.
    let status = unsafe {
        rusqlite::ffi::sqlite3_db_status(conn.handle(), counter, &mut current, &mut highest, 0)
    };
    assert_eq!(status, rusqlite::ffi::SQLITE_OK);
    current
}

/// A full batch ([`super::SQLITE_BATCHING`]): a quarter of that many connections from 250
/// addresses, from `first`.
fn full_batch(first: u64) -> Vec<Arc<Event>> {
    let connections = (super::SQLITE_BATCHING.max_events / 4) as u64;
    (first..first + connections)
        .flat_map(|id| {
            let ip = std::net::IpAddr::from([198, 51, 100, (id % 250) as u8]);
            connection_events_from(id, ip)
        })
        .collect()
}

/// A batch keeps its pages in memory until its commit, however few pages the cache holds: with
/// spilling on, a batch that touched more pages than the cache holds wrote them out to the WAL
/// mid-batch and again when touched again (the table's last leaf, each address's index leaf),
/// 20 times per commit in a churn. A cache of 20 pages stands in for a batch larger than the
/// default cache of 2 MB.
#[test]
fn a_batch_is_written_at_its_commit_not_spilled_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SqliteSink::new(crate::db::open(&dir.path().join("t.db")).unwrap(), "sensor");
    sink.conn.execute_batch("PRAGMA cache_size = 20").unwrap();
    let events = full_batch(1);
    sink.write_batch(&events).unwrap();
    let rows: i64 = sink
        .conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let pages: i64 = sink
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as usize, super::SQLITE_BATCHING.max_events / 4);
    assert!(
        pages > 100,
        "the batch touched only {pages} pages: not above the cache"
    );
    let spilled = pager_count(&sink.conn, rusqlite::ffi::SQLITE_DBSTATUS_CACHE_SPILL);
    assert_eq!(spilled, 0, "pages written out before the commit");
}

/// A full batch's pages fit the sink's cache beside the B-trees' inner pages: after another
/// writer's commit (the CRS stage's) has made the sink drop its cache, a batch reads fewer
/// pages than it writes (each once, and the inner pages on their paths). At SQLite's default
/// cache of 2 MB the batch's pinned pages pushed the inner pages out, to be read again and
/// again: 1,534 pages read here for 587 written, 2.5 page reads per row in a churn.
#[test]
fn a_full_batch_reads_fewer_pages_than_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut sink = SqliteSink::new(crate::db::open(&path).unwrap(), "sensor");
    // 100,000 earlier rows from the same 250 addresses: each address's index entries fill
    // leaves of their own, as on a sensor that has run for a while.
    sink.conn
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO events (timestamp, client_ip, conn_id, request_seq, changed_seq)
             SELECT '2023-11-14T22:13:20.000000Z', '198.51.100.' || (i % 250), 1000000 + i, 1, i
             FROM n",
        )
        .unwrap();
    // Another writer commits: the sink's next transaction starts from an empty cache.
    let other = Connection::open(&path).unwrap();
    let changed = other
        .execute("UPDATE events SET changed_seq = 0 WHERE id = 1", [])
        .unwrap();
    assert_eq!(changed, 1);
    let (miss, write) = (
        rusqlite::ffi::SQLITE_DBSTATUS_CACHE_MISS,
        rusqlite::ffi::SQLITE_DBSTATUS_CACHE_WRITE,
    );
    let before = (
        pager_count(&sink.conn, miss),
        pager_count(&sink.conn, write),
    );
    sink.write_batch(&full_batch(1)).unwrap();
    let read = pager_count(&sink.conn, miss) - before.0;
    let written = pager_count(&sink.conn, write) - before.1;
    assert!(
        written > 300,
        "the batch wrote only {written} pages: not above the cache"
    );
    assert!(
        read <= written,
        "{read} pages read for a batch that wrote {written}"
    );
}
