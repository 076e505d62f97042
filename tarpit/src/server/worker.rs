//! A worker: one thread, one io_uring runtime, one SO_REUSEPORT listener, and the accept loops
//! ([`ACCEPTS_IN_FLIGHT`] of them) that spawn a task per connection.
//!
//! tokio-uring's types stay inside this module and [`super::connection`], so that moving to
//! another io_uring runtime would touch only those two.

use std::cell::Cell;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_uring::net::{TcpListener, TcpStream};

use super::connection::{Connection, ConnectionDripper};
use super::drip::{Dripper, LiveTask};
use super::{Shared, listener};
use crate::event::{ConnectionClosed, ConnectionOpened, Event};

/// Submission queue size of each worker's ring.
const RING_ENTRIES: u32 = 4096;
/// How long a worker waits for its connections to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Accepts each worker keeps in flight in its ring. With one, a worker takes one connection
/// per turn of its event loop (the accept completes, its task runs and submits the next one,
/// the loop waits again), and a burst waits in the backlog for as many turns; with several, one
/// turn takes every connection that queued up, and their reads and writes share the turns that
/// follow. Connections still queue in the kernel's backlog, not here: an idle accept holds no
/// socket.
pub(super) const ACCEPTS_IN_FLIGHT: usize = 8;
/// Pause after accept fails for lack of file descriptors or memory, instead of spinning.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// Starts worker `index` on its own thread, at `nice` below the recording threads (see
/// [`yield_to_recording`]); it returns when shutdown is complete.
pub(super) fn spawn(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    nice: u8,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("uring-{index}"))
        .spawn(move || {
            yield_to_recording(nice);
            tokio_uring::builder()
                .entries(RING_ENTRIES)
                .start(accept_loop(index, listener, shared));
        })
}

/// Lowers this worker thread's scheduling priority by `nice` below the process's (Linux: each
/// thread has its own nice value, and raising it needs no privilege). Why: on a saturated CPU
/// the scheduler shares it evenly among runnable threads, and two busy workers beside a load
/// took the share the SQLite writer needed: its queue overflowed and rows were lost in a third
/// of 20 s adaptive churns (docs/benchmarks.md, eighth pass). Yielding, the workers accept a
/// little less and every accepted connection is recorded; with CPU to spare, nothing changes.
fn yield_to_recording(nice: u8) {
    if nice == 0 {
        return;
    }
    // nice() adds to the calling thread's nice value (Linux), clamped at 19; its answer, the
    // new value, may be -1, so errno tells an error.
    nix::errno::Errno::clear();
    // SAFETY: nice() reads and writes no memory of ours.
    let outcome = match unsafe { libc::nice(libc::c_int::from(nice)) } {
        -1 if nix::errno::Errno::last_raw() != 0 => Err(nix::errno::Errno::last()),
        _ => Ok(()),
    };
    if let Err(error) = outcome {
        tracing::warn!(nice, "cannot lower the worker's priority: {error}");
    }
}

