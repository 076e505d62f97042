//! A BPF array created with `BPF_F_MMAPABLE`, mapped into the server's memory.
//!
//! Why: reading a map through `bpf()` is a system call per read (and a pass through the
//! seccomp filter). Where the server reads a value far more often than the hook changes it
//! (the insert count on every accept, a held flow's status on every tick), the hook writes
//! into an array the server maps once, and a read is a memory load.
//!
//! The hook changes these values from any CPU at any time, so every access from this side is
//! an atomic load or store of one field (the hook's writes are plain stores of aligned
//! integers, which are single-copy atomic on every architecture BPF runs on).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// One mapping of an array's values, page-aligned, unmapped on drop.
#[derive(Debug)]
pub(super) struct MappedArray {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only with atomic loads and stores (see the
// module doc); nothing in it is tied to a thread.
unsafe impl Send for MappedArray {}
// SAFETY: as above.
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps the first `bytes` (rounded up to whole pages) of the array behind `fd`, which must
    /// have been created with `BPF_F_MMAPABLE` and hold at least that many bytes of values.
    /// The mapping holds its own reference to the map.
    pub(super) fn map(fd: BorrowedFd<'_>, bytes: usize) -> std::io::Result<Self> {
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::other("no page size"))?;
        let len = bytes.max(1).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of the map's value area; nothing else is touched.
        // Read-write: atomic loads are only defined on writable memory, and the server fills
        // a held flow's slot before the hook may use it.
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
        let base = NonNull::new(address.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { base, len })
    }

    /// The address of the value bytes at `offset`, when `offset + size` is inside the mapping.
    /// The pointer is valid as long as `self`.
    pub(super) fn at(&self, offset: usize, size: usize) -> Option<NonNull<u8>> {
        let end = offset.checked_add(size)?;
        // SAFETY: `offset` is inside the mapping (checked), so the sum stays in bounds.
        (end <= self.len).then(|| unsafe { self.base.add(offset) })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing uses any more.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
