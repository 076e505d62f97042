//! `tarpit actors --candidates ID`: actors that may be the same operator as actor `ID`, by
//! fingerprint similarity, each with a score. Proposals only: nothing here merges actors (only a
//! canary token sighting does, see `crate::sink::sqlite::actors`).
//!
//! Thousands of unrelated clients share curl's fingerprints, so a shared value counts by how
//! rare it is: its weight is `ln(actors / actors with it)` (inverse document frequency), zero
//! for a value every actor has. For each fingerprint (JA4, SYN fingerprint, header-order hash,
//! User-Agent, and timing: how long the client waited before it gave up, in doubling buckets)
//! a candidate scores the weight of the rarest value it shares with the actor; its score is the
//! sum over the fingerprints the actor has, divided by what they would give if every value were
//! the actor's alone, `ln(actors)` each (0 to 1: sharing only common values scores near 0). A
//! client crafting its fingerprints can only make itself look like another actor, never
//! join it, and a value one client sends from many addresses is no rarer for it.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;
use serde::Serialize;

/// The fingerprints compared: a name and the SQL expression over an `events` row.
const FEATURES: [(&str, &str); 5] = [
    ("ja4", "ja4"),
    ("syn_fp", "syn_fp"),
    ("header_order", "header_order_hash"),
    ("user_agent", "user_agent"),
    ("give_up_time", GIVE_UP_BUCKET),
];

/// How long a client waited before it gave up, in doubling buckets (a tool's timeout).
const GIVE_UP_BUCKET: &str = "(CASE WHEN end_reason IN ('client_closed', 'client_reset') \
     AND duration_s IS NOT NULL THEN CASE \
     WHEN duration_s < 1 THEN '<1 s' WHEN duration_s < 2 THEN '1-2 s' \
     WHEN duration_s < 4 THEN '2-4 s' WHEN duration_s < 8 THEN '4-8 s' \
     WHEN duration_s < 16 THEN '8-16 s' WHEN duration_s < 32 THEN '16-32 s' \
     WHEN duration_s < 64 THEN '32-64 s' WHEN duration_s < 128 THEN '64-128 s' \
     WHEN duration_s < 256 THEN '128-256 s' WHEN duration_s < 512 THEN '256-512 s' \
     ELSE '>=512 s' END END)";

/// The most values of one fingerprint taken from the actor.
const VALUES_PER_FEATURE: usize = 50;

/// One shared fingerprint value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shared {
    /// Which fingerprint.
    pub feature: &'static str,
    /// The value.
    pub value: String,
    /// How many actors have it.
    pub actors: usize,
}

/// An actor that may be the same operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The candidate.
    pub actor_id: i64,
    /// 0 to 1: the weight of what the candidate shares, over the most the actor's fingerprints
    /// could give.
    pub score: f64,
    /// What it shares, the rarest value per fingerprint.
    pub shared: Vec<Shared>,
}

