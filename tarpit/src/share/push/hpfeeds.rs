//! HPFeeds: one JSON message per request, published on a channel of a broker.
//!
//! The wire protocol (hpfeeds, Mark Schloesser 2010-2013, as brokers speak it): every message
//! is a 32-bit big-endian total length, an opcode byte and a payload; strings inside are
//! prefixed by a one-byte length. The broker opens with `info` (opcode 1: its name and 4
//! random bytes); the client answers `auth` (2: its ident and SHA-1 of the random bytes
//! followed by the secret), then sends `publish` (3: ident, channel, payload). The broker
//! acknowledges nothing and answers a refusal with `error` (0) and a close: after each batch
//! the client listens a moment for one, and a refused or broken connection is an error (the
//! batch is sent again on a new connection: delivery is at least once).
//!
//! Hand-written: the protocol is five message shapes over TCP, and no maintained Rust crate
//! implements its client side.

use std::time::Duration;

use serde_json::json;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ShareContext;
use crate::config::HpfeedsConfig;
use crate::secret::Secret;
use crate::share::clients::SHARED_TAG_PREFIXES;
use crate::share::rows::SharedRequest;

/// The environment variable (or `.env` entry) holding the broker secret.
pub const SECRET_VARIABLE: &str = "TARPIT_HPFEEDS_SECRET";

const OP_ERROR: u8 = 0;
const OP_INFO: u8 = 1;
const OP_AUTH: u8 = 2;
const OP_PUBLISH: u8 = 3;

/// The largest message accepted from the broker (its own limit is 1 MiB).
const MAX_MESSAGE: usize = 1 << 20;

/// How long the client listens for a refusal after a batch.
const REFUSAL_WAIT: Duration = Duration::from_millis(300);

/// How long it listens for a refusal of its credentials before the first batch (once per
/// connection: a wrong secret is the refusal that matters, and it comes at once).
const AUTH_WAIT: Duration = Duration::from_secs(1);

/// The publisher.
pub struct Hpfeeds {
    address: (String, u16),
    ident: String,
    channel: String,
    secret: Secret,
    stream: Option<TcpStream>,
}

impl Hpfeeds {
    /// A publisher for `[share.hpfeeds]` (it connects on its first batch).
    pub fn new(config: &HpfeedsConfig, secret: Secret) -> Self {
        Self {
            address: (config.host.clone(), config.port),
            ident: config.ident.clone(),
            channel: config.channel.clone(),
            secret,
            stream: None,
        }
    }

    /// Publishes one message per request.
    pub async fn send(
        &mut self,
        requests: &[SharedRequest],
        context: &ShareContext,
    ) -> Result<(), String> {
        let sent = self.publish(requests, context).await;
        if sent.is_err() {
            self.stream = None; // a new connection next time
        }
        sent
    }

    async fn publish(
        &mut self,
        requests: &[SharedRequest],
        context: &ShareContext,
    ) -> Result<(), String> {
        if self.stream.is_none() {
            self.stream = Some(self.connect().await?);
        }
        let mut batch = Vec::new();
        for request in requests {
            let mut payload = string8(&self.ident)?;
            payload.extend(string8(&self.channel)?);
            payload.extend(message(request, context).to_string().into_bytes());
            batch.extend(frame(OP_PUBLISH, &payload));
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(&batch)
            .await
            .map_err(|e| format!("HPFeeds: writing: {e}"))?;
        // A refusal (a channel the ident may not publish on) comes back as an error message
        // and a close.
        refusal(stream, REFUSAL_WAIT).await
    }

    /// Connects and authenticates.
    async fn connect(&self) -> Result<TcpStream, String> {
        let (host, port) = &self.address;
        let connecting = TcpStream::connect((host.as_str(), *port));
        let mut stream = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| format!("HPFeeds: connecting to {host}:{port} timed out"))?
            .map_err(|e| format!("HPFeeds: connecting to {host}:{port}: {e}"))?;
        let mut header = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut header))
            .await
            .map_err(|_| "HPFeeds: the broker sent no info".to_owned())?
            .map_err(|e| format!("HPFeeds: reading the broker's info: {e}"))?;
        let (op, payload) = read_rest(&mut stream, header).await?;
        if op != OP_INFO {
            return Err(format!("HPFeeds: expected info, got message {op}"));
        }
        let name_length = usize::from(*payload.first().ok_or("HPFeeds: empty info")?);
        let random = payload
            .get(1 + name_length..)
            .ok_or("HPFeeds: info shorter than its name")?;
        let mut auth = string8(&self.ident)?;
        auth.extend(
            Sha1::new()
                .chain_update(random)
                .chain_update(self.secret.expose())
                .finalize(),
        );
        stream
            .write_all(&frame(OP_AUTH, &auth))
            .await
            .map_err(|e| format!("HPFeeds: authenticating: {e}"))?;
        refusal(&mut stream, AUTH_WAIT).await?;
        Ok(stream)
    }
}

