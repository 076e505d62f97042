//! The command line: `tarpit [--config FILE] [run] [flags]` and `tarpit check-config`.
//!
//! Every configuration key has a `run` flag named after it (`tarpit.response_delay` is
//! `--response-delay`), applied on top of the file, so one-off changes need no file edit.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::config::{Config, ConfigError};

/// A Linux-native HTTP tarpit: holds scanners' connections open with a slow drip and records
/// every request for threat research.
#[derive(Debug, Parser)]
#[command(name = "tarpit", version)]
pub struct Cli {
    /// TOML configuration file; without it the built-in defaults apply.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, accepted without the word `run` (and before a subcommand, whose own
    /// flags then win).
    #[command(flatten)]
    pub run: Overrides,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tarpit (the default).
    Run(Overrides),
    /// Validate the configuration and print the effective values as TOML.
    CheckConfig(Overrides),
    /// Compare the port attribution sources (eBPF, SO_ORIGINAL_DST, proxy header).
    Ports(QueryArgs),
    /// What was caught: totals, time held, top sources, ASNs, countries, ports, paths, ...
    Stats(QueryArgs),
    /// Who is behind the addresses: the actors canary tokens joined, with their addresses,
    /// ASNs, countries, tools, tags and the evidence of every merge.
    Actors(ActorsArgs),
    /// Write a self-contained HTML report (charts and a world map; no network needed to view).
    Report(ReportArgs),
    /// Export the recorded requests as CSV, JSON lines or Parquet, optionally anonymised.
    Export(ExportArgs),
    /// Migrate a database (ours or the replaced tool's) to this build's schema, keeping a copy
    /// of the original as FILE.pre-migration when it was the replaced tool's.
    Migrate(MigrateArgs),
    /// Re-tag every stored request with the current classification rules (the built-in rules
    /// and `[classify] rules`), replacing the tags stored before.
    Classify(ClassifyArgs),
    /// Ship the database's queued requests to ClickHouse (`[ship.clickhouse]`) now and exit:
    /// a backfill of an existing database (the replaced tool's included), or the backlog of a
    /// stopped sensor. A running tarpit ships by itself.
    Ship(ShipArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these definitions.
    Man,
}

/// Writes the completion script for `shell` (`tarpit completions bash > /etc/bash_completion.d/tarpit`).
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "tarpit", out);
}

/// Writes the manual page (`tarpit man > /usr/local/share/man/man1/tarpit.1`).
pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(out)
}

/// Which database the read-only commands read, and which period of it.
#[derive(Debug, Clone, Args)]
pub struct Source {
    /// Database to read (default: `storage.database` of the configuration).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Only requests since this long ago (`24h`, `7d`) or this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
}

/// Flags of `tarpit migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database to migrate (default: `storage.database` of the configuration).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Flags of `tarpit ship`.
#[derive(Debug, Clone, Args)]
pub struct ShipArgs {
    /// Ship what is queued, then exit (required: a running tarpit ships continuously).
    #[arg(long, required = true)]
    pub once: bool,
    /// Database to ship (default: `storage.database` of the configuration); migrated first.
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Flags of `tarpit classify`.
#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Database to re-tag (default: `storage.database` of the configuration).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Operator rule file (default: `classify.rules` of the configuration).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// The OWASP CRS pass: auto, on or off (default: `classify.crs` of the configuration).
    #[arg(long, value_enum)]
    pub crs: Option<crate::ebpf::EbpfMode>,
    /// The CRS engine: native or libmodsecurity (default: `classify.crs_engine`).
    #[arg(long)]
    pub crs_engine: Option<crate::classify::crs::CrsEngine>,
}

/// Flags of `tarpit ports` and `tarpit stats`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Which database and period.
    #[command(flatten)]
    pub source: Source,
    /// Print JSON instead of text tables.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `tarpit actors`.
