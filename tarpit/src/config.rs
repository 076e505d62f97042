//! The tarpit's configuration: one TOML file, every key optional, every key overridable by a
//! `run` flag (see [`crate::cli`]).
//!
//! Parsing is strict on purpose: an operator who mistypes `respones_delay` must be told, not
//! silently given the default. Every error names the file, the key and the reason
//! ([`ConfigError`]). Defaults reproduce the tool this project replaces (1.5 s, ".", 1200 bytes).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ebpf::EbpfMode;

/// A configuration problem, located precisely enough that the operator can fix it in one edit.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: key `{key}`: {reason}")]
pub struct ConfigError {
    /// The file the value came from, or "command line" for a `run` flag.
    pub source_name: String,
    /// Dotted path of the offending key (`tarpit.response_delay`), or `(file)` for the whole file.
    pub key: String,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl ConfigError {
    fn new(source_name: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            source_name: source_name.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration, as loaded from TOML and then overridden by flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where and how connections are accepted.
    pub server: ServerConfig,
    /// What a trapped client sees and how long it may take.
    pub tarpit: TarpitConfig,
    /// Where the forensic record goes.
    pub storage: StorageConfig,
    /// eBPF port attribution.
    pub ebpf: EbpfConfig,
    /// GeoIP/ASN enrichment.
    pub geoip: GeoIpConfig,
    /// AbuseIPDB reporting (enabled by the ABUSEIPDB_API_KEY environment variable).
    pub abuseipdb: AbuseIpDbConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `address:port` serving `/metrics`; empty turns metrics off.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

impl MetricsConfig {
    /// The address to serve on, or `None` when metrics are off.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        (!self.listen.trim().is_empty())
            .then(|| self.listen.trim().parse().ok())
            .flatten()
    }
}

/// `[abuseipdb]`: how reports are made. Reporting is on only when `ABUSEIPDB_API_KEY` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseIpDbConfig {
    /// The report endpoint (tests point it at a local stand-in).
    pub api_url: String,
    /// AbuseIPDB category numbers (19 = bad web bot, 21 = web app attack).
    pub categories: Vec<u8>,
    /// At most one report per address within this many minutes (the API's minimum is 15).
    pub report_interval_minutes: u64,
    /// API calls per UTC day (1000 on the free tier).
    pub daily_limit: u32,
    /// Text that opens every report's comment.
    pub comment_prefix: String,
    /// The sensor's own public addresses that are on no interface (a cloud or NAT address):
    /// masked as `[sensor]` in comments, like the address each connection arrived on and the
    /// proxy in front, which are masked always.
    pub sensor_addresses: Vec<IpNet>,
    /// Networks never reported.
    pub whitelist_cidrs: Vec<IpNet>,
    /// Autonomous systems never reported (needs the GeoIP ASN database).
    pub whitelist_asns: Vec<u32>,
    /// Regular expressions: a matching User-Agent is never reported.
    pub whitelist_user_agents: Vec<String>,
    /// Decide and record reports without sending them.
    pub dry_run: bool,
    /// Seconds one API call may take.
    pub timeout_seconds: f64,
    /// Retries of a report after a 5xx or a timeout, with doubling waits.
    pub max_retries: u32,
    /// Reports waiting to be sent; when full, the oldest is dropped (counted).
    pub queue_size: usize,
}

impl Default for AbuseIpDbConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.abuseipdb.com/api/v2/report".to_owned(),
            categories: vec![19, 21],
            report_interval_minutes: 40,
            daily_limit: 1000,
            comment_prefix: "HTTP scanner held by a tarpit:".to_owned(),
            sensor_addresses: Vec::new(),
            whitelist_cidrs: Vec::new(),
            whitelist_asns: Vec::new(),
            whitelist_user_agents: Vec::new(),
            dry_run: false,
            timeout_seconds: 10.0,
            max_retries: 3,
            queue_size: 1000,
        }
    }
}

impl AbuseIpDbConfig {
    /// The User-Agent expressions, compiled; an error names the entry.
    pub fn user_agent_regexes(&self) -> Result<Vec<regex::Regex>, (String, String)> {
        self.whitelist_user_agents
            .iter()
            .enumerate()
            .map(|(i, pattern)| {
                regex::Regex::new(pattern).map_err(|e| {
                    (
                        format!("abuseipdb.whitelist_user_agents[{i}]"),
                        e.to_string(),
                    )
                })
            })
            .collect()
    }

