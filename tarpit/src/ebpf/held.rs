//! The userspace half of the `HELD` map: the flows the server holds without a socket
//! (`[tarpit] hold = "socketless"`, see `server::socketless`).
//!
//! A flow is added just before its socket is closed in repair mode (from then on the hook drops
//! the client's packets instead of letting the kernel reset them), read on each of its ticks
//! (what the client acknowledged, its timestamp, FIN and RST, as the hook noted them) and
//! removed when it ends. The map lives as long as the process's file descriptors: nothing is
//! pinned, so after `kill -9` the kernel frees it and the hook with it.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use std::net::SocketAddr;

use tarpit_ebpf::{HeldKey, HeldStatus};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
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

/// The `HELD` map; shared by every worker (each syscall is independent, no lock).
#[derive(Debug)]
pub struct HeldFlows {
    fd: OwnedFd,
    capacity: u32,
}

impl HeldFlows {
    pub(super) fn new(fd: OwnedFd, capacity: u32) -> Self {
        Self { fd, capacity }
    }

    /// The most flows the map takes (`[tarpit] socketless_max`).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Starts dropping the client's packets of this flow; `E2BIG` when the map is full,
    /// `EEXIST` when the flow is held already.
    pub fn add(&self, key: &HeldKey, status: &HeldStatus) -> Result<(), Errno> {
        let mut value = *status;
        super::map_elem(
            BPF_MAP_UPDATE_ELEM,
            self.fd.as_raw_fd(),
            (key as *const HeldKey).cast(),
            (&mut value as *mut HeldStatus).cast(),
            BPF_NOEXIST,
        )
    }

    /// What the client of this flow said so far, or `None` if the flow is not held.
    pub fn status(&self, key: &HeldKey) -> Option<HeldStatus> {
        let mut value = HeldStatus::default();
        super::map_elem(
            BPF_MAP_LOOKUP_ELEM,
            self.fd.as_raw_fd(),
            (key as *const HeldKey).cast(),
            (&mut value as *mut HeldStatus).cast(),
            0,
        )
        .ok()
        .map(|()| value)
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
