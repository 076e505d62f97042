//! `cargo xtask`: the project's own build and test automation, in Rust so that it runs
//! wherever cargo does.
//!
//! - `cargo xtask build-ebpf`: build the eBPF object (installing bpf-linker when needed).
//! - `cargo xtask test`: the whole test suite (eBPF object, format, lints, fuzz smoke run,
//!   every test), every phase run and every failure listed at the end (`suite.rs`).
//! - `cargo xtask fuzz --seconds N`: fuzz each parser of received bytes for N seconds.
//! - `cargo xtask ci-setup`: install what the tests need on a fresh machine (CI runs it).

mod bench;
mod classify_eval;
mod fuzz;
mod seccomp_audit;
mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object into tarpit-ebpf/build/, where the server's build embeds it.
    BuildEbpf,
    /// Run the whole test suite: fmt, clippy, a short fuzz run, then every test; every phase
    /// runs even after one fails, and every failure is listed at the end.
    Test {
        /// Seconds of fuzzing the request-head reader (0 skips it).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u64,
        /// Run Debian's `stress-ng --cpu N` beside the whole suite (0: none): the flake audit,
        /// since CI may run on a busy machine and a test that fails under load is a defect.
        #[arg(long, default_value_t = 0)]
        stress_cpus: u32,
    },
    /// Fuzz the request-head reader (installs cargo-fuzz when missing).
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Parallel fuzzing jobs.
        #[arg(long, default_value_t = 1)]
        jobs: u32,
    },
    /// Install the system packages and cargo tools the test suite needs.
    CiSetup,
    /// Measure the default classification rules on labelled payloads from Debian packages
    /// (recall per class, false positives on benign input): the table in docs/classification.md.
    ClassifyEval {
        /// Also print up to this many undetected payloads per set.
        #[arg(long, default_value_t = 0)]
        misses: usize,
        /// Instead, run the native CRS evaluator and libmodsecurity on every corpus and print
        /// how far their rule firings and scores agree.
        #[arg(long)]
        crs_agree: bool,
    },
    /// Measure a tarpit on loopback (ours by default): `hold` or `churn`; `classify`: requests
    /// per second the default rules classify on one core; `scanners`: real scanners (gobuster,
    /// ffuf, nmap http-enum) against nginx and the tarpit, `--duration` seconds each; `ship`:
    /// `--duration` seconds of churn recorded, then shipped into a private ClickHouse.
    Bench {
        /// `hold`: hold N connections at the default drip; `churn`: connect-request-close loops.
        kind: BenchKind,
        /// hold: connections to open.
        #[arg(long, default_value_t = 10_000)]
        conns: u64,
        /// hold: `socketless` measures our tarpit with `--hold socketless` holding `--conns`,
        /// and, in the same run, in socket mode holding `--socket-conns` (under its fd cap).
        #[arg(long, value_enum, default_value_t = HoldArg::Socket)]
        hold: HoldArg,
        /// hold --hold socketless: connections the socket-mode column holds.
        #[arg(long, default_value_t = 19_000)]
        socket_conns: u64,
        /// hold: connections opened per second in all (0: as fast as the clients go; with
        /// `--hold socketless` the default is 4,000, so that the connections still on their
        /// sockets before their hand-over stay under the server's fd cap).
        #[arg(long)]
        ramp_rate: Option<u64>,
        /// churn: concurrent connect-request-close loops.
        #[arg(long, default_value_t = 64)]
        workers: u64,
        /// Seconds of measurement (after the ramp).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Client processes sharing the load.
        #[arg(long, default_value_t = 4)]
        processes: u64,
        /// The server to measure instead of ours; `{port}` and `{dir}` are replaced.
        #[arg(long)]
        server_cmd: Option<String>,
        /// A second server measured in the same run, printed beside the first (e.g. the
        /// Python baseline: "python3 xtask/bench/baseline.py --port {port}").
        #[arg(long)]
        compare_cmd: Option<String>,
        /// scanners: another tarpit configuration to point the scanners at, as
        /// `NAME=ARGS` (e.g. `adaptive=--mode adaptive`); repeatable. The default drip always runs.
        #[arg(long)]
        tarpit_args: Vec<String>,
        /// scanners: run only the scanners whose name starts with this.
        #[arg(long)]
        only: Option<String>,
        /// Charge the clients' packet receive work to the clients, as on a real network: run in
        /// a fresh network namespace whose loopback steers received packets (RPS) to CPU 1,
        /// with the server pinned to CPU 0 and the clients to CPU 1. Needs root and 2 CPUs.
        #[arg(long)]
        isolate_rx: bool,
        /// hold|churn: measure ours on its one port and, in the same run, with `[server] ports =
        /// "1-65535"` (BPF sk_lookup steering every port to it), in a private network
        /// namespace so that no port of the host is steered. Needs root.
        #[arg(long)]
        sk_lookup: bool,
    },
    /// Load generator used by `bench` (runs in a child process).
    #[command(hide = true)]
    BenchClient {
        #[arg(long)]
        role: String,
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        index: u64,
        #[arg(long)]
        duration: u64,
        #[arg(long, default_value_t = 0)]
        ramp_rate: u64,
    },
}

