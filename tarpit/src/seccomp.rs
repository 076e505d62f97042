//! The running server's system-call allow-list (seccomp), installed once start-up is done.
//!
//! The tarpit parses hostile bytes all day. If a bug ever let a client run code in it, the
//! process should be able to do what the tarpit does and nothing else: no `execve`, no new
//! processes or namespaces, no raw or packet sockets beyond those opened at start, no eBPF
//! program loads, no `ptrace`, no mounts, no signals to other processes. [`install`] runs right
//! after the capabilities are dropped (`server::run`), when the hook is attached, the ports are
//! bound and the raw sockets are open, and before any other thread exists, so every thread
//! the server starts afterwards inherits the filter (it is installed with `TSYNC` anyway).
//!
//! What is allowed was read from what the server does in each mode (`strace -f` of the running
//! server and the end-to-end suite with the filter on, which fails on any refused call the code
//! needs): memory, files, threads, timers, sockets and io_uring. Where an argument decides
//! what a call may do, the argument is checked too:
//! - `socket`: IPv4, IPv6 and Unix (name resolution via NSS) stream and datagram sockets only;
//! - `setsockopt`: the options the code and its HTTP client set (`SO_REUSEADDR`, keep-alive,
//!   `TCP_NODELAY`, `TCP_USER_TIMEOUT`), plus `TCP_REPAIR`/`TCP_REPAIR_QUEUE` under socketless
//!   hold only (`getsockopt` reads and stays open);
//! - `ioctl`: `FIONBIO`, `FIOCLEX`/`FIONCLEX`, `FIONREAD`, `TCGETS` (is it a terminal),
//!   `SIOCOUTQ` under socketless hold only, and the interface list libmodsecurity reads at
//!   start (`SIOCGIFCONF`, `SIOCGIFFLAGS`, `SIOCGIFHWADDR`) when the CRS runs on it;
//! - `bpf`: map element commands only, and only when the eBPF hook or sk_lookup steering is in
//!   use (no program or map is created after start);
//! - `clone`: threads only (`CLONE_THREAD`, no namespace flags); `clone3`, whose flags live in
//!   memory a filter cannot read, answers `ENOSYS`, and the C library falls back to `clone`;
//! - `kill`/`tgkill`: this process only; `prlimit64`: reading only; `prctl`: thread names only;
//!   `getpriority`/`setpriority`: the calling thread only (the workers' `[server] worker_nice`);
//!   `fcntl`: descriptor flags, status flags, locks and `F_DUPFD*`.
//!
//! A refused call fails with `EPERM` (and the kernel logs it, audit type 1326), so an
//! unforeseen path is an error the server reports, not a crash that loses the queued rows;
//! `[server] seccomp = "log"` lets every call through and only logs what would be refused,
//! for an operator trying a new set-up. The filters are built with `seccompiler` (rust-vmm's
//! compiler of seccomp-BPF from rules: no hand-written BPF, no LGPL libseccomp).
//!
//! Known limit: io_uring operations are not system calls, so they are not filtered. The
//! workers' rings exist for their sockets; tokio-uring offers no way to register io_uring's own
//! restrictions on them.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

/// `[server] seccomp`: whether the allow-list refuses, only logs, or is not installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Calls outside the allow-list fail with EPERM (and are logged by the kernel).
    #[default]
    On,
    /// Every call goes through; the kernel logs those the allow-list would refuse.
    Log,
    /// No filter.
    Off,
}

/// What the running server needs beyond the common set, decided by its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The eBPF hook or the sk_lookup program is attached: map lookups, updates and deletes by
    /// `bpf()`.
    pub ebpf_maps: bool,
    /// Socketless hold: `TCP_REPAIR`, `TCP_REPAIR_QUEUE` and `SIOCOUTQ` on every hand-over.
    pub tcp_repair: bool,
    /// The CRS on libmodsecurity, which reads the interfaces' hardware addresses for its
    /// transaction ids when it starts (`SIOCGIFCONF`, `SIOCGIFFLAGS`, `SIOCGIFHWADDR`:
    /// read-only).
    pub interface_list: bool,
}

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub struct SeccompError(String);