/// The candidates for `actor` (its root, when it was merged), best first, at most `limit`,
/// none scoring under `min_score`.
pub fn candidates(
    conn: &Connection,
    actor: i64,
    (limit, min_score): (usize, f64),
) -> rusqlite::Result<Vec<Candidate>> {
    let actor: i64 = conn.query_row(
        "SELECT COALESCE(merged_into, actor_id) FROM actors WHERE actor_id = ?1",
        [actor],
        |row| row.get(0),
    )?;
    let total: i64 = conn.query_row(
        "SELECT COUNT(*) FROM actors WHERE merged_into IS NULL",
        [],
        |row| row.get(0),
    )?;
    let idf = |holders: usize| (total.max(1) as f64 / holders.max(1) as f64).ln().max(0.0);
    // Per candidate and fingerprint: the rarest shared value.
    let mut best: HashMap<i64, Vec<Option<Shared>>> = HashMap::new();
    let mut possible = 0.0;
    for (index, (feature, expression)) in FEATURES.iter().enumerate() {
        let values: Vec<String> = conn
            .prepare(&format!(
                "SELECT DISTINCT {expression} AS v FROM events WHERE client_ip IN \
                 (SELECT client_ip FROM actor_clients WHERE actor_id = ?1) AND v IS NOT NULL \
                 LIMIT {VALUES_PER_FEATURE}"
            ))?
            .query_map([actor], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if values.is_empty() {
            continue;
        }
        let placeholders = vec!["?"; values.len()].join(", ");
        let mut holders: HashMap<String, HashSet<i64>> = HashMap::new();
        let mut statement = conn.prepare(&format!(
            "SELECT DISTINCT actor_id, {expression} AS v FROM events \
             WHERE actor_id IS NOT NULL AND v IN ({placeholders})"
        ))?;
        let mut rows = statement.query(rusqlite::params_from_iter(&values))?;
        while let Some(row) = rows.next()? {
            let (holder, value): (i64, String) = (row.get(0)?, row.get(1)?);
            holders
                .entry(value)
                .or_default()
                .insert(resolve(conn, holder)?);
        }
        // The most a fingerprint can give: a value no other actor has.
        possible += idf(1);
        for (value, actors) in &holders {
            let weight = idf(actors.len());
            for &other in actors.iter().filter(|&&other| other != actor) {
                let slots = best
                    .entry(other)
                    .or_insert_with(|| vec![None; FEATURES.len()]);
                let better = slots[index]
                    .as_ref()
                    .is_none_or(|s| s.actors > actors.len());
                if weight > 0.0 && better {
                    slots[index] = Some(Shared {
                        feature,
                        value: value.clone(),
                        actors: actors.len(),
                    });
                }
            }
        }
    }
    let mut out: Vec<Candidate> = best
        .into_iter()
        .filter_map(|(actor_id, slots)| {
            let shared: Vec<Shared> = slots.into_iter().flatten().collect();
            let sum: f64 = shared.iter().map(|s| idf(s.actors)).sum();
            let score = if possible > 0.0 { sum / possible } else { 0.0 };
            (score >= min_score && !shared.is_empty()).then_some(Candidate {
                actor_id,
                score: (score * 1000.0).round() / 1000.0,
                shared,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.actor_id.cmp(&b.actor_id))
    });
    out.truncate(limit);
    Ok(out)
}

/// The actor standing for `actor` (itself, or the one it was merged into).
fn resolve(conn: &Connection, actor: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(merged_into, actor_id) FROM actors WHERE actor_id = ?1")?
        .query_row([actor], |row| row.get(0))
}

/// The candidates as text.
pub fn to_text(actor: i64, candidates: &[Candidate]) -> String {
    use std::fmt::Write as _;
    let mut out =
        format!("candidates for actor {actor} (fingerprint similarity: proposals, never merged)\n");
    if candidates.is_empty() {
        out.push_str("  none: nothing rare is shared with another actor\n");
    }
    for c in candidates {
        let _ = writeln!(out, "  actor {}: score {:.3}", c.actor_id, c.score);
        for s in &c.shared {
            let _ = writeln!(
                out,
                "    {} {:?} (of {} actor{})",
                s.feature,
                s.value,
                s.actors,
                if s.actors == 1 { "" } else { "s" }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::event::{Event, RequestRecord};
    use crate::fingerprint::Fingerprint;
    use crate::sink::Sink;

    fn request(conn_id: u64, client: IpAddr, user_agent: &str, ja4: Option<&str>) -> Arc<Event> {
        let mut record = RequestRecord::sample(client);
        record.conn_id = conn_id;
        record.user_agent = Some(user_agent.into());
        record.fingerprint = Some(Box::new(Fingerprint {
            syn_fp: Some("4:64:1:64240:1460:7:mss,sok,ts,nop,ws".into()),
            header_order_hash: Some("0123456789abcdef".into()),
            ja4: ja4.map(str::to_owned),
            ..Default::default()
        }));
        Arc::new(Event::Request(Box::new(record)))
    }

    #[test]
    fn common_fingerprints_propose_nothing_and_rare_shared_ones_score_high() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut sink = crate::sink::sqlite::SqliteSink::new(crate::db::open(&path).unwrap(), "s");
        // 1,000 clients with one tool's identical fingerprints.
        let curl: Vec<Arc<Event>> = (0..1000u32)
            .map(|n| {
                let ip = std::net::Ipv4Addr::from(0x0A00_0000 + n).into();
                request(u64::from(n), ip, "curl/7.88.1", None)
            })
            .collect();
        sink.write_batch(&curl).unwrap();
        // Two more addresses with a rare User-Agent and JA4 besides the common rest.
        let rare = "Mozilla/5.0 (compatible; Custom-Harvester/0.3)";
        let ja4 = Some("t13d1516h2_8daaf6152771_02713d6af862");
        let (x, y): (IpAddr, IpAddr) = (
            "198.51.100.1".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
        );
        sink.write_batch(&[request(5000, x, rare, ja4), request(5001, y, rare, ja4)])
            .unwrap();
        let conn = crate::db::open_read_only(&path).unwrap();
        let actor_of = |ip: &str| -> i64 {
            conn.query_row(
                "SELECT actor_id FROM actor_clients WHERE client_ip = ?1",
                [ip],
                |r| r.get(0),
            )
            .unwrap()
        };
        let found = candidates(&conn, actor_of("10.0.0.7"), (10, 0.01)).unwrap();
        assert!(found.iter().all(|c| c.score < 0.01), "{found:?}");
        let found = candidates(&conn, actor_of("198.51.100.1"), (10, 0.01)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].actor_id, actor_of("203.0.113.1"));
        // Two of its four fingerprints (JA4 and User-Agent) shared by only the two.
        assert!(found[0].score > 0.4, "{found:?}");
        let features: Vec<&str> = found[0].shared.iter().map(|s| s.feature).collect();
        assert_eq!(features, ["ja4", "user_agent"]);
        // Proposals only: the two stay two actors.
        assert_ne!(actor_of("198.51.100.1"), actor_of("203.0.113.1"));
        let text = to_text(actor_of("198.51.100.1"), &found);
        assert!(text.contains("never merged"), "{text}");
    }
}