    /// Whether reporting would run with no whitelist at all (worth a warning).
    pub fn whitelist_is_empty(&self) -> bool {
        self.whitelist_cidrs.is_empty()
            && self.whitelist_asns.is_empty()
            && self.whitelist_user_agents.is_empty()
    }
}

/// `[geoip]`: MaxMind GeoLite2 files for the location and ASN columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// GeoLite2-City (or GeoIP2-City) database.
    pub city_db: PathBuf,
    /// GeoLite2-ASN database.
    pub asn_db: PathBuf,
    /// Seconds between checks for a replaced (or newly added) file.
    pub reload_interval: f64,
    /// Addresses whose answers are cached.
    pub cache_entries: usize,
}

impl Default for GeoIpConfig {
    fn default() -> Self {
        Self {
            city_db: PathBuf::from("data/GeoLite2-City.mmdb"),
            asn_db: PathBuf::from("data/GeoLite2-ASN.mmdb"),
            reload_interval: 60.0,
            cache_entries: 10_000,
        }
    }
}

/// `[ebpf]`: the netfilter hook that records original destination ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// `auto` (use it when possible, else say why), `on` (refuse to start without it), `off`.
    pub mode: EbpfMode,
    /// Entries of the kernel map of original destinations (68 bytes each); entries are removed
    /// as connections are accepted, so this bounds only a backlog or unclaimed entries.
    pub map_entries: u32,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            mode: EbpfMode::Auto,
            map_entries: 65_536,
        }
    }
}

/// `[server]`: listening sockets, worker threads and connection caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; loopback by default so a first run exposes nothing.
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one (tests use this).
    pub port: u16,
    /// io_uring worker threads, each with its own SO_REUSEPORT listener; 0 = one per core.
    pub workers: usize,
    /// Connections held at once across all workers; 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// Connections held at once from one client (behind a trusted proxy: the client it names,
    /// never the proxy itself); 0 = no per-client cap.
    pub max_connections_per_ip: usize,
    /// IPv4 prefix length that makes one client for `max_connections_per_ip` (32: each address).
    pub per_ip_ipv4_prefix: u8,
    /// IPv6 prefix length that makes one client (64: a client usually owns a whole /64).
    pub per_ip_ipv6_prefix: u8,
    /// Peers whose X-Forwarded-For / X-Real-IP headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Read a PROXY protocol (v1 or v2) preamble from trusted proxies (HAProxy
    /// `send-proxy-v2`).
    pub proxy_protocol: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            workers: 0,
            max_connections: 0,
            max_connections_per_ip: 1024,
            per_ip_ipv4_prefix: 32,
            per_ip_ipv6_prefix: 64,
            trusted_proxies: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
            proxy_protocol: false,
        }
    }
}

/// `[tarpit]`: the drip and the limits on what a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TarpitConfig {
    /// Seconds between two drip chunks.
    pub response_delay: f64,
    /// The bytes sent on each tick (the payload of one HTTP chunk).
    pub response_chunk: String,
    /// Payload bytes per response; the response ends after this many.
    pub max_response_bytes: u64,
    /// Value of the `Server:` response header; default mimics a common web server.
    pub server_header: String,
    /// Seconds a client has to send a complete request head (and body preview).
    pub request_timeout: f64,
    /// Largest request head accepted, in bytes; more is logged as `head_too_large`.
    pub max_request_head: usize,
    /// Most header lines accepted; more is logged as `too_many_headers`.
    pub max_headers: usize,
    /// Request body bytes kept (with their SHA-256) for the record.
    pub body_preview_bytes: usize,
    /// Seconds an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: f64,
    /// Seconds after which any connection is closed, whatever it is doing.
    pub max_connection_lifetime: f64,
    /// Seconds a peer may leave our bytes unacknowledged (TCP_USER_TIMEOUT, plus keepalive
    /// probes while idle) before the connection ends as `peer_gone`: a scanner that vanished
    /// without FIN or RST is not held for the whole drip.
    pub peer_timeout: f64,
}

