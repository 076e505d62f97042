//! One request as the central store receives it: a JSON object per `events` row, with the
//! sensor's id and labels, the tags and the version the store keeps the latest of.
//!
//! The shipped columns are listed here by name ([`COLUMNS`]) with the ClickHouse type each is
//! sent as; `deploy/clickhouse/requests.sql` declares the same (a test compares them). Values are
//! converted leniently: SQLite stores whatever it was given, and the replaced tool's rows may
//! hold text where a number belongs. A value that does not fit its column is sent as NULL, so
//! one odd row can never stop a sensor's shipping; the local row keeps the original.

use rusqlite::types::ValueRef;
use serde_json::{Map, Value};

/// How a column's SQLite value is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer: `Nullable(Int64)`.
    Int,
    /// A real number: `Nullable(Float64)`.
    Real,
    /// Text: `Nullable(String)`.
    Text,
    /// Bytes (a body preview), hex encoded: `Nullable(String)`, `unhex()` gives the bytes.
    Hex,
    /// A timestamp in text (ours RFC 3339, the replaced tool's `isoformat()`), sent as Unix
    /// seconds: `Nullable(DateTime('UTC'))`.
    Time,
    /// 0 or 1: `UInt8`.
    Flag,
}

impl Kind {
    /// The ClickHouse type the column has in `deploy/clickhouse/requests.sql`.
    pub fn clickhouse_type(self) -> &'static str {
        match self {
            Kind::Int => "Nullable(Int64)",
            Kind::Real => "Nullable(Float64)",
            Kind::Text | Kind::Hex => "Nullable(String)",
            Kind::Time => "Nullable(DateTime('UTC'))",
            Kind::Flag => "UInt8",
        }
    }
}

/// The `events` columns shipped as they are (the key, time, tags and sensor columns are built
/// apart, see [`KEY_COLUMNS`]). A hex column is shipped under its name with `_hex` appended.
pub const COLUMNS: &[(&str, Kind)] = &[
    ("client_ip", Kind::Text),
    ("client_port", Kind::Int),
    ("target_port", Kind::Int),
    ("http_method", Kind::Text),
    ("http_path", Kind::Text),
    ("http_query", Kind::Text),
    ("user_agent", Kind::Text),
    ("headers_json", Kind::Text),
    ("response_status", Kind::Int),
    ("bytes_sent", Kind::Int),
    ("duration_s", Kind::Real),
    ("error_message", Kind::Text),
    ("country_iso_code", Kind::Text),
    ("country_name", Kind::Text),
    ("city_name", Kind::Text),
    ("latitude", Kind::Real),
    ("longitude", Kind::Real),
    ("asn_number", Kind::Int),
    ("asn_organization", Kind::Text),
    ("reported_to_abuseipdb", Kind::Flag),
    ("abuseipdb_report_timestamp", Kind::Time),
    ("http_version", Kind::Text),
    ("client_ip_source", Kind::Text),
    ("peer_ip", Kind::Text),
    ("peer_port", Kind::Int),
    ("local_ip", Kind::Text),
    ("local_port", Kind::Int),
    ("target_port_source", Kind::Text),
    ("target_port_ebpf", Kind::Int),
    ("target_port_original_dst", Kind::Int),
    ("target_port_header", Kind::Int),
    ("ebpf_lookup", Kind::Text),
    ("head_size", Kind::Int),
    ("raw_preview", Kind::Text),
    ("body_preview", Kind::Hex),
    ("body_sha256", Kind::Text),
    ("body_length", Kind::Int),
    ("end_reason", Kind::Text),
    ("closed_at", Kind::Time),
    ("syn_ttl", Kind::Int),
    ("syn_initial_ttl", Kind::Int),
    ("syn_df", Kind::Int),
    ("syn_window", Kind::Int),
    ("syn_mss", Kind::Int),
    ("syn_wscale", Kind::Int),
    ("syn_options", Kind::Text),
    ("syn_fp", Kind::Text),
    ("tls_version", Kind::Text),
    ("tls_sni", Kind::Text),
    ("tls_alpn", Kind::Text),
    ("ja4", Kind::Text),
    ("header_order", Kind::Text),
    ("header_order_hash", Kind::Text),
    ("response_mode", Kind::Text),
    ("giveup_limit_s", Kind::Real),
    ("giveup_basis", Kind::Text),
    ("planned_end_s", Kind::Real),
    ("client_fin_s", Kind::Real),
    ("crs_score", Kind::Int),
    // The sensor's actor of the row (`crate::sink::sqlite::actors`); re-shipped when a merge
    // re-points it. The fleet's actors are rebuilt from the shipped sightings.
    ("actor_id", Kind::Int),
];

