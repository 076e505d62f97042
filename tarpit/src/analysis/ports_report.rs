//! `tarpit ports`: how the port attribution sources compare, so an operator can validate the
//! proxy headers they have been trusting against what the kernel saw.
//!
//! For each source (eBPF, SO_ORIGINAL_DST, trusted header): how many requests it covered; for
//! each pair: how many requests both covered and how often they agreed; and the most common
//! (header, eBPF) disagreements, which point at a REDIRECT in front of a proxy or a proxy that
//! reports the wrong port.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::event::format_timestamp;

/// The report.
#[derive(Debug, Serialize, PartialEq)]
pub struct PortsReport {
    /// Only requests at or after this time were counted (RFC 3339), if limited.
    pub since: Option<String>,
    /// Requests counted.
    pub requests: u64,
    /// Requests each source gave a port for.
    pub coverage: Vec<Coverage>,
    /// Agreement of each pair of sources, over the requests both covered.
    pub pairs: Vec<PairAgreement>,
    /// How often each source won (`target_port_source`).
    pub winners: Vec<(String, u64)>,
    /// The most common (header, eBPF) disagreements.
    pub top_header_ebpf_disagreements: Vec<Disagreement>,
}

/// One source's coverage.
#[derive(Debug, Serialize, PartialEq)]
pub struct Coverage {
    /// `ebpf`, `original_dst` or `header`.
    pub source: &'static str,
    /// Requests it gave a port for.
    pub requests: u64,
}

/// One pair's agreement.
#[derive(Debug, Serialize, PartialEq)]
pub struct PairAgreement {
    /// First source.
    pub a: &'static str,
    /// Second source.
    pub b: &'static str,
    /// Requests both covered.
    pub compared: u64,
    /// Of those, how many gave the same port.
    pub agree: u64,
}

/// A (header, eBPF) port pair that disagreed, with its count.
#[derive(Debug, Serialize, PartialEq)]
pub struct Disagreement {
    /// The port the trusted header claimed.
    pub header: u16,
    /// The port the eBPF hook recorded.
    pub ebpf: u16,
    /// Requests with this pair.
    pub count: u64,
}

const SOURCES: [(&str, &str); 3] = [
    ("ebpf", "target_port_ebpf"),
    ("original_dst", "target_port_original_dst"),
    ("header", "target_port_header"),
];

/// Parses `--since`: a duration back from now (`24h`, `7d`, `90m`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<String, String> {
    if let Ok(duration) = humantime::parse_duration(text) {
        let cutoff = now.checked_sub(duration).unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(format_timestamp(cutoff));
    }
    humantime::parse_rfc3339_weak(text)
        .map(format_timestamp)
        .map_err(|_| format!("`{text}` is neither a duration (24h, 7d) nor an RFC 3339 time"))
}

