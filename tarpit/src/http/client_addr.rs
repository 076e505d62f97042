//! Who the client really is: the socket peer, or, behind a trusted proxy, the address the proxy
//! says it forwarded.
//!
//! Forwarding headers are trivially forged, so they decide `client_ip` only when the socket peer
//! is in `trusted_proxies`; from anyone else they are kept in `headers_json` as evidence and
//! otherwise ignored.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Where the recorded client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddrSource {
    /// The TCP peer itself.
    Socket,
    /// `X-Real-IP` from a trusted proxy.
    XRealIp,
    /// `X-Forwarded-For` from a trusted proxy.
    XForwardedFor,
    /// The PROXY protocol preamble of a trusted proxy.
    ProxyProtocol,
    /// A PROXY preamble that named no client (`UNKNOWN`, v2 `LOCAL`): the peer is recorded,
    /// and the HTTP headers, which are the scanner's own, are not believed.
    ProxyProtocolUnknown,
}

impl ClientAddrSource {
    /// Whether a `client_ip_source` column value names a client a trusted proxy forwarded.
    pub fn column_is_forwarded(column: &str) -> bool {
        [
            ClientAddrSource::XRealIp,
            ClientAddrSource::XForwardedFor,
            ClientAddrSource::ProxyProtocol,
        ]
        .iter()
        .any(|source| source.as_str() == column)
    }

    /// The name stored in the `client_ip_source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAddrSource::Socket => "socket",
            ClientAddrSource::XRealIp => "x-real-ip",
            ClientAddrSource::XForwardedFor => "x-forwarded-for",
            ClientAddrSource::ProxyProtocol => "proxy-protocol",
            ClientAddrSource::ProxyProtocolUnknown => "proxy-protocol-unknown",
        }
    }
}

/// The resolved client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's IP address.
    pub ip: IpAddr,
    /// The client's port, when known (a proxy header without `X-Real-Port` does not say).
    pub port: Option<u16>,
    /// Which source won.
    pub source: ClientAddrSource,
}

/// Whether `ip` belongs to one of the trusted networks. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`,
/// seen on dual-stack sockets) are compared as IPv4.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Resolves the client address for one request. `header` looks a request header up by name
/// (case-insensitively).
pub fn resolve<'a>(
    peer: SocketAddr,
    trusted: &[IpNet],
    header: impl Fn(&str) -> Option<&'a str>,
) -> ClientAddr {
    let from_socket = ClientAddr {
        ip: peer.ip().to_canonical(),
        port: Some(peer.port()),
        source: ClientAddrSource::Socket,
    };
    if !is_trusted(peer.ip(), trusted) {
        return from_socket;
    }
    let port = header("x-real-port").and_then(|p| p.trim().parse().ok());
    if let Some(ip) = header("x-real-ip").and_then(parse_addr) {
        return ClientAddr {
            ip,
            port,
            source: ClientAddrSource::XRealIp,
        };
    }
    if let Some(ip) = header("x-forwarded-for").and_then(|v| rightmost_untrusted(v, trusted)) {
        return ClientAddr {
            ip,
            port,
            source: ClientAddrSource::XForwardedFor,
        };
    }
    from_socket
}

/// The client connection a trusted proxy reports: (the proxy's local address that the client
/// reached, the client's address), from X-Local-Addr, X-Real-IP and X-Real-Port. All three
/// are needed to look that connection up in the eBPF map.
pub fn proxied_tuple(
    local_addr: Option<&str>,
    real_ip: Option<&str>,
    real_port: Option<&str>,
) -> Option<(SocketAddr, SocketAddr)> {
    let local = parse_socket_addr(local_addr?)?;
    let ip = parse_addr(real_ip?)?;
    let port = real_port?.trim().parse().ok()?;
    Some((local, SocketAddr::new(ip, port)))
}

/// Parses `1.2.3.4:80`, `[fd00::1]:80`, and nginx's unbracketed `fd00::1:80`.
fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
    }
    let (ip, port) = text.rsplit_once(':')?;
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?.to_canonical(),
        port.parse().ok()?,
    ))
}

