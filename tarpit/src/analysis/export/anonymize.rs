//! Keyed, prefix-preserving IP address pseudonyms (Crypto-PAn), for publishing a dataset.
//!
//! Why Crypto-PAn: two addresses that share an n-bit prefix get pseudonyms that share exactly
//! an n-bit prefix, so /24s, ASN-sized blocks and scanning sweeps stay visible while no real
//! address is published; and the same 32-byte key gives the same mapping in every export, so
//! datasets published months apart can be joined. The algorithm is the one of Xu, Fan, Ammar
//! and Moon (ICNP 2002), with the usual IPv6 extension; its known answers are in the tests.
//!
//! [`Anonymizer`] also replaces addresses inside free text (headers such as X-Forwarded-For or
//! Host, paths, previews; found by [`crate::address_text`]), since a dataset is only as anonymous as
//! its least obvious field, and keys the hashes of content it scrubbed.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};

use crate::address_text as scrub;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("anonymisation key {path}: {reason}")]
pub struct KeyError {
    /// The key file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The Crypto-PAn state for one key: an AES-128 cipher and the padding block.
pub struct CryptoPan {
    cipher: Aes128,
    /// The encrypted second half of the key, as a 128-bit number.
    pad: u128,
}

impl CryptoPan {
    /// The first 16 bytes of `key` are the AES key; the other 16, encrypted, are the padding.
    pub fn new(key: &[u8; 32]) -> Self {
        let cipher = Aes128::new(key[..16].try_into().expect("16 bytes"));
        let pad = encrypt(
            &cipher,
            u128::from_be_bytes(key[16..].try_into().expect("16 bytes")),
        );
        Self { cipher, pad }
    }

    /// Reads a key file: 32 raw bytes, or 64 hexadecimal digits (whitespace around is fine).
    pub fn from_key_file(path: &Path) -> Result<Self, KeyError> {
        Ok(Self::new(&read_key_file(path)?))
    }

    /// The pseudonym of an address (IPv4 maps to IPv4, IPv6 to IPv6).
    pub fn anonymize(&self, address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(v4) => IpAddr::V4(self.anonymize_v4(v4)),
            IpAddr::V6(v6) => IpAddr::V6(self.anonymize_v6(v6)),
        }
    }

    /// The pseudonym of an IPv4 address.
    pub fn anonymize_v4(&self, address: Ipv4Addr) -> Ipv4Addr {
        let bits = u128::from(u32::from(address)) << 96;
        let flips = self.flips(bits, 32) >> 96;
        Ipv4Addr::from(u32::from(address) ^ flips as u32)
    }

    /// The pseudonym of an IPv6 address.
    pub fn anonymize_v6(&self, address: Ipv6Addr) -> Ipv6Addr {
        let bits = u128::from(address);
        Ipv6Addr::from(bits ^ self.flips(bits, 128))
    }

    /// Bit i of the result (from the top) is the top bit of the encryption of the address's
    /// first i bits followed by the padding's remaining bits: it depends only on the prefix.
    fn flips(&self, address: u128, width: u32) -> u128 {
        let mut flips = 0u128;
        for position in 0..width {
            let prefix_mask = if position == 0 {
                0
            } else {
                u128::MAX << (128 - position)
            };
            let input = (address & prefix_mask) | (self.pad & !prefix_mask);
            let top_bit = encrypt(&self.cipher, input) >> 127;
            flips |= top_bit << (127 - position);
        }
        flips
    }
}

/// Reads a key file: 32 raw bytes, or 64 hexadecimal digits (whitespace around is fine).
fn read_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let error = |reason: String| KeyError {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        error(format!(
            "{e} (make one with: head -c 32 /dev/urandom > {})",
            path.display()
        ))
    })?;
    let key: [u8; 32] = if bytes.len() == 32 {
        bytes.try_into().expect("32 bytes")
    } else {
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error(format!(
                "expected 32 raw bytes or 64 hexadecimal digits, found {} bytes",
                bytes.len()
            )));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        key
    };
    if key.iter().all(|&b| b == key[0]) {
        return Err(error(
            "the key is one repeated byte; use random bytes".into(),
        ));
    }
    Ok(key)
}

fn encrypt(cipher: &Aes128, block: u128) -> u128 {
    let mut bytes = block.to_be_bytes().into();
    cipher.encrypt_block(&mut bytes);
    u128::from_be_bytes(bytes.into())
}

/// Replaces addresses in export rows, and keys the hashes of content it scrubbed.
pub struct Anonymizer {
    pan: CryptoPan,
    /// The key, for the keyed hashes that replace content hashes.
    key: [u8; 32],
    /// Issued canary tokens and their pseudonyms ([`Anonymizer::with_canary_tokens`]).
    tokens: crate::canary::replace::Replacements,
}

