//! The per-worker drip: every connection whose response has started waits here, as a small
//! entry in a slab ordered by a min-heap of tick deadlines, instead of as a task with its own
//! timer.
//!
//! Why: holding tens of thousands of connections for 30 minutes each is the whole job. A task
//! per connection costs its whole future (about 2 KB) and a timer registration per tick; here a
//! held connection costs its connection state plus a few words, and one timer per worker
//! fires for all connections due within a millisecond of each other. Each tick is one
//! non-blocking `send` of a pre-built `&'static` slice: no allocation, no future, no lock.
//! When a response ends, a keep-alive connection gets a fresh task to read its next request
//! ([`Held::drive`]); any other is closed and recorded.
//!
//! A reset is noticed at once rather than at the next tick: held sockets are registered with a
//! per-worker epoll instance for EPOLLERR/EPOLLHUP (one-shot; a socket's close takes it out of
//! the set, see [`Watch`]). Without this, churning scanners that RST
//! would occupy a slot for a whole tick each. A half-close (EPOLLRDHUP, watched once) does not
//! end a response (a scanner that shuts its write side may still be reading, and stays
//! tarpitted): its time is recorded as `client_fin_s`, and an adaptive response writes its next
//! tick at once, so a client that really left answers with a reset within a round trip.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::settings::Settings;
use super::socketless::Holder;
use crate::http::response::{CHUNKED_END, Framing};

/// What the dripper needs of a connection it holds. Implemented by the connection module's
/// `Connection`; defined here, below it, so that the two modules do not import each other.
pub(super) trait Held: Sized + 'static {
    /// The socket, for non-blocking sends and epoll registration.
    fn fd(&self) -> BorrowedFd<'_>;
    /// The socket's pending error (SO_ERROR), to name a hang-up.
    fn socket_error(&self) -> Option<Errno>;
    /// When the connection must end, whatever it is doing.
    fn lifetime_end(&self) -> Instant;
    /// The drip's pre-built ticks and cadence.
    fn settings(&self) -> &Settings;
    /// What writes the client's canary tokens into a page's slices (canary tokens on).
    fn canary_issuer(&self) -> Option<crate::canary::Issuer<'_>> {
        None
    }
    /// Records the end of a response the dripper was writing (`Ok`: how it was completed).
    fn finish_response(&mut self, state: &DripState, outcome: Result<&'static str, &'static str>);
    /// Closes the connection and records how it ended.
    fn close(self: Box<Self>, end_reason: &'static str);
    /// Serves the connection up to its next response (or its end), on a task of its own.
    fn drive(self: Box<Self>, dripper: &Rc<Dripper<Self>>) -> impl Future<Output = ()>;
    /// Tries to move the response to the socketless holder (socket frozen, flow held by the
    /// hook); `true`: done, and dropping the connection closes its socket silently. Clears
    /// `state.socketless` when it can never succeed.
    fn hand_over(&mut self, _state: &mut DripState, _holder: &Holder) -> bool {
        false
    }
}

/// The end reason an I/O error stands for; `other` for errors that say nothing about the peer.
pub(super) fn io_end_reason(error: &std::io::Error, other: &'static str) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::ConnectionReset => "client_reset",
        // TCP_USER_TIMEOUT or keepalive gave up: the peer vanished without FIN or RST.
        std::io::ErrorKind::TimedOut => "peer_gone",
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::NotConnected => "client_closed",
        _ => other,
    }
}

/// Ticks due this close together are written in one wake-up.
const COALESCE: Duration = Duration::from_millis(5);

/// `DripState::page` of a response made of the drip's ticks (not a persona page).
pub(super) const DRIP_TICKS: u16 = u16::MAX;

/// `DripState::end_ms` of a response that is never completed early.
pub(super) const NO_PLANNED_END: u32 = u32::MAX;

/// `DripState::fin_ms` while no FIN has arrived.
pub(super) const NO_FIN: u32 = u32::MAX;