/// `cargo xtask bench hold --hold`: how our tarpit holds.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HoldArg {
    Socket,
    Socketless,
}

/// What `cargo xtask bench` measures.
#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchKind {
    Hold,
    Churn,
    Classify,
    /// The canary token search per request (`tarpit/examples/canary_bench.rs`).
    Canary,
    /// The SQLite and JSON-log writers' CPU per recorded connection, five rounds of 100,000
    /// churned connections on one core (`tarpit/examples/sink_bench.rs`).
    Sinks,
    Scanners,
    Ship,
    /// A bounded SYN flood against every port: REDIRECT vs sk_lookup (`bench/synflood.rs`).
    Synflood,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::BuildEbpf => build_ebpf(&root).map(|_| ()),
        Task::Test {
            fuzz_seconds,
            stress_cpus,
        } => suite::test(&root, fuzz_seconds, stress_cpus),
        Task::Fuzz { seconds, jobs } => fuzz::fuzz(&root, seconds, jobs),
        Task::CiSetup => ci_setup(),
        Task::ClassifyEval {
            crs_agree: true, ..
        } => classify_eval::run_eval(&root, &["--crs-agree".into()], false),
        Task::ClassifyEval { misses, .. } => {
            classify_eval::run_eval(&root, &["--misses".into(), misses.to_string()], false)
        }
        Task::Bench {
            kind: BenchKind::Classify,
            duration,
            ..
        } => classify_eval::run_eval(&root, &["--bench".into(), duration.to_string()], true),
        Task::Bench {
            kind: BenchKind::Synflood,
            duration,
            ..
        } => bench::synflood::synflood(&root, duration),
        Task::Bench {
            kind: BenchKind::Canary,
            duration,
            ..
        } => classify_eval::run_example(&root, "canary_bench", &[duration.to_string()], true),
        Task::Bench {
            kind: BenchKind::Sinks,
            ..
        } => classify_eval::run_example(&root, "sink_bench", &["5".into(), "100000".into()], true),
        Task::Bench {
            kind: BenchKind::Scanners,
            duration,
            tarpit_args,
            only,
            ..
        } => {
            run(cargo(&root).args(["build", "--release", "-p", "tarpit"]))?;
            let binary = target_dir(&root).join("release/tarpit");
            let base = format!("{} --host 127.0.0.1 --port {{port}}", binary.display());
            let mut tarpits = vec![
                ("tarpit drip".to_owned(), base.clone()),
                (
                    "tarpit adaptive".to_owned(),
                    format!("{base} --mode adaptive"),
                ),
            ];
            for extra in tarpit_args {
                let (name, args) = extra.split_once('=').unwrap_or((&extra, ""));
                tarpits.push((format!("tarpit {name}"), format!("{base} {args}")));
            }
            let window = std::time::Duration::from_secs(duration);
            let results = bench::scanners::scanners(&tarpits, window, only.as_deref())?;
            let columns: Vec<String> = std::iter::once("nginx".to_owned())
                .chain(tarpits.into_iter().map(|(name, _)| name))
                .collect();
            bench::scanners::print(&results, &columns, window);
            Ok(())
        }
        Task::Bench {
            kind: BenchKind::Ship,
            workers,
            duration,
            processes,
            ..
        } => {
            if cfg!(debug_assertions) {
                return rerun_release(&root);
            }
            run(cargo(&root).args(["build", "--release", "-p", "tarpit"]))?;
            let binary = target_dir(&root).join("release/tarpit");
            bench::ship::ship(&root, &binary, duration, workers, processes)
        }
        Task::BenchClient {
            role,
            addr,
            count,
            index,
            duration,
            ramp_rate,
        } => bench::client(&role, addr, (count, index), duration, ramp_rate),
        Task::Bench {
            kind,
            conns,
            workers,
            duration,
            processes,
            server_cmd,
            compare_cmd,
            isolate_rx,
            hold,
            socket_conns,
            ramp_rate,
            sk_lookup,
            ..
        } => bench::hold_or_churn(
            &root,
            kind,
            bench::LoadArgs {
                conns,
                workers,
                duration,
                processes,
                server_cmd,
                compare_cmd,
                isolate_rx,
                socketless: hold == HoldArg::Socketless,
                socket_conns,
                ramp_rate,
                sk_lookup,
            },
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its command line when it fails.
fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Re-runs this command from a release build of xtask. Why: the bench's load generator is this
/// binary, and on a small machine it shares the CPUs with the server it measures; with a
/// debug build of it, churn measured 15-20% fewer cycles/s for the same server.
fn rerun_release(root: &Path) -> anyhow::Result<()> {
    run(cargo(root).args(["build", "--release", "-p", "xtask"]))?;
    run(Command::new(target_dir(root).join("release/xtask")).args(std::env::args_os().skip(1)))
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` (CI keeps a cache there), else `target/`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

/// Output of `rustup run nightly ...`, trimmed.
fn nightly_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rustup")
        .args(["run", "nightly"])
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .with_context(|| format!("running nightly {args:?}"))?;
    if !out.status.success() {
        bail!(
            "nightly {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs bpf-linker 0.13 linked against the nightly toolchain's own libLLVM, unless a
/// working one is already there. A `rustup update` of nightly moves that libLLVM and breaks an
/// installed bpf-linker: this notices (it no longer runs) and reinstalls.
fn ensure_bpf_linker() -> anyhow::Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    eprintln!(
        "xtask: bpf-linker is missing or broken; installing bpf-linker 0.13.0 against the \
         nightly toolchain's libLLVM (about a minute)"
    );
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    let sysroot = PathBuf::from(nightly_output(&["rustc", "--print", "sysroot"])?);
    let version = nightly_output(&["rustc", "-vV"])?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc does not say its LLVM version")?
        .to_owned();
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so"))
        .context("the nightly toolchain has no libLLVM.so")?;
    // bpf-linker's RUNPATH points at this prefix, so it must stay where it is.
    let home = std::env::var("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home).join(format!(".local/rust-llvm{major}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    for link in ["libLLVM.so", lib.as_str()] {
        let path = prefix.join("lib").join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), &path)?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker@0.13.0",
            "--locked",
            "--force",
            "--no-default-features",
        ])
        .arg("--features")
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN"))
}

/// Builds the eBPF object and copies it to `tarpit-ebpf/build/tarpit-ebpf.o`.
fn build_ebpf(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_bpf_linker()?;
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    let target_dir = target_dir(root);
    run(Command::new("rustup")
        .current_dir(root)
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "-p",
            "tarpit-ebpf",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"]))?;
    let built = target_dir.join("bpfel-unknown-none/release/tarpit-ebpf");
    let dest = root.join("tarpit-ebpf/build/tarpit-ebpf.o");
    let unchanged = std::fs::read(&dest).ok() == std::fs::read(&built).ok();
    if !unchanged {
        std::fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    }
    eprintln!("xtask: eBPF object at {}", dest.display());
    Ok(dest)
}

/// Installs `requirement` from PyPI unless python3 can import `module` already: aiohttp for
/// the Python baseline (xtask/bench/baseline.py); chDB (`chdb-core`, Apache-2.0), a current
/// ClickHouse embedded in Python, which `xtask/clickhouse/current.py` serves to
/// `tests/clickhouse.rs` (Debian has 18.16 only; pinned so the tested release is known).
fn ensure_python_module(module: &str, requirement: &str) -> anyhow::Result<()> {
    let present = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("xtask: installing {requirement} from PyPI");
        run(Command::new("python3").args(["-m", "pip", "install", "--quiet", requirement]))?;
    }
    Ok(())
}

/// Debian packages the tests use (real peers such as curl, nginx, iptables come from here as
/// the tests that drive them arrive). Kept here so CI and a newcomer install the same.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "nginx-light",
    "systemd",
    "haproxy",
    // Headless browser that renders `tarpit report` in its test.
    "chromium",
    // Real clients and scanners for the fingerprint and classification tests, and the
    // labelled payloads the classification is measured on (`cargo xtask classify-eval`).
    "curl",
    "openssl",
    "nmap",
    "sqlmap",
    "wfuzz",
    "dirb",
    // wapiti's attack payload files (command, SQL, XSS, file handling), a corpus of
    // `cargo xtask classify-eval`.
    "wapiti",
    // The OWASP Core Rule Set and the engine that evaluates it (`[classify] crs`,
    // `tests/crs.rs`, `cargo xtask bench classify`).
    "libmodsecurity3",
    "modsecurity-crs",
    // Scanners of `cargo xtask bench scanners` (and its smoke test).
    "gobuster",
    "ffuf",
    // The metrics as a real Prometheus scrapes them (`tests/prometheus.rs`, with `promtool`).
    "prometheus",
    // CPU load beside the suite for the flake audit (`cargo xtask test --stress-cpus 2`).
    "stress-ng",
    // Forged segments for held flows (`tests/socketless.rs`: a blind reset).
    "hping3",
    // System calls counted on the accept path (`tests/e2e_ports.rs`), and the profiles of
    // docs/benchmarks.md.
    "linux-perf",
    // The fleet's central store (`tests/clickhouse.rs`, `cargo xtask bench ship`); the client
    // applies deploy/clickhouse/requests.sql by hand.
    "clickhouse-server",
    "clickhouse-client",
];

fn ci_setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    ensure_python_module("chdb", "chdb-core==26.9.0")?;
    // The sharing tests' real counterparts (tests/sharing.rs): OASIS's STIX validator
    // (BSD-3-Clause) and MISP's own Python library (BSD-2-Clause), pinned.
    ensure_python_module("stix2validator", "stix2-validator==3.3.2")?;
    ensure_python_module("pymisp", "pymisp==2.5.34.4")?;
    // The live sharing outputs' servers (tests/share_live.rs), run as separate processes:
    // OASIS's TAXII 2.1 reference server (BSD-3-Clause) and the HPFeeds broker (GPL-3.0, a
    // peer the tests talk to over TCP, like nginx; nothing of it is linked or shipped).
    ensure_python_module("medallion", "medallion==3.0.0")?;
    ensure_python_module("hpfeeds.broker.server, aiorun", "hpfeeds[broker]==3.1.0")?;
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    Ok(())
}
