//! `--isolate-rx`: the bench re-run in a network namespace whose loopback steers received
//! packets to the clients' CPU.

use std::process::Command;

use anyhow::{Context, bail};

/// Set in the re-run of an `--isolate-rx` bench, inside its namespace.
pub const ISOLATED_ENV: &str = "TARPIT_BENCH_ISOLATED";

/// `--isolate-rx`: re-runs this bench in a new network namespace whose loopback hands received
/// packets to CPU 1 (RPS), with the whole bench on CPU 1 and the server pinned to CPU 0 (see
/// `main`). On loopback the receiver's protocol work otherwise runs in the sender's system
/// call and is charged to the server; on a sensor it happens on the scanner's machine.
pub fn rerun_isolated() -> anyhow::Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("--isolate-rx needs at least 2 CPUs");
    }
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
        ip(&[
            "netns",
            "exec",
            &namespace,
            "sh",
            "-c",
            "echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus",
        ])?;
        let status = Command::new("ip")
            .args(["netns", "exec", &namespace, "taskset", "-c", "1"])
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(ISOLATED_ENV, "1")
            .status()
            .context("re-running the bench in its namespace")?;
        anyhow::ensure!(status.success(), "the isolated bench failed ({status})");
        Ok(())
    })();
    let _ = Command::new("ip")
        .args(["netns", "del", &namespace])
        .status();
    outcome
}
