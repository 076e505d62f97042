//! The load generator, run as `xtask bench-client` in child processes: holding connections
//! (`hold`) or connect-request-close loops (`churn`), reporting latencies back as JSON.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{ClientReport, merge};

/// The load generator, run as `xtask bench-client` in a child process.
pub fn client(
    role: &str,
    addr: SocketAddr,
    (count, index): (u64, u64),
    duration: u64,
    ramp_rate: u64,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async move {
        match role {
            "hold" => hold_client(addr, (count, index), duration, ramp_rate).await,
            "churn" => churn_client(addr, count, index, duration).await,
            "probe" => probe_client(addr, duration).await,
            other => bail!("unknown role {other}"),
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Source address for connection `n` of client `index`: spread over 127.0.0.2-127.0.0.250.
fn source(index: u64, n: u64) -> IpAddr {
    let spread = (index * 7919 + n) % 249;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + spread as u8))
}

async fn connect_from(addr: SocketAddr, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

async fn wait_for_go() {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .ok();
}

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: tarpit-bench\r\n\r\n";

/// Holds `count` connections; opens at most `ramp_rate` a second (0: as fast as 256 at a time
/// go), so a server that moves connections off their sockets after a tick is not asked for
/// more sockets at once than it has.
async fn hold_client(
    addr: SocketAddr,
    (count, index): (u64, u64),
    duration: u64,
    ramp_rate: u64,
) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = Arc::new(tokio::sync::Notify::new());
    let hold_started = Arc::new(std::sync::OnceLock::<Instant>::new());
    let ramped = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let ramp_start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for n in 0..count {
        let start_at = (ramp_rate > 0)
            .then(|| ramp_start + Duration::from_micros(n * 1_000_000 / ramp_rate.max(1)));
        let (go, hold_started, ramped, limit) = (
            go.clone(),
            hold_started.clone(),
            ramped.clone(),
            limit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut r = ClientReport::default();
            if let Some(at) = start_at {
                tokio::time::sleep_until(at).await;
            }
            let permit = limit.acquire_owned().await.expect("open semaphore");
            let t0 = Instant::now();
            let stream = connect_from(addr, source(index, n)).await;
            let Ok(mut stream) = stream else {
                r.connect_failed = 1;
                ramped.fetch_add(1, Ordering::Relaxed);
                return r;
            };
            r.opened = 1;
            let _ramp_connect = t0.elapsed();
            let mut buf = [0u8; 512];
            if stream.write_all(REQUEST).await.is_err() {
                r.read_error = 1;
                ramped.fetch_add(1, Ordering::Relaxed);
                return r;
            }
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => {
                    r.eof = 1;
                    ramped.fetch_add(1, Ordering::Relaxed);
                    return r;
                }
            }
            drop(permit);
            ramped.fetch_add(1, Ordering::Relaxed);
            go.notified().await;
            let start = *hold_started.get().expect("set before notify");
            let end = start + Duration::from_secs(duration);
            let mut last = None;
            loop {
                let read = tokio::time::timeout_at(end.into(), stream.read(&mut buf)).await;
                match read {
                    Err(_) => break, // the hold window ended
                    Ok(Ok(0)) => {
                        r.eof = 1;
                        return r;
                    }
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        if let Some(previous) = last {
                            let gap: Duration = now - previous;
                            r.gap_us.push(gap.as_micros() as u32);
                        }
                        last = Some(now);
                    }
                    Ok(Err(_)) => {
                        r.read_error = 1;
                        return r;
                    }
                }
            }
            // Held: still open and receiving in the last few seconds of the window.
            if last.is_some_and(|l| end.duration_since(l) < Duration::from_secs(5)) {
                r.held = 1;
            }
            r
        }));
    }
    // Ramp: wait until every connection has its first byte (or failed), bounded in time.
    let deadline = Instant::now() + Duration::from_secs(180);
    while ramped.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready");
    std::io::stdout().flush()?;
    wait_for_go().await;
    hold_started.set(Instant::now()).ok();
    go.notify_waiters();
    // Latency under load: while the connections are held, a few probes spaced over the window
    // time connect and request -> first byte (the ramp would measure the client's own burst).
    let probes = tokio::spawn(probe_latency(addr, index, duration));
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    all.push(probes.await??);
    Ok(merge(all))
}

