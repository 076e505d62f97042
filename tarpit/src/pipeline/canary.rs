//! The pipeline's half of canary tokens (see [`crate::canary`]): each request is searched for
//! issued tokens (found ones become its `canary.sightings` and the `canary:hit` tag), and the
//! tokens its response issues are added to the index (`canary.issued`, which the SQLite sink
//! records in `canary_tokens`). At start the index is rebuilt from `canary_tokens`: tokens are
//! recomputed from the key, never read back.
//!
//! How it holds against crafted traffic is in [`crate::canary`]'s module doc: the index is
//! bounded, a client re-fetching bait adds nothing, and a word that was never issued matches
//! nothing.

use std::sync::Arc;

use rusqlite::Connection;

use crate::canary::{self, Issued, Minter, Recipient, Token, TokenIndex};
use crate::classify::normalize::Fields;
use crate::event::{CanaryRecord, IssuedToken, RequestRecord, Sighting};

/// Tokens recognised at most (the oldest are forgotten first): about 100 bytes each.
pub const MAX_TOKENS: usize = 500_000;

/// The index and the minter, on the pipeline.
#[derive(Debug)]
pub struct CanaryStage {
    minter: Minter,
    sensor: Arc<str>,
    index: TokenIndex,
    hit_tag: Arc<str>,
}

