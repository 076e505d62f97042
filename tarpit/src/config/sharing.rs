//! The sections about what leaves the sensor for others: which clients are research scanners
//! (`[scanners]`), and whether sharing includes them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[scanners]`: the `scanner:<org>` tags (see `crate::scanner`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannersConfig {
    /// Tag research scanners and search engines at all.
    pub enabled: bool,
    /// The operator's catalogue (a copy of `tarpit/assets/scanners.toml`); unset: the
    /// catalogue built into the binary.
    pub file: Option<PathBuf>,
    /// Verify addresses by reverse DNS with forward confirmation (the system's resolver).
    pub rdns: bool,
    /// Seconds one lookup may take before it counts as failed.
    pub rdns_timeout: f64,
    /// Lookups at once; an address seen while all are busy is looked up on a later request.
    pub rdns_concurrency: usize,
    /// Verdicts kept (least recently used forgotten first).
    pub cache_size: usize,
    /// Seconds a verdict is kept before the address is looked up again.
    pub cache_ttl: f64,
    /// Include verified scanners in what is shared (DShield, STIX/TAXII, MISP, HPFeeds) and
    /// reported to AbuseIPDB. Off: they are left out.
    pub share: bool,
}

impl Default for ScannersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            file: None,
            rdns: true,
            rdns_timeout: 3.0,
            rdns_concurrency: 8,
            cache_size: 65_536,
            cache_ttl: 86_400.0,
            share: false,
        }
    }
}

impl ScannersConfig {
    /// Checks the values; errors name `source_name`, the key and the reason.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| Err(ConfigError::new(source_name, key, reason));
        for (key, value, max) in [
            ("scanners.rdns_timeout", self.rdns_timeout, 60.0),
            ("scanners.cache_ttl", self.cache_ttl, 30.0 * 86_400.0),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return err(
                    key,
                    format!("must be a number of seconds above 0 and at most {max}, got {value}"),
                );
            }
        }
        if !(1..=256).contains(&self.rdns_concurrency) {
            return err(
                "scanners.rdns_concurrency",
                format!("must be 1 to 256, got {}", self.rdns_concurrency),
            );
        }
        if !(1..=10_000_000).contains(&self.cache_size) {
            return err(
                "scanners.cache_size",
                format!("must be 1 to 10000000, got {}", self.cache_size),
            );
        }
        if self.enabled
            && let Some(file) = &self.file
            && let Err(e) = crate::scanner::Catalog::load(file)
        {
            return err("scanners.file", e.to_string());
        }
        Ok(())
    }
}

/// `[share]`: live outputs to the community, each off until its section names a destination.
/// What they send is listed in `crate::share`; each keeps a cursor in SQLite
/// (`share_state`), so nothing is sent twice or lost across restarts, and a failing
/// destination never touches recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShareConfig {
    /// The Internet Storm Center's web honeypot submission.
    pub dshield: DshieldConfig,
    /// A TAXII 2.1 collection (STIX 2.1 objects).
    pub taxii: TaxiiConfig,
    /// An HPFeeds broker.
    pub hpfeeds: HpfeedsConfig,
}

/// `[share.dshield]`: the ISC's web honeypot log submission (key in `TARPIT_DSHIELD_KEY`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DshieldConfig {
    /// The ISC user id; 0 turns the submission off.
    pub user_id: u64,
    /// The submission endpoint.
    pub url: String,
    /// Seconds between submissions (at most `batch` logs each).
    pub interval: f64,
    /// Logs per submission (the ISC's client sends at most 100).
    pub batch: usize,
    /// Log what would be sent instead of sending it (the cursor still moves).
    pub dry_run: bool,
}

impl Default for DshieldConfig {
    fn default() -> Self {
        Self {
            user_id: 0,
            url: "https://www.dshield.org/submitapi/".to_owned(),
            interval: 300.0,
            batch: 100,
            dry_run: false,
        }
    }
}

