//! The running server's system-call allow-list (`seccomp.rs`): every thread holds it, it is
//! exactly the program the unit tests try (read back from the live process with
//! `PTRACE_SECCOMP_GET_FILTER`), and `--seccomp off` installs none. What it refuses is tried
//! call by call in `seccomp/tests.rs`; every other end-to-end test runs the server with it on
//! (the default), so a call the server needs and the list lacks fails that test.

mod common;

use std::io::Write;

use common::{FAST, Tarpit};
use tarpit::seccomp::{Needs, SeccompMode};

/// `Seccomp:` and `Seccomp_filters:` of every thread of `pid`.
fn thread_filters(pid: u32) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            (field("Seccomp:"), field("Seccomp_filters:"))
        })
        .collect()
}

/// The `index`th filter of `pid`'s main thread, as (code, jt, jf, k).
fn installed_filter(pid: u32, index: u64) -> Vec<(u16, u8, u8, u32)> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    let pid = pid as libc::pid_t;
    // SAFETY: ptrace requests on our own child, with buffers of the size the kernel reports;
    // the child is stopped between SEIZE/INTERRUPT and DETACH.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0),
            0,
            "PTRACE_SEIZE"
        );
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
        let count = libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, 0);
        let error = std::io::Error::last_os_error();
        let mut program = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0
            };
            count.max(0) as usize
        ];
        let read = libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, program.as_mut_ptr());
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        assert!(count > 0, "PTRACE_SECCOMP_GET_FILTER: {error}");
        assert_eq!(read, count);
        program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
    }
}

fn as_tuples(program: &seccompiler::BpfProgram) -> Vec<(u16, u8, u8, u32)> {
    program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
}

#[test]
fn every_thread_of_the_server_holds_the_allow_list_the_unit_tests_try() {
    if !common::netns::prerequisites_met(&[]) {
        return;
    }
    let tarpit = Tarpit::start(FAST);
    assert!(
        tarpit.stderr().contains("system-call allow-list on"),
        "{}",
        tarpit.stderr()
    );
    // A request runs through every thread: worker, pipeline, sinks, the CRS stage.
    let mut stream = tarpit.connect();
    stream
        .write_all(b"GET /seccomp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = common::read_response(&mut stream);
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "{response:?}");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/seccomp' AND end_reason = 'complete'",
        1,
    );
    let threads = thread_filters(tarpit.pid());
    assert!(threads.len() > 3, "{threads:?}");
    for (mode, filters) in &threads {
        assert_eq!((mode.as_str(), filters.as_str()), ("2", "2"), "{threads:?}");
    }
    // The eBPF hook is on when it can start (root, the object built), so the map commands
    // are in the list exactly when the server says the hook is live.
    let needs = Needs {
        ebpf_maps: tarpit.stderr().contains("eBPF hook live"),
        tcp_repair: false,
        interface_list: false,
    };
    let expected = tarpit::seccomp::compile(SeccompMode::On, needs, tarpit.pid())
        .unwrap()
        .unwrap();
    // Both programs, in whichever order the kernel lists them.
    let mut installed = [
        installed_filter(tarpit.pid(), 0),
        installed_filter(tarpit.pid(), 1),
    ];
    installed.sort();
    let mut compiled = [
        as_tuples(&expected.allow_list),
        as_tuples(&expected.clone3_fallback),
    ];
    compiled.sort();
    assert!(
        installed == compiled,
        "the live filters differ from the compiled ones"
    );
    // Still serving after the inspection.
    tarpit.assert_still_answers();
}

#[test]
fn seccomp_off_installs_nothing() {
    let tarpit = Tarpit::start(&[FAST, &["--seccomp", "off"]].concat());
    assert!(
        tarpit.stderr().contains("no system-call allow-list"),
        "{}",
        tarpit.stderr()
    );
    for (mode, _) in thread_filters(tarpit.pid()) {
        assert_eq!(mode, "0");
    }
}