#[derive(Debug, Clone, Args)]
pub struct ActorsArgs {
    /// Database to read (default: `storage.database` of the configuration).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Only actors with at least this many addresses.
    #[arg(long, default_value_t = 2)]
    pub min_addresses: u32,
    /// At most this many actors, those with the most addresses first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One actor (or the actor it was merged into), with every address and merge.
    #[arg(long, value_name = "ID")]
    pub actor: Option<i64>,
    /// The fleet's actors instead, rebuilt from every sensor's sightings in ClickHouse
    /// (`[ship.clickhouse]`).
    #[arg(long, conflicts_with_all = ["db", "actor"])]
    pub fleet: bool,
    /// Actors that may be the same operator as actor ID, by fingerprint similarity, with a
    /// score (proposals: fingerprints never merge actors).
    #[arg(long, value_name = "ID", conflicts_with_all = ["actor", "fleet"])]
    pub candidates: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `tarpit report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The HTML file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Which database and period.
    #[command(flatten)]
    pub source: Source,
}

/// Flags of `tarpit export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The file format.
    #[arg(long, value_enum)]
    pub format: crate::analysis::export::Format,
    /// The file to write (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Which database and period.
    #[command(flatten)]
    pub source: Source,
    /// Replace every IP address by a keyed prefix-preserving pseudonym (Crypto-PAn) and drop
    /// the AbuseIPDB reporting columns, for publication.
    #[arg(long, requires = "key_file")]
    pub anonymize: bool,
    /// The 32-byte anonymisation key (raw, or 64 hex digits); the same key gives the same
    /// pseudonyms in every export. Make one with `head -c 32 /dev/urandom > FILE`.
    #[arg(long, value_name = "FILE", requires = "anonymize")]
    pub key_file: Option<PathBuf>,
    /// CSV: write every text cell exactly. By default a cell starting with `=`, `+`, `-`, `@`,
    /// a tab or a carriage return gets a leading `'`, so spreadsheets never run it as a
    /// formula (JSON lines and Parquet are always exact).
    #[arg(long)]
    pub csv_raw: bool,
    /// STIX and MISP: include verified research scanners (`scanner:verified`), which are left
    /// out by default.
    #[arg(long)]
    pub include_scanners: bool,
}

