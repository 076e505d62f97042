//! The workers yield the CPU to the threads that record (`[server] worker_nice`): read from
//! /proc/PID/task/*/stat of a running tarpit, under its system-call allow-list. On a saturated
//! CPU this is what keeps the SQLite writer's queue from overflowing (docs/benchmarks.md,
//! eighth pass); whether it does is a benchmark's question, not a timed test's.

mod common;

use common::Tarpit;

/// Each thread of `pid` as (name, nice value).
fn thread_nice_values(pid: u32) -> Vec<(String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // "tid (name) state ppid ...": the name may hold spaces, so split after its ')'.
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let name = head.split_once(" (").unwrap().1.to_owned();
        // Fields after the name start at field 3 (state); nice is field 19.
        let nice = rest.split(' ').nth(19 - 3).unwrap().parse().unwrap();
        threads.push((name, nice));
    }
    threads
}

/// The nice values of the threads named `prefix`*.
fn nice_of(threads: &[(String, i64)], prefix: &str) -> Vec<i64> {
    threads
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, nice)| *nice)
        .collect()
}

/// Starts a tarpit with `config`; returns (the workers' nice values, the recording threads').
fn workers_and_writers(config: &str) -> (Vec<i64>, Vec<i64>) {
    let tarpit = Tarpit::start_with_config(config, &[], common::FAST);
    tarpit.assert_still_answers();
    let stderr = tarpit.stderr();
    assert!(!stderr.contains("cannot lower"), "{stderr}");
    let threads = thread_nice_values(tarpit.pid());
    let workers = nice_of(&threads, "uring-");
    let writers = [
        nice_of(&threads, "pipeline"),
        nice_of(&threads, "sink-sqlite"),
        nice_of(&threads, "sink-jsonl"),
    ]
    .concat();
    assert!(!workers.is_empty(), "{threads:?}");
    assert_eq!(writers.len(), 3, "{threads:?}");
    (workers, writers)
}

/// The workers run `levels` nice levels below the pipeline and the writers, which all run at
/// the process's own value (relative: the test runner may itself run niced; 19 is the floor).
fn assert_workers_yield(config: &str, levels: i64) {
    let (workers, writers) = workers_and_writers(config);
    let base = writers[0];
    assert!(writers.iter().all(|&n| n == base), "{writers:?}");
    assert!(
        workers.iter().all(|&n| n == (base + levels).min(19)),
        "workers {workers:?}, recording threads {writers:?}"
    );
}

#[test]
fn the_workers_run_ten_nice_levels_below_the_threads_that_record() {
    assert_workers_yield("", 10);
}

#[test]
fn worker_nice_zero_leaves_the_workers_beside_the_threads_that_record() {
    assert_workers_yield("[server]\nworker_nice = 0\n", 0);
}

#[test]
fn worker_nice_takes_any_value_up_to_nineteen() {
    assert_workers_yield("[server]\nworker_nice = 3\n", 3);
}
