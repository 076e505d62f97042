//! Least privilege: once the eBPF hook is attached and the listeners are bound, the running
//! tarpit holds no capability in any thread (read from /proc/PID/task/*/status), with the hook
//! on or off, and it still serves. (That map lookups still work without capabilities is shown
//! by the REDIRECT tests, whose rows say `translated`.)

mod common;

use common::Tarpit;
use common::netns::prerequisites_met;

/// CAP_NET_ADMIN's bit in the /proc status masks.
const CAP_NET_ADMIN: u64 = 1 << 12;

/// The capability sets of every thread of `pid`, as (thread, line) for each non-zero set.
fn nonzero_capability_sets(pid: u32) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        threads += 1;
        for line in status.lines() {
            if let Some(rest) = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"]
                .iter()
                .find_map(|set| line.strip_prefix(set))
                && u64::from_str_radix(rest.trim(), 16).unwrap() != 0
            {
                found.push((
                    task.file_name().to_string_lossy().into_owned(),
                    line.to_owned(),
                ));
            }
        }
    }
    assert!(
        threads > 2,
        "workers and the pipeline are running: {threads}"
    );
    found
}

fn check(mode: &str) {
    if !prerequisites_met(&[]) {
        return;
    }
    let tarpit = Tarpit::start(&[common::FAST, &["--ebpf-mode", mode]].concat());
    let stderr = tarpit.stderr();
    if mode == "on" {
        assert!(stderr.contains("eBPF hook live"), "{stderr}");
    }
    assert!(stderr.contains("all capabilities dropped"), "{stderr}");
    // The process started as root with every capability.
    assert_eq!(nonzero_capability_sets(tarpit.pid()), Vec::new());
    tarpit.assert_still_answers();
    if mode == "on" {
        // The row is written by the pipeline after the answer: wait for it.
        let lookups = tarpit.wait_count(
            "SELECT COUNT(*) FROM events WHERE ebpf_lookup = 'untranslated'",
            1,
        );
        assert!(lookups >= 1, "the hook's map is still read");
    }
}

#[test]
fn no_capability_is_left_with_the_hook_attached() {
    check("on");
}

#[test]
fn no_capability_is_left_without_the_hook() {
    check("off");
}

/// Socketless hold keeps CAP_NET_ADMIN (TCP repair at every hand-over), in its permitted and
/// effective sets only, and nothing else: its raw sockets were opened at start, so CAP_NET_RAW
/// goes with the rest.
#[test]
fn socketless_hold_keeps_cap_net_admin_alone() {
    if !prerequisites_met(&[]) {
        return;
    }
    let tarpit =
        Tarpit::start(&[common::FAST, &["--ebpf-mode", "on", "--hold", "socketless"]].concat());
    let stderr = tarpit.stderr();
    assert!(stderr.contains("kept=[CAP_NET_ADMIN]"), "{stderr}");
    let mut sets = nonzero_capability_sets(tarpit.pid());
    assert!(!sets.is_empty());
    sets.retain(|(_, line)| {
        let (set, mask) = line.split_once(':').unwrap();
        let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
        !(matches!(set, "CapPrm" | "CapEff") && mask == CAP_NET_ADMIN)
    });
    assert_eq!(
        sets,
        Vec::new(),
        "only CAP_NET_ADMIN, permitted and effective"
    );
    tarpit.assert_still_answers();
}
