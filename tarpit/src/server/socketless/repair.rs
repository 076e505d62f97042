//! Freezing an accepted socket in TCP repair mode, so that closing it frees everything and
//! sends nothing (no FIN, no RST), after reading the sequence state a raw socket needs to go on
//! talking to the client.
//!
//! The kernel's repair interface (`TCP_REPAIR`, made for checkpoint/restore, needs
//! CAP_NET_ADMIN) is the only way to learn a live socket's sequence numbers and timestamp clock
//! and to close it silently; no crate wraps it, so the few `setsockopt`/`getsockopt` calls are
//! written here. Constants and layouts are the kernel's UAPI (`include/uapi/linux/tcp.h`).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

const SOL_TCP: libc::c_int = 6;
const TCP_REPAIR: libc::c_int = 19;
const TCP_REPAIR_QUEUE: libc::c_int = 20;
const TCP_QUEUE_SEQ: libc::c_int = 21;
const TCP_TIMESTAMP: libc::c_int = 24;
const TCP_REPAIR_WINDOW: libc::c_int = 29;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const TCP_REPAIR_ON: libc::c_int = 1;
const TCP_REPAIR_OFF: libc::c_int = 0;
/// `ioctl(SIOCOUTQ)`: bytes in the send queue not yet acknowledged.
const SIOCOUTQ: libc::c_ulong = 0x5411;
/// `tcp_info.tcpi_options` bits.
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPI_OPT_USEC_TS: u8 = 64;

/// A socket's TCP state at the moment it was frozen: what crafted segments must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    /// The next sequence number to send (everything before it is acknowledged).
    pub snd_nxt: u32,
    /// The next sequence number expected from the client (our acknowledgement number).
    pub rcv_nxt: u32,
    /// `TSval - CLOCK_MONOTONIC ms` (wrapping), when timestamps were negotiated.
    pub ts_offset: Option<u32>,
    /// The window field to advertise (already scaled down by our window scale).
    pub window: u16,
    /// The most payload bytes one segment may carry to this client.
    pub mss: u16,
}

/// Why a socket was not frozen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FreezeError {
    /// Sent bytes are not all acknowledged yet: try again on a later tick.
    #[error("{0} bytes not yet acknowledged")]
    Unacknowledged(u32),
    /// The connection uses microsecond timestamps, which crafted segments do not speak.
    #[error("microsecond TCP timestamps")]
    MicrosecondTimestamps,
    /// A socket call failed (EPERM: no CAP_NET_ADMIN).
    #[error("{call}: {errno}")]
    Call {
        /// The call that failed.
        call: &'static str,
        /// Its error.
        errno: Errno,
    },
}

/// Milliseconds of CLOCK_MONOTONIC, the kernel's TCP timestamp clock, wrapped to 32 bits.
pub fn monotonic_ms() -> u32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000) as u32
}

/// Puts the socket in repair mode and reads its state, if everything it sent has been
/// acknowledged. On error the socket is left as it was (repair mode off).
pub fn freeze(fd: BorrowedFd<'_>) -> Result<Frozen, FreezeError> {
    let unacked = outq(fd)?;
    if unacked > 0 {
        return Err(FreezeError::Unacknowledged(unacked));
    }
    let info = tcp_info(fd)?;
    if info.options & TCPI_OPT_USEC_TS != 0 {
        return Err(FreezeError::MicrosecondTimestamps);
    }
    set(fd, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR")?;
    read_frozen(fd, &info).inspect_err(|_| thaw(fd))
}

/// Takes a frozen socket out of repair mode (when the flow could not be held after all).
pub fn thaw(fd: BorrowedFd<'_>) {
    let _ = set(fd, TCP_REPAIR, TCP_REPAIR_OFF, "TCP_REPAIR");
}

fn read_frozen(fd: BorrowedFd<'_>, info: &Info) -> Result<Frozen, FreezeError> {
    set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    let snd_nxt = get::<u32>(fd, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ (send)")?;
    set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    let rcv_nxt = get::<u32>(fd, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ (receive)")?;
    let ts_offset = if info.options & TCPI_OPT_TIMESTAMPS != 0 {
        let tsval = get::<u32>(fd, TCP_TIMESTAMP, "TCP_TIMESTAMP")?;
        Some(tsval.wrapping_sub(monotonic_ms()))
    } else {
        None
    };
    // struct tcp_repair_window { snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup }
    let window = get::<[u32; 5]>(fd, TCP_REPAIR_WINDOW, "TCP_REPAIR_WINDOW")?;
    let rcv_wscale = if info.options & TCPI_OPT_WSCALE != 0 {
        info.rcv_wscale
    } else {
        0
    };
    Ok(Frozen {
        snd_nxt,
        rcv_nxt,
        ts_offset,
        window: (window[3] >> rcv_wscale).min(u32::from(u16::MAX)) as u16,
        mss: info.snd_mss.clamp(536, 1400) as u16,
    })
}

/// The few `tcp_info` fields used.
struct Info {
    options: u8,
    rcv_wscale: u8,
    snd_mss: u32,
}

fn tcp_info(fd: BorrowedFd<'_>) -> Result<Info, FreezeError> {
    // struct tcp_info: u8 state, ca_state, retransmits, probes, backoff, options,
    // snd_wscale:4 | rcv_wscale:4, (flags); u32 rto, ato, snd_mss, ...
    let raw = get::<[u8; 24]>(fd, libc::TCP_INFO, "TCP_INFO")?;
    Ok(Info {
        options: raw[5],
        rcv_wscale: raw[6] >> 4,
        snd_mss: u32::from_ne_bytes([raw[16], raw[17], raw[18], raw[19]]),
    })
}

fn outq(fd: BorrowedFd<'_>) -> Result<u32, FreezeError> {
    let mut pending: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer given.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCOUTQ, &mut pending) };
    if ret < 0 {
        return Err(FreezeError::Call {
            call: "SIOCOUTQ",
            errno: Errno::last(),
        });
    }
    Ok(pending.max(0) as u32)
}

fn set(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    value: libc::c_int,
    call: &'static str,
) -> Result<(), FreezeError> {
    // SAFETY: the option takes an int, passed by pointer with its size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(FreezeError::Call {
            call,
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// `getsockopt` of a plain-data value (`T` is an integer or an array of them).
fn get<T: Copy + Default>(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    call: &'static str,
) -> Result<T, FreezeError> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, a plain-data buffer.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_TCP,
            option,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(FreezeError::Call {
            call,
            errno: Errno::last(),
        });
    }
    Ok(value)
}
