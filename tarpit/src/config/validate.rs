//! Range checks of every value, after parsing and again after the command-line flags: each
//! failure names the key and says what would be accepted.

use super::{Config, ConfigError, is_sensor_token};

impl Config {
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
        if self.server.worker_nice > 19 {
            return err(
                "server.worker_nice",
                format!(
                    "must be 0 (off) to 19 (a nice value), got {}",
                    self.server.worker_nice
                ),
            );
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
        if self.server.ports.is_none() {
            if !self.server.prefixes.is_empty() {
                return err(
                    "server.prefixes",
                    "needs server.ports (the ports to answer on)".into(),
                );
            }
            if self.server.exclude_ports.is_some() {
                return err(
                    "server.exclude_ports",
                    "needs server.ports (the ports to steer)".into(),
                );
            }
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
        if !(1..=1 << 24).contains(&t.socketless_max) {
            return err(
                "tarpit.socketless_max",
                format!("must be 1 to 16777216, got {}", t.socketless_max),
            );
        }
        if t.hold == super::HoldMode::Socketless && self.ebpf.mode == crate::ebpf::EbpfMode::Off {
            return err(
                "tarpit.hold",
                "\"socketless\" needs the eBPF hook to drop the held clients' packets, but \
                 [ebpf] mode is \"off\""
                    .into(),
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
        if let Some(id) = &self.sensor.id
            && !is_sensor_token(id)
        {
            return err(
                "sensor.id",
                format!("must be 1 to 64 of A-Z a-z 0-9 . _ -, got {id:?}"),
            );
        }
        for (key, value) in &self.sensor.labels {
            if !is_sensor_token(key) {
                return err(
                    &format!("sensor.labels.{key}"),
                    "a label name must be 1 to 64 of A-Z a-z 0-9 . _ -".into(),
                );
            }
            if value.len() > 256 || value.chars().any(char::is_control) {
                return err(
                    &format!("sensor.labels.{key}"),
                    "a label value must be at most 256 bytes, without control characters".into(),
                );
            }
        }
        let ch = &self.ship.clickhouse;
        if ch.enabled() {
            match reqwest::Url::parse(ch.url.trim()) {
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    return err(
                        "ship.clickhouse.url",
                        format!("must be an http:// or https:// URL, got {:?}", ch.url),
                    );
                }
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    return err(
                        "ship.clickhouse.url",
                        "must not hold a user or password: set `user`, and the password in \
                         TARPIT_CLICKHOUSE_PASSWORD"
                            .into(),
                    );
                }
                Ok(_) => {}
                Err(e) => return err("ship.clickhouse.url", format!("not a URL: {e}")),
            }
        }
        for (key, name) in [
            ("ship.clickhouse.database", &ch.database),
            ("ship.clickhouse.table", &ch.table),
            ("ship.clickhouse.figures_table", &ch.figures_table),
            ("ship.clickhouse.tokens_table", &ch.tokens_table),
            ("ship.clickhouse.sightings_table", &ch.sightings_table),
        ] {
            let valid = !name.is_empty()
                && name.len() <= 128
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return err(
                    key,
                    format!("must be a plain identifier (A-Z a-z 0-9 _), got {name:?}"),
                );
            }
        }
        if ch.user.is_empty() || ch.user.chars().any(|c| c.is_control() || c == ':') {
            return err(
                "ship.clickhouse.user",
                format!("must be a non-empty name without ':', got {:?}", ch.user),
            );
        }
        if !(1..=1_000_000).contains(&ch.batch_rows) {
            return err(
                "ship.clickhouse.batch_rows",
                format!("must be 1 to 1000000, got {}", ch.batch_rows),
            );
        }
        if !(65_536..=(1 << 30)).contains(&ch.batch_bytes) {
            return err(
                "ship.clickhouse.batch_bytes",
                format!(
                    "must be 65536 (64 KiB) to 1073741824 (1 GiB), got {}",
                    ch.batch_bytes
                ),
            );
        }
        for (key, value, max) in [
            ("ship.clickhouse.interval", ch.interval, 3600.0),
            ("ship.clickhouse.open_after", ch.open_after, 86_400.0),
            ("ship.clickhouse.timeout", ch.timeout, 3600.0),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return err(
                    key,
                    format!("must be above 0 and at most {max} seconds, got {value}"),
                );
            }
        }
        let a = &self.adaptive;
        if !(a.margin.is_finite() && (0.0..=3600.0).contains(&a.margin)) {
            return err(
                "adaptive.margin",
                format!("must be 0 to 3600 seconds, got {}", a.margin),
            );
        }
        if !(a.quantile > 0.0 && a.quantile <= 1.0) {
            return err(
                "adaptive.quantile",
                format!("must be above 0 and at most 1, got {}", a.quantile),
            );
        }
        if !(1..=16).contains(&a.min_samples) {
            return err(
                "adaptive.min_samples",
                format!(
                    "must be 1 to 16 (the give-ups remembered), got {}",
                    a.min_samples
                ),
            );
        }
        if !(1..=16).contains(&a.min_prefixes) {
            return err(
                "adaptive.min_prefixes",
                format!(
                    "must be 1 to 16 (one give-up is kept per prefix), got {}",
                    a.min_prefixes
                ),
            );
        }
        if !(a.fleet_interval.is_finite() && (0.0..=86_400.0).contains(&a.fleet_interval)) {
            return err(
                "adaptive.fleet_interval",
                format!(
                    "must be 0 (no exchange) to 86400 seconds, got {}",
                    a.fleet_interval
                ),
            );
        }
        if !(1..=1000).contains(&a.fleet_min_sensors) {
            return err(
                "adaptive.fleet_min_sensors",
                format!("must be 1 to 1000, got {}", a.fleet_min_sensors),
            );
        }
        if !(0.0..=0.9).contains(&a.jitter) {
            return err(
                "adaptive.jitter",
                format!("must be 0 to 0.9, got {}", a.jitter),
            );
        }
        if !(1..=10_000_000).contains(&a.max_families) {
            return err(
                "adaptive.max_families",
                format!("must be 1 to 10000000, got {}", a.max_families),
            );
        }
        // The persona and prior files are loaded here, so a bad page or prior stops the start
        // with file, entry and reason.
        if let Some(dir) = &a.persona
            && let Err(error) = crate::adaptive::Persona::load(Some(dir), 1, 1)
        {
            return err("adaptive.persona", error.to_string());
        }
        if let Some(file) = &a.priors
            && let Err(error) = crate::adaptive::priors::load(Some(file))
        {
            return err("adaptive.priors", error.to_string());
        }
        // The scanner catalogue too: a bad entry stops the start with file, entry and reason.
        self.scanners.validate(source_name)?;
        self.share.validate(source_name)?;
        // The rule file is loaded here, so a bad rule stops the start with file, rule and
        // reason (later edits are re-read by the pipeline, which keeps the old rules on error).
        if let Some(rules) = &self.classify.rules
            && let Err(error) = crate::classify::rules::load(Some(rules))
        {
            return err("classify.rules", error.to_string());
        }
        if !(1..=4).contains(&self.classify.crs_paranoia) {
            return err(
                "classify.crs_paranoia",
                format!(
                    "{} is not a paranoia level (1 to 4)",
                    self.classify.crs_paranoia
                ),
            );
        }
        if self.classify.crs_backlog_max == 0 {
            return err(
                "classify.crs_backlog_max",
                "must be at least 1 (rows that may wait for the CRS stage)".into(),
            );
        }
        if let Some(file) = &self.classify.crs_exclusions
            && let Err(error) = std::fs::metadata(file)
        {
            return err(
                "classify.crs_exclusions",
                format!("{}: {error}", file.display()),
            );
        }
        Ok(())
    }
}