/// `[share.taxii]`: a TAXII 2.1 collection the STIX objects are added to (password in
/// `TARPIT_TAXII_PASSWORD`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaxiiConfig {
    /// The API root (`https://taxii.example/api1/`); empty turns the push off.
    pub url: String,
    /// The collection's id.
    pub collection: String,
    /// The user (HTTP Basic).
    pub user: String,
    /// Seconds between pushes.
    pub interval: f64,
    /// Requests summarised per push.
    pub batch: usize,
}

impl Default for TaxiiConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            collection: String::new(),
            user: String::new(),
            interval: 300.0,
            batch: 5000,
        }
    }
}

/// `[share.hpfeeds]`: one JSON message per request published on a channel of an HPFeeds
/// broker (secret in `TARPIT_HPFEEDS_SECRET`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HpfeedsConfig {
    /// The broker's host; empty turns publishing off.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// This sensor's identity at the broker.
    pub ident: String,
    /// The channel published on.
    pub channel: String,
    /// Seconds between looks for new requests.
    pub interval: f64,
    /// Requests published per look at most.
    pub batch: usize,
}

impl Default for HpfeedsConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 10000,
            ident: String::new(),
            channel: "tarpit.events".to_owned(),
            interval: 5.0,
            batch: 1000,
        }
    }
}

impl ShareConfig {
    /// The names of the outputs this configuration turns on (`share_state.output`).
    pub fn configured(&self) -> Vec<&'static str> {
        let mut on = Vec::new();
        if self.dshield.user_id != 0 {
            on.push("dshield");
        }
        if !self.taxii.url.is_empty() {
            on.push("taxii");
        }
        if !self.hpfeeds.host.is_empty() {
            on.push("hpfeeds");
        }
        on
    }

    /// Checks the values; errors name `source_name`, the key and the reason.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| Err(ConfigError::new(source_name, key, reason));
        for (key, value) in [
            ("share.dshield.interval", self.dshield.interval),
            ("share.taxii.interval", self.taxii.interval),
            ("share.hpfeeds.interval", self.hpfeeds.interval),
        ] {
            if !(value.is_finite() && (1.0..=86_400.0).contains(&value)) {
                return err(key, format!("must be 1 to 86400 seconds, got {value}"));
            }
        }
        for (key, value, max) in [
            ("share.dshield.batch", self.dshield.batch, 100),
            ("share.taxii.batch", self.taxii.batch, 100_000),
            ("share.hpfeeds.batch", self.hpfeeds.batch, 100_000),
        ] {
            if !(1..=max).contains(&value) {
                return err(key, format!("must be 1 to {max}, got {value}"));
            }
        }
        for (key, url, on) in [
            (
                "share.dshield.url",
                &self.dshield.url,
                self.dshield.user_id != 0,
            ),
            (
                "share.taxii.url",
                &self.taxii.url,
                !self.taxii.url.is_empty(),
            ),
        ] {
            if on && !(url.starts_with("http://") || url.starts_with("https://")) {
                return err(
                    key,
                    format!("must be an http:// or https:// URL, got {url:?}"),
                );
            }
        }
        if !self.taxii.url.is_empty() {
            for (key, value) in [
                ("share.taxii.collection", &self.taxii.collection),
                ("share.taxii.user", &self.taxii.user),
            ] {
                if value.trim().is_empty() {
                    return err(key, "must be set when share.taxii.url is".to_owned());
                }
            }
        }
        if !self.hpfeeds.host.is_empty() {
            for (key, value) in [
                ("share.hpfeeds.ident", &self.hpfeeds.ident),
                ("share.hpfeeds.channel", &self.hpfeeds.channel),
            ] {
                if value.is_empty() || value.len() > 255 {
                    return err(
                        key,
                        "must be 1 to 255 bytes when share.hpfeeds.host is set".to_owned(),
                    );
                }
            }
        }
        Ok(())
    }
}
