//! `tarpit actors`: who is behind the addresses. Lists the actors the canary tokens joined
//! (see `crate::sink::sqlite::actors`): each with its addresses, requests, ASNs, countries,
//! sensors, tools and tags, first and last seen, and the evidence of every merge that made
//! it. Read-only SQL; an actor's rows are found through `actor_clients` and the
//! `events(client_ip)` index, so listing the largest actors never scans the whole table.

pub mod candidates;
pub mod fleet;

use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

/// What `tarpit actors` shows.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Only actors with at least this many addresses.
    pub min_addresses: u32,
    /// At most this many actors, the largest first.
    pub limit: usize,
    /// Only this actor (with every address).
    pub actor: Option<i64>,
}

/// A count of one value among an actor's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counted {
    /// The value (an ASN with its name, a country code, a tag).
    pub value: String,
    /// Requests with it.
    pub requests: i64,
}

/// One merge that made an actor, with its evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Merge {
    /// When.
    pub timestamp: String,
    /// The actor that joined.
    pub merged_actor_id: i64,
    /// What joined them: which token, issued to whom, sent by whom.
    pub evidence: String,
}

/// One actor.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    /// Its id (`events.actor_id`).
    pub actor_id: i64,
    /// Its addresses, sorted (all of them with `--actor`, else the first [`SHOWN`]).
    pub addresses: Vec<String>,
    /// How many addresses it has.
    pub address_count: i64,
    /// Requests recorded from them.
    pub requests: i64,
    /// First and last seen.
    pub first_seen: String,
    /// Last seen.
    pub last_seen: String,
    /// The sensors that saw it.
    pub sensors: Vec<String>,
    /// Its most frequent ASNs.
    pub asns: Vec<Counted>,
    /// Its most frequent countries.
    pub countries: Vec<Counted>,
    /// Its tools (`tool:` tags).
    pub tools: Vec<Counted>,
    /// Its other tags.
    pub tags: Vec<Counted>,
    /// Every merge that made it, oldest first.
    pub merges: Vec<Merge>,
}

/// Addresses shown per actor in a list.
pub const SHOWN: usize = 12;

/// How many of each counted value are shown.
const TOP: i64 = 5;

/// The actors `query` asks for, read from the database at `path`.
pub fn build(path: &Path, query: Query) -> Result<Vec<Actor>, crate::db::DbError> {
    let conn = crate::db::open_read_only(path)?;
    let ids: Vec<i64> = match query.actor {
        Some(actor) => {
            // A merged actor's id names the actor it joined.
            let root: Option<i64> = conn
                .query_row(
                    "SELECT COALESCE(merged_into, actor_id) FROM actors WHERE actor_id = ?1",
                    [actor],
                    |row| row.get(0),
                )
                .ok();
            root.into_iter().collect()
        }
        None => {
            let mut statement = conn.prepare(
                "SELECT actor_id FROM actors WHERE merged_into IS NULL AND clients >= ?1
                 ORDER BY clients DESC, last_seen DESC LIMIT ?2",
            )?;
            statement
                .query_map(params![query.min_addresses, query.limit as i64], |row| {
                    row.get(0)
                })?
                .collect::<rusqlite::Result<_>>()?
        }
    };
    let shown = if query.actor.is_some() {
        usize::MAX
    } else {
        SHOWN
    };
    ids.into_iter()
        .map(|id| actor(&conn, id, shown).map_err(Into::into))
        .collect()
}

/// The rows of an actor: its clients' rows.
const ITS_ROWS: &str = "client_ip IN (SELECT client_ip FROM actor_clients WHERE actor_id = ?1)";

