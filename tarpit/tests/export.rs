//! `tarpit export`: every format round-trips the database, and an anonymised export keeps no
//! address anywhere while preserving prefixes, consistently for one key.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::dataset::{self, CLIENTS, SENSOR, read_parquet};
use rusqlite::types::Value;

fn tarpit(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(args)
        .output()
        .expect("run tarpit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(db: &Path, out: &Path, format: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        "--db",
        db.to_str().unwrap(),
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let (ok, stderr) = tarpit(&args);
    assert!(ok, "export failed: {stderr}");
    stderr
}

/// A row as column name -> value, in the file's own terms made comparable: text formats
/// cannot tell NULL from "" (CSV) or carry BLOBs but as hex.
type Row = dataset::Row;

fn db_rows(db: &Path, since: Option<&str>) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT *, (SELECT group_concat(tag, ',') FROM (SELECT tag FROM request_tags
                         WHERE event_id = events.id ORDER BY tag)) AS tags
             FROM events WHERE timestamp >= ?1 ORDER BY id",
        )
        .unwrap();
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    stmt.query_map([since.unwrap_or("")], |r| {
        Ok(names
            .iter()
            .enumerate()
            // Shipping's change number is bookkeeping, never exported.
            .filter(|(_, n)| *n != "changed_seq")
            .map(|(i, n)| (n.clone(), r.get::<_, Value>(i).unwrap()))
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fixture(rows: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    dataset::synthetic_db(&db, rows);
    (dir, db)
}

#[test]
fn every_format_round_trips_every_column() {
    let (dir, db) = fixture(300);
    let expected = db_rows(&db, None);
    assert_eq!(expected.len(), 300);
    let columns = expected[0].len();

    let csv_path = dir.path().join("out.csv");
    let stderr = export(&db, &csv_path, "csv", &[]);
    assert!(stderr.contains("exported 300 rows"), "{stderr}");
    assert!(
        !stderr.contains("/300 rows"),
        "no progress bar off a terminal: {stderr}"
    );
    let csv_rows = read_csv(&csv_path);
    assert_eq!(csv_rows.len(), expected.len());
    for (got, want) in csv_rows.iter().zip(&expected) {
        assert_eq!(got.len(), columns);
        for (name, value) in want {
            assert_eq!(got[name], as_text(value), "csv column {name}");
        }
    }

    let jsonl_path = dir.path().join("out.jsonl");
    export(&db, &jsonl_path, "jsonl", &[]);
    let json_rows = read_jsonl(&jsonl_path);
    assert_eq!(json_rows.len(), expected.len());
    let first_line = std::fs::read_to_string(&jsonl_path).unwrap();
    assert!(
        first_line.starts_with("{\"id\":1,\"timestamp\":"),
        "table order"
    );
    for (got, want) in json_rows.iter().zip(&expected) {
        for (name, value) in want {
            let json = &got[name];
            match value {
                Value::Null => assert!(json.is_null(), "{name}"),
                Value::Integer(i) => assert_eq!(json.as_i64(), Some(*i), "{name}"),
                Value::Real(f) => assert_eq!(json.as_f64(), Some(*f), "{name}"),
                Value::Text(_) | Value::Blob(_) => {
                    assert_eq!(json.as_str(), Some(as_text(value).as_str()), "{name}")
                }
            }
        }
    }

    let parquet_path = dir.path().join("out.parquet");
    export(&db, &parquet_path, "parquet", &[]);
    let parquet_rows = read_parquet(&parquet_path);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "written under a temporary name, then renamed"
    );
    assert_eq!(
        parquet_rows, expected,
        "parquet keeps types, NULLs and BLOBs exactly"
    );
}

#[test]
fn since_limits_the_rows() {
    let (dir, db) = fixture(200);
    let cutoff = "2026-11-23T12:00:00.000Z";
    let expected = db_rows(&db, Some(cutoff));
    assert!(!expected.is_empty() && expected.len() < 200);
    let out = dir.path().join("since.jsonl");
    export(&db, &out, "jsonl", &["--since", "2026-11-23T12:00:00Z"]);
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), expected.len());
    assert!(
        rows.iter()
            .all(|r| r["timestamp"].as_str().unwrap() >= cutoff)
    );
}

fn write_key(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let path = dir.join(name);
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(seed))
        .collect();
    std::fs::write(&path, key).unwrap();
    path
}

