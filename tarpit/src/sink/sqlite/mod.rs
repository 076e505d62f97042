//! The SQLite sink: inserts a row when a request starts, completes it when its response ends,
//! and keeps one row per connection. Every insert and change of a request row gets a new
//! `changed_seq`, which is what shipping (`crate::ship`) follows. One transaction per batch
//! keeps the write rate far above the accept rate; nothing on the hot path waits for it.
//!
//! A row whose end is in the same batch as its start is inserted complete: a scanner that
//! connects, reads the first byte and resets makes two inserts instead of two inserts and two
//! updates (each update a B-tree search and the whole row written again).

use std::sync::Arc;

use rusqlite::{CachedStatement, Connection, params};

pub mod actors;
mod ends;
mod scanners;

use super::{Batching, Sink, SinkError};
use crate::adaptive::model::FamilyBatch;
use crate::event::{
    AbuseReport, ConnectionClosed, ConnectionOpened, Event, RequestRecord, ResponseEnd,
    format_timestamp, headers_to_json,
};
use crate::fingerprint::Fingerprint;
use actors::Actors;
use ends::BatchEnds;

/// The SQLite sink's page cache, in SQLite's notation for KiB (negative): 8 MiB, room for a
/// full batch's pages (see [`SqliteSink::new`], and the test
/// `a_full_batch_reads_fewer_pages_than_it_writes`).
const SINK_CACHE_KIB: &str = "-8192";

/// How the SQLite sink gathers its transactions: for 100 ms, at most 16,384 events (4,096
/// churned connections). Most of a transaction's cost is per commit, not per row: a commit
/// writes every page it touched to the WAL, and the `events(client_ip)` index has a leaf of
/// its own for each address seen lately (a row lands at the end of its address's run of
/// entries), so the index pages a commit writes grow with the addresses in it, not with its
/// rows, and the checkpointer copies each of them again. Committing whenever 512 events had
/// queued, a churn's writer wrote 1.04 WAL pages per connection; every 20 ms, 0.55 (fifth
/// pass). From 400 connections a transaction (20 ms of a 20,000/s churn) to 2,000 (100 ms),
/// the writer and its checkpointer went from 14.1 to 9.6 µs of CPU per connection, and
/// further to 5,000 gained nothing (`cargo xtask bench sinks`; docs/benchmarks.md, tenth
/// pass). A row is on disk up to this much later than the JSON log's line (a drip tick is
/// 1.5 s); `kill -9` loses what is not committed, as it loses what is still queued.
pub const SQLITE_BATCHING: Batching = Batching {
    linger: std::time::Duration::from_millis(100),
    max_events: 16_384,
};

/// Writes events into the `events` and `connections` tables (see [`crate::db`]).
#[derive(Debug)]
pub struct SqliteSink {
    conn: Connection,
    /// This sensor's id, written into every row.
    sensor_id: String,
    /// The batch's response ends by request, and connection ends by connection (kept between
    /// batches for their allocation).
    ends: BatchEnds,
    /// Clients' actors and the merges canary tokens make.
    actors: Actors,
}

impl SqliteSink {
    /// Wraps a connection already opened and migrated by [`crate::db::open`]; every row will
    /// carry `sensor_id`.
    pub fn new(mut conn: Connection, sensor_id: &str) -> Self {
        if let Err(error) = conn.busy_handler(Some(wait_a_millisecond)) {
            tracing::warn!("cannot set the SQLite sink's busy handler: {error}");
        }
        // A batch's dirty pages stay in memory until its commit: with spilling on, a batch
        // touching more pages than the cache held wrote pages to the WAL mid-transaction and
        // again at the commit once touched again (a churn's writer spilled 20 times per
        // commit). The cache holds a full batch's pages and the B-trees' inner pages beside
        // them; at SQLite's default of 2 MB, the pinned pages pushed the inner pages out and
        // the writer read 2.5 pages from the file per row (docs/benchmarks.md, fifth pass).
        for (pragma, value) in [("cache_spill", "OFF"), ("cache_size", SINK_CACHE_KIB)] {
            if let Err(error) = conn.pragma_update(None, pragma, value) {
                tracing::warn!("cannot set the SQLite sink's {pragma} to {value}: {error}");
            }
        }
        Self {
            conn,
            sensor_id: sensor_id.to_owned(),
            ends: BatchEnds::default(),
            actors: Actors::default(),
        }
    }
}

impl Sink for SqliteSink {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn write_batch(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        let written = self.write(events);
        if written.is_err() {
            self.actors.forget(); // rolled back: what it cached may not exist
        }
        written
    }

    fn batching(&self) -> Batching {
        SQLITE_BATCHING
    }
}

