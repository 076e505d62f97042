//! `cargo xtask bench synflood`: what a bounded SYN flood costs real clients when every port is
//! answered through `iptables ... -j REDIRECT` (NAT, a conntrack entry per SYN) and through
//! BPF sk_lookup (`[server] ports`, no NAT), measured one after the other in the same run.
//!
//! Each mode gets a fresh pair of network namespaces joined by a veth pair: a sensor running
//! the release tarpit on every port, and a client where Debian's `hping3` floods SYNs from
//! random source addresses to ever-changing ports while a legitimate client (`xtask
//! bench-client --role probe`) opens one connection every 10 ms to a random port and gives each
//! 3 s to be answered. Reported per mode: SYNs sent, legitimate connections answered and lost,
//! the sensor's conntrack table at the end (its size is the kernel's default,
//! `nf_conntrack_max`) and the kernel's conntrack drop counters.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::ClientReport;

const SENSOR: &str = "10.79.0.1";
const CLIENT: &str = "10.79.0.2";

/// The two ways of answering every port.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Redirect,
    SkLookup,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Redirect => "REDIRECT",
            Mode::SkLookup => "sk_lookup",
        }
    }
}

/// One mode's figures.
struct Outcome {
    mode: Mode,
    syns_sent: Option<u64>,
    probe: ClientReport,
    conntrack_entries: u64,
    conntrack_max: u64,
    /// `drop`, `early_drop` and `insert_failed` of `/proc/net/stat/nf_conntrack`, summed.
    conntrack_drops: (u64, u64, u64),
}

/// Runs the flood against each mode; `seconds` of flood each.
pub fn synflood(root: &Path, seconds: u64) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        return crate::rerun_release(root);
    }
    crate::run(crate::cargo(root).args(["build", "--release", "-p", "tarpit"]))?;
    let tarpit = crate::target_dir(root).join("release/tarpit");
    let mut outcomes = Vec::new();
    for mode in [Mode::Redirect, Mode::SkLookup] {
        eprintln!(
            "xtask: SYN flood, {} s, every port by {}",
            seconds,
            mode.name()
        );
        let lab = FloodLab::new(mode)?;
        outcomes.push(lab.run(&tarpit, seconds)?);
    }
    print(&outcomes, seconds);
    Ok(())
}

/// The namespaces of one mode, removed when dropped.
struct FloodLab {
    mode: Mode,
    sensor: String,
    client: String,
    dir: tempfile::TempDir,
}