impl Anonymizer {
    /// Uses the key in `key_file` (see [`CryptoPan::from_key_file`]).
    pub fn from_key_file(key_file: &Path) -> Result<Self, KeyError> {
        let key = read_key_file(key_file)?;
        Ok(Self::new(&key))
    }

    /// An anonymizer for a key already in memory (tests, tools).
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            pan: CryptoPan::new(key),
            key: *key,
            tokens: Default::default(),
        }
    }

    /// Also replaces the canary tokens `issued` (by sensor, to a client, of a kind and slot;
    /// each recomputed with the canary `minter`) wherever they appear in text, by pseudonyms of
    /// the same shape: the token a pseudonymised client would have been issued under this
    /// export's key. A reader of the export gets no live token, and nothing of the canary key.
    pub fn with_canary_tokens(
        mut self,
        minter: &crate::canary::Minter,
        issued: &[(String, crate::canary::Recipient)],
    ) -> Self {
        let export = crate::canary::Minter::new(&self.key, "tarpit export").expect("a 32-byte key");
        let pairs = issued.iter().map(|(sensor, recipient)| {
            let pseudonymous = crate::canary::Recipient {
                client_ip: self.pan.anonymize(recipient.client_ip.to_canonical()),
                ..*recipient
            };
            (
                minter.token_of(sensor, recipient),
                export.token_of("export", &pseudonymous),
            )
        });
        self.tokens = crate::canary::replace::Replacements::new(pairs);
        self
    }

    /// The pseudonym of a whole-field address, in canonical text; anything that is not an
    /// address is scrubbed as text instead.
    pub fn address_field(&self, text: &str) -> String {
        match text.parse::<IpAddr>() {
            Ok(address) => self.pan.anonymize(address.to_canonical()).to_string(),
            Err(_) => self.scrub(text).into_owned(),
        }
    }

    fn pseudonym(&self, address: IpAddr) -> String {
        self.pan.anonymize(address).to_string()
    }

    /// Replaces every address written in `text` by its pseudonym (see [`crate::address_text`] for
    /// what counts as an address). Text with no address is returned as it was.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut scrubbed = scrub::scrub_bytes(text.as_bytes(), false, &|a| self.pseudonym(a));
        if let Some(replaced) = self.tokens.apply(&scrubbed) {
            scrubbed = replaced;
        }
        if scrubbed == text.as_bytes() {
            return Cow::Borrowed(text);
        }
        Cow::Owned(String::from_utf8_lossy(&scrubbed).into_owned())
    }

    /// [`Self::scrub`] for bytes that may not be UTF-8 (request body previews); `truncated`
    /// says the bytes were cut, so a trailing partial address is masked.
    pub fn scrub_bytes(&self, bytes: &[u8], truncated: bool) -> Vec<u8> {
        let scrubbed = scrub::scrub_bytes(bytes, truncated, &|a| self.pseudonym(a));
        self.tokens.apply(&scrubbed).unwrap_or(scrubbed)
    }

    /// A `raw_preview` value: unescaped to the bytes received, scrubbed (the cut end of a
    /// truncated preview masked), escaped again.
    pub fn scrub_preview(&self, escaped: &str) -> String {
        let (bytes, marker) = scrub::unescape_preview(escaped);
        let mut text = self
            .scrub_bytes(&bytes, marker.is_some())
            .escape_ascii()
            .to_string();
        text.push_str(marker.unwrap_or_default());
        text
    }

    /// A JSON text (`headers_json`): each string's decoded value scrubbed, order kept; text
    /// that is not JSON is scrubbed as text.
    pub fn scrub_json(&self, json: &str) -> String {
        scrub::map_json_strings(json, &|s| self.scrub(s).into_owned())
            .unwrap_or_else(|| self.scrub(json).into_owned())
    }

    /// Replaces a hash of received content (`body_sha256`): a public hash of content whose
    /// addresses were scrubbed would let anyone recover them by hashing every candidate. The
    /// keyed hash (HMAC-SHA-256 under the anonymisation key) still shows which rows carried
    /// the same content, in every export made with the key, and nothing else.
    pub fn keyed_hash(&self, hash: &str) -> String {
        use hmac::{KeyInit as _, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key size");
        mac.update(b"tarpit export content hash v1\0");
        mac.update(hash.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_key() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    /// The known answers published with the reference implementations (pycryptopan and
    /// yacryptopan) for the key 0x00 0x01 ... 0x1f.
    #[test]
    fn known_answers() {
        let pan = CryptoPan::new(&sample_key());
        assert_eq!(
            pan.anonymize("192.0.2.1".parse().unwrap()).to_string(),
            "2.90.93.17"
        );
        assert_eq!(
            pan.anonymize("2001:db8::1".parse().unwrap()),
            "dd92:2c44:3fc0:ff1e:7ff9:c7f0:8180:7e00"
                .parse::<IpAddr>()
                .unwrap()
        );
    }

    fn common_prefix(a: u128, b: u128) -> u32 {
        (a ^ b).leading_zeros()
    }

    #[test]
    fn prefixes_are_preserved_in_both_families() {
        let pan = CryptoPan::new(&sample_key());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..500 {
            let a = next() as u32;
            // A partner sharing a random-length prefix with `a`.
            let keep = (next() % 33) as u32;
            let mask = if keep == 0 {
                0
            } else {
                u32::MAX << (32 - keep)
            };
            let b = (a & mask) | (next() as u32 & !mask);
            let (pa, pb) = (
                pan.anonymize_v4(Ipv4Addr::from(a)),
                pan.anonymize_v4(Ipv4Addr::from(b)),
            );
            assert_eq!(
                common_prefix(
                    u128::from(u32::from(pa)) << 96,
                    u128::from(u32::from(pb)) << 96
                )
                .min(32),
                common_prefix(u128::from(a) << 96, u128::from(b) << 96).min(32),
                "{a:#x} {b:#x}"
            );
            let a6 = (u128::from(next()) << 64) | u128::from(next());
            let keep6 = (next() % 129) as u32;
            let mask6 = if keep6 == 0 {
                0
            } else {
                u128::MAX << (128 - keep6)
            };
            let b6 = (a6 & mask6) | (((u128::from(next()) << 64) | u128::from(next())) & !mask6);
            let (pa6, pb6) = (
                pan.anonymize_v6(Ipv6Addr::from(a6)),
                pan.anonymize_v6(Ipv6Addr::from(b6)),
            );
            assert_eq!(common_prefix(pa6.into(), pb6.into()), common_prefix(a6, b6));
        }
    }

    #[test]
    fn the_mapping_depends_on_the_key_only() {
        let address: IpAddr = "203.0.113.77".parse().unwrap();
        let first = CryptoPan::new(&sample_key()).anonymize(address);
        assert_eq!(CryptoPan::new(&sample_key()).anonymize(address), first);
        let mut other = sample_key();
        other[31] ^= 1;
        assert_ne!(CryptoPan::new(&other).anonymize(address), first);
        assert_ne!(first, address);
    }

    #[test]
    fn addresses_in_text_are_replaced_and_nothing_else() {
        let anonymizer = Anonymizer::new(&sample_key());
        let pan = CryptoPan::new(&sample_key());
        let v4 = |s: &str| pan.anonymize(s.parse().unwrap()).to_string();
        let text = r#"{"x-forwarded-for":"198.51.100.7, 10.1.2.3","host":"[2001:db8::1]:8080","date":"2026-11-25T01:02:03Z","via":"1.1 proxy","v":"v1.2.3"}"#;
        let scrubbed = anonymizer.scrub(text);
        assert!(scrubbed.contains(&format!("\"{}, {}\"", v4("198.51.100.7"), v4("10.1.2.3"))));
        assert!(scrubbed.contains(&format!("[{}]:8080", v4("2001:db8::1"))));
        assert!(scrubbed.contains("2026-11-25T01:02:03Z"), "{scrubbed}");
        assert!(scrubbed.contains("\"1.1 proxy\"") && scrubbed.contains("v1.2.3"));
        assert!(!scrubbed.contains("198.51.100.7") && !scrubbed.contains("2001:db8::1"));
        serde_json::from_str::<serde_json::Value>(&scrubbed).expect("still JSON");
        assert!(matches!(
            anonymizer.scrub("/index.php?a=1"),
            Cow::Borrowed(_)
        ));
        assert_eq!(anonymizer.address_field("192.0.2.1"), "2.90.93.17");
        let body = [b"ip=192.0.2.1&x=".as_slice(), &[0xff, 0xfe]].concat();
        let scrubbed_body = anonymizer.scrub_bytes(&body, false);
        assert_eq!(
            scrubbed_body,
            [b"ip=2.90.93.17&x=".as_slice(), &[0xff, 0xfe]].concat()
        );
    }

    #[test]
    fn key_files_raw_or_hex_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, sample_key()).unwrap();
        let hex = dir.path().join("hex.key");
        let digits: String = sample_key().iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&hex, format!("{digits}\n")).unwrap();
        let address = "192.0.2.1".parse().unwrap();
        for path in [&raw, &hex] {
            let pan = CryptoPan::from_key_file(path).unwrap();
            assert_eq!(pan.anonymize(address).to_string(), "2.90.93.17");
        }
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abc").unwrap();
        let error = CryptoPan::from_key_file(&short).err().unwrap().to_string();
        assert!(
            error.contains("short.key") && error.contains("64 hexadecimal"),
            "{error}"
        );
        let missing = CryptoPan::from_key_file(&dir.path().join("none"))
            .err()
            .unwrap();
        assert!(missing.to_string().contains("/dev/urandom"), "{missing}");
        let zeros = dir.path().join("zeros.key");
        std::fs::write(&zeros, [0u8; 32]).unwrap();
        assert!(CryptoPan::from_key_file(&zeros).is_err());
    }
}