impl SqliteSink {
    fn write(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        // Immediate: the change numbers below are read under the write lock, so they are above
        // every number any other writer (`tarpit classify`) committed. One read and one write
        // of the counter per batch: nothing per row beyond the column itself.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sensor = self.sensor_id.as_str();
        let mut seq = ChangeSeq(crate::db::next_change_seq(&tx)?);
        let ends = &mut self.ends;
        let actors = &mut self.actors;
        let mut statements = Statements::prepare(&tx)?;
        ends.index(events);
        for (at, event) in events.iter().enumerate() {
            match event.as_ref() {
                Event::ConnectionOpened(e) => {
                    let end = ends.connection(events, at, e.conn_id);
                    // A row that was there already (ignored) gets its end as an update.
                    if insert_connection(
                        &mut statements.insert_connection,
                        e,
                        end.map(|(_, e)| e),
                        sensor,
                    )? && let Some((end_at, _)) = end
                    {
                        ends.written[end_at] = true;
                    }
                }
                Event::Request(e) => {
                    let end = ends.response(events, at, (e.conn_id, e.request_seq));
                    let timestamp = format_timestamp(e.timestamp);
                    let actor = actors.actor_of(&tx, e.client_ip, &timestamp)?;
                    let row = RequestRow {
                        sensor,
                        seq: seq.take(),
                        actor,
                        timestamp: &timestamp,
                    };
                    if insert_request(&tx, &mut statements, e, end.map(|(_, e)| e), row)?
                        && let Some((end_at, _)) = end
                    {
                        ends.written[end_at] = true;
                    }
                    actors.record_canary(&tx, e, (sensor, &mut seq))?;
                }
                Event::ResponseEnd(e) if !ends.written[at] => {
                    complete_request(&mut statements.complete_request, e, seq.take())?;
                }
                Event::ConnectionClosed(e) if !ends.written[at] => {
                    complete_connection(&mut statements.complete_connection, e)?;
                }
                Event::ResponseEnd(_) | Event::ConnectionClosed(_) => {}
                Event::AbuseReport(e) => record_report(&tx, e, sensor, seq.take())?,
                Event::ScannerHost(e) => {
                    scanners::record_scanner_host(&tx, e, sensor, seq.take())?;
                }
                Event::GiveUpFamilies(batch) => store_families(&tx, batch)?,
            }
        }
        drop(statements); // they borrow the transaction
        actors.flush(&tx)?;
        crate::db::store_change_seq(&tx, seq.0 - 1)?;
        tx.commit()?;
        Ok(())
    }
}

/// Waits for another writer's lock (the CRS stage, `tarpit classify`) a millisecond at a time,
/// for at most 5 s. SQLite's own busy timeout sleeps 1, 2, 5, ... then 100 ms between tries,
/// long for a writer whose queue can fill at tens of thousands of events a second behind
/// another writer's transaction of a few milliseconds. Returns whether to try again.
fn wait_a_millisecond(tries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(1));
    tries < 5_000
}

/// The `changed_seq` of the batch's next row change (see [`crate::db::next_change_seq`]).
struct ChangeSeq(i64);

impl ChangeSeq {
    /// This change's number; the next one gets the number after it.
    fn take(&mut self) -> i64 {
        self.0 += 1;
        self.0 - 1
    }
}

/// The statements run for every connection, looked up in the connection's statement cache
/// once per batch: `prepare_cached` hashes the whole SQL text on every call (the request
/// insert's is 1.5 KB) and puts the statement back on every drop, which cost the writer
/// about a tenth of its time when asked once per row (docs/benchmarks.md, ninth pass).
struct Statements<'tx> {
    insert_connection: CachedStatement<'tx>,
    insert_request: CachedStatement<'tx>,
    insert_tag: CachedStatement<'tx>,
    complete_request: CachedStatement<'tx>,
    complete_connection: CachedStatement<'tx>,
}

impl<'tx> Statements<'tx> {
    fn prepare(conn: &'tx Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            insert_connection: conn.prepare_cached(INSERT_CONNECTION)?,
            insert_request: conn.prepare_cached(INSERT_REQUEST)?,
            insert_tag: conn.prepare_cached(INSERT_TAG)?,
            complete_request: conn.prepare_cached(COMPLETE_REQUEST)?,
            complete_connection: conn.prepare_cached(COMPLETE_CONNECTION)?,
        })
    }
}

const INSERT_CONNECTION: &str = "INSERT OR IGNORE INTO connections
       (conn_id, opened_at, peer_ip, peer_port, local_ip, local_port, worker, sensor_id,
        closed_at, end_reason, requests, bytes_sent, duration_s)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

