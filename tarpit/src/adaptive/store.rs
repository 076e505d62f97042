//! Reading the give-up model back from the `giveup_families` table at start (the SQLite sink
//! writes it, from `giveup_families` events).

use rusqlite::Connection;

use super::model::{Family, family_from_row};

/// Every stored family, least recently seen first (so restoring keeps the most recent when
/// there are more than the model holds). Rows that no longer parse are skipped.
pub fn load_families(conn: &Connection) -> rusqlite::Result<Vec<Family>> {
    let mut statement = conn.prepare(
        "SELECT kind, name, recent_s, give_ups, planned_ends, completed, tool, last_seen
         FROM giveup_families ORDER BY last_seen",
    )?;
    let rows = statement.query_map([], |row| {
        let recent: String = row.get(2)?;
        let recent: Vec<f32> = serde_json::from_str(&recent).unwrap_or_default();
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
            row.get(7)?,
        ))
    })?;
    rows.filter_map(Result::transpose).collect()
}