/// One optional flag per configuration key; a given flag replaces the file's value.
#[derive(Debug, Default, Clone, Args)]
pub struct Overrides {
    /// [server] Address to listen on.
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// [server] Port to listen on (0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// [server] io_uring worker threads (0 = one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// [server] Connections held at once (0 = derived from the open-file limit).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// [server] Connections held at once from one client (0 = no cap).
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// [server] IPv4 prefix length counted as one client (8-32).
    #[arg(long)]
    pub per_ip_ipv4_prefix: Option<u8>,
    /// [server] IPv6 prefix length counted as one client (16-128).
    #[arg(long)]
    pub per_ip_ipv6_prefix: Option<u8>,
    /// [server] Comma-separated CIDRs whose forwarding headers are believed.
    #[arg(long, value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// [server] Read a PROXY protocol preamble from trusted proxies (true/false).
    #[arg(long)]
    pub proxy_protocol: Option<bool>,
    /// [server] seccomp: the system-call allow-list, on, log or off.
    #[arg(long, value_enum)]
    pub seccomp: Option<crate::seccomp::SeccompMode>,
    /// [tarpit] Seconds between drip chunks.
    #[arg(long)]
    pub response_delay: Option<f64>,
    /// [tarpit] Bytes sent per tick.
    #[arg(long)]
    pub response_chunk: Option<String>,
    /// [tarpit] Payload bytes per response.
    #[arg(long)]
    pub max_response_bytes: Option<u64>,
    /// [tarpit] Value of the Server response header.
    #[arg(long)]
    pub server_header: Option<String>,
    /// [tarpit] Seconds allowed for a complete request head.
    #[arg(long)]
    pub request_timeout: Option<f64>,
    /// [tarpit] Largest request head in bytes.
    #[arg(long)]
    pub max_request_head: Option<usize>,
    /// [tarpit] Most header lines in a request.
    #[arg(long)]
    pub max_headers: Option<usize>,
    /// [tarpit] Request body bytes kept for the record.
    #[arg(long)]
    pub body_preview_bytes: Option<usize>,
    /// [tarpit] Seconds an idle keep-alive connection waits for its next request.
    #[arg(long)]
    pub keepalive_timeout: Option<f64>,
    /// [tarpit] Seconds after which any connection is closed.
    #[arg(long)]
    pub max_connection_lifetime: Option<f64>,
    /// [tarpit] Seconds a vanished peer may go unnoticed (TCP_USER_TIMEOUT and keepalive).
    #[arg(long)]
    pub peer_timeout: Option<f64>,
    /// [storage] SQLite database file.
    #[arg(long)]
    pub database: Option<PathBuf>,
    /// [storage] JSON lines log file.
    #[arg(long)]
    pub json_log: Option<PathBuf>,
    /// [storage] Capacity of the event queue.
    #[arg(long)]
    pub event_queue: Option<usize>,
    /// [storage] Bytes of events the channel and each sink queue may hold.
    #[arg(long)]
    pub event_queue_bytes: Option<usize>,
    /// [geoip] GeoLite2-City database file.
    #[arg(long)]
    pub geoip_city_db: Option<PathBuf>,
    /// [geoip] GeoLite2-ASN database file.
    #[arg(long)]
    pub geoip_asn_db: Option<PathBuf>,
    /// [geoip] Seconds between checks for replaced database files.
    #[arg(long)]
    pub geoip_reload_interval: Option<f64>,
    /// [metrics] address:port of the Prometheus endpoint ("" = off).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// [ebpf] mode: auto, on or off.
    #[arg(long, value_enum)]
    pub ebpf_mode: Option<crate::ebpf::EbpfMode>,
    /// [ebpf] map_entries: size of the kernel map of original destinations.
    #[arg(long)]
    pub ebpf_map_entries: Option<u32>,
    /// [classify] rules: an operator rule file, read after the built-in rules.
    #[arg(long)]
    pub classify_rules: Option<PathBuf>,
    /// [classify] crs: the OWASP Core Rule Set, auto, on or off.
    #[arg(long, value_enum)]
    pub crs: Option<crate::ebpf::EbpfMode>,
    /// [classify] crs_dir: the CRS directory (holding rules/REQUEST-*.conf).
    #[arg(long)]
    pub crs_dir: Option<PathBuf>,
    /// [classify] crs_paranoia: the CRS paranoia level, 1 to 4.
    #[arg(long)]
    pub crs_paranoia: Option<u8>,
    /// [classify] crs_engine: native (the tarpit's evaluator) or libmodsecurity.
    #[arg(long)]
    pub crs_engine: Option<crate::classify::crs::CrsEngine>,
    /// [classify] crs_exclusions: exclusions in the CRS's syntax, loaded after its rules.
    #[arg(long)]
    pub crs_exclusions: Option<PathBuf>,
    /// [classify] crs_backlog_max: most stored rows that may wait for the CRS stage.
    #[arg(long)]
    pub crs_backlog_max: Option<u64>,
    /// [tarpit] mode: drip (the replaced tool's response) or adaptive.
    #[arg(long, value_enum)]
    pub mode: Option<crate::config::TarpitMode>,
    /// [tarpit] drip_body: dots (default) or persona (the persona's page for the path).
    #[arg(long, value_enum)]
    pub drip_body: Option<crate::config::DripBody>,
    /// [tarpit] hold: socket (default) or socketless (needs the eBPF hook).
    #[arg(long, value_enum)]
    pub hold: Option<crate::config::HoldMode>,
    /// [tarpit] socketless_max: the most clients held without a socket at once.
    #[arg(long)]
    pub socketless_max: Option<u32>,
    /// [adaptive] margin: seconds before a family's give-up time at which its answer ends.
    #[arg(long)]
    pub adaptive_margin: Option<f64>,
    /// [adaptive] persona: a directory replacing the built-in persona.
    #[arg(long)]
    pub adaptive_persona: Option<PathBuf>,
    /// [adaptive] priors: a give-up prior file read before the built-in priors.
    #[arg(long)]
    pub adaptive_priors: Option<PathBuf>,
    /// [sensor] id: this sensor's id on every row (default: the host name).
    #[arg(long)]
    pub sensor_id: Option<String>,
    /// [ship.clickhouse] url: ship requests to this ClickHouse HTTP interface (password in
    /// TARPIT_CLICKHOUSE_PASSWORD).
    #[arg(long)]
    pub clickhouse_url: Option<String>,
    /// [scanners] rdns: verify research scanners by reverse DNS (true or false).
    #[arg(long, value_name = "BOOL")]
    pub scanner_rdns: Option<bool>,
    /// [scanners] file: the scanner catalogue replacing the built-in one.
    #[arg(long, value_name = "FILE")]
    pub scanners_file: Option<PathBuf>,
}