const INSERT_REQUEST: &str = "INSERT OR IGNORE INTO events (
    timestamp, client_ip, client_port, target_port, http_method, http_path, http_query,
    user_agent, headers_json, response_status, error_message, conn_id, request_seq,
    http_version, client_ip_source, peer_ip, peer_port, local_ip, local_port,
    target_port_source, head_size, raw_preview, body_preview, body_sha256, body_length,
    target_port_ebpf, ebpf_lookup, target_port_original_dst, target_port_header,
    country_iso_code, country_name, city_name, latitude, longitude, asn_number,
    asn_organization, syn_ttl, syn_initial_ttl, syn_df, syn_window, syn_mss, syn_wscale,
    syn_options, syn_fp, tls_version, tls_sni, tls_alpn, ja4, header_order,
    header_order_hash, response_mode, giveup_limit_s, giveup_basis, planned_end_s,
    sensor_id, changed_seq, bytes_sent, duration_s, end_reason, closed_at, client_fin_s,
    actor_id)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
         ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34,
         ?35, ?36, ?37, ?38, ?39, ?40, ?41, ?42, ?43, ?44, ?45, ?46, ?47, ?48, ?49, ?50,
         ?51, ?52, ?53, ?54, ?55, ?56, ?57, ?58, ?59, ?60, ?61, ?62)";

const INSERT_TAG: &str = "INSERT OR IGNORE INTO request_tags (event_id, conn_id, request_seq, tag)
     VALUES (?1, ?2, ?3, ?4)";

const COMPLETE_REQUEST: &str = "UPDATE events SET bytes_sent = ?1, duration_s = ?2,
        end_reason = ?3, closed_at = ?4, client_fin_s = ?7, changed_seq = ?8
     WHERE conn_id = ?5 AND request_seq = ?6";

const COMPLETE_CONNECTION: &str = "UPDATE connections SET closed_at = ?1, end_reason = ?2,
        requests = ?3, bytes_sent = ?4, duration_s = ?5
     WHERE conn_id = ?6";

/// Inserts the connection's row, with its end when that is known already; false when the row
/// was there (nothing written).
fn insert_connection(
    statement: &mut CachedStatement<'_>,
    e: &ConnectionOpened,
    end: Option<&ConnectionClosed>,
    sensor: &str,
) -> rusqlite::Result<bool> {
    let inserted = statement.execute(params![
        e.conn_id as i64,
        format_timestamp(e.timestamp),
        e.peer_ip.to_string(),
        e.peer_port,
        e.local_ip.to_string(),
        e.local_port,
        e.worker as i64,
        sensor,
        end.map(|c| format_timestamp(c.closed_at)),
        end.map(|c| c.end_reason),
        end.map(|c| c.requests),
        end.map(|c| c.bytes_sent as i64),
        end.map(|c| c.duration_s),
    ])?;
    Ok(inserted == 1)
}

/// What a request's row gets besides its record.
struct RequestRow<'a> {
    sensor: &'a str,
    /// Its `changed_seq`.
    seq: i64,
    actor: i64,
    /// The record's timestamp as text (formatted once for the actor and the row).
    timestamp: &'a str,
}

/// Inserts the request's row (and its tags), with its response's end when that is known
/// already; false when the row was there (nothing written).
fn insert_request(
    conn: &Connection,
    statements: &mut Statements<'_>,
    e: &RequestRecord,
    end: Option<&ResponseEnd>,
    row: RequestRow<'_>,
) -> rusqlite::Result<bool> {
    let absent = Fingerprint::default();
    let fp = e.fingerprint.as_deref().unwrap_or(&absent);
    // The peer is the client unless a proxy is in front: its text is written once.
    let client_ip = e.client_ip.to_string();
    let peer_ip_text;
    let peer_ip = if e.peer_ip == e.client_ip {
        &client_ip
    } else {
        peer_ip_text = e.peer_ip.to_string();
        &peer_ip_text
    };
    let inserted = statements.insert_request.execute(params![
        row.timestamp,
        client_ip,
        e.client_port,
        e.target_port,
        e.http_method,
        e.http_path,
        e.http_query,
        e.user_agent,
        headers_to_json(&e.headers_json),
        e.response_status,
        e.error_message,
        e.conn_id as i64,
        e.request_seq,
        e.http_version,
        e.client_ip_source,
        peer_ip,
        e.peer_port,
        e.local_ip.to_string(),
        e.local_port,
        e.target_port_source,
        e.head_size as i64,
        e.raw_preview,
        e.body_preview,
        e.body_sha256,
        e.body_length.map(|n| n as i64),
        e.target_port_ebpf,
        e.ebpf_lookup,
        e.target_port_original_dst,
        e.target_port_header,
        e.geo.country_iso_code,
        e.geo.country_name,
        e.geo.city_name,
        e.geo.latitude,
        e.geo.longitude,
        e.geo.asn_number,
        e.geo.asn_organization,
        fp.syn_ttl,
        fp.syn_initial_ttl,
        fp.syn_df,
        fp.syn_window,
        fp.syn_mss,
        fp.syn_wscale,
        fp.syn_options,
        fp.syn_fp,
        fp.tls_version,
        fp.tls_sni,
        fp.tls_alpn,
        fp.ja4,
        fp.header_order,
        fp.header_order_hash,
        e.response_mode,
        e.giveup_limit_s,
        e.giveup_basis,
        e.planned_end_s,
        row.sensor,
        row.seq,
        end.map(|r| r.bytes_sent as i64),
        end.map(|r| r.duration_s),
        end.map(|r| r.end_reason),
        end.map(|r| format_timestamp(r.closed_at)),
        end.and_then(|r| r.client_fin_s),
        row.actor,
    ])?;
    if e.tags.is_empty() {
        return Ok(inserted == 1);
    }
    // The row just inserted, without a lookup; a row that was there already is looked up.
    let event_id: i64 = if inserted == 1 {
        conn.last_insert_rowid()
    } else {
        conn.query_row(
            "SELECT id FROM events WHERE conn_id = ?1 AND request_seq = ?2",
            params![e.conn_id as i64, e.request_seq],
            |r| r.get(0),
        )?
    };
    for tag in &e.tags {
        statements.insert_tag.execute(params![
            event_id,
            e.conn_id as i64,
            e.request_seq,
            tag.as_ref()
        ])?;
    }
    Ok(inserted == 1)
}

