//! The configuration's sections, each with its defaults: one struct per TOML table, every key
//! documented once, here.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ebpf::EbpfMode;

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

/// `[sensor]`: who this tarpit is among many: its id goes on every row and every JSON line,
/// its labels travel with its data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorConfig {
    /// The sensor's id; `None`: the host name.
    pub id: Option<String>,
    /// Free `key = value` pairs describing the sensor (region, provider, ...).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl SensorConfig {
    /// The id in force: the configured one, else the host name (`unknown` if it has none).
    pub fn effective_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .filter(|name| is_sensor_token(name))
                .unwrap_or_else(|| "unknown".to_owned())
        })
    }
}

/// Whether `text` may be a sensor id or label key: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_sensor_token(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[ship]`: where the record is shipped besides the local files (see `crate::ship`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipConfig {
    /// `[ship.clickhouse]`: a ClickHouse server many sensors ship to.
    pub clickhouse: ClickHouseConfig,
}

/// `[ship.clickhouse]`: the ClickHouse HTTP interface and table the requests go to. Shipping is
/// on when `url` is set; the password comes only from `TARPIT_CLICKHOUSE_PASSWORD`
/// (environment or `.env`), so it is never in a file that is printed or committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://clickhouse.example:8123`; empty: shipping off.
    pub url: String,
    /// The database holding the table (`deploy/clickhouse/requests.sql` creates `tarpit`).
    pub database: String,
    /// The table, created by `deploy/clickhouse/requests.sql`.
    pub table: String,
    /// The ClickHouse user.
    pub user: String,
    /// Most requests in one INSERT.
    pub batch_rows: usize,
    /// Most bytes of one INSERT's body (the row crossing it is the last in the batch): a
    /// batch of rows full of escaped junk must not take hundreds of megabytes.
    pub batch_bytes: usize,
    /// Seconds between batches while there is nothing more to send.
    pub interval: f64,
    /// Seconds after which a request still being answered is shipped as it stands (it is
    /// shipped again, replacing it, when it ends); completed requests go at once.
    pub open_after: f64,
    /// Seconds one INSERT may take before it counts as failed (and is retried).
    pub timeout: f64,
    /// The table the adaptive mode's give-up figures go to (`crate::ship::fleet`).
    pub figures_table: String,
    /// The table of the canary tokens each sensor issued (`crate::ship::canary`).
    pub tokens_table: String,
    /// The table of every sensor's canary token sightings (`crate::ship::canary`).
    pub sightings_table: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "tarpit".to_owned(),
            table: "requests".to_owned(),
            user: "default".to_owned(),
            batch_rows: 5000,
            batch_bytes: 8 << 20,
            interval: 5.0,
            open_after: 60.0,
            timeout: 30.0,
            figures_table: "giveup_figures".to_owned(),
            tokens_table: "canary_tokens".to_owned(),
            sightings_table: "token_sightings".to_owned(),
        }
    }
}

impl ClickHouseConfig {
    /// Whether shipping to ClickHouse is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// `[classify]`: the classification rules (see `tarpit/assets/classify-rules.toml`) and the
/// OWASP Core Rule Set (see `crate::classify::crs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// An operator rule file read after the built-in rules (same `id` replaces, new `id`
    /// adds); re-read when it changes. None: the built-in rules only.
    pub rules: Option<PathBuf>,
    /// The CRS: `auto` (on where the rules (and, for `crs_engine = "libmodsecurity"`, the
    /// library) are installed, else say why once),
    /// `on` (refuse to start without them), `off`.
    pub crs: crate::ebpf::EbpfMode,
    /// The CRS directory, holding `rules/REQUEST-*.conf` (Debian's `modsecurity-crs`).
    pub crs_dir: PathBuf,
    /// The CRS paranoia level, 1 (fewest false positives) to 4.
    pub crs_paranoia: u8,
    /// Which engine evaluates the CRS: `native` (the tarpit's own evaluator of the rule files)
    /// or `libmodsecurity` (Debian's libmodsecurity3, the reference engine).
    pub crs_engine: crate::classify::crs::CrsEngine,
    /// Exclusions in the CRS's own syntax (`SecRuleRemoveById 920350`,
    /// `SecRuleUpdateTargetById 942100 "!ARGS:q"`), loaded after the rules.
    pub crs_exclusions: Option<PathBuf>,
    /// Most stored rows that may wait for the CRS stage; past it the oldest are passed over
    /// (left for `tarpit classify`), so a sustained flood delays tags by a bounded amount.
    pub crs_backlog_max: u64,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            rules: None,
            crs: crate::ebpf::EbpfMode::Auto,
            crs_dir: crate::classify::crs::DEFAULT_CRS_DIR.into(),
            crs_paranoia: 1,
            crs_engine: crate::classify::crs::CrsEngine::Native,
            crs_exclusions: None,
            crs_backlog_max: 1_000_000,
        }
    }
}

