//! Who a client is, from how it talks rather than what it claims: its TCP SYN ([`syn`]), a TLS
//! ClientHello sent to the HTTP port ([`tls`]) and the order of its HTTP headers.
//!
//! Workers only capture the raw material (the parsed SYN fields, the hello's bytes, the header
//! names in order); the strings and hashes below are made on the pipeline
//! ([`Fingerprint::compute`]), so fingerprinting costs the hot path nothing but one
//! `getsockopt` per connection.

pub mod syn;
pub mod tls;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use syn::SynFields;

/// A request's fingerprint columns (`events` columns, JSON log fields, export columns). Every
/// field is `None` when its input was absent: no saved SYN (or a proxy's SYN), no ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// TTL (IPv4) or hop limit (IPv6) of the SYN as it arrived.
    pub syn_ttl: Option<u8>,
    /// The initial TTL the sender probably used (32, 64, 128 or 255).
    pub syn_initial_ttl: Option<u8>,
    /// IPv4 Don't Fragment bit (NULL for IPv6).
    pub syn_df: Option<bool>,
    /// The SYN's TCP window.
    pub syn_window: Option<u16>,
    /// The SYN's MSS option.
    pub syn_mss: Option<u16>,
    /// The SYN's window scale option.
    pub syn_wscale: Option<u8>,
    /// The SYN's option layout, e.g. `mss,sok,ts,nop,ws`.
    pub syn_options: Option<String>,
    /// All of the above in one string (see [`SynFields::fingerprint`]).
    pub syn_fp: Option<String>,
    /// The highest TLS version the ClientHello offered (`1.3`, `1.2`, ...).
    pub tls_version: Option<String>,
    /// The server name it asked for.
    pub tls_sni: Option<String>,
    /// Its ALPN protocols, comma-joined in order.
    pub tls_alpn: Option<String>,
    /// Its JA4 fingerprint.
    pub ja4: Option<String>,
    /// Header names as sent: lower-case, comma-joined, repeats kept.
    pub header_order: Option<String>,
    /// The first 16 hex digits of SHA-256 of `header_order`: a short key to group clients.
    pub header_order_hash: Option<String>,
}

impl Fingerprint {
    /// Derives every column from what the worker captured.
    pub fn compute(
        syn: Option<&SynFields>,
        client_hello: Option<&[u8]>,
        header_order: Option<String>,
    ) -> Self {
        let mut fp = Fingerprint {
            header_order_hash: header_order.as_deref().map(header_order_hash),
            header_order,
            ..Default::default()
        };
        if let Some(syn) = syn {
            fp.syn_ttl = Some(syn.ttl);
            fp.syn_initial_ttl = Some(syn.initial_ttl());
            fp.syn_df = syn.df;
            fp.syn_window = Some(syn.window);
            fp.syn_mss = syn.mss;
            fp.syn_wscale = syn.wscale;
            let options = syn.options_text();
            fp.syn_fp = Some(syn.fingerprint(&options));
            fp.syn_options = Some(options);
        }
        if let Some(hello) = client_hello.and_then(tls::parse) {
            fp.tls_version = Some(hello.version_text());
            fp.tls_sni = hello.server_name.clone();
            fp.tls_alpn = (!hello.alpn.is_empty()).then(|| hello.alpn.join(","));
            fp.ja4 = Some(hello.ja4());
        }
        fp
    }

    /// Heap bytes of its strings (for the queues' byte budgets).
    pub fn heap_bytes(&self) -> usize {
        [
            &self.syn_options,
            &self.syn_fp,
            &self.tls_version,
            &self.tls_sni,
            &self.tls_alpn,
            &self.ja4,
            &self.header_order,
            &self.header_order_hash,
        ]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::capacity))
        .sum()
    }
}

/// `header_order_hash`: the first 16 hex digits of SHA-256 of the header order string.
pub fn header_order_hash(header_order: &str) -> String {
    hex::encode(&Sha256::digest(header_order.as_bytes())[..8])
}

/// `header_order` from header names as they arrived: lower-case, comma-joined, repeats kept.
pub fn header_order<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut order = String::new();
    for (i, name) in names.enumerate() {
        if i > 0 {
            order.push(',');
        }
        order.extend(name.chars().map(|c| c.to_ascii_lowercase()));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_order_keeps_case_folded_names_and_repeats() {
        let order = header_order(["Host", "User-Agent", "Accept", "accept"].into_iter());
        assert_eq!(order, "host,user-agent,accept,accept");
        let fp = Fingerprint::compute(None, None, Some(order.clone()));
        assert_eq!(fp.header_order_hash.as_deref().unwrap().len(), 16);
        assert_ne!(
            fp.header_order_hash,
            Some(header_order_hash("user-agent,host,accept,accept"))
        );
        assert_eq!(fp.syn_fp, None);
        assert_eq!(fp.ja4, None);
    }

    #[test]
    fn the_header_order_hash_is_the_first_16_hex_digits_of_its_sha256() {
        // sha256("host,user-agent,accept"), as Python's hashlib gives it (and as a log
        // written before this hash was built from eight bytes instead of a slice of 64).
        assert_eq!(
            header_order_hash("host,user-agent,accept"),
            "0421123993515468"
        );
    }
}