/// Probe connections during the hold: connect, request, first byte, close, 25 per process.
async fn probe_latency(
    addr: SocketAddr,
    index: u64,
    duration: u64,
) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PROBES: u64 = 25;
    let mut r = ClientReport::default();
    let spacing = Duration::from_millis(duration * 1000 / (PROBES + 1));
    for n in 0..PROBES {
        tokio::time::sleep(spacing).await;
        let t0 = Instant::now();
        let Ok(mut stream) = connect_from(addr, source(index + 1000, n)).await else {
            r.connect_failed += 1;
            continue;
        };
        r.connect_us.push(t0.elapsed().as_micros() as u32);
        let t1 = Instant::now();
        let mut buf = [0u8; 512];
        if stream.write_all(REQUEST).await.is_ok()
            && matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        {
            r.ttfb_us.push(t1.elapsed().as_micros() as u32);
        }
        let _ = stream.set_zero_linger();
    }
    Ok(r)
}

async fn churn_client(
    addr: SocketAddr,
    workers: u64,
    index: u64,
    duration: u64,
) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    println!("ready");
    std::io::stdout().flush()?;
    wait_for_go().await;
    let end = Instant::now() + Duration::from_secs(duration);
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut r = ClientReport::default();
            let mut n = w * 1_000_003;
            let mut buf = [0u8; 1024];
            while Instant::now() < end {
                n += 1;
                let t0 = Instant::now();
                let Ok(mut stream) = connect_from(addr, source(index, n)).await else {
                    r.connect_failed += 1;
                    continue;
                };
                r.connect_us.push(t0.elapsed().as_micros() as u32);
                let t1 = Instant::now();
                if stream.write_all(REQUEST).await.is_err() {
                    r.read_error += 1;
                    continue;
                }
                // Read until the first body byte (after the blank line that ends the head).
                let mut seen = Vec::with_capacity(256);
                let got_body = loop {
                    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
                    {
                        Ok(Ok(0)) | Err(_) => break false,
                        Ok(Ok(k)) => {
                            seen.extend_from_slice(&buf[..k]);
                            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n")
                                && seen.len() > end + 4
                            {
                                break true;
                            }
                        }
                        Ok(Err(_)) => break false,
                    }
                };
                if got_body {
                    r.ttfb_us.push(t1.elapsed().as_micros() as u32);
                    r.cycles += 1;
                } else {
                    r.eof += 1;
                }
                // Close with RST, as many scanners do; avoids client-side TIME_WAIT pile-up.
                let _ = stream.set_zero_linger();
                drop(stream);
            }
            r
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    Ok(merge(all))
}

/// `bench synflood`'s legitimate client: for `duration` seconds, one new connection every
/// 10 ms to a pseudo-random port of `addr`'s host (ports 1024-65535 but `addr`'s own), each
/// given 3 s to connect and answer `HTTP/1.1`; `cycles` counts the answered ones, the failure
/// counters the lost ones (a connect that never completes is `connect_failed`).
async fn probe_client(addr: SocketAddr, duration: u64) -> anyhow::Result<ClientReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PATIENCE: Duration = Duration::from_secs(3);
    let mut tasks = Vec::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let end = Instant::now() + Duration::from_secs(duration);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < end {
        tick.tick().await;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 1024 + (state % 64_512) as u16;
        if port == addr.port() {
            continue;
        }
        let to = SocketAddr::new(addr.ip(), port);
        tasks.push(tokio::spawn(async move {
            let mut r = ClientReport {
                opened: 1,
                ..ClientReport::default()
            };
            let t0 = Instant::now();
            let Ok(Ok(mut stream)) =
                tokio::time::timeout(PATIENCE, tokio::net::TcpStream::connect(to)).await
            else {
                r.connect_failed = 1;
                return r;
            };
            r.connect_us.push(t0.elapsed().as_micros() as u32);
            let mut first = [0u8; 8];
            let answered = tokio::time::timeout(PATIENCE, async {
                stream.write_all(REQUEST).await?;
                stream.read_exact(&mut first).await
            })
            .await;
            match answered {
                Ok(Ok(_)) if &first == b"HTTP/1.1" => r.cycles = 1,
                _ => r.read_error = 1,
            }
            let _ = stream.set_zero_linger();
            r
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    Ok(merge(all))
}
