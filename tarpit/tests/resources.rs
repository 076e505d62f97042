//! Resource exhaustion never stops the tarpit: accept at the fd limit backs off and recovers,
//! and a full disk under the database drops (and counts) events until space returns.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::netns::prerequisites_met;
use common::{Tarpit, read_response, wait_for};

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[test]
fn accept_at_the_fd_limit_backs_off_and_recovers() {
    if !prerequisites_met(&["prlimit"]) {
        return;
    }
    // 128 descriptors in all; the cap is set above that so accept itself hits EMFILE.
    let tarpit = Tarpit::start_wrapped(
        &["prlimit", "--nofile=128:128", "--"],
        &[
            "--port",
            "0",
            "--max-connections",
            "1000",
            "--response-delay",
            "0.5",
            "--ebpf-mode",
            "off",
        ],
    );
    let held: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(tarpit.addr).ok())
        .collect();
    assert!(
        held.len() >= 150,
        "the kernel queues connections beyond the fd limit"
    );
    wait_for(Duration::from_secs(10), || {
        tarpit.stderr().contains("accept failed").then_some(())
    })
    .expect("a warning that accept failed");
    // Backing off, not spinning: far below one busy core while at the limit.
    let pid = tarpit.pid();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "{used} CPU seconds in 2 s at the fd limit: spinning"
    );
    // One warning a minute, not one per attempt.
    assert_eq!(
        tarpit.stderr().matches("accept failed").count(),
        1,
        "{}",
        tarpit.stderr()
    );
    // Freeing descriptors lets the queued and new connections through.
    drop(held);
    wait_for(Duration::from_secs(10), || {
        let mut s = TcpStream::connect(tarpit.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /after HTTP/1.1\r\n\r\n").ok()?;
        let mut first = [0u8; 12];
        s.read_exact(&mut first).ok()?;
        (&first == b"HTTP/1.1 200").then_some(())
    })
    .expect("the tarpit recovers once descriptors are free");
}

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tarpit-test"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Self(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_drops_and_counts_events_and_writing_resumes_when_space_returns() {
    if !prerequisites_met(&["mount"]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let store = Tmpfs::mount(&scratch.path().join("store"), "400k");
    let db = store.0.join("tarpit_events.db");
    let log = store.0.join("tarpit.log");
    let args = [
        "--response-delay",
        "0.01",
        "--max-response-bytes",
        "1",
        "--database",
        db.to_str().unwrap(),
        "--json-log",
        log.to_str().unwrap(),
    ];
    let mut tarpit = Tarpit::start(&args);
    // Big request heads fill the 400 KiB quickly.
    let filler = "x".repeat(8000);
    let send = |path: &str| {
        let mut s = tarpit.connect();
        write!(s, "GET {path} HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n").unwrap();
        read_response(&mut s)
    };
    for i in 0..200 {
        // The tarpit keeps answering while its disk is full.
        assert!(
            send(&format!("/fill/{i}")).ends_with(b"0\r\n\r\n"),
            "request {i}"
        );
    }
    wait_for(Duration::from_secs(10), || {
        tarpit
            .stderr()
            .contains("cannot write events")
            .then_some(())
    })
    .expect("a warning that events cannot be written");
    // Space returns: writing resumes.
    store.resize("64m");
    std::thread::sleep(Duration::from_millis(200));
    send("/after-space-returned");
    wait_for(Duration::from_secs(10), || {
        let conn = rusqlite::Connection::open(&db).ok()?;
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE http_path = '/after-space-returned'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (n == 1).then_some(())
    })
    .expect("the row written after space returned");
    let (status, _) = tarpit.terminate(Duration::from_secs(5));
    assert!(status.success());
    // A write cut short by the full disk left no half line: every line is a whole object,
    // and the lines written after space returned are there.
    let text = std::fs::read_to_string(&log).unwrap();
    for (n, line) in text.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {}: {e}: {:.200}", n + 1, line));
        assert!(value.is_object(), "line {}", n + 1);
    }
    assert!(text.contains("/after-space-returned"));
    // The losses were counted and reported.
    let stderr = tarpit.stderr();
    let sink_dropped: u64 = stderr
        .rsplit("sink_dropped=")
        .next()
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(sink_dropped > 0, "{stderr}");
}