async fn accept_loop(index: usize, listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listen_addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    // Known once for the worker when the listener is bound to one address (no getsockname).
    let fixed_local = listener::fixed_local_addr(listen_addr, shared.steered_ports.is_some());
    let listener = TcpListener::from_std(listener);
    let live = Rc::new(Cell::new(0usize));
    let holder = super::socketless::Holder::new(&shared, index);
    if let Some(holder) = &holder {
        let task = LiveTask::new(&live);
        let holder = holder.clone();
        tokio_uring::spawn(async move {
            holder.run().await;
            drop(task);
        });
    }
    let dripper = Dripper::new(live.clone(), shared.cancel.clone(), holder.clone());
    let drip_task = LiveTask::new(&live);
    tokio_uring::spawn({
        let dripper = dripper.clone();
        async move {
            dripper.run().await;
            drop(drip_task);
        }
    });
    let listener = Rc::new(listener);
    for _ in 0..ACCEPTS_IN_FLIGHT {
        let task = LiveTask::new(&live);
        let accepts = Accepts {
            worker: index,
            listener: listener.clone(),
            listen_addr,
            fixed_local,
            shared: shared.clone(),
            dripper: dripper.clone(),
        };
        tokio_uring::spawn(async move {
            accepts.run().await;
            drop(task);
        });
    }
    shared.cancel.cancelled().await;
    // The accepts still in the ring would take connections no task is left to record: a
    // listener shut for reading ends them (EINVAL), and its backlog is reset.
    let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Read);
    let grace_end = Instant::now() + SHUTDOWN_GRACE;
    while live.get() > 0 && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if live.get() > 0 {
        tracing::warn!(
            worker = index,
            open = live.get(),
            dripping = dripper.held(),
            socketless = holder.as_ref().map_or(0, |h| h.held()),
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

/// One of a worker's accept loops (see [`ACCEPTS_IN_FLIGHT`]).
struct Accepts {
    worker: usize,
    listener: Rc<TcpListener>,
    listen_addr: SocketAddr,
    /// The listener's address when every socket it accepts has it (no `getsockname`).
    fixed_local: Option<SocketAddr>,
    shared: Arc<Shared>,
    dripper: Rc<ConnectionDripper>,
}

impl Accepts {
    /// Accepts and admits connections until shutdown begins.
    async fn run(self) {
        let shared = &self.shared;
        let cancel = shared.cancel.clone();
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        loop {
            let (backlog, stats) = &shared.recording;
            super::throttle::wait_for_recording(backlog, stats).await;
            let accepted = tokio::select! {
                biased;
                _ = &mut cancelled => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let local = self
                        .fixed_local
                        .or_else(|| listener::local_addr(&stream).ok())
                        .unwrap_or(self.listen_addr);
                    admit(self.worker, stream, peer, local, shared, &self.dripper);
                }
                Err(error) => {
                    let out_of_resources = matches!(
                        error.raw_os_error(),
                        Some(
                            libc_errno::EMFILE
                                | libc_errno::ENFILE
                                | libc_errno::ENOBUFS
                                | libc_errno::ENOMEM
                        )
                    );
                    if error.raw_os_error() == Some(libc_errno::ECONNABORTED) {
                        continue; // the client gave up while queued: nothing to record
                    }
                    if let Some(suppressed) = shared.accept_warning.check() {
                        tracing::warn!(
                            worker = self.worker,
                            suppressed,
                            "accept failed: {error}; backing off"
                        );
                    }
                    let pause = if out_of_resources {
                        RESOURCE_BACKOFF
                    } else {
                        Duration::from_millis(10)
                    };
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Records the new connection and either spawns its task or, over a limit, closes it at once.
fn admit(
    worker: usize,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Arc<Shared>,
    dripper: &Rc<ConnectionDripper>,
) {
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let opened_at = SystemTime::now();
    shared
        .events
        .send(Event::ConnectionOpened(ConnectionOpened {
            conn_id,
            timestamp: opened_at,
            peer_ip: peer.ip().to_canonical(),
            peer_port: peer.port(),
            local_ip: local.ip().to_canonical(),
            local_port: local.port(),
            worker,
        }));
    // A trusted proxy's connections carry many clients: each is counted when a request names it.
    let proxied = crate::http::client_addr::is_trusted(peer.ip(), &shared.settings.trusted_proxies);
    match shared.limits.try_admit((!proxied).then_some(peer.ip())) {
        Ok(permit) => {
            let conn = Connection::accept(stream, peer, local, conn_id, shared.clone(), permit);
            dripper.spawn_connection(conn);
        }
        Err(refusal) => {
            let _ = stream.shutdown(Shutdown::Both);
            shared
                .events
                .send(Event::ConnectionClosed(ConnectionClosed {
                    conn_id,
                    closed_at: SystemTime::now(),
                    requests: 0,
                    bytes_sent: 0,
                    duration_s: 0.0,
                    end_reason: refusal.as_str(),
                }));
        }
    }
}

/// The errno values accept can report that the loop treats specially.
mod libc_errno {
    use nix::errno::Errno;
    pub const EMFILE: i32 = Errno::EMFILE as i32;
    pub const ENFILE: i32 = Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = Errno::ENOMEM as i32;
    pub const ECONNABORTED: i32 = Errno::ECONNABORTED as i32;
}
