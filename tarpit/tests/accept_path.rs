//! What each accepted connection costs a worker, checked on the running server: the accepts a
//! worker keeps in flight in its ring, and the system calls of a connection that resets
//! during its drip (the churn that scanners make).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Tarpit;

/// `IORING_OP_ACCEPT` in the kernel's `io_uring` opcodes (`include/uapi/linux/io_uring.h`).
const IORING_OP_ACCEPT: u32 = 13;

/// The accepts waiting in each of the process's io_uring instances: requests armed on a
/// socket's readiness, as the kernel lists them under `PollList:` in the ring's fdinfo.
fn armed_accepts(pid: u32) -> Vec<usize> {
    let mut rings = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        let fd = entry.file_name();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
            .unwrap();
        let polled = info
            .split_once("PollList:")
            .map_or("", |(_, list)| list)
            .lines()
            .filter(|line| {
                line.trim()
                    .strip_prefix("op=")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|op| op.parse::<u32>().ok())
                    == Some(IORING_OP_ACCEPT)
            })
            .count();
        rings.push(polled);
    }
    rings.sort_unstable();
    rings
}

/// Each worker keeps several accepts in flight, so one turn of its event loop takes every
/// connection that queued up (one accept at a time took one connection per turn). Checked
/// idle, before and after connections: every accept taken is replaced.
#[test]
fn each_worker_keeps_several_accepts_in_flight() {
    let tarpit = Tarpit::start(&["--workers", "2", "--response-delay", "0.05"]);
    let expected = vec![8, 8]; // `worker::ACCEPTS_IN_FLIGHT` per worker, one ring each
    let settled = common::wait_for(Duration::from_secs(10), || {
        let armed = armed_accepts(tarpit.pid());
        (armed == expected).then_some(armed)
    });
    assert_eq!(
        settled,
        Some(expected.clone()),
        "armed accepts per ring: {:?}",
        armed_accepts(tarpit.pid())
    );
    // A burst of connections, all answered and closed.
    let clients: Vec<_> = (0..20)
        .map(|n| {
            let mut stream = tarpit.connect();
            write!(stream, "GET /burst/{n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            stream
        })
        .collect();
    for mut stream in clients {
        let mut first = [0u8; 64];
        assert!(stream.read(&mut first).unwrap() > 0);
    }
    tarpit.wait_count("SELECT COUNT(*) FROM events", 20);
    let again = common::wait_for(Duration::from_secs(10), || {
        let armed = armed_accepts(tarpit.pid());
        (armed == expected).then_some(armed)
    });
    assert_eq!(
        again,
        Some(expected),
        "armed accepts per ring after the burst: {:?}",
        armed_accepts(tarpit.pid())
    );
}

/// A connection reset during its drip costs the dripper one `epoll_ctl` (its registration
/// for the reset): its close takes it out of the epoll set, so there is no delete. (Two
/// calls a connection before.) The reset is still told apart and recorded.
#[test]
fn a_connection_reset_during_its_drip_makes_one_epoll_call() {
    const N: usize = 20;
    let tarpit = Tarpit::start(&["--response-delay", "30"]);
    let (calls, ()) = common::syscalls::count_during(tarpit.pid(), &["epoll_ctl"], || {
        for n in 0..N {
            let mut stream = tarpit.connect();
            write!(stream, "GET /reset/{n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut first = [0u8; 256];
            let mut seen = Vec::new();
            // The head and the first tick: the connection is in the drip.
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.ends_with(b"\r\n\r\n") {
                let k = stream.read(&mut first).unwrap();
                assert!(k > 0, "the response started");
                seen.extend_from_slice(&first[..k]);
            }
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(stream); // RST
        }
        tarpit.wait_count(
            "SELECT COUNT(*) FROM events WHERE end_reason = 'client_reset'",
            N as i64,
        );
        tarpit.wait_count(
            "SELECT COUNT(*) FROM connections WHERE end_reason = 'client_reset'",
            N as i64,
        );
    });
    assert_eq!(
        calls,
        [N as u64],
        "epoll_ctl calls for {N} reset connections"
    );
}
