//! A TLS ClientHello sent to the plain-HTTP port (scanners try TLS everywhere): its version,
//! server name, ALPN list and JA4 fingerprint.
//!
//! The parser follows the wire format of RFC 8446 §4.1.2 (and RFC 5246 for TLS 1.2), reads
//! only inside the slice it is given and never panics (fuzzed: `tarpit/fuzz`, target
//! `client_hello`). JA4 follows FoxIO's published specification (`technical_details/JA4.md`
//! in github.com/FoxIO-LLC/ja4, BSD-3-Clause for JA4 itself; the other JA4+ methods are under
//! the FoxIO License and are not implemented here). Hand-written: the TLS crates parse
//! handshakes to run them, not to fingerprint them, and a bounded reader is ~150 lines.

use sha2::{Digest, Sha256};

/// What a ClientHello says about its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The highest version offered: `supported_versions` when present, else the hello's own.
    pub version: u16,
    /// The server name (SNI), with anything but printable ASCII escaped.
    pub server_name: Option<String>,
    /// The ALPN protocols in order, each escaped like the server name.
    pub alpn: Vec<String>,
    /// The first ALPN protocol's raw bytes (JA4 looks at its first and last byte).
    first_alpn: Option<Vec<u8>>,
    /// Cipher suites in order, GREASE removed.
    ciphers: Vec<u16>,
    /// Extension types in order, GREASE removed.
    extensions: Vec<u16>,
    /// Signature algorithms in order, GREASE removed.
    signature_algorithms: Vec<u16>,
}

/// RFC 8701 GREASE values (0x0a0a, 0x1a1a, ..., 0xfafa), which JA4 ignores everywhere.
fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// A cursor over a byte slice whose reads fail (rather than panic) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A length-prefixed block: `width` bytes of length, then that many bytes.
    fn block(&mut self, width: usize) -> Option<Reader<'a>> {
        let len = match width {
            1 => usize::from(self.u8()?),
            2 => usize::from(self.u16()?),
            _ => {
                let b = self.bytes(3)?;
                usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])
            }
        };
        Some(Reader(self.bytes(len)?))
    }
    fn u16_list(mut self) -> Vec<u16> {
        let mut values = Vec::new();
        while let Some(v) = self.u16() {
            if !is_grease(v) {
                values.push(v);
            }
        }
        values
    }
}

