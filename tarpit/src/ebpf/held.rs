//! The userspace half of the `HELD` map: the flows the server holds without a socket
//! (`[tarpit] hold = "socketless"`, see `server::socketless`).
//!
//! A flow is added just before its socket is closed in repair mode (from then on the hook drops
//! the client's packets instead of letting the kernel reset them), read on each of its ticks
//! (what the client acknowledged, its timestamp, FIN and RST, as the hook noted them) and
//! removed when it ends. The map lives as long as the process's file descriptors: nothing is
//! pinned, so after `kill -9` the kernel frees it and the hook with it.
//!
//! The status itself is not in `HELD` but in a slot of the `HELD_STATUS` array, which is mapped
//! into memory ([`super::mapped`]): `HELD` names the slot. A tick reads its flow's status with
//! a few loads instead of a `bpf()` lookup, which at 100,000 held flows was 66,000 system calls
//! a second and a third of the holder's CPU. Each worker gives out the slots of its own range
//! (see `server::socketless`), so no lock is shared.
//!
//! Against crafted traffic, nothing changes: the hook still finds a flow only by the exact
//! 4-tuple in `HELD` and applies the same sequence checks before it writes. A slot goes to a
//! new flow only after the old flow's entry is gone, with a new generation written first; the
//! hook writes into a slot only while it carries the generation its `HELD` entry names, so the
//! packets of an ended flow cannot move the next flow's status (short of a program that passed
//! the check in the instant before the slot was refilled, whose write must still pass the new
//! flow's sequence checks against its random initial sequence number, like a blind guess).
//! Splitting the slots among the workers gives a flood no new lever either: a client that fills
//! one worker's share only keeps its further connections on their sockets, as the global cap
//! did, and the per-client cap (`max_connections_per_ip`) still bounds what one client holds;
//! which worker takes a connection is the kernel's SO_REUSEPORT hash of the 4-tuple, keyed by a
//! secret of the boot, so a client cannot aim at one share.

use std::mem::offset_of;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use nix::errno::Errno;
use std::net::SocketAddr;

use tarpit_ebpf::{HELD_STATUS_STRIDE, HeldKey, HeldSlot, HeldStatus};

use super::mapped::MappedArray;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
/// `BPF_NOEXIST`: add only, never overwrite a flow that is already held.
const BPF_NOEXIST: u64 = 1;

/// The map's key for the flow between our `local` address and the client's `peer`.
pub fn held_key(local: SocketAddr, peer: SocketAddr) -> HeldKey {
    HeldKey {
        peer_addr: super::mapped(peer.ip()),
        local_fold: tarpit_ebpf::fold(super::mapped(local.ip())),
        peer_port: peer.port(),
        local_port: local.port(),
    }
}

/// The status slots worker `worker` fills, when each of the workers fills at most
/// `per_worker` of the `capacity` slots: its own range, so that no two workers share a slot
/// and none needs a lock. The last range may be shorter (or empty) when `capacity` does not
/// divide evenly.
pub fn worker_slots(capacity: u32, per_worker: usize, worker: usize) -> Range<u32> {
    let start = worker
        .checked_mul(per_worker)
        .and_then(|start| u32::try_from(start).ok())
        .map_or(capacity, |start| start.min(capacity));
    let end = u32::try_from(per_worker).map_or(capacity, |n| start.saturating_add(n).min(capacity));
    start..end
}

/// The `HELD` map and its `HELD_STATUS` slots; shared by every worker (each syscall is
/// independent, and a worker touches only the slots of its own flows: no lock).
#[derive(Debug)]
pub struct HeldFlows {
    fd: OwnedFd,
    capacity: u32,
    status: MappedArray,
}

impl HeldFlows {
    /// `fd` is the `HELD` map, `status` the `HELD_STATUS` array (both sized `capacity`).
    pub(super) fn new(fd: OwnedFd, status: BorrowedFd<'_>, capacity: u32) -> std::io::Result<Self> {
        let status = MappedArray::map(status, capacity as usize * HELD_STATUS_STRIDE)?;
        Ok(Self {
            fd,
            capacity,
            status,
        })
    }

    /// The most flows the map takes (`[tarpit] socketless_max`).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Starts dropping the client's packets of this flow, with `status` as what the hook
    /// believes of it, in `slot` (the flow's own; its generation new). `E2BIG` when the map is
    /// full or the slot is out of range, `EEXIST` when the flow is held already.
    pub fn add(&self, key: &HeldKey, slot: HeldSlot, status: &HeldStatus) -> Result<(), Errno> {
        let fields = self.fields(slot.index).ok_or(Errno::E2BIG)?;
        // The new generation first: from here on a program still holding the slot's previous
        // entry writes nothing into it.
        fields.generation.store(slot.generation, Ordering::Release);
        fields.store(status);
        let mut value = slot;
        // The system call orders the stores above before the entry the program finds.
        super::map_elem(
            BPF_MAP_UPDATE_ELEM,
            self.fd.as_raw_fd(),
            (key as *const HeldKey).cast(),
            (&mut value as *mut HeldSlot).cast(),
            BPF_NOEXIST,
        )
    }

