//! Loading and attaching a BPF_PROG_TYPE_NETFILTER program, which aya 0.14 does not support.
//!
//! This module exists only because of that gap. aya still does everything else: it parses the
//! object, creates the maps and applies the globals (see [`super::Attribution::start`]). Here
//! the program's instructions, already relocated against aya's maps by aya-obj, are loaded
//! with `BPF_PROG_LOAD` and attached with `BPF_LINK_CREATE` to NF_INET_LOCAL_IN at priority
//! 101, once per address family. Dropping a [`NetfilterLink`] closes its fd, which detaches the
//! hook; nothing is pinned, so a crashed tarpit leaves no hook behind.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use aya_obj::generated::bpf_insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_NETFILTER: u32 = 32;
const BPF_NETFILTER: u32 = 45;
/// `NF_INET_LOCAL_IN`: packets addressed to this host, after PREROUTING's NAT.
const NF_INET_LOCAL_IN: u32 = 1;
/// `NF_IP_PRI_NAT_SRC + 1`: just after the kernel's last NAT step on this hook.
pub const PRIORITY: i32 = 101;
/// The kernel allows one BPF program per hook and priority, so a second tarpit in the same
/// namespace takes the next free one; every priority up to this one still runs after NAT
/// (100) and long before conntrack confirmation.
pub const LAST_PRIORITY: i32 = 120;
/// `NFPROTO_IPV4`.
pub const NFPROTO_IPV4: u32 = 2;
/// `NFPROTO_IPV6`.
pub const NFPROTO_IPV6: u32 = 10;

/// `union bpf_attr` as used by BPF_PROG_LOAD, padded to a size the kernel accepts (it
/// requires every byte it does not know to be zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 7],
}

/// `union bpf_attr` as used by BPF_LINK_CREATE with the netfilter options.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    netfilter_flags: u32,
    _rest: [u64; 8],
}

/// Why the program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    /// BPF_PROG_LOAD failed; `log` is the verifier's explanation when it gave one.
    #[error(
        "BPF_PROG_LOAD of the netfilter program failed: {source}{}{log}",
        privilege_hint(source)
    )]
    Load {
        /// The errno.
        source: std::io::Error,
        /// The verifier log, prefixed with a newline, or empty.
        log: String,
    },
    /// BPF_LINK_CREATE failed (kernel without CONFIG_NETFILTER_BPF_LINK, no privilege, or
    /// every priority taken).
    #[error(
        "attaching the netfilter hook (family {family}) failed: {source}{}",
        privilege_hint(source)
    )]
    Attach {
        /// NFPROTO_IPV4 or NFPROTO_IPV6.
        family: u32,
        /// The errno.
        source: std::io::Error,
    },
}

/// Explains EPERM/EACCES, the usual failure, in terms of what to grant.
fn privilege_hint(error: &std::io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            " (needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)"
        }
        Some(libc::EBUSY) => " (every priority from 101 to 120 is taken)",
        _ => "",
    }
}

fn bpf(cmd: libc::c_long, attr: *mut libc::c_void, size: usize) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` points to a live, correctly sized bpf_attr for `cmd`.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads relocated instructions as a netfilter program; returns the program fd.
pub fn load(name: &str, instructions: &[bpf_insn]) -> Result<OwnedFd, NetfilterError> {
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 256 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_NETFILTER,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_NETFILTER,
        ..Default::default()
    };
    for (dst, src) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let size = std::mem::size_of::<ProgLoadAttr>();
    bpf(BPF_PROG_LOAD, (&mut attr as *mut ProgLoadAttr).cast(), size).map_err(|source| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&log[..end]);
        // The end of the verifier log says why; the start is the program listing.
        let tail: String = text
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|l| format!("\n  {l}"))
            .collect();
        NetfilterError::Load { source, log: tail }
    })
}

/// An attached hook; dropping it detaches the program.
#[derive(Debug)]
pub struct NetfilterLink {
    _fd: OwnedFd,
    /// NFPROTO_IPV4 or NFPROTO_IPV6.
    pub family: u32,
    /// The hook priority it got.
    pub priority: i32,
}

/// Attaches the program at NF_INET_LOCAL_IN for one address family, at priority
/// [`PRIORITY`] or, when another program holds it, the next free one up to [`LAST_PRIORITY`].
pub fn attach(prog: &OwnedFd, family: u32) -> Result<NetfilterLink, NetfilterError> {
    use std::os::fd::AsRawFd;
    let mut priority = PRIORITY;
    loop {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_NETFILTER,
            pf: family,
            hooknum: NF_INET_LOCAL_IN,
            priority,
            ..Default::default()
        };
        let size = std::mem::size_of::<LinkCreateAttr>();
        match bpf(
            BPF_LINK_CREATE,
            (&mut attr as *mut LinkCreateAttr).cast(),
            size,
        ) {
            Ok(fd) => {
                return Ok(NetfilterLink {
                    _fd: fd,
                    family,
                    priority,
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && priority < LAST_PRIORITY => {
                priority += 1;
            }
            Err(source) => return Err(NetfilterError::Attach { family, source }),
        }
    }
}
