//! `cargo xtask test`: the whole suite in one run that reports every failure.
//!
//! Why every phase runs even after one fails: a flaky or broken test in one binary must not
//! hide the failures of the binaries after it (issue 21). So the eBPF build, fmt, clippy, the
//! fuzz smoke run, `cargo test --no-fail-fast` and the seccomp audit of the servers the tests ran
//! (`seccomp_audit.rs`) all run; each failed phase and each failed
//! test (named with its binary) is listed in one summary at the end, and the run exits
//! non-zero if anything failed.
//!
//! Each phase is timed. When `TARPIT_CI_TIMES` names a file (`.ci/run` sets it), the times and
//! the test totals are appended there, so that `.ci/run` can print one table of every phase,
//! its own set-up included, and the total against the time budget.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{build_ebpf, cargo, fuzz, run};

/// Runs every phase of the suite, then prints the summary; fails if any phase or test failed.
pub fn test(root: &Path, fuzz_seconds: u64, stress_cpus: u32) -> anyhow::Result<()> {
    if std::env::var_os("TARPIT_E2E").is_none() {
        eprintln!(
            "xtask: TARPIT_E2E is not set: end-to-end tests whose prerequisites (root, network \
             namespaces, apt packages) are missing will say so and skip. CI sets it."
        );
    }
    let _load = (stress_cpus > 0)
        .then(|| Load::start(stress_cpus))
        .transpose()?;
    let mut phases = Phases::new(std::env::var_os("TARPIT_CI_TIMES").map(Into::into));
    phases.run("eBPF build", || build_ebpf(root).map(|_| ()));
    phases.run("fmt", || {
        run(cargo(root).args(["fmt", "--all", "--", "--check"]))
    });
    phases.run("clippy", || {
        run(cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    if fuzz_seconds > 0 {
        phases.run("fuzz", || fuzz::fuzz(root, fuzz_seconds, 1));
    }
    let mut report = TestReport::default();
    let tests_start = crate::seccomp_audit::uptime();
    phases.run("tests", || run_tests(root, &mut report));
    phases.run("seccomp audit", || {
        crate::seccomp_audit::check(tests_start?)
    });
    phases.record_totals(&report);

    for line in summary(&phases.failed, &report) {
        println!("{line}");
    }
    if !phases.failed.is_empty() {
        bail!("failed: {}", phases.failed.join(", "));
    }
    Ok(())
}

/// `cargo test --workspace --all-targets --no-fail-fast`, its output passed through and read
/// into `report` (stdout and stderr share one pipe, so that each test's result follows the
/// `Running <binary>` line cargo prints before it).
fn run_tests(root: &Path, report: &mut TestReport) -> anyhow::Result<()> {
    let mut command = cargo(root);
    command.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    eprintln!("xtask: running {command:?}");
    let (reader, writer) = std::io::pipe().context("creating a pipe for cargo test")?;
    let mut child = command
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn()
        .context("starting cargo test")?;
    // The command holds the pipe's write ends until it is dropped; drop it so that the read
    // below ends when cargo does.
    drop(command);
    pass_through(
        BufReader::new(reader),
        &mut std::io::stdout().lock(),
        report,
    )?;
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    if report.passed == 0 {
        bail!("cargo test ran no test");
    }
    if report.failed > 0 {
        bail!("{} tests failed", report.failed);
    }
    Ok(())
}

/// Copies cargo's output to `out` line by line, reading each into `report`. Bytes, not
/// `lines()`: a test that prints invalid UTF-8 must not end the read (and the summary) early.
fn pass_through(
    mut input: impl BufRead,
    out: &mut impl Write,
    report: &mut TestReport,
) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    while input.read_until(b'\n', &mut bytes)? > 0 {
        out.write_all(&bytes)?;
        let line = String::from_utf8_lossy(&bytes);
        report.add_line(line.trim_end_matches(['\n', '\r']));
        bytes.clear();
    }
    Ok(())
}

/// The summary printed last: every failed phase and test, then the totals line (the line CI
/// reads, so it comes last).
fn summary(failed_phases: &[String], report: &TestReport) -> Vec<String> {
    let mut lines = vec![String::new(), "== summary".to_owned()];
    if failed_phases.is_empty() {
        lines.push("every phase passed".to_owned());
    } else {
        lines.push(format!("failed phases: {}", failed_phases.join(", ")));
    }
    if !report.failed_tests.is_empty() {
        lines.push(format!("failed tests ({}):", report.failed_tests.len()));
        lines.extend(report.failed_tests.iter().map(|t| format!("  {t}")));
    }
    if !report.failed_binaries.is_empty() {
        lines.push(
            "test binaries with failures (one that crashed or did not build is named only here):"
                .to_owned(),
        );
        lines.extend(report.failed_binaries.iter().map(|b| format!("  {b}")));
    }
    lines.push(format!(
        "tests: {} passed, {} failed",
        report.passed, report.failed
    ));
    lines
}

/// `stress-ng --cpu N` for as long as the suite runs (killed when dropped).
struct Load(std::process::Child);

impl Load {
    fn start(cpus: u32) -> anyhow::Result<Self> {
        eprintln!("xtask: running stress-ng --cpu {cpus} beside the suite");
        let child = std::process::Command::new("stress-ng")
            .args(["--cpu", &cpus.to_string(), "--quiet"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context(
                "starting stress-ng (Debian's stress-ng; `cargo xtask ci-setup` installs it)",
            )?;
        Ok(Self(child))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // stress-ng's workers are its children: SIGTERM lets it stop them.
        let _ = std::process::Command::new("kill")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// The suite's phases: each one's time, and the names of those that failed.
struct Phases {
    /// Where `.ci/run` collects the times (`TARPIT_CI_TIMES`), if anywhere.
    times_file: Option<std::path::PathBuf>,
    failed: Vec<String>,
}

impl Phases {
    fn new(times_file: Option<std::path::PathBuf>) -> Self {
        Self {
            times_file,
            failed: Vec::new(),
        }
    }

    /// Runs one phase, timing it; a failure is printed and remembered, never returned, so
    /// that the phases after it still run.
    fn run(&mut self, name: &str, phase: impl FnOnce() -> anyhow::Result<()>) {
        let start = Instant::now();
        let result = phase();
        let seconds = start.elapsed().as_secs();
        let outcome = if let Err(error) = &result {
            eprintln!("xtask: phase {name} failed: {error:#}");
            self.failed.push(name.to_owned());
            "FAILED"
        } else {
            "ok"
        };
        eprintln!("xtask: phase {name}: {seconds} s, {outcome}");
        self.append(&format!("phase\t{name}\t{seconds}\t{outcome}"));
    }

    /// Hands the test totals to `.ci/run`, which prints them as its last line.
    fn record_totals(&self, report: &TestReport) {
        self.append(&format!("tests\t{}\t{}", report.passed, report.failed));
    }

    fn append(&self, line: &str) {
        let Some(path) = &self.times_file else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(error) = written {
            eprintln!("xtask: cannot append to {}: {error}", path.display());
        }
    }
}

/// What `cargo test`'s output says: totals over every binary, each failed test named with its
/// binary, and binaries that failed without a result line (a crash, a build error).
#[derive(Debug, Default, PartialEq)]
struct TestReport {
    passed: u64,
    failed: u64,
    /// `binary: test name` of every test reported `FAILED`.
    failed_tests: Vec<String>,
    /// What cargo lists after `error: N targets failed:` (e.g. `` `--test classify` ``).
    failed_binaries: Vec<String>,
    /// The binary whose tests are running: cargo's last `Running` or `Doc-tests` line.
    current: String,
    /// Inside cargo's closing list of failed targets.
    in_failed_targets: bool,
}

impl TestReport {
    /// Reads one line of `cargo test` output.
    fn add_line(&mut self, line: &str) {
        let trimmed = line.trim();
        if self.in_failed_targets {
            if trimmed.starts_with('`') {
                self.note_failed_binary(trimmed);
                return;
            }
            self.in_failed_targets = false;
        }
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            // `Running tests/classify.rs (target/debug/deps/classify-0123abcd)`
            self.current = rest.split(" (").next().unwrap_or(rest).to_owned();
        } else if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
            self.current = format!("doc-tests {krate}");
        } else if let Some(rest) = trimmed.strip_prefix("test result: ") {
            self.add_totals(rest);
        } else if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failed_tests.push(format!("{}: {name}", self.current));
        } else if trimmed.starts_with("error:") && trimmed.ends_with("targets failed:") {
            self.in_failed_targets = true;
        } else if let Some(target) = trimmed.strip_prefix("error: test failed, to rerun pass ") {
            // Printed after each failed binary; with one failed target cargo names it here only.
            self.note_failed_binary(target);
        }
    }

    /// Remembers a failed binary once, however many of cargo's lines name it.
    fn note_failed_binary(&mut self, target: &str) {
        if !self.failed_binaries.iter().any(|b| b == target) {
            self.failed_binaries.push(target.to_owned());
        }
    }

    /// Adds `N passed; N failed; ...` from one binary's result line.
    fn add_totals(&mut self, rest: &str) {
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TestReport, pass_through, summary};

    /// Lines as cargo test prints them with `--no-fail-fast`, two binaries failing.
    const OUTPUT: &[&str] = &[
        "     Running unittests src/lib.rs (target/debug/deps/tarpit-0a1b2c)",
        "running 2 tests",
        "test drip::tests::ticks ... ok",
        "test result: ok. 52 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s",
        "     Running tests/classify.rs (target/debug/deps/classify-3d4e5f)",
        "test nmap_vulnerability_scripts_get_their_cve_tags ... FAILED",
        "test curl_urllib_and_sqlmap_get_their_tags_in_every_record ... ok",
        "failures:",
        "    nmap_vulnerability_scripts_get_their_cve_tags",
        "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        "error: test failed, to rerun pass `--test classify`",
        "     Running tests/wire.rs (target/debug/deps/wire-6a7b8c)",
        "test slow_client_is_held ... FAILED",
        "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        "error: test failed, to rerun pass `--test wire`",
        "   Doc-tests tarpit",
        "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        "error: 2 targets failed:",
        "    `--test classify`",
        "    `--test wire`",
        "error: process didn't exit successfully",
    ];

    #[test]
    fn every_failed_test_is_named_with_its_binary() {
        let mut report = TestReport::default();
        for line in OUTPUT {
            report.add_line(line);
        }
        assert_eq!((report.passed, report.failed), (57, 2));
        assert_eq!(
            report.failed_tests,
            [
                "tests/classify.rs: nmap_vulnerability_scripts_get_their_cve_tags",
                "tests/wire.rs: slow_client_is_held",
            ]
        );
        assert_eq!(
            report.failed_binaries,
            ["`--test classify`", "`--test wire`"]
        );
    }

    #[test]
    fn a_binary_that_crashes_is_listed_though_it_printed_no_result() {
        let mut report = TestReport::default();
        for line in [
            "     Running tests/crash.rs (target/debug/deps/crash-0f)",
            "running 1 test",
            "error: test failed, to rerun pass `--test crash`",
            "Caused by:",
            "  process didn't exit successfully: (signal: 11, SIGSEGV)",
        ] {
            report.add_line(line);
        }
        assert_eq!(report.failed_binaries, ["`--test crash`"]);
        let lines = summary(&["tests".to_owned()], &report);
        assert!(lines.contains(&"  `--test crash`".to_owned()), "{lines:?}");
    }

    #[test]
    fn invalid_utf8_from_a_test_does_not_end_the_read() {
        let output: &[u8] = b"     Running tests/wire.rs (target/debug/deps/wire-6a)\n\
            raw bytes \xff\xfe from a test\n\
            test slow_client_is_held ... FAILED\n\
            test result: FAILED. 4 passed; 1 failed; 0 ignored\n";
        let mut report = TestReport::default();
        let mut copy = Vec::new();
        pass_through(output, &mut copy, &mut report).unwrap();
        assert_eq!(copy, output, "passed through unchanged");
        assert_eq!((report.passed, report.failed), (4, 1));
        assert_eq!(report.failed_tests, ["tests/wire.rs: slow_client_is_held"]);
    }

    #[test]
    fn the_totals_line_comes_last() {
        let mut report = TestReport::default();
        for line in OUTPUT {
            report.add_line(line);
        }
        let lines = summary(&["tests".to_owned()], &report);
        assert_eq!(lines.last().unwrap(), "tests: 57 passed, 2 failed");
        assert!(lines.contains(&"failed phases: tests".to_owned()));
        assert!(lines.contains(
            &"  tests/classify.rs: nmap_vulnerability_scripts_get_their_cve_tags".to_owned()
        ));
    }
}
