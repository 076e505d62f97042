//! A request as stored in `events`, read back for classification: by `tarpit classify` and by
//! the CRS stage, which both tag rows after SQLite holds them.

use rusqlite::{Connection, params};

use super::RequestView;

/// One stored request, as the classifier reads it.
pub struct StoredRequest {
    /// The row id (`events.id`).
    pub id: i64,
    /// The connection it came on.
    pub conn_id: Option<i64>,
    /// Its place on that connection.
    pub request_seq: Option<i64>,
    /// The client's address (the CRS's REMOTE_ADDR).
    pub client_ip: Option<String>,
    /// `http_method`.
    pub method: Option<String>,
    /// `http_path` as received.
    pub path: Option<String>,
    /// `http_query` as received.
    pub query: Option<String>,
    /// `headers_json` as pairs.
    pub headers: Vec<(String, String)>,
    /// `user_agent`.
    pub user_agent: Option<String>,
    /// `body_preview`.
    pub body: Option<Vec<u8>>,
    /// `raw_preview`, for input that was not a request.
    pub raw: Option<String>,
}

impl StoredRequest {
    /// The classifier's view of the row.
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method.as_deref(),
            path: self.path.as_deref(),
            query: self.query.as_deref(),
            headers: &self.headers,
            user_agent: self.user_agent.as_deref(),
            body: self.body.as_deref(),
            raw: self.raw.as_deref(),
        }
    }
}

/// `headers_json` back into header pairs (ours and the replaced tool's are JSON objects); text
/// that is not one gives no headers rather than an error: the rest of the row still counts.
pub fn headers_of(json: Option<&str>) -> Vec<(String, String)> {
    let Some(Ok(serde_json::Value::Object(map))) = json.map(serde_json::from_str) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => (name, text),
            other => (name, other.to_string()),
        })
        .collect()
}

/// Up to `limit` stored requests after id `after`, in id order.
pub fn read_batch(
    conn: &Connection,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<StoredRequest>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, conn_id, request_seq, client_ip, http_method, http_path, http_query, headers_json,
                user_agent, body_preview, raw_preview
         FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    stmt.query_map(params![after, limit], |r| {
        Ok(StoredRequest {
            id: r.get(0)?,
            conn_id: r.get(1)?,
            request_seq: r.get(2)?,
            client_ip: r.get(3)?,
            method: r.get(4)?,
            path: r.get(5)?,
            query: r.get(6)?,
            headers: headers_of(r.get::<_, Option<String>>(7)?.as_deref()),
            user_agent: r.get(8)?,
            body: r.get(9)?,
            raw: r.get(10)?,
        })
    })?
    .collect()
}