/// Listens `wait` for the broker's refusal: silence is acceptance.
async fn refusal(stream: &mut TcpStream, wait: Duration) -> Result<(), String> {
    let mut header = [0u8; 5];
    match tokio::time::timeout(wait, stream.read_exact(&mut header)).await {
        Err(_) => Ok(()),
        Ok(Err(e)) => Err(format!("HPFeeds: the broker closed the connection: {e}")),
        Ok(Ok(_)) => {
            let (op, payload) = read_rest(stream, header).await?;
            let text = String::from_utf8_lossy(&payload);
            match op {
                OP_ERROR => Err(format!("HPFeeds: the broker refused: {text}")),
                op => Err(format!("HPFeeds: unexpected message {op} from the broker")),
            }
        }
    }
}

/// The message for one request: what `crate::share` allows, texts masked.
pub fn message(request: &SharedRequest, context: &ShareContext) -> serde_json::Value {
    let mask = |text: &Option<String>| {
        text.as_deref()
            .map(|t| request.masked(t, &context.sensor_addresses))
    };
    let tags: Vec<&str> = request
        .tags
        .iter()
        .map(String::as_str)
        .filter(|t| SHARED_TAG_PREFIXES.iter().any(|p| t.starts_with(p)))
        .collect();
    json!({
        "sensor": context.sensor,
        "timestamp": crate::event::format_timestamp(request.timestamp),
        "src_ip": request.client_ip,
        "src_port": request.client_port,
        "dst_port": request.target_port,
        "method": request.method,
        "path": mask(&request.path),
        "user_agent": mask(&request.user_agent),
        "tags": tags,
    })
}

/// A string with its one-byte length.
fn string8(text: &str) -> Result<Vec<u8>, String> {
    let length =
        u8::try_from(text.len()).map_err(|_| format!("HPFeeds: {text:?} is over 255 bytes"))?;
    let mut out = vec![length];
    out.extend_from_slice(text.as_bytes());
    Ok(out)
}

/// A whole message: length, opcode, payload.
fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&((5 + payload.len()) as u32).to_be_bytes());
    out.push(op);
    out.extend_from_slice(payload);
    out
}

/// The rest of a message whose 5-byte header was read.
async fn read_rest(stream: &mut TcpStream, header: [u8; 5]) -> Result<(u8, Vec<u8>), String> {
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(5..=MAX_MESSAGE).contains(&length) {
        return Err(format!(
            "HPFeeds: a message of {length} bytes from the broker"
        ));
    }
    let mut payload = vec![0u8; length - 5];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("HPFeeds: reading from the broker: {e}"))?;
    Ok((header[4], payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_length_opcode_payload_with_one_byte_string_lengths() {
        assert_eq!(frame(OP_PUBLISH, b"ab"), [0, 0, 0, 7, 3, b'a', b'b']);
        assert_eq!(string8("chan").unwrap(), [4, b'c', b'h', b'a', b'n']);
        assert!(string8(&"x".repeat(256)).is_err());
    }
}