fn actor(conn: &Connection, id: i64, shown: usize) -> rusqlite::Result<Actor> {
    let (address_count, first_seen, last_seen): (i64, String, String) = conn.query_row(
        "SELECT clients, first_seen, last_seen FROM actors WHERE actor_id = ?1",
        [id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let mut statement =
        conn.prepare("SELECT client_ip FROM actor_clients WHERE actor_id = ?1 ORDER BY client_ip")?;
    let addresses: Vec<String> = statement
        .query_map([id], |row| row.get(0))?
        .take(shown)
        .collect::<rusqlite::Result<_>>()?;
    let requests: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM events WHERE {ITS_ROWS}"),
        [id],
        |row| row.get(0),
    )?;
    let counted = |expression: &str, filter: &str| -> rusqlite::Result<Vec<Counted>> {
        let sql = format!(
            "SELECT {expression} AS value, COUNT(*) AS n FROM events WHERE {ITS_ROWS} \
             AND {expression} IS NOT NULL {filter} GROUP BY value ORDER BY n DESC, value LIMIT {TOP}"
        );
        let mut statement = conn.prepare(&sql)?;
        let rows = statement.query_map([id], |row| {
            Ok(Counted {
                value: row.get(0)?,
                requests: row.get(1)?,
            })
        })?;
        rows.collect()
    };
    let asns = counted(
        "('AS' || asn_number || COALESCE(' ' || asn_organization, ''))",
        "",
    )?;
    let countries = counted("country_iso_code", "")?;
    let sensors = counted("sensor_id", "")?
        .into_iter()
        .map(|c| c.value)
        .collect();
    let tags = |tools: bool| -> rusqlite::Result<Vec<Counted>> {
        let sql = format!(
            "SELECT t.tag, COUNT(*) AS n FROM request_tags t JOIN events e ON e.id = t.event_id \
             WHERE e.{ITS_ROWS} AND (t.tag LIKE 'tool:%') = ?2 \
             GROUP BY t.tag ORDER BY n DESC, t.tag LIMIT {TOP}"
        );
        let mut statement = conn.prepare(&sql)?;
        let rows = statement.query_map(params![id, tools], |row| {
            Ok(Counted {
                value: row.get(0)?,
                requests: row.get(1)?,
            })
        })?;
        rows.collect()
    };
    let mut statement = conn.prepare(
        "SELECT timestamp, merged_actor_id, evidence FROM actor_merges
         WHERE actor_id = ?1 OR actor_id IN (SELECT actor_id FROM actors WHERE merged_into = ?1)
         ORDER BY id",
    )?;
    let merges = statement
        .query_map([id], |row| {
            Ok(Merge {
                timestamp: row.get(0)?,
                merged_actor_id: row.get(1)?,
                evidence: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Actor {
        actor_id: id,
        addresses,
        address_count,
        requests,
        first_seen,
        last_seen,
        sensors,
        asns,
        countries,
        tools: tags(true)?,
        tags: tags(false)?,
        merges,
    })
}

/// The actors as text, one block each.
pub fn to_text(actors: &[Actor]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if actors.is_empty() {
        out.push_str("no actors (with canary tokens off every address is an actor of its own; see README \"Canary tokens and actors\")\n");
    }
    let list = |items: &[Counted]| -> String {
        if items.is_empty() {
            return "-".to_owned();
        }
        let shown: Vec<String> = items
            .iter()
            .map(|c| format!("{} ({})", c.value, c.requests))
            .collect();
        shown.join(", ")
    };
    for a in actors {
        let _ = writeln!(
            out,
            "actor {}: {} address{}, {} request{}, seen {} .. {}",
            a.actor_id,
            a.address_count,
            if a.address_count == 1 { "" } else { "es" },
            a.requests,
            if a.requests == 1 { "" } else { "s" },
            a.first_seen,
            a.last_seen
        );
        let more = a.address_count - a.addresses.len() as i64;
        let _ = writeln!(
            out,
            "  addresses: {}{}",
            a.addresses.join(", "),
            if more > 0 {
                format!(" and {more} more (--actor {} lists all)", a.actor_id)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out, "  sensors:   {}", a.sensors.join(", "));
        let _ = writeln!(out, "  ASNs:      {}", list(&a.asns));
        let _ = writeln!(out, "  countries: {}", list(&a.countries));
        let _ = writeln!(out, "  tools:     {}", list(&a.tools));
        let _ = writeln!(out, "  tags:      {}", list(&a.tags));
        if !a.merges.is_empty() {
            let _ = writeln!(out, "  merges ({}):", a.merges.len());
            for m in &a.merges {
                let _ = writeln!(
                    out,
                    "    {} actor {} joined: {}",
                    m.timestamp, m.merged_actor_id, m.evidence
                );
            }
        }
        out.push('\n');
    }
    out
}