/// Where one response's drip stands.
#[derive(Debug, Clone, Copy)]
pub(super) struct DripState {
    /// The request this response answers.
    pub seq: u32,
    /// When the request was recorded (for `duration_s`).
    pub started: Instant,
    /// Chunked (HTTP/1.1) or raw (HTTP/1.0).
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// The next tick to write (tick 0 went out with the head).
    pub tick: u64,
    /// Bytes of the current tick already written (a partial send is finished next time).
    pub offset: u16,
    /// Payload bytes sent so far.
    pub sent: u64,
    /// When the next tick is due.
    pub next: Instant,
    /// The persona page being dripped (adaptive mode, or `drip_body = "persona"`), or
    /// [`DRIP_TICKS`].
    pub page: u16,
    /// Milliseconds after `started` at which an adaptive response is completed at once, or
    /// [`NO_PLANNED_END`].
    pub end_ms: u32,
    /// Milliseconds after `started` at which the client's FIN arrived, or [`NO_FIN`].
    pub fin_ms: u32,
    /// An answer to HEAD: the page's head is dripped (a byte per tick), not its body.
    pub head_only: bool,
    /// The response runs to its end and may leave its socket (`[tarpit] hold = "socketless"`).
    pub socketless: bool,
}

impl DripState {
    /// When the response is to be completed early, if it is.
    fn planned_end(&self) -> Option<Instant> {
        (self.end_ms != NO_PLANNED_END)
            .then(|| self.started + Duration::from_millis(u64::from(self.end_ms)))
    }

    /// Whether this is an adaptive response (a persona page).
    pub(super) fn is_page(&self) -> bool {
        self.page != DRIP_TICKS
    }
}

/// Counts a worker's live tasks, so shutdown can wait for them.
pub(super) struct LiveTask(Rc<Cell<usize>>);

impl LiveTask {
    pub(super) fn new(live: &Rc<Cell<usize>>) -> Self {
        live.set(live.get() + 1);
        Self(live.clone())
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

struct Queue<C> {
    /// Held connections, each with its drip and its [`Watch`].
    entries: Slab<(Box<C>, DripState, Watch)>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The watch the next connection added gets.
    next_watch: Watch,
}

impl<C> Default for Queue<C> {
    fn default() -> Self {
        Self {
            entries: Slab::new(),
            deadlines: BinaryHeap::new(),
            next_watch: Watch(0),
        }
    }
}

impl<C> Queue<C> {
    /// Drops the deadlines of connections that have ended (a reset leaves its deadline in the
    /// heap, to be skipped when it comes due) once they outnumber the live ones: under churn,
    /// every reset connection's deadline would otherwise wait a whole tick delay in the heap,
    /// and every push and pop would pay for the thousands of them.
    fn drop_stale_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.entries.len() + STALE_DEADLINES_KEPT {
            return;
        }
        let entries = &self.entries;
        self.deadlines.retain(|Reverse((due, key))| {
            entries
                .get(*key)
                .is_some_and(|(_, state, _)| state.next == *due)
        });
    }
}

/// Stale deadlines left in the heap before [`Queue::drop_stale_deadlines`] sweeps them (on top
/// of twice the live ones): a sweep walks the whole heap, so it waits until it removes at
/// least this many.
const STALE_DEADLINES_KEPT: usize = 1024;

/// Which registration of a slab key an epoll event is about.
///
/// A closed socket leaves the epoll set by itself, so a connection the dripper closes is not
/// deleted from it (one system call less a connection). Its registration can outlive the
/// close when something else still holds the socket for a moment (an abandoned read in the
/// ring), and its key can hold another connection by then: each event carries the watch of
/// the connection it was registered for, and an event whose watch is not its key's current
/// one is dropped. Registrations are one-shot, so such an event comes at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watch(u32);

impl Watch {
    /// The epoll event's data for the connection at `key`.
    fn token(self, key: usize) -> u64 {
        (u64::from(self.0) << 32) | key as u64
    }

    /// The key and watch an event's data names.
    fn from_token(token: u64) -> (usize, Watch) {
        (
            (token & u64::from(u32::MAX)) as usize,
            Watch((token >> 32) as u32),
        )
    }
}

/// Reset or hang-up of a held socket.
const HANGUP: EpollFlags = EpollFlags::EPOLLERR.union(EpollFlags::EPOLLHUP);

/// One worker's drip scheduler, for the connections (`C`) it holds.
pub(super) struct Dripper<C> {
    queue: RefCell<Queue<C>>,
    /// Tells which held sockets were reset or hung up (see the module doc).
    hangups: Option<Epoll>,
    wake: Notify,
    live: Rc<Cell<usize>>,
    cancel: tokio_util::sync::CancellationToken,
    /// Where responses go when they leave their socket (socketless hold), if on.
    holder: Option<Rc<Holder>>,
}

impl<C: Held> Dripper<C> {
    pub(super) fn new(
        live: Rc<Cell<usize>>,
        cancel: tokio_util::sync::CancellationToken,
        holder: Option<Rc<Holder>>,
    ) -> Rc<Self> {
        let hangups = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .inspect_err(|e| {
                tracing::warn!("no epoll for reset detection ({e}); resets wait for a tick")
            })
            .ok();
        Rc::new(Self {
            queue: RefCell::new(Queue::default()),
            hangups,
            wake: Notify::new(),
            live,
            cancel,
            holder,
        })
    }

