//! After the tests: did any running tarpit server have a system call refused by its seccomp
//! allow-list (`tarpit/src/seccomp.rs`)?
//!
//! The server installs the list with `SECCOMP_FILTER_FLAG_LOG`, so the kernel logs each call it
//! refuses (audit type 1326, action `errno` = `code=0x50000`). No test makes the server do a
//! refused call on purpose (the refusals are tried in the list's unit tests, whose executable is
//! the test binary `deps/tarpit-<hash>`, not `tarpit`), so any such line from a `tarpit`
//! executable during the tests is a call the server needs and the list lacks: a failure, even
//! when the test that caused it handled the error and passed. The kernel rate-limits these
//! lines, so this finds missing calls, not how often they happened.

use std::process::Command;

use anyhow::{Context, bail};

/// Seconds since boot, the clock of the kernel log's time stamps.
pub fn uptime() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/uptime").context("reading /proc/uptime")?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("parsing /proc/uptime")
}

/// Fails, naming each refused call, if a `tarpit` server had a call refused since `since`.
pub fn check(since: f64) -> anyhow::Result<()> {
    let out = Command::new("dmesg")
        .output()
        .context("running dmesg (util-linux)")?;
    if !out.status.success() {
        let message = format!(
            "cannot read the kernel log: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if std::env::var_os("TARPIT_E2E").is_some() {
            bail!("{message} (TARPIT_E2E is set: run as root)");
        }
        eprintln!("xtask: SKIPPED the seccomp audit: {message}");
        return Ok(());
    }
    let refused = refusals(&String::from_utf8_lossy(&out.stdout), since);
    if !refused.is_empty() {
        bail!(
            "the seccomp allow-list refused calls a tarpit server made (add them to \
             tarpit/src/seccomp.rs if the server needs them):\n  {}",
            refused.join("\n  ")
        );
    }
    eprintln!("xtask: no system call of a tarpit server was refused during the tests");
    Ok(())
}

/// `comm` and `syscall` of each refusal by a `tarpit` executable logged after `since`.
fn refusals(log: &str, since: f64) -> Vec<String> {
    let mut found: Vec<String> = log
        .lines()
        .filter(|line| line.contains("type=1326") && line.contains("code=0x50000"))
        .filter(|line| field(line, "exe=").is_some_and(|exe| exe.ends_with("/tarpit\"")))
        .filter(|line| time_stamp(line).is_some_and(|t| t > since))
        .map(|line| {
            format!(
                "{} {}",
                field(line, "comm=").unwrap_or("?"),
                field(line, "syscall=").map_or("?".to_owned(), |n| format!("syscall={n}"))
            )
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The value after `name` up to the next space.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}"))? + 1 + name.len();
    line[start..].split(' ').next()
}

/// `[ 24762.405881] ...` → 24762.405881.
fn time_stamp(line: &str) -> Option<f64> {
    let inside = line.strip_prefix('[')?.split(']').next()?;
    inside.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[  100.000001] audit: type=1326 audit(1:1): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=7 comm=\"worker-0\" exe=\"/t/debug/tarpit\" sig=0 arch=c000003e syscall=83 compat=0 ip=0x1 code=0x50000
[  200.000001] audit: type=1326 audit(1:2): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=7 comm=\"worker-0\" exe=\"/t/release/tarpit\" sig=0 arch=c000003e syscall=83 compat=0 ip=0x1 code=0x50000
[  200.000002] audit: type=1326 audit(1:3): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=8 comm=\"sink-sqlite\" exe=\"/t/debug/tarpit\" sig=0 arch=c000003e syscall=76 compat=0 ip=0x1 code=0x7ffc0000
[  200.000003] audit: type=1326 audit(1:4): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=9 comm=\"seccomp::tests:\" exe=\"/t/debug/deps/tarpit-0a1b\" sig=0 arch=c000003e syscall=59 compat=0 ip=0x1 code=0x50000
[  200.000004] audit: type=1326 audit(1:5): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=7 comm=\"pipeline\" exe=\"/t/debug/tarpit\" sig=0 arch=c000003e syscall=41 compat=0 ip=0x1 code=0x50000
[  200.000005] audit: type=1326 audit(1:6): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=7 comm=\"worker-0\" exe=\"/t/release/tarpit\" sig=0 arch=c000003e syscall=83 compat=0 ip=0x1 code=0x50000
[  200.000006] idle-reclaim (117): drop_caches: 1
";

    #[test]
    fn only_a_servers_refusals_after_the_start_count_once_each() {
        assert_eq!(
            refusals(LOG, 150.0),
            vec![
                "\"pipeline\" syscall=41".to_owned(),
                "\"worker-0\" syscall=83".to_owned(),
            ]
        );
        assert!(refusals(LOG, 300.0).is_empty());
    }
}
