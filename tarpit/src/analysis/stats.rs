//! `tarpit stats`: what the tarpit caught, from the SQLite database: totals, time held, and the
//! top source addresses, ASNs, countries, target ports, paths, User-Agents, methods and end
//! reasons, the classification's top tags ([`crate::analysis::tag_stats`]), plus hourly counts. Text tables or JSON; read-only.

use super::text::cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
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
    /// Give-up time by tool, from the adaptive mode's stored model (not limited by `since`).
    pub giveup_by_tool: Vec<crate::analysis::giveup_stats::GiveUpRow>,
    /// The shipping outbox now (not limited by `since`); `None` when shipping is not
    /// configured, so a sensor without a store is not told of a backlog no one will ship.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Shipping>,
    /// The live sharing outputs' progress (`[share.*]`); the caller keeps only the configured
    /// ones, for the same reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sharing: Vec<crate::share::push::Progress>,
}

/// What shipping to the central store has left to do, and has done.
#[derive(Debug, Serialize)]
pub struct Shipping {
    /// Requests whose latest change is not shipped yet.
    pub pending_rows: u64,
    /// Seconds since the oldest of those changes.
    pub oldest_pending_s: f64,
    /// Per target (`clickhouse`): requests shipped in total and the last success (RFC 3339).
    pub shipped: Vec<(String, i64, Option<String>)>,
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
    ("sensor", "sensor_id"),
];

/// Distinct values one top table counts in memory; past this, that table is counted by
/// SQLite instead (slower, but its memory does not grow with the data).
const MAX_DISTINCT: usize = 1_000_000;

/// Characters of a value that are counted: longer values (16 KiB User-Agents) are counted by
/// their first `MAX_KEY_CHARS` characters and shown with a trailing `…`, in memory and in
/// SQLite alike, so no key holds more than 1 KiB.
pub const MAX_KEY_CHARS: usize = 256;

/// Bytes of keys one top table holds in memory; past this it is left to SQLite too.
const MAX_TALLY_BYTES: usize = 64 * 1024 * 1024;

/// The counted form of a value: at most [`MAX_KEY_CHARS`] characters.
fn key_of(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_KEY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}

/// [`key_of`] in SQL, for the tables SQLite counts.
fn key_sql(expr: &str) -> String {
    format!(
        "CASE WHEN length({expr}) > {MAX_KEY_CHARS} THEN substr({expr}, 1, {MAX_KEY_CHARS}) || '…' \
         ELSE {expr} END"
    )
}

/// Counts of one top table's values during the single pass.
#[derive(Default)]
struct Tally {
    integers: HashMap<i64, u64>,
    texts: HashMap<Box<str>, u64>,
    /// Bytes of the keys in `texts`.
    key_bytes: usize,
    /// Too many distinct values: left to SQLite.
    overflowed: bool,
}

impl Tally {
    fn add(&mut self, value: ValueRef<'_>, cap: usize) {
        if self.overflowed {
            return;
        }
        match value {
            ValueRef::Null => return,
            ValueRef::Integer(i) => *self.integers.entry(i).or_insert(0) += 1,
            ValueRef::Text(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let key = key_of(&text);
                match self.texts.get_mut(key.as_ref()) {
                    Some(count) => *count += 1,
                    None => {
                        self.key_bytes += key.len();
                        self.texts.insert(key.into(), 1);
                    }
                }
            }
            ValueRef::Real(f) => *self.texts.entry(f.to_string().into()).or_insert(0) += 1,
            ValueRef::Blob(_) => {}
        }
        if self.integers.len() + self.texts.len() > cap || self.key_bytes > MAX_TALLY_BYTES {
            *self = Tally {
                overflowed: true,
                ..Tally::default()
            };
        }
    }

    fn distinct(&self) -> u64 {
        (self.integers.len() + self.texts.len()) as u64
    }

    /// The [`TOP`] most frequent, ties in SQLite's order (integers before text).
    fn top(self) -> Vec<(String, u64)> {
        let mut integers: Vec<(i64, u64)> = self.integers.into_iter().collect();
        integers.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        integers.truncate(TOP);
        let mut texts: Vec<(Box<str>, u64)> = self.texts.into_iter().collect();
        texts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        texts.truncate(TOP);
        let mut merged: Vec<(u8, String, u64)> = integers
            .into_iter()
            .map(|(i, n)| (0, i.to_string(), n))
            .chain(texts.into_iter().map(|(t, n)| (1, t.into(), n)))
            .collect();
        // Stable: within a kind the order above (which compared numbers as numbers) stays.
        merged.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        merged.truncate(TOP);
        merged.into_iter().map(|(_, v, n)| (v, n)).collect()
    }
}

