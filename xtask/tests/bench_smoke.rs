//! `cargo xtask bench` end to end at a small scale: the release build of the tarpit under a
//! short hold and a short churn, read back from the printed table. No speed is asserted here
//! (figures belong to the bench itself, see `docs/benchmarks.md`); this checks that the bench
//! runs, that every connection it asks for is held or cycled, and that nothing is lost.

use std::process::Command;

/// Runs `xtask bench ARGS` and returns its standard output (the table).
fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("bench")
        .args(args)
        .output()
        .expect("running xtask bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "xtask bench {args:?} failed\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The server column of the table row labelled `label`.
fn cell<'a>(table: &'a str, label: &str) -> &'a str {
    table
        .lines()
        .find_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            (cells.next() == Some(label))
                .then(|| cells.next())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"))
}

/// "1500.2 ms" -> 1500.2
fn millis(value: &str) -> f64 {
    value
        .strip_suffix(" ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a duration: {value:?}"))
}

/// "N / M" -> (N, M)
fn pair(value: &str) -> (u64, u64) {
    let (a, b) = value.split_once(" / ").expect("N / M");
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn bench_holds_and_churns_the_release_tarpit_without_loss() {
    let hold = bench(&["hold", "--conns", "300", "--duration", "4"]);
    assert_eq!(cell(&hold, "held / requested"), "300 / 300", "{hold}");
    assert_eq!(cell(&hold, "failures (connect, eof, read)"), "0, 0, 0");
    assert_eq!(cell(&hold, "dropped events"), "0");
    // Every held connection has its row (the readiness probes add a few more).
    let (rows, expected) = pair(cell(&hold, "rows written / expected"));
    assert!(rows >= expected && expected == 300, "{hold}");
    // The drip's cadence (1.5 s by default) is what the hold measures.
    let gap = millis(cell(&hold, "drip gap p50"));
    assert!((1450.0..1550.0).contains(&gap), "{hold}");
    assert!(cell(&hold, "server RSS per held connection").ends_with(" B"));

    let churn = bench(&["churn", "--workers", "8", "--duration", "3"]);
    assert_eq!(cell(&churn, "failures (connect, eof, read)"), "0, 0, 0");
    assert_eq!(cell(&churn, "dropped events"), "0");
    let cycles: f64 = cell(&churn, "churn cycles/s").parse().unwrap();
    assert!(cycles > 0.0, "{churn}");
    let (rows, expected) = pair(cell(&churn, "rows written / expected"));
    assert!(rows >= expected && expected as f64 >= cycles, "{churn}");
    assert!(
        cell(&churn, "rows settled after load").ends_with(" s"),
        "{churn}"
    );
}

/// `bench hold --hold socketless` measures socketless hold and socket mode in one run: every
/// connection held in both, the socketless server with a handful of fds where the socket one
/// has one per connection, and its map memory reported. Needs root (the eBPF hook).
#[test]
fn bench_holds_socketless_and_on_sockets_in_one_run() {
    if !root_or_skip() {
        return;
    }
    let table = bench(&[
        "hold",
        "--hold",
        "socketless",
        "--conns",
        "300",
        "--socket-conns",
        "200",
        "--duration",
        "4",
    ]);
    let row = |label: &str| row_cells(&table, label);
    assert_eq!(row("server"), ["socketless", "socket"], "{table}");
    assert_eq!(
        row("held / requested"),
        ["300 / 300", "200 / 200"],
        "{table}"
    );
    assert_eq!(row("failures (connect, eof, read)"), ["0, 0, 0", "0, 0, 0"]);
    let fds: Vec<u64> = row("server open fds at the end")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(fds[0] < 100 && fds[1] >= 200, "{table}");
    let bpf = &row("server BPF map memory per held connection")[0];
    let bytes: f64 = bpf.strip_suffix(" B").unwrap().parse().unwrap();
    assert!(bytes > 0.0, "the held-flow map grew: {table}");
    let gap = millis(&row("drip gap p50")[0]);
    assert!((1450.0..1550.0).contains(&gap), "{table}");
}

/// Every cell after the label of the row `label` of a `| label | a | b |` table.
fn row_cells(table: &str, label: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|line| line.split('|').nth(1).map(str::trim) == Some(label))
        .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"));
    line.split('|')
        .skip(2)
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// `bench churn --sk-lookup` measures one port and every port (sk_lookup) in one private
/// namespace, and `bench synflood` floods REDIRECT and sk_lookup in turn: both run to their
/// table, nothing lost in the churn, and the flood fills conntrack only under REDIRECT.
#[test]
fn bench_compares_sk_lookup_with_one_port_and_with_redirect() {
    if !root_or_skip() {
        return;
    }
    if !have(&["hping3", "iptables"]) {
        return;
    }
    let churn = bench(&["churn", "--sk-lookup", "--workers", "8", "--duration", "3"]);
    assert_eq!(
        row_cells(&churn, "server"),
        ["port", "sk_lookup"],
        "{churn}"
    );
    assert_eq!(
        row_cells(&churn, "failures (connect, eof, read)"),
        ["0, 0, 0", "0, 0, 0"],
        "{churn}"
    );
    assert_eq!(row_cells(&churn, "dropped events"), ["0", "0"], "{churn}");

    let flood = bench(&["synflood", "--duration", "4"]);
    let tried: Vec<u64> = row_cells(&flood, "legitimate connections tried")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(tried.len() == 2 && tried.iter().all(|t| *t > 0), "{flood}");
    let entries: Vec<u64> = row_cells(&flood, "conntrack entries at the end")
        .iter()
        .map(|v| v.split(" / ").next().unwrap().parse().unwrap())
        .collect();
    assert!(entries[0] > 0, "REDIRECT tracks the flood: {flood}");
    assert_eq!(entries[1], 0, "sk_lookup tracks nothing: {flood}");
}

/// Whether this runs as root; if not, the test says it skips (a failure under `TARPIT_E2E`).
fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("TARPIT_E2E").is_none(),
        "TARPIT_E2E is set but the test is not root"
    );
    eprintln!("SKIPPED: needs root");
    false
}

