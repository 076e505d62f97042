//! The classification's share of `tarpit stats` and `tarpit report`: the top attack classes,
//! CVEs, targeted applications, tools and crawlers, and how long each tool was held. Tags are
//! counted per request (`request_tags` joined to `events` for the period). Below `stats`,
//! which shows these tables beside its own.

use rusqlite::Connection;

/// One table: its title and (value, count) rows, largest first.
pub type TagTable = (&'static str, Vec<(String, u64)>);

/// Rows per table.
const TOP: usize = 10;

/// (family, table title), in display order. The titles are what the report looks tables up by.
pub const FAMILY_TABLES: &[(&str, &str)] = &[
    ("attack", "attack class"),
    ("cve", "CVE"),
    ("target", "targeted application"),
    ("tool", "tool"),
    ("crawler", "crawler"),
    ("crs", "CRS rule"),
];

/// The title of the OWASP CRS anomaly score distribution.
pub const CRS_SCORE: &str = "CRS anomaly score";

/// Score buckets: (label, lowest score). 5 is the CRS's default blocking threshold; one
/// critical rule scores 5.
const SCORE_BUCKETS: &[(&str, i64)] = &[
    ("0", 0),
    ("1-4", 1),
    ("5-9", 5),
    ("10-19", 10),
    ("20-49", 20),
    ("50+", 50),
];

/// The title of the time-held-per-tool table (whole seconds summed over requests).
pub const TIME_PER_TOOL: &str = "seconds held per tool";

/// The tag tables for requests at or after `cutoff` (`from` is `db::events_from`).
pub fn top_tables(conn: &Connection, from: &str, cutoff: &str) -> rusqlite::Result<Vec<TagTable>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT request_tags.tag, COUNT(*), TOTAL(events.duration_s)
         FROM {from} JOIN request_tags ON request_tags.event_id = events.id
         WHERE events.timestamp >= ?1
         GROUP BY request_tags.tag"
    ))?;
    // Distinct tags are bounded by the rule sets that wrote them: counted in memory.
    let counts = stmt
        .query_map([cutoff], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, f64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut tables = Vec::with_capacity(FAMILY_TABLES.len() + 1);
    for (family, title) in FAMILY_TABLES {
        let rows = counts
            .iter()
            .filter_map(|(tag, n, _)| named(tag, family).map(|name| (name.to_owned(), *n)));
        tables.push((*title, top(rows)));
    }
    let seconds = counts.iter().filter_map(|(tag, _, seconds)| {
        named(tag, "tool").map(|name| (name.to_owned(), seconds.round() as u64))
    });
    tables.push((TIME_PER_TOOL, top(seconds)));
    if let Some(crs) = tables.iter_mut().find(|t| t.0 == "CRS rule") {
        let mut message = conn.prepare("SELECT message FROM crs_rules WHERE rule_id = ?1")?;
        for (name, _) in &mut crs.1 {
            let text: Option<String> = message
                .query_row([name.as_str()], |r| r.get(0))
                .ok()
                .filter(|m: &String| !m.is_empty());
            if let Some(text) = text {
                *name = format!("{name} {text}");
            }
        }
    }
    tables.push((CRS_SCORE, score_buckets(conn, from, cutoff)?));
    Ok(tables)
}

/// Requests per anomaly score bucket, in bucket order (evaluated rows only).
fn score_buckets(
    conn: &Connection,
    from: &str,
    cutoff: &str,
) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT crs_score, COUNT(*) FROM {from}
         WHERE events.timestamp >= ?1 AND crs_score IS NOT NULL GROUP BY crs_score"
    ))?;
    let mut counts = vec![0u64; SCORE_BUCKETS.len()];
    for row in stmt.query_map([cutoff], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (score, n) = row?;
        let bucket = SCORE_BUCKETS
            .iter()
            .rposition(|(_, low)| score >= *low)
            .unwrap_or(0);
        counts[bucket] += n as u64;
    }
    Ok(SCORE_BUCKETS
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|((label, _), n)| ((*label).to_owned(), n))
        .collect())
}

/// The tag's name when it is of `family`.
fn named<'a>(tag: &'a str, family: &str) -> Option<&'a str> {
    tag.strip_prefix(family)?.strip_prefix(':')
}

/// The [`TOP`] largest, ties by name.
fn top(rows: impl Iterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = rows.filter(|(_, n)| *n > 0).collect();
    rows.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(TOP);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_counted_per_family_and_tools_by_time_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        conn.execute(
            "INSERT INTO crs_rules (rule_id, message, paranoia) VALUES (942100, 'SQLi', 1)",
            [],
        )
        .unwrap();
        for (id, duration, score, tags) in [
            (
                1,
                10.0,
                Some(5),
                &["attack:sqli", "tool:sqlmap", "crs:942100"][..],
            ),
            (
                2,
                20.0,
                Some(13),
                &["attack:sqli", "tool:curl", "crs:942100"][..],
            ),
            (3, 100.0, None, &["tool:curl", "cve:CVE-2021-44228"][..]),
        ] {
            conn.execute(
                "INSERT INTO events (id, timestamp, conn_id, request_seq, duration_s, crs_score)
                 VALUES (?1, '2026-01-01T00:00:00Z', ?1, 1, ?2, ?3)",
                rusqlite::params![id, duration, score],
            )
            .unwrap();
            for tag in tags {
                conn.execute(
                    "INSERT INTO request_tags (event_id, tag) VALUES (?1, ?2)",
                    rusqlite::params![id, tag],
                )
                .unwrap();
            }
        }
        let tables = top_tables(&conn, "events", "").unwrap();
        let find = |title: &str| &tables.iter().find(|t| t.0 == title).unwrap().1;
        assert_eq!(find("attack class"), &[("sqli".to_owned(), 2)]);
        assert_eq!(find("CVE"), &[("CVE-2021-44228".to_owned(), 1)]);
        assert_eq!(
            find("tool"),
            &[("curl".to_owned(), 2), ("sqlmap".to_owned(), 1)]
        );
        assert_eq!(
            find(TIME_PER_TOOL),
            &[("curl".to_owned(), 120), ("sqlmap".to_owned(), 10)]
        );
        assert!(find("crawler").is_empty());
        assert_eq!(find("CRS rule"), &[("942100 SQLi".to_owned(), 2)]);
        assert_eq!(
            find(CRS_SCORE),
            &[("5-9".to_owned(), 1), ("10-19".to_owned(), 1)]
        );
        let later = top_tables(&conn, "events", "2027").unwrap();
        assert!(later.iter().all(|t| t.1.is_empty()));
    }
}
