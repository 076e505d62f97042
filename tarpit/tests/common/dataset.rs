//! A synthetic events database for the analysis commands (`report`, `export`): varied and
//! deterministic, with addresses hidden in every place a real one can be (forwarding and Host
//! headers, paths, queries, raw and body previews), IPv4 and IPv6, NULLs, reported rows and
//! GeoIP coordinates.

use std::path::Path;

/// Addresses the rows come from (client_ip), in /24 and /48 groups so prefixes matter.
pub const CLIENTS: &[&str] = &[
    "198.51.100.7",
    "198.51.100.200",
    "198.51.7.1",
    "203.0.113.9",
    "81.2.69.142",
    "2001:db8:1::5",
    "2001:db8:1::6",
    "2001:db8:2::1",
];
/// The sensor's own address (local_ip, Host headers).
pub const SENSOR: &str = "192.0.2.10";
/// An address that only appears inside X-Forwarded-For.
pub const FORWARDED: &str = "100.64.3.4";
/// One that only appears in the body preview.
pub const IN_BODY: &str = "172.16.5.6";
/// One that only appears in the query string.
pub const IN_QUERY: &str = "10.20.30.40";
/// A path no report may render as markup.
pub const HOSTILE_PATH: &str = "/<script>alert('xss')</script>";

/// Every address the dataset holds.
pub fn all_addresses() -> Vec<&'static str> {
    let mut all = CLIENTS.to_vec();
    all.extend([SENSOR, FORWARDED, IN_BODY, IN_QUERY]);
    all
}

/// (country, latitude, longitude) cycled through the rows.
const PLACES: &[(&str, f64, f64)] = &[
    ("US", 37.75, -97.82),
    ("DE", 51.3, 9.49),
    ("CN", 34.77, 113.72),
    ("BR", -23.55, -46.63),
    ("RU", 55.75, 37.62),
    ("AU", -33.87, 151.21),
    ("NL", 52.37, 4.89),
    ("IN", 19.07, 72.88),
];

const PATHS: &[&str] = &["/", "/.env", "/wp-login.php", "/cgi-bin/luci", HOSTILE_PATH];

/// The tools the rows are tagged with (their User-Agents stay `scanner/N`, which no rule knows).
const TOOLS: &[&str] = &[
    "tool:zgrab",
    "tool:curl",
    "tool:masscan",
    "tool:go-http-client",
    "tool:nmap",
    "tool:python-requests",
    "tool:sqlmap",
];

/// CVEs some rows are tagged with.
const CVES: &[&str] = &[
    "cve:CVE-2021-44228",
    "cve:CVE-2017-9841",
    "cve:CVE-2021-41773",
    "cve:CVE-2022-1388",
];
const PORTS: &[i64] = &[80, 8080, 8888, 443, 23];