/// Whether this runs as root (`id -u`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether a command is on PATH; with `TARPIT_E2E` set, a missing one fails the test.
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("TARPIT_E2E").is_none(),
        "TARPIT_E2E is set and {missing:?} are missing (cargo xtask ci-setup installs them)"
    );
    eprintln!("SKIPPED: {missing:?} missing");
    false
}

/// The scanner bench runs a real scanner against nginx and the tarpit and reads back what each
/// recorded: gobuster (defaults: 10 threads, 10 s timeout) goes through the whole word list on
/// nginx and gives up on the drip after its first request times out.
#[test]
fn scanner_bench_runs_gobuster_against_nginx_and_the_tarpit() {
    if !have(&["gobuster", "nginx"]) {
        return;
    }
    let table = bench(&["scanners", "--only", "gobuster", "--duration", "30"]);
    let row = |target: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| gobuster | {target} |")))
            .unwrap_or_else(|| panic!("no {target} row in\n{table}"))
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let nginx = row("nginx");
    assert!(
        nginx[3].parse::<u64>().unwrap() >= 20_469,
        "the whole list: {table}"
    );
    assert_eq!(nginx[7], "finished", "{table}");
    let drip = row("tarpit drip");
    let drip_requests = drip[3].parse::<u64>().unwrap();
    assert!(drip_requests >= 1, "{table}");
    assert!(drip[7].starts_with("aborted"), "{table}");
    // The adaptive mode answers gobuster's wildcard probe (a random path) with a 404 before
    // its 10 s timeout, so gobuster goes on with its list instead of aborting.
    let adaptive = row("tarpit adaptive");
    assert_eq!(adaptive[7], "still scanning", "{table}");
    let adaptive_requests = adaptive[3].parse::<u64>().unwrap();
    assert!(
        adaptive_requests >= 10 && adaptive_requests > 4 * drip_requests,
        "{table}"
    );
}