    /// What the client of the flow in `slot` said so far (read from memory, no system call);
    /// `None` for a slot out of range.
    pub fn status(&self, slot: u32) -> Option<HeldStatus> {
        self.fields(slot).map(|fields| fields.load())
    }

    /// Stops dropping this flow's packets (the kernel resets any that come later).
    pub fn remove(&self, key: &HeldKey) {
        let _ = super::map_elem(
            BPF_MAP_DELETE_ELEM,
            self.fd.as_raw_fd(),
            (key as *const HeldKey).cast(),
            std::ptr::null_mut(),
            0,
        );
    }

    /// The fields of `slot`, as atomics over the mapped array.
    fn fields(&self, slot: u32) -> Option<StatusFields<'_>> {
        if slot >= self.capacity {
            return None; // the mapping is whole pages: past the array's end, not a slot
        }
        let base = self
            .status
            .at(slot as usize * HELD_STATUS_STRIDE, HELD_STATUS_STRIDE)?;
        let word = |offset: usize| {
            // SAFETY: inside the slot (checked by `at`), 4-aligned (the mapping is page-aligned,
            // the stride and every u32 field offset are multiples of 4), and live as long as
            // `self`; the hook and this side access it only with single-copy atomic accesses.
            unsafe { AtomicU32::from_ptr(base.as_ptr().add(offset).cast()) }
        };
        Some(StatusFields {
            ack: word(offset_of!(HeldStatus, ack)),
            tsval: word(offset_of!(HeldStatus, tsval)),
            fin_ms: word(offset_of!(HeldStatus, fin_ms)),
            rst_ms: word(offset_of!(HeldStatus, rst_ms)),
            rcv_nxt: word(offset_of!(HeldStatus, rcv_nxt)),
            ack_limit: word(offset_of!(HeldStatus, ack_limit)),
            // SAFETY: as above; a u16 field at an even offset.
            window: unsafe {
                AtomicU16::from_ptr(base.as_ptr().add(offset_of!(HeldStatus, window)).cast())
            },
            generation: word(offset_of!(HeldStatus, generation)),
        })
    }

    /// The kernel memory the map uses now (`memlock` in its fdinfo: for a map allocated as
    /// entries are added, the buckets plus the live entries).
    pub fn memlock_bytes(&self) -> Option<u64> {
        let path = format!("/proc/self/fdinfo/{}", self.fd.as_raw_fd());
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// One slot of the mapped `HELD_STATUS` array, field by field.
struct StatusFields<'a> {
    ack: &'a AtomicU32,
    tsval: &'a AtomicU32,
    fin_ms: &'a AtomicU32,
    rst_ms: &'a AtomicU32,
    rcv_nxt: &'a AtomicU32,
    ack_limit: &'a AtomicU32,
    window: &'a AtomicU16,
    generation: &'a AtomicU32,
}

impl StatusFields<'_> {
    fn load(&self) -> HeldStatus {
        HeldStatus {
            ack: self.ack.load(Ordering::Relaxed),
            tsval: self.tsval.load(Ordering::Relaxed),
            fin_ms: self.fin_ms.load(Ordering::Relaxed),
            rst_ms: self.rst_ms.load(Ordering::Relaxed),
            rcv_nxt: self.rcv_nxt.load(Ordering::Relaxed),
            ack_limit: self.ack_limit.load(Ordering::Relaxed),
            window: self.window.load(Ordering::Relaxed),
            _pad: 0,
            generation: self.generation.load(Ordering::Relaxed),
        }
    }

    /// Every field but the generation (written first, by [`HeldFlows::add`]).
    fn store(&self, status: &HeldStatus) {
        self.ack.store(status.ack, Ordering::Relaxed);
        self.tsval.store(status.tsval, Ordering::Relaxed);
        self.fin_ms.store(status.fin_ms, Ordering::Relaxed);
        self.rst_ms.store(status.rst_ms, Ordering::Relaxed);
        self.rcv_nxt.store(status.rcv_nxt, Ordering::Relaxed);
        self.ack_limit.store(status.ack_limit, Ordering::Relaxed);
        self.window.store(status.window, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::worker_slots;

    /// Every slot goes to exactly one worker, whatever the split's remainder.
    #[test]
    fn workers_fill_disjoint_ranges_that_cover_the_array() {
        assert_eq!(worker_slots(5, 3, 0), 0..3);
        assert_eq!(worker_slots(5, 3, 1), 3..5);
        assert!(worker_slots(5, 3, 2).is_empty());
        assert_eq!(worker_slots(131_072, 65_536, 1), 65_536..131_072);
        for (capacity, workers) in [(1u32, 2usize), (7, 3), (131_072, 2), (100, 7)] {
            let per_worker = (capacity as usize).div_ceil(workers);
            let mut next = 0;
            for worker in 0..workers {
                let range = worker_slots(capacity, per_worker, worker);
                assert_eq!(range.start, next.min(capacity), "{capacity} / {workers}");
                next = range.end;
            }
            assert_eq!(
                next, capacity,
                "{capacity} / {workers}: every slot given out"
            );
        }
        // Absurd sizes saturate instead of wrapping.
        assert!(worker_slots(10, usize::MAX, 3).is_empty());
    }
}
