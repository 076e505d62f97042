//! What a request becomes on record: the client (PROXY preamble, trusted forwarding headers
//! or the peer), every port source's answer, the per-client cap for proxied clients, and the
//! `RequestRecord` itself.

use std::time::SystemTime;

use super::{BodyPreview, Connection, PageStart, RAW_PREVIEW_BYTES};
use crate::attribution::{EbpfLookup, TargetPorts};
use crate::event::RequestRecord;
use crate::http::client_addr::{self, ClientAddr, ClientAddrSource};
use crate::http::head::{ParsedHead, escape_preview};

impl Connection {
    /// Counts a proxied request's client under the per-client cap. Connections from other peers
    /// were counted at accept; a proxy's own address (no client named) is never capped.
    pub(super) fn claim_client(&mut self, record: &RequestRecord) -> Result<(), &'static str> {
        if !ClientAddrSource::column_is_forwarded(record.client_ip_source)
            || !client_addr::is_trusted(self.peer.ip(), &self.shared.settings.trusted_proxies)
        {
            return Ok(());
        }
        self.permit
            .claim_client(record.client_ip)
            .map_err(|refusal| refusal.as_str())
    }

    /// Every source's answer for a request; behind a trusted proxy that reports the client's
    /// connection (X-Real-IP, X-Real-Port, X-Local-Addr), the hook is asked about that one.
    pub(super) fn target_ports(&mut self, head: Option<&ParsedHead>) -> TargetPorts {
        let trusted =
            client_addr::is_trusted(self.peer.ip(), &self.shared.settings.trusted_proxies);
        // After a PROXY preamble the headers come from the client, not from the proxy.
        let believe_headers = trusted && !self.carried_preamble;
        let header = |name| {
            head.filter(|_| believe_headers)
                .and_then(|h| h.header(name))
        };
        let target_header = header("x-tarpit-target-port").and_then(|v| v.trim().parse().ok());
        // A PROXY preamble states the client connection; otherwise the proxy's headers may.
        let client_tuple = match self.proxy.as_deref() {
            Some(conn) => Some((conn.destination, conn.source)),
            None => client_addr::proxied_tuple(
                header("x-local-addr"),
                header("x-real-ip"),
                header("x-real-port"),
            ),
        };
        let target_header = target_header.or(self.proxy.as_ref().map(|c| c.destination.port()));
        let sent_proxy_headers = head.is_some_and(|h| {
            ["x-tarpit-target-port", "x-real-port", "x-local-addr"]
                .iter()
                .any(|n| h.header(n).is_some())
        });
        if !trusted
            && sent_proxy_headers
            && let Some(suppressed) = self.shared.untrusted_proxy_warning.check()
        {
            tracing::info!(
                peer = %self.peer,
                suppressed,
                "proxy headers (X-Tarpit-Target-Port, X-Real-Port, X-Local-Addr) from a peer \
                 outside trusted_proxies: recorded, not believed"
            );
        }
        let ebpf = match (client_tuple, &self.shared.ebpf) {
            (Some(tuple), Some(map)) => match self.proxied_lookup.as_deref() {
                Some(&(seen, answer)) if seen == tuple => answer,
                _ => {
                    let answer = match map.take(tuple.0, tuple.1) {
                        Some(original) => EbpfLookup::Translated(original.port()),
                        None => EbpfLookup::Untranslated(tuple.0.port()),
                    };
                    self.proxied_lookup = Some(Box::new((tuple, answer)));
                    answer
                }
            },
            (Some(_), None) => EbpfLookup::Unavailable,
            (None, _) => self.socket_ebpf,
        };
        TargetPorts {
            ebpf,
            original_dst: self.original_dst,
            header: target_header,
            local: self.local.port(),
            proxied: target_header.is_some() || client_tuple.is_some(),
            sk_lookup: self
                .shared
                .steered_ports
                .as_ref()
                .is_some_and(|ports| ports.contains(self.local.port())),
        }
    }

    /// The client: from a PROXY preamble, else from trusted forwarding headers, else the peer.
    pub(super) fn client(&self, head: Option<&ParsedHead>) -> ClientAddr {
        if let Some(conn) = self.proxy.as_deref() {
            return ClientAddr {
                ip: conn.source.ip().to_canonical(),
                port: Some(conn.source.port()),
                source: ClientAddrSource::ProxyProtocol,
            };
        }
        match head {
            _ if self.carried_preamble => ClientAddr {
                ip: self.peer.ip().to_canonical(),
                port: Some(self.peer.port()),
                source: ClientAddrSource::ProxyProtocolUnknown,
            },
            Some(head) => {
                client_addr::resolve(self.peer, &self.shared.settings.trusted_proxies, |n| {
                    head.header(n)
                })
            }
            None => ClientAddr {
                ip: self.peer.ip().to_canonical(),
                port: Some(self.peer.port()),
                source: ClientAddrSource::Socket,
            },
        }
    }

    pub(super) fn request_record(
        &mut self,
        seq: u32,
        head: &ParsedHead,
        body: BodyPreview,
    ) -> RequestRecord {
        let client = self.client(Some(head));
        let ports = self.target_ports(Some(head));
        let mut record = self.base_record(seq, client, head.head_len, ports);
        record.http_method = Some(head.method.clone());
        record.http_path = Some(head.path.clone());
        record.http_query = head.query.clone();
        record.http_version = Some(head.version.as_str());
        record.user_agent = head.header("user-agent").map(str::to_owned);
        record.headers_json = head.headers.clone();
        record.header_order = Some(head.header_order.clone());
        record.body_preview = body.bytes;
        record.body_sha256 = body.sha256;
        record.body_length = body.declared_length;
        record.response_status = Some(200);
        record
    }

    /// The persona page a parsed request is answered with (`None` when the drip drips dots),
    /// and in the adaptive mode its decision, recorded in `record`. One snapshot load and a few
    /// hash lookups, once per request.
    pub(super) fn adaptive_plan(
        &self,
        head: &ParsedHead,
        record: &mut RequestRecord,
    ) -> Option<PageStart> {
        let settings = &self.shared.settings;
        let persona = settings.persona.as_ref()?;
        let has_input = head.query.as_deref().is_some_and(|q| !q.is_empty())
            || head
                .header("content-length")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
            || head.header("transfer-encoding").is_some();
        let page = persona.page_for(&head.path, has_input);
        record.response_status = Some(persona.page(page).status);
        if settings.canary.is_some() {
            record.canary_slots = persona.page(page).slots;
        }
        let head_only = head.method.eq_ignore_ascii_case("HEAD");
        let Some(adaptive) = settings.adaptive.as_ref() else {
            // The drip dripping the persona: the page, never ended early.
            return Some(PageStart {
                page,
                planned_end: None,
                head_only,
            });
        };
        let decision = adaptive.snapshot.load().decide(
            record.client_ip,
            record.user_agent.as_deref(),
            &head.header_order,
        );
        let planned_end = decision
            .give_up
            .map(|(seconds, _)| adaptive.planned_end(seconds));
        record.response_mode = "adaptive";
        let millis = |seconds: f64| (seconds * 1000.0).round() / 1000.0;
        record.giveup_limit_s = decision.give_up.map(|(s, _)| millis(f64::from(s)));
        record.giveup_basis = decision.give_up.map(|(_, basis)| basis.name());
        record.planned_end_s = planned_end.map(|end| millis(end.as_secs_f64()));
        record.families = Some(decision.keys);
        Some(PageStart {
            page,
            planned_end,
            head_only,
        })
    }

    pub(super) fn rejected_record(
        &mut self,
        seq: u32,
        reason: String,
        received: &[u8],
        response_status: Option<u16>,
    ) -> RequestRecord {
        let client = self.client(None);
        let ports = self.target_ports(None);
        let mut record = self.base_record(seq, client, received.len(), ports);
        // A head cut at the size limit is still a request: what arrived of it is recorded
        // (and so classified) as a complete head would be.
        if reason == "head_too_large" {
            let max_headers = self.shared.settings.head_limits.max_headers;
            if let Some(head) = crate::http::head::truncated_head(received, max_headers) {
                record.http_method = Some(head.method.clone());
                record.http_path = Some(head.path.clone());
                record.http_query = head.query.clone();
                record.http_version = Some(head.version.as_str());
                record.user_agent = head.header("user-agent").map(str::to_owned);
                record.headers_json = head.headers;
                record.header_order = Some(head.header_order);
            }
        }
        record.error_message = Some(reason);
        record.raw_preview =
            (!received.is_empty()).then(|| escape_preview(received, RAW_PREVIEW_BYTES));
        record.response_status = response_status;
        if record.error_message.as_deref() == Some("tls_client_hello") {
            let end = crate::fingerprint::tls::record_len(received).unwrap_or(0);
            record.client_hello = received.get(..end).map(<[u8]>::to_vec);
        }
        record
    }

    pub(super) fn base_record(
        &self,
        seq: u32,
        client: ClientAddr,
        head_size: usize,
        ports: TargetPorts,
    ) -> RequestRecord {
        let (target_port, target_port_source) = ports.resolve();
        // Behind a proxy the saved SYN is the proxy's, not the client's.
        let syn = self
            .syn
            .filter(|_| client.source == ClientAddrSource::Socket);
        RequestRecord {
            conn_id: self.conn_id,
            request_seq: seq,
            timestamp: SystemTime::now(),
            client_ip: client.ip,
            client_port: client.port,
            client_ip_source: client.source.as_str(),
            peer_ip: self.peer.ip().to_canonical(),
            peer_port: self.peer.port(),
            local_ip: self.local.ip().to_canonical(),
            local_port: self.local.port(),
            target_port,
            target_port_source,
            target_port_ebpf: ports.ebpf.port(),
            ebpf_lookup: ports.ebpf.as_column(),
            target_port_original_dst: ports.original_dst,
            target_port_header: ports.header,
            http_method: None,
            http_path: None,
            http_query: None,
            http_version: None,
            user_agent: None,
            headers_json: Vec::new(),
            head_size,
            body_preview: None,
            body_sha256: None,
            body_length: None,
            response_status: None,
            response_mode: "drip",
            giveup_limit_s: None,
            giveup_basis: None,
            planned_end_s: None,
            families: None,
            error_message: None,
            raw_preview: None,
            geo: Default::default(),
            fingerprint: None,
            header_order: None,
            syn,
            client_hello: None,
            tags: Vec::new(),
            canary_slots: &[],
            canary: None,
        }
    }
}
