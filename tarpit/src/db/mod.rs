//! The SQLite database: opening it, its schema and migrations, and crash recovery.
//!
//! The `events` table keeps every column of the tool this project replaces, with the same names
//! and meaning, so operators' existing SQL keeps working; our own columns follow them. The
//! `connections` table has one row per accepted connection, inserted at accept, so that every
//! accepted connection is on record even when it never sent a byte and the process is killed.
//! Schema changes are numbered migrations tracked with `PRAGMA user_version`; a file of the
//! replaced tool (no version, its own `events` table) is adopted by [`legacy`].

pub mod checkpoint;
pub mod legacy;
pub mod sensor;

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

/// An error from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused an operation.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database's directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was written by a newer tarpit.
    #[error("schema version {found} is newer than this tarpit understands ({supported})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The file holds tables that are neither ours nor the replaced tool's: never touched.
    #[error(
        "{path} is not a tarpit database: it has {found} but no schema version. It was left \
         unchanged; point `[storage] database` (or --db) at another file, or move this one away"
    )]
    UnknownSchema {
        /// The database file.
        path: String,
        /// What was found in it.
        found: String,
    },
    /// A migration would overwrite an earlier migration's saved copy.
    #[error(
        "{path} needs migrating, but the copy {backup} already exists; move the copy away \
         (it is the original of an earlier migration) and start again"
    )]
    BackupExists {
        /// The database file.
        path: String,
        /// The copy that is in the way.
        backup: String,
    },
    /// The copy made before a migration could not be written.
    #[error("{path} needs migrating, but copying it to {backup} failed: {source}")]
    Copy {
        /// The database file.
        path: String,
        /// The copy.
        backup: String,
        /// Why.
        source: std::io::Error,
    },
    /// A read-only command was given a database that must be migrated first.
    #[error(
        "{path} has schema version {found} and needs migrating to {supported}: run \
         `tarpit migrate --db {path}` (or start `tarpit run` on it) first"
    )]
    NeedsMigration {
        /// The database file.
        path: String,
        /// Version in the file (0: the replaced tool's).
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

/// The `connections` table of schema version 1, shared by the first migration and the
/// adoption of the replaced tool's database ([`legacy`]), which had no such table.
macro_rules! connections_ddl {
    () => {
        r#"
    CREATE TABLE connections (
        conn_id INTEGER PRIMARY KEY,
        opened_at TEXT NOT NULL,
        peer_ip TEXT NOT NULL,
        peer_port INTEGER NOT NULL,
        local_ip TEXT NOT NULL,
        local_port INTEGER NOT NULL,
        worker INTEGER,
        closed_at TEXT,
        end_reason TEXT,
        requests INTEGER,
        bytes_sent INTEGER,
        duration_s REAL
    );
    CREATE INDEX connections_opened_at ON connections (opened_at);
"#
    };
}
pub(crate) use connections_ddl;

mod migrations;
use migrations::MIGRATIONS;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How many pages (4 KiB) the WAL grows to before a commit copies them into the database
/// file (SQLite's automatic checkpoint; its default is 1,000). The writers append: each commit
/// rewrites the last, partly filled page of every table and index, and an `events(client_ip)`
/// leaf for each address in it, so most of a WAL's frames are new versions of the same few
/// hundred pages. A checkpoint writes each page once however many versions it has, and syncs
/// both files: every 1,000 frames, a churn's writers checkpointed about 18 times a second
/// (36.8 `fsync` a second; 7.8 at this size) and the checkpoint was a fifth of the SQLite
/// writer's time (`cargo xtask bench sinks`: 14.6 µs of CPU per connection, 12.1-12.7 at this
/// size; docs/benchmarks.md, sixth pass). A commit that checkpoints this much stops its
/// writer for the copy, long enough on a slower disk for the SQLite sink's queue to overflow:
/// the running tarpit's sink and CRS stage hand their checkpoints to a thread of their own
/// ([`checkpoint`]), woken at half this size. What a power cut can undo is bounded by the
/// kernel's writeback (dirty pages are written within 30 s by default) far more than by the
/// checkpoint; a `kill -9` loses nothing committed.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The settings of every connection that writes the database (the sink's, the CRS stage's,
/// the shippers'): `synchronous = NORMAL`, which in WAL mode keeps every committed transaction
/// through a process crash without an `fsync` per commit, and the same checkpoint size, since
/// any writer's commit checkpoints a WAL past its own connection's limit.
pub fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
}