    /// Connections held by the drip right now.
    pub(super) fn held(&self) -> usize {
        self.queue.borrow().entries.len()
    }

    /// Starts a task that serves `conn` up to its next response (or its end).
    pub(super) fn spawn_connection(self: &Rc<Self>, conn: Box<C>) {
        let task = LiveTask::new(&self.live);
        let dripper = self.clone();
        tokio_uring::spawn(async move {
            conn.drive(&dripper).await;
            drop(task);
        });
    }

    /// Takes over a connection whose response head has been written.
    pub(super) fn add(&self, conn: Box<C>, state: DripState) {
        let mut queue = self.queue.borrow_mut();
        let earliest = queue
            .deadlines
            .peek()
            .is_none_or(|Reverse((due, _))| state.next < *due);
        let key = queue.entries.vacant_key();
        let watch = queue.next_watch;
        queue.next_watch = Watch(watch.0.wrapping_add(1));
        if let Some(epoll) = &self.hangups {
            // The client's FIN is watched too (once): when a client gives up is on record.
            let flags = HANGUP | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
            let _ = epoll.add(conn.fd(), EpollEvent::new(flags, watch.token(key)));
        }
        queue.entries.insert((conn, state, watch));
        queue.deadlines.push(Reverse((state.next, key)));
        drop(queue);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// The worker's drip loop; returns after shutdown has ended every held response.
    pub(super) async fn run(self: Rc<Self>) {
        let cancel = self.cancel.clone();
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        // The epoll fd, watched by the runtime's reactor (a duplicate: AsyncFd owns it).
        let watched = self
            .hangups
            .as_ref()
            .and_then(|epoll| epoll.0.try_clone().ok())
            // SAFETY: the duplicate is owned by the AsyncFd alone and closed with it.
            .and_then(|fd| {
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            });
        loop {
            let next = self.queue.borrow().deadlines.peek().map(|r| r.0.0);
            let idle = Instant::now() + Duration::from_secs(3600);
            let hangup = async {
                match &watched {
                    Some(fd) => fd.readable().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                ready = hangup => {
                    if let Some(mut guard) = ready {
                        self.end_hung_up();
                        guard.clear_ready();
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next.unwrap_or(idle)) => self.tick_due(),
            }
        }
        self.finish_all();
    }

    /// Ends the held connections whose sockets were reset or hung up.
    fn end_hung_up(self: &Rc<Self>) {
        let Some(epoll) = &self.hangups else { return };
        let mut events = [EpollEvent::empty(); 256];
        loop {
            let n = epoll.wait(&mut events, 0u16).unwrap_or(0);
            for event in &events[..n] {
                let (key, watch) = Watch::from_token(event.data());
                let current = self.queue.borrow().entries.get(key).map(|entry| entry.2);
                if current != Some(watch) {
                    continue; // a closed connection's late event (see `Watch`)
                }
                if !event.events().intersects(HANGUP) {
                    self.half_closed(epoll, key, watch);
                    continue;
                }
                let entry = self.queue.borrow_mut().entries.try_remove(key);
                if let Some((conn, mut state, _)) = entry {
                    // Its heap deadline stays behind and is skipped when it comes due.
                    let reason = match conn.socket_error() {
                        Some(Errno::ETIMEDOUT) => "peer_gone",
                        Some(Errno::ECONNRESET) => "client_reset",
                        _ => "client_closed",
                    };
                    // A FIN and the close after it can arrive in one wake (a loaded machine):
                    // the FIN is on record then too. (A bare reset also reads as a half-close,
                    // but its error says so: `client_reset`.)
                    if reason == "client_closed"
                        && event.events().contains(EpollFlags::EPOLLRDHUP)
                        && state.fin_ms == NO_FIN
                    {
                        state.fin_ms = millis_since(state.started);
                    }
                    self.finish(conn, state, Err(reason));
                }
            }
            if n < events.len() {
                self.queue.borrow_mut().drop_stale_deadlines();
                return;
            }
        }
    }

    /// A held client sent its FIN: note when (`client_fin_s`), and stop watching for it. The
    /// drip goes on (a client that only shut its write side may still be reading). An adaptive
    /// response writes its next tick at once: a client that closed answers it with a reset, so
    /// its give-up, which the model learns from, ends the response within a round trip.
    fn half_closed(self: &Rc<Self>, epoll: &Epoll, key: usize, watch: Watch) {
        let mut queue = self.queue.borrow_mut();
        let Some((conn, state, _)) = queue.entries.get_mut(key) else {
            return;
        };
        let mut event = EpollEvent::new(HANGUP | EpollFlags::EPOLLONESHOT, watch.token(key));
        let _ = epoll.modify(conn.fd(), &mut event);
        let now = Instant::now();
        if state.fin_ms == NO_FIN {
            state.fin_ms = millis_since(state.started);
        }
        if state.is_page() {
            state.next = now;
            queue.deadlines.push(Reverse((now, key)));
            drop(queue);
            self.tick_due();
        }
    }

    /// Writes every tick due now (or within [`COALESCE`]).
    fn tick_due(self: &Rc<Self>) {
        let now = Instant::now();
        loop {
            let mut queue = self.queue.borrow_mut();
            let (due, key) = match queue.deadlines.peek() {
                Some(Reverse((due, key))) if *due <= now + COALESCE => (*due, *key),
                _ => return,
            };
            queue.deadlines.pop();
            // A deadline whose entry has ended (a reset), or whose key now holds another
            // connection with its own deadline, is stale: skip it.
            let Some((conn, state, _)) =
                queue.entries.get_mut(key).filter(|(_, s, _)| s.next == due)
            else {
                continue;
            };
            // A response that runs to its end leaves its socket at its first tick whose
            // predecessors are all acknowledged; the holder sends this tick.
            if state.socketless
                && state.offset == 0
                && let Some(holder) = &self.holder
                && conn.hand_over(state, holder)
            {
                let (conn, _, _) = queue.entries.remove(key);
                drop(queue);
                // Closes the frozen socket (nothing is sent), and with it its epoll watch.
                drop(conn);
                continue;
            }
            match tick(conn.as_ref(), state, now) {
                Tick::Again => {
                    let settings = conn.settings();
                    let delay = match (&settings.adaptive, state.is_page()) {
                        (Some(adaptive), true) => adaptive.gap(settings.response_delay),
                        _ => settings.response_delay,
                    };
                    // Keep the cadence; after a stall, resume from now rather than burst.
                    let mut next = if state.next + delay <= now {
                        now + delay
                    } else {
                        state.next + delay
                    };
                    // Complete a planned answer on time, not at the tick after.
                    if let Some(end) = state.planned_end().filter(|end| *end > now) {
                        next = next.min(end);
                    }
                    state.next = next;
                    let due = state.next;
                    queue.deadlines.push(Reverse((due, key)));
                }
                Tick::Done(outcome) => {
                    let (conn, state, _) = queue.entries.remove(key);
                    drop(queue);
                    self.finish(conn, state, outcome);
                }
            }
        }
    }

    /// Records the end of a response, then reads the next request or closes.
    fn finish(
        self: &Rc<Self>,
        mut conn: Box<C>,
        state: DripState,
        outcome: Result<&'static str, &'static str>,
    ) {
        conn.finish_response(&state, outcome);
        match outcome {
            Ok(_) if state.keep_alive && !self.cancel.is_cancelled() => {
                // The socket stays open for the next request: out of the epoll set (a closed
                // one leaves it by itself, see `Watch`).
                if let Some(epoll) = &self.hangups {
                    let _ = epoll.delete(conn.fd());
                }
                self.spawn_connection(conn)
            }
            Ok(_) => conn.close("response_complete"),
            Err(reason) => conn.close(reason),
        }
    }

    /// Shutdown: end every held response properly (the terminating chunk, best effort) and
    /// record it.
    fn finish_all(self: &Rc<Self>) {
        let entries: Vec<_> = {
            let mut queue = self.queue.borrow_mut();
            queue.deadlines.clear();
            queue.entries.drain().collect()
        };
        for (conn, state, _) in entries {
            if state.framing == Framing::Chunked && !state.is_page() {
                let _ = send_now(conn.as_ref(), CHUNKED_END);
            }
            self.finish(conn, state, Err("shutdown"));
        }
    }
}

/// Milliseconds since `started`, as `DripState::fin_ms` holds them.
fn millis_since(started: Instant) -> u32 {
    let millis = Instant::now()
        .saturating_duration_since(started)
        .as_millis();
    millis.min(u128::from(NO_FIN - 1)) as u32
}

mod tick;
use tick::{Tick, send_now, tick};

#[cfg(test)]
mod tests;