/// The columns built apart from [`COLUMNS`], with their ClickHouse types, in the order of the
/// table's key and then the rest.
pub const KEY_COLUMNS: &[(&str, &str)] = &[
    // The row's sensor (this sensor's id for rows written before sensors had ids).
    ("sensor_id", "String"),
    // The connection; 0 for the replaced tool's rows, which had none.
    ("conn_id", "UInt64"),
    // The request within it; the row id for the replaced tool's rows.
    ("request_seq", "UInt64"),
    // The row's `changed_seq` (0 for rows written before shipping existed): the store keeps the
    // highest.
    ("version", "UInt64"),
    // The row id in the sensor's SQLite file.
    ("event_id", "UInt64"),
    // When the request arrived, in seconds (the table's partition key) and in milliseconds.
    ("timestamp", "DateTime('UTC')"),
    ("timestamp_ms", "Int64"),
    // The classification's tags.
    ("tags", "Array(String)"),
    // The sensor's `[sensor] labels`, names and values in the same order.
    ("sensor_label_names", "Array(String)"),
    ("sensor_label_values", "Array(String)"),
];

/// `events` columns that are read for [`KEY_COLUMNS`] or deliberately not shipped.
pub const NOT_SHIPPED_AS_IS: &[&str] = &[
    "id",
    "timestamp",
    "conn_id",
    "request_seq",
    "sensor_id",
    "changed_seq",
];

/// Every column a shipped row has, as the store's table must have them.
pub fn shipped_columns() -> Vec<String> {
    let key = KEY_COLUMNS.iter().map(|(name, _)| (*name).to_owned());
    let data = COLUMNS.iter().map(|(name, kind)| match kind {
        Kind::Hex => format!("{name}_hex"),
        _ => (*name).to_owned(),
    });
    key.chain(data).collect()
}

/// Where [`select_list`] puts the row id.
pub const ID: usize = COLUMNS.len();
/// Where [`select_list`] puts `conn_id`.
pub const CONN_ID: usize = COLUMNS.len() + 2;
/// Where [`select_list`] puts `changed_seq`.
pub const CHANGED_SEQ: usize = COLUMNS.len() + 5;
/// Where [`select_list`] puts `end_reason`.
pub const END_REASON: usize = 37;

/// The SELECT list reading one row: the [`COLUMNS`] first, then the key columns' sources.
pub fn select_list() -> String {
    let mut list: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
    list.extend(NOT_SHIPPED_AS_IS);
    list.join(", ")
}

/// This sensor's id and labels, stamped on every row.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// `[sensor] id`.
    pub sensor_id: String,
    /// `[sensor] labels` names, sorted.
    pub label_names: Vec<String>,
    /// The values, in the same order.
    pub label_values: Vec<String>,
}