/// Reads the statistics from the database at `path` (read-only).
///
/// One pass over the rows counts everything at once (a query per table would read a
/// ten-million-row database ten times); a table with more than [`MAX_DISTINCT`] values is
/// then counted by SQLite so memory stays bounded.
pub fn build(path: &Path, since: Option<String>) -> Result<Stats, crate::db::DbError> {
    build_capped(path, since, MAX_DISTINCT)
}

/// [`build`] with a given cap on the distinct values counted in memory per table.
fn build_capped(
    path: &Path,
    since: Option<String>,
    cap: usize,
) -> Result<Stats, crate::db::DbError> {
    let conn = crate::db::open_read_only(path)?;
    let cutoff = since.clone().unwrap_or_default();
    let from = crate::db::events_from(since.is_some());
    let expressions: Vec<&str> = TOPS.iter().map(|(_, expr)| *expr).collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT timestamp, bytes_sent, duration_s, {} FROM {from} WHERE timestamp >= ?1",
        expressions.join(", ")
    ))?;
    let mut tallies: Vec<Tally> = TOPS.iter().map(|_| Tally::default()).collect();
    let mut hours: BTreeMap<String, u64> = BTreeMap::new();
    let (mut requests, mut bytes_sent, mut seconds_held) = (0u64, 0i64, 0f64);
    let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
    let mut rows = stmt.query([&cutoff])?;
    while let Some(row) = rows.next()? {
        requests += 1;
        if let ValueRef::Text(bytes) = row.get_ref(0)? {
            let timestamp = String::from_utf8_lossy(bytes);
            if first.as_deref().is_none_or(|f| *timestamp < *f) {
                first = Some(timestamp.to_string());
            }
            if last.as_deref().is_none_or(|l| *timestamp > *l) {
                last = Some(timestamp.to_string());
            }
            let hour = timestamp.get(..13).unwrap_or(&timestamp);
            match hours.get_mut(hour) {
                Some(count) => *count += 1,
                None => {
                    hours.insert(hour.to_owned(), 1);
                }
            }
        }
        bytes_sent += row.get::<_, Option<i64>>(1)?.unwrap_or(0);
        seconds_held += row.get::<_, Option<f64>>(2)?.unwrap_or(0.0);
        for (i, tally) in tallies.iter_mut().enumerate() {
            tally.add(row.get_ref(3 + i)?, cap);
        }
    }
    let clients = match &tallies[0] {
        tally if !tally.overflowed => tally.distinct(),
        _ => conn.query_row(
            &format!("SELECT COUNT(DISTINCT client_ip) FROM {from} WHERE timestamp >= ?1"),
            [&cutoff],
            |r| r.get::<_, i64>(0),
        )? as u64,
    };
    let mut top = Vec::with_capacity(TOPS.len());
    for ((title, expr), tally) in TOPS.iter().zip(tallies) {
        let rows = if tally.overflowed {
            top_by_sql(&conn, from, expr, &cutoff)?
        } else {
            tally.top()
        };
        top.push(TopTable { title, rows });
    }
    top.extend(
        crate::analysis::tag_stats::top_tables(&conn, from, &cutoff)?
            .into_iter()
            .map(|(title, rows)| TopTable { title, rows }),
    );
    Ok(Stats {
        since,
        requests,
        clients,
        bytes_sent: bytes_sent.max(0) as u64,
        seconds_held,
        first,
        last,
        top,
        hourly: hours.into_iter().collect(),
        giveup_by_tool: crate::analysis::giveup_stats::by_tool(&conn)?,
        shipping: Some({
            let backlog = crate::ship::outbox::backlog(&conn, crate::ship::TARGET)?;
            Shipping {
                pending_rows: backlog.rows,
                oldest_pending_s: backlog.oldest_age_s,
                shipped: crate::ship::outbox::shipped(&conn)?,
            }
        }),
        sharing: crate::share::push::progress(&conn)?,
    })
}