/// Creates `path` with `rows` requests spread over the two days before 2026-11-24T12:00Z.
pub fn synthetic_db(path: &Path, rows: usize) {
    let conn = tarpit::db::open(path).expect("create the database");
    let classifier = tarpit::classify::Classifier::load(None).expect("the built-in rules");
    let start = humantime::parse_rfc3339("2026-11-22T12:00:00Z").unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..rows {
        let client = CLIENTS[i % CLIENTS.len()];
        let (country, lat, lon) = PLACES[i % PLACES.len()];
        let time = start + std::time::Duration::from_secs((i as u64 * 7919) % (2 * 86_400));
        let timestamp = humantime::format_rfc3339_millis(time).to_string();
        let headers = serde_json::json!({
            "host": format!("{SENSOR}:80"),
            "user-agent": format!("scanner/{}", i % 7),
            "x-forwarded-for": format!("{FORWARDED}, {client}"),
        })
        .to_string();
        let body = format!("target={IN_BODY}&n={i}\u{0}\u{1}").into_bytes();
        let reported = i % 5 == 0;
        tx.execute(
            "INSERT INTO events (timestamp, client_ip, client_port, target_port, http_method,
               http_path, http_query, user_agent, headers_json, response_status, bytes_sent,
               duration_s, error_message, country_iso_code, country_name, city_name, latitude,
               longitude, asn_number, asn_organization, reported_to_abuseipdb,
               abuseipdb_report_timestamp, conn_id, request_seq, http_version, client_ip_source,
               peer_ip, peer_port, local_ip, local_port, target_port_source, raw_preview,
               body_preview, body_sha256, body_length, end_reason, closed_at, ebpf_lookup)
             VALUES (?1, ?2, ?3, ?4, 'GET', ?5, ?6, ?7, ?8, 200, ?9, ?10, ?11, ?12, NULL, ?13,
               ?14, ?15, ?16, ?17, ?18, ?19, ?20, 1, 'HTTP/1.1', 'peer', ?2, ?3, ?21, 80,
               'local', ?22, ?23, 'ab', ?24, ?25, ?1, 'translated')",
            rusqlite::params![
                timestamp,
                client,
                40_000 + i as i64,
                PORTS[i % PORTS.len()],
                PATHS[i % PATHS.len()],
                (i % 3 == 0).then(|| format!("url=http://{IN_QUERY}/x")),
                format!("scanner/{}", i % 7),
                headers,
                i as i64 % 1200,
                (i % 50) as f64 * 37.5,
                (i % 11 == 0).then_some("not an HTTP request"),
                country,
                (i % 4 != 0).then_some("Somewhere"),
                lat + (i % 3) as f64,
                lon,
                64_496 + (i % 4) as i64,
                format!("Example Net {}", i % 4),
                reported,
                reported.then(|| timestamp.clone()),
                i as i64,
                SENSOR,
                (i % 11 == 0).then(|| format!("\\x16\\x03 from {client}")),
                body,
                20 + i as i64,
                ["complete", "client_closed", "peer_gone"][i % 3],
            ],
        )
        .expect("insert a row");
        // Tags: what the built-in rules give the row's path and query, a tool by row, and a
        // CVE on some rows.
        let id = tx.last_insert_rowid();
        let query = (i % 3 == 0).then(|| format!("url=http://{IN_QUERY}/x"));
        let view = tarpit::classify::RequestView {
            method: Some("GET"),
            path: Some(PATHS[i % PATHS.len()]),
            query: query.as_deref(),
            ..Default::default()
        };
        let mut tags: Vec<String> = classifier
            .classify(&view)
            .iter()
            .map(|t| t.to_string())
            .filter(|t| !t.starts_with("tool:"))
            .collect();
        tags.push(TOOLS[i % TOOLS.len()].to_owned());
        if i % 4 == 0 {
            tags.push(CVES[(i / 4) % CVES.len()].to_owned());
        }
        for tag in &tags {
            tx.execute(
                "INSERT INTO request_tags (event_id, conn_id, request_seq, tag)
                 VALUES (?1, ?2, 1, ?3)",
                rusqlite::params![id, i as i64, tag],
            )
            .expect("insert a tag");
        }
    }
    tx.commit().unwrap();
}

/// A row as column name -> value.
pub type Row = std::collections::HashMap<String, rusqlite::types::Value>;

/// Every cell of a Parquet file, as SQLite values (strings as text, binary as BLOB).
pub fn read_parquet(path: &Path) -> Vec<Row> {
    use arrow_array::{Array, BinaryArray, Float64Array, Int64Array, StringArray};
    use rusqlite::types::Value;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            let mut row = Row::new();
            for (c, field) in schema.fields().iter().enumerate() {
                let column = batch.column(c);
                let value = if column.is_null(i) {
                    Value::Null
                } else if let Some(a) = column.as_any().downcast_ref::<Int64Array>() {
                    Value::Integer(a.value(i))
                } else if let Some(a) = column.as_any().downcast_ref::<Float64Array>() {
                    Value::Real(a.value(i))
                } else if let Some(a) = column.as_any().downcast_ref::<StringArray>() {
                    Value::Text(a.value(i).to_owned())
                } else if let Some(a) = column.as_any().downcast_ref::<BinaryArray>() {
                    Value::Blob(a.value(i).to_vec())
                } else {
                    panic!("unexpected type of {}", field.name())
                };
                row.insert(field.name().clone(), value);
            }
            rows.push(row);
        }
    }
    rows
}