/// Builds the JSON object for one row read with [`select_list`], with its tags.
pub fn to_json(
    row: &rusqlite::Row<'_>,
    tags: Vec<String>,
    stamp: &Stamp,
) -> rusqlite::Result<Map<String, Value>> {
    let mut object = Map::with_capacity(COLUMNS.len() + KEY_COLUMNS.len());
    let base = COLUMNS.len();
    let id = int(row.get_ref(base)?).unwrap_or(0);
    let timestamp = match row.get_ref(base + 1)? {
        ValueRef::Text(text) => parse_time(&String::from_utf8_lossy(text)),
        _ => None,
    };
    let conn_id = int(row.get_ref(base + 2)?);
    let request_seq = int(row.get_ref(base + 3)?);
    let sensor = text(row.get_ref(base + 4)?).unwrap_or_else(|| stamp.sensor_id.clone());
    let version = int(row.get_ref(base + 5)?).unwrap_or(0);
    let (conn_id, request_seq) = match (conn_id, request_seq) {
        (Some(conn), Some(seq)) => (conn, seq),
        _ => (0, id), // the replaced tool's row
    };
    object.insert("sensor_id".into(), sensor.into());
    object.insert("conn_id".into(), conn_id.max(0).into());
    object.insert("request_seq".into(), request_seq.max(0).into());
    object.insert("version".into(), version.max(0).into());
    object.insert("event_id".into(), id.max(0).into());
    let millis = timestamp.unwrap_or(0);
    object.insert("timestamp".into(), millis.div_euclid(1000).max(0).into());
    object.insert("timestamp_ms".into(), millis.into());
    object.insert("tags".into(), tags.into());
    object.insert(
        "sensor_label_names".into(),
        stamp.label_names.clone().into(),
    );
    object.insert(
        "sensor_label_values".into(),
        stamp.label_values.clone().into(),
    );
    for (index, (name, kind)) in COLUMNS.iter().enumerate() {
        let value = row.get_ref(index)?;
        let json = match kind {
            Kind::Int => int(value).map(Value::from),
            Kind::Real => real(value).map(Value::from),
            Kind::Text => text(value).map(Value::from),
            Kind::Hex => match value {
                ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Some(hex::encode(bytes).into()),
                _ => None,
            },
            Kind::Time => text(value)
                .and_then(|t| parse_time(&t))
                .map(|ms| Value::from(ms.div_euclid(1000).max(0))),
            Kind::Flag => Some(Value::from(u8::from(int(value).unwrap_or(0) != 0))),
        };
        let key = match kind {
            Kind::Hex => format!("{name}_hex"),
            _ => (*name).to_owned(),
        };
        object.insert(key, json.unwrap_or(Value::Null));
    }
    Ok(object)
}

