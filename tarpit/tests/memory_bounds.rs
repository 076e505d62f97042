//! Memory bounded in bytes, not items: a flood of 16 KiB heads while a sink cannot write (the
//! JSON log is a FIFO nobody reads: a disk that never answers) grows the tarpit by at most its
//! queues' byte budgets, and a body larger than its preview is not kept through the drip.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::Tarpit;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A request head of about 15 KiB (the default limit is 16 KiB), in eight big headers.
fn big_head(i: usize) -> String {
    let filler = "f".repeat(1900);
    let mut head = format!("GET /flood/{i} HTTP/1.1\r\nHost: sensor\r\n");
    for h in 0..8 {
        head.push_str(&format!("X-Filler-{h}: {filler}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[test]
fn a_flood_of_big_heads_against_a_stalled_sink_stays_within_the_byte_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, _reader) = common::stalled_log(dir.path());
    const BUDGET: u64 = 4 * 1024 * 1024;
    let budget = BUDGET.to_string();
    let mut tarpit = Tarpit::start_in(
        dir.path(),
        &[
            "--json-log",
            fifo.to_str().unwrap(),
            "--event-queue-bytes",
            &budget,
            "--response-delay",
            "0.01",
            "--max-response-bytes",
            "1",
            "--workers",
            "2",
        ],
        0,
    );
    let pid = tarpit.pid();
    // Warm up: the first requests fill the pipe and start every thread's allocator arena.
    let send = |i: usize| {
        let mut stream = tarpit.connect();
        stream.write_all(big_head(i).as_bytes()).unwrap();
        common::read_response(&mut stream);
    };
    for i in 0..200 {
        send(i);
    }
    tarpit.wait_count("SELECT COUNT(*) FROM events", 200);
    let before = rss(pid);
    const FLOOD: usize = 3000;
    for i in 200..200 + FLOOD {
        send(i);
    }
    // SQLite keeps up; only the JSON log is stalled.
    tarpit.wait_count("SELECT COUNT(*) FROM events", (200 + FLOOD) as i64);
    let grown = rss(pid).saturating_sub(before);
    // The channel and each of the two sinks may hold BUDGET bytes; allow as much again for
    // allocator slack. Without byte bounds the stalled sink alone would hold the whole flood
    // (about 3000 x 16 KiB = 47 MiB).
    let bound = 3 * BUDGET + 8 * 1024 * 1024;
    eprintln!(
        "RSS grew by {} KiB during the flood (bound {} KiB)",
        grown / 1024,
        bound / 1024
    );
    assert!(
        grown < bound,
        "RSS grew by {} KiB during a flood of {FLOOD} 15 KiB heads (bound {} KiB)",
        grown / 1024,
        bound / 1024
    );
    tarpit.kill9();
}

/// Opens `n` connections that each send `request` and stay held by the drip. One at a time,
/// each until its response has begun, so that what the server frees after a request is
/// reused by the next rather than counted: what remains is what the held connections keep.
fn hold(tarpit: &Tarpit, n: usize, request: &[u8]) -> Vec<TcpStream> {
    use std::io::Read;
    (0..n)
        .map(|_| {
            let mut stream = tarpit.connect();
            stream.write_all(request).unwrap();
            let mut first = [0u8; 12];
            stream.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            stream
        })
        .collect()
}

#[test]
fn a_body_larger_than_its_preview_is_not_kept_through_the_drip() {
    // The CRS off: its stage reads stored rows in batches of 256, body previews included, in
    // the background, so whether its batch of POST rows is in memory at the moment RSS is read
    // depends on timing (a busy machine caught it). What is measured here is what the held
    // connections keep.
    let tarpit = Tarpit::start(&[
        "--response-delay",
        "30",
        "--max-response-bytes",
        "100",
        "--workers",
        "2",
        "--max-connections-per-ip",
        "0",
        "--crs",
        "off",
    ]);
    let pid = tarpit.pid();
    const N: usize = 300;
    // The baseline request leaves a row of the same size in SQLite (whose page cache is part
    // of RSS): a 4 KiB header instead of a 4 KiB body preview.
    let get = format!(
        "GET /small HTTP/1.1\r\nHost: s\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(4096)
    )
    .into_bytes();
    let mut post = b"POST /big HTTP/1.1\r\nHost: s\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    post.extend(std::iter::repeat_n(b'b', 12 * 1024));
    // Both writers done with the requests: the JSON log is a sink of its own, and a request's
    // event (its 4 KiB preview included) lives until both have written it. Counted from SQLite
    // alone, a busy CI machine once measured 300 events still queued for the log (5.4 KB more
    // per held connection).
    let settle = |rows: i64| {
        tarpit.wait_count("SELECT COUNT(*) FROM events", rows);
        tarpit.wait_json_lines(|lines| {
            lines.iter().filter(|l| l["event"] == "request").count() as i64 >= rows
        });
        std::thread::sleep(Duration::from_millis(500));
        rss(pid)
    };
    let _warm = hold(&tarpit, N, &get);
    let a = settle(N as i64);
    let _gets = hold(&tarpit, N, &get);
    let b = settle(2 * N as i64);
    let _posts = hold(&tarpit, N, &post);
    let c = settle(3 * N as i64);
    let per_get = b.saturating_sub(a) as f64 / N as f64;
    let per_post = c.saturating_sub(b) as f64 / N as f64;
    eprintln!("held: {per_post:.0} B with a 12 KiB body, {per_get:.0} B without");
    assert!(
        per_post - per_get < 3072.0,
        "a held connection with a 12 KiB body costs {per_post:.0} B, one without {per_get:.0} B"
    );
}
