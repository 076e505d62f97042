//! Adopting the database of the Python tool this project replaces.
//!
//! That tool kept one table, `events`, with 22 columns (23 in the versions that recorded
//! `target_port`), no `PRAGMA user_version`, `isoformat()` timestamps and headers as a JSON
//! object. An operator who replaces it keeps the file (our default path is the same), so a file of
//! that shape is migrated in place: a copy is saved beside it first, every old row keeps its id
//! and values, our columns are added (NULL on old rows) and new rows are appended after the old
//! ones. Any other schema we do not know is refused without being touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::DbError;

/// The replaced tool's `events` columns, in its order, without `target_port` (which later
/// versions of it added).
pub const LEGACY_COLUMNS: &[&str] = &[
    "id",
    "timestamp",
    "client_ip",
    "client_port",
    "http_method",
    "http_path",
    "http_query",
    "user_agent",
    "headers_json",
    "response_status",
    "bytes_sent",
    "duration_s",
    "error_message",
    "country_iso_code",
    "country_name",
    "city_name",
    "latitude",
    "longitude",
    "asn_number",
    "asn_organization",
    "reported_to_abuseipdb",
    "abuseipdb_report_timestamp",
];

/// What takes a replaced-tool table to our schema version 1: the columns the first migration
/// creates that the old table lacks, the indexes, and the `connections` table. Columns are added
/// nullable, so old rows read NULL in them; `(conn_id, request_seq)` is unique through an index,
/// which SQLite lets hold any number of NULL pairs.
const TO_VERSION_1: &str = r#"
    ALTER TABLE events ADD COLUMN conn_id INTEGER;
    ALTER TABLE events ADD COLUMN request_seq INTEGER;
    ALTER TABLE events ADD COLUMN http_version TEXT;
    ALTER TABLE events ADD COLUMN client_ip_source TEXT;
    ALTER TABLE events ADD COLUMN peer_ip TEXT;
    ALTER TABLE events ADD COLUMN peer_port INTEGER;
    ALTER TABLE events ADD COLUMN local_ip TEXT;
    ALTER TABLE events ADD COLUMN local_port INTEGER;
    ALTER TABLE events ADD COLUMN target_port_source TEXT;
    ALTER TABLE events ADD COLUMN target_port_ebpf INTEGER;
    ALTER TABLE events ADD COLUMN target_port_original_dst INTEGER;
    ALTER TABLE events ADD COLUMN target_port_header INTEGER;
    ALTER TABLE events ADD COLUMN head_size INTEGER;
    ALTER TABLE events ADD COLUMN raw_preview TEXT;
    ALTER TABLE events ADD COLUMN body_preview BLOB;
    ALTER TABLE events ADD COLUMN body_sha256 TEXT;
    ALTER TABLE events ADD COLUMN body_length INTEGER;
    ALTER TABLE events ADD COLUMN end_reason TEXT;
    ALTER TABLE events ADD COLUMN closed_at TEXT;
    CREATE UNIQUE INDEX IF NOT EXISTS events_conn_request ON events (conn_id, request_seq);
    CREATE INDEX IF NOT EXISTS events_timestamp ON events (timestamp);
    CREATE INDEX IF NOT EXISTS events_client_ip ON events (client_ip);
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
"#;

/// What a file with `user_version` 0 holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unversioned {
    /// No table at all: a new database.
    Empty,
    /// The replaced tool's `events` table; `has_target_port` says which of its versions.
    Legacy {
        /// Whether the old table already has `target_port`.
        has_target_port: bool,
    },
    /// Something else, described for the error message.
    Unknown(String),
}

/// Looks at a file whose `user_version` is 0 and says what it is, without changing it.
pub fn inspect(conn: &Connection) -> Result<Unversioned, DbError> {
    let tables: BTreeSet<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(Unversioned::Empty);
    }
    if tables.len() != 1 || !tables.contains("events") {
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        return Ok(Unversioned::Unknown(format!("tables {}", names.join(", "))));
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('events')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let found: BTreeSet<&str> = columns.iter().map(String::as_str).collect();
    let legacy: BTreeSet<&str> = LEGACY_COLUMNS.iter().copied().collect();
    let mut with_port = legacy.clone();
    with_port.insert("target_port");
    if found == legacy || found == with_port {
        Ok(Unversioned::Legacy {
            has_target_port: found.contains("target_port"),
        })
    } else {
        Ok(Unversioned::Unknown(format!(
            "an `events` table with columns {}",
            columns.join(", ")
        )))
    }
}

/// Where the copy of a file is kept before it is migrated.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pre-migration");
    PathBuf::from(name)
}

/// Saves a copy of the database (with whatever its WAL holds) to `FILE.pre-migration`, then
/// brings the replaced tool's table to our version 1 in one transaction. The copy is made with
/// `VACUUM INTO`, which reads through SQLite and so includes committed pages still in the WAL
/// that a plain file copy would miss; an existing copy is never overwritten.
pub fn migrate_in_place(
    conn: &mut Connection,
    path: &Path,
    has_target_port: bool,
) -> Result<PathBuf, DbError> {
    let backup = backup_path(path);
    if backup.exists() {
        return Err(DbError::BackupExists {
            path: path.display().to_string(),
            backup: backup.display().to_string(),
        });
    }
    let backup_text = backup.to_str().ok_or_else(|| DbError::BackupExists {
        path: path.display().to_string(),
        backup: format!("{} (not UTF-8)", backup.display()),
    })?;
    conn.execute("VACUUM INTO ?1", [backup_text])?;
    tracing::info!(
        database = %path.display(),
        copy = %backup.display(),
        "migrating the replaced tool's database in place; the original is saved as the copy"
    );
    let tx = conn.transaction()?;
    if !has_target_port {
        tx.execute_batch("ALTER TABLE events ADD COLUMN target_port INTEGER;")?;
    }
    tx.execute_batch(TO_VERSION_1)?;
    tx.pragma_update(None, "user_version", 1)?;
    tx.commit()?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection) -> BTreeSet<String> {
        conn.prepare("SELECT name FROM pragma_table_info('events')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn adopted_table_has_exactly_a_fresh_databases_columns_and_old_rows_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = super::super::open(&dir.path().join("fresh.db")).unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        let ddl = format!(
            "CREATE TABLE events ({}, target_port INTEGER);",
            LEGACY_COLUMNS
                .iter()
                .map(|c| match *c {
                    "id" => "id INTEGER PRIMARY KEY AUTOINCREMENT".to_owned(),
                    c => format!("{c} TEXT"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        old.execute_batch(&ddl).unwrap();
        old.execute(
            "INSERT INTO events (timestamp) VALUES ('2024-01-01T00:00:00+00:00')",
            [],
        )
        .unwrap();
        assert_eq!(
            inspect(&old).unwrap(),
            Unversioned::Legacy {
                has_target_port: true
            }
        );
        drop(old);
        let adopted = super::super::open(&path).unwrap();
        assert_eq!(columns(&adopted), columns(&fresh));
        // A restart's crash recovery must not mark the old rows: they never had an end reason.
        super::super::mark_interrupted(&adopted).unwrap();
        let reason: Option<String> = adopted
            .query_row("SELECT end_reason FROM events WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(reason, None);
    }
}
