//! ClickHouse's HTTP interface: one `INSERT ... FORMAT JSONEachRow` per batch.
//!
//! The HTTP interface needs nothing beyond `reqwest` and works the same on Debian 12's 18.16 and
//! current releases (basic authentication, the query in the URL, rows in the body). The error a
//! refused insert gets is ClickHouse's own first line ("Code: 516 ... Authentication failed",
//! "Code: 60 ... Table tarpit.requests doesn't exist"), which says what to fix.

use crate::error_chain::error_chain;
use std::time::Duration;

use crate::config::ClickHouseConfig;
use crate::secret::Secret;

/// The environment variable (or `.env` entry) holding the ClickHouse password.
pub const PASSWORD_VAR: &str = "TARPIT_CLICKHOUSE_PASSWORD";

/// Why a request to ClickHouse failed. The password never appears in it.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// No answer: connection refused, timeout, DNS.
    #[error("ClickHouse at {url} unreachable: {reason}")]
    Unreachable {
        /// The server (without credentials).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No complete answer within `[ship.clickhouse] timeout` (a slow link or server).
    #[error("ClickHouse at {url} did not answer within the timeout: {reason}")]
    TimedOut {
        /// The server (without credentials).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// ClickHouse answered with an error.
    #[error("ClickHouse refused the request (HTTP {status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// ClickHouse's error, first line.
        message: String,
    },
    /// The table is missing, or lacks columns this tarpit ships.
    #[error(
        "ClickHouse table {table} {problem}: apply deploy/clickhouse/requests.sql (or the \
         ALTER TABLE ... ADD COLUMN that docs/fleet.md gives for an upgrade)"
    )]
    Table {
        /// `database.table`.
        table: String,
        /// "does not exist", "lacks columns a, b".
        problem: String,
    },
}

/// A client for one table.
#[derive(Debug, Clone)]
pub struct ClickHouse {
    client: reqwest::Client,
    insert_url: reqwest::Url,
    query_url: reqwest::Url,
    database: String,
    table: String,
    server: String,
    user: String,
    password: Option<Secret>,
}

impl ClickHouse {
    /// A client for `[ship.clickhouse]` (validated), with the password from the environment.
    pub fn new(config: &ClickHouseConfig, password: Option<Secret>) -> anyhow::Result<Self> {
        let query_url = reqwest::Url::parse(config.url.trim())?;
        let mut insert_url = query_url.clone();
        insert_url.query_pairs_mut().append_pair(
            "query",
            &format!(
                "INSERT INTO {}.{} FORMAT JSONEachRow",
                config.database, config.table
            ),
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout))
            .user_agent(concat!("tarpit/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            insert_url,
            query_url,
            database: config.database.clone(),
            table: config.table.clone(),
            server: config.url.trim().to_owned(),
            user: config.user.clone(),
            password,
        })
    }

    /// Inserts the rows of `body` (JSON objects, one per line).
    pub async fn insert(&self, body: Vec<u8>) -> Result<(), ClickHouseError> {
        self.post(self.insert_url.clone(), body).await.map(drop)
    }

    /// Inserts the rows of `body` (JSON objects, one per line) into `table` (`database.table`,
    /// validated identifiers).
    pub async fn insert_into(&self, table: &str, body: Vec<u8>) -> Result<(), ClickHouseError> {
        let mut url = self.query_url.clone();
        url.query_pairs_mut()
            .append_pair("query", &format!("INSERT INTO {table} FORMAT JSONEachRow"));
        self.post(url, body).await.map(drop)
    }

    /// Runs a query and returns ClickHouse's answer as text.
    pub async fn select(&self, query: String) -> Result<String, ClickHouseError> {
        self.post(self.query_url.clone(), query.into_bytes()).await
    }

    /// Checks that the table exists with every column in `shipped`, so a wrong password, a
    /// missing table or an old DDL is named at start, before any row is waiting on it.
    pub async fn check_table(&self, shipped: &[String]) -> Result<(), ClickHouseError> {
        // Identifiers are validated as [A-Za-z0-9_] by the configuration: no quoting needed.
        let query = format!(
            "SELECT name FROM system.columns WHERE database = '{}' AND table = '{}' \
             FORMAT TabSeparated",
            self.database, self.table
        );
        let text = self
            .post(self.query_url.clone(), query.into_bytes())
            .await?;
        let present: std::collections::HashSet<&str> = text.lines().collect();
        let table = format!("{}.{}", self.database, self.table);
        if present.is_empty() {
            return Err(ClickHouseError::Table {
                table,
                problem: "does not exist".into(),
            });
        }
        let missing: Vec<&str> = shipped
            .iter()
            .map(String::as_str)
            .filter(|c| !present.contains(c))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ClickHouseError::Table {
                table,
                problem: format!(
                    "lacks columns {}{}",
                    missing.join(", "),
                    match (
                        missing.contains(&"crs_score"),
                        missing.contains(&"actor_id")
                    ) {
                        (true, _) => {
                            " (a table created before the CRS score: apply \
                             deploy/clickhouse/upgrade-crs-score.sql, then \
                             deploy/clickhouse/upgrade-actor-id.sql)"
                        }
                        (false, true) => {
                            " (a table created before actors: apply \
                             deploy/clickhouse/upgrade-actor-id.sql)"
                        }
                        (false, false) => "",
                    }
                ),
            })
        }
    }

    /// POSTs `body` to `url` with the credentials; the answer's text on success.
    async fn post(&self, url: reqwest::Url, body: Vec<u8>) -> Result<String, ClickHouseError> {
        let response = self
            .client
            .post(url)
            .basic_auth(&self.user, self.password.as_ref().map(Secret::expose))
            .body(body)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        let status = response.status();
        let text = read_capped(response, MAX_ANSWER)
            .await
            .map_err(|e| self.failed(e))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(ClickHouseError::Refused {
            status: status.as_u16(),
            message: first_line(&text),
        })
    }
}