fn complete_request(
    statement: &mut CachedStatement<'_>,
    e: &ResponseEnd,
    seq: i64,
) -> rusqlite::Result<()> {
    statement.execute(params![
        e.bytes_sent as i64,
        e.duration_s,
        e.end_reason,
        format_timestamp(e.closed_at),
        e.conn_id as i64,
        e.request_seq,
        e.client_fin_s,
        seq,
    ])?;
    Ok(())
}

/// The report's row, and on success the seed columns of the request it was made for.
fn record_report(
    conn: &Connection,
    e: &AbuseReport,
    sensor: &str,
    seq: i64,
) -> rusqlite::Result<()> {
    let at = format_timestamp(e.timestamp);
    conn.prepare_cached(
        "INSERT INTO abuseipdb_reports (ip, reported_at, outcome, http_status, confidence_score,
                                        error, categories, comment, conn_id, request_seq,
                                        sensor_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        e.ip.to_string(),
        at,
        e.outcome,
        e.http_status,
        e.confidence_score,
        e.error,
        e.categories,
        e.comment,
        e.conn_id as i64,
        e.request_seq,
        sensor,
    ])?;
    if e.outcome == "reported" {
        conn.prepare_cached(
            "UPDATE events SET reported_to_abuseipdb = 1, abuseipdb_report_timestamp = ?1,
                               changed_seq = ?4
             WHERE conn_id = ?2 AND request_seq = ?3",
        )?
        .execute(params![at, e.conn_id as i64, e.request_seq, seq])?;
        // The row may be shipped already: have the shipper look at it again.
        conn.prepare_cached(
            "INSERT OR REPLACE INTO ship_watch (event_id, version)
             SELECT id, -1 FROM events WHERE conn_id = ?1 AND request_seq = ?2",
        )?
        .execute(params![e.conn_id as i64, e.request_seq])?;
    }
    Ok(())
}

/// Upserts the give-up model's changed families and deletes the least recently seen beyond the
/// model's bound, so the table never outgrows what a start reads back.
fn store_families(conn: &Connection, batch: &FamilyBatch) -> rusqlite::Result<()> {
    for row in &batch.rows {
        let f = &row.family;
        let recent = crate::adaptive::store::samples_json(f.samples());
        conn.prepare_cached(
            "INSERT OR REPLACE INTO giveup_families (kind, name, give_up_s, recent_s, give_ups,
                                                     planned_ends, completed, tool, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            f.kind.name(),
            f.name,
            row.give_up_s,
            recent,
            f.give_ups as i64,
            f.planned_ends as i64,
            f.completed as i64,
            f.tool,
            f.last_seen,
        ])?;
    }
    // The table has no rowid (WITHOUT ROWID): rows are named by their key.
    conn.prepare_cached(
        "DELETE FROM giveup_families WHERE (kind, name) IN (
             SELECT kind, name FROM giveup_families ORDER BY last_seen DESC LIMIT -1 OFFSET ?1)",
    )?
    .execute([batch.keep as i64])?;
    Ok(())
}

fn complete_connection(
    statement: &mut CachedStatement<'_>,
    e: &ConnectionClosed,
) -> rusqlite::Result<()> {
    statement.execute(params![
        format_timestamp(e.closed_at),
        e.end_reason,
        e.requests,
        e.bytes_sent as i64,
        e.duration_s,
        e.conn_id as i64,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests;
