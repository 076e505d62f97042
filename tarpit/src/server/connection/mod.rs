//! One connection from accept to close: read a request head, drip the response, and repeat
//! while keep-alive allows; every step is reported as an event.
//!
//! Every client is tarpitted, whatever it sends: garbage, a TLS ClientHello or silence gets its
//! row (with the reason in `error_message`) and the same slow response, then a close. Only a
//! client that leaves before a head is complete gets no response (there is no one to send it to).
//!
//! A task ([`drive`]) serves one request up to the start of its response: it reads the head,
//! records it, and writes the response head with the first tick. Then the connection moves to
//! the worker's [`Dripper`], which writes the ticks without a task or timer of its own; after a
//! complete keep-alive response the dripper starts a new task for the next request.
//!
//! All waiting goes through [`Waits::until`], which also ends the wait on shutdown and at the
//! connection's lifetime ceiling, so no connection can outlive either.

use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_uring::buf::{BoundedBuf, IoBuf};
use tokio_uring::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::drip::{DripState, Dripper, Held, io_end_reason};
use super::limits::ConnectionPermit;
use super::settings::Settings;
use crate::attribution::{EbpfLookup, TargetPorts};
use crate::event::{ConnectionClosed, Event, RequestRecord, ResponseEnd};
use crate::http::client_addr::{self, ClientAddr, ClientAddrSource};
use crate::http::head::{HeadStatus, HttpVersion, ParsedHead, escape_preview, parse_head};
use crate::http::proxy_protocol::{self, Preamble, ProxiedConnection};
use crate::http::response::Framing;

/// Bytes asked of the kernel per read while a head arrives.
const READ_CHUNK: usize = 2048;
/// Received bytes kept, escaped, in `raw_preview` for input that is not a request.
const RAW_PREVIEW_BYTES: usize = 512;

/// The worker's dripper, holding connections of this module.
pub(super) type ConnectionDripper = Dripper<Connection>;

impl Connection {
    /// The state of a newly accepted connection: socket-level port attribution (one map
    /// syscall, one getsockopt) and socket options, once per connection.
    pub(super) fn accept(
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        conn_id: u64,
        shared: Arc<Shared>,
        permit: ConnectionPermit,
    ) -> Box<Self> {
        let accepted = Instant::now();
        // Socket-level port attribution, once per connection: one map syscall, one getsockopt.
        let socket_ebpf = match &shared.ebpf {
            Some(map) => match map.take(local, peer) {
                Some(original) => EbpfLookup::Translated(original.port()),
                None => EbpfLookup::Untranslated(local.port()),
            },
            None => EbpfLookup::Unavailable,
        };
        let original_dst = super::listener::original_dst(&stream, local).map(|a| a.port());
        let expect_preamble = shared.settings.proxy_protocol
            && client_addr::is_trusted(peer.ip(), &shared.settings.trusted_proxies);
        let waits = Waits {
            cancel: shared.cancel.clone(),
            lifetime_end: accepted + shared.settings.max_connection_lifetime,
        };
        Box::new(Connection {
            stream,
            shared,
            permit,
            accepted,
            conn_id,
            peer,
            local,
            waits,
            requests: 0,
            bytes_sent: 0,
            pending: Vec::new(),
            socket_ebpf,
            original_dst,
            proxied_lookup: None,
            proxy: None,
            expect_preamble,
            carried_preamble: false,
        })
    }
}

impl Held for Connection {
    /// Serves the connection up to its next response, then hands it to the dripper (or
    /// closes it).
    async fn drive(mut self: Box<Self>, dripper: &Rc<ConnectionDripper>) {
        match self.next_response().await {
            Ok(state) => dripper.add(self, state),
            Err(reason) => self.close(reason),
        }
    }

    fn finish_response(&mut self, state: &DripState, outcome: Result<(), &'static str>) {
        self.bytes_sent += state.sent;
        self.shared.events.send(Event::ResponseEnd(ResponseEnd {
            conn_id: self.conn_id,
            request_seq: state.seq,
            closed_at: SystemTime::now(),
            bytes_sent: state.sent,
            duration_s: state.started.elapsed().as_secs_f64(),
            end_reason: outcome.err().unwrap_or("complete"),
        }));
    }