impl ClassifyConfig {
    /// The CRS settings these keys give.
    pub fn crs_settings(&self) -> crate::classify::crs::CrsSettings {
        crate::classify::crs::CrsSettings {
            dir: self.crs_dir.clone(),
            paranoia: self.crs_paranoia,
            exclusions: self.crs_exclusions.clone(),
            engine: self.crs_engine,
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
    /// How far the io_uring workers yield the CPU to the threads that record what they serve
    /// (the pipeline, the writers, the checkpointer), as a `nice` value of their own threads:
    /// 0 (off) to 19. On a CPU-saturated sensor the workers otherwise took the writers' share
    /// and the SQLite sink's queue overflowed; yielding, they accept a little less instead.
    /// An idle CPU serves them at once whatever the value.
    pub worker_nice: u8,
    /// The system-call allow-list installed once start-up is done: `on` refuses anything
    /// else with EPERM, `log` only has the kernel log it, `off` installs none.
    pub seccomp: crate::seccomp::SeccompMode,
    /// Every port without NAT: ports (`"1-65535"`, `"1-21,23-65535"`) whose new connections a
    /// BPF sk_lookup program hands to the tarpit's listener; unset: only `port`.
    pub ports: Option<crate::steer::ports::PortSet>,
    /// With `ports`: the local addresses or prefixes answered for (a routed /24, an IPv6
    /// /64); empty: every local address.
    #[serde(deserialize_with = "prefix_list")]
    pub prefixes: Vec<IpNet>,
    /// With `ports`: ports never steered, even with no listener of their own.
    pub exclude_ports: Option<crate::steer::ports::PortSet>,
    /// With `ports`: `on` refuses to start when sk_lookup cannot be attached, `auto` falls
    /// back to `port` alone (saying why), `off` ignores `ports`.
    pub sk_lookup: EbpfMode,
}

/// A list of prefixes where a bare address stands for itself (/32, /128).
fn prefix_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(deserializer)?;
    items
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "\"{item}\" is not an address or a prefix (\"192.0.2.0/24\", \"2001:db8::/64\")"
                    ))
                })
        })
        .collect()
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
            worker_nice: 10,
            seccomp: crate::seccomp::SeccompMode::On,
            ports: None,
            prefixes: Vec::new(),
            exclude_ports: None,
            sk_lookup: EbpfMode::On,
        }
    }
}

/// How responses are paced (`[tarpit] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TarpitMode {
    /// The replaced tool's fixed drip, byte for byte: every client held to the end.
    #[default]
    Drip,
    /// A believable persona, a jittered drip, and an early, complete answer just before the
    /// client family's learned give-up time (see `[adaptive]`).
    Adaptive,
}

/// What the drip mode drips (`[tarpit] drip_body`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DripBody {
    /// The replaced tool's response: one `.` a tick.
    #[default]
    Dots,
    /// The persona's page for the path (bait, with canary tokens when they are on), dripped
    /// over as many ticks as the dots, never ended early.
    Persona,
}

/// How a response that runs to its end is held (`[tarpit] hold`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HoldMode {
    /// Every connection keeps its kernel socket and file descriptor to the end.
    #[default]
    Socket,
    /// Once the head and first tick are acknowledged, the socket is closed silently (TCP
    /// repair) and the drip goes on from a raw socket while the eBPF hook drops the client's
    /// packets: ~200 bytes per held client, no file descriptor (see README, "Socketless hold").
    Socketless,
}

/// `[adaptive]`: the adaptive mode's model and persona (used when `[tarpit] mode =
/// "adaptive"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Seconds before a family's learned give-up time at which its response is completed.
    pub margin: f64,
    /// The give-up time used is this quantile of a family's recent give-ups (low: the
    /// impatient end of the family).
    pub quantile: f64,
    /// Give-ups a learned family needs before its own figure is used.
    pub min_samples: u32,
    /// Distinct client prefixes (IPv4 /24, IPv6 /64) a shared family (User-Agent, header
    /// order, tool) must have give-ups from before its figure is used: one client cannot move
    /// what other clients are planned with.
    pub min_prefixes: u32,
    /// Each drip gap is the delay times a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// Client families kept in memory (least recently seen dropped first).
    pub max_families: usize,
    /// A persona directory (`persona.toml` and its pages) replacing the built-in one.
    pub persona: Option<PathBuf>,
    /// A give-up prior file read before the built-in priors (same tool replaces).
    pub priors: Option<PathBuf>,
    /// Seconds between exchanges of give-up figures with the fleet through
    /// `[ship.clickhouse]` (`crate::ship::fleet`); 0: no exchange.
    pub fleet_interval: f64,
    /// Other sensors a tool or User-Agent family needs figures from before this sensor plans
    /// with the fleet's (their median).
    pub fleet_min_sensors: u32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            margin: 1.0,
            quantile: 0.1,
            min_samples: 3,
            min_prefixes: 3,
            jitter: 0.3,
            max_families: 10_000,
            persona: None,
            priors: None,
            fleet_interval: 300.0,
            fleet_min_sensors: 2,
        }
    }
}

/// `[tarpit]`: the drip and the limits on what a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TarpitConfig {
    /// `drip` (default, the replaced tool's response) or `adaptive`.
    pub mode: TarpitMode,
    /// The drip mode's body: `dots` (default, the replaced tool's bytes) or `persona` (the
    /// persona's page for the path, so bait and its canary tokens are served in the drip mode
    /// too).
    pub drip_body: DripBody,
    /// `socket` (default) or `socketless`: responses that run to their end (every drip
    /// response; adaptive pages with no planned early end) leave their socket once the head
    /// and first tick are acknowledged. Needs the eBPF hook, CAP_NET_ADMIN and CAP_NET_RAW.
    pub hold: HoldMode,
    /// The most clients held without a socket at once (the eBPF map's and status array's
    /// size, split evenly among the workers); beyond a worker's share a response stays on its
    /// socket.
    pub socketless_max: u32,
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
            mode: TarpitMode::Drip,
            drip_body: DripBody::Dots,
            hold: HoldMode::Socket,
            socketless_max: 131_072,
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
