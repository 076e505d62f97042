//! What the tarpit writes is kept from other users whatever umask it was started with: files
//! 0640, directories 0750 (`tarpit::file_modes`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Tarpit;

/// Under `umask 000` (the worst an operator's shell could hand over).
const UMASK_000: [&str; 3] = ["sh", "-c", "umask 000; exec \"$0\" \"$@\""];

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_record_and_exports_are_not_readable_by_others_whatever_the_umask() {
    let tarpit = Tarpit::start_wrapped(
        &UMASK_000,
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--response-delay",
            "0.01",
        ],
    );
    let mut stream = std::net::TcpStream::connect(tarpit.addr).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    tarpit.wait_count("SELECT COUNT(*) FROM events", 1);
    let dir = &tarpit.dir;
    for path in ["data", "logs"] {
        assert_eq!(mode(&dir.join(path)), 0o750, "{path}");
    }
    for path in [
        "data/tarpit_events.db",
        "data/tarpit_events.db-wal",
        "logs/tarpit.log",
    ] {
        assert_eq!(mode(&dir.join(path)), 0o640, "{path}");
    }
    let out = dir.join("out.csv");
    let status = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_tarpit"))
        .args(["export", "--db"])
        .arg(dir.join("data/tarpit_events.db"))
        .args(["--format", "csv", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(mode(&out), 0o640);
}
