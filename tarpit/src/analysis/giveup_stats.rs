//! The adaptive mode's share of `tarpit stats`: give-up time by tool, from the give-up model
//! as last stored (`giveup_families`, kind `tool`), beside the built-in prior the tarpit uses
//! for a tool until it has learned its own figure. Below `stats`, which shows it.

use rusqlite::Connection;
use serde::Serialize;

/// Rows shown.
const TOP: usize = 20;

/// One tool's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GiveUpRow {
    /// The tool (`gobuster`), as the classification names it.
    pub tool: String,
    /// The learned give-up time the workers plan with (seconds); `None` until enough give-ups.
    pub learned_s: Option<f64>,
    /// The built-in prior for the tool, if there is one.
    pub prior_s: Option<f64>,
    /// Give-ups seen.
    pub give_ups: u64,
    /// Responses completed early, on plan.
    pub planned_ends: u64,
    /// Responses that ran their full length.
    pub completed: u64,
}

/// The tools of the stored model, the most observed first.
pub fn by_tool(conn: &Connection) -> rusqlite::Result<Vec<GiveUpRow>> {
    let priors = crate::adaptive::priors::load(None).unwrap_or_default();
    let mut stmt = conn.prepare(
        "SELECT name, give_up_s, give_ups, planned_ends, completed FROM giveup_families
         WHERE kind = 'tool'
         ORDER BY give_ups + planned_ends + completed DESC, name LIMIT ?1",
    )?;
    stmt.query_map([TOP as i64], |r| {
        let tool: String = r.get(0)?;
        Ok(GiveUpRow {
            prior_s: priors.iter().find(|p| p.tool == tool).map(|p| p.give_up),
            tool,
            learned_s: r.get(1)?,
            give_ups: r.get::<_, i64>(2)? as u64,
            planned_ends: r.get::<_, i64>(3)? as u64,
            completed: r.get::<_, i64>(4)? as u64,
        })
    })?
    .collect()
}

/// The rows as aligned text, under their title.
pub fn to_text(rows: &[GiveUpRow]) -> String {
    use std::fmt::Write;
    let seconds = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
    let mut out = String::from("\ngive-up time by tool (adaptive mode's model)\n");
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<24} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "tool", "learned", "prior", "give-ups", "planned ends", "completed"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>9} {:>9} {:>12} {:>9}",
            crate::analysis::text::cell(&row.tool, 24),
            seconds(row.learned_s),
            seconds(row.prior_s),
            row.give_ups,
            row.planned_ends,
            row.completed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_listed_with_their_learned_figure_and_prior() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
        for (kind, name, give_up, give_ups, planned) in [
            ("tool", "gobuster", None, 0, 40),
            ("tool", "curl", Some(4.0), 3, 1),
            ("address", "192.0.2.1", Some(4.0), 3, 41),
        ] {
            conn.execute(
                "INSERT INTO giveup_families VALUES (?1, ?2, ?3, '[]', ?4, ?5, 0, NULL, 0)",
                rusqlite::params![kind, name, give_up, give_ups, planned],
            )
            .unwrap();
        }
        let rows = by_tool(&conn).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tool, "gobuster");
        assert_eq!(rows[0].prior_s, Some(10.0));
        assert_eq!(rows[0].learned_s, None);
        assert_eq!(rows[1].learned_s, Some(4.0));
        let text = to_text(&rows);
        assert!(text.contains("gobuster"), "{text}");
        assert!(text.contains("10.0 s"), "{text}");
        assert!(to_text(&[]).contains("(none)"));
    }
}
