//! Reverse DNS with forward confirmation, off the hot path: an address whose PTR name lies
//! under a catalogued scanner domain, and whose name resolves back to the address, is that
//! organisation's scanner.
//!
//! Lookups run on the blocking pool of the pipeline's runtime (the C library's resolver, so
//! `/etc/hosts`, `nsswitch.conf` and the system's DNS servers apply), at most `concurrency`
//! at once, each given up after `timeout`; verdicts are kept in a bounded LRU cache. Nothing
//! waits for a lookup: a request recorded before its address's verdict is tagged afterwards
//! (the verdict goes to the sinks as [`crate::event::ScannerHost`]).
//!
//! Against crafted traffic:
//! - a PTR record is the address owner's to write, so it proves nothing alone: only a name
//!   that resolves back to the address counts, and the forward zone is the organisation's;
//! - one address sending thousands of requests makes one lookup (cached; a failed lookup is
//!   retried only after [`RETRY_FAILED`]);
//! - thousands of addresses (an IPv6 range) make at most `concurrency` lookups at a time:
//!   when every slot is busy the address is simply not looked up now (tried again on a later
//!   request), so no queue grows; the cache holds at most `cache_size` verdicts;
//! - a resolver made slow on purpose (a PTR zone that never answers) holds a slot for
//!   `timeout` at most as far as the pipeline is concerned; the blocked thread keeps its slot
//!   until the C library returns, so threads stay bounded too. The cost: real scanners seen
//!   meanwhile go unverified and are treated as any other client (unless their published
//!   ranges say otherwise); nothing is ever left out of sharing for want of an answer.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::catalog::Catalog;

/// A failed lookup (timeout, resolver error) is tried again after this long.
pub const RETRY_FAILED: Duration = Duration::from_secs(600);

/// The resolver the verifier asks: the system's, or a test's.
pub trait Resolver: Send + Sync + 'static {
    /// The address's PTR name, `Ok(None)` when it has none.
    fn reverse(&self, ip: IpAddr) -> std::io::Result<Option<String>>;
    /// The addresses a name resolves to.
    fn forward(&self, name: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The C library's resolver (`getnameinfo`, `getaddrinfo`), through `dns-lookup`.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn reverse(&self, ip: IpAddr) -> std::io::Result<Option<String>> {
        match dns_lookup::lookup_addr(&ip) {
            Ok(name) if name.parse::<IpAddr>().is_err() => Ok(Some(name)),
            Ok(_) => Ok(None),
            // EAI_NONAME: no PTR record; other kinds are failures (retried later).
            Err(e) if matches!(e.kind(), dns_lookup::LookupErrorKind::NoName) => Ok(None),
            Err(e) => Err(std::io::Error::other(format!("{:?}", e.kind()))),
        }
    }

    fn forward(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        match dns_lookup::lookup_host(name) {
            Ok(addresses) => Ok(addresses.collect()),
            Err(e) if matches!(e.kind(), dns_lookup::LookupErrorKind::NoName) => Ok(Vec::new()),
            Err(e) => Err(std::io::Error::other(format!("{:?}", e.kind()))),
        }
    }
}

/// What a lookup found about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The organisation's scanner: its confirmed host name.
    Scanner {
        /// Index of the organisation in the catalogue.
        org: usize,
        /// The PTR name that resolved back to the address.
        host: String,
    },
    /// Not a catalogued scanner (no name, a name elsewhere, or one that does not resolve back).
    NotScanner,
    /// The lookup failed or timed out (tried again after [`RETRY_FAILED`]).
    Failed,
}

#[derive(Debug, Clone)]
enum Entry {
    Pending,
    Done(Verdict, Instant),
}

/// Counters of the verifier's work, for the metrics and tests.
#[derive(Debug, Default)]
pub struct VerifierStats {
    /// Lookups started.
    pub started: std::sync::atomic::AtomicU64,
    /// Addresses not looked up because every slot was busy.
    pub busy: std::sync::atomic::AtomicU64,
    /// PTR names under a scanner domain that did not resolve back (spoofed or stale).
    pub unconfirmed: std::sync::atomic::AtomicU64,
}

/// The verifier: shared by the pipeline's scanner stage (starts lookups, reads verdicts) and
/// the AbuseIPDB reporter (waits for a pending verdict before reporting).
pub struct Verifier {
    catalog: Arc<Catalog>,
    resolver: Arc<dyn Resolver>,
    cache: Mutex<LruCache<IpAddr, Entry>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    ttl: Duration,
    settled: Notify,
    /// Verdicts that name a scanner, for the pipeline to record.
    found: mpsc::Sender<(IpAddr, Verdict)>,
    /// What it did.
    pub stats: VerifierStats,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The verifier's limits, from `[scanners]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Lookups at once.
    pub concurrency: usize,
    /// Verdicts kept.
    pub cache_size: usize,
    /// How long one lookup may take.
    pub timeout: Duration,
    /// How long a verdict is kept.
    pub ttl: Duration,
}

