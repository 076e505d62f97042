//! Addresses proven to be research scanners' after their first requests were recorded
//! (`Event::ScannerHost`, from forward-confirmed reverse DNS, see `crate::scanner::verify`):
//! the `scanner_hosts` row, and the `scanner:<org>` and `scanner:verified` tags on the
//! address's rows that do not have them yet, so that sharing, which reads the tags, leaves
//! out the requests recorded before the answer came. Re-tagged rows get a new `changed_seq`
//! (and rows already shipped are watched), as a re-tag by `tarpit classify` does, so the
//! central store gets their tags too.

use rusqlite::{Connection, params};

use crate::event::{ScannerHost, format_timestamp};

/// Records the proof, and tags the address's rows recorded before it.
pub(super) fn record_scanner_host(
    tx: &Connection,
    host: &ScannerHost,
    sensor: &str,
    seq: i64,
) -> rusqlite::Result<()> {
    let ip = host.client_ip.to_canonical().to_string();
    let at = format_timestamp(host.timestamp);
    tx.prepare_cached(
        "INSERT INTO scanner_hosts
             (client_ip, org, via, host_name, first_verified, last_verified, sensor_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
         ON CONFLICT (client_ip) DO UPDATE SET
             org = excluded.org, via = excluded.via, host_name = excluded.host_name,
             last_verified = excluded.last_verified",
    )?
    .execute(params![
        ip,
        host.org.as_ref(),
        host.via,
        host.host_name,
        at,
        sensor
    ])?;
    let org_tag = format!("{}{}", crate::scanner::PREFIX, host.org);
    // The rows of this address still without the proof (the `client_ip` index finds them).
    let untagged = "SELECT id FROM events
         WHERE client_ip = ?1
           AND id NOT IN (SELECT event_id FROM request_tags WHERE tag = ?2)";
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO ship_watch (event_id, version)
         SELECT id, -1 FROM ({untagged})
         WHERE id <= (SELECT cursor_id FROM ship_state WHERE target = ?3)"
    ))?
    .execute(params![ip, crate::scanner::VERIFIED, crate::ship::TARGET])?;
    tx.prepare_cached(&format!(
        "UPDATE events SET changed_seq = ?3 WHERE id IN ({untagged})"
    ))?
    .execute(params![ip, crate::scanner::VERIFIED, seq])?;
    for tag in [org_tag.as_str(), crate::scanner::VERIFIED] {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO request_tags (event_id, conn_id, request_seq, tag)
             SELECT id, conn_id, request_seq, ?2 FROM events WHERE client_ip = ?1",
        )?
        .execute(params![ip, tag])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::event::{Event, RequestRecord};
    use crate::sink::Sink;
    use crate::sink::sqlite::SqliteSink;

    fn request(conn_id: u64, client: &str) -> Arc<Event> {
        let mut record = RequestRecord::sample(client.parse().unwrap());
        record.conn_id = conn_id;
        Arc::new(Event::Request(Box::new(record)))
    }

    fn tags(sink: &SqliteSink, conn_id: u64) -> Vec<String> {
        sink.conn
            .prepare("SELECT tag FROM request_tags WHERE conn_id = ?1 ORDER BY tag")
            .unwrap()
            .query_map([conn_id as i64], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_proof_tags_the_rows_recorded_before_it_and_only_that_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::new(crate::db::open(&dir.path().join("t.db")).unwrap(), "s1");
        sink.write_batch(&[request(1, "184.105.139.70"), request(2, "203.0.113.9")])
            .unwrap();
        let seq_before: i64 = sink
            .conn
            .query_row(
                "SELECT changed_seq FROM events WHERE conn_id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let host = ScannerHost {
            client_ip: "184.105.139.70".parse::<IpAddr>().unwrap(),
            org: "shadowserver".into(),
            via: "rdns",
            host_name: "scan-70.shadowserver.org".into(),
            timestamp: SystemTime::now(),
        };
        sink.write_batch(&[Arc::new(Event::ScannerHost(host.clone()))])
            .unwrap();
        assert_eq!(tags(&sink, 1), ["scanner:shadowserver", "scanner:verified"]);
        assert!(tags(&sink, 2).is_empty(), "another address is untouched");
        let seq_after: i64 = sink
            .conn
            .query_row(
                "SELECT changed_seq FROM events WHERE conn_id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(seq_after > seq_before, "re-tagged rows are shipped again");
        // Proven again (the cache expired): one row, first proof kept, nothing doubled.
        sink.write_batch(&[Arc::new(Event::ScannerHost(host))])
            .unwrap();
        let (rows, org, name): (i64, String, String) = sink
            .conn
            .query_row(
                "SELECT COUNT(*), MAX(org), MAX(host_name) FROM scanner_hosts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (rows, org.as_str(), name.as_str()),
            (1, "shadowserver", "scan-70.shadowserver.org")
        );
        assert_eq!(tags(&sink, 1).len(), 2);
    }
}
