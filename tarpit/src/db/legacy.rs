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
const TO_VERSION_1: &str = concat!(
    r#"
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
"#,
    super::connections_ddl!()
);

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
    let columns = super::events_columns(conn)?;
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
    suffixed(path, ".pre-migration")
}

/// Copies the file, byte for byte, to `FILE.pre-migration` (and a WAL the replaced tool left
/// beside it to `FILE.pre-migration-wal`, so the copy opens with everything that was
/// committed), before anything touches it, and says so in one log line. An existing copy is
/// never overwritten: it is the original of an earlier attempt.
pub fn save_copy(path: &Path) -> Result<PathBuf, DbError> {
    let backup = backup_path(path);
    let copy_error = |source: std::io::Error| DbError::Copy {
        path: path.display().to_string(),
        backup: backup.display().to_string(),
        source,
    };
    if backup.exists() {
        return Err(DbError::BackupExists {
            path: path.display().to_string(),
            backup: backup.display().to_string(),
        });
    }
    std::fs::copy(path, &backup).map_err(copy_error)?;
    // `copy` keeps the original's mode (the replaced tool's file is often 0644): the copy
    // holds the same record as ours, so it is made as private.
    crate::file_modes::make_private(&backup).map_err(copy_error)?;
    let wal = suffixed(path, "-wal");
    if wal.metadata().is_ok_and(|m| m.len() > 0) {
        let wal_copy = suffixed(&backup, "-wal");
        std::fs::copy(&wal, &wal_copy).map_err(copy_error)?;
        crate::file_modes::make_private(&wal_copy).map_err(copy_error)?;
    }
    tracing::info!(
        database = %path.display(),
        copy = %backup.display(),
        "migrating the replaced tool's database in place; the original is kept as the copy"
    );
    Ok(backup)
}

/// Brings the replaced tool's table to our schema version 1, in one transaction.
pub fn migrate_in_place(conn: &mut Connection, has_target_port: bool) -> Result<(), DbError> {
    let tx = conn.transaction()?;
    if !has_target_port {
        tx.execute_batch("ALTER TABLE events ADD COLUMN target_port INTEGER;")?;
    }
    tx.execute_batch(TO_VERSION_1)?;
    tx.pragma_update(None, "user_version", 1)?;
    tx.commit()?;
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection) -> BTreeSet<String> {
        super::super::events_columns(conn)
            .unwrap()
            .into_iter()
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
        let mut adopted = super::super::open(&path).unwrap();
        assert_eq!(columns(&adopted), columns(&fresh));
        // A restart's crash recovery must not mark the old rows: they never had an end reason.
        super::super::mark_interrupted(&mut adopted).unwrap();
        let reason: Option<String> = adopted
            .query_row("SELECT end_reason FROM events WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(reason, None);
    }

    #[test]
    fn the_copy_holds_what_only_the_wal_had_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE events (id INTEGER PRIMARY KEY, timestamp TEXT);
                 INSERT INTO events (timestamp) VALUES ('a'), ('b'), ('c');",
            )
            .unwrap();
        // The writer stays open: the rows are in the WAL only. The original is readable by
        // everyone, as the replaced tool left it; the copy is not.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let backup = save_copy(&path).unwrap();
        for file in [backup.clone(), suffixed(&backup, "-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640, "{}", file.display());
        }
        let copy = Connection::open(&backup).unwrap();
        let n: i64 = copy
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        drop((copy, writer));
        assert!(matches!(
            save_copy(&path),
            Err(DbError::BackupExists { .. })
        ));
    }
}
