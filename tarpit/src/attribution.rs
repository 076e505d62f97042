//! Which port the client meant to reach: every source's answer, and the rule that picks one.
//!
//! Sources, each stored in its own column so they can be compared (`tarpit ports`):
//! - **eBPF** (`target_port_ebpf`): the netfilter hook's record of the original destination.
//!   With the hook live and no record, the connection was not translated, so the port it
//!   reached is the port dialled: stored as that port with `ebpf_lookup = 'untranslated'`.
//! - **SO_ORIGINAL_DST** (`target_port_original_dst`): conntrack's pre-NAT destination of the
//!   accepted socket.
//! - **X-Tarpit-Target-Port** (`target_port_header`): from trusted proxies only.
//! - the **local port** of the accepted socket.
//! - **sk_lookup** (`[server] ports`): no NAT happened; the BPF `sk_lookup` program handed the
//!   connection to the listener, so the accepted socket's local port (and address) is exactly
//!   what the client dialled. Stored as the local port with `target_port_source = 'sk_lookup'`.
//!
//! Direct connections: eBPF, then SO_ORIGINAL_DST, then the local port; except that a miss in
//! the eBPF map (`untranslated`) never overrides SO_ORIGINAL_DST showing a translation: under
//! a SYN flood the LRU map evicts entries before their connections are accepted, and conntrack
//! still knows. Such a request is recorded with `ebpf_lookup = 'untranslated'` and
//! `target_port_source = 'original_dst'` ([`TargetPorts::ebpf_missed_translation`]), and
//! counted in the metric `tarpit_ebpf_map_misses_total`. With sk_lookup steering on, a direct
//! connection on a steered port is `sk_lookup` unless the hook saw a translation (REDIRECT rules
//! left in place beside it). Behind a trusted
//! proxy the socket-level sources describe the proxy's hop, not the client's, so the proxy's
//! word ranks above them: eBPF looked up with the client's 4-tuple (when the proxy passed it),
//! then the header, then SO_ORIGINAL_DST, then the local port.

/// The eBPF hook's answer for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EbpfLookup {
    /// No hook is running (or no 4-tuple to look up): no answer.
    Unavailable,
    /// The hook recorded a translation: the original destination port.
    Translated(u16),
    /// The hook is live and recorded nothing: not translated, dialled the port it reached.
    Untranslated(u16),
}

impl EbpfLookup {
    /// The port this answer stands for, if any.
    pub fn port(self) -> Option<u16> {
        match self {
            EbpfLookup::Unavailable => None,
            EbpfLookup::Translated(port) | EbpfLookup::Untranslated(port) => Some(port),
        }
    }

    /// The `ebpf_lookup` column: `translated`, `untranslated`, or NULL.
    pub fn as_column(self) -> Option<&'static str> {
        match self {
            EbpfLookup::Unavailable => None,
            EbpfLookup::Translated(_) => Some("translated"),
            EbpfLookup::Untranslated(_) => Some("untranslated"),
        }
    }
}

/// Every source's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPorts {
    /// The hook's answer (for the client's 4-tuple behind a proxy, else the socket's).
    pub ebpf: EbpfLookup,
    /// SO_ORIGINAL_DST of the accepted socket.
    pub original_dst: Option<u16>,
    /// X-Tarpit-Target-Port from a trusted proxy.
    pub header: Option<u16>,
    /// The accepted socket's local port.
    pub local: u16,
    /// Whether a trusted proxy vouched for the request (header or client 4-tuple).
    pub proxied: bool,
    /// Whether the sk_lookup program may have steered this connection: steering is on and the
    /// local port is one it steers.
    pub sk_lookup: bool,
}

impl TargetPorts {
    /// The winning port and the name of its source (`target_port`, `target_port_source`).
    pub fn resolve(&self) -> (u16, &'static str) {
        if self.ebpf_missed_translation()
            && let Some(port) = self.original_dst
        {
            return (port, "original_dst");
        }
        if let EbpfLookup::Translated(port) = self.ebpf {
            return (port, "ebpf");
        }
        if self.sk_lookup && !self.proxied {
            return (self.local, "sk_lookup");
        }
        if let Some(port) = self.ebpf.port() {
            return (port, "ebpf");
        }
        if self.proxied
            && let Some(port) = self.header
        {
            return (port, "header");
        }
        if let Some(port) = self.original_dst {
            return (port, "original_dst");
        }
        (self.local, "local_port")
    }
}

