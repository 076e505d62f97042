//! The `sensors` table: each sensor that wrote to this database, with its labels (`[sensor]`),
//! so a merged or shipped dataset can say where each row came from.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use crate::event::format_timestamp;

/// Records (or refreshes) this sensor and its current labels, at start.
pub fn record(
    conn: &Connection,
    sensor_id: &str,
    labels: &BTreeMap<String, String>,
) -> rusqlite::Result<()> {
    let now = format_timestamp(std::time::SystemTime::now());
    let labels = serde_json::to_string(labels).expect("strings serialise");
    conn.execute(
        "INSERT INTO sensors (sensor_id, labels_json, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (sensor_id) DO UPDATE SET labels_json = ?2, last_seen = ?3",
        params![sensor_id, labels, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_is_recorded_once_and_its_labels_refreshed() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
        let mut labels = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
        record(&conn, "s1", &labels).unwrap();
        labels.insert("provider".into(), "hetzner".into());
        record(&conn, "s1", &labels).unwrap();
        let (count, json): (i64, String) = conn
            .query_row(
                "SELECT COUNT(*), MAX(labels_json) FROM sensors WHERE sensor_id = 's1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(json, r#"{"provider":"hetzner","region":"eu"}"#);
    }
}