impl CanaryStage {
    /// The stage with the tokens `database` says were issued (the most recent first, up to
    /// `max_tokens`), each recomputed with `minter`.
    pub fn restore(
        minter: Minter,
        database: &Connection,
        max_tokens: usize,
    ) -> rusqlite::Result<Self> {
        let sensor: Arc<str> = minter.sensor().into();
        let mut stage = Self {
            minter,
            sensor,
            index: TokenIndex::new(max_tokens),
            hit_tag: canary::HIT_TAG.into(),
        };
        let mut statement = database.prepare(
            "SELECT sensor_id, client_ip, kind, ordinal, first_issued, first_path
             FROM canary_tokens ORDER BY last_issued DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([max_tokens as i64], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u8>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut restored: Vec<(Token, Issued)> = Vec::new();
        for row in rows {
            let (sensor, client, kind, ordinal, first, path) = row?;
            let Some(recipient) = Recipient::parse(&client, &kind, ordinal) else {
                continue;
            };
            let issued = Issued {
                sensor: sensor.as_str().into(),
                recipient,
                first_issued: humantime::parse_rfc3339(&first)
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                path: path.unwrap_or_default().into(),
            };
            restored.push((stage.minter.token_of(&sensor, &recipient), issued));
        }
        // Oldest first, so the index forgets in the right order.
        for (token, issued) in restored.into_iter().rev() {
            stage.index.insert(token, issued);
        }
        Ok(stage)
    }

    /// The minter (the workers get a copy, to write tokens into pages).
    pub fn minter(&self) -> &Minter {
        &self.minter
    }

    /// Adds the tokens other sensors of the fleet issued (read from the store by
    /// `ship::canary`), each recomputed with this sensor's key: a fleet shares one key.
    pub fn add_fleet(&mut self, issues: Vec<crate::ship::canary::FleetIssue>) {
        for issue in issues {
            let Some(recipient) = Recipient::parse(&issue.client_ip, &issue.kind, issue.ordinal)
            else {
                continue;
            };
            let token = self.minter.token_of(&issue.sensor_id, &recipient);
            self.index.insert(
                token,
                Issued {
                    sensor: issue.sensor_id.as_str().into(),
                    recipient,
                    first_issued: std::time::SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(issue.first_issued.max(0) as u64),
                    path: issue.first_path.as_str().into(),
                },
            );
        }
    }

    /// Tokens the index holds.
    pub fn tokens(&self) -> usize {
        self.index.len()
    }

    /// Searches `record` (decoded as `fields`) for issued tokens and notes the tokens its
    /// response issues.
    pub fn on_request(&mut self, record: &mut RequestRecord, fields: &Fields) {
        let mut found = CanaryRecord::default();
        for hit in canary::search::find(&self.index, fields) {
            found.sightings.push(Sighting {
                kind: hit.issued.recipient.kind.name(),
                ordinal: hit.issued.recipient.ordinal,
                location: hit.location,
                issued_to: hit.issued.recipient.client_ip,
                issued_by: hit.issued.sensor.clone(),
                first_issued: hit.issued.first_issued,
                issued_path: hit.issued.path.clone(),
            });
        }
        if !record.canary_slots.is_empty() {
            let path: Arc<str> = record.http_path.as_deref().unwrap_or("").into();
            for slot in record.canary_slots {
                let recipient = Recipient {
                    client_ip: record.client_ip.to_canonical(),
                    kind: slot.kind,
                    ordinal: slot.ordinal,
                };
                let issued = Issued {
                    sensor: self.sensor.clone(),
                    recipient,
                    first_issued: record.timestamp,
                    path: path.clone(),
                };
                self.index.insert(self.minter.token(&recipient), issued);
                found.issued.push(IssuedToken {
                    kind: slot.kind.name(),
                    ordinal: slot.ordinal,
                });
            }
        }
        if !found.sightings.is_empty() {
            record.tags.push(self.hit_tag.clone());
            record.tags.sort_unstable();
            record.tags.dedup();
        }
        if !found.sightings.is_empty() || !found.issued.is_empty() {
            record.canary = Some(Box::new(found));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine as _;

    use super::*;
    use crate::adaptive::Persona;
    use crate::event::Event;
    use crate::pipeline::request_view;
    use crate::sink::Sink;
    use std::net::IpAddr;

    const KEY: &[u8] = b"a test key of some length";

    fn stage(database: &Connection) -> CanaryStage {
        CanaryStage::restore(Minter::new(KEY, "sensor-1").unwrap(), database, 1000).unwrap()
    }

    /// The stage's work on `record`, as the pipeline does it.
    fn run(stage: &mut CanaryStage, record: &mut RequestRecord) {
        let fields = Fields::of(&request_view(record));
        stage.on_request(record, &fields);
    }

    /// The bait `/.env` as the built-in persona serves it to `client`, tokens written in.
    fn env_served_to(persona: &Persona, client: IpAddr) -> (RequestRecord, String) {
        let page = persona.page(persona.page_for("/.env", false));
        let minter = Minter::new(KEY, "sensor-1").unwrap();
        let mut body = page.body.to_vec();
        crate::canary::Issuer {
            minter: &minter,
            client_ip: client,
        }
        .write(page.slots, 0, &mut body);
        let mut record = RequestRecord::sample(client);
        record.http_path = Some("/.env".into());
        record.canary_slots = page.slots;
        (record, String::from_utf8(body).unwrap())
    }

    fn value<'a>(body: &'a str, key: &str) -> &'a str {
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap()
    }

    #[test]
    fn bait_tokens_come_back_as_sightings_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let database = crate::db::open(&dir.path().join("t.db")).unwrap();
        let persona = Persona::load(None, 10, 10).unwrap();
        let mut stage = stage(&database);
        let issuer: IpAddr = "203.0.113.9".parse().unwrap();
        let (mut fetch, body) = env_served_to(&persona, issuer);
        run(&mut stage, &mut fetch);
        let issued = &fetch.canary.as_ref().unwrap().issued;
        assert_eq!(issued.len(), 4, "{issued:?}"); // two passwords, an AWS key id and secret
        assert!(fetch.tags.is_empty());
        let password = value(&body, "DB_PASSWORD").to_owned();
        let key_id = value(&body, "AWS_ACCESS_KEY_ID").to_owned();
        assert!(key_id.starts_with("AKIA") && key_id.len() == 20, "{key_id}");
        // Another address uses the password in Basic credentials: a sighting of the issuer's.
        let user = |record: &mut RequestRecord, stage: &mut CanaryStage| {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}"));
            record.headers_json = vec![("Authorization".into(), format!("Basic {basic}"))];
            run(stage, record);
        };
        let mut used = RequestRecord::sample("198.51.100.20".parse().unwrap());
        user(&mut used, &mut stage);
        let sightings = &used.canary.as_ref().unwrap().sightings;
        assert_eq!(sightings.len(), 1);
        assert_eq!(sightings[0].issued_to, issuer);
        assert_eq!(
            (sightings[0].kind, sightings[0].location),
            ("password", "authorization")
        );
        assert_eq!(&*sightings[0].issued_path, "/.env");
        assert_eq!(used.tags, vec![Arc::<str>::from("canary:hit")]);
        // Written by the sink, then read back by a restarted sensor: recognised again.
        let mut sink = crate::sink::sqlite::SqliteSink::new(
            crate::db::open(&dir.path().join("t.db")).unwrap(),
            "sensor-1",
        );
        sink.write_batch(&[Arc::new(Event::Request(Box::new(fetch)))])
            .unwrap();
        let mut restarted = stage_after_restart(&dir);
        assert_eq!(restarted.tokens(), 4);
        let mut again = RequestRecord::sample("198.51.100.21".parse().unwrap());
        again.http_query = Some(format!("key={key_id}"));
        run(&mut restarted, &mut again);
        let sightings = &again.canary.as_ref().unwrap().sightings;
        assert_eq!(
            (sightings[0].kind, sightings[0].issued_to),
            ("aws_key_id", issuer)
        );
        // A sensor with another key recognises none of them.
        let other = CanaryStage::restore(
            Minter::new(b"another key, another fleet", "sensor-1").unwrap(),
            &crate::db::open(&dir.path().join("t.db")).unwrap(),
            1000,
        )
        .unwrap();
        let mut elsewhere = RequestRecord::sample("198.51.100.22".parse().unwrap());
        elsewhere.http_query = Some(format!("key={key_id}"));
        let mut other = other;
        run(&mut other, &mut elsewhere);
        assert!(elsewhere.canary.is_none());
    }

    fn stage_after_restart(dir: &tempfile::TempDir) -> CanaryStage {
        stage(&crate::db::open(&dir.path().join("t.db")).unwrap())
    }

    #[test]
    fn refetching_bait_adds_nothing_and_guesses_are_never_sightings() {
        let dir = tempfile::tempdir().unwrap();
        let database = crate::db::open(&dir.path().join("t.db")).unwrap();
        let persona = Persona::load(None, 10, 10).unwrap();
        let mut stage = stage(&database);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..1000 {
            let (mut fetch, _) = env_served_to(&persona, client);
            run(&mut stage, &mut fetch);
        }
        assert_eq!(stage.tokens(), 4);
        // Well-shaped inventions, as a client guessing the format would send them.
        for guess in [
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12",
            "Q8f3kLm2Zp9Xc4Vb7Nw1",
            "0123456789abcdef0123456789abcdef",
        ] {
            let mut record = RequestRecord::sample("198.51.100.30".parse().unwrap());
            record.http_query = Some(format!("k={guess}"));
            record.headers_json = vec![("Cookie".into(), format!("PHPSESSID={guess}"))];
            run(&mut stage, &mut record);
            assert!(record.canary.is_none(), "{guess}");
        }
    }
}