impl TargetPorts {
    /// Whether the hook's map had no entry for a direct connection that conntrack says was
    /// translated (SO_ORIGINAL_DST differs from the port reached): an evicted entry.
    pub fn ebpf_missed_translation(&self) -> bool {
        matches!(self.ebpf, EbpfLookup::Untranslated(_))
            && !self.proxied
            && self.original_dst.is_some_and(|port| port != self.local)
    }
}

/// Whether a recorded request is one where the eBPF map missed a translation (see
/// [`TargetPorts::ebpf_missed_translation`]), from its columns.
pub fn recorded_ebpf_miss(ebpf_lookup: Option<&str>, target_port_source: &str) -> bool {
    ebpf_lookup == Some("untranslated") && target_port_source == "original_dst"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(ebpf: EbpfLookup, original_dst: Option<u16>, header: Option<u16>) -> TargetPorts {
        TargetPorts {
            ebpf,
            original_dst,
            header,
            local: 8080,
            proxied: header.is_some(),
            sk_lookup: false,
        }
    }

    #[test]
    fn a_steered_connection_is_its_local_port() {
        let steered = |ebpf, header: Option<u16>| TargetPorts {
            ebpf,
            original_dst: None,
            header,
            local: 2222,
            proxied: header.is_some(),
            sk_lookup: true,
        };
        assert_eq!(
            steered(EbpfLookup::Untranslated(2222), None).resolve(),
            (2222, "sk_lookup")
        );
        assert_eq!(
            steered(EbpfLookup::Unavailable, None).resolve(),
            (2222, "sk_lookup")
        );
        // REDIRECT rules beside it: the hook's translation is the truth.
        assert_eq!(
            steered(EbpfLookup::Translated(80), None).resolve(),
            (80, "ebpf")
        );
        // Behind a proxy the socket describes the proxy's hop.
        assert_eq!(
            steered(EbpfLookup::Unavailable, Some(443)).resolve(),
            (443, "header")
        );
    }

    #[test]
    fn ebpf_wins_when_live() {
        let p = ports(EbpfLookup::Translated(80), Some(80), None);
        assert_eq!(p.resolve(), (80, "ebpf"));
        let p = ports(EbpfLookup::Untranslated(8080), Some(8080), Some(80));
        assert_eq!(p.resolve(), (8080, "ebpf"));
    }

    #[test]
    fn without_ebpf_a_trusted_header_beats_the_proxy_hop() {
        let p = ports(EbpfLookup::Unavailable, Some(8080), Some(80));
        assert_eq!(p.resolve(), (80, "header"));
    }

    #[test]
    fn direct_connections_fall_back_to_original_dst_then_local() {
        let p = ports(EbpfLookup::Unavailable, Some(8888), None);
        assert_eq!(p.resolve(), (8888, "original_dst"));
        let p = ports(EbpfLookup::Unavailable, None, None);
        assert_eq!(p.resolve(), (8080, "local_port"));
    }

    #[test]
    fn an_ebpf_miss_never_overrides_a_translation_conntrack_saw() {
        let evicted = ports(EbpfLookup::Untranslated(8080), Some(80), None);
        assert!(evicted.ebpf_missed_translation());
        assert_eq!(evicted.resolve(), (80, "original_dst"));
        // Conntrack agrees there was no translation: the hook's answer stands.
        let direct = ports(EbpfLookup::Untranslated(8080), Some(8080), None);
        assert!(!direct.ebpf_missed_translation());
        assert_eq!(direct.resolve(), (8080, "ebpf"));
        // Behind a proxy SO_ORIGINAL_DST describes the proxy's hop, not the client's.
        let proxied = ports(EbpfLookup::Untranslated(8080), Some(80), Some(443));
        assert!(!proxied.ebpf_missed_translation());
        assert_eq!(proxied.resolve(), (8080, "ebpf"));
    }

    #[test]
    fn column_values() {
        assert_eq!(EbpfLookup::Translated(1).as_column(), Some("translated"));
        assert_eq!(
            EbpfLookup::Untranslated(1).as_column(),
            Some("untranslated")
        );
        assert_eq!(EbpfLookup::Unavailable.as_column(), None);
    }
}
