//! Socketless hold (`[tarpit] hold = "socketless"`): a response that will run to its end
//! leaves its kernel socket once its head and first tick are acknowledged, and the worker goes
//! on dripping it from a raw socket. A held client then costs about 200 bytes (a [`Flow`] here
//! and an entry in the eBPF hook's `HELD` map) and no file descriptor, so one process holds
//! far more clients than RLIMIT_NOFILE allows.
//!
//! The hand-over, for a connection the dripper is about to tick ([`Holder::admit`], called by
//! the connection): `ioctl(SIOCOUTQ)` says everything sent is acknowledged; the socket goes
//! into TCP repair mode and gives its sequence numbers, timestamp clock and window
//! ([`repair`]); the flow is added to the hook's map, which from then on drops the client's
//! packets (after conntrack has seen them) and notes its ACK, TSval, FIN and RST; then the
//! socket is closed, which in repair mode frees it and sends nothing. Each tick the holder reads
//! the flow's status (from the hook's status array, mapped into memory: no system call; see
//! [`crate::ebpf::held`]), decides ([`Flow::step`]) and queues a crafted segment
//! ([`segment`]): the next tick's bytes, after anything not yet acknowledged, so a lost segment
//! goes again from the client's last ACK. The response ends as on a socket (complete, client
//! reset or close, peer gone after `peer_timeout` of silence, lifetime, shutdown) and is
//! recorded with the same events; after our FIN the flow lingers a few ticks to acknowledge the
//! client's FIN.
//!
//! Nothing is pinned: the map and the hook live with the process's file descriptors, so after
//! `kill -9` the kernel drops both, a restarted tarpit starts clean, and a held client's next
//! packet meets a reset (or it times out on its own).

mod due;
pub mod flow;
mod record;
pub mod repair;
pub mod segment;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use slab::Slab;
use tarpit_ebpf::{HeldSlot, HeldStatus};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use crate::ebpf::held::HeldFlows;
use crate::http::response::{CHUNKED_END, Framing};
use due::Due;
use flow::{Flow, NO_FIN, Source, Step, Timeouts};
use repair::Frozen;
use segment::{Batch, Out, RawSockets};

/// What every worker's holder shares: the hook's map and the raw sockets, opened at start.
#[derive(Debug)]
pub struct SocketlessKit {
    /// The hook's map of held flows.
    pub map: Arc<HeldFlows>,
    /// The raw sockets the segments go out on.
    pub raw: RawSockets,
    /// Flows one worker holds at most (`socketless_max` / workers, rounded up): each worker
    /// fills its own range of status slots ([`crate::ebpf::held::worker_slots`]).
    pub per_worker: usize,
}

/// The bytes a handed-over response still has to send.
#[derive(Debug, Clone, Copy)]
pub enum HeldStream {
    /// The drip: `tick` is the next tick to write.
    Drip {
        /// Chunked or raw.
        framing: Framing,
        /// The next tick.
        tick: u64,
    },
    /// A persona page from body position `at`.
    Page {
        /// The page.
        page: u16,
        /// HEAD: the head's end is dripped.
        head_only: bool,
        /// Position in the page's bytes.
        at: u64,
    },
}

/// What a connection hands over with its frozen socket.
#[derive(Debug, Clone, Copy)]
pub struct HeldResponse {
    /// The accepted socket's local address.
    pub local: SocketAddr,
    /// The client's address (as the socket saw it).
    pub peer: SocketAddr,
    /// The connection's id.
    pub conn_id: u64,
    /// The request answered.
    pub request_seq: u32,
    /// Payload bytes of the connection's earlier responses.
    pub prior_bytes: u64,
    /// When the connection was accepted.
    pub accepted: Instant,
    /// When the request was recorded.
    pub started: Instant,
    /// The client's FIN so far, ms after `started`, or `u32::MAX`.
    pub fin_ms: u32,
    /// Where the response stands.
    pub stream: HeldStream,
    /// The client's place under the per-client cap, which the flow keeps until it ends.
    pub client_place: Option<crate::server::limits::HeldPlace>,
}