/// Calls allowed whatever their arguments.
const ALWAYS: &[libc::c_long] = &[
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Files (SQLite, the JSON log, GeoIP reloads, the rule file, /proc).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_flock,
    libc::SYS_fchown,
    libc::SYS_fchmod,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    // Waiting and waking.
    libc::SYS_futex,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_restart_syscall,
    // Threads and signals (handlers are installed before the filter).
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    // Facts about the process and the machine.
    libc::SYS_getrandom,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_capget,
    // Sockets already open, and the clients' (metrics, ClickHouse, AbuseIPDB, DNS).
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // The workers' rings (see the module doc).
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// `setsockopt` (level, option) pairs every mode may set: a listener's `SO_REUSEADDR` (the
/// metrics endpoint), the HTTP client's keep-alive, `TCP_NODELAY` and user timeout, and the
/// ICMP error reporting the C library's resolver turns on for each DNS socket (reverse DNS of
/// research scanners: without it, glibc closes the socket and the lookup fails).
const SOCKET_OPTIONS: &[(libc::c_int, libc::c_int)] = &[
    (libc::SOL_IP, libc::IP_RECVERR),
    (libc::SOL_IPV6, libc::IPV6_RECVERR),
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
];

/// `setsockopt` pairs of socketless hold (`server/socketless/repair.rs`).
const REPAIR_OPTIONS: &[(libc::c_int, libc::c_int)] = &[
    (libc::IPPROTO_TCP, libc::TCP_REPAIR),
    (libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE),
];

/// `ioctl` requests every mode may make.
const IOCTLS: &[libc::c_ulong] = &[
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONCLEX,
    libc::FIONREAD,
    libc::TCGETS,
];

/// `SIOCOUTQ` (= `TIOCOUTQ`): bytes a socket has not had acknowledged, before a hand-over.
const SIOCOUTQ: libc::c_ulong = libc::TIOCOUTQ;

/// `fcntl` commands: descriptor and status flags, record locks (SQLite), duplication.
const FCNTL_COMMANDS: &[libc::c_int] = &[
    libc::F_DUPFD,
    libc::F_DUPFD_CLOEXEC,
    libc::F_GETFD,
    libc::F_SETFD,
    libc::F_GETFL,
    libc::F_SETFL,
    libc::F_GETLK,
    libc::F_SETLK,
    libc::F_SETLKW,
    libc::F_OFD_GETLK,
    libc::F_OFD_SETLK,
    libc::F_OFD_SETLKW,
];

/// `bpf` commands on maps that already exist (`ebpf/mod.rs`, `ebpf/held.rs`).
const BPF_MAP_COMMANDS: &[u32] = &[
    1,  // BPF_MAP_LOOKUP_ELEM
    2,  // BPF_MAP_UPDATE_ELEM
    3,  // BPF_MAP_DELETE_ELEM
    4,  // BPF_MAP_GET_NEXT_KEY
    15, // BPF_OBJ_GET_INFO_BY_FD
    21, // BPF_MAP_LOOKUP_AND_DELETE_ELEM
];

/// `clone` flags that would make something other than a thread of this process.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Installs the allow-list on every thread of the process (`TSYNC`). `Off` installs nothing.
pub fn install(mode: SeccompMode, needs: Needs) -> Result<(), SeccompError> {
    install_with(mode, needs, libc::SECCOMP_FILTER_FLAG_TSYNC)
}

/// Installs the allow-list on the calling thread only: the tests' way to try it without
/// confining the test harness.
pub fn install_on_this_thread(mode: SeccompMode, needs: Needs) -> Result<(), SeccompError> {
    install_with(mode, needs, 0)
}

fn install_with(mode: SeccompMode, needs: Needs, flags: libc::c_ulong) -> Result<(), SeccompError> {
    let Some(programs) = compile(mode, needs, std::process::id())? else {
        return Ok(());
    };
    // The clone3 filter first (the allow-list refuses `seccomp` itself once it is in), not
    // logged: every new thread tries clone3 first.
    apply(&programs.clone3_fallback, flags)?;
    apply(&programs.allow_list, flags | libc::SECCOMP_FILTER_FLAG_LOG)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` with `flags`, after `PR_SET_NO_NEW_PRIVS` (which a
/// filter needs without CAP_SYS_ADMIN). seccompiler's own `apply_filter` cannot pass
/// `SECCOMP_FILTER_FLAG_LOG`, without which the kernel does not log the calls refused with an
/// errno; the program itself is seccompiler's.
fn apply(program: &BpfProgram, flags: libc::c_ulong) -> Result<(), SeccompError> {
    let err = |call: &str| SeccompError(format!("{call}: {}", std::io::Error::last_os_error()));
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| SeccompError(format!("{} instructions", program.len())))?,
        // seccompiler's `sock_filter` has the kernel's layout (code, jt, jf, k).
        filter: program.as_ptr().cast_mut().cast(),
    };
    // SAFETY: the kernel copies the program from `fprog`, which outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    match ret {
        0 => Ok(()),
        // TSYNC's answer when another thread cannot take the filter: that thread's id.
        tid if tid > 0 => Err(SeccompError(format!("thread {tid} cannot take the filter"))),
        _ => Err(err("seccomp(SECCOMP_SET_MODE_FILTER)")),
    }
}

/// The two seccomp-BPF programs the server installs, in that order.
#[derive(Debug)]
pub struct Programs {
    /// `clone3` answered `ENOSYS`, every other call passed on.
    pub clone3_fallback: BpfProgram,
    /// The allow-list.
    pub allow_list: BpfProgram,
}

/// The programs of `mode` (`None` for `Off`) for process `pid` (signals are allowed to it
/// only). Public so the end-to-end test can compare them with what the running server holds.
pub fn compile(
    mode: SeccompMode,
    needs: Needs,
    pid: u32,
) -> Result<Option<Programs>, SeccompError> {
    let refused = match mode {
        SeccompMode::On => SeccompAction::Errno(libc::EPERM as u32),
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Off => return Ok(None),
    };
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| SeccompError(format!("{}: {e}", std::env::consts::ARCH)))?;
    let fallback = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    );
    let allow_list = SeccompFilter::new(rules(needs, pid)?, refused, SeccompAction::Allow, arch);
    let to_program = |filter: Result<SeccompFilter, seccompiler::BackendError>| {
        filter
            .and_then(BpfProgram::try_from)
            .map_err(|e| SeccompError(e.to_string()))
    };
    Ok(Some(Programs {
        clone3_fallback: to_program(fallback)?,
        allow_list: to_program(allow_list)?,
    }))
}

/// The allow-list's rules: every call of [`ALWAYS`], and the calls whose arguments are checked.
fn rules(needs: Needs, pid: u32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALWAYS.iter().map(|&call| (call, Vec::new())).collect();
    let mut add = |call: libc::c_long, conditions: Vec<SeccompCondition>| {
        let rule = SeccompRule::new(conditions).map_err(|e| SeccompError(e.to_string()))?;
        rules.entry(call).or_default().push(rule);
        Ok::<(), SeccompError>(())
    };
    for domain in [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX] {
        for kind in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            // The type's low bits; SOCK_NONBLOCK and SOCK_CLOEXEC may be or-ed in.
            add(
                libc::SYS_socket,
                vec![eq(0, domain as u64)?, masked(1, 0xf, kind as u64)?],
            )?;
        }
    }
    add(libc::SYS_socketpair, vec![eq(0, libc::AF_UNIX as u64)?])?;
    let repair = if needs.tcp_repair {
        REPAIR_OPTIONS
    } else {
        &[]
    };
    for &(level, option) in SOCKET_OPTIONS.iter().chain(repair) {
        add(
            libc::SYS_setsockopt,
            vec![eq(1, level as u64)?, eq(2, option as u64)?],
        )?;
    }
    let outq: &[libc::c_ulong] = if needs.tcp_repair { &[SIOCOUTQ] } else { &[] };
    let interfaces: &[libc::c_ulong] = if needs.interface_list {
        &[libc::SIOCGIFCONF, libc::SIOCGIFFLAGS, libc::SIOCGIFHWADDR]
    } else {
        &[]
    };
    for &request in IOCTLS.iter().chain(outq).chain(interfaces) {
        add(libc::SYS_ioctl, vec![eq(1, request)?])?;
    }
    for &command in FCNTL_COMMANDS {
        add(libc::SYS_fcntl, vec![eq(1, command as u64)?])?;
    }
    if needs.ebpf_maps {
        for &command in BPF_MAP_COMMANDS {
            add(libc::SYS_bpf, vec![eq(0, u64::from(command))?])?;
        }
    }
    // Threads: CLONE_THREAD set, no namespace flag.
    add(
        libc::SYS_clone,
        vec![
            qmasked(0, libc::CLONE_THREAD as u64, libc::CLONE_THREAD as u64)?,
            qmasked(0, NAMESPACE_FLAGS, 0)?,
        ],
    )?;
    // Signals to this process's own threads only (abort, a runtime waking a thread).
    add(libc::SYS_kill, vec![eq(0, u64::from(pid))?])?;
    add(libc::SYS_tgkill, vec![eq(0, u64::from(pid))?])?;
    // A worker reading and lowering its own thread's priority (`[server] worker_nice`);
    // another thread's or process's is refused (raising one needs CAP_SYS_NICE, dropped
    // before this).
    for call in [libc::SYS_getpriority, libc::SYS_setpriority] {
        add(call, vec![eq(0, libc::PRIO_PROCESS as u64)?, eq(1, 0)?])?;
    }
    // Reading a limit (the EMFILE back-off); setting one is refused.
    add(libc::SYS_prlimit64, vec![qeq(2, 0)?])?;
    for option in [libc::PR_SET_NAME, libc::PR_GET_NAME] {
        add(libc::SYS_prctl, vec![eq(0, option as u64)?])?;
    }
    Ok(rules)
}

/// Argument `index` (32 bits) equals `value`.
fn eq(index: u8, value: u64) -> Result<SeccompCondition, SeccompError> {
    condition(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// Argument `index` (64 bits) equals `value`.
fn qeq(index: u8, value: u64) -> Result<SeccompCondition, SeccompError> {
    condition(index, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
}

/// Argument `index` (32 bits), masked with `mask`, equals `value`.
fn masked(index: u8, mask: u64, value: u64) -> Result<SeccompCondition, SeccompError> {
    condition(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
}

/// Argument `index` (64 bits), masked with `mask`, equals `value`.
fn qmasked(index: u8, mask: u64, value: u64) -> Result<SeccompCondition, SeccompError> {
    condition(
        index,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
}

fn condition(
    index: u8,
    length: SeccompCmpArgLen,
    operator: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(index, length, operator, value).map_err(|e| SeccompError(e.to_string()))
}

#[cfg(test)]
mod tests;
