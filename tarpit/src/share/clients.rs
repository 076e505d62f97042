//! The record as others get it: one summary per client address, read from SQLite, with only
//! what [`super`] lists as shared. The STIX bundle and the MISP event are both built from it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::SystemTime;

use rusqlite::Connection;

use super::rows::SharedRequest;
use crate::analysis::export::Anonymizer;

/// Requests shown per client (distinct method and path): enough to say what it was after.
pub const SAMPLES_PER_CLIENT: usize = 5;

/// The tag families that are shared; `canary:` (which clients used our tokens) stays home.
pub const SHARED_TAG_PREFIXES: &[&str] = &[
    "attack:", "cve:", "tool:", "target:", "crawler:", "scanner:",
];

/// "1 HTTP request", "2 HTTP requests".
pub fn requests_text(count: u64) -> String {
    format!("{count} HTTP request{}", if count == 1 { "" } else { "s" })
}

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
    /// The client's own port (unknown behind a proxy that sends only `X-Real-IP`).
    pub client_port: Option<u16>,
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
    /// When the sensor first recorded (`sensors.first_seen`; the epoch when unknown): the
    /// creation time of its STIX identity, the same in every export and push.
    pub sensor_since: SystemTime,
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

/// Builds the per-client summary from requests one at a time (the export reads them all;
/// the TAXII push, a batch).
pub struct Aggregator<'a> {
    options: &'a SummaryOptions<'a>,
    clients: BTreeMap<String, ClientSummary>,
    left_out: u64,
}

impl<'a> Aggregator<'a> {
    /// An empty summary.
    pub fn new(options: &'a SummaryOptions<'a>) -> Self {
        Self {
            options,
            clients: BTreeMap::new(),
            left_out: 0,
        }
    }

    /// Counts one request in; verified scanners are left out unless asked (counted).
    pub fn add(&mut self, request: &SharedRequest) {
        if !self.options.include_scanners && request.from_verified_scanner() {
            self.left_out += 1;
            return;
        }
        let options = self.options;
        let ip = match options.anonymizer {
            Some(anonymizer) => anonymizer.address_field(&request.client_ip),
            None => request.client_ip.clone(),
        };
        let at = request.timestamp;
        let summary = self
            .clients
            .entry(ip.clone())
            .or_insert_with(|| ClientSummary {
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
        summary.ports.insert(request.target_port);
        summary.tags.extend(
            request
                .tags
                .iter()
                .filter(|t| SHARED_TAG_PREFIXES.iter().any(|p| t.starts_with(p)))
                .cloned(),
        );
        // A request that carried one of our canary tokens is never a sample: the token would
        // leave with it.
        if let (Some(method), Some(path), false) =
            (&request.method, &request.path, request.carried_token())
            && summary.samples.len() < SAMPLES_PER_CLIENT
            && !summary
                .samples
                .iter()
                .any(|s| &s.method == method && &s.path == path)
        {
            let scrub = |text: &str| match options.anonymizer {
                Some(anonymizer) => anonymizer.scrub(text).into_owned(),
                None => request.masked(text, &[]),
            };
            summary.samples.push(Sample {
                timestamp: crate::event::format_timestamp(at),
                method: method.clone(),
                path: scrub(path),
                user_agent: request.user_agent.as_deref().map(scrub),
                target_port: request.target_port,
                client_port: request.client_port,
            });
        }
    }

    /// The summary, for `sensor` (its id and first record; "anonymous" when anonymising).
    pub fn finish(self, sensor: Option<String>, sensor_since: Option<SystemTime>) -> Summary {
        Summary {
            sensor_since: sensor_since.unwrap_or(std::time::UNIX_EPOCH),
            sensor: match (self.options.anonymizer, sensor) {
                (Some(_), _) => "anonymous".to_owned(),
                (None, Some(sensor)) => sensor,
                (None, None) => "tarpit".to_owned(),
            },
            generated: SystemTime::now(),
            clients: self.clients.into_values().collect(),
            scanner_requests_left_out: self.left_out,
        }
    }
}

/// Reads the database into one summary per client. The sensor's own addresses (every
/// `local_ip` it recorded) are never a client; verified scanners are left out unless asked.
pub fn summarize(conn: &Connection, options: &SummaryOptions<'_>) -> rusqlite::Result<Summary> {
    let own: HashSet<String> = conn
        .prepare("SELECT DISTINCT local_ip FROM events WHERE local_ip IS NOT NULL")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let from = crate::db::events_from(options.since.is_some());
    let mut statement = conn.prepare(&format!(
        "SELECT {} FROM {from} WHERE timestamp >= ?1 ORDER BY timestamp, id",
        super::rows::COLUMNS
    ))?;
    let mut rows = statement.query([options.since.clone().unwrap_or_default()])?;
    let mut aggregator = Aggregator::new(options);
    while let Some(row) = rows.next()? {
        if let Some(request) = super::rows::from_row(row)?
            && !own.contains(&request.client_ip)
        {
            aggregator.add(&request);
        }
    }
    let sensor = sensor_id(conn)?;
    let since = match &sensor {
        Some(id) => sensor_since(conn, id)?,
        None => None,
    };
    Ok(aggregator.finish(sensor, since))
}

/// When sensor `id` first recorded (`sensors.first_seen`), if known.
pub fn sensor_since(conn: &Connection, id: &str) -> rusqlite::Result<Option<SystemTime>> {
    let first: Option<String> = conn
        .query_row(
            "SELECT first_seen FROM sensors WHERE sensor_id = ?1",
            [id],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(first.and_then(|t| humantime::parse_rfc3339(&t).ok()))
}

/// The sensor id of the latest row, if any.
pub fn sensor_id(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT sensor_id FROM events WHERE sensor_id IS NOT NULL ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    })
}
