//! `[ebpf] mode` when the hook cannot start: `auto` runs and says why, `on` refuses to start.
//! "Cannot start" is made real by dropping every capability (root without CAP_BPF and
//! CAP_NET_ADMIN cannot create maps or attach hooks).

mod common;

use std::process::Command;

use common::Tarpit;
use common::netns::prerequisites_met;

/// Runs the binary with no capabilities at all.
const NO_CAPS: &[&str] = &["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"];

/// Runs the binary with no capabilities and `args`, which must make it refuse to start;
/// returns its standard error.
fn refused_without_capabilities(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(NO_CAPS[0])
        .args(&NO_CAPS[1..])
        .arg(env!("CARGO_BIN_EXE_tarpit"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn auto_without_privileges_runs_and_says_why() {
    if !prerequisites_met(&["setpriv"]) {
        return;
    }
    let tarpit = Tarpit::start_wrapped(NO_CAPS, &["--port", "0", "--ebpf-mode", "auto"]);
    let stderr = tarpit.stderr();
    assert!(
        stderr.contains("eBPF port attribution unavailable:"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    assert!(
        stderr.contains("port attribution sources: eBPF unavailable"),
        "{stderr}"
    );
    tarpit.assert_still_answers();
}

#[test]
fn on_without_privileges_refuses_to_start_and_names_what_is_missing() {
    if !prerequisites_met(&["setpriv"]) {
        return;
    }
    let stderr = refused_without_capabilities(&["--port", "0", "--ebpf-mode", "on"]);
    assert!(
        stderr.contains("[ebpf] mode = \"on\", but eBPF port attribution cannot start"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// Socketless hold cannot run without the hook (it drops the held clients' packets): with
/// `auto` and no privileges the tarpit refuses to start rather than hold no one.
#[test]
fn socketless_without_privileges_refuses_to_start_and_says_why() {
    if !prerequisites_met(&["setpriv"]) {
        return;
    }
    let stderr = refused_without_capabilities(&[
        "--port",
        "0",
        "--ebpf-mode",
        "auto",
        "--hold",
        "socketless",
    ]);
    assert!(
        stderr.contains("[tarpit] hold = \"socketless\" needs the eBPF hook, which cannot start"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn off_never_loads_and_says_so() {
    let tarpit = Tarpit::start(&["--ebpf-mode", "off"]);
    assert!(
        tarpit
            .stderr()
            .contains("port attribution sources: eBPF off"),
        "{}",
        tarpit.stderr()
    );
}
