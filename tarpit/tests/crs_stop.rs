//! A stopping tarpit does not wait for the CRS stage to work through its backlog: a stop ends
//! the stage's batch at the row being evaluated (after a second's grace), and the rest is
//! evaluated at the next start. Rows that take the CRS long (a 16,000-byte User-Agent of `"`)
//! make the backlog minutes of work in a debug build.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{FAST, Tarpit, wait_for};
use tarpit::classify::crs::{Crs, CrsEngine, CrsSettings, DEFAULT_CRS_DIR};

/// Rows in the backlog.
const ROWS: i64 = 150;

fn crs_ready() -> bool {
    let settings = CrsSettings {
        dir: DEFAULT_CRS_DIR.into(),
        paranoia: 1,
        exclusions: None,
        engine: CrsEngine::Native,
    };
    match Crs::load(&settings) {
        Ok(_) => true,
        Err(error) if std::env::var_os("TARPIT_E2E").is_some() => {
            panic!("TARPIT_E2E is set and the OWASP CRS cannot load: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED: {error} (cargo xtask ci-setup installs modsecurity-crs)");
            false
        }
    }
}

#[test]
fn a_stop_does_not_wait_for_the_crs_backlog() {
    if !crs_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Recorded with the CRS off, so the next start has the whole backlog to evaluate.
    let mut first = Tarpit::start_in(dir.path(), &[FAST, &["--crs", "off"]].concat(), 0);
    let user_agent = "\"".repeat(16_000);
    for n in 0..ROWS {
        let mut stream = first.connect();
        let request = format!("GET /p{n} HTTP/1.1\r\nHost: t\r\nUser-Agent: {user_agent}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
    }
    first.wait_count("SELECT COUNT(*) FROM events", ROWS);
    first.kill9();
    let mut second = Tarpit::start_in(dir.path(), &[FAST, &["--crs", "on"]].concat(), 1);
    // The stage is at work on its first batch (all the rows, about 20 s of work in a debug
    // build) when the stop comes.
    std::thread::sleep(Duration::from_secs(1));
    let (_, took) = second.terminate(Duration::from_secs(120));
    assert!(
        took < Duration::from_secs(10),
        "the stop waited {took:?} for the CRS backlog"
    );
    // The next start evaluates what was left.
    // About 20 s of work in a debug build, more on a busy machine: a generous bound.
    let third = Tarpit::start_in(dir.path(), &[FAST, &["--crs", "on"]].concat(), 2);
    let scored = wait_for(Duration::from_secs(600), || {
        let n = third.count("SELECT COUNT(*) FROM events WHERE crs_score IS NOT NULL");
        (n >= ROWS).then_some(n)
    });
    assert_eq!(scored, Some(ROWS));
}
