//! Adopting the replaced Python tool's database: the file is migrated in place (a copy kept),
//! every old row survives unchanged, new rows are appended, and the offline commands read old
//! and new rows together. A file of any other shape is refused and left byte for byte as it was.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Tarpit;
use rusqlite::types::Value;

/// The replaced tool's DDL, as it created its table (the later version, with `target_port`).
const LEGACY_DDL: &str = "CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, client_ip TEXT, client_port INTEGER,
    target_port INTEGER, http_method TEXT, http_path TEXT, http_query TEXT, user_agent TEXT,
    headers_json TEXT, response_status INTEGER, bytes_sent INTEGER, duration_s REAL,
    error_message TEXT, country_iso_code TEXT, country_name TEXT, city_name TEXT,
    latitude REAL, longitude REAL, asn_number INTEGER, asn_organization TEXT,
    reported_to_abuseipdb INTEGER DEFAULT 0, abuseipdb_report_timestamp TEXT)";

/// Writes a database the way the Python tool did: its own `sqlite3` module, WAL, `isoformat()`
/// UTC timestamps with `+00:00`, headers through `json.dumps(dict(...))`, 0/1 report flags.
fn write_legacy_db(path: &Path, with_target_port: bool) {
    let ddl = if with_target_port {
        LEGACY_DDL.to_owned()
    } else {
        LEGACY_DDL.replace("target_port INTEGER, ", "")
    };
    let port_col = if with_target_port {
        "target_port, "
    } else {
        ""
    };
    let port_val = if with_target_port { "80, " } else { "" };
    let script = format!(
        r#"
import datetime, json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")
db.execute("""{ddl}""")
start = datetime.datetime(2024, 3, 1, 10, 15, 30, 123456, tzinfo=datetime.timezone.utc)
for i in range(5):
    ts = (start + datetime.timedelta(minutes=7 * i)).isoformat()
    headers = {{"Host": "sensor.example", "User-Agent": "zgrab/0.x", "Accept": "*/*"}}
    reported = 1 if i == 2 else 0
    db.execute(
        "INSERT INTO events (timestamp, client_ip, client_port, {port_col}http_method, http_path,"
        " http_query, user_agent, headers_json, response_status, bytes_sent, duration_s,"
        " error_message, country_iso_code, country_name, city_name, latitude, longitude,"
        " asn_number, asn_organization, reported_to_abuseipdb, abuseipdb_report_timestamp)"
        " VALUES (?, ?, ?, {port_val}?, ?, ?, ?, ?, 200, ?, ?, ?, 'NL', 'Netherlands', 'Amsterdam',"
        " 52.37, 4.89, 64496, 'Example AS', ?, ?)",
        (ts, "198.51.100.%d" % (i + 1), 40000 + i, "GET", "/wp-login.php", "a=%d" % i,
         "zgrab/0.x", json.dumps(headers), 120 * i, 1.5 * 80 * i,
         "ConnectionResetError" if i == 4 else None, reported, ts if reported else None),
    )
db.commit()
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 (the replaced tool's runtime) is needed to write its database");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every row of `events`, every column, ordered by id.
fn rows(path: &Path, columns: &str) -> Vec<Vec<Value>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT {columns} FROM events ORDER BY id"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn tarpit_cmd(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tarpit")
}

fn request(tarpit: &Tarpit) {
    let mut stream = tarpit.connect();
    stream
        .write_all(b"GET /new-row HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n")
        .unwrap();
    common::read_response(&mut stream);
}

fn adopt(with_target_port: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/tarpit_events.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    write_legacy_db(&db, with_target_port);
    let legacy_columns = if with_target_port {
        "id, timestamp, client_ip, client_port, target_port, http_method, http_path, http_query, \
         user_agent, headers_json, response_status, bytes_sent, duration_s, error_message, \
         country_iso_code, country_name, city_name, latitude, longitude, asn_number, \
         asn_organization, reported_to_abuseipdb, abuseipdb_report_timestamp"
    } else {
        "id, timestamp, client_ip, client_port, http_method, http_path, http_query, \
         user_agent, headers_json, response_status, bytes_sent, duration_s, error_message, \
         country_iso_code, country_name, city_name, latitude, longitude, asn_number, \
         asn_organization, reported_to_abuseipdb, abuseipdb_report_timestamp"
    };
    let before = rows(&db, legacy_columns);
    assert_eq!(before.len(), 5);
    let original_bytes = std::fs::read(&db).unwrap();

    // Offline commands refuse to read it before migration, and change nothing.
    let out = tarpit_cmd(dir.path(), &["stats"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tarpit migrate"), "{stderr}");
    assert_eq!(rows(&db, legacy_columns), before);

    let mut tarpit = Tarpit::start_in(dir.path(), common::FAST, 0);
    request(&tarpit);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        1,
    );
    tarpit.terminate(Duration::from_secs(10));
    let stderr = tarpit.stderr();
    let log_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pre-migration"))
        .collect();
    assert_eq!(log_lines.len(), 1, "one log line names the copy: {stderr}");

    // The copy is the original, byte for byte.
    let backup = dir.path().join("data/tarpit_events.db.pre-migration");
    assert_eq!(std::fs::read(&backup).unwrap(), original_bytes);
    assert_eq!(rows(&backup, legacy_columns), before);
    let conn = rusqlite::Connection::open(&backup).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0);

    // Old rows unchanged (ids and values), ours NULL on them; the new row comes after.
    let after = rows(&db, legacy_columns);
    assert_eq!(after.len(), 6);
    assert_eq!(&after[..5], &before[..]);
    let ours = rows(&db, "conn_id, end_reason, closed_at, target_port_source");
    for row in &ours[..5] {
        assert!(row.iter().all(|v| *v == Value::Null), "{row:?}");
    }
    assert_eq!(after[5][0], Value::Integer(6));
    assert_eq!(
        after[5][6 - usize::from(!with_target_port)],
        Value::Text("/new-row".into())
    );
    assert_ne!(ours[5][0], Value::Null);

    // A second start neither copies again nor touches the old rows.
    let mut again = Tarpit::start_in(dir.path(), common::FAST, 1);
    request(&again);
    again.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        2,
    );
    again.kill9();
    assert!(!again.stderr().contains("pre-migration"));
    assert_eq!(&rows(&db, legacy_columns)[..5], &before[..]);

    // Every offline command reads old and new rows together.
    let out = tarpit_cmd(dir.path(), &["stats", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["requests"], 7, "{stats}");
    let out = tarpit_cmd(dir.path(), &["ports"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tarpit_cmd(dir.path(), &["report", "--out", "r.html"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for format in ["csv", "jsonl", "parquet"] {
        let file = format!("e.{format}");
        let out = tarpit_cmd(dir.path(), &["export", "--format", format, "--out", &file]);
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let jsonl = std::fs::read_to_string(dir.path().join("e.jsonl")).unwrap();
    let exported: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 7);
    assert!(exported[..5].iter().all(|r| r["conn_id"].is_null()));
    assert_eq!(exported[2]["reported_to_abuseipdb"], 1);
    assert_eq!(exported[0]["timestamp"], "2024-03-01T10:15:30.123456+00:00");
}

#[test]
fn replaced_tools_database_with_target_port_is_adopted() {
    adopt(true);
}

#[test]
fn replaced_tools_database_without_target_port_is_adopted() {
    adopt(false);
}

#[test]
fn unknown_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/tarpit_events.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, when_seen TEXT, who TEXT);
         INSERT INTO events (when_seen, who) VALUES ('yesterday', 'someone');",
    )
    .unwrap();
    drop(conn);
    let original = std::fs::read(&db).unwrap();
    for args in [&["run", "--port", "0"][..], &["stats"], &["migrate"]] {
        let out = tarpit_cmd(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("tarpit_events.db"), "{args:?}: {stderr}");
        assert!(stderr.contains("when_seen"), "{args:?}: {stderr}");
        assert!(stderr.contains("left unchanged"), "{args:?}: {stderr}");
        assert_eq!(std::fs::read(&db).unwrap(), original, "{args:?}");
        assert!(!dir.path().join("data/tarpit_events.db-wal").exists());
        assert!(
            !dir.path()
                .join("data/tarpit_events.db.pre-migration")
                .exists()
        );
    }
}

#[test]
fn migrate_command_adopts_the_file_and_says_where_the_copy_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    write_legacy_db(&db, true);
    let out = tarpit_cmd(dir.path(), &["migrate", "--db", "old.db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("old.db.pre-migration"), "{stdout}");
    let out = tarpit_cmd(dir.path(), &["stats", "--db", "old.db", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["requests"], 5, "{stats}");
}

/// Rules get better; old data should too: `tarpit classify` tags the replaced tool's rows
/// (which have no conn_id), and `stats` counts them.
#[test]
fn classify_tags_the_replaced_tools_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    write_legacy_db(&db, false);
    let refused = tarpit_cmd(dir.path(), &["classify", "--db", "old.db"]);
    assert!(!refused.status.success(), "an unmigrated file is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("tarpit migrate"));
    assert!(
        tarpit_cmd(dir.path(), &["migrate", "--db", "old.db"])
            .status
            .success()
    );
    let out = tarpit_cmd(dir.path(), &["classify", "--db", "old.db"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 requests re-tagged"), "{stdout}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Then the OWASP CRS on every row (CI installs it; elsewhere the pass says why it is off).
    if std::env::var_os("TARPIT_E2E").is_some() {
        assert!(
            stdout.contains("5 requests evaluated with the OWASP CRS"),
            "{stdout}"
        );
        let scored: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE crs_score IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(scored, 5);
    } else {
        assert!(
            stdout.contains("evaluated with the OWASP CRS") || stdout.contains("CRS pass skipped"),
            "{stdout}"
        );
    }
    let tags: Vec<Vec<Value>> = conn
        .prepare("SELECT event_id, conn_id, tag FROM request_tags ORDER BY event_id, tag")
        .unwrap()
        .query_map([], |r| Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for id in 1..=5 {
        for tag in ["target:wordpress", "tool:zgrab"] {
            assert!(
                tags.contains(&vec![
                    Value::Integer(id),
                    Value::Null,
                    Value::Text(tag.into())
                ]),
                "row {id} lacks {tag}: {tags:?}"
            );
        }
    }
    let out = tarpit_cmd(dir.path(), &["stats", "--db", "old.db", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tools = stats["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == "tool")
        .unwrap();
    assert_eq!(tools["rows"][0], serde_json::json!(["zgrab", 5]), "{stats}");
}
