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

use tokio::time::Instant;
use tokio_uring::buf::IoBuf;
use tokio_uring::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::drip::{DRIP_TICKS, DripState, Dripper, Held, NO_FIN, NO_PLANNED_END, io_end_reason};
use super::limits::ConnectionPermit;
use super::socketless::{HeldResponse, HeldStream, Holder, repair};

mod read;
mod record;
use super::settings::Settings;
use crate::attribution::EbpfLookup;
use crate::event::{ConnectionClosed, Event, ResponseEnd};
use crate::http::client_addr::{self};
use crate::http::head::{HttpVersion, ParsedHead};
use crate::http::proxy_protocol::ProxiedConnection;
use crate::http::response::Framing;

/// Bytes asked of the kernel per read while a head arrives.
const READ_CHUNK: usize = 2048;
/// Received bytes kept, escaped, in `raw_preview` for input that is not a request.
const RAW_PREVIEW_BYTES: usize = 512;

/// The worker's dripper, holding connections of this module.
pub(super) type ConnectionDripper = Dripper<Connection>;

impl Connection {
    /// The state of a newly accepted connection: socket-level port attribution (one map
    /// syscall, none while the hook's map is empty; one getsockopt) and socket options, once
    /// per connection.
    pub(super) fn accept(
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        conn_id: u64,
        shared: Arc<Shared>,
        permit: ConnectionPermit,
    ) -> Box<Self> {
        let accepted = Instant::now();
        // Socket-level port attribution, once per connection: at most one map syscall, one
        // getsockopt.
        let socket_ebpf = match &shared.ebpf {
            Some(map) => match map.take(local, peer) {
                Some(original) => EbpfLookup::Translated(original.port()),
                None => EbpfLookup::Untranslated(local.port()),
            },
            None => EbpfLookup::Unavailable,
        };
        let original_dst = super::listener::original_dst(&stream, local).map(|a| a.port());
        let syn = super::listener::saved_syn(&stream);
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
            syn,
            proxied_client: None,
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

    fn finish_response(&mut self, state: &DripState, outcome: Result<&'static str, &'static str>) {
        self.bytes_sent += state.sent;
        self.shared.events.send(Event::ResponseEnd(ResponseEnd {
            conn_id: self.conn_id,
            request_seq: state.seq,
            closed_at: SystemTime::now(),
            bytes_sent: state.sent,
            duration_s: state.started.elapsed().as_secs_f64(),
            end_reason: outcome.unwrap_or_else(|reason| reason),
            client_fin_s: (state.fin_ms != NO_FIN).then(|| f64::from(state.fin_ms) / 1000.0),
        }));
    }

    fn close(self: Box<Self>, end_reason: &'static str) {
        // Wakes any read still pending in the ring, so the socket really closes. A reset has
        // ended every read already, and `shutdown` would only fail (ENOTCONN): skipped, one
        // system call less for each scanner that closes with RST.
        if end_reason != "client_reset" {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
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

    fn hand_over(&mut self, state: &mut DripState, holder: &Holder) -> bool {
        let frozen = match repair::freeze(self.fd()) {
            Ok(frozen) => frozen,
            Err(repair::FreezeError::Unacknowledged(_)) => return false, // next tick
            Err(error) => {
                state.socketless = false;
                if let Some(suppressed) = self.shared.socketless_warning.check() {
                    tracing::warn!(suppressed, "a response stays on its socket: {error}");
                }
                return false;
            }
        };
        let stream = if state.is_page() {
            HeldStream::Page {
                page: state.page,
                head_only: state.head_only,
                at: state.sent,
            }
        } else {
            HeldStream::Drip {
                framing: state.framing,
                tick: state.tick,
            }
        };
        let response = HeldResponse {
            local: self.local,
            peer: self.peer,
            conn_id: self.conn_id,
            request_seq: state.seq,
            prior_bytes: self.bytes_sent,
            accepted: self.accepted,
            started: state.started,
            fin_ms: state.fin_ms,
            stream,
            client_place: self.permit.client_place(),
        };
        match holder.admit(&frozen, response) {
            Ok(()) => {
                // The flow keeps the client's place; the socket's descriptor place goes.
                self.permit.hand_over_client_place();
                true
            }
            Err(error) => {
                repair::thaw(self.fd());
                state.socketless = false;
                if let Some(suppressed) = self.shared.socketless_warning.check() {
                    tracing::warn!(suppressed, "a response stays on its socket: {error}");
                }
                false
            }
        }
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

    fn canary_issuer(&self) -> Option<crate::canary::Issuer<'_>> {
        Some(crate::canary::Issuer {
            minter: self.shared.settings.canary.as_ref()?,
            client_ip: self.client_ip(),
        })
    }
}

impl Connection {
    /// The client the current response answers: the peer, or (behind a trusted proxy) the
    /// client the request named.
    fn client_ip(&self) -> std::net::IpAddr {
        self.proxied_client
            .as_deref()
            .copied()
            .unwrap_or_else(|| self.peer.ip().to_canonical())
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
    /// The client's SYN (`TCP_SAVED_SYN`, read once at accept), for the SYN fingerprint.
    syn: Option<crate::fingerprint::SynFields>,
    /// The client of the current request when it is not the peer (a trusted proxy's), for
    /// its canary tokens. Boxed: most connections are direct, and every held one carries it.
    proxied_client: Option<Box<std::net::IpAddr>>,
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

/// An adaptive response's start: the persona page, and when to complete it (if early).
#[derive(Debug, Clone, Copy)]
struct PageStart {
    page: u16,
    planned_end: Option<std::time::Duration>,
    /// HEAD: the head is dripped, there is no body.
    head_only: bool,
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
                let mut record = self.request_record(seq, &head, body);
                let page = self.adaptive_plan(&head, &mut record);
                let client = record.client_ip.to_canonical();
                self.proxied_client =
                    (client != self.peer.ip().to_canonical()).then(|| Box::new(client));
                // A response that will leave its socket cannot carry another request: it
                // is answered `Connection: close`.
                let keep_alive = keep_alive && !self.runs_socketless(page);
                (record, Ok((head.version, keep_alive, page)))
            }
            HeadRead::Rejected { reason, received } => {
                let record = self.rejected_record(seq, reason, &received, Some(200));
                (record, Ok((HttpVersion::Http11, false, None)))
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
        if !matches!(plan, Ok((_, true, _))) {
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
            page: DRIP_TICKS,
            end_ms: NO_PLANNED_END,
            fin_ms: NO_FIN,
            head_only: false,
            socketless: false,
        };
        let outcome = match plan {
            Ok((version, keep_alive, page)) => self
                .start_response(version, keep_alive, page)
                .await
                .map(|sent| {
                    let settings = &self.shared.settings;
                    state.framing = Framing::for_version(version);
                    state.keep_alive = keep_alive;
                    state.socketless = !keep_alive && self.runs_socketless(page);
                    state.sent = sent;
                    state.next = Instant::now() + settings.response_delay;
                    if let Some(page) = page {
                        state.page = page.page;
                        state.head_only = page.head_only;
                        let gap = settings
                            .adaptive
                            .as_ref()
                            .map_or(settings.response_delay, |a| a.gap(settings.response_delay));
                        state.next = Instant::now() + gap;
                        if let Some(end) = page.planned_end {
                            state.end_ms =
                                end.as_millis().min(u128::from(NO_PLANNED_END - 1)) as u32;
                            state.next = state.next.min(started + end);
                        }
                    }
                }),
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

    /// Whether a response would leave its socket: socketless hold is on, and the response
    /// runs to its end (the drip, or a page with no planned early end).
    /// A page with canary tokens stays on its socket: the holder does not know the client
    /// behind a proxy, and bait is a small share of the pages.
    fn runs_socketless(&self, page: Option<PageStart>) -> bool {
        let settings = &self.shared.settings;
        let has_tokens = |start: PageStart| {
            settings.canary.is_some()
                && settings
                    .persona
                    .as_ref()
                    .is_some_and(|p| !p.page(start.page).slots.is_empty())
        };
        self.shared.socketless.is_some()
            && page.is_none_or(|page| page.planned_end.is_none() && !has_tokens(page))
    }

    /// Writes the response head with the first tick (the drip's, or the first slice of the
    /// persona page); returns the payload bytes that carried.
    async fn start_response(
        &mut self,
        version: HttpVersion,
        keep_alive: bool,
        page: Option<PageStart>,
    ) -> Result<u64, &'static str> {
        let settings = &self.shared.settings;
        let now = SystemTime::now();
        let (head, first_payload) = match (page, &settings.persona) {
            (Some(start), Some(persona)) => persona.head_with_first_slice(
                start.page,
                (version, keep_alive, start.head_only),
                settings.drip.server_header(),
                now,
                self.canary_issuer(),
            ),
            _ => settings.drip.head_with_first_tick(version, keep_alive, now),
        };
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
