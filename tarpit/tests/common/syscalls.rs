//! Counts a process's system calls of some kinds while a closure runs, with `perf stat` on the
//! syscall tracepoints (Debian's `linux-perf`; `cargo xtask ci-setup` installs it). The counters
//! are switched on and off through perf's control FIFO, each switch acknowledged, so the count
//! covers exactly the closure however loaded the machine is.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// The number of calls of each of `syscalls` (names as in `syscalls:sys_enter_NAME`) the
/// process `pid` (all its threads) made while `during` ran, in the order asked.
pub fn count_during<T>(pid: u32, syscalls: &[&str], during: impl FnOnce() -> T) -> (Vec<u64>, T) {
    let dir = tempfile::tempdir().unwrap();
    let (control, ack, out) = (
        dir.path().join("control"),
        dir.path().join("ack"),
        dir.path().join("counts"),
    );
    for fifo in [&control, &ack] {
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }
    let events: Vec<String> = syscalls
        .iter()
        .map(|s| format!("syscalls:sys_enter_{s}"))
        .collect();
    let mut perf = Command::new("perf")
        .args(["stat", "-x", ",", "-D", "-1", "-e", &events.join(",")])
        .arg(format!(
            "--control=fifo:{},{}",
            control.display(),
            ack.display()
        ))
        .arg("-o")
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("perf (cargo xtask ci-setup installs linux-perf)");
    // Opening a FIFO waits for the other end: perf has opened both once these return.
    let mut control = std::fs::OpenOptions::new()
        .write(true)
        .open(&control)
        .unwrap();
    let mut ack = BufReader::new(std::fs::File::open(&ack).unwrap());
    let mut switch = |command: &str| {
        writeln!(control, "{command}").unwrap();
        let mut line = String::new();
        ack.read_line(&mut line).unwrap();
        // perf ends each answer with a NUL, which the next read finds first.
        let answer = line.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        assert_eq!(answer, "ack", "perf's answer to {command}");
    };
    switch("enable");
    let result = during();
    switch("disable");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(perf.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = perf.wait().unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success() || !text.is_empty(),
        "perf stat failed: {text}"
    );
    let counts = events
        .iter()
        .map(|event| {
            let line = text
                .lines()
                .find(|l| l.split(',').nth(2) == Some(event.as_str()))
                .unwrap_or_else(|| panic!("no count for {event} in perf's output:\n{text}"));
            // "<not counted>": no thread of the process ran while counting.
            line.split(',').next().unwrap().parse().unwrap_or(0)
        })
        .collect();
    (counts, result)
}