/// Opens (creating when missing) the database, sets WAL mode and migrates it to the current
/// schema, configured as a writer ([`configure_writer`]). WAL with `synchronous = NORMAL`
/// survives a process crash (`kill -9`) with every committed transaction intact, at a
/// fraction of the cost of `FULL`.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Look before changing anything (WAL mode included): a file we do not know stays as it was.
    let version = schema_version(&conn)?;
    let adopt_legacy = match version {
        0 => match legacy::inspect(&conn)? {
            legacy::Unversioned::Empty => None,
            legacy::Unversioned::Legacy { has_target_port } => Some(has_target_port),
            legacy::Unversioned::Unknown(found) => {
                return Err(DbError::UnknownSchema {
                    path: path.display().to_string(),
                    found,
                });
            }
        },
        _ => None,
    };
    // The copy comes before anything is written, WAL mode included.
    if adopt_legacy.is_some() {
        legacy::save_copy(path)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    configure_writer(&conn)?;
    if let Some(has_target_port) = adopt_legacy {
        legacy::migrate_in_place(&mut conn, has_target_port)?;
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens an existing database read-only for the offline commands (`stats`, `ports`, `report`,
/// `export`), after checking that its schema is the one this build reads. Nothing is changed:
/// a file that needs migrating is named in the error with the command that migrates it.
pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version = schema_version(&conn)?;
    if version == 0
        && let legacy::Unversioned::Unknown(found) = legacy::inspect(&conn)?
    {
        return Err(DbError::UnknownSchema {
            path: path.display().to_string(),
            found,
        });
    }
    if version > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        return Err(DbError::NeedsMigration {
            path: path.display().to_string(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

/// The file's `PRAGMA user_version`.
fn schema_version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Applies every migration the file has not seen yet, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let current = schema_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Rows that a previous run left open, now marked `interrupted`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Connections that had no close recorded.
    pub connections: usize,
    /// Requests whose response had no end recorded.
    pub requests: usize,
}

/// The number for the next change of an `events` row (`changed_seq`): above every number
/// already given (`change_seq`), and the current time in microseconds when that is higher, so
/// numbers only grow and tell roughly when the change was made. Call it inside the writing
/// transaction, and [`store_change_seq`] with the last number used before committing.
pub fn next_change_seq(conn: &Connection) -> rusqlite::Result<i64> {
    let last: Option<i64> = conn
        .query_row("SELECT last FROM change_seq WHERE id = 0", [], |r| r.get(0))
        .optional()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Ok(last.map_or(now, |last| (last + 1).max(now)))
}

/// Records `last` as the last change number given (see [`next_change_seq`]).
pub fn store_change_seq(conn: &Connection, last: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO change_seq (id, last) VALUES (0, ?1)")?
        .execute([last])?;
    Ok(())
}

/// Marks rows left open by a crash or `kill -9` as `end_reason = 'interrupted'`. Call it at start,
/// before any new connection is recorded. `closed_at` stays empty: when they really ended is
/// unknown. Rows of the replaced tool (no `conn_id`) never had an end reason and keep none.
pub fn mark_interrupted(conn: &mut Connection) -> Result<Recovered, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let connections = tx.execute(
        "UPDATE connections SET end_reason = 'interrupted' WHERE end_reason IS NULL",
        [],
    )?;
    let seq = next_change_seq(&tx)?;
    let requests = tx.execute(
        "UPDATE events SET end_reason = 'interrupted', changed_seq = ?1
         WHERE end_reason IS NULL AND conn_id IS NOT NULL",
        [seq],
    )?;
    store_change_seq(&tx, seq)?;
    tx.commit()?;
    Ok(Recovered {
        connections,
        requests,
    })
}

/// What AbuseIPDB reporting remembers across restarts: the addresses reported (or dry-run)
/// since `interval_start` with their last time, and the API calls made since `day_start`.
pub fn abuseipdb_history(
    conn: &Connection,
    interval_start: std::time::SystemTime,
    day_start: std::time::SystemTime,
) -> Result<(Vec<(std::net::IpAddr, std::time::SystemTime)>, u32), DbError> {
    use crate::event::format_timestamp;
    let mut stmt = conn.prepare(
        "SELECT ip, MAX(reported_at) FROM abuseipdb_reports
         WHERE outcome IN ('reported', 'dry_run') AND reported_at >= ?1 GROUP BY ip",
    )?;
    let reported = stmt
        .query_map([format_timestamp(interval_start)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .filter_map(Result::ok)
        .filter_map(|(ip, at)| Some((ip.parse().ok()?, humantime::parse_rfc3339(&at).ok()?)))
        .collect();
    let calls: i64 = conn.query_row(
        "SELECT COUNT(*) FROM abuseipdb_reports WHERE http_status IS NOT NULL AND reported_at >= ?1",
        [format_timestamp(day_start)],
        |row| row.get(0),
    )?;
    Ok((reported, calls as u32))
}

/// The `FROM` clause for reading `events` of a period. With a start time the rows are read
/// through the `events(timestamp)` index: without ANALYZE statistics SQLite prefers an index
/// that serves a GROUP BY and scans the whole table instead (20 s instead of 2 s for a day of
/// a 10-million-row database).
pub fn events_from(limited: bool) -> &'static str {
    if limited {
        "events INDEXED BY events_timestamp"
    } else {
        "events"
    }
}

/// "since <time>" or "all time", for report headings.
pub fn period_label(since: Option<&str>) -> String {
    since.map_or("all time".to_owned(), |s| format!("since {s}"))
}

/// The columns of the `events` table, in order.
pub fn events_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM pragma_table_info('events') ORDER BY cid")?
        .query_map([], |row| row.get(0))?
        .collect()
}

/// The first connection id this run may use: ids stay unique across restarts.
pub fn next_conn_id(conn: &Connection) -> Result<u64, DbError> {
    let max: Option<i64> = conn
        .query_row("SELECT MAX(conn_id) FROM connections", [], |row| row.get(0))
        .optional()?
        .flatten();
    Ok(max.map_or(1, |m| m as u64 + 1))
}

/// Whether `b` names the database `a` or one of its WAL files: a command's output must never
/// truncate the database by a slip of the command line.
pub fn is_database_file(a: &Path, b: &Path) -> bool {
    let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize()) else {
        return false;
    };
    let suffixed = |suffix: &str| {
        let mut name = a.clone().into_os_string();
        name.push(suffix);
        name
    };
    b == a || b.as_os_str() == suffixed("-wal") || b.as_os_str() == suffixed("-shm")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames in the WAL of `conn`'s database (a passive checkpoint's count of them).
    fn wal_frames(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    #[test]
    fn writers_let_the_wal_grow_to_the_checkpoint_size_before_copying_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let sink = open(&path).unwrap();
        let stage = Connection::open(&path).unwrap();
        configure_writer(&stage).unwrap();
        sink.execute("CREATE TABLE scratch (b BLOB)", []).unwrap();
        // Six commits of about 500 pages each, the two writers taking turns: past SQLite's
        // default of 1,000 frames, where either one's commit would have checkpointed and the
        // WAL started again from its beginning.
        let half_a_thousand_pages = vec![7u8; 500 * 4096];
        for round in 0..6 {
            let writer = if round % 2 == 0 { &sink } else { &stage };
            writer
                .execute("INSERT INTO scratch VALUES (?1)", [&half_a_thousand_pages])
                .unwrap();
        }
        let frames = wal_frames(&sink);
        assert!(
            (3_000..i64::from(WAL_AUTOCHECKPOINT_PAGES)).contains(&frames),
            "{frames} frames in the WAL"
        );
    }

    #[test]
    fn fresh_database_gets_the_current_schema_with_every_seed_column() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("sub/t.db")).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let columns = events_columns(&conn).unwrap();
        // The replaced tool's columns first, in its order (target_port after client_port).
        let mut seed = legacy::LEGACY_COLUMNS.to_vec();
        seed.insert(4, "target_port");
        assert_eq!(&columns[..seed.len()], &seed[..]);
        assert_eq!(seed.len(), 23);
        for ours in ["conn_id", "end_reason", "closed_at", "target_port_source"] {
            assert!(columns.iter().any(|c| c == ours), "{ours}");
        }
    }

    #[test]
    fn reopening_is_idempotent_and_ids_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open(&path).unwrap();
        assert_eq!(next_conn_id(&conn).unwrap(), 1);
        conn.execute(
            "INSERT INTO connections (conn_id, opened_at, peer_ip, peer_port, local_ip, local_port)
             VALUES (41, 't', '1.2.3.4', 1, '127.0.0.1', 8080)",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        assert_eq!(next_conn_id(&conn).unwrap(), 42);
    }

    #[test]
    fn open_rows_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO connections (conn_id, opened_at, peer_ip, peer_port, local_ip, local_port)
               VALUES (1, 't', 'a', 1, 'b', 2), (2, 't', 'a', 1, 'b', 2);
             UPDATE connections SET end_reason = 'client_closed' WHERE conn_id = 2;
             INSERT INTO events (timestamp, conn_id, request_seq) VALUES ('t', 1, 1);",
        )
        .unwrap();
        let recovered = mark_interrupted(&mut conn).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                connections: 1,
                requests: 1
            }
        );
        let reason: String = conn
            .query_row(
                "SELECT end_reason FROM connections WHERE conn_id = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(reason, "client_closed");
        assert_eq!(mark_interrupted(&mut conn).unwrap(), Recovered::default());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            open(&path),
            Err(DbError::TooNew { found: 99, .. })
        ));
    }
}
