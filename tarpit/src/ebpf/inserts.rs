//! How many original-destination entries the hook has inserted, read from memory.
//!
//! Why: without NAT (a plain listener, or sk_lookup steering) the hook inserts nothing, yet
//! every accept asked the map, one `bpf()` system call failing with ENOENT: a sixth of the
//! accept path's system calls. The hook counts its inserts in a one-element `BPF_F_MMAPABLE`
//! array, mapped here into the server's memory; [`super::EbpfMap`] counts the entries it took
//! out. While the two counts are equal the map holds nothing, and the lookup is skipped.
//!
//! Crafted traffic cannot make the server skip a lookup it needs. The hook counts an entry
//! right after inserting it, while it handles the client's SYN, and the connection can only be
//! accepted after its handshake completes, so the server that accepts it reads a count that
//! includes its entry. The server counts only the entries it really took out. Whatever else
//! removes an entry (LRU eviction under a SYN flood, an entry replaced for a reused 4-tuple)
//! leaves the counts unequal for good, and every lookup is made, as before this existed.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// The hook's insert count, mapped into memory (the array's one `u64` at offset 0).
#[derive(Debug)]
pub(super) struct InsertCount {
    value: NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is shared memory read with atomic loads only; nothing here is tied to a
// thread.
unsafe impl Send for InsertCount {}
// SAFETY: as above: every access is an atomic load.
unsafe impl Sync for InsertCount {}

impl InsertCount {
    /// Maps the counter array behind `fd` (created with `BPF_F_MMAPABLE`).
    pub(super) fn map(fd: BorrowedFd<'_>) -> std::io::Result<Self> {
        // SAFETY: sysconf has no memory effects.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::other("no page size"))?;
        // SAFETY: a fresh shared mapping of the map's value area; nothing else is touched.
        // Read-write because atomic loads are only defined on writable memory; nothing writes.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let value = NonNull::new(address.cast::<u64>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { value, len })
    }

    /// The entries the hook has inserted so far.
    pub(super) fn load(&self) -> u64 {
        // SAFETY: the mapping is live, page-aligned and writable for as long as `self`; the
        // hook only changes it with atomic adds.
        unsafe { AtomicU64::from_ptr(self.value.as_ptr()) }.load(Ordering::Acquire)
    }
}

impl Drop for InsertCount {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing uses any more.
        unsafe { libc::munmap(self.value.as_ptr().cast(), self.len) };
    }
}