/// The length of the first TLS record (header included) when `bytes` start with a handshake
/// record: lets the reader wait for the whole ClientHello.
pub fn record_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [0x16, 0x03, _, hi, lo, ..] => Some(5 + usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// Parses the ClientHello in the first TLS record of `bytes`. `None` when it is not one or is
/// cut short (a hello longer than its first record, or a client that stopped sending).
pub fn parse(bytes: &[u8]) -> Option<ClientHello> {
    // The same record [`record_len`] waits for: a handshake record of TLS (major version 3).
    let mut record = Reader(bytes.get(..record_len(bytes)?)?);
    record.bytes(3)?; // type and record version: ignored by JA4
    let mut handshake = record.block(2)?;
    if handshake.u8()? != 1 {
        return None; // not a ClientHello
    }
    let mut hello = handshake.block(3)?;
    let legacy_version = hello.u16()?;
    hello.bytes(32)?; // random
    hello.block(1)?; // session id
    let ciphers = hello.block(2)?.u16_list();
    hello.block(1)?; // compression methods
    let mut parsed = ClientHello {
        version: legacy_version,
        server_name: None,
        alpn: Vec::new(),
        first_alpn: None,
        ciphers,
        extensions: Vec::new(),
        signature_algorithms: Vec::new(),
    };
    // A hello without extensions (SSL 3.0 style) ends here.
    let Some(mut extensions) = hello.block(2) else {
        return Some(parsed);
    };
    while let Some(kind) = extensions.u16() {
        let mut body = extensions.block(2)?;
        if is_grease(kind) {
            continue;
        }
        parsed.extensions.push(kind);
        match kind {
            0x0000 => {
                // server_name: a list of (type, name); the host name has type 0.
                let mut list = body.block(2)?;
                while let Some(name_type) = list.u8() {
                    let name = list.block(2)?.0;
                    if name_type == 0 && parsed.server_name.is_none() {
                        parsed.server_name = Some(name.escape_ascii().to_string());
                    }
                }
            }
            0x0010 => {
                let mut list = body.block(2)?;
                while let Some(protocol) = list.block(1) {
                    if parsed.first_alpn.is_none() {
                        parsed.first_alpn = Some(protocol.0.to_vec());
                    }
                    parsed.alpn.push(protocol.0.escape_ascii().to_string());
                }
            }
            0x000d => parsed.signature_algorithms = body.block(2)?.u16_list(),
            0x002b => {
                if let Some(highest) = body.block(1)?.u16_list().into_iter().max() {
                    parsed.version = highest;
                }
            }
            _ => {}
        }
    }
    Some(parsed)
}

impl ClientHello {
    /// The version as text: `1.3`, `1.2`, `1.1`, `1.0`, `ssl3`, or the hex value.
    pub fn version_text(&self) -> String {
        match self.version {
            0x0304 => "1.3".into(),
            0x0303 => "1.2".into(),
            0x0302 => "1.1".into(),
            0x0301 => "1.0".into(),
            0x0300 => "ssl3".into(),
            other => format!("0x{other:04x}"),
        }
    }

    /// The JA4 fingerprint (TLS over TCP), e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub fn ja4(&self) -> String {
        let version = match self.version {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            0xfeff => "d1",
            0xfefd => "d2",
            0xfefc => "d3",
            _ => "00",
        };
        let sni = if self.extensions.contains(&0x0000) {
            'd'
        } else {
            'i'
        };
        let a = format!(
            "t{version}{sni}{:02}{:02}{}",
            self.ciphers.len().min(99),
            self.extensions.len().min(99),
            alpn_chars(self.first_alpn.as_deref())
        );
        let mut ciphers = self.ciphers.clone();
        ciphers.sort_unstable();
        let mut extensions: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|&e| e != 0x0000 && e != 0x0010)
            .collect();
        extensions.sort_unstable();
        let b = truncated_hash(&hex_list(&ciphers));
        let c = if extensions.is_empty() {
            "000000000000".to_owned()
        } else if self.signature_algorithms.is_empty() {
            truncated_hash(&hex_list(&extensions))
        } else {
            truncated_hash(&format!(
                "{}_{}",
                hex_list(&extensions),
                hex_list(&self.signature_algorithms)
            ))
        };
        format!("{a}_{b}_{c}")
    }
}

/// JA4's two ALPN characters: first and last of the first protocol, or of its hex form when
/// either is not alphanumeric; `00` when there is none.
fn alpn_chars(first: Option<&[u8]>) -> String {
    match first {
        None | Some([]) => "00".into(),
        Some(bytes) => {
            let (first, last) = (bytes[0], bytes[bytes.len() - 1]);
            if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                format!("{}{}", first as char, last as char)
            } else {
                let hex = hex::encode(bytes);
                let hex = hex.as_bytes();
                format!("{}{}", hex[0] as char, hex[hex.len() - 1] as char)
            }
        }
    }
}

