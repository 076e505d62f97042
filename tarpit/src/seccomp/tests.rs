//! Each test installs the filter on a thread of its own (`install_on_this_thread`), so the
//! test harness stays unconfined, and checks what a call returns with it in place: `EPERM`
//! from the filter for what the server never does, anything else (success, or the kernel's
//! own error for a deliberately useless argument) for what it does.

use super::*;

fn errno_of(ret: libc::c_long) -> Option<i32> {
    (ret < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> Option<i32> {
    // SAFETY: plain system call; a descriptor returned is closed at once.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
    errno_of(fd.into())
}

fn set_int(fd: libc::c_int, level: libc::c_int, option: libc::c_int) -> Option<i32> {
    let one: libc::c_int = 1;
    // SAFETY: an int option passed by pointer with its size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    errno_of(ret.into())
}

fn ioctl(fd: libc::c_int, request: libc::c_ulong) -> Option<i32> {
    let mut value: libc::c_int = 0;
    // SAFETY: every request tried here reads or writes one int.
    errno_of(unsafe { libc::ioctl(fd, request, &mut value) }.into())
}

/// `bpf(command)` with a zeroed attribute (useless: the kernel answers EBADF or EINVAL).
fn bpf(command: libc::c_long) -> Option<i32> {
    let attr = [0u8; 128];
    // SAFETY: the attribute is a readable buffer of the size given.
    errno_of(unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_ptr(), attr.len()) })
}

/// Runs `check` on a new thread with the filter of `mode` and `needs` installed on it.
fn confined(mode: SeccompMode, needs: Needs, check: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        install_on_this_thread(mode, needs).expect("the filter installs");
        check();
    })
    .join()
    .expect("the confined checks passed");
}

const PLAIN: Needs = Needs {
    ebpf_maps: false,
    tcp_repair: false,
    interface_list: false,
};

const SOCKETLESS: Needs = Needs {
    ebpf_maps: true,
    tcp_repair: true,
    interface_list: false,
};

const EPERM: Option<i32> = Some(libc::EPERM);

#[test]
fn what_the_server_never_does_is_refused() {
    confined(SeccompMode::On, PLAIN, || {
        // New processes, programs and namespaces.
        // A path that does not exist: the kernel would answer ENOENT, the filter EPERM (a
        // real program, let through, would replace the test binary and end it "successfully").
        let path = c"/nonexistent/tarpit-seccomp-check";
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: a valid path and argument vector.
        let ret = unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
        assert_eq!(errno_of(ret.into()), EPERM, "execve");
        // SAFETY: should the filter let fork through, the child leaves at once.
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(0) },
            -1 => assert_eq!(errno_of(-1), EPERM, "fork"),
            child => {
                unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
                panic!("fork was allowed");
            }
        }
        assert_eq!(
            errno_of(unsafe { libc::unshare(0) }.into()),
            EPERM,
            "unshare"
        );
        let dir = c"/tmp/tarpit-seccomp-check";
        assert_eq!(
            errno_of(unsafe { libc::mkdir(dir.as_ptr(), 0o700) }.into()),
            EPERM
        );
        // clone3's flags cannot be read by a filter: ENOSYS sends the C library to clone.
        let ret = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
        assert_eq!(errno_of(ret), Some(libc::ENOSYS), "clone3");
        // Raw, packet and netlink sockets.
        assert_eq!(
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
            EPERM
        );
        assert_eq!(
            socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW),
            EPERM
        );
        assert_eq!(socket(libc::AF_PACKET, libc::SOCK_RAW, 0), EPERM);
        assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_DGRAM, 0), EPERM);
        // eBPF, when the hook is not in use: maps and programs alike.
        assert_eq!(bpf(1), EPERM, "BPF_MAP_LOOKUP_ELEM");
        assert_eq!(bpf(5), EPERM, "BPF_PROG_LOAD");
        // Socket options and ioctls the code never uses.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        assert_eq!(set_int(fd, libc::SOL_IP, libc::IP_TRANSPARENT), EPERM);
        assert_eq!(set_int(fd, libc::SOL_SOCKET, libc::SO_DEBUG), EPERM);
        assert_eq!(set_int(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR), EPERM);
        assert_eq!(
            ioctl(fd, libc::TIOCOUTQ),
            EPERM,
            "SIOCOUTQ without socketless"
        );
        assert_eq!(ioctl(fd, libc::SIOCGIFINDEX), EPERM);
        assert_eq!(
            ioctl(fd, libc::SIOCGIFCONF),
            EPERM,
            "without libmodsecurity"
        );
        // Signals to other processes, limits raised, process attributes.
        assert_eq!(errno_of(unsafe { libc::kill(1, 0) }.into()), EPERM, "kill");
        let limit = libc::rlimit64 {
            rlim_cur: 64,
            rlim_max: 64,
        };
        let ret = unsafe { libc::prlimit64(0, libc::RLIMIT_CORE, &limit, std::ptr::null_mut()) };
        assert_eq!(errno_of(ret.into()), EPERM, "prlimit64 set");
        let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) };
        assert_eq!(errno_of(ret.into()), EPERM, "prctl");
        // Another process's or a process group's priority (a worker sets only its own).
        let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, 1, 0) };
        assert_eq!(
            errno_of(ret.into()),
            EPERM,
            "setpriority of another process"
        );
        let ret = unsafe { libc::setpriority(libc::PRIO_PGRP, 0, 5) };
        assert_eq!(
            errno_of(ret.into()),
            EPERM,
            "setpriority of the process group"
        );
        unsafe { libc::close(fd) };
    });
}