    fn close(self: Box<Self>, end_reason: &'static str) {
        // Wakes any read still pending in the ring, so the socket really closes.
        let _ = self.stream.shutdown(Shutdown::Both);
        self.shared
            .events
            .send(Event::ConnectionClosed(ConnectionClosed {
                conn_id: self.conn_id,
                closed_at: SystemTime::now(),
                requests: self.requests,
                bytes_sent: self.bytes_sent,
                duration_s: self.accepted.elapsed().as_secs_f64(),
                end_reason,
            }));
        drop(self); // releases the permit and closes the socket
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd belongs to `self.stream`, which outlives the borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.stream.as_raw_fd()) }
    }

    fn socket_error(&self) -> Option<nix::errno::Errno> {
        use nix::sys::socket::{getsockopt, sockopt::SocketError};
        let code = getsockopt(&self.fd(), SocketError).ok()?;
        (code != 0).then(|| nix::errno::Errno::from_raw(code))
    }

    fn lifetime_end(&self) -> Instant {
        self.waits.lifetime_end
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

/// The state of one connection, while a task serves it and while the dripper holds it.
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) shared: Arc<Shared>,
    /// Its place under the connection caps, released when the connection is dropped.
    permit: ConnectionPermit,
    accepted: Instant,
    conn_id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    waits: Waits,
    /// Requests recorded so far (rows written).
    requests: u32,
    /// Payload bytes dripped over all responses.
    bytes_sent: u64,
    /// Bytes received but not yet used: a pipelined next request.
    pending: Vec<u8>,
    /// The eBPF hook's answer for this socket's own 4-tuple.
    socket_ebpf: EbpfLookup,
    /// SO_ORIGINAL_DST's port for this socket.
    original_dst: Option<u16>,
    /// The last client 4-tuple a trusted proxy reported, and the hook's answer for it (entries
    /// are deleted when read, so a keep-alive client's next request reuses the answer). Boxed,
    /// like `proxy`: only connections from a proxy have it, and every held connection would
    /// otherwise carry its bytes.
    proxied_lookup: Option<Box<((SocketAddr, SocketAddr), EbpfLookup)>>,
    /// The client connection a trusted proxy stated in its PROXY protocol preamble.
    proxy: Option<Box<ProxiedConnection>>,
    /// Whether a PROXY preamble may still arrive (trusted peer, protocol on, not yet seen).
    expect_preamble: bool,
    /// Whether the connection began with a PROXY preamble (even `UNKNOWN` / `LOCAL`). Such a
    /// proxy works at the TCP level, so every HTTP header that follows is the client's own:
    /// forwarding headers are never believed on it.
    carried_preamble: bool,
}

/// What ends a wait early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// The server is stopping.
    Shutdown,
    /// The connection reached `max_connection_lifetime`.
    Lifetime,
    /// The wait's own deadline passed.
    Timeout,
}

impl Interrupt {
    fn end_reason(self) -> &'static str {
        match self {
            Interrupt::Shutdown => "shutdown",
            Interrupt::Lifetime => "lifetime_exceeded",
            Interrupt::Timeout => "timeout",
        }
    }
}

/// The two things every wait must also watch: shutdown and the lifetime ceiling.
struct Waits {
    /// Shutdown. Each wait makes its own (unallocated) `cancelled()` future and drops it with
    /// the wait: a future kept across waits would leave this task's waker registered with the
    /// token, and that waker keeps the whole finished task (~1.5 KB) alive while the dripper
    /// holds the connection.
    cancel: CancellationToken,
    lifetime_end: Instant,
}

impl Waits {
    /// Runs `operation` until it completes, `deadline` passes (if any), the lifetime ceiling is
    /// reached or shutdown begins.
    async fn until<F: Future>(
        &mut self,
        operation: F,
        deadline: Option<Instant>,
    ) -> Result<F::Output, Interrupt> {
        let (limit, on_limit) = match deadline {
            Some(deadline) if deadline < self.lifetime_end => (deadline, Interrupt::Timeout),
            _ => (self.lifetime_end, Interrupt::Lifetime),
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Interrupt::Shutdown),
            output = operation => Ok(output),
            _ = tokio::time::sleep_until(limit) => Err(on_limit),
        }
    }
}

/// What reading a request head came to.
enum HeadRead {
    /// A complete head; `body_consumed` says whether the connection can carry another request.
    Complete {
        head: ParsedHead,
        body: BodyPreview,
        body_consumed: bool,
    },
    /// Input that is not a request, or no complete head in time: recorded, then tarpitted.
    Rejected { reason: String, received: Vec<u8> },
    /// An idle keep-alive connection timed out before its next request: close quietly.
    Idle,
    /// The client left (`client_closed`, `client_reset`, `read_error`).
    Gone {
        reason: &'static str,
        received: Vec<u8>,
    },
    /// Shutdown or the lifetime ceiling cut the read short.
    Interrupted {
        interrupt: Interrupt,
        received: Vec<u8>,
    },
}

