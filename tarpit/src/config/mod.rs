//! The tarpit's configuration: one TOML file, every key optional, every key overridable by a
//! `run` flag (see the `cli` module).
//!
//! Parsing is strict on purpose: an operator who mistypes `respones_delay` must be told, not
//! silently given the default. Every error names the file, the key and the reason
//! ([`ConfigError`]). Defaults reproduce the tool this project replaces (1.5 s, ".", 1200 bytes).

mod sections;
mod sharing;
mod validate;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use sections::{
    AbuseIpDbConfig, AdaptiveConfig, ClassifyConfig, ClickHouseConfig, DripBody, EbpfConfig,
    GeoIpConfig, HoldMode, MetricsConfig, SensorConfig, ServerConfig, ShipConfig, StorageConfig,
    TarpitConfig, TarpitMode, is_sensor_token,
};
pub use sharing::{DshieldConfig, HpfeedsConfig, ScannersConfig, ShareConfig, TaxiiConfig};

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
    /// Request classification.
    pub classify: ClassifyConfig,
    /// The adaptive mode's give-up model and persona.
    pub adaptive: AdaptiveConfig,
    /// This sensor's id and labels.
    pub sensor: SensorConfig,
    /// Shipping the record to a central store.
    pub ship: ShipConfig,
    /// Research scanners: how they are recognised, and whether sharing includes them.
    pub scanners: ScannersConfig,
    /// Live outputs to the community (DShield, TAXII, HPFeeds).
    pub share: ShareConfig,
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
        assert_eq!(config.storage.database, std::path::PathBuf::from("x.db"));
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
    fn every_port_keys_are_read_and_checked() {
        let config = Config::parse(
            "[server]\nports = \"1-21,23-65535\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::7\"]\n\
             exclude_ports = \"9100\"\nsk_lookup = \"auto\"\n",
            "c",
        )
        .unwrap();
        config.validate("c").unwrap();
        let ports = config.server.ports.as_ref().unwrap();
        assert_eq!((ports.len(), ports.contains(22)), (65_534, false));
        assert_eq!(config.server.prefixes[1].to_string(), "2001:db8::7/128");
        assert_eq!(config.server.sk_lookup, crate::ebpf::EbpfMode::Auto);
        assert_eq!(Config::parse(&config.to_toml(), "again").unwrap(), config);
        let err = Config::parse("[server]\nports = \"1-70000\"\n", "c").unwrap_err();
        assert_eq!(err.key, "server.ports");
        assert!(err.reason.contains("\"1-70000\" is not a port"), "{err}");
        let err = Config::parse("[server]\nprefixes = [\"10.0.0.0/33\"]\n", "c").unwrap_err();
        assert_eq!(err.key, "server.prefixes");
        let lonely = Config::parse("[server]\nprefixes = [\"10.0.0.0/8\"]\n", "c").unwrap();
        let err = lonely.validate("c.toml").unwrap_err();
        assert_eq!(err.key, "server.prefixes");
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
            ("[server]\nworker_nice = 20", "server.worker_nice"),
            (
                "[server]\nper_ip_ipv4_prefix = 33",
                "server.per_ip_ipv4_prefix",
            ),
            (
                "[server]\nper_ip_ipv6_prefix = 8",
                "server.per_ip_ipv6_prefix",
            ),
            (
                "[storage]\nevent_queue_bytes = 10",
                "storage.event_queue_bytes",
            ),
            ("[storage]\nevent_queue = 0", "storage.event_queue"),
            ("[storage]\ndatabase = \"\"", "storage.database"),
            ("[ebpf]\nmap_entries = 0", "ebpf.map_entries"),
            ("[tarpit]\nsocketless_max = 0", "tarpit.socketless_max"),
            (
                "[tarpit]\nhold = \"socketless\"\n[ebpf]\nmode = \"off\"",
                "tarpit.hold",
            ),
            ("[metrics]\nlisten = \"localhost\"", "metrics.listen"),
            (
                "[abuseipdb]\nreport_interval_minutes = 5",
                "abuseipdb.report_interval_minutes",
            ),
            ("[abuseipdb]\ncategories = [99]", "abuseipdb.categories"),
            ("[abuseipdb]\napi_url = \"ftp://x\"", "abuseipdb.api_url"),
            ("[abuseipdb]\ndaily_limit = 0", "abuseipdb.daily_limit"),
            (
                "[ship.clickhouse]\nurl = \"tcp://x:9000\"",
                "ship.clickhouse.url",
            ),
            (
                "[ship.clickhouse]\nurl = \"http://u:p@x:8123\"",
                "ship.clickhouse.url",
            ),
            (
                "[ship.clickhouse]\ntable = \"a;b\"",
                "ship.clickhouse.table",
            ),
            (
                "[ship.clickhouse]\nbatch_rows = 0",
                "ship.clickhouse.batch_rows",
            ),
            (
                "[ship.clickhouse]\nopen_after = 0",
                "ship.clickhouse.open_after",
            ),
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