#[test]
fn what_the_server_does_goes_through() {
    // Made before the filter: the server creates its directories before it too.
    let dir = tempfile::tempdir().unwrap();
    confined(SeccompMode::On, PLAIN, move || {
        assert_eq!(
            socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
            None
        );
        assert_eq!(
            socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0),
            None
        );
        assert_eq!(socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), None);
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert_eq!(set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), None);
        assert_eq!(set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), None);
        assert_eq!(ioctl(fd, libc::FIONBIO), None);
        unsafe { libc::close(fd) };
        // The resolver's DNS socket (reverse DNS of research scanners).
        let udp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert_eq!(set_int(udp, libc::SOL_IP, libc::IP_RECVERR), None);
        unsafe { libc::close(udp) };
        // Threads (clone3 refused, clone with CLONE_THREAD allowed), files, own signals.
        let answer = std::thread::spawn(|| 6 * 7).join().unwrap();
        assert_eq!(answer, 42);
        std::fs::write(dir.path().join("file"), b"row").unwrap();
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"row");
        assert_eq!(
            errno_of(unsafe { libc::kill(libc::getpid(), 0) }.into()),
            None
        );
        let mut limit = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let ret = unsafe { libc::prlimit64(0, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) };
        assert_eq!(errno_of(ret.into()), None, "prlimit64 read");
        let ret = unsafe { libc::prctl(libc::PR_SET_NAME, c"confined".as_ptr()) };
        assert_eq!(errno_of(ret.into()), None, "prctl(PR_SET_NAME)");
        // The calling thread's own priority (`[server] worker_nice`), set to what it is.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        assert_eq!(
            errno_of(ret.into()),
            None,
            "setpriority of the calling thread"
        );
    });
}

#[test]
fn socketless_hold_and_the_hook_add_their_calls_and_no_more() {
    confined(SeccompMode::On, SOCKETLESS, || {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        // SIOCOUTQ on an unconnected socket: 0 bytes queued.
        assert_eq!(ioctl(fd, libc::TIOCOUTQ), None);
        unsafe { libc::close(fd) };
        // A map lookup reaches the kernel (which refuses the zeroed map descriptor).
        assert_ne!(bpf(1), EPERM, "BPF_MAP_LOOKUP_ELEM");
        assert_ne!(bpf(21), EPERM, "BPF_MAP_LOOKUP_AND_DELETE_ELEM");
        // Still no program loads, map creation or links.
        assert_eq!(bpf(5), EPERM, "BPF_PROG_LOAD");
        assert_eq!(bpf(0), EPERM, "BPF_MAP_CREATE");
        assert_eq!(bpf(28), EPERM, "BPF_LINK_CREATE");
        assert_eq!(
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
            EPERM
        );
    });
}

#[test]
fn log_mode_lets_calls_through_and_off_installs_nothing() {
    confined(SeccompMode::Log, PLAIN, || {
        assert_eq!(errno_of(unsafe { libc::unshare(0) }.into()), None);
    });
    confined(SeccompMode::Off, PLAIN, || {
        assert_eq!(errno_of(unsafe { libc::unshare(0) }.into()), None);
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.contains("Seccomp:\t0"), "{status}");
    });
}

#[test]
fn libmodsecurity_may_list_the_interfaces() {
    let needs = Needs {
        interface_list: true,
        ..PLAIN
    };
    confined(SeccompMode::On, needs, || {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        let mut buffer = [0u8; 40 * 32];
        let mut conf = libc::ifconf {
            ifc_len: buffer.len() as libc::c_int,
            ifc_ifcu: libc::__c_anonymous_ifc_ifcu {
                ifcu_buf: buffer.as_mut_ptr().cast(),
            },
        };
        // SAFETY: an ifconf pointing at a buffer of the length it states.
        let ret = unsafe { libc::ioctl(fd, libc::SIOCGIFCONF, &mut conf) };
        assert_eq!(errno_of(ret.into()), None, "SIOCGIFCONF");
        assert!(conf.ifc_len > 0, "at least loopback is listed");
        assert_eq!(ioctl(fd, libc::SIOCGIFINDEX), EPERM);
        unsafe { libc::close(fd) };
    });
}