/// The first bytes of a request body, kept for the record.
#[derive(Debug, Default)]
struct BodyPreview {
    bytes: Option<Vec<u8>>,
    sha256: Option<String>,
    declared_length: Option<u64>,
}

impl Connection {
    /// Reads and records the next request, then writes its response head with the first tick.
    /// Returns the drip's starting state, or why the connection ends.
    async fn next_response(&mut self) -> Result<DripState, &'static str> {
        let mut pending = std::mem::take(&mut self.pending);
        let read = self.read_head(&mut pending).await;
        // Hold no head buffer through the drip: most connections have nothing pending.
        if !pending.is_empty() {
            pending.shrink_to_fit();
            self.pending = pending;
        }
        let seq = self.requests + 1;
        let first = self.requests == 0;
        let (record, plan) = match read {
            HeadRead::Complete {
                head,
                body,
                body_consumed,
            } => {
                let keep_alive = head.wants_keep_alive() && body_consumed;
                let record = self.request_record(seq, &head, body);
                (record, Ok((head.version, keep_alive)))
            }
            HeadRead::Rejected { reason, received } => {
                let record = self.rejected_record(seq, reason, &received, Some(200));
                (record, Ok((HttpVersion::Http11, false)))
            }
            HeadRead::Idle => return Err("keepalive_timeout"),
            HeadRead::Gone { reason, received } => {
                if !first && received.is_empty() {
                    return Err(reason);
                }
                let error = format!("{reason}_before_request");
                let record = self.rejected_record(seq, error, &received, None);
                (record, Err(reason))
            }
            HeadRead::Interrupted {
                interrupt,
                received,
            } => {
                let reason = interrupt.end_reason();
                if !first && received.is_empty() {
                    return Err(reason);
                }
                let error = format!("{reason}_before_request");
                let record = self.rejected_record(seq, error, &received, None);
                (record, Err(reason))
            }
        };
        // Bytes after a request that does not keep the connection alive (the unread rest of a
        // body larger than its preview, say) will never be read: free them now rather than
        // hold them through a drip of up to half an hour.
        if !matches!(plan, Ok((_, true))) {
            self.pending = Vec::new();
        }
        // Behind a trusted proxy the client is known only now: count it under the per-client
        // cap. A client over its cap keeps its row (with its own address) and is closed.
        let plan = plan.and_then(|answer| self.claim_client(&record).map(|()| answer));
        self.requests = seq;
        let started = Instant::now();
        self.shared.events.send(Event::Request(Box::new(record)));
        // `plan` is what to answer, or (no one left to answer) why the connection ends.
        let mut state = DripState {
            seq,
            started,
            framing: Framing::Chunked,
            keep_alive: false,
            tick: 1,
            offset: 0,
            sent: 0,
            next: started,
        };
        let outcome = match plan {
            Ok((version, keep_alive)) => {
                self.start_response(version, keep_alive).await.map(|sent| {
                    state.framing = Framing::for_version(version);
                    state.keep_alive = keep_alive;
                    state.sent = sent;
                    state.next = Instant::now() + self.shared.settings.response_delay;
                })
            }
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok(()) => Ok(state),
            Err(reason) => {
                self.finish_response(&state, Err(reason));
                Err(reason)
            }
        }
    }

    /// Reads until a complete head (and its body preview), a rejection, a timeout or the end.
    /// `pending` holds bytes already received; what follows the head stays in it.
    async fn read_head(&mut self, pending: &mut Vec<u8>) -> HeadRead {
        let settings = &self.shared.settings;
        let first = self.requests == 0;
        let now = Instant::now();
        // The first request's head must be complete within request_timeout of accept; a later
        // one may idle for keepalive_timeout, then has request_timeout from its first byte.
        let idle_deadline = now + settings.keepalive_timeout;
        let mut head_deadline =
            (first || !pending.is_empty()).then(|| now + settings.request_timeout);
        let mut scratch = Vec::with_capacity(READ_CHUNK);
        loop {
            if self.expect_preamble && !pending.is_empty() {
                match proxy_protocol::parse(pending) {
                    Preamble::Partial => {}
                    Preamble::Absent => self.expect_preamble = false,
                    Preamble::Complete { len, connection } => {
                        pending.drain(..len);
                        self.proxy = connection.map(Box::new);
                        self.expect_preamble = false;
                        self.carried_preamble = true;
                    }
                    Preamble::Invalid(reason) => {
                        return HeadRead::Rejected {
                            reason: format!("malformed_proxy_header: {reason}"),
                            received: std::mem::take(pending),
                        };
                    }
                }
            }
            if !pending.is_empty() && !self.expect_preamble {
                match parse_head(pending, settings.head_limits) {
                    HeadStatus::Partial => {}
                    HeadStatus::Complete(head) => {
                        pending.drain(..head.head_len);
                        let deadline = head_deadline.unwrap_or(idle_deadline);
                        let (body, body_consumed) =
                            self.read_body(&head, pending, scratch, deadline).await;
                        return HeadRead::Complete {
                            head,
                            body,
                            body_consumed,
                        };
                    }
                    HeadStatus::Rejected(rejection) => {
                        // A PROXY preamble we did not accept is worth naming as such.
                        let reason = if first && proxy_protocol::looks_like_proxy(pending) {
                            if client_addr::is_trusted(self.peer.ip(), &settings.trusted_proxies) {
                                "proxy_header_while_proxy_protocol_off".to_owned()
                            } else {
                                "proxy_header_from_untrusted_peer".to_owned()
                            }
                        } else {
                            rejection.to_string()
                        };
                        return HeadRead::Rejected {
                            reason,
                            received: std::mem::take(pending),
                        };
                    }
                }
            }
            let room = settings.head_limits.max_head - pending.len();
            scratch.clear();
            let read = self.stream.read(scratch.slice(..READ_CHUNK.min(room)));
            let deadline = head_deadline.unwrap_or(idle_deadline);
            let (result, slice) = match self.waits.until(read, Some(deadline)).await {
                Ok(done) => done,
                Err(Interrupt::Timeout) => {
                    return match (pending.is_empty(), first) {
                        (true, false) => HeadRead::Idle,
                        (true, true) => HeadRead::Rejected {
                            reason: "no_request".into(),
                            received: Vec::new(),
                        },
                        (false, _) => HeadRead::Rejected {
                            reason: "head_timeout".into(),
                            received: std::mem::take(pending),
                        },
                    };
                }
                Err(interrupt) => {
                    return HeadRead::Interrupted {
                        interrupt,
                        received: std::mem::take(pending),
                    };
                }
            };
            scratch = slice.into_inner();
            match result {
                Ok(0) => {
                    return HeadRead::Gone {
                        reason: "client_closed",
                        received: std::mem::take(pending),
                    };
                }
                Ok(n) => {
                    pending.extend_from_slice(&scratch[..n]);
                    head_deadline.get_or_insert_with(|| Instant::now() + settings.request_timeout);
                }
                Err(error) => {
                    return HeadRead::Gone {
                        reason: io_end_reason(&error, "read_error"),
                        received: std::mem::take(pending),
                    };
                }
            }
        }
    }

    /// Reads up to `body_preview_bytes` of a declared body. Returns the preview and whether the
    /// whole body was consumed (so that the next bytes are the next request).
    async fn read_body(
        &mut self,
        head: &ParsedHead,
        pending: &mut Vec<u8>,
        mut scratch: Vec<u8>,
        deadline: Instant,
    ) -> (BodyPreview, bool) {
        let limit = self.shared.settings.body_preview_bytes;
        let declared = head.content_length();
        let (want, consumable) = if head.is_chunked() {
            // Length unknown: keep what already arrived, and do not reuse the connection.
            (0, false)
        } else {
            match declared {
                None | Some(0) => (0, true),
                Some(length) => (length.min(limit as u64) as usize, length <= limit as u64),
            }
        };
        while pending.len() < want {
            scratch.clear();
            let read = self.stream.read(scratch.slice(..READ_CHUNK));
            match self.waits.until(read, Some(deadline)).await {
                Ok((Ok(n), slice)) if n > 0 => {
                    scratch = slice.into_inner();
                    pending.extend_from_slice(&scratch[..n]);
                }
                _ => break,
            }
        }
        // Chunked: whatever already arrived, up to the limit; otherwise the declared body's part.
        let cap = if head.is_chunked() { limit } else { want };
        let kept = pending.len().min(cap);
        let bytes = (kept > 0).then(|| pending[..kept].to_vec());
        let body_consumed =
            consumable && declared.is_none_or(|length| pending.len() as u64 >= length);
        if body_consumed {
            let length = declared.unwrap_or(0) as usize;
            pending.drain(..length);
        }
        let preview = BodyPreview {
            sha256: bytes.as_deref().map(sha256_hex),
            bytes,
            declared_length: declared,
        };
        (preview, body_consumed)
    }

    /// Writes the response head with the first tick; returns the payload bytes that carried.
    async fn start_response(
        &mut self,
        version: HttpVersion,
        keep_alive: bool,
    ) -> Result<u64, &'static str> {
        let drip = &self.shared.settings.drip;
        let (head, first_payload) =
            drip.head_with_first_tick(version, keep_alive, SystemTime::now());
        self.write(head).await?;
        Ok(first_payload)
    }

    /// Writes all of `bytes`, watching shutdown and the lifetime ceiling.
    async fn write<B: IoBuf>(&mut self, bytes: B) -> Result<(), &'static str> {
        match self.waits.until(self.stream.write_all(bytes), None).await {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(error), _)) => Err(io_end_reason(&error, "write_error")),
            Err(interrupt) => Err(interrupt.end_reason()),
        }
    }

    /// Counts a proxied request's client under the per-client cap. Connections from other peers
    /// were counted at accept; a proxy's own address (no client named) is never capped.
    fn claim_client(&mut self, record: &RequestRecord) -> Result<(), &'static str> {
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
    fn target_ports(&mut self, head: Option<&ParsedHead>) -> TargetPorts {
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
        }
    }

    /// The client: from a PROXY preamble, else from trusted forwarding headers, else the peer.
    fn client(&self, head: Option<&ParsedHead>) -> ClientAddr {
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

    fn request_record(&mut self, seq: u32, head: &ParsedHead, body: BodyPreview) -> RequestRecord {
        let client = self.client(Some(head));
        let ports = self.target_ports(Some(head));
        let mut record = self.base_record(seq, client, head.head_len, ports);
        record.http_method = Some(head.method.clone());
        record.http_path = Some(head.path.clone());
        record.http_query = head.query.clone();
        record.http_version = Some(head.version.as_str());
        record.user_agent = head.header("user-agent").map(str::to_owned);
        record.headers_json = head.headers.clone();
        record.body_preview = body.bytes;
        record.body_sha256 = body.sha256;
        record.body_length = body.declared_length;
        record.response_status = Some(200);
        record
    }

    fn rejected_record(
        &mut self,
        seq: u32,
        reason: String,
        received: &[u8],
        response_status: Option<u16>,
    ) -> RequestRecord {
        let client = self.client(None);
        let ports = self.target_ports(None);
        let mut record = self.base_record(seq, client, received.len(), ports);
        record.error_message = Some(reason);
        record.raw_preview =
            (!received.is_empty()).then(|| escape_preview(received, RAW_PREVIEW_BYTES));
        record.response_status = response_status;
        record
    }

    fn base_record(
        &self,
        seq: u32,
        client: ClientAddr,
        head_size: usize,
        ports: TargetPorts,
    ) -> RequestRecord {
        let (target_port, target_port_source) = ports.resolve();
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
            error_message: None,
            raw_preview: None,
            geo: Default::default(),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use super::*;

    struct CountingWaker;

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {}
    }

    /// A wait leaves nothing registered behind: the dripper keeps a connection long after its
    /// task ended, and a waker kept by the shutdown token would keep that task's memory alive.
    #[test]
    fn a_finished_wait_keeps_no_waker() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let mut waits = Waits {
            cancel: CancellationToken::new(),
            lifetime_end: Instant::now() + Duration::from_secs(60),
        };
        let counter = Arc::new(CountingWaker);
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        // An operation still pending on its first poll, so every branch registers the waker.
        let mut polled = false;
        let operation = std::future::poll_fn(|_| {
            if std::mem::replace(&mut polled, true) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        });
        {
            let mut wait = std::pin::pin!(waits.until(operation, None));
            assert!(wait.as_mut().poll(&mut context).is_pending());
            assert!(
                Arc::strong_count(&counter) > 2,
                "the wait registered the waker"
            );
            assert!(matches!(
                wait.as_mut().poll(&mut context),
                Poll::Ready(Ok(7))
            ));
        }
        drop(waker);
        assert_eq!(Arc::strong_count(&counter), 1, "a waker outlived its wait");
        assert!(!waits.cancel.is_cancelled());
    }
}
