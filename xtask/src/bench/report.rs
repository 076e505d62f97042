//! What a bench measured, and the table that prints it beside the compared server's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What `bench-client` reports back (microseconds).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientReport {
    /// Connections opened.
    pub opened: u64,
    /// Connections open and still receiving at the end of the hold.
    pub held: u64,
    /// Failures by kind.
    pub connect_failed: u64,
    /// Connection closed by the server (EOF) during the hold.
    pub eof: u64,
    /// Connection reset or another read error.
    pub read_error: u64,
    /// Connect durations.
    pub connect_us: Vec<u32>,
    /// Request sent to first byte received.
    pub ttfb_us: Vec<u32>,
    /// Gaps between consecutive reads during the hold.
    pub gap_us: Vec<u32>,
    /// Churn: completed connect-request-first byte-close cycles.
    pub cycles: u64,
}

/// Figures for one server.
#[derive(Debug, Default)]
pub struct Figures {
    pub(super) name: String,
    pub(super) report: ClientReport,
    pub(super) requested: u64,
    pub(super) rss_per_conn: Option<f64>,
    /// Growth of the server's BPF maps' memory per held connection (socketless hold).
    pub(super) bpf_per_conn: Option<f64>,
    /// The server's open file descriptors at the end of the window.
    pub(super) fds: Option<u64>,
    pub(super) cpu_percent: Option<f64>,
    /// Share of that CPU spent in the kernel (sockets, TCP, timers).
    pub(super) cpu_system_share: Option<f64>,
    pub(super) cycles_per_s: Option<f64>,
    pub(super) dropped_events: Option<u64>,
    pub(super) rows: Option<u64>,
    pub(super) settle: Option<Duration>,
    pub(super) rss_start_end: Option<(u64, u64)>,
}

fn percentile(samples: &mut [u32], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    Some(samples[index] as f64 / 1000.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

/// Prints one table with a column per server.
pub fn print_table(title: &str, columns: &mut [Figures]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |label: &str, values: Vec<String>| rows.push((label.to_owned(), values));
    add("server", columns.iter().map(|c| c.name.clone()).collect());
    add(
        "held / requested",
        columns
            .iter()
            .map(|c| format!("{} / {}", c.report.held, c.requested))
            .collect(),
    );
    add(
        "failures (connect, eof, read)",
        columns
            .iter()
            .map(|c| {
                format!(
                    "{}, {}, {}",
                    c.report.connect_failed, c.report.eof, c.report.read_error
                )
            })
            .collect(),
    );
    add(
        "server RSS per held connection",
        columns
            .iter()
            .map(|c| c.rss_per_conn.map_or("-".into(), |b| format!("{b:.0} B")))
            .collect(),
    );
    add(
        "server BPF map memory per held connection",
        columns
            .iter()
            .map(|c| c.bpf_per_conn.map_or("-".into(), |b| format!("{b:.0} B")))
            .collect(),
    );
    add(
        "server memory per held connection (RSS + BPF)",
        columns
            .iter()
            .map(|c| match (c.rss_per_conn, c.bpf_per_conn) {
                (Some(rss), Some(bpf)) => format!("{:.0} B", rss + bpf),
                _ => "-".into(),
            })
            .collect(),
    );
    add(
        "server open fds at the end",
        columns
            .iter()
            .map(|c| c.fds.map_or("-".into(), |n| n.to_string()))
            .collect(),
    );
    add(
        "server CPU per 10,000 held (% of one core)",
        columns
            .iter()
            .map(|c| match (c.cpu_percent, c.report.held) {
                (Some(cpu), held) if held > 0 => format!("{:.2}%", cpu * 10_000.0 / held as f64),
                _ => "-".into(),
            })
            .collect(),
    );
    add(
        "server CPU (% of one core)",
        columns
            .iter()
            .map(|c| c.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%")))
            .collect(),
    );
    add(
        "  of which in the kernel",
        columns
            .iter()
            .map(|c| {
                c.cpu_system_share
                    .map_or("-".into(), |p| format!("{:.0}%", p * 100.0))
            })
            .collect(),
    );
    let mut stat = |label: &str, pick: fn(&mut ClientReport) -> &mut Vec<u32>, p: f64| {
        let values = columns
            .iter_mut()
            .map(|c| fmt_ms(percentile(pick(&mut c.report), p)))
            .collect();
        (label.to_owned(), values)
    };
    let more = [
        stat("connect p99", |r| &mut r.connect_us, 0.99),
        stat("accept -> first byte p50", |r| &mut r.ttfb_us, 0.50),
        stat("accept -> first byte p99", |r| &mut r.ttfb_us, 0.99),
        stat("drip gap p50", |r| &mut r.gap_us, 0.50),
        stat("drip gap p99", |r| &mut r.gap_us, 0.99),
        stat("drip gap max", |r| &mut r.gap_us, 1.0),
    ];
    rows.extend(more);
    let mut add = |label: &str, values: Vec<String>| rows.push((label.to_owned(), values));
    add(
        "churn cycles/s",
        columns
            .iter()
            .map(|c| c.cycles_per_s.map_or("-".into(), |v| format!("{v:.0}")))
            .collect(),
    );
    add(
        "dropped events",
        columns
            .iter()
            .map(|c| c.dropped_events.map_or("-".into(), |v| v.to_string()))
            .collect(),
    );
    add(
        "rows written / expected",
        columns
            .iter()
            .map(|c| match (c.rows, c.cycles_per_s) {
                (Some(rows), Some(_)) => format!("{rows} / {}", c.report.cycles),
                (Some(rows), None) => format!("{rows} / {}", c.report.opened),
                _ => "-".into(),
            })
            .collect(),
    );
    add(
        "rows settled after load",
        columns
            .iter()
            .map(|c| {
                c.settle
                    .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
            })
            .collect(),
    );
    add(
        "server RSS start -> end",
        columns
            .iter()
            .map(|c| {
                c.rss_start_end.map_or("-".into(), |(a, b)| {
                    format!("{} -> {} MB", a >> 20, b >> 20)
                })
            })
            .collect(),
    );
    println!("\n{title}\n");
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(10);
    for (label, values) in rows {
        print!("| {label:<width$} |");
        for v in values {
            print!(" {v:>24} |");
        }
        println!();
    }
}