impl Verifier {
    /// A verifier; scanner verdicts arrive on the returned receiver.
    pub fn new(
        catalog: Arc<Catalog>,
        resolver: Arc<dyn Resolver>,
        limits: Limits,
    ) -> (Arc<Self>, mpsc::Receiver<(IpAddr, Verdict)>) {
        let (found, received) = mpsc::channel(1024);
        let cache_size = NonZeroUsize::new(limits.cache_size.max(1)).expect("at least one");
        let verifier = Arc::new(Self {
            catalog,
            resolver,
            cache: Mutex::new(LruCache::new(cache_size)),
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            timeout: limits.timeout,
            ttl: limits.ttl,
            settled: Notify::new(),
            found,
            stats: VerifierStats::default(),
        });
        (verifier, received)
    }

    /// The verdict known for `ip` now; starts a lookup (on the current tokio runtime) when
    /// there is none, or it is stale, and a slot is free. `None`: not known (yet).
    pub fn verdict_or_lookup(self: &Arc<Self>, ip: IpAddr) -> Option<Verdict> {
        let ip = ip.to_canonical();
        if ip.is_loopback() || ip.is_unspecified() {
            // No scanner comes from this host: no lookup (nor DNS traffic) for local clients.
            return Some(Verdict::NotScanner);
        }
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().expect("verifier cache");
            match cache.get(&ip) {
                Some(Entry::Pending) => return None,
                Some(Entry::Done(verdict, at)) if !self.stale(verdict, *at, now) => {
                    return Some(verdict.clone());
                }
                _ => {}
            }
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.stats
                    .busy
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            };
            cache.put(ip, Entry::Pending);
            self.stats
                .started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let verifier = self.clone();
            tokio::spawn(async move {
                let worker = verifier.clone();
                let lookup = tokio::task::spawn_blocking(move || {
                    let _slot = slot; // held until the C library returns
                    worker.resolve(ip)
                });
                let verdict = match tokio::time::timeout(verifier.timeout, lookup).await {
                    Ok(Ok(verdict)) => verdict,
                    _ => Verdict::Failed,
                };
                verifier.settle(ip, verdict);
            });
        }
        None
    }

    /// The verdict for `ip`, waiting for a lookup in flight (at most the lookup timeout);
    /// `None` when no lookup was made (every slot was busy).
    pub async fn settled(&self, ip: IpAddr) -> Option<Verdict> {
        let ip = ip.to_canonical();
        let deadline = tokio::time::Instant::now() + self.timeout + Duration::from_millis(100);
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.cache.lock().expect("verifier cache").peek(&ip) {
                Some(Entry::Done(verdict, _)) => return Some(verdict.clone()),
                Some(Entry::Pending) => {}
                None => return None,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Some(Verdict::Failed);
            }
        }
    }

    fn stale(&self, verdict: &Verdict, at: Instant, now: Instant) -> bool {
        let keep = match verdict {
            Verdict::Failed => RETRY_FAILED,
            _ => self.ttl,
        };
        now.saturating_duration_since(at) >= keep
    }

    fn settle(&self, ip: IpAddr, verdict: Verdict) {
        self.cache
            .lock()
            .expect("verifier cache")
            .put(ip, Entry::Done(verdict.clone(), Instant::now()));
        self.settled.notify_waiters();
        if matches!(verdict, Verdict::Scanner { .. }) {
            // Bounded: a full queue loses only the back-tagging of earlier rows.
            let _ = self.found.try_send((ip, verdict));
        }
    }

    /// The lookup itself (blocking): PTR, then the forward check of a name under a scanner
    /// domain. Names elsewhere are never resolved forward.
    fn resolve(&self, ip: IpAddr) -> Verdict {
        let name = match self.resolver.reverse(ip) {
            Ok(Some(name)) => name,
            Ok(None) => return Verdict::NotScanner,
            Err(_) => return Verdict::Failed,
        };
        let Some(org) = self.catalog.org_by_host(&name) else {
            return Verdict::NotScanner;
        };
        match self.resolver.forward(&name) {
            Ok(addresses) if addresses.iter().any(|a| a.to_canonical() == ip) => Verdict::Scanner {
                org,
                host: name.trim_end_matches('.').to_ascii_lowercase(),
            },
            Ok(_) => {
                self.stats
                    .unconfirmed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Verdict::NotScanner
            }
            Err(_) => Verdict::Failed,
        }
    }
}

#[cfg(test)]
mod tests;