/// `0a0b,1301,...`: four lower-case hex digits per value, comma-joined.
fn hex_list(values: &[u16]) -> String {
    values
        .iter()
        .map(|v| format!("{v:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first 12 hex digits of SHA-256, or twelve zeros for an empty list (JA4's rule).
fn truncated_hash(text: &str) -> String {
    if text.is_empty() {
        return "000000000000".to_owned();
    }
    hex::encode(Sha256::digest(text.as_bytes()))[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a ClientHello record from its parts, as a client would send it.
    pub(crate) fn hello_bytes(ciphers: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            body.extend_from_slice(&c.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut handshake = vec![1, 0];
        handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    fn u16_block(values: &[u16], width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let len = values.len() * 2;
        if width == 1 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// The example of the JA4 specification (technical_details/JA4.md): its cipher list, its
    /// extensions in their original order and its signature algorithms, plus GREASE values
    /// that must be ignored.
    fn specification_example() -> Vec<u8> {
        let ciphers = [
            0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let sni = {
            let name = b"example.com";
            let mut v = ((name.len() + 3) as u16).to_be_bytes().to_vec();
            v.push(0);
            v.extend_from_slice(&(name.len() as u16).to_be_bytes());
            v.extend_from_slice(name);
            v
        };
        let alpn = b"\x00\x0c\x02h2\x08http/1.1".to_vec();
        let sigs = u16_block(
            &[
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            2,
        );
        let versions = u16_block(&[0x2a2a, 0x0304, 0x0303], 1);
        let order = [
            0x1a1a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
            0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ];
        let extensions: Vec<(u16, Vec<u8>)> = order
            .iter()
            .map(|&kind| {
                let data = match kind {
                    0x0000 => sni.clone(),
                    0x0010 => alpn.clone(),
                    0x000d => sigs.clone(),
                    0x002b => versions.clone(),
                    _ => Vec::new(),
                };
                (kind, data)
            })
            .collect();
        hello_bytes(&ciphers, &extensions)
    }

    #[test]
    fn the_specification_example_gives_its_published_fingerprint() {
        let bytes = specification_example();
        assert_eq!(record_len(&bytes), Some(bytes.len()));
        let hello = parse(&bytes).unwrap();
        assert_eq!(hello.ja4(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
        assert_eq!(hello.version_text(), "1.3");
    }

    #[test]
    fn the_published_partial_hashes_hold() {
        // JA4.md: sorted ciphers -> 8daaf6152771; extensions without signature algorithms
        // -> 6d807ffa2a79.
        let ciphers = [
            0x002f, 0x0035, 0x009c, 0x009d, 0x1301, 0x1302, 0x1303, 0xc013, 0xc014, 0xc02b, 0xc02c,
            0xc02f, 0xc030, 0xcca8, 0xcca9,
        ];
        assert_eq!(truncated_hash(&hex_list(&ciphers)), "8daaf6152771");
        let extensions = [
            0x0005, 0x000a, 0x000b, 0x000d, 0x0012, 0x0015, 0x0017, 0x001b, 0x0023, 0x002b, 0x002d,
            0x0033, 0x4469, 0xff01,
        ];
        assert_eq!(truncated_hash(&hex_list(&extensions)), "6d807ffa2a79");
    }

    #[test]
    fn alpn_characters_follow_the_specification() {
        for (bytes, chars) in [
            (&b"h2"[..], "h2"),
            (b"http/1.1", "h1"),
            (b"x", "xx"),
            (&[0xab], "ab"),
            (&[0xab, 0xcd], "ad"),
            (&[0x30, 0xab], "3b"),
            (&[0x30, 0x31, 0xab, 0xcd], "3d"),
            (&[0x30, 0xab, 0xcd, 0x31], "01"),
        ] {
            assert_eq!(alpn_chars(Some(bytes)), chars, "{bytes:?}");
        }
        assert_eq!(alpn_chars(None), "00");
        assert_eq!(alpn_chars(Some(b"")), "00");
    }

    #[test]
    fn a_hello_without_sni_extensions_or_ciphers_uses_the_empty_markers() {
        let hello = parse(&hello_bytes(&[], &[])).unwrap();
        assert_eq!(hello.ja4(), "t12i000000_000000000000_000000000000");
        assert_eq!(hello.server_name, None);
    }

    #[test]
    fn truncated_and_hostile_input_never_panics() {
        let bytes = specification_example();
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
        }
        let mut lying = bytes.clone();
        lying[6] = 0xff; // handshake length past the record
        assert_eq!(parse(&lying), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), None);
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a0b));
    }
}