fn sh(command: &str) -> anyhow::Result<String> {
    let out = Command::new("sh").args(["-c", command]).output()?;
    if !out.status.success() {
        bail!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl FloodLab {
    fn new(mode: Mode) -> anyhow::Result<Self> {
        let id = format!("{}{}", std::process::id() % 100_000, mode as u8);
        let lab = Self {
            mode,
            sensor: format!("tfs{id}"),
            client: format!("tfc{id}"),
            dir: tempfile::tempdir()?,
        };
        let (s, c) = (&lab.sensor, &lab.client);
        sh(&format!("ip netns add {s} && ip netns add {c}"))?;
        sh(&format!(
            "ip link add fs{id} netns {s} type veth peer name fc{id} netns {c} && \
             ip -n {s} addr add {SENSOR}/24 dev fs{id} && ip -n {c} addr add {CLIENT}/24 dev fc{id} && \
             ip -n {s} link set lo up && ip -n {c} link set lo up && \
             ip -n {s} link set fs{id} up && ip -n {c} link set fc{id} up && \
             ip -n {s} route add default via {CLIENT} && \
             ip netns exec {s} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.fs{id}.rp_filter=0"
        ))?;
        Ok(lab)
    }

    fn in_sensor(&self, command: &str) -> anyhow::Result<String> {
        sh(&format!("ip netns exec {} sh -c '{command}'", self.sensor))
    }

    /// Starts the tarpit, floods, probes, and reads the conntrack figures.
    fn run(&self, tarpit: &Path, seconds: u64) -> anyhow::Result<Outcome> {
        let mut args: Vec<String> = ["--port", "8080", "--scanner-rdns", "false"]
            .map(String::from)
            .to_vec();
        match self.mode {
            Mode::Redirect => {
                self.in_sensor("iptables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 8080")?;
                args.extend(["--host", "0.0.0.0", "--ebpf-mode", "on"].map(String::from));
            }
            Mode::SkLookup => {
                let config = self.dir.path().join("tarpit.toml");
                std::fs::write(
                    &config,
                    "[server]\nhost = \"0.0.0.0\"\nports = \"1-65535\"\n",
                )?;
                args.extend(["--config".into(), config.display().to_string()]);
            }
        }
        let mut server = self.start_tarpit(tarpit, &args)?;
        let before = self.conntrack_count()?;
        let flood_log = self.dir.path().join("hping3.log");
        let mut flood = Command::new("ip")
            .args(["netns", "exec", &self.client, "timeout", "-s", "INT"])
            .arg(format!("{seconds}"))
            .args([
                "hping3",
                "-S",
                "--flood",
                "--rand-source",
                "-p",
                "++1024",
                SENSOR,
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&flood_log)?)
            .spawn()
            .context("starting hping3 (Debian's hping3; `cargo xtask ci-setup` installs it)")?;
        // The legitimate client starts once the flood is under way and stops with it.
        std::thread::sleep(Duration::from_secs(1));
        let probe = Command::new("ip")
            .args(["netns", "exec", &self.client])
            .arg(std::env::current_exe()?)
            .args(["bench-client", "--role", "probe", "--addr"])
            .arg(format!("{SENSOR}:8080"))
            .args(["--count", "0", "--index", "0", "--duration"])
            .arg(seconds.saturating_sub(2).max(1).to_string())
            .stderr(Stdio::inherit())
            .output()
            .context("running the legitimate client")?;
        let _ = flood.wait();
        let report: ClientReport = serde_json::from_slice(&probe.stdout)
            .with_context(|| String::from_utf8_lossy(&probe.stdout).into_owned())?;
        let conntrack_entries = self.conntrack_count()?.saturating_sub(before);
        let conntrack_max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let conntrack_drops = self.conntrack_drops()?;
        let _ = server.kill();
        let _ = server.wait();
        Ok(Outcome {
            mode: self.mode,
            syns_sent: syns_sent(&std::fs::read_to_string(&flood_log).unwrap_or_default()),
            probe: report,
            conntrack_entries,
            conntrack_max,
            conntrack_drops,
        })
    }

    fn start_tarpit(&self, tarpit: &Path, args: &[String]) -> anyhow::Result<std::process::Child> {
        let stderr: PathBuf = self.dir.path().join("tarpit.stderr");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.sensor])
            .arg(tarpit)
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(child);
            }
            if Instant::now() > deadline || text.contains("ERROR") {
                bail!("the tarpit did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn conntrack_count(&self) -> anyhow::Result<u64> {
        Ok(self
            .in_sensor("cat /proc/sys/net/netfilter/nf_conntrack_count")?
            .trim()
            .parse()?)
    }

    fn conntrack_drops(&self) -> anyhow::Result<(u64, u64, u64)> {
        let text = self.in_sensor("cat /proc/net/stat/nf_conntrack")?;
        Ok(conntrack_drops(&text))
    }
}

impl Drop for FloodLab {
    fn drop(&mut self) {
        for ns in [&self.sensor, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `drop`, `early_drop` and `insert_failed` summed over the CPUs of
/// `/proc/net/stat/nf_conntrack` (a header line of names, then one line of hex per CPU).
fn conntrack_drops(text: &str) -> (u64, u64, u64) {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return (0, 0, 0);
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &str| names.iter().position(|n| *n == name);
    let (drop, early, insert) = (
        column("drop"),
        column("early_drop"),
        column("insert_failed"),
    );
    let mut sums = (0, 0, 0);
    for line in lines {
        let values: Vec<u64> = line
            .split_whitespace()
            .map(|v| u64::from_str_radix(v, 16).unwrap_or(0))
            .collect();
        let at = |i: Option<usize>| i.and_then(|i| values.get(i).copied()).unwrap_or(0);
        sums.0 += at(drop);
        sums.1 += at(early);
        sums.2 += at(insert);
    }
    sums
}

/// hping3's own count, from the statistics it prints on SIGINT.
fn syns_sent(log: &str) -> Option<u64> {
    log.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn print(outcomes: &[Outcome], seconds: u64) {
    println!(
        "\nsynflood: {seconds} s of hping3 --flood --rand-source to every port, one legitimate"
    );
    println!("connection every 10 ms to a random port, 3 s each to be answered\n");
    println!(
        "| {:<34} | {:>14} | {:>14} |",
        "",
        outcomes.first().map_or("", |o| o.mode.name()),
        outcomes.get(1).map_or("", |o| o.mode.name())
    );
    println!("|{:-<36}|{:->16}|{:->16}|", "", "", "");
    let row = |label: &str, value: &dyn Fn(&Outcome) -> String| {
        let cells: Vec<String> = outcomes.iter().map(value).collect();
        println!(
            "| {label:<34} | {:>14} | {:>14} |",
            cells.first().map_or("", |c| c.as_str()),
            cells.get(1).map_or("", |c| c.as_str())
        );
    };
    row("SYNs sent by hping3", &|o| {
        o.syns_sent.map_or("?".into(), |n| n.to_string())
    });
    row("legitimate connections tried", &|o| {
        o.probe.opened.to_string()
    });
    row("answered", &|o| o.probe.cycles.to_string());
    row("lost: no connection in 3 s", &|o| {
        o.probe.connect_failed.to_string()
    });
    row("lost: connected, no answer in 3 s", &|o| {
        (o.probe.read_error + o.probe.eof).to_string()
    });
    row("conntrack entries at the end", &|o| {
        format!("{} / {}", o.conntrack_entries, o.conntrack_max)
    });
    row("conntrack drop / early_drop", &|o| {
        format!("{} / {}", o.conntrack_drops.0, o.conntrack_drops.1)
    });
    row("conntrack insert_failed", &|o| {
        o.conntrack_drops.2.to_string()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_conntrack_counters_and_hping3s_count() {
        let stat = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000010 00000003 00000000  00000000 00000000 00000000 00000000\n\
                    0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(conntrack_drops(stat), (17, 3, 3));
        let log = "--- 10.79.0.1 hping statistic ---\n1234567 packets transmitted, 0 packets received, 100% packet loss\n";
        assert_eq!(syns_sent(log), Some(1_234_567));
    }
}
