//! Actors in SQLite: every client address belongs to one actor (`actor_clients`), every
//! request row carries its client's actor (`events.actor_id`), and a canary token sent by a
//! client other than the one it was issued to joins their two actors (union by size, every
//! row of the smaller re-pointed), recorded in `actor_merges` with the sighting as evidence.
//!
//! Against a client sending thousands of crafted requests:
//! - only a token the pipeline recognised (issued by this sensor or its fleet, see
//!   `crate::canary`) can merge, and a token it invented is never one;
//! - a client's own token, sent back from its own address, merges nothing;
//! - each token merges at most [`MERGE_LIMIT`] times: a credential posted publicly and tried by
//!   many unrelated scanners stops joining them (each later sighting is still recorded, with
//!   `merged = 0`);
//! - union by size: a row is re-pointed only when its actor joins one at least as large, so
//!   no row moves more than log2(clients) times whatever order the merges come in;
//! - the cache of client → actor is bounded (an LRU of [`CACHE_CLIENTS`]); a miss is one
//!   primary-key lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;

use rusqlite::{Connection, OptionalExtension, params};

use crate::event::{RequestRecord, Sighting, format_timestamp};

/// How many times one token may merge actors.
pub const MERGE_LIMIT: i64 = 64;

/// Clients whose actor is kept in memory.
const CACHE_CLIENTS: usize = 65_536;

/// The sink's actor bookkeeping, between and within batches.
#[derive(Debug)]
pub struct Actors {
    /// Recent clients' actors.
    cache: lru::LruCache<IpAddr, i64>,
    /// Actors seen in this batch, and the latest time each was seen.
    seen: HashMap<i64, String>,
}

impl Default for Actors {
    fn default() -> Self {
        Self {
            cache: lru::LruCache::new(NonZeroUsize::new(CACHE_CLIENTS).expect("non-zero")),
            seen: HashMap::new(),
        }
    }
}

impl Actors {
    /// The actor of `client`, created (one client, first and last seen `at`) if it has none.
    pub fn actor_of(&mut self, tx: &Connection, client: IpAddr, at: &str) -> rusqlite::Result<i64> {
        let client = client.to_canonical();
        let actor = match self.cache.get(&client) {
            Some(actor) => *actor,
            None => {
                let ip = client.to_string();
                let known: Option<i64> = tx
                    .prepare_cached("SELECT actor_id FROM actor_clients WHERE client_ip = ?1")?
                    .query_row([&ip], |row| row.get(0))
                    .optional()?;
                let actor = match known {
                    Some(actor) => actor,
                    None => {
                        tx.prepare_cached(
                            "INSERT INTO actors (first_seen, last_seen, clients) VALUES (?1, ?1, 1)",
                        )?
                        .execute([at])?;
                        let actor = tx.last_insert_rowid();
                        tx.prepare_cached(
                            "INSERT INTO actor_clients (client_ip, actor_id, first_seen)
                             VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![ip, actor, at])?;
                        actor
                    }
                };
                self.cache.put(client, actor);
                actor
            }
        };
        match self.seen.get_mut(&actor) {
            Some(last) if last.as_str() >= at => {}
            Some(last) => *last = at.to_owned(),
            None => {
                self.seen.insert(actor, at.to_owned());
            }
        }
        Ok(actor)
    }

