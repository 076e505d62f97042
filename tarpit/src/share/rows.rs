//! The request rows sharing reads: the few columns any output may send, with the row's tags,
//! and the tests that keep a row home.

use std::net::IpAddr;
use std::time::SystemTime;

use rusqlite::Connection;

/// One recorded request, as sharing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRequest {
    /// `events.id` (the cursor of the live outputs).
    pub id: i64,
    /// When it was recorded.
    pub timestamp: SystemTime,
    /// The client.
    pub client_ip: String,
    /// The client's port (unknown behind a proxy that sends only `X-Real-IP`).
    pub client_port: Option<u16>,
    /// The port it dialled.
    pub target_port: u16,
    /// The address it arrived on (never shared: it is the sensor's).
    pub local_ip: Option<String>,
    /// Method, path and query (the query only where an output says so).
    pub method: Option<String>,
    /// See `method`.
    pub path: Option<String>,
    /// See `method`.
    pub query: Option<String>,
    /// The User-Agent.
    pub user_agent: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl SharedRequest {
    /// Whether it carried one of the sensor's canary tokens (never shared).
    pub fn carried_token(&self) -> bool {
        self.tags.iter().any(|t| t.starts_with("canary:"))
    }

    /// Whether its client is a verified research scanner.
    pub fn from_verified_scanner(&self) -> bool {
        crate::scanner::is_verified(&self.tags)
    }

    /// Whether a live output may send it: a public client address that is not the address
    /// the request arrived on nor one of `sensor_addresses`.
    pub fn client_is_shareable(&self, sensor_addresses: &[ipnet::IpNet]) -> bool {
        let Ok(ip) = self.client_ip.parse::<IpAddr>() else {
            return false;
        };
        let ip = ip.to_canonical();
        crate::net_class::is_global(ip)
            && self.local_ip.as_deref() != Some(self.client_ip.as_str())
            && !sensor_addresses.iter().any(|net| net.contains(&ip))
    }
}

impl SharedRequest {
    /// `text` with the sensor's own addresses (the one the request arrived on, and
    /// `sensor_addresses`) written `[sensor]`: scanners put the address they probe in paths
    /// and User-Agents.
    pub fn masked(&self, text: &str, sensor_addresses: &[ipnet::IpNet]) -> String {
        let local = self
            .local_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical());
        crate::address_text::mask_own(text, &|address| {
            Some(address) == local || sensor_addresses.iter().any(|n| n.contains(&address))
        })
    }
}

/// The columns, in the order [`from_row`] reads them; `{from}` and the `WHERE` are the
/// caller's.
pub const COLUMNS: &str = "id, timestamp, client_ip, client_port, target_port, local_ip, \
     http_method, http_path, http_query, user_agent, \
     (SELECT group_concat(tag, ',') FROM request_tags t WHERE t.event_id = events.id)";

/// One row of a `SELECT {COLUMNS}`; `None` for a row without a client or a readable time.
pub fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<SharedRequest>> {
    let timestamp: String = row.get(1)?;
    // The tarpit's own rows end in Z; the replaced tool's are ISO 8601 without a zone.
    let Ok(timestamp) =
        humantime::parse_rfc3339(&timestamp).or_else(|_| humantime::parse_rfc3339_weak(&timestamp))
    else {
        return Ok(None);
    };
    let Some(client_ip) = row.get::<_, Option<String>>(2)? else {
        return Ok(None);
    };
    let tags: Option<String> = row.get(10)?;
    Ok(Some(SharedRequest {
        id: row.get(0)?,
        timestamp,
        client_ip,
        client_port: row.get(3)?,
        target_port: row.get::<_, Option<u16>>(4)?.unwrap_or(0),
        local_ip: row.get(5)?,
        method: row.get(6)?,
        path: row.get(7)?,
        query: row.get(8)?,
        user_agent: row.get(9)?,
        tags: tags.map_or(Vec::new(), |t| t.split(',').map(str::to_owned).collect()),
    }))
}

/// Up to `limit` rows after id `after`, in id order, stopping before the first row recorded
/// after `settled` (its tags may still change: a reverse DNS answer, see `crate::scanner`);
/// also the id of the last row read, settled or not skipped.
pub fn read_after(
    conn: &Connection,
    after: i64,
    settled: SystemTime,
    limit: usize,
) -> rusqlite::Result<(Vec<SharedRequest>, i64)> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let mut rows = statement.query(rusqlite::params![after, limit as i64])?;
    let mut read = Vec::new();
    let mut last = after;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        match from_row(row)? {
            Some(request) if request.timestamp > settled => break,
            Some(request) => read.push(request),
            None => {}
        }
        last = id;
    }
    Ok((read, last))
}
