//! The writers' cost per recorded connection (`cargo xtask bench sinks`): the events of
//! churned connections (opened, one request, its response's end, closed: what a scanner that
//! reads the first byte and resets leaves behind) written by the SQLite sink and by the JSON
//! log in batches of the size a churn of 20,000 connections a second gathers in each sink's
//! linger (its `Sink::batching`), from 249 client addresses as `xtask bench churn` uses. CPU
//! time of the writing thread (no network), and for SQLite also of the WAL checkpointer the
//! tarpit runs beside it (the process's CPU while SQLite writes, less the writer's), so two
//! builds or settings compare to within a few per cent where a churn's figures move by a fifth
//! with the machine.
//! Prints µs of CPU per connection for each sink and each round.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tarpit::event::{ConnectionClosed, ConnectionOpened, Event, RequestRecord, ResponseEnd};
use tarpit::fingerprint::Fingerprint;
use tarpit::sink::Sink;
use tarpit::sink::jsonl::JsonLinesSink;
use tarpit::sink::sqlite::SqliteSink;

/// The churn whose batches the bench writes: 20,000 connections a second.
const CONNECTIONS_PER_SECOND: f64 = 20_000.0;

/// Connections in each of `sink`'s batches at that rate: what gathers over its linger, or a
/// full batch (four events a connection).
fn per_batch(sink: &dyn Sink) -> u64 {
    let batching = sink.batching();
    let gathered = (batching.linger.as_secs_f64() * CONNECTIONS_PER_SECOND) as u64;
    gathered.min(batching.max_events as u64 / 4).max(1)
}

/// The request a churn's client sends, as the pipeline records it.
fn request(conn_id: u64, client_ip: IpAddr, timestamp: SystemTime) -> RequestRecord {
    let fingerprint = Fingerprint {
        syn_ttl: Some(64),
        syn_initial_ttl: Some(64),
        syn_df: Some(true),
        syn_window: Some(65495),
        syn_mss: Some(65495),
        syn_wscale: Some(7),
        syn_options: Some("mss,sok,ts,nop,ws".into()),
        syn_fp: Some("4:64:1:65495:65495:7:mss,sok,ts,nop,ws".into()),
        header_order: Some("host,user-agent".into()),
        header_order_hash: Some("2f1d3c8a9b7e6f50".into()),
        ..Fingerprint::default()
    };
    let port = 40_000 + (conn_id % 20_000) as u16;
    let mut request = RequestRecord::sample(client_ip);
    request.conn_id = conn_id;
    request.timestamp = timestamp;
    request.client_port = Some(port);
    request.peer_port = port;
    request.local_ip = Ipv4Addr::LOCALHOST.into();
    (request.target_port, request.target_port_source) = (8080, "socket");
    (request.target_port_ebpf, request.ebpf_lookup) = (None, Some("untranslated"));
    request.target_port_original_dst = Some(8080);
    request.http_path = Some("/bench".into());
    request.http_query = None;
    request.user_agent = Some("tarpit-bench".into());
    request.headers_json = vec![
        ("Host".into(), "bench".into()),
        ("User-Agent".into(), "tarpit-bench".into()),
    ];
    request.head_size = 63;
    request.fingerprint = Some(Box::new(fingerprint));
    request
}

/// The four events of churned connection `conn_id`, in the order a churn's sinks see them.
fn connection(conn_id: u64, start: SystemTime) -> [Arc<Event>; 4] {
    let client_ip: IpAddr = Ipv4Addr::new(127, 0, 0, 2 + (conn_id % 249) as u8).into();
    let opened = start + Duration::from_micros(50 * conn_id);
    let closed = opened + Duration::from_millis(2);
    [
        Event::ConnectionOpened(ConnectionOpened {
            conn_id,
            timestamp: opened,
            peer_ip: client_ip,
            peer_port: 40_000 + (conn_id % 20_000) as u16,
            local_ip: Ipv4Addr::LOCALHOST.into(),
            local_port: 8080,
            worker: (conn_id % 2) as usize,
        }),
        Event::Request(Box::new(request(conn_id, client_ip, opened))),
        Event::ResponseEnd(ResponseEnd {
            conn_id,
            request_seq: 1,
            closed_at: closed,
            bytes_sent: 131,
            duration_s: 0.002,
            end_reason: "client_reset",
            client_fin_s: None,
        }),
        Event::ConnectionClosed(ConnectionClosed {
            conn_id,
            closed_at: closed,
            requests: 1,
            bytes_sent: 131,
            duration_s: 0.002,
            end_reason: "client_reset",
        }),
    ]
    .map(Arc::new)
}

/// CPU time of `clock` (the calling thread's or the process's).
fn cpu(clock: libc::clockid_t) -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(clock, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Writes `connections` churned connections through `sink` in batches; returns µs of this
/// thread's CPU per connection, and of the other threads' (the checkpointer's).
fn run(sink: &mut dyn Sink, first: u64, connections: u64) -> (f64, f64) {
    let start = SystemTime::now();
    let per_batch = per_batch(sink);
    let batches: Vec<Vec<Arc<Event>>> = (0..connections / per_batch)
        .map(|b| {
            let from = first + b * per_batch;
            (from..from + per_batch)
                .flat_map(|id| connection(id, start))
                .collect()
        })
        .collect();
    let (thread, process) = (
        cpu(libc::CLOCK_THREAD_CPUTIME_ID),
        cpu(libc::CLOCK_PROCESS_CPUTIME_ID),
    );
    for batch in &batches {
        sink.write_batch(batch).expect("the batch is written");
    }
    let thread = cpu(libc::CLOCK_THREAD_CPUTIME_ID) - thread;
    let others = (cpu(libc::CLOCK_PROCESS_CPUTIME_ID) - process).saturating_sub(thread);
    let per_connection = |d: Duration| d.as_secs_f64() * 1e6 / connections as f64;
    (per_connection(thread), per_connection(others))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let per_round: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let mut conn = tarpit::db::open(&path)?;
    let checkpointer = tarpit::db::checkpoint::Checkpointer::start(&path)?;
    checkpointer.attach(&mut conn)?;
    let mut sqlite = SqliteSink::new(conn, "bench");
    let mut jsonl = JsonLinesSink::open(&dir.path().join("bench.jsonl"), "bench")?;
    println!(
        "round  sqlite µs/connection  checkpointer µs/connection  jsonl µs/connection  \
         ({per_round} connections a round; batches of {} and {} connections)",
        per_batch(&sqlite),
        per_batch(&jsonl),
    );
    for round in 0..rounds {
        let first = 1 + round * per_round;
        let (sqlite_us, checkpointer_us) = run(&mut sqlite, first, per_round);
        let (jsonl_us, _) = run(&mut jsonl, first, per_round);
        println!("{round:5}  {sqlite_us:20.2}  {checkpointer_us:26.2}  {jsonl_us:19.2}");
    }
    checkpointer.stop();
    Ok(())
}
