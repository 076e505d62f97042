//! `tarpit classify`: re-tags every stored request with the current rules. Rules get better;
//! old data should too, including rows adopted from the replaced tool's database.
//!
//! Rows are read in id order in batches; each batch's tags are replaced in one short
//! transaction, so a running tarpit writing the same file waits at most one batch. Tags the
//! rules do not give are kept: `scanner:` (reverse DNS answers and the scanner catalogue of
//! the day) and `canary:` (token sightings), which no re-read of the row could reproduce.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, params};

use crate::classify::Classifier;
use crate::classify::stored::{StoredRequest, read_batch};

/// Rows per transaction.
const BATCH: i64 = 5_000;

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetagSummary {
    /// Requests read.
    pub rows: u64,
    /// Requests that got at least one tag.
    pub tagged: u64,
    /// Tags written.
    pub tags: u64,
}

/// Re-tags every request in the database at `path` with `classifier`.
pub fn retag(path: &Path, classifier: &Classifier) -> Result<RetagSummary, crate::db::DbError> {
    // The schema check of the read-only commands: an old or foreign file is refused, with what
    // to do, before anything is written.
    drop(crate::db::open_read_only(path)?);
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    crate::db::configure_writer(&conn)?;
    let mut summary = RetagSummary::default();
    let mut after = i64::MIN;
    loop {
        let batch = read_batch(&conn, after, BATCH)?;
        let Some(last) = batch.last() else {
            break;
        };
        let (first, last) = (batch[0].id, last.id);
        let tagged: Vec<(&StoredRequest, Vec<Arc<str>>)> = batch
            .iter()
            .map(|request| (request, classifier.classify(&request.view())))
            .collect();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM request_tags WHERE event_id BETWEEN ?1 AND ?2
                 AND tag NOT LIKE 'scanner:%' AND tag NOT LIKE 'canary:%'",
            params![first, last],
        )?;
        // New tags are a change: the rows get a new number and every shipping target starts
        // again from the first one re-tagged (see `crate::ship`).
        let seq = crate::db::next_change_seq(&tx)?;
        tx.execute(
            "UPDATE events SET changed_seq = ?3 WHERE id BETWEEN ?1 AND ?2",
            params![first, last, seq],
        )?;
        crate::db::store_change_seq(&tx, seq)?;
        tx.execute(
            "UPDATE ship_state SET cursor_id = ?1 WHERE cursor_id >= ?1",
            [first - 1],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO request_tags (event_id, conn_id, request_seq, tag)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (request, tags) in &tagged {
                summary.rows += 1;
                summary.tagged += u64::from(!tags.is_empty());
                for tag in tags {
                    insert.execute(params![
                        request.id,
                        request.conn_id,
                        request.request_seq,
                        tag.as_ref()
                    ])?;
                    summary.tags += 1;
                }
            }
        }
        tx.commit()?;
        after = last;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rows_are_retagged_and_stale_tags_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::db::open(&path).unwrap();
        conn.execute(
            "INSERT INTO events (id, timestamp, conn_id, request_seq, http_method, http_path,
                                 http_query, headers_json, user_agent)
             VALUES (1, 't', 1, 1, 'GET', '/index.php', 'id=1%27%20or%20%271%27=%271',
                     '{\"User-Agent\":\"sqlmap/1.7\"}', 'sqlmap/1.7'),
                    (2, 't', 2, 1, 'GET', '/', NULL, 'not json', NULL)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO request_tags (event_id, tag) VALUES (2, 'attack:stale'),
                 (2, 'scanner:shodan'), (2, 'scanner:verified'), (2, 'canary:hit')",
            [],
        )
        .unwrap();
        // A shipping target that had both rows.
        conn.execute(
            "INSERT INTO ship_state (target, cursor_id, shipped_rows) VALUES ('clickhouse', 2, 2)",
            [],
        )
        .unwrap();
        let classifier = Classifier::load(None).unwrap();
        let summary = retag(&path, &classifier).unwrap();
        assert_eq!(summary.rows, 2);
        // New tags are a change: numbered, and shipped again from the first row.
        let (cursor, numbered): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT cursor_id FROM ship_state),
                        (SELECT COUNT(changed_seq) FROM events)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((cursor, numbered), (0, 2));
        let tags: Vec<(i64, String)> = conn
            .prepare("SELECT event_id, tag FROM request_tags ORDER BY event_id, tag")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(tags.contains(&(1, "attack:sqli".into())), "{tags:?}");
        assert!(tags.contains(&(1, "tool:sqlmap".into())), "{tags:?}");
        assert!(!tags.iter().any(|(_, t)| t == "attack:stale"), "{tags:?}");
        // What the rules never give survives the re-tag.
        for kept in ["scanner:shodan", "scanner:verified", "canary:hit"] {
            assert!(tags.contains(&(2, kept.into())), "{tags:?}");
        }
        assert_eq!(summary.tags, tags.len() as u64 - 3);
        assert_eq!(
            crate::classify::stored::headers_of(Some("{\"A\":1}")),
            [("A".into(), "1".into())]
        );
    }
}