/// The nearest hop in an X-Forwarded-For chain that is not one of our proxies: entries are
/// appended left to right, so everything right of it was added by infrastructure we trust.
/// An unparsable entry stops the walk: what lies left of it cannot be trusted.
fn rightmost_untrusted(value: &str, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut leftmost_valid = None;
    for entry in value.rsplit(',') {
        let ip = parse_addr(entry)?;
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
        leftmost_valid = Some(ip);
    }
    leftmost_valid
}

/// Parses `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]` or `[::1]:80`.
fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<IpNet> {
        vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let peer: SocketAddr = "203.0.113.9:4444".parse().unwrap();
        let got = resolve(
            peer,
            &trusted(),
            headers(&[("X-Forwarded-For", "1.2.3.4"), ("X-Real-IP", "5.6.7.8")]),
        );
        assert_eq!(got.ip.to_string(), "203.0.113.9");
        assert_eq!(got.port, Some(4444));
        assert_eq!(got.source, ClientAddrSource::Socket);
    }

    #[test]
    fn trusted_peer_x_real_ip_wins() {
        let peer: SocketAddr = "127.0.0.1:4444".parse().unwrap();
        let got = resolve(
            peer,
            &trusted(),
            headers(&[
                ("X-Forwarded-For", "1.2.3.4"),
                ("x-real-ip", "5.6.7.8"),
                ("X-Real-Port", "31337"),
            ]),
        );
        assert_eq!(got.ip.to_string(), "5.6.7.8");
        assert_eq!(got.port, Some(31337));
        assert_eq!(got.source, ClientAddrSource::XRealIp);
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_untrusted_hop() {
        let peer: SocketAddr = "127.0.0.1:4444".parse().unwrap();
        let got = resolve(
            peer,
            &trusted(),
            headers(&[("X-Forwarded-For", "9.9.9.9, 198.51.100.7, 10.1.2.3")]),
        );
        assert_eq!(got.ip.to_string(), "198.51.100.7");
        assert_eq!(got.port, None);
        assert_eq!(got.source, ClientAddrSource::XForwardedFor);
    }

    #[test]
    fn forwarded_for_garbage_falls_back_to_the_socket() {
        let peer: SocketAddr = "127.0.0.1:4444".parse().unwrap();
        let got = resolve(
            peer,
            &trusted(),
            headers(&[("X-Forwarded-For", "not-an-ip")]),
        );
        assert_eq!(got.source, ClientAddrSource::Socket);
        // Garbage in the middle stops the walk at the last trustworthy hop.
        let got = resolve(
            peer,
            &trusted(),
            headers(&[("X-Forwarded-For", "1.1.1.1, junk, 10.0.0.1")]),
        );
        assert_eq!(got.source, ClientAddrSource::Socket);
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_addr(" [2001:db8::1]:80 ").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            parse_addr("[2001:db8::1]").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            parse_addr("192.0.2.1:8080").unwrap().to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            parse_addr("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1"
        );
        assert!(parse_addr("").is_none());
    }

    #[test]
    fn proxied_tuple_needs_all_three_headers() {
        let (local, peer) =
            proxied_tuple(Some("10.0.0.1:80"), Some("10.0.0.2"), Some("5555")).unwrap();
        assert_eq!(local.to_string(), "10.0.0.1:80");
        assert_eq!(peer.to_string(), "10.0.0.2:5555");
        let (local, _) = proxied_tuple(Some("fd00::1:8888"), Some("fd00::2"), Some("1")).unwrap();
        assert_eq!(local.to_string(), "[fd00::1]:8888");
        assert!(proxied_tuple(None, Some("10.0.0.2"), Some("5555")).is_none());
        assert!(proxied_tuple(Some("10.0.0.1:80"), Some("10.0.0.2"), Some("x")).is_none());
    }

    #[test]
    fn mapped_ipv4_peer_is_trusted_as_ipv4() {
        let peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(is_trusted(peer, &trusted()));
    }
}
