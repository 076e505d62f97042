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