impl Overrides {
    /// Replaces the values of `config` for which a flag was given.
    pub fn apply(&self, config: &mut Config) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        let (s, t, st) = (&mut config.server, &mut config.tarpit, &mut config.storage);
        set(&mut s.host, &self.host);
        set(&mut s.port, &self.port);
        set(&mut s.workers, &self.workers);
        set(&mut s.max_connections, &self.max_connections);
        set(&mut s.max_connections_per_ip, &self.max_connections_per_ip);
        set(&mut s.per_ip_ipv4_prefix, &self.per_ip_ipv4_prefix);
        set(&mut s.per_ip_ipv6_prefix, &self.per_ip_ipv6_prefix);
        set(&mut s.trusted_proxies, &self.trusted_proxies);
        set(&mut s.proxy_protocol, &self.proxy_protocol);
        set(&mut s.seccomp, &self.seccomp);
        set(&mut t.response_delay, &self.response_delay);
        set(&mut t.response_chunk, &self.response_chunk);
        set(&mut t.max_response_bytes, &self.max_response_bytes);
        set(&mut t.server_header, &self.server_header);
        set(&mut t.request_timeout, &self.request_timeout);
        set(&mut t.max_request_head, &self.max_request_head);
        set(&mut t.max_headers, &self.max_headers);
        set(&mut t.body_preview_bytes, &self.body_preview_bytes);
        set(&mut t.keepalive_timeout, &self.keepalive_timeout);
        set(
            &mut t.max_connection_lifetime,
            &self.max_connection_lifetime,
        );
        set(&mut t.peer_timeout, &self.peer_timeout);
        set(&mut st.database, &self.database);
        set(&mut st.json_log, &self.json_log);
        set(&mut st.event_queue, &self.event_queue);
        set(&mut st.event_queue_bytes, &self.event_queue_bytes);
        set(&mut config.ebpf.mode, &self.ebpf_mode);
        set(&mut config.metrics.listen, &self.metrics_listen);
        set(&mut config.geoip.city_db, &self.geoip_city_db);
        set(&mut config.geoip.asn_db, &self.geoip_asn_db);
        set(
            &mut config.geoip.reload_interval,
            &self.geoip_reload_interval,
        );
        set(&mut config.ebpf.map_entries, &self.ebpf_map_entries);
        if let Some(rules) = &self.classify_rules {
            config.classify.rules = Some(rules.clone());
        }
        set(&mut config.classify.crs, &self.crs);
        set(&mut config.classify.crs_dir, &self.crs_dir);
        set(&mut config.classify.crs_paranoia, &self.crs_paranoia);
        set(&mut config.classify.crs_engine, &self.crs_engine);
        set(&mut config.classify.crs_backlog_max, &self.crs_backlog_max);
        if let Some(file) = &self.crs_exclusions {
            config.classify.crs_exclusions = Some(file.clone());
        }
        set(&mut config.tarpit.mode, &self.mode);
        set(&mut config.tarpit.hold, &self.hold);
        set(&mut config.tarpit.drip_body, &self.drip_body);
        set(&mut config.tarpit.socketless_max, &self.socketless_max);
        set(&mut config.scanners.rdns, &self.scanner_rdns);
        if let Some(file) = &self.scanners_file {
            config.scanners.file = Some(file.clone());
        }
        set(&mut config.adaptive.margin, &self.adaptive_margin);
        if let Some(persona) = &self.adaptive_persona {
            config.adaptive.persona = Some(persona.clone());
        }
        if let Some(priors) = &self.adaptive_priors {
            config.adaptive.priors = Some(priors.clone());
        }
        if let Some(id) = &self.sensor_id {
            config.sensor.id = Some(id.clone());
        }
        set(&mut config.ship.clickhouse.url, &self.clickhouse_url);
    }
}

/// The effective configuration: the file (or the defaults), validated, then each set of flags
/// in order, validated again so an error says whether the file or a flag is at fault.
pub fn effective_config(
    file: Option<&Path>,
    overrides: &[&Overrides],
) -> Result<Config, ConfigError> {
    let mut config = match file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for set in overrides {
        set.apply(&mut config);
    }
    config.validate("command line")?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_run_with_its_flags() {
        let cli =
            Cli::try_parse_from(["tarpit", "--port", "9000", "--response-delay", "0.5"]).unwrap();
        assert!(cli.command.is_none());
        let config = effective_config(None, &[&cli.run]).unwrap();
        assert_eq!(config.server.port, 9000);
        assert_eq!(config.tarpit.response_delay, 0.5);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[server]\nport = 1234\nworkers = 3\n").unwrap();
        let cli = Cli::try_parse_from([
            "tarpit",
            "--config",
            path.to_str().unwrap(),
            "run",
            "--port",
            "4321",
            "--trusted-proxies",
            "10.0.0.0/8,192.168.0.0/16",
        ])
        .unwrap();
        let Some(Command::Run(overrides)) = &cli.command else {
            panic!("expected run");
        };
        let config = effective_config(cli.config.as_deref(), &[&cli.run, overrides]).unwrap();
        assert_eq!(config.server.port, 4321);
        assert_eq!(config.server.workers, 3);
        assert_eq!(config.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn a_bad_flag_value_blames_the_command_line() {
        let overrides = Overrides {
            response_delay: Some(0.0),
            ..Overrides::default()
        };
        let err = effective_config(None, &[&overrides]).unwrap_err();
        assert_eq!(err.source_name, "command line");
        assert_eq!(err.key, "tarpit.response_delay");
    }

    #[test]
    fn check_config_takes_the_same_flags() {
        let cli = Cli::try_parse_from(["tarpit", "check-config", "--max-headers", "7"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::CheckConfig(ref o)) if o.max_headers == Some(7))
        );
    }
}
