//! The Internet Storm Center's web honeypot submission (DShield), as the ISC's own client
//! (`DShield-ISC/dshield`, `srv/web/isc_agent/agent.py` and `srv/dshield/DShield.py`) makes
//! it:
//! - `POST` to the submission URL, JSON body `{"type": "webhoneypot", "logs": [...]}`;
//! - headers `X-ISC-Authorization: ISC-HMAC-SHA256 Credentials=C Userid=U Nonce=N` and
//!   `X-ISC-LogType: webhoneypot`, where N is 8 random bytes in base64 and C the base64
//!   HMAC-SHA256 keyed by N followed by the user id, over the API key;
//! - each log: `time` (seconds since the epoch), `headers`, `sip` (the client), `method`,
//!   `url` (path and query: the URLs are what the ISC's web reports are about), `useragent`;
//! - success is HTTP 200.
//!
//! The destination address (`dip`) the ISC's client sends is left out: the sensor's own
//! addresses never leave it, and texts have them masked as `[sensor]`.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::config::DshieldConfig;
use crate::secret::Secret;
use crate::share::rows::SharedRequest;

/// The environment variable (or `.env` entry) holding the ISC API key.
pub const KEY_VARIABLE: &str = "TARPIT_DSHIELD_KEY";

/// The submission client.
pub struct Dshield {
    client: reqwest::Client,
    url: String,
    user_id: u64,
    key: Secret,
    dry_run: bool,
}

impl Dshield {
    /// A client for `[share.dshield]`.
    pub fn new(config: &DshieldConfig, key: Secret) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .user_agent(concat!("tarpit/", env!("CARGO_PKG_VERSION")))
                .build()?,
            url: config.url.clone(),
            user_id: config.user_id,
            key,
            dry_run: config.dry_run,
        })
    }

    /// Submits the requests (at most the batch the caller read).
    pub async fn send(
        &mut self,
        requests: &[SharedRequest],
        sensor: &[IpNet],
    ) -> Result<(), String> {
        let body = body(requests, sensor);
        if self.dry_run {
            tracing::info!(logs = requests.len(), body = %body, "DShield dry run: would submit");
            return Ok(());
        }
        let nonce: [u8; 8] = std::array::from_fn(|_| fastrand::u8(..));
        let response = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(
                "X-ISC-Authorization",
                authorization(self.user_id, self.key.expose(), nonce),
            )
            .header("X-ISC-LogType", "webhoneypot")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("DShield: {e}"))?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("DShield answered HTTP {status}")),
        }
    }
}

/// The `X-ISC-Authorization` value for `nonce`.
pub fn authorization(user_id: u64, key: &str, nonce: [u8; 8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let nonce = b64.encode(nonce);
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(format!("{nonce}{user_id}").as_bytes())
            .expect("HMAC takes a key of any length");
    mac.update(key.as_bytes());
    let credentials = b64.encode(mac.finalize().into_bytes());
    format!("ISC-HMAC-SHA256 Credentials={credentials} Userid={user_id} Nonce={nonce}")
}

/// The submission body.
pub fn body(requests: &[SharedRequest], sensor: &[IpNet]) -> Value {
    let logs: Vec<Value> = requests
        .iter()
        .map(|r| {
            let time = r
                .timestamp
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let mut url = r.path.clone().unwrap_or_default();
            if let Some(query) = &r.query {
                url.push('?');
                url.push_str(query);
            }
            let user_agent = r.user_agent.as_deref().map(|ua| r.masked(ua, sensor));
            json!({
                "time": time,
                "headers": user_agent.as_ref().map_or(json!({}), |ua| json!({ "User-Agent": ua })),
                "sip": r.client_ip,
                "method": r.method.clone().unwrap_or_default(),
                "url": r.masked(&url, sensor),
                "useragent": user_agent.unwrap_or_default(),
            })
        })
        .collect();
    json!({ "type": "webhoneypot", "logs": logs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_matches_the_isc_clients_construction() {
        // Computed independently with the ISC client's own lines (Python: base64, hmac,
        // hashlib) for nonce bytes 01..08, user id 12345 and key "abcDEF123=":
        //   nonce = base64.b64encode(bytes(range(1, 9))).decode()
        //   hmac.new((nonce + "12345").encode(), msg=b"abcDEF123=", digestmod=hashlib.sha256)
        let header = authorization(12345, "abcDEF123=", [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            header,
            "ISC-HMAC-SHA256 Credentials=Tq0GIi7rDHFUV8M4UnYhOvq3l0O28os04Fty42IgYMM= Userid=12345 Nonce=AQIDBAUGBwg="
        );
    }
}