fn common_prefix(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => panic!("families differ: {a} {b}"),
    }
}

#[test]
fn anonymised_exports_hide_every_address_and_keep_prefixes() {
    let (dir, db) = fixture(240);
    let key = write_key(dir.path(), "key", 1);
    let key_arg = key.to_str().unwrap();
    let original = db_rows(&db, None);

    let mut pseudonyms_by_format = Vec::new();
    for format in ["csv", "jsonl", "parquet"] {
        let out = dir.path().join(format!("anon.{format}"));
        export(&db, &out, format, &["--anonymize", "--key-file", key_arg]);
        // Every cell as text, whatever the format.
        let rows: Vec<HashMap<String, String>> = match format {
            "csv" => read_csv(&out),
            "jsonl" => read_jsonl(&out)
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|(k, v)| (k, v.as_str().map_or(v.to_string(), str::to_owned)))
                        .collect()
                })
                .collect(),
            _ => read_parquet(&out)
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|(k, v)| match v {
                            Value::Blob(b) => (k, String::from_utf8_lossy(&b).into_owned()),
                            other => (k, as_text(&other)),
                        })
                        .collect()
                })
                .collect(),
        };
        assert_eq!(rows.len(), original.len());
        for row in &rows {
            assert!(!row.contains_key("reported_to_abuseipdb"), "{format}");
            assert!(!row.contains_key("abuseipdb_report_timestamp"), "{format}");
            for (column, cell) in row {
                // BLOBs are hex in the text formats: decode them before searching.
                let decoded = if column == "body_preview" && format != "parquet" {
                    let bytes: Vec<u8> = (0..cell.len() / 2)
                        .map(|i| u8::from_str_radix(&cell[2 * i..2 * i + 2], 16).unwrap())
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    cell.clone()
                };
                for address in dataset::all_addresses() {
                    assert!(
                        !decoded.contains(address),
                        "{format}: {address} survived in {column}: {decoded}"
                    );
                }
            }
        }
        let pseudonyms: Vec<(String, String)> = original
            .iter()
            .zip(&rows)
            .map(|(o, a)| (as_text(&o["client_ip"]), a["client_ip"].clone()))
            .collect();
        pseudonyms_by_format.push(pseudonyms);
        // The rest of the row is untouched.
        for (o, a) in original.iter().zip(&rows) {
            assert_eq!(as_text(&o["http_method"]), a["http_method"]);
            assert_eq!(as_text(&o["timestamp"]), a["timestamp"]);
            assert_eq!(as_text(&o["asn_number"]), a["asn_number"]);
        }
        // The sensor's address is replaced the same way in its column and in the Host header.
        let sensor = &rows[0]["local_ip"];
        assert!(
            rows[0]["headers_json"].contains(&format!("{sensor}:80")),
            "{format}"
        );
    }
    assert!(
        pseudonyms_by_format.windows(2).all(|w| w[0] == w[1]),
        "one key, one mapping, whatever the format"
    );

    // One pseudonym per address, and prefixes preserved between every pair.
    let mapping: HashMap<String, String> = pseudonyms_by_format[0].iter().cloned().collect();
    assert_eq!(mapping.len(), CLIENTS.len());
    for a in CLIENTS {
        for b in CLIENTS {
            let (a_ip, b_ip): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            if a_ip.is_ipv4() != b_ip.is_ipv4() {
                continue;
            }
            let (pa, pb): (IpAddr, IpAddr) =
                (mapping[*a].parse().unwrap(), mapping[*b].parse().unwrap());
            assert_eq!(common_prefix(pa, pb), common_prefix(a_ip, b_ip), "{a} {b}");
        }
    }

    // Exporting again with the same key gives the same file; another key, other pseudonyms.
    let again = dir.path().join("again.csv");
    export(&db, &again, "csv", &["--anonymize", "--key-file", key_arg]);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(dir.path().join("anon.csv")).unwrap()
    );
    let other_key = write_key(dir.path(), "other", 2);
    let other = dir.path().join("other.csv");
    export(
        &db,
        &other,
        "csv",
        &["--anonymize", "--key-file", other_key.to_str().unwrap()],
    );
    let other_rows = read_csv(&other);
    assert_ne!(other_rows[0]["client_ip"], mapping[CLIENTS[0]]);
    assert_ne!(other_rows[0]["local_ip"], SENSOR);
}

