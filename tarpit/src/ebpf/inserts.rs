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

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::mapped::MappedArray;

/// The hook's insert count, mapped into memory (the array's one `u64` at offset 0).
#[derive(Debug)]
pub(super) struct InsertCount {
    array: MappedArray,
}

impl InsertCount {
    /// Maps the counter array behind `fd` (created with `BPF_F_MMAPABLE`).
    pub(super) fn map(fd: BorrowedFd<'_>) -> std::io::Result<Self> {
        let array = MappedArray::map(fd, size_of::<u64>())?;
        Ok(Self { array })
    }

    /// The entries the hook has inserted so far.
    pub(super) fn load(&self) -> u64 {
        let value = self
            .array
            .at(0, size_of::<u64>())
            .expect("the mapping holds one u64");
        // SAFETY: the mapping is live, page-aligned and writable for as long as `self`; the
        // hook only changes it with atomic adds.
        unsafe { AtomicU64::from_ptr(value.as_ptr().cast()) }.load(Ordering::Acquire)
    }
}
