use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A resolver answering from two tables, optionally slowly, counting its calls.
#[derive(Default)]
struct FakeResolver {
    ptr: HashMap<IpAddr, String>,
    a: HashMap<String, Vec<IpAddr>>,
    delay: Duration,
    reverse_calls: AtomicU64,
    forward_calls: AtomicU64,
}

impl Resolver for FakeResolver {
    fn reverse(&self, ip: IpAddr) -> std::io::Result<Option<String>> {
        self.reverse_calls.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.delay);
        Ok(self.ptr.get(&ip).cloned())
    }

    fn forward(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        self.forward_calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.a.get(name).cloned().unwrap_or_default())
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn limits(concurrency: usize, cache_size: usize, timeout: Duration) -> Limits {
    Limits {
        concurrency,
        cache_size,
        timeout,
        ttl: Duration::from_secs(3600),
    }
}

fn verifier(
    resolver: FakeResolver,
    limits: Limits,
) -> (
    Arc<Verifier>,
    Arc<FakeResolver>,
    mpsc::Receiver<(IpAddr, Verdict)>,
) {
    let resolver = Arc::new(resolver);
    let (v, rx) = Verifier::new(Arc::new(Catalog::builtin()), resolver.clone(), limits);
    (v, resolver, rx)
}

fn org(v: &Verifier, verdict: &Verdict) -> String {
    match verdict {
        Verdict::Scanner { org, .. } => v.catalog.org(*org).id.clone(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn a_confirmed_name_verifies_and_a_spoofed_ptr_does_not() {
    let mut r = FakeResolver::default();
    // A real Shadowserver host: PTR and A agree.
    r.ptr
        .insert(ip("184.105.139.70"), "scan-70.shadowserver.org.".into());
    r.a.insert(
        "scan-70.shadowserver.org.".into(),
        vec![ip("184.105.139.70")],
    );
    // An attacker's address whose PTR (theirs to write) claims Shadowserver: the forward
    // zone is Shadowserver's and does not point back.
    r.ptr
        .insert(ip("203.0.113.9"), "scan-70.shadowserver.org".into());
    r.a.insert(
        "scan-70.shadowserver.org".into(),
        vec![ip("184.105.139.70")],
    );
    // A name outside every scanner domain is never resolved forward.
    r.ptr.insert(ip("198.51.100.1"), "host.example.net".into());
    let (v, resolver, mut found) = verifier(r, limits(4, 100, Duration::from_secs(5)));
    for address in ["184.105.139.70", "203.0.113.9", "198.51.100.1", "192.0.2.1"] {
        assert_eq!(
            v.verdict_or_lookup(ip(address)),
            None,
            "nothing known at first"
        );
    }
    let real = v.settled(ip("184.105.139.70")).await.unwrap();
    assert_eq!(org(&v, &real), "shadowserver");
    assert_eq!(
        real,
        Verdict::Scanner {
            org: real_org(&v, &real),
            host: "scan-70.shadowserver.org".into()
        }
    );
    assert_eq!(
        v.settled(ip("203.0.113.9")).await,
        Some(Verdict::NotScanner)
    );
    assert_eq!(
        v.settled(ip("198.51.100.1")).await,
        Some(Verdict::NotScanner)
    );
    assert_eq!(v.settled(ip("192.0.2.1")).await, Some(Verdict::NotScanner));
    assert_eq!(v.stats.unconfirmed.load(Ordering::Relaxed), 1);
    assert_eq!(
        resolver.forward_calls.load(Ordering::Relaxed),
        2,
        "only the scanner-domain names"
    );
    // Only the scanner verdict is sent on for recording.
    let (address, verdict) = found.recv().await.unwrap();
    assert_eq!(
        (address, org(&v, &verdict)),
        (ip("184.105.139.70"), "shadowserver".into())
    );
    assert!(found.try_recv().is_err());
    // Known now, without another lookup (an IPv4-mapped spelling is the same address).
    assert_eq!(v.verdict_or_lookup(ip("::ffff:184.105.139.70")), Some(real));
}

fn real_org(_v: &Verifier, verdict: &Verdict) -> usize {
    match verdict {
        Verdict::Scanner { org, .. } => *org,
        _ => panic!("not a scanner"),
    }
}

#[tokio::test]
async fn one_address_sending_thousands_of_requests_costs_one_lookup() {
    let mut r = FakeResolver::default();
    r.ptr
        .insert(ip("203.0.113.5"), "a.censys-scanner.com".into());
    r.a.insert("a.censys-scanner.com".into(), vec![ip("203.0.113.6")]);
    let (v, resolver, _found) = verifier(r, limits(4, 100, Duration::from_secs(5)));
    for _ in 0..5_000 {
        v.verdict_or_lookup(ip("203.0.113.5"));
    }
    assert_eq!(
        v.settled(ip("203.0.113.5")).await,
        Some(Verdict::NotScanner)
    );
    for _ in 0..5_000 {
        assert_eq!(
            v.verdict_or_lookup(ip("203.0.113.5")),
            Some(Verdict::NotScanner)
        );
    }
    assert_eq!(resolver.reverse_calls.load(Ordering::Relaxed), 1);
    assert_eq!(v.stats.started.load(Ordering::Relaxed), 1);
    // Local clients are never looked up.
    assert_eq!(
        v.verdict_or_lookup(ip("127.0.0.9")),
        Some(Verdict::NotScanner)
    );
    assert_eq!(v.verdict_or_lookup(ip("::1")), Some(Verdict::NotScanner));
    assert_eq!(resolver.reverse_calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn thousands_of_addresses_never_make_more_lookups_at_once_than_the_slots() {
    let r = FakeResolver {
        // Long enough that no lookup ends while the loop runs, even on a loaded machine.
        delay: Duration::from_secs(2),
        ..Default::default()
    };
    let (v, resolver, _found) = verifier(r, limits(4, 64, Duration::from_secs(5)));
    for n in 0..3_000u32 {
        let address = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (n >> 16) as u16, n as u16]);
        assert_eq!(v.verdict_or_lookup(address), None);
    }
    assert_eq!(
        v.stats.started.load(Ordering::Relaxed),
        4,
        "one lookup per slot"
    );
    assert_eq!(v.stats.busy.load(Ordering::Relaxed), 2_996);
    // Once they are done, the cache is bounded by its size whatever the flood.
    for n in 0..4u32 {
        let address = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16]);
        assert_eq!(v.settled(address).await, Some(Verdict::NotScanner));
    }
    for n in 0..3_000u32 {
        let address = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, (n >> 16) as u16, n as u16]);
        v.verdict_or_lookup(address);
        tokio::task::yield_now().await;
    }
    assert!(v.cache.lock().unwrap().len() <= 64);
    assert!(resolver.reverse_calls.load(Ordering::Relaxed) <= 3_004);
}

#[tokio::test]
async fn a_resolver_that_never_answers_is_given_up_and_retried_only_later() {
    let mut r = FakeResolver {
        delay: Duration::from_secs(3),
        ..Default::default()
    };
    r.ptr.insert(ip("203.0.113.7"), "x.shodan.io".into());
    r.a.insert("x.shodan.io".into(), vec![ip("203.0.113.7")]);
    let (v, resolver, _found) = verifier(r, limits(1, 10, Duration::from_millis(100)));
    assert_eq!(v.verdict_or_lookup(ip("203.0.113.7")), None);
    assert_eq!(v.settled(ip("203.0.113.7")).await, Some(Verdict::Failed));
    // Failed verdicts stand for RETRY_FAILED: no new lookup now...
    assert_eq!(
        v.verdict_or_lookup(ip("203.0.113.7")),
        Some(Verdict::Failed)
    );
    // ...and the slot stays taken until the C library returns: another address waits.
    assert_eq!(v.verdict_or_lookup(ip("203.0.113.8")), None);
    assert_eq!(v.stats.busy.load(Ordering::Relaxed), 1);
    assert_eq!(resolver.reverse_calls.load(Ordering::Relaxed), 1);
}
