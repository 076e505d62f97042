//! `cargo xtask classify-eval`, `cargo xtask bench classify` and `bench canary`: build the
//! `tarpit/examples/classify_eval.rs` (or `canary_bench.rs`) measurement in release mode and run it, the bench pinned
//! to one core (the target is requests per second on one core).

use std::path::Path;
use std::process::Command;

use crate::{cargo, run, target_dir};

/// Builds the measurement and runs it with `args`; `pinned` runs it on CPU 0 only.
pub fn run_eval(root: &Path, args: &[String], pinned: bool) -> anyhow::Result<()> {
    run_example(root, "classify_eval", args, pinned)
}

/// Builds the release example `name` and runs it with `args` (pinned to CPU 0 for benches).
pub fn run_example(root: &Path, name: &str, args: &[String], pinned: bool) -> anyhow::Result<()> {
    run(cargo(root).args(["build", "--release", "-p", "tarpit", "--example", name]))?;
    let binary = target_dir(root).join("release/examples").join(name);
    let mut command = if pinned {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "0"]).arg(&binary);
        taskset
    } else {
        Command::new(&binary)
    };
    command.args(args);
    run(&mut command)
}