    /// Records the tokens `request` issued and the ones it carried; merges actors on each
    /// sighting of a token issued to another client.
    /// Rows a merge re-points get the change number `seq` gives (and are watched, when shipped
    /// already), so the fleet's store gets their new actor.
    pub(super) fn record_canary(
        &mut self,
        tx: &Connection,
        request: &RequestRecord,
        (sensor, seq): (&str, &mut super::ChangeSeq),
    ) -> rusqlite::Result<()> {
        let Some(canary) = request.canary.as_deref() else {
            return Ok(());
        };
        let at = format_timestamp(request.timestamp);
        let client = request.client_ip.to_canonical().to_string();
        for issued in &canary.issued {
            tx.prepare_cached(
                "INSERT INTO canary_tokens (sensor_id, client_ip, kind, ordinal, first_issued,
                     last_issued, issues, first_conn_id, first_path)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, ?6, ?7)
                 ON CONFLICT (sensor_id, client_ip, kind, ordinal)
                 DO UPDATE SET last_issued = excluded.last_issued, issues = issues + 1",
            )?
            .execute(params![
                sensor,
                client,
                issued.kind,
                issued.ordinal,
                at,
                request.conn_id as i64,
                request.http_path,
            ])?;
        }
        for sighting in &canary.sightings {
            self.sighting(tx, request, sighting, (sensor, &at, &mut *seq))?;
        }
        Ok(())
    }

    /// One sighting: recorded, and a merge when it joins two actors within the token's limit.
    fn sighting(
        &mut self,
        tx: &Connection,
        request: &RequestRecord,
        sighting: &Sighting,
        (sensor, at, seq): (&str, &str, &mut super::ChangeSeq),
    ) -> rusqlite::Result<()> {
        let issued_at = format_timestamp(sighting.first_issued);
        let issued_to = sighting.issued_to.to_canonical().to_string();
        let token_row = (
            sighting.issued_by.as_ref(),
            issued_to.as_str(),
            sighting.kind,
            sighting.ordinal,
        );
        let merges: i64 = tx
            .prepare_cached(
                "SELECT merges FROM canary_tokens
                 WHERE sensor_id = ?1 AND client_ip = ?2 AND kind = ?3 AND ordinal = ?4",
            )?
            .query_row(
                params![token_row.0, token_row.1, token_row.2, token_row.3],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let issued_actor = self.actor_of(tx, sighting.issued_to, &issued_at)?;
        let current = self.actor_of(tx, request.client_ip, at)?;
        let joins = issued_actor != current && merges < MERGE_LIMIT;
        let (winner, loser) = if joins {
            self.order(tx, issued_actor, current)?
        } else {
            (current, current)
        };
        tx.prepare_cached(
            "INSERT INTO token_sightings (timestamp, sensor_id, conn_id, request_seq, client_ip,
                 kind, ordinal, location, issued_to, issued_by, first_issued, issued_path,
                 actor_id, merged)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            at,
            sensor,
            request.conn_id as i64,
            request.request_seq,
            request.client_ip.to_canonical().to_string(),
            sighting.kind,
            sighting.ordinal,
            sighting.location,
            issued_to,
            sighting.issued_by.as_ref(),
            issued_at,
            sighting.issued_path.as_ref(),
            winner,
            joins,
        ])?;
        if !joins {
            return Ok(());
        }
        let sighting_id = tx.last_insert_rowid();
        let evidence = format!(
            "{kind} token {ordinal} issued to {issued_to} by sensor {by} at {issued_at} ({path}) \
             was sent by {client} in its {location} at {at}",
            kind = sighting.kind,
            ordinal = sighting.ordinal,
            by = sighting.issued_by,
            path = sighting.issued_path,
            client = request.client_ip.to_canonical(),
            location = sighting.location,
        );
        self.merge(
            tx,
            (winner, loser),
            sighting_id,
            (&evidence, at, seq.take()),
        )?;
        tx.prepare_cached(
            "UPDATE canary_tokens SET merges = merges + 1
             WHERE sensor_id = ?1 AND client_ip = ?2 AND kind = ?3 AND ordinal = ?4",
        )?
        .execute(params![token_row.0, token_row.1, token_row.2, token_row.3])?;
        Ok(())
    }

    /// `(winner, loser)`: the actor with more clients survives (the older on a tie).
    fn order(&self, tx: &Connection, a: i64, b: i64) -> rusqlite::Result<(i64, i64)> {
        let clients = |actor: i64| -> rusqlite::Result<i64> {
            tx.prepare_cached("SELECT clients FROM actors WHERE actor_id = ?1")?
                .query_row([actor], |row| row.get(0))
        };
        let (ca, cb) = (clients(a)?, clients(b)?);
        Ok(if (ca, -a) >= (cb, -b) { (a, b) } else { (b, a) })
    }

    /// Joins `loser` into `winner`: its clients and rows re-pointed, the merge recorded.
    fn merge(
        &mut self,
        tx: &Connection,
        (winner, loser): (i64, i64),
        sighting_id: i64,
        (evidence, at, seq): (&str, &str, i64),
    ) -> rusqlite::Result<()> {
        // Rows shipped already are watched, so the store gets their new actor.
        tx.prepare_cached(
            "INSERT OR REPLACE INTO ship_watch (event_id, version)
             SELECT id, -1 FROM events
             WHERE client_ip IN (SELECT client_ip FROM actor_clients WHERE actor_id = ?1)
               AND id <= (SELECT cursor_id FROM ship_state WHERE target = ?2)",
        )?
        .execute(params![loser, crate::ship::TARGET])?;
        tx.prepare_cached(
            "UPDATE events SET actor_id = ?1, changed_seq = ?3
             WHERE client_ip IN (SELECT client_ip FROM actor_clients WHERE actor_id = ?2)",
        )?
        .execute([winner, loser, seq])?;
        tx.prepare_cached("UPDATE actor_clients SET actor_id = ?1 WHERE actor_id = ?2")?
            .execute([winner, loser])?;
        tx.prepare_cached(
            "UPDATE actors SET
                 clients = clients + (SELECT clients FROM actors WHERE actor_id = ?2),
                 first_seen = MIN(first_seen, (SELECT first_seen FROM actors WHERE actor_id = ?2)),
                 last_seen = MAX(last_seen, (SELECT last_seen FROM actors WHERE actor_id = ?2))
             WHERE actor_id = ?1",
        )?
        .execute([winner, loser])?;
        tx.prepare_cached(
            "UPDATE actors SET merged_into = ?1 WHERE actor_id = ?2 OR merged_into = ?2",
        )?
        .execute([winner, loser])?;
        tx.prepare_cached(
            "INSERT INTO actor_merges (timestamp, actor_id, merged_actor_id, sighting_id, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![at, winner, loser, sighting_id, evidence])?;
        for (_, actor) in self.cache.iter_mut() {
            if *actor == loser {
                *actor = winner;
            }
        }
        if let Some(last) = self.seen.remove(&loser) {
            let entry = self.seen.entry(winner).or_default();
            if *entry < last {
                *entry = last;
            }
        }
        Ok(())
    }

    /// Writes the batch's latest sightings of each actor (`last_seen`): one update per actor
    /// and batch, not per request.
    pub fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        for (actor, last) in self.seen.drain() {
            tx.prepare_cached(
                "UPDATE actors SET last_seen = MAX(last_seen, ?2) WHERE actor_id = ?1",
            )?
            .execute(params![actor, last])?;
        }
        Ok(())
    }

    /// Forgets what a failed batch may have left in memory (its transaction rolled back).
    pub fn forget(&mut self) {
        self.cache.clear();
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::event::{CanaryRecord, Event, IssuedToken};
    use crate::sink::Sink;
    use crate::sink::sqlite::SqliteSink;

    fn ip(n: u32) -> IpAddr {
        std::net::Ipv4Addr::from(0xC633_0000 + n).into() // 198.51.0.0/16
    }

    /// A request from `client`, issuing `issued` tokens and carrying tokens issued to `seen`.
    fn request(conn_id: u64, client: IpAddr, issued: bool, seen: &[IpAddr]) -> Arc<Event> {
        let mut record = RequestRecord::sample(client);
        record.conn_id = conn_id;
        record.timestamp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + conn_id);
        let mut canary = CanaryRecord::default();
        if issued {
            canary.issued.push(IssuedToken {
                kind: "password",
                ordinal: 0,
            });
        }
        for to in seen {
            canary.sightings.push(Sighting {
                kind: "password",
                ordinal: 0,
                location: "authorization",
                issued_to: *to,
                issued_by: "sensor-1".into(),
                first_issued: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                issued_path: "/.env".into(),
            });
        }
        record.canary = Some(Box::new(canary));
        Arc::new(Event::Request(Box::new(record)))
    }

    fn sink() -> (tempfile::TempDir, SqliteSink) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("t.db")).unwrap();
        (dir, SqliteSink::new(conn, "sensor-1"))
    }

    fn count(sink: &SqliteSink, sql: &str) -> i64 {
        sink.conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    #[test]
    fn a_token_sent_from_twenty_other_addresses_joins_all_21_with_evidence() {
        let (_dir, mut sink) = sink();
        let issuer = ip(1);
        sink.write_batch(&[request(1, issuer, true, &[])]).unwrap();
        // Each address also made a request of its own before (an actor of its own), some in
        // the same batch as their sighting.
        for n in 2..=21u32 {
            let own = request(100 + u64::from(n), ip(n), false, &[]);
            let used = request(200 + u64::from(n), ip(n), false, &[issuer]);
            if n % 2 == 0 {
                sink.write_batch(&[own, used]).unwrap();
            } else {
                sink.write_batch(&[own]).unwrap();
                sink.write_batch(&[used]).unwrap();
            }
        }
        assert_eq!(
            count(&sink, "SELECT COUNT(DISTINCT actor_id) FROM events"),
            1
        );
        assert_eq!(
            count(&sink, "SELECT COUNT(*) FROM events WHERE actor_id IS NULL"),
            0
        );
        assert_eq!(
            count(
                &sink,
                "SELECT COUNT(*) FROM actors WHERE merged_into IS NULL"
            ),
            1
        );
        assert_eq!(
            count(
                &sink,
                "SELECT clients FROM actors WHERE merged_into IS NULL"
            ),
            21
        );
        assert_eq!(
            count(&sink, "SELECT COUNT(DISTINCT actor_id) FROM actor_clients"),
            1
        );
        assert_eq!(count(&sink, "SELECT COUNT(*) FROM actor_merges"), 20);
        assert_eq!(
            count(
                &sink,
                "SELECT COUNT(*) FROM actor_merges WHERE evidence LIKE \
                 'password token 0 issued to 198.51.0.1 by sensor sensor-1 at % (/.env) was sent by 198.51.0.% in its authorization at %'"
            ),
            20
        );
        assert_eq!(
            count(
                &sink,
                "SELECT COUNT(*) FROM token_sightings WHERE merged = 1"
            ),
            20
        );
        assert_eq!(count(&sink, "SELECT merges FROM canary_tokens"), 20);
        // Every merge's sighting is on record, and each names the surviving actor.
        let root = count(
            &sink,
            "SELECT actor_id FROM actors WHERE merged_into IS NULL",
        );
        assert_eq!(
            count(
                &sink,
                &format!("SELECT COUNT(*) FROM token_sightings WHERE actor_id = {root}")
            ),
            20
        );
    }

    #[test]
    fn clients_sending_back_only_their_own_tokens_stay_apart() {
        let (_dir, mut sink) = sink();
        let batch: Vec<Arc<Event>> = (0..1000u32)
            .flat_map(|n| {
                let conn = 2 * u64::from(n);
                [
                    request(conn, ip(n), true, &[]),
                    request(conn + 1, ip(n), false, &[ip(n)]),
                ]
            })
            .collect();
        for chunk in batch.chunks(300) {
            sink.write_batch(chunk).unwrap();
        }
        assert_eq!(
            count(&sink, "SELECT COUNT(DISTINCT actor_id) FROM events"),
            1000
        );
        assert_eq!(count(&sink, "SELECT COUNT(*) FROM actors"), 1000);
        assert_eq!(count(&sink, "SELECT COUNT(*) FROM actor_merges"), 0);
        assert_eq!(
            count(
                &sink,
                "SELECT COUNT(*) FROM token_sightings WHERE merged = 0"
            ),
            1000
        );
    }

    #[test]
    fn a_token_stops_merging_at_its_limit_and_rows_follow_the_larger_actor() {
        let (_dir, mut sink) = sink();
        let issuer = ip(1);
        sink.write_batch(&[request(1, issuer, true, &[])]).unwrap();
        let users = MERGE_LIMIT as u32 + 10;
        for n in 0..users {
            let client = ip(1000 + n);
            sink.write_batch(&[request(10 + u64::from(n), client, false, &[issuer])])
                .unwrap();
        }
        assert_eq!(
            count(&sink, "SELECT COUNT(*) FROM actor_merges"),
            MERGE_LIMIT
        );
        assert_eq!(
            count(&sink, "SELECT merges FROM canary_tokens"),
            MERGE_LIMIT
        );
        assert_eq!(
            count(&sink, "SELECT COUNT(*) FROM token_sightings"),
            i64::from(users)
        );
        assert_eq!(
            count(
                &sink,
                "SELECT COUNT(*) FROM token_sightings WHERE merged = 0"
            ),
            10
        );
        assert_eq!(
            count(
                &sink,
                "SELECT COUNT(*) FROM actors WHERE merged_into IS NULL"
            ),
            11
        );
        // The issuer's actor grew first, so every later client joined it: the issuer's rows
        // were never re-pointed, the joiners' were.
        let issuer_actor = count(&sink, "SELECT actor_id FROM events WHERE conn_id = 1");
        assert_eq!(issuer_actor, 1);
        assert_eq!(
            count(&sink, "SELECT clients FROM actors WHERE actor_id = 1"),
            MERGE_LIMIT + 1
        );
        // A failed batch leaves nothing cached that the database does not hold.
        sink.actors.forget();
        sink.write_batch(&[request(5000, issuer, false, &[])])
            .unwrap();
        assert_eq!(
            count(&sink, "SELECT actor_id FROM events WHERE conn_id = 5000"),
            1
        );
    }
}
