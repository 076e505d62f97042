//! `tarpit stats`: what the tarpit caught, from the SQLite database: totals, time held, and the
//! top source addresses, ASNs, countries, target ports, paths, User-Agents, methods and end
//! reasons, plus hourly counts. Text tables or JSON; read-only.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// How many rows each "top" table shows.
const TOP: usize = 10;

/// The report.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Only requests at or after this time (RFC 3339), when limited.
    pub since: Option<String>,
    /// Requests (rows of `events`).
    pub requests: u64,
    /// Distinct client addresses.
    pub clients: u64,
    /// Payload bytes dripped.
    pub bytes_sent: u64,
    /// Seconds clients were held, summed over requests.
    pub seconds_held: f64,
    /// First and last request timestamps.
    pub first: Option<String>,
    /// Last request timestamp.
    pub last: Option<String>,
    /// Top tables, in display order.
    pub top: Vec<TopTable>,
    /// Requests per hour (`YYYY-MM-DDTHH`, UTC).
    pub hourly: Vec<(String, u64)>,
}

/// One "top N" table.
#[derive(Debug, Serialize)]
pub struct TopTable {
    /// What is counted.
    pub title: &'static str,
    /// Value and request count, most frequent first.
    pub rows: Vec<(String, u64)>,
}

/// (title, SQL expression) of each top table.
const TOPS: &[(&str, &str)] = &[
    ("source address", "client_ip"),
    (
        "ASN",
        "CASE WHEN asn_number IS NULL THEN NULL ELSE 'AS' || asn_number || ' ' || IFNULL(asn_organization, '') END",
    ),
    ("country", "country_iso_code"),
    ("target port", "target_port"),
    ("path", "http_path"),
    ("User-Agent", "user_agent"),
    ("method", "http_method"),
    ("end reason", "end_reason"),
];

/// Reads the statistics from the database at `path` (read-only).
pub fn build(path: &Path, since: Option<String>) -> rusqlite::Result<Stats> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let cutoff = since.clone().unwrap_or_default();
    let from = crate::db::events_from(since.is_some());
    let (requests, clients, bytes_sent, seconds_held, first, last) = conn.query_row(
        &format!(
            "SELECT COUNT(*), COUNT(DISTINCT client_ip), IFNULL(SUM(bytes_sent), 0),
                IFNULL(SUM(duration_s), 0), MIN(timestamp), MAX(timestamp)
         FROM {from} WHERE timestamp >= ?1"
        ),
        [&cutoff],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, f64>(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )?;
    let mut top = Vec::with_capacity(TOPS.len());
    for (title, expr) in TOPS {
        let mut stmt = conn.prepare(&format!(
            "SELECT {expr} AS v, COUNT(*) AS n FROM {from}
             WHERE timestamp >= ?1 AND v IS NOT NULL
             GROUP BY v ORDER BY n DESC, v LIMIT {TOP}"
        ))?;
        let rows = stmt
            .query_map([&cutoff], |r| {
                let value: rusqlite::types::Value = r.get(0)?;
                let text = match value {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    _ => String::new(),
                };
                Ok((text, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?;
        top.push(TopTable { title, rows });
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT substr(timestamp, 1, 13) AS hour, COUNT(*) FROM {from}
         WHERE timestamp >= ?1 GROUP BY hour ORDER BY hour"
    ))?;
    let hourly = stmt
        .query_map([&cutoff], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Stats {
        since,
        requests,
        clients,
        bytes_sent,
        seconds_held,
        first,
        last,
        top,
        hourly,
    })
}

/// Cuts a value for a table cell (User-Agents and paths can be long), on a char boundary.
fn cell(text: &str, width: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= width {
        return clean;
    }
    let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Stats {
    /// Aligned text tables.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let since = crate::db::period_label(self.since.as_deref());
        let _ = writeln!(out, "tarpit statistics ({since})\n");
        let _ = writeln!(out, "{:<22} {}", "requests", self.requests);
        let _ = writeln!(out, "{:<22} {}", "distinct clients", self.clients);
        let _ = writeln!(out, "{:<22} {}", "bytes dripped", self.bytes_sent);
        let _ = writeln!(
            out,
            "{:<22} {:.1} hours",
            "time held",
            self.seconds_held / 3600.0
        );
        if let (Some(first), Some(last)) = (&self.first, &self.last) {
            let _ = writeln!(out, "{:<22} {first} .. {last}", "period");
        }
        for table in &self.top {
            let _ = writeln!(out, "\ntop {}", table.title);
            if table.rows.is_empty() {
                let _ = writeln!(out, "  (none)");
            }
            for (value, count) in &table.rows {
                let _ = writeln!(out, "  {:>10}  {}", count, cell(value, 70));
            }
        }
        let _ = writeln!(out, "\nrequests per hour (UTC)");
        for (hour, count) in &self.hourly {
            let _ = writeln!(out, "  {hour}:00  {count:>10}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_totals_tops_and_hours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        let rows = [
            (
                "2026-11-24T10:01:00.000Z",
                "81.2.69.142",
                80,
                "/wp-login.php",
                "zgrab",
                Some(1221),
            ),
            (
                "2026-11-24T10:30:00.000Z",
                "81.2.69.142",
                80,
                "/.env",
                "zgrab",
                Some(1221),
            ),
            (
                "2026-11-24T11:00:00.000Z",
                "1.2.3.4",
                8080,
                "/.env",
                "curl",
                None,
            ),
            (
                "2020-01-01T00:00:00.000Z",
                "9.9.9.9",
                22,
                "/old",
                "old",
                None,
            ),
        ];
        for (i, (ts, ip, port, path, ua, asn)) in rows.iter().enumerate() {
            conn.execute(
                "INSERT INTO events (timestamp, client_ip, target_port, http_path, user_agent,
                   http_method, bytes_sent, duration_s, asn_number, asn_organization, conn_id,
                   request_seq, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'GET', 10, 30.0, ?6, 'Telstra', ?7, 1, 'complete')",
                rusqlite::params![ts, ip, port, path, ua, asn, i as i64],
            )
            .unwrap();
        }
        let stats = build(&path, Some("2026-01-01T00:00:00.000Z".into())).unwrap();
        assert_eq!(
            (stats.requests, stats.clients, stats.bytes_sent),
            (3, 2, 30)
        );
        assert_eq!(stats.seconds_held, 90.0);
        let top = |title: &str| &stats.top.iter().find(|t| t.title == title).unwrap().rows;
        assert_eq!(top("source address")[0], ("81.2.69.142".to_owned(), 2));
        assert_eq!(top("path")[0], ("/.env".to_owned(), 2));
        assert_eq!(top("target port")[0], ("80".to_owned(), 2));
        assert_eq!(top("ASN"), &vec![("AS1221 Telstra".to_owned(), 2)]);
        assert_eq!(
            stats.hourly,
            vec![
                ("2026-11-24T10".to_owned(), 2),
                ("2026-11-24T11".to_owned(), 1)
            ]
        );
        let text = stats.to_text();
        assert!(text.contains("top User-Agent"), "{text}");
        assert!(text.contains("2026-11-24T10:00           2"), "{text}");
        assert_eq!(build(&path, None).unwrap().requests, 4);
    }

    #[test]
    fn long_cells_are_cut() {
        assert_eq!(cell("abc", 5), "abc");
        assert_eq!(cell("abcdefgh", 5), "abcd…");
        assert_eq!(cell("a\nb", 5), "a b");
    }
}
