//! A tiny DNS server for tests (RFC 1035 message format, UDP): it answers PTR, A and AAAA
//! questions from a table (NXDOMAIN for a name it does not know), inside a network
//! namespace, so the tarpit's real resolver path (glibc, `/etc/resolv.conf`) is exercised
//! without any traffic leaving the test's namespaces.

use std::net::{IpAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One record of the table.
#[derive(Debug, Clone)]
pub enum Record {
    /// `name` PTR `target`: give the reverse name (`2.0.77.10.in-addr.arpa`) as the name.
    Ptr(String),
    /// An address record (A or AAAA by its family).
    Address(IpAddr),
}

/// The running server; stops on drop.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reverse name of an IPv4 address (`10.77.0.2` → `2.0.77.10.in-addr.arpa`).
pub fn reverse_name(ip: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

/// Starts the server on 127.0.0.1:53 inside `netns`, answering from `records`.
pub fn start_in_netns(netns: &str, records: Vec<(String, Record)>) -> DnsServer {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let path = format!("/var/run/netns/{netns}");
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("the namespace exists");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = UdpSocket::bind("127.0.0.1:53").expect("port 53 in the namespace");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buffer = [0u8; 512];
        while !stopping.load(Ordering::Relaxed) {
            let Ok((length, from)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            if let Some(answer) = answer(&buffer[..length], &records) {
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("the DNS server started");
    DnsServer {
        stop,
        thread: Some(thread),
    }
}

/// The response to one query, or `None` for something that is not one.
fn answer(query: &[u8], records: &[(String, Record)]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = usize::from(*query.get(at)?);
        at += 1;
        if length == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_ascii_lowercase());
        at += length;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let name = labels.join(".");
    let known: Vec<&Record> = records
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
        .map(|(_, r)| r)
        .collect();
    let mut answers = Vec::new();
    let mut count = 0u16;
    for record in &known {
        let (kind, data) = match (record, qtype) {
            (Record::Ptr(target), 12) => (12u16, encode_name(target)),
            (Record::Address(IpAddr::V4(v4)), 1) => (1, v4.octets().to_vec()),
            (Record::Address(IpAddr::V6(v6)), 28) => (28, v6.octets().to_vec()),
            _ => continue,
        };
        answers.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        answers.extend_from_slice(&kind.to_be_bytes());
        answers.extend_from_slice(&[0, 1, 0, 0, 0, 60]); // class IN, TTL 60
        answers.extend_from_slice(&(data.len() as u16).to_be_bytes());
        answers.extend_from_slice(&data);
        count += 1;
    }
    let rcode = if known.is_empty() { 3 } else { 0 }; // NXDOMAIN for an unknown name
    let mut response = Vec::with_capacity(question_end + answers.len());
    response.extend_from_slice(&query[0..2]); // id
    response.extend_from_slice(&[0x85, 0x80 | rcode]); // QR, AA, RD; RA; rcode
    response.extend_from_slice(&[0, 1]);
    response.extend_from_slice(&count.to_be_bytes());
    response.extend_from_slice(&[0, 0, 0, 0]);
    response.extend_from_slice(&query[12..question_end]);
    response.extend_from_slice(&answers);
    Some(response)
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}
