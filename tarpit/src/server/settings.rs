//! The configuration in the form the hot path uses: durations instead of float seconds, the
//! pre-built drip response, the head limits. Built once at start and shared read-only.

use std::time::Duration;

use ipnet::IpNet;

use crate::config::Config;
use crate::http::head::HeadLimits;
use crate::http::response::DripResponse;

/// Everything a connection needs to know about how to behave.
#[derive(Debug)]
pub struct Settings {
    /// The pre-built response pieces.
    pub drip: DripResponse,
    /// Time between two drip ticks.
    pub response_delay: Duration,
    /// Time a client has for a complete request head.
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: Duration,
    /// Hard ceiling on one connection's life.
    pub max_connection_lifetime: Duration,
    /// How long a silent peer is tolerated (TCP_USER_TIMEOUT and keepalive).
    pub peer_timeout: Duration,
    /// Bounds on one request head.
    pub head_limits: HeadLimits,
    /// Request body bytes kept for the record.
    pub body_preview_bytes: usize,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether trusted peers send a PROXY protocol preamble.
    pub proxy_protocol: bool,
    /// The adaptive mode's published figures, margin and jitter; `None` in the drip mode.
    pub adaptive: Option<crate::adaptive::AdaptiveSettings>,
    /// The persona's pages: the adaptive mode's answers, and the drip's body with
    /// `drip_body = "persona"`; `None` when the drip drips dots.
    pub persona: Option<crate::adaptive::Persona>,
    /// Canary tokens: the minter, when `TARPIT_CANARY_KEY` is set.
    pub canary: Option<crate::canary::Minter>,
}

impl Settings {
    /// Derives the settings from a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        let t = &config.tarpit;
        Self {
            drip: DripResponse::new(
                t.response_chunk.as_bytes(),
                t.max_response_bytes,
                &t.server_header,
            ),
            response_delay: Duration::from_secs_f64(t.response_delay),
            request_timeout: Duration::from_secs_f64(t.request_timeout),
            keepalive_timeout: Duration::from_secs_f64(t.keepalive_timeout),
            max_connection_lifetime: Duration::from_secs_f64(t.max_connection_lifetime),
            peer_timeout: Duration::from_secs_f64(t.peer_timeout),
            head_limits: HeadLimits {
                max_head: t.max_request_head,
                max_headers: t.max_headers,
            },
            body_preview_bytes: t.body_preview_bytes,
            trusted_proxies: config.server.trusted_proxies.clone(),
            proxy_protocol: config.server.proxy_protocol,
            adaptive: None,
            persona: None,
            canary: None,
        }
    }
}