/// The most of an answer read (the fleet's figures are the largest answer read: 100,000 short
/// lines); the rest is dropped, so a hostile or broken server cannot fill memory.
const MAX_ANSWER: usize = 32 << 20;

impl ClickHouse {
    /// A request that failed on the way: timed out, or unreachable.
    fn failed(&self, error: reqwest::Error) -> ClickHouseError {
        let url = self.server.clone();
        let timed_out = error.is_timeout();
        let reason = error_chain(&error.without_url());
        if timed_out {
            ClickHouseError::TimedOut { url, reason }
        } else {
            ClickHouseError::Unreachable { url, reason }
        }
    }
}

/// The answer's body as text, at most `cap` bytes of it.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// ClickHouse's error without the stack trace and version details that follow it.
fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.split(", e.what()").next().unwrap_or(line);
    let mut line = line.trim().to_owned();
    line.truncate(line.floor_char_boundary(500));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_errors_are_cut_to_what_to_fix() {
        let old = "Code: 193, e.displayText() = DB::Exception: Wrong password for user tarpit, \
                   e.what() = DB::Exception\n";
        assert_eq!(
            first_line(old),
            "Code: 193, e.displayText() = DB::Exception: Wrong password for user tarpit"
        );
        let new = "Code: 516. DB::Exception: tarpit: Authentication failed. (AUTHENTICATION_FAILED) \
                   (version 24.8.1)\n";
        assert!(first_line(new).contains("Authentication failed"));
        // A long error cut at 500 bytes, whatever characters sit there.
        for prefix in ["", "x", "xx"] {
            let long = format!("{prefix}{}", "é".repeat(400));
            let cut = first_line(&long);
            assert!(cut.len() <= 500 && long.starts_with(&cut), "{}", cut.len());
        }
    }

    #[test]
    fn the_insert_names_database_and_table() {
        let config = ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            ..ClickHouseConfig::default()
        };
        let client = ClickHouse::new(&config, None).unwrap();
        let query: Vec<_> = client.insert_url.query_pairs().collect();
        assert_eq!(query[0].1, "INSERT INTO tarpit.requests FORMAT JSONEachRow");
    }
}