/// Builds the report from the database at `path` (opened read-only).
pub fn build(path: &Path, since: Option<String>) -> Result<PortsReport, crate::db::DbError> {
    let conn = crate::db::open_read_only(path)?;
    let cutoff = since.clone().unwrap_or_default();
    let scalar = |sql: &str| -> rusqlite::Result<u64> {
        conn.query_row(sql, [&cutoff], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.unwrap_or(0) as u64)
    };
    let filter = format!(
        "FROM {} WHERE timestamp >= ?1",
        crate::db::events_from(since.is_some())
    );
    let requests = scalar(&format!("SELECT COUNT(*) {filter}"))?;
    let coverage = SOURCES
        .iter()
        .map(|(source, column)| {
            Ok(Coverage {
                source,
                requests: scalar(&format!("SELECT COUNT({column}) {filter}"))?,
            })
        })
        .collect::<rusqlite::Result<_>>()?;
    let mut pairs = Vec::new();
    for (i, (a, col_a)) in SOURCES.iter().enumerate() {
        for (b, col_b) in &SOURCES[i + 1..] {
            let both = format!("{filter} AND {col_a} IS NOT NULL AND {col_b} IS NOT NULL");
            pairs.push(PairAgreement {
                a,
                b,
                compared: scalar(&format!("SELECT COUNT(*) {both}"))?,
                agree: scalar(&format!("SELECT COUNT(*) {both} AND {col_a} = {col_b}"))?,
            });
        }
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT target_port_source, COUNT(*) {filter} GROUP BY 1 ORDER BY 2 DESC, 1"
    ))?;
    let winners = stmt
        .query_map([&cutoff], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?
                    .unwrap_or_else(|| "unknown".into()),
                r.get::<_, i64>(1)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare(&format!(
        "SELECT target_port_header, target_port_ebpf, COUNT(*) {filter}
           AND target_port_header IS NOT NULL AND target_port_ebpf IS NOT NULL
           AND target_port_header != target_port_ebpf
         GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 20"
    ))?;
    let top_header_ebpf_disagreements = stmt
        .query_map([&cutoff], |r| {
            Ok(Disagreement {
                header: r.get(0)?,
                ebpf: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(PortsReport {
        since,
        requests,
        coverage,
        pairs,
        winners,
        top_header_ebpf_disagreements,
    })
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

impl PortsReport {
    /// The report as aligned text tables.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let since = crate::db::period_label(self.since.as_deref());
        let _ = writeln!(
            out,
            "Port attribution over {} requests ({since})\n",
            self.requests
        );
        let _ = writeln!(out, "{:<14} {:>10} {:>8}", "source", "covered", "share");
        for c in &self.coverage {
            let share = percent(c.requests, self.requests);
            let _ = writeln!(out, "{:<14} {:>10} {:>8}", c.source, c.requests, share);
        }
        let _ = writeln!(
            out,
            "\n{:<26} {:>10} {:>10} {:>10} {:>10}",
            "pair", "compared", "agree", "disagree", "agreement"
        );
        for p in &self.pairs {
            let _ = writeln!(
                out,
                "{:<26} {:>10} {:>10} {:>10} {:>10}",
                format!("{} vs {}", p.a, p.b),
                p.compared,
                p.agree,
                p.compared - p.agree,
                percent(p.agree, p.compared)
            );
        }
        let _ = writeln!(out, "\n{:<14} {:>10}", "winner", "requests");
        for (source, count) in &self.winners {
            // The database is data: nothing from it reaches the terminal unfiltered.
            let source: String = source
                .chars()
                .map(|c| {
                    if crate::analysis::text::is_unsafe_for_display(c) {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
            let _ = writeln!(out, "{source:<14} {count:>10}");
        }
        let _ = writeln!(out, "\ntop (header, eBPF) disagreements");
        let _ = writeln!(out, "{:>8} {:>8} {:>10}", "header", "ebpf", "requests");
        if self.top_header_ebpf_disagreements.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for d in &self.top_header_ebpf_disagreements {
            let _ = writeln!(out, "{:>8} {:>8} {:>10}", d.header, d.ebpf, d.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(
        conn: &rusqlite::Connection,
        ts: &str,
        ebpf: Option<i64>,
        orig: Option<i64>,
        header: Option<i64>,
        source: &str,
    ) {
        conn.execute(
            "INSERT INTO events (timestamp, conn_id, request_seq, target_port_ebpf,
                                 target_port_original_dst, target_port_header, target_port_source)
             VALUES (?1, abs(random()), 1, ?2, ?3, ?4, ?5)",
            rusqlite::params![ts, ebpf, orig, header, source],
        )
        .unwrap();
    }

    #[test]
    fn text_from_the_database_is_filtered_for_the_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        let t = "2026-11-24T10:00:00.000Z";
        insert(&conn, t, None, None, None, "ebpf\u{202E}\u{200B}\u{1b}[2J");
        let text = build(&path, None).unwrap().to_text();
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::analysis::text::is_unsafe_for_display(c)),
            "{text:?}"
        );
        assert!(text.contains("ebpf   [2J"), "{text}");
    }

    #[test]
    fn counts_coverage_agreement_and_disagreements() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        let t = "2026-11-24T10:00:00.000Z";
        insert(&conn, t, Some(8888), Some(8888), Some(80), "ebpf");
        insert(&conn, t, Some(8888), Some(80), Some(80), "ebpf");
        insert(&conn, t, Some(80), Some(80), Some(80), "ebpf");
        insert(&conn, t, None, Some(22), None, "original_dst");
        insert(
            &conn,
            "2020-01-01T00:00:00.000Z",
            Some(1),
            None,
            Some(2),
            "ebpf",
        );
        let report = build(&path, Some("2026-01-01T00:00:00.000Z".into())).unwrap();
        assert_eq!(report.requests, 4);
        assert_eq!(
            report.coverage[0],
            Coverage {
                source: "ebpf",
                requests: 3
            }
        );
        assert_eq!(
            report.coverage[1],
            Coverage {
                source: "original_dst",
                requests: 4
            }
        );
        assert_eq!(
            report.coverage[2],
            Coverage {
                source: "header",
                requests: 3
            }
        );
        let pair = |a, b| report.pairs.iter().find(|p| p.a == a && p.b == b).unwrap();
        assert_eq!(
            (
                pair("ebpf", "original_dst").compared,
                pair("ebpf", "original_dst").agree
            ),
            (3, 2)
        );
        assert_eq!(
            (
                pair("ebpf", "header").compared,
                pair("ebpf", "header").agree
            ),
            (3, 1)
        );
        assert_eq!(
            (
                pair("original_dst", "header").compared,
                pair("original_dst", "header").agree
            ),
            (3, 2)
        );
        assert_eq!(
            report.top_header_ebpf_disagreements,
            vec![Disagreement {
                header: 80,
                ebpf: 8888,
                count: 2
            }]
        );
        assert_eq!(report.winners[0], ("ebpf".to_owned(), 3));
        let text = report.to_text();
        assert!(text.contains("ebpf vs header"), "{text}");
        assert!(text.contains("      80     8888          2"), "{text}");
        // Without --since, the old row counts too.
        assert_eq!(build(&path, None).unwrap().requests, 5);
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 2);
        assert_eq!(parse_since("24h", now).unwrap(), "1970-01-02T00:00:00.000Z");
        assert_eq!(
            parse_since("2026-11-24T00:00:00Z", now).unwrap(),
            "2026-11-24T00:00:00.000Z"
        );
        assert!(parse_since("yesterday-ish", now).is_err());
    }
}
