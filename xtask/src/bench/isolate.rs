//! `--isolate-rx`: the bench re-run in a network namespace whose loopback steers received
//! packets to the clients' CPU.

use std::process::Command;

use anyhow::{Context, bail};

/// Set in the re-run of an `--isolate-rx` bench, inside its namespace.
pub const ISOLATED_ENV: &str = "TARPIT_BENCH_ISOLATED";
/// Set in the re-run of a `--sk-lookup` bench, inside its private namespace.
pub const PRIVATE_ENV: &str = "TARPIT_BENCH_PRIVATE";

/// `--sk-lookup`: re-runs this bench in a fresh network namespace with only its loopback up,
/// so that the sk_lookup program the bench attaches steers no port of the host.
pub fn rerun_private() -> anyhow::Result<()> {
    rerun_in_namespace(None, &[], PRIVATE_ENV)
}

/// `--isolate-rx`: re-runs this bench in a new network namespace whose loopback hands received
/// packets to CPU 1 (RPS), with the whole bench on CPU 1 and the server pinned to CPU 0 (see
/// `main`). On loopback the receiver's protocol work otherwise runs in the sender's system
/// call and is charged to the server; on a sensor it happens on the scanner's machine.
pub fn rerun_isolated() -> anyhow::Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("--isolate-rx needs at least 2 CPUs");
    }
    rerun_in_namespace(
        Some("echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus"),
        &["taskset", "-c", "1"],
        ISOLATED_ENV,
    )
}

/// Re-runs this command in a new network namespace (loopback up, then `setup` run in it),
/// under `wrapper`, with `env` set; the namespace is removed afterwards.
fn rerun_in_namespace(setup: Option<&str>, wrapper: &[&str], env: &str) -> anyhow::Result<()> {
    let namespace = format!("tarpit-bench-{}", std::process::id());
    let outcome = (|| {
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let status = Command::new("ip")
                .args(args)
                .status()
                .context("running ip")?;
            anyhow::ensure!(status.success(), "ip {} failed ({status})", args.join(" "));
            Ok(())
        };
        ip(&["netns", "add", &namespace])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        if let Some(setup) = setup {
            ip(&["netns", "exec", &namespace, "sh", "-c", setup])?;
        }
        let status = Command::new("ip")
            .args(["netns", "exec", &namespace])
            .args(wrapper)
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(env, "1")
            .status()
            .context("re-running the bench in its namespace")?;
        anyhow::ensure!(
            status.success(),
            "the bench in its namespace failed ({status})"
        );
        Ok(())
    })();
    let _ = Command::new("ip")
        .args(["netns", "del", &namespace])
        .status();
    outcome
}
