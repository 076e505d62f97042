//! Reading the give-up model back from the `giveup_families` table at start (the SQLite sink
//! writes it, from `giveup_families` events).

use rusqlite::Connection;

use super::model::{Family, family_from_row};
use super::sample::{Prefix, Sample};

/// The `limit` most recently seen stored families, least recently seen first (so restoring
/// keeps the most recent). Rows that no longer parse are skipped.
pub fn load_families(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Family>> {
    let mut statement = conn.prepare(
        "SELECT * FROM (
             SELECT kind, name, recent_s, give_ups, planned_ends, completed, tool, last_seen
             FROM giveup_families ORDER BY last_seen DESC LIMIT ?1)
         ORDER BY last_seen",
    )?;
    let rows = statement.query_map([limit as i64], |row| {
        let recent: String = row.get(2)?;
        let last_seen: i64 = row.get(7)?;
        let recent = parse_samples(&recent, last_seen);
        Ok(family_from_row(
            &row.get::<_, String>(0)?,
            row.get(1)?,
            &recent,
            (
                row.get::<_, i64>(3)? as u64,
                row.get::<_, i64>(4)? as u64,
                row.get::<_, i64>(5)? as u64,
            ),
            row.get(6)?,
            last_seen,
        ))
    })?;
    rows.filter_map(Result::transpose).collect()
}

/// A family's samples as stored: `[[seconds, "prefix", unix_time], ...]`.
pub fn samples_json(samples: &[Sample]) -> String {
    let rows: Vec<(f32, String, i64)> = samples
        .iter()
        .map(|s| (s.seconds, s.prefix.text(), s.at))
        .collect();
    serde_json::to_string(&rows).expect("samples serialise")
}

/// Reads [`samples_json`] back. Rows written before prefixes were recorded (a bare list of
/// seconds) count as one client, seen at `last_seen`: nothing they hold moves a shared figure.
fn parse_samples(text: &str, last_seen: i64) -> Vec<Sample> {
    if let Ok(rows) = serde_json::from_str::<Vec<(f32, String, i64)>>(text) {
        return rows
            .into_iter()
            .filter_map(|(seconds, prefix, at)| {
                Some(Sample {
                    seconds,
                    prefix: Prefix::parse(&prefix)?,
                    at,
                })
            })
            .collect();
    }
    let old: Vec<f32> = serde_json::from_str(text).unwrap_or_default();
    old.into_iter()
        .map(|seconds| Sample {
            seconds,
            prefix: Prefix::LEGACY,
            at: last_seen,
        })
        .collect()
}