impl Default for TarpitConfig {
    fn default() -> Self {
        Self {
            response_delay: 1.5,
            response_chunk: ".".to_owned(),
            max_response_bytes: 1200,
            server_header: "nginx".to_owned(),
            request_timeout: 10.0,
            max_request_head: 16 * 1024,
            max_headers: 100,
            body_preview_bytes: 4 * 1024,
            keepalive_timeout: 15.0,
            max_connection_lifetime: 3600.0,
            peer_timeout: 60.0,
        }
    }
}

/// `[storage]`: the SQLite database, the JSON lines log and the queue that feeds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file (created with its directory when missing).
    pub database: PathBuf,
    /// JSON lines forensic log (created with its directory when missing).
    pub json_log: PathBuf,
    /// Capacity of the channel between the workers and the pipeline; a full channel drops
    /// events (counted) rather than slow a worker.
    pub event_queue: usize,
    /// Bytes of events the channel, and each sink's queue, may hold at once: the memory bound
    /// when a slow disk holds a sink back (a flood of 16 KiB heads must not grow without end).
    pub event_queue_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("data/tarpit_events.db"),
            json_log: PathBuf::from("logs/tarpit.log"),
            event_queue: 65_536,
            event_queue_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads and validates a TOML file; every error names the file and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&name, "(file)", format!("cannot read: {e}")))?;
        let config = Self::parse(&text, &name)?;
        config.validate(&name)?;
        Ok(config)
    }

    /// Parses TOML text without validating values (see [`Config::validate`]).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new(source_name, "(file)", describe_toml_error(&e, text)))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(file)".to_owned() } else { key };
            ConfigError::new(source_name, key, describe_toml_error(e.inner(), text))
        })
    }

    /// Checks every value's range; `source_name` says where the values came from.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| Err(ConfigError::new(source_name, key, reason));
        let t = &self.tarpit;
        for (key, value, max) in [
            ("tarpit.peer_timeout", t.peer_timeout, 86_400.0),
            ("tarpit.response_delay", t.response_delay, 3600.0),
            ("tarpit.request_timeout", t.request_timeout, 3600.0),
            ("tarpit.keepalive_timeout", t.keepalive_timeout, 86_400.0),
            (
                "tarpit.max_connection_lifetime",
                t.max_connection_lifetime,
                7.0 * 86_400.0,
            ),
            (
                "geoip.reload_interval",
                self.geoip.reload_interval,
                86_400.0,
            ),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return err(
                    key,
                    format!("must be a number of seconds above 0 and at most {max}, got {value}"),
                );
            }
        }
        if t.response_chunk.is_empty() || t.response_chunk.len() > 1024 {
            return err(
                "tarpit.response_chunk",
                format!("must be 1 to 1024 bytes, got {}", t.response_chunk.len()),
            );
        }
        if t.max_response_bytes == 0 {
            return err("tarpit.max_response_bytes", "must be at least 1".into());
        }
        if t.server_header.chars().any(|c| c.is_control()) {
            return err(
                "tarpit.server_header",
                "must not contain control characters".into(),
            );
        }
        if !(1024..=1024 * 1024).contains(&t.max_request_head) {
            return err(
                "tarpit.max_request_head",
                format!("must be 1024 to 1048576 bytes, got {}", t.max_request_head),
            );
        }
        if !(1..=10_000).contains(&t.max_headers) {
            return err(
                "tarpit.max_headers",
                format!("must be 1 to 10000, got {}", t.max_headers),
            );
        }
        if t.body_preview_bytes > 1024 * 1024 {
            return err(
                "tarpit.body_preview_bytes",
                format!("must be at most 1048576, got {}", t.body_preview_bytes),
            );
        }
        if !(8..=32).contains(&self.server.per_ip_ipv4_prefix) {
            return err(
                "server.per_ip_ipv4_prefix",
                format!("must be 8 to 32, got {}", self.server.per_ip_ipv4_prefix),
            );
        }
        if !(16..=128).contains(&self.server.per_ip_ipv6_prefix) {
            return err(
                "server.per_ip_ipv6_prefix",
                format!("must be 16 to 128, got {}", self.server.per_ip_ipv6_prefix),
            );
        }
        if !(64 * 1024..=16 * 1024 * 1024 * 1024).contains(&self.storage.event_queue_bytes) {
            return err(
                "storage.event_queue_bytes",
                format!(
                    "must be 65536 (64 KiB) to 17179869184 (16 GiB), got {}",
                    self.storage.event_queue_bytes
                ),
            );
        }
        if self.server.workers > 1024 {
            return err(
                "server.workers",
                format!(
                    "must be 0 (one per core) to 1024, got {}",
                    self.server.workers
                ),
            );
        }
        let a = &self.abuseipdb;
        if a.report_interval_minutes < 15 {
            return err(
                "abuseipdb.report_interval_minutes",
                format!(
                    "must be at least 15 (AbuseIPDB accepts one report per address per 15 \
                     minutes), got {}",
                    a.report_interval_minutes
                ),
            );
        }
        if a.categories.is_empty() || a.categories.iter().any(|c| !(1..=23).contains(c)) {
            return err(
                "abuseipdb.categories",
                format!(
                    "must be one or more AbuseIPDB categories 1 to 23, got {:?}",
                    a.categories
                ),
            );
        }
        if !(a.api_url.starts_with("https://") || a.api_url.starts_with("http://")) {
            return err(
                "abuseipdb.api_url",
                format!("must be an http(s) URL, got {:?}", a.api_url),
            );
        }
        if a.daily_limit == 0 || a.queue_size == 0 {
            let key = if a.daily_limit == 0 {
                "abuseipdb.daily_limit"
            } else {
                "abuseipdb.queue_size"
            };
            return err(key, "must be at least 1".into());
        }
        if !(a.timeout_seconds.is_finite() && a.timeout_seconds > 0.0 && a.timeout_seconds <= 300.0)
        {
            return err(
                "abuseipdb.timeout_seconds",
                format!("must be above 0 and at most 300, got {}", a.timeout_seconds),
            );
        }
        if let Err((key, reason)) = a.user_agent_regexes() {
            return err(&key, format!("not a valid regular expression: {reason}"));
        }
        if !self.metrics.listen.trim().is_empty() && self.metrics.address().is_none() {
            return err(
                "metrics.listen",
                format!(
                    "must be address:port (e.g. 127.0.0.1:9464) or empty, got {:?}",
                    self.metrics.listen
                ),
            );
        }
        if !(1..=1 << 24).contains(&self.ebpf.map_entries) {
            return err(
                "ebpf.map_entries",
                format!("must be 1 to 16777216, got {}", self.ebpf.map_entries),
            );
        }
        if self.storage.event_queue == 0 {
            return err("storage.event_queue", "must be at least 1".into());
        }
        for (key, path) in [
            ("storage.database", &self.storage.database),
            ("storage.json_log", &self.storage.json_log),
        ] {
            if path.as_os_str().is_empty() {
                return err(key, "must not be empty".into());
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `tarpit check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serialises")
    }

    /// The delay between drip chunks.
    pub fn response_delay(&self) -> Duration {
        Duration::from_secs_f64(self.tarpit.response_delay)
    }
}

/// A TOML error message with its line number, without toml's multi-line source excerpt.
fn describe_toml_error(error: &toml::de::Error, text: &str) -> String {
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!("{} (line {line})", error.message().trim_end())
        }
        None => error.message().trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults_of_the_replaced_tool() {
        let config = Config::parse("", "t.toml").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.tarpit.response_delay, 1.5);
        assert_eq!(config.tarpit.response_chunk, ".");
        assert_eq!(config.tarpit.max_response_bytes, 1200);
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.server.host.to_string(), "127.0.0.1");
        config.validate("t.toml").unwrap();
    }

    #[test]
    fn every_section_parses() {
        let text = r#"
            [server]
            host = "0.0.0.0"
            port = 9999
            workers = 2
            max_connections = 10
            max_connections_per_ip = 3
            trusted_proxies = ["10.0.0.0/8"]
            proxy_protocol = true
            [tarpit]
            response_delay = 0.25
            response_chunk = "ab"
            max_response_bytes = 10
            server_header = "Apache"
            request_timeout = 2
            max_request_head = 2048
            max_headers = 20
            body_preview_bytes = 16
            keepalive_timeout = 3.5
            max_connection_lifetime = 60
            peer_timeout = 30
            [storage]
            database = "x.db"
            json_log = "x.log"
            event_queue = 8
            [ebpf]
            mode = "off"
            map_entries = 1024
            [geoip]
            city_db = "c.mmdb"
            asn_db = "a.mmdb"
            reload_interval = 0.5
            cache_entries = 3
        "#;
        let config = Config::parse(text, "t.toml").unwrap();
        config.validate("t.toml").unwrap();
        assert_eq!(config.server.port, 9999);
        assert_eq!(config.tarpit.request_timeout, 2.0);
        assert_eq!(config.server.trusted_proxies[0].to_string(), "10.0.0.0/8");
        assert_eq!(config.storage.database, PathBuf::from("x.db"));
        // The printed form parses back to the same configuration.
        assert_eq!(Config::parse(&config.to_toml(), "again").unwrap(), config);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[tarpit]\nrespones_delay = 2\n", "my.toml").unwrap_err();
        assert_eq!(err.source_name, "my.toml");
        assert_eq!(err.key, "tarpit.respones_delay");
        assert!(err.reason.contains("unknown field"), "{err}");
        assert!(
            err.to_string()
                .starts_with("my.toml: key `tarpit.respones_delay`")
        );
    }

    #[test]
    fn unknown_section_is_named() {
        let err = Config::parse("[tarpitt]\nx = 1\n", "my.toml").unwrap_err();
        assert_eq!(err.key, "tarpitt");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let err = Config::parse("[server]\n\nport = \"eighty\"\n", "my.toml").unwrap_err();
        assert_eq!(err.key, "server.port");
        assert!(err.reason.contains("line 3"), "{err}");
        let err = Config::parse("[server]\nport = 70000\n", "my.toml").unwrap_err();
        assert_eq!(err.key, "server.port");
        let err = Config::parse("[server]\ntrusted_proxies = [\"nope\"]\n", "c").unwrap_err();
        assert_eq!(err.key, "server.trusted_proxies[0]");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = Config::parse("[server\n", "my.toml").unwrap_err();
        assert_eq!(err.key, "(file)");
        assert!(err.reason.contains("line 1"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        for (text, key) in [
            ("[tarpit]\nresponse_delay = 0", "tarpit.response_delay"),
            ("[tarpit]\nresponse_delay = -1", "tarpit.response_delay"),
            ("[tarpit]\nrequest_timeout = nan", "tarpit.request_timeout"),
            ("[tarpit]\nresponse_chunk = \"\"", "tarpit.response_chunk"),
            (
                "[tarpit]\nmax_response_bytes = 0",
                "tarpit.max_response_bytes",
            ),
            ("[tarpit]\nmax_request_head = 10", "tarpit.max_request_head"),
            ("[tarpit]\nmax_headers = 0", "tarpit.max_headers"),
            (
                "[tarpit]\nserver_header = \"a\\r\\nb\"",
                "tarpit.server_header",
            ),
            ("[server]\nworkers = 5000", "server.workers"),
            ("[storage]\nevent_queue = 0", "storage.event_queue"),
            ("[storage]\ndatabase = \"\"", "storage.database"),
            ("[ebpf]\nmap_entries = 0", "ebpf.map_entries"),
            ("[metrics]\nlisten = \"localhost\"", "metrics.listen"),
            (
                "[abuseipdb]\nreport_interval_minutes = 5",
                "abuseipdb.report_interval_minutes",
            ),
            ("[abuseipdb]\ncategories = [99]", "abuseipdb.categories"),
            ("[abuseipdb]\napi_url = \"ftp://x\"", "abuseipdb.api_url"),
            ("[abuseipdb]\ndaily_limit = 0", "abuseipdb.daily_limit"),
            (
                "[abuseipdb]\nwhitelist_user_agents = [\"ok\", \"(unclosed\"]",
                "abuseipdb.whitelist_user_agents[1]",
            ),
        ] {
            let config = Config::parse(text, "c.toml").unwrap();
            let err = config.validate("c.toml").unwrap_err();
            assert_eq!(err.key, key, "{text}");
        }
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = Config::load(Path::new("/nonexistent/tarpit.toml")).unwrap_err();
        assert_eq!(err.source_name, "/nonexistent/tarpit.toml");
        assert!(err.reason.contains("cannot read"));
    }
}
