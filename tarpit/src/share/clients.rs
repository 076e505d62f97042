//! The record as others get it: one summary per client address, read from SQLite, with only
//! what [`super`] lists as shared. The STIX bundle and the MISP event are both built from it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::SystemTime;

use rusqlite::Connection;

use crate::analysis::export::Anonymizer;

/// Requests shown per client (distinct method and path): enough to say what it was after.
pub const SAMPLES_PER_CLIENT: usize = 5;

/// The tag families that are shared; `canary:` (which clients used our tokens) stays home.
pub const SHARED_TAG_PREFIXES: &[&str] = &[
    "attack:", "cve:", "tool:", "target:", "crawler:", "scanner:",
];

/// One request, as shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was recorded (RFC 3339, milliseconds).
    pub timestamp: String,
    /// The method.
    pub method: String,
    /// The path, never the query string.
    pub path: String,
    /// The User-Agent, if any.
    pub user_agent: Option<String>,
    /// The port the client dialled.
    pub target_port: u16,
    /// The client's own port.
    pub client_port: u16,
}

/// One client, as shared.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSummary {
    /// The address (a pseudonym when anonymised).
    pub ip: String,
    /// Its first and last request.
    pub first_seen: SystemTime,
    /// See `first_seen`.
    pub last_seen: SystemTime,
    /// Requests recorded.
    pub requests: u64,
    /// Shared tags of any of its requests.
    pub tags: BTreeSet<String>,
    /// Ports it dialled.
    pub ports: BTreeSet<u16>,
    /// Up to [`SAMPLES_PER_CLIENT`] of its requests.
    pub samples: Vec<Sample>,
}

/// Everything a sharing format needs.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The sensor's name as shared (its id, or "anonymous" when anonymised).
    pub sensor: String,
    /// When the summary was made.
    pub generated: SystemTime,
    /// Clients, by address.
    pub clients: Vec<ClientSummary>,
    /// Requests left out because their client is a verified research scanner.
    pub scanner_requests_left_out: u64,
}

/// What to read.
#[derive(Default)]
pub struct SummaryOptions<'a> {
    /// Only requests at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Include verified research scanners.
    pub include_scanners: bool,
    /// Replace addresses and scrub texts.
    pub anonymizer: Option<&'a Anonymizer>,
}

/// Reads the database into one summary per client. The sensor's own addresses (every
/// `local_ip` it recorded) are never a client; verified scanners are left out unless asked.
pub fn summarize(conn: &Connection, options: &SummaryOptions<'_>) -> rusqlite::Result<Summary> {
    let own: HashSet<String> = conn
        .prepare("SELECT DISTINCT local_ip FROM events WHERE local_ip IS NOT NULL")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let sensor: Option<String> = conn
        .query_row(
            "SELECT sensor_id FROM events WHERE sensor_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let from = crate::db::events_from(options.since.is_some());
    let mut statement = conn.prepare(&format!(
        "SELECT timestamp, client_ip, http_method, http_path, user_agent, target_port,
                (SELECT group_concat(tag, ',') FROM request_tags t WHERE t.event_id = events.id),
                client_port
         FROM {from} WHERE timestamp >= ?1 AND client_ip IS NOT NULL ORDER BY timestamp, id"
    ))?;
    let mut rows = statement.query([options.since.clone().unwrap_or_default()])?;
    let mut clients: BTreeMap<String, ClientSummary> = BTreeMap::new();
    let mut left_out = 0;
    while let Some(row) = rows.next()? {
        let timestamp: String = row.get(0)?;
        let client: String = row.get(1)?;
        let tags: Option<String> = row.get(6)?;
        let tags: Vec<&str> = tags
            .as_deref()
            .map_or(Vec::new(), |t| t.split(',').collect());
        if own.contains(&client) {
            continue;
        }
        if !options.include_scanners && crate::scanner::is_verified(&tags) {
            left_out += 1;
            continue;
        }
        // The tarpit's own rows end in Z; the replaced tool's are ISO 8601 without a zone.
        let Ok(at) = humantime::parse_rfc3339(&timestamp)
            .or_else(|_| humantime::parse_rfc3339_weak(&timestamp))
        else {
            continue;
        };
        let ip = match options.anonymizer {
            Some(anonymizer) => anonymizer.address_field(&client),
            None => client,
        };
        let summary = clients.entry(ip.clone()).or_insert_with(|| ClientSummary {
            ip,
            first_seen: at,
            last_seen: at,
            requests: 0,
            tags: BTreeSet::new(),
            ports: BTreeSet::new(),
            samples: Vec::new(),
        });
        summary.requests += 1;
        summary.first_seen = summary.first_seen.min(at);
        summary.last_seen = summary.last_seen.max(at);
        let port: Option<u16> = row.get(5)?;
        summary.ports.extend(port);
        summary.tags.extend(
            tags.iter()
                .filter(|t| SHARED_TAG_PREFIXES.iter().any(|p| t.starts_with(p)))
                .map(|t| t.to_string()),
        );
        // A request that carried one of our canary tokens is never a sample: the token would
        // leave with it.
        let carried_token = tags.iter().any(|t| t.starts_with("canary:"));
        let (method, path): (Option<String>, Option<String>) = (row.get(2)?, row.get(3)?);
        if let (Some(method), Some(path), false) = (method, path, carried_token)
            && summary.samples.len() < SAMPLES_PER_CLIENT
            && !summary
                .samples
                .iter()
                .any(|s| s.method == method && s.path == path)
        {
            let user_agent: Option<String> = row.get(4)?;
            let scrub = |text: String| match options.anonymizer {
                Some(anonymizer) => anonymizer.scrub(&text).into_owned(),
                None => text,
            };
            summary.samples.push(Sample {
                timestamp: crate::event::format_timestamp(at),
                method,
                path: scrub(path),
                user_agent: user_agent.map(scrub),
                target_port: port.unwrap_or(0),
                client_port: row.get::<_, Option<u16>>(7)?.unwrap_or(0),
            });
        }
    }
    Ok(Summary {
        sensor: match (options.anonymizer, sensor) {
            (Some(_), _) => "anonymous".to_owned(),
            (None, Some(sensor)) => sensor,
            (None, None) => "tarpit".to_owned(),
        },
        generated: SystemTime::now(),
        clients: clients.into_values().collect(),
        scanner_requests_left_out: left_out,
    })
}
