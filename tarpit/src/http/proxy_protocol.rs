//! The PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` / `send-proxy-v2`
//! send it): a preamble in which a proxy states the client connection's source and
//! destination. The tarpit reads it only from trusted proxies and only when
//! `server.proxy_protocol` is on; from anyone else it is just more bytes that are not HTTP.
//!
//! Pure code over a byte slice, like the request-head reader.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line the specification allows, CRLF included.
const V1_MAX: usize = 107;

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Preamble {
    /// Could still become a PROXY header: read more.
    Partial,
    /// Not a PROXY header at all: the bytes are the client's own.
    Absent,
    /// A complete header of `len` bytes.
    Complete {
        /// Its length, to strip before the HTTP request.
        len: usize,
        /// The client connection, when the proxy gave one (not for LOCAL or UNKNOWN).
        connection: Option<ProxiedConnection>,
    },
    /// It starts like a PROXY header but is not a valid one.
    Invalid(&'static str),
}

/// The client's connection as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedConnection {
    /// The client's address and port.
    pub source: SocketAddr,
    /// The address and port the client reached on the proxy.
    pub destination: SocketAddr,
}

/// Whether `buf` starts with (a prefix of) either version's signature.
pub fn looks_like_proxy(buf: &[u8]) -> bool {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        n > 0 && buf[..n] == sig[..n]
    };
    starts(V1_PREFIX) || starts(&V2_SIGNATURE)
}

/// Classifies the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Preamble {
    if !looks_like_proxy(buf) {
        return Preamble::Absent;
    }
    if buf.len() < V1_PREFIX.len().min(V2_SIGNATURE.len()) {
        return Preamble::Partial;
    }
    if buf.starts_with(V1_PREFIX) {
        parse_v1(buf)
    } else if buf.len() < V2_SIGNATURE.len() {
        Preamble::Partial
    } else {
        parse_v2(buf)
    }
}

fn parse_v1(buf: &[u8]) -> Preamble {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Preamble::Invalid("PROXY v1 line too long")
        } else {
            Preamble::Partial
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Preamble::Invalid("PROXY v1 line too long");
    }
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Preamble::Invalid("PROXY v1 line is not text");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Preamble::Complete {
            len,
            connection: None,
        },
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            let ip = |s: &str| -> Option<IpAddr> {
                match (v4, s.parse::<IpAddr>().ok()?) {
                    (true, ip @ IpAddr::V4(_)) | (false, ip @ IpAddr::V6(_)) => Some(ip),
                    _ => None,
                }
            };
            let port = |s: &str| -> Option<u16> {
                // No sign, no leading zeros: the specification's decimal form.
                (!s.starts_with('0') || s == "0")
                    .then(|| s.parse().ok())
                    .flatten()
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(s), Some(d), Some(sp), Some(dp)) => Preamble::Complete {
                    len,
                    connection: Some(ProxiedConnection {
                        source: SocketAddr::new(s, sp),
                        destination: SocketAddr::new(d, dp),
                    }),
                },
                _ => Preamble::Invalid("PROXY v1 addresses or ports are malformed"),
            }
        }
        _ => Preamble::Invalid("PROXY v1 line has the wrong fields"),
    }
}

fn parse_v2(buf: &[u8]) -> Preamble {
    const HEADER: usize = 16;
    if buf.len() < HEADER {
        return Preamble::Partial;
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Preamble::Invalid("PROXY v2 version is not 2");
    }
    let command = version_command & 0x0f;
    let family = buf[13];
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = HEADER + body_len;
    if buf.len() < len {
        return Preamble::Partial;
    }
    let body = &buf[HEADER..len];
    match command {
        0 => {
            return Preamble::Complete {
                len,
                connection: None,
            };
        } // LOCAL: the proxy's own health check
        1 => {} // PROXY
        _ => return Preamble::Invalid("PROXY v2 command is neither LOCAL nor PROXY"),
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let connection = match family {
        // AF_INET, STREAM
        0x11 => {
            if body.len() < 12 {
                return Preamble::Invalid("PROXY v2 IPv4 address block is short");
            }
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            ProxiedConnection {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        // AF_INET6, STREAM
        0x21 => {
            if body.len() < 36 {
                return Preamble::Invalid("PROXY v2 IPv6 address block is short");
            }
            let ip = |at: usize| {
                let octets: [u8; 16] = body[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            ProxiedConnection {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        // UNSPEC or a transport the tarpit does not serve: keep the socket's own addresses.
        _ => {
            return Preamble::Complete {
                len,
                connection: None,
            };
        }
    };
    Preamble::Complete {
        len,
        connection: Some(connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn complete(buf: &[u8]) -> (usize, Option<ProxiedConnection>) {
        match parse(buf) {
            Preamble::Complete { len, connection } => (len, connection),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\nGET / HTTP/1.1\r\n\r\n";
        let (len, conn) = complete(line);
        assert_eq!(len, 44);
        let conn = conn.unwrap();
        assert_eq!(conn.source.to_string(), "192.0.2.1:56324");
        assert_eq!(conn.destination.to_string(), "198.51.100.2:80");
        let (_, conn) = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 8888\r\n");
        assert_eq!(conn.unwrap().destination.to_string(), "[2001:db8::2]:8888");
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (15, None));
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n").1,
            None
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 80\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 0080 80\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 \xff 1 2 3\r\n",
        ] {
            assert!(matches!(parse(bad), Preamble::Invalid(_)), "{bad:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Preamble::Invalid(_)));
    }

    #[test]
    fn v2_tcp4_tcp6_local_and_tlvs() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&8888u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV, skipped
        let header = v2(1, 0x11, &body);
        let mut with_request = header.clone();
        with_request.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (len, conn) = complete(&with_request);
        assert_eq!(len, header.len());
        let conn = conn.unwrap();
        assert_eq!(conn.source.to_string(), "192.0.2.1:56324");
        assert_eq!(conn.destination.to_string(), "198.51.100.2:8888");

        let mut body6 = Vec::new();
        body6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&[0, 1, 0, 80]);
        let (_, conn) = complete(&v2(1, 0x21, &body6));
        assert_eq!(conn.unwrap().source.to_string(), "[2001:db8::1]:1");

        assert_eq!(complete(&v2(0, 0x00, &[])), (16, None));
        assert_eq!(complete(&v2(1, 0x12, &[0; 12])).1, None); // UDP over IPv4: ignored
    }

    #[test]
    fn v2_malformed_and_partial() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Preamble::Invalid(_)));
        assert!(matches!(
            parse(&v2(5, 0x11, &[0; 12])),
            Preamble::Invalid(_)
        ));
        assert!(matches!(parse(&v2(1, 0x11, &[0; 4])), Preamble::Invalid(_)));
        assert!(matches!(
            parse(&v2(1, 0x21, &[0; 12])),
            Preamble::Invalid(_)
        ));
        let full = v2(1, 0x11, &[0; 12]);
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]), Preamble::Partial, "cut {cut}");
        }
    }

    #[test]
    fn plain_http_is_absent() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Preamble::Absent);
        assert_eq!(parse(b"PRI * HTTP/2.0"), Preamble::Absent);
        assert_eq!(parse(b"PROX"), Preamble::Partial);
        assert_eq!(parse(b"\r\n\r\n"), Preamble::Partial);
        assert_eq!(parse(b""), Preamble::Absent);
    }
}
