//! `kill -9` while responses are in flight: nothing the tarpit recorded is lost, and the
//! restart marks what was left open as `interrupted`.

mod common;

use std::io::{Read, Write};

use common::Tarpit;

#[test]
fn kill_9_mid_drip_then_restart_marks_open_rows_interrupted() {
    let slow = ["--response-delay", "0.2", "--max-response-bytes", "1000"];
    let mut tarpit = Tarpit::start(&slow);
    let dir = tarpit.dir.clone(); // owned by `tarpit`, which lives to the end of the test

    // Ten clients in mid-response, and three that have connected but sent nothing.
    let mut held = Vec::new();
    for i in 0..10 {
        let mut stream = tarpit.connect();
        write!(stream, "GET /in-flight/{i} HTTP/1.1\r\n\r\n").unwrap();
        let mut first = [0u8; 16];
        stream.read_exact(&mut first).unwrap(); // the response has started
        held.push(stream);
    }
    for _ in 0..3 {
        held.push(tarpit.connect());
    }
    // One connection that has already ended, so the restart must leave finished rows alone.
    drop(tarpit.connect());
    // What the test is about is that nothing already recorded is lost: wait until SQLite holds
    // every connection, every request in flight and the ended connection's end (a fixed sleep
    // here lost rows still in the queue on a busy machine), then kill.
    tarpit.wait_count("SELECT COUNT(*) FROM connections", 14);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path LIKE '/in-flight/%'",
        10,
    );
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'client_closed'",
        1,
    );
    tarpit.kill9();

    let restarted = Tarpit::start_in(&dir, &slow, 1);
    assert!(
        restarted
            .stderr()
            .contains("marked rows left open by the previous run as interrupted"),
        "{}",
        restarted.stderr()
    );
    let db = restarted.db();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    // Every accepted connection has its row: 10 + 3 + 1.
    assert_eq!(count("SELECT COUNT(*) FROM connections"), 14);
    assert_eq!(
        count("SELECT COUNT(*) FROM connections WHERE end_reason = 'interrupted'"),
        13
    );
    // Every request that arrived has its row; the ones in flight read interrupted.
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE http_path LIKE '/in-flight/%'"),
        10
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM events WHERE http_path LIKE '/in-flight/%'
             AND end_reason = 'interrupted' AND closed_at IS NULL"
        ),
        10
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE end_reason = 'interrupted'"),
        10
    );
    // The one that had ended keeps its real end.
    assert_eq!(
        count("SELECT COUNT(*) FROM connections WHERE end_reason = 'client_closed'"),
        1
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM events WHERE end_reason = 'client_closed'
             AND error_message = 'client_closed_before_request'"
        ),
        1
    );
    // The new run carries on with fresh connection ids.
    let max_before = count("SELECT MAX(conn_id) FROM connections");
    restarted.assert_still_answers();
    restarted.wait_count(
        &format!("SELECT COUNT(*) FROM connections WHERE conn_id > {max_before}"),
        1,
    );
    drop(held);
}
