//! Research scanners and search engines: the `scanner:<org>` tags, so that what the sensor
//! shares (DShield, STIX/TAXII, MISP, HPFeeds) and reports (AbuseIPDB) leaves out Censys,
//! Shodan, Shadowserver and the like instead of calling them attackers.
//!
//! Three kinds of evidence, from the [`catalog`] (`tarpit/assets/scanners.toml` or the
//! operator's copy):
//! - the organisation's published address ranges: **verified**, known at once;
//! - reverse DNS under the organisation's domain, confirmed by resolving the name back to the
//!   address ([`verify`], off the hot path): **verified**, known after the lookup;
//! - the User-Agent the organisation documents: a **claim**.
//!
//! A request gets `scanner:<org>` for each, plus `scanner:verified` when its address is proven
//! and `scanner:claimed` when only the User-Agent says so. Only verified requests are left
//! out of sharing by default (`[scanners] share = false`): a User-Agent is one header anyone
//! can send, so an attacker who copies Censys's still gets reported; an address cannot be
//! borrowed (the TCP handshake completed from it), nor can the organisation's forward DNS zone.
//! The catalogue's file, bounded lookups and caches make the rest of the resistance to crafted
//! traffic: see [`verify`].

pub mod catalog;
pub mod verify;

use std::sync::Arc;

pub use catalog::{Catalog, CatalogError};
pub use verify::{Verdict, Verifier};

/// Every tag of the family starts with this.
pub const PREFIX: &str = "scanner:";
/// The request's address is proven to be the organisation's (published range, or
/// forward-confirmed reverse DNS).
pub const VERIFIED: &str = "scanner:verified";
/// Only the User-Agent names the organisation.
pub const CLAIMED: &str = "scanner:claimed";

/// How an address was proven to be a scanner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// In the organisation's published ranges.
    Range,
    /// Forward-confirmed reverse DNS under the organisation's domain.
    ReverseDns,
}

impl Via {
    /// The name stored in `scanner_hosts.via`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Range => "range",
            Via::ReverseDns => "rdns",
        }
    }
}

/// Whether tags mark a request from a verified scanner: what sharing leaves out by default.
pub fn is_verified<T: AsRef<str>>(tags: &[T]) -> bool {
    tags.iter().any(|tag| tag.as_ref() == VERIFIED)
}

/// The tags of a request: `verified` is the organisation its address was proven to be,
/// `claimed` the one its User-Agent names (`org_tags[i]` is `scanner:<org i>`).
pub fn tags_for(
    org_tags: &[Arc<str>],
    verified: Option<usize>,
    claimed: Option<usize>,
) -> Vec<Arc<str>> {
    let mut tags = Vec::new();
    if let Some(org) = verified {
        tags.push(org_tags[org].clone());
        tags.push(Arc::from(VERIFIED));
    }
    if let Some(org) = claimed
        && verified != Some(org)
    {
        tags.push(org_tags[org].clone());
        tags.push(Arc::from(CLAIMED));
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_never_reads_as_verified_and_a_proven_claim_is_not_a_claim() {
        let org_tags: Vec<Arc<str>> = vec!["scanner:a".into(), "scanner:b".into()];
        let only_ua = tags_for(&org_tags, None, Some(0));
        assert_eq!(only_ua, vec![Arc::from("scanner:a"), Arc::from(CLAIMED)]);
        assert!(!is_verified(&only_ua));
        let proven = tags_for(&org_tags, Some(0), Some(0));
        assert_eq!(proven, vec![Arc::from("scanner:a"), Arc::from(VERIFIED)]);
        assert!(is_verified(&proven));
        let both = tags_for(&org_tags, Some(1), Some(0));
        assert_eq!(both.len(), 4);
        assert!(tags_for(&org_tags, None, None).is_empty());
    }
}