#[test]
fn bad_arguments_are_named() {
    let (dir, db) = fixture(5);
    let out = dir.path().join("x.csv");
    let db_arg = db.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let base = [
        "export", "--db", db_arg, "--format", "csv", "--out", out_arg,
    ];

    let (ok, stderr) = tarpit(&[&base[..], &["--anonymize"]].concat());
    assert!(!ok && stderr.contains("--key-file"), "{stderr}");

    let short = dir.path().join("short.key");
    std::fs::write(&short, "0123").unwrap();
    let (ok, stderr) = tarpit(
        &[
            &base[..],
            &["--anonymize", "--key-file", short.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(
        !ok && stderr.contains("short.key") && stderr.contains("64 hexadecimal"),
        "{stderr}"
    );

    let (ok, stderr) = tarpit(&[
        "export",
        "--db",
        "/nonexistent.db",
        "--format",
        "csv",
        "--out",
        out_arg,
    ]);
    assert!(
        !ok && stderr.contains("no database at /nonexistent.db"),
        "{stderr}"
    );

    let (ok, stderr) = tarpit(&[
        "export",
        "--db",
        db_arg,
        "--format",
        "csv",
        "--out",
        "/nonexistent-dir/x.csv",
    ]);
    assert!(
        !ok && stderr.contains("writing /nonexistent-dir/x.csv"),
        "{stderr}"
    );
}

/// Rows the real server wrote: the connecting address and one in X-Forwarded-For (recorded,
/// not believed, from an untrusted peer) are both replaced.
#[test]
fn an_anonymised_export_of_live_traffic_keeps_no_address() {
    use std::io::Write;
    let server = common::Tarpit::start(common::FAST);
    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /probe?from=203.0.113.77 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              X-Forwarded-For: 198.18.0.99\r\n\r\n",
        )
        .unwrap();
    let _ = common::read_response(&mut stream);
    server.wait_count(
        "SELECT COUNT(*) FROM events WHERE duration_s IS NOT NULL",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "key", 9);
    let out = dir.path().join("live.jsonl");
    export(
        &server.dir.join("data/tarpit_events.db"),
        &out,
        "jsonl",
        &["--anonymize", "--key-file", key.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("/probe"), "{text}");
    for address in ["127.0.0.1", "203.0.113.77", "198.18.0.99"] {
        assert!(!text.contains(address), "{address} survived: {text}");
    }
}

/// A scanner's formula in a header must not run when the CSV is opened in a spreadsheet;
/// `--csv-raw`, JSON lines and Parquet keep it exactly.
#[test]
fn csv_cells_that_spreadsheets_would_run_are_neutralised_by_default() {
    use std::io::Write;
    let tarpit = common::Tarpit::start(common::FAST);
    let formulas = [
        "=cmd|' /C calc'!A0",
        "+SUM(1,1)",
        "-2+3",
        "@SUM(A1)",
        "\t=1+1",
    ];
    for (i, formula) in formulas.iter().enumerate() {
        let mut stream = tarpit.connect();
        stream
            .write_all(
                format!("GET /f{i} HTTP/1.1\r\nHost: s\r\nUser-Agent: {formula}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        common::read_response(&mut stream);
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        formulas.len() as i64,
    );
    let db = tarpit.dir.join("data/tarpit_events.db");
    let stored: Vec<String> = db_rows(&db, None)
        .iter()
        .map(|r| as_text(&r["user_agent"]))
        .collect();
    let safe = tarpit.dir.join("safe.csv");
    export(&db, &safe, "csv", &[]);
    let raw = tarpit.dir.join("raw.csv");
    export(&db, &raw, "csv", &["--csv-raw"]);
    let jsonl = tarpit.dir.join("all.jsonl");
    export(&db, &jsonl, "jsonl", &[]);
    let safe_rows = read_csv(&safe);
    let raw_rows = read_csv(&raw);
    let json_rows = read_jsonl(&jsonl);
    for (i, ua) in stored.iter().enumerate() {
        assert!(
            ua.starts_with(['=', '+', '-', '@', '\t']),
            "the parser keeps the value: {ua:?}"
        );
        assert_eq!(safe_rows[i]["user_agent"], format!("'{ua}"));
        assert_eq!(&raw_rows[i]["user_agent"], ua);
        assert_eq!(json_rows[i]["user_agent"].as_str(), Some(ua.as_str()));
        // Numbers are never prefixed.
        assert!(!safe_rows[i]["id"].starts_with('\''));
    }
}