/// Why a flow could not be held (its connection stays on its socket).
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The hook's map refused the flow (`E2BIG`: `socketless_max` reached).
    #[error("the held-flow map refused it: {0}")]
    Map(nix::errno::Errno),
    /// More local addresses than a flow can name (65,536).
    #[error("too many local addresses")]
    TooManyAddresses,
    /// This worker holds its share of `socketless_max` already (each worker has its own range
    /// of the hook's status slots, so that no lock is shared).
    #[error("this worker's share of socketless_max ({0}) is held")]
    Full(usize),
}

struct State {
    flows: Slab<Flow>,
    /// When each flow is due, in holder ms, 64 bits (this order must never wrap); each flow
    /// has exactly one entry.
    due: BinaryHeap<Reverse<Due>>,
    out: Out,
}

/// Ticks due this close together are sent in one wake-up (as the dripper's).
const COALESCE_MS: u32 = 5;

/// A tick served this long after it was due counts as late.
const LATE_MS: u32 = 10;

/// One worker's socketless holder.
pub struct Holder {
    shared: Arc<Shared>,
    epoch: Instant,
    state: RefCell<State>,
    /// This worker's status slots in the hook's array: a flow in `flows` slot `i` has status
    /// slot `slots.start + i`.
    slots: std::ops::Range<u32>,
    /// The generation the last admitted flow got (see [`tarpit_ebpf::HeldSlot`]).
    generation: std::cell::Cell<u32>,
    /// Our addresses the held flows were accepted on; a flow keeps an index.
    locals: RefCell<Vec<std::net::IpAddr>>,
    /// Ticks served, and those served more than [`LATE_MS`] after they were due: logged at
    /// shutdown, so a drip that cannot keep its cadence is visible.
    ticks: std::cell::Cell<(u64, u64)>,
    wake: Notify,
}

impl Holder {
    /// The holder of worker `worker`, when socketless holding is on.
    pub(super) fn new(shared: &Arc<Shared>, worker: usize) -> Option<Rc<Self>> {
        let kit = shared.socketless.as_ref()?;
        let slots = crate::ebpf::held::worker_slots(kit.map.capacity(), kit.per_worker, worker);
        // Room for this worker's share, reserved (not touched) at once: growing by copies
        // would leave the old copies' pages behind.
        let capacity = slots.len();
        Some(Rc::new(Self {
            shared: shared.clone(),
            epoch: Instant::now(),
            slots,
            generation: std::cell::Cell::new(0),
            state: RefCell::new(State {
                flows: Slab::with_capacity(capacity),
                due: BinaryHeap::with_capacity(capacity),
                out: Out {
                    v4: Batch::default(),
                    v6: Batch::default(),
                    payload: vec![0; segment::MAX_PACKET],
                },
            }),
            wake: Notify::new(),
            locals: RefCell::new(Vec::new()),
            ticks: std::cell::Cell::new((0, 0)),
        }))
    }

    fn kit(&self) -> &SocketlessKit {
        self.shared
            .socketless
            .as_ref()
            .expect("a holder exists only with its kit")
    }

    /// Flows this worker holds right now.
    pub(super) fn held(&self) -> usize {
        self.state.borrow().flows.len()
    }

    /// The holder's clock in ms, wrapping at 32 bits (flows keep only differences of it).
    fn ms(&self, at: Instant) -> u32 {
        self.ms64(at) as u32
    }