/// One top table counted by SQLite (for values too many to count in memory).
fn top_by_sql(
    conn: &Connection,
    from: &str,
    expr: &str,
    cutoff: &str,
) -> rusqlite::Result<Vec<(String, u64)>> {
    let expr = key_sql(expr);
    let mut stmt = conn.prepare(&format!(
        "SELECT {expr} AS v, COUNT(*) AS n FROM {from}
         WHERE timestamp >= ?1 AND v IS NOT NULL
         GROUP BY v ORDER BY n DESC, v LIMIT {TOP}"
    ))?;
    stmt.query_map([cutoff], |r| {
        let text = match r.get_ref(0)? {
            ValueRef::Integer(i) => i.to_string(),
            ValueRef::Real(f) => f.to_string(),
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            ValueRef::Null | ValueRef::Blob(_) => String::new(),
        };
        Ok((text, r.get::<_, i64>(1)? as u64))
    })?
    .collect()
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
        if let Some(ship) = &self.shipping {
            let _ = writeln!(
                out,
                "{:<22} {} requests not shipped yet, oldest change {:.0} s ago",
                "shipping outbox", ship.pending_rows, ship.oldest_pending_s
            );
            for (target, rows, last) in &ship.shipped {
                let _ = writeln!(
                    out,
                    "{:<22} {rows} requests, last at {}",
                    format!("shipped to {target}"),
                    last.as_deref().unwrap_or("-")
                );
            }
        }
        for output in &self.sharing {
            let _ = writeln!(
                out,
                "{:<22} {} requests waiting, {} sent, last at {}{}",
                format!("sharing to {}", output.output),
                output.waiting,
                output.sent,
                output.last_success.as_deref().unwrap_or("-"),
                output
                    .last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; last error {}", cell(e, 120)))
            );
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
        out.push_str(&crate::analysis::giveup_stats::to_text(
            &self.giveup_by_tool,
        ));
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

    /// The single pass and SQLite agree on every figure, ties included, and a table with
    /// more distinct values than the cap (here 2) is recounted by SQLite to the same result.
    #[test]
    fn the_single_pass_agrees_with_sql_and_overflow_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        for i in 0..500i64 {
            conn.execute(
                "INSERT INTO events (timestamp, client_ip, target_port, http_path, user_agent,
                   http_method, bytes_sent, duration_s, asn_number, asn_organization,
                   country_iso_code, conn_id, request_seq, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'GET', ?6, 1.5, ?7, 'Org', ?8, ?9, 1, 'complete')",
                rusqlite::params![
                    format!("2026-11-2{}T{:02}:00:00.000Z", i % 3, i % 24),
                    format!("198.51.100.{}", i % 37),
                    [80, 443, 8080, 23, 8888][(i % 5) as usize] + i % 7,
                    format!("/p{}", i % 13),
                    (i % 4 != 0).then(|| format!("ua{}", i % 11)),
                    i,
                    (i % 3 != 0).then_some(64_496 + i % 9),
                    ["US", "DE", "CN"][(i % 3) as usize],
                    i,
                ],
            )
            .unwrap();
        }
        let conn =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let single = build(&path, None).unwrap();
        let capped = build_capped(&path, None, 2).unwrap();
        for ((table, capped_table), (_, expr)) in single.top.iter().zip(&capped.top).zip(TOPS) {
            let by_sql = top_by_sql(&conn, "events", expr, "").unwrap();
            assert_eq!(table.rows, by_sql, "{}", table.title);
            assert_eq!(capped_table.rows, by_sql, "{} (overflowed)", table.title);
        }
        assert_eq!((single.requests, single.clients), (500, 37));
        assert_eq!((capped.requests, capped.clients), (500, 37));
        assert_eq!(single.bytes_sent, (0..500).sum::<u64>());
        assert_eq!(single.first.as_deref(), Some("2026-11-20T00:00:00.000Z"));
        assert_eq!(single.last.as_deref(), Some("2026-11-22T23:00:00.000Z"));
        assert_eq!(single.hourly.iter().map(|h| h.1).sum::<u64>(), 500);
    }

    #[test]
    fn huge_values_are_counted_by_a_bounded_key_in_memory_and_in_sqlite_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        for i in 0..40i64 {
            // 16 KiB User-Agents: four distinct beginnings, each with ten different endings.
            let ua = format!(
                "{}{}",
                "é".repeat(100) + &format!("{:<200}", i % 4),
                "x".repeat(16_000 + i as usize)
            );
            conn.execute(
                "INSERT INTO events (timestamp, user_agent, conn_id, request_seq)
                 VALUES ('2026-11-20T00:00:00.000Z', ?1, ?2, 1)",
                rusqlite::params![ua, i],
            )
            .unwrap();
        }
        let ua_table = |stats: &Stats| {
            stats
                .top
                .iter()
                .find(|t| t.title == "User-Agent")
                .unwrap()
                .rows
                .clone()
        };
        let in_memory = ua_table(&build(&path, None).unwrap());
        let by_sqlite = ua_table(&build_capped(&path, None, 0).unwrap());
        assert_eq!(in_memory, by_sqlite);
        assert_eq!(in_memory.len(), 4);
        for (key, count) in &in_memory {
            assert_eq!(*count, 10);
            assert_eq!(key.chars().count(), MAX_KEY_CHARS + 1, "{key}");
            assert!(key.ends_with('…'));
        }
    }
}