fn int(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => {
            Some(f as i64)
        }
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn real(value: ValueRef<'_>) -> Option<f64> {
    let number = match value {
        ValueRef::Integer(i) => i as f64,
        ValueRef::Real(f) => f,
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok()?,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

fn text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Null => None,
    }
}

/// Milliseconds since the Unix epoch of a stored timestamp: ours
/// (`2026-11-30T00:12:34.567Z`) or the replaced tool's Python `isoformat()`
/// (`2024-03-01T10:15:30.123456+00:00`, or without an offset, read as UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (seconds_part, rest) = (text.get(..19)?, &text[19..]);
    let base = humantime::parse_rfc3339_weak(&seconds_part.replacen(' ', "T", 1)).ok()?;
    let mut millis = match base.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    };
    let mut rest = rest;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let first3 = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis += first3.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hhmm = rest[1..].replace(':', "");
            if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i64 = hhmm[..2].parse().ok()?;
            let minutes: i64 = hhmm[2..].parse().ok()?;
            sign * (hours * 60 + minutes)
        }
    };
    Some(millis - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_stored_text_parses_or_is_refused_without_a_panic() {
        let base = "2026-11-29T10:00:00";
        for tail in [
            "+1é1",
            "+é:11",
            "-1\u{300}1",
            ".é",
            ".1é",
            "+01:0é",
            "é",
            "+",
            "+0100000",
            "Zé",
        ] {
            assert_eq!(parse_time(&format!("{base}{tail}")), None, "{tail}");
        }
        for text in [
            "",
            "é",
            "2026-11-29Té0:00:00",
            "２０２６-11-29T10:00:00",
            "\u{10ffff}",
        ] {
            assert_eq!(parse_time(text), None, "{text}");
        }
        assert!(parse_time(&format!("{base}+01:00")).is_some());
    }

    #[test]
    fn times_of_both_tools_parse_to_the_same_instant() {
        let ours = parse_time("2024-03-01T10:15:30.123Z").unwrap();
        assert_eq!(ours, 1_709_288_130_123);
        assert_eq!(parse_time("2024-03-01T10:15:30.123456+00:00"), Some(ours));
        assert_eq!(parse_time("2024-03-01T11:15:30.123+01:00"), Some(ours));
        assert_eq!(parse_time("2024-03-01T05:15:30.123-0500"), Some(ours));
        assert_eq!(parse_time("2024-03-01 10:15:30.123"), Some(ours));
        assert_eq!(parse_time("2024-03-01T10:15:30"), Some(ours - 123));
        assert_eq!(parse_time("2024-03-01T10:15:30.1Z"), Some(ours - 23));
        for bad in [
            "",
            "yesterday",
            "2024-03-01T10:15:30 junk",
            "2024-13-01T10:15:30",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn odd_values_become_null_or_their_number_never_an_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let (i, r, t) = conn
            .query_row(
                "SELECT '443', 'x', 2.0 UNION ALL SELECT 1, 1, 1",
                [],
                |row| {
                    Ok((
                        int(row.get_ref(0)?),
                        real(row.get_ref(1)?),
                        int(row.get_ref(2)?),
                    ))
                },
            )
            .unwrap();
        assert_eq!((i, r, t), (Some(443), None, Some(2)));
    }

    #[test]
    fn the_repository_ddl_declares_every_shipped_column_with_its_type() {
        let ddl = include_str!("../../../deploy/clickhouse/requests.sql");
        let body = &ddl[ddl.find("CREATE TABLE").unwrap()..ddl.find(") ENGINE").unwrap()];
        let declared: Vec<(String, String)> = body
            .lines()
            .skip(1)
            .filter_map(|line| {
                let (name, kind) = line.trim().trim_end_matches(',').split_once(' ')?;
                Some((name.to_owned(), kind.to_owned()))
            })
            .collect();
        let mut expected: Vec<(String, String)> = KEY_COLUMNS
            .iter()
            .map(|(name, kind)| ((*name).to_owned(), (*kind).to_owned()))
            .collect();
        expected.extend(COLUMNS.iter().map(|(name, kind)| {
            let name = match kind {
                Kind::Hex => format!("{name}_hex"),
                _ => (*name).to_owned(),
            };
            (name, kind.clickhouse_type().to_owned())
        }));
        assert_eq!(declared, expected);
        let names: Vec<String> = expected.into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, shipped_columns());
    }

    #[test]
    fn every_events_column_is_shipped_or_listed_as_built_apart() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
        for column in &crate::db::events_columns(&conn).unwrap() {
            let shipped = COLUMNS.iter().any(|(name, _)| name == column)
                || NOT_SHIPPED_AS_IS.contains(&column.as_str());
            assert!(shipped, "events.{column} is neither shipped nor listed");
        }
        assert_eq!(COLUMNS[END_REASON].0, "end_reason");
        assert_eq!(NOT_SHIPPED_AS_IS[ID - COLUMNS.len()], "id");
        assert_eq!(NOT_SHIPPED_AS_IS[CONN_ID - COLUMNS.len()], "conn_id");
        assert_eq!(
            NOT_SHIPPED_AS_IS[CHANGED_SEQ - COLUMNS.len()],
            "changed_seq"
        );
        // And every listed column exists (the SELECT would fail otherwise).
        conn.prepare(&format!("SELECT {} FROM events", select_list()))
            .unwrap();
    }
}
