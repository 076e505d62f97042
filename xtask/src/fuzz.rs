//! `cargo xtask fuzz`: runs each cargo-fuzz target under `tarpit/fuzz` (nightly, sanitizers)
//! from named seed inputs; `cargo xtask test` runs it briefly.

use std::path::Path;
use std::process::Command;

use crate::run;

pub fn fuzz(root: &Path, seconds: u64, jobs: u32) -> anyhow::Result<()> {
    let has_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        eprintln!("xtask: installing cargo-fuzz from crates.io (once; about a minute)");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    for (target, seeds) in FUZZ_TARGETS {
        fuzz_target(root, target, seeds, seconds, jobs)?;
    }
    Ok(())
}

/// Named seed inputs for a fuzz target.
type Seeds = &'static [(&'static str, &'static [u8])];

/// Fuzz targets under `tarpit/fuzz`, with seed inputs for each.
const FUZZ_TARGETS: &[(&str, Seeds)] = &[
    ("request_head", SEEDS),
    ("proxy_preamble", PROXY_SEEDS),
    ("client_hello", CLIENT_HELLO_SEEDS),
];

/// Seed inputs for the TLS ClientHello fuzzer: a real one (OpenSSL 3.0's `s_client` with SNI
/// and ALPN, captured once) and the start of another.
const CLIENT_HELLO_SEEDS: &[(&str, &[u8])] = &[
    (
        "openssl",
        include_bytes!("../../tarpit/fuzz/seeds/openssl-client-hello.bin"),
    ),
    ("short", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
];

/// Seed inputs for the PROXY protocol fuzzer.
const PROXY_SEEDS: &[(&str, &[u8])] = &[
    (
        "v1",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\nGET / HTTP/1.1\r\n\r\n",
    ),
    ("v1-unknown", b"PROXY UNKNOWN\r\n"),
    (
        "v2",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\xdc\x04\x00\x50",
    ),
];

fn fuzz_target(
    root: &Path,
    target: &str,
    seeds: &[(&str, &[u8])],
    seconds: u64,
    jobs: u32,
) -> anyhow::Result<()> {
    let fuzz_dir = root.join("tarpit");
    // The corpus lives outside the repository; seeds give the fuzzer real inputs to mutate.
    let corpus = fuzz_dir.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    for (name, seed) in seeds {
        std::fs::write(corpus.join(name), seed)?;
    }
    let mut command = Command::new("rustup");
    command
        .current_dir(&fuzz_dir)
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["run", "nightly", "cargo", "fuzz", "run", target])
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=20000")
        .arg("-print_final_stats=1");
    if jobs > 1 {
        command
            .arg(format!("-jobs={jobs}"))
            .arg(format!("-workers={jobs}"));
    }
    run(&mut command)
}

/// Seed inputs for the request-head fuzzer.
const SEEDS: &[(&str, &[u8])] = &[
    (
        "get",
        b"GET /index.php?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: b\r\n\r\n",
    ),
    ("post", b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
    ("http10", b"GET / HTTP/1.0\n\n"),
    ("tls", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
    (
        "dup",
        b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ),
];