    /// The holder's clock in ms, for the deadline order.
    fn ms64(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Our address a flow was accepted on.
    fn local_ip(&self, flow: &Flow) -> std::net::IpAddr {
        self.locals.borrow()[usize::from(flow.local)]
    }

    /// The index of our address `ip` in the table of local addresses (a sensor has few).
    fn local_index(&self, ip: std::net::IpAddr) -> Result<u16, AdmitError> {
        let ip = ip.to_canonical();
        let mut locals = self.locals.borrow_mut();
        if let Some(at) = locals.iter().position(|known| *known == ip) {
            return Ok(at as u16);
        }
        let at = u16::try_from(locals.len()).map_err(|_| AdmitError::TooManyAddresses)?;
        locals.push(ip);
        Ok(at)
    }

    /// Takes over a response whose socket is frozen: adds the flow to the hook's map (from
    /// now on the client's packets are dropped) and schedules its next tick now. The caller
    /// closes the socket on `Ok`, and thaws it on `Err`.
    pub(super) fn admit(&self, frozen: &Frozen, response: HeldResponse) -> Result<(), AdmitError> {
        let settings = &self.shared.settings;
        let (position, mut bits, page) = match response.stream {
            HeldStream::Drip { framing, tick } => (
                settings.drip.stream_position(tick, framing),
                if framing == Framing::Chunked {
                    Flow::CHUNKED
                } else {
                    0
                },
                0,
            ),
            HeldStream::Page {
                page,
                head_only,
                at,
            } => (
                at,
                Flow::PAGE | if head_only { Flow::HEAD_ONLY } else { 0 },
                page,
            ),
        };
        if frozen.ts_offset.is_some() {
            bits |= Flow::TIMESTAMPS;
        }
        if response.client_place.is_some() {
            bits |= Flow::COUNTED;
        }
        let position = position as u32;
        let key = crate::ebpf::held::held_key(response.local, response.peer);
        let local = self.local_index(response.local.ip())?;
        let now_instant = Instant::now();
        let now = self.ms(now_instant);
        let flow = Flow {
            key,
            seq_zero: frozen.snd_nxt.wrapping_sub(position),
            rcv_nxt: frozen.rcv_nxt,
            ts_offset: frozen.ts_offset.unwrap_or(0),
            sent: position,
            acked: position,
            progress_ms: now,
            started_ms: self.ms(response.started),
            accepted_ms: self.ms(response.accepted),
            fin_ms: response.fin_ms,
            conn_id: response.conn_id,
            request_seq: response.request_seq,
            prior_bytes: response.prior_bytes.min(u64::from(u32::MAX)) as u32,
            window: frozen.window,
            mss: frozen.mss,
            page,
            local,
            bits,
            closing_ticks: 0,
            resends: 0,
            resend_wait: 0,
            resent: 0,
            place: response.client_place.unwrap_or_default(),
        };
        // What the hook believes of the client: ACKs up to the end of the stream and our FIN,
        // a FIN or RST in the receive window.
        let length = self.source(&flow).length();
        let status = HeldStatus {
            ack: frozen.snd_nxt,
            rcv_nxt: frozen.rcv_nxt,
            ack_limit: flow.seq_zero.wrapping_add(length).wrapping_add(1),
            window: u16::MAX,
            ..Default::default()
        };
        let mut state = self.state.borrow_mut();
        let slot = state.flows.vacant_key();
        let index = self
            .status_slot(slot)
            .ok_or(AdmitError::Full(self.slots.len()))?;
        // Never 0, the value of a slot never filled.
        let generation = self.generation.get().wrapping_add(1).max(1);
        self.generation.set(generation);
        let held = HeldSlot { index, generation };
        self.kit()
            .map
            .add(&key, held, &status)
            .map_err(AdmitError::Map)?;
        let slot = state.flows.insert(flow) as u32;
        state
            .due
            .push(Reverse(Due::new(self.ms64(now_instant), slot)));
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// The hook's status slot of the flow in `flows` slot `slot`, if within this worker's range.
    fn status_slot(&self, slot: usize) -> Option<u32> {
        let index = self.slots.start.checked_add(u32::try_from(slot).ok()?)?;
        self.slots.contains(&index).then_some(index)
    }

    /// What the client of the flow in `flows` slot `slot` said so far, as the hook noted it.
    fn status(&self, slot: usize) -> Option<HeldStatus> {
        self.kit().map.status(self.status_slot(slot)?)
    }

    /// The holder's loop on the worker; on shutdown it ends every held response.
    pub(super) async fn run(self: Rc<Self>) {
        let cancel = self.shared.cancel.clone();
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        loop {
            let next = self
                .state
                .borrow()
                .due
                .peek()
                .map(|Reverse(due)| due.due_ms());
            let sleep_until = match next {
                Some(due) => self.epoch + Duration::from_millis(due),
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(sleep_until) => self.tick_due(),
            }
        }
        let (served, late) = self.ticks.get();
        tracing::info!(
            held = self.held(),
            ticks = served,
            late,
            "socketless holder stopping (late: served over {LATE_MS} ms after due)"
        );
        self.end_all();
    }

    /// Serves every flow due now (or within [`COALESCE_MS`]).
    fn tick_due(&self) {
        let now = Instant::now();
        let now_ms = self.ms64(now);
        let mut state = self.state.borrow_mut();
        while let Some(Reverse(entry)) = state.due.peek().copied() {
            let (due, slot) = (entry.due_ms(), entry.slot());
            if due > now_ms + u64::from(COALESCE_MS) {
                break;
            }
            state.due.pop();
            let (served, late) = self.ticks.get();
            let is_late = now_ms.saturating_sub(due) > u64::from(LATE_MS);
            self.ticks.set((served + 1, late + u64::from(is_late)));
            if let Some(next) = self.tick_flow(&mut state, slot as usize, now, (due, now_ms)) {
                state.due.push(Reverse(Due::new(next, slot)));
            }
        }
        state.out.flush(&self.kit().raw);
    }

    /// One flow's tick; returns its next due time, or `None` once it is forgotten.
    fn tick_flow(
        &self,
        state: &mut State,
        slot: usize,
        now: Instant,
        (due, now_ms64): (u64, u64),
    ) -> Option<u64> {
        let now_ms = now_ms64 as u32;
        let settings = &self.shared.settings;
        let kit = self.kit();
        let flow = state.flows.get_mut(slot)?;
        let Some(status) = self.status(slot) else {
            // No status slot (never for an admitted flow): nothing can be sent safely.
            if !flow.has(Flow::CLOSING) {
                self.record(flow, "write_error", now);
            }
            state.flows.remove(slot);
            return None;
        };
        if status.fin_ms != 0 && flow.fin_ms == NO_FIN {
            let at = self.instant_of(status.fin_ms, now);
            flow.fin_ms = self.ms(at).saturating_sub(flow.started_ms).min(NO_FIN - 1);
        }
        let timeouts = Timeouts {
            lifetime_ms: millis(settings.max_connection_lifetime),
            peer_ms: millis(settings.peer_timeout),
        };
        let source = self.source(flow);
        let step = flow.step(&status, &source, now_ms, timeouts);
        // Keep the cadence from when the tick was due; after a stall, resume from now rather
        // than burst (as the dripper does).
        let delay = u64::from(self.delay(flow));
        let next = if due + delay > now_ms64 {
            due + delay
        } else {
            now_ms64 + delay
        };
        let flow = &state.flows[slot];
        match step {
            Step::Send {
                from,
                to,
                fin,
                ended,
            } => {
                let ack = flow.rcv_nxt;
                let source = Some(&source);
                state.out.queue(
                    (&kit.raw, self.local_ip(flow)),
                    flow,
                    (from, to),
                    ack,
                    (fin, &status),
                    (source, &[]),
                );
                if let Some(reason) = ended {
                    self.record(flow, reason, now);
                }
                Some(next)
            }
            Step::Gone { reason, at_ms } => {
                let at = at_ms.map_or(now, |ms| self.instant_of(ms, now));
                self.record(flow, reason, at);
                kit.map.remove(&flow.key);
                self.release_place(flow);
                state.flows.remove(slot);
                None
            }
            Step::AckFinAndForget => {
                // Our FIN is acknowledged: this ACK of the client's FIN follows it.
                let (at, ack) = (flow.sent + 1, flow.rcv_nxt.wrapping_add(1));
                state.out.queue(
                    (&kit.raw, self.local_ip(flow)),
                    flow,
                    (at, at),
                    ack,
                    (false, &status),
                    (None, &[]),
                );
                kit.map.remove(&flow.key);
                self.release_place(flow);
                state.flows.remove(slot);
                None
            }
            Step::Wait => Some(next),
            Step::Forget => {
                kit.map.remove(&flow.key);
                self.release_place(flow);
                state.flows.remove(slot);
                None
            }
        }
    }

    /// Gives back the client's place under the per-client cap of a flow that is forgotten.
    fn release_place(&self, flow: &Flow) {
        if flow.has(Flow::COUNTED) {
            self.shared.limits.release_held(flow.place);
        }
    }

    /// Where this flow's bytes come from.
    fn source(&self, flow: &Flow) -> Source<'_> {
        let settings = &self.shared.settings;
        if !flow.has(Flow::PAGE) {
            let framing = if flow.has(Flow::CHUNKED) {
                Framing::Chunked
            } else {
                Framing::Raw
            };
            return Source::Drip(&settings.drip, framing);
        }
        match settings.persona.as_ref().map(|p| p.page(flow.page)) {
            Some(page) if flow.has(Flow::HEAD_ONLY) => Source::Page {
                bytes: page.tail(false),
                per_tick: 1,
            },
            Some(page) => Source::Page {
                bytes: page.body,
                per_tick: page.per_tick,
            },
            None => Source::Page {
                bytes: &[],
                per_tick: 1,
            },
        }
    }

    /// The gap to the flow's next tick (jittered for adaptive pages, as on a socket).
    fn delay(&self, flow: &Flow) -> u32 {
        let settings = &self.shared.settings;
        let delay = match (&settings.adaptive, flow.has(Flow::PAGE)) {
            (Some(adaptive), true) => adaptive.gap(settings.response_delay),
            _ => settings.response_delay,
        };
        millis(delay).max(1)
    }

    /// The Instant of a hook timestamp (CLOCK_MONOTONIC ms), given `now`.
    fn instant_of(&self, monotonic_ms: u32, now: Instant) -> Instant {
        let age = repair::monotonic_ms().wrapping_sub(monotonic_ms);
        now.checked_sub(Duration::from_millis(u64::from(age.min(86_400_000))))
            .unwrap_or(now)
    }

    /// Shutdown: every held response ends with its terminating chunk (drip, chunked) and our
    /// FIN, recorded as `shutdown`; the flows leave the map (the hook goes with the process).
    fn end_all(&self) {
        let now = Instant::now();
        let kit = self.kit();
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.due.clear();
        for (slot, mut flow) in std::mem::take(&mut state.flows) {
            let status = self.status(slot).unwrap_or_default();
            if !flow.has(Flow::CLOSING) {
                // Unacknowledged bytes, then the terminating chunk (drip, chunked) and FIN:
                // what the dripper writes before a socket's shutdown.
                let from = flow.acked.min(flow.sent);
                let tail = if flow.has(Flow::CHUNKED) {
                    CHUNKED_END
                } else {
                    &[]
                };
                let source = self.source(&flow);
                let ack = flow.rcv_nxt;
                let local = (&kit.raw, self.local_ip(&flow));
                if flow.shutdown_fits(tail.len()) {
                    state.out.queue(
                        local,
                        &flow,
                        (from, flow.sent),
                        ack,
                        (true, &status),
                        (Some(&source), tail),
                    );
                } else {
                    // A full segment pending: it first, then the closing chunk and FIN.
                    state.out.queue(
                        local,
                        &flow,
                        (from, flow.sent),
                        ack,
                        (false, &status),
                        (Some(&source), &[]),
                    );
                    state.out.queue(
                        local,
                        &flow,
                        (flow.sent, flow.sent),
                        ack,
                        (true, &status),
                        (None, tail),
                    );
                }
                flow.bits |= Flow::CLOSING;
                self.record(&flow, "shutdown", now);
            }
            kit.map.remove(&flow.key);
            self.release_place(&flow);
        }
        state.out.flush(&kit.raw);
    }
}

/// A duration in ms, as the holder's u32 clock counts (capped far below wrapping).
fn millis(duration: Duration) -> u32 {
    duration.as_millis().min(u128::from(u32::MAX / 4)) as u32
}
