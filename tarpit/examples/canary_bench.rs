//! The cost of the canary token search on the pipeline, per request (`cargo xtask bench
//! canary`, pinned to one core): on every request of the classification corpora (sqlmap,
//! wfuzz, wapiti and dirb payloads and word lists from Debian packages, `common/corpora.rs`)
//! and on requests that carry an issued token (in the path, the query, a cookie, Basic
//! credentials, a form body), with 100,002 issued tokens in the index; beside it, in the same
//! run, what the pipeline already pays for the same requests (decoding them, and the built-in
//! classification rules). The bar: 2 µs per request for the search.

use std::time::{Duration, Instant};

use base64::Engine as _;
use tarpit::canary::{KINDS, Minter, Recipient, TokenIndex};
use tarpit::classify::Classifier;
use tarpit::classify::normalize::Fields;

// Shared with `classify_eval`, which reads the labels this bench does not need.
#[allow(dead_code)]
#[path = "common/corpora.rs"]
mod corpora;

use corpora::{BROWSER, Sample, benign_sets, labelled_sets};

/// Nanoseconds per call of `f` over `items`, run round-robin for `seconds`.
fn per_item<T>(items: &[T], seconds: f64, mut f: impl FnMut(&T) -> usize) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let (mut calls, mut sink) = (0u64, 0usize);
    while Instant::now() < until {
        for item in items {
            sink = sink.wrapping_add(f(item));
        }
        calls += items.len() as u64;
    }
    std::hint::black_box(sink);
    started.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let minter = Minter::new(b"a benchmark key, not a secret", "bench").unwrap();
    let mut index = TokenIndex::new(200_000);
    let clients = 100_000 / KINDS.len() as u32 + 1;
    let recipient = |n: u32, kind| Recipient {
        client_ip: std::net::Ipv4Addr::from(0x0A00_0000 + n).into(),
        kind,
        ordinal: 0,
    };
    for n in 0..clients {
        for kind in KINDS {
            let recipient = recipient(n, kind);
            index.insert(
                minter.token(&recipient),
                tarpit::canary::Issued {
                    sensor: "bench".into(),
                    recipient,
                    first_issued: std::time::SystemTime::now(),
                    path: "/.env".into(),
                },
            );
        }
    }
    let mut corpus: Vec<Sample> = benign_sets().into_iter().flat_map(|(_, s, _)| s).collect();
    corpus.extend(labelled_sets().into_iter().flat_map(|s| s.samples));
    // Requests that send a token back, each way a client would.
    let carriers: Vec<Sample> = (0..1000u32)
        .map(|n| {
            let token = minter.token(&recipient(n * 7 % clients, KINDS[n as usize % KINDS.len()]));
            let token = std::str::from_utf8(token.as_bytes()).unwrap().to_owned();
            match n % 4 {
                0 => Sample::new(&format!("/old-site-{token}/"), None, BROWSER),
                1 => Sample::new("/admin/", Some(format!("key={token}&x=1")), BROWSER),
                2 => {
                    let mut s = Sample::new("/admin/", None, BROWSER);
                    s.headers
                        .push(("Cookie".into(), format!("lang=en; PHPSESSID={token}")));
                    s
                }
                _ => {
                    let mut s = Sample::new("/admin/", None, BROWSER);
                    let basic =
                        base64::engine::general_purpose::STANDARD.encode(format!("ops:{token}"));
                    s.headers
                        .push(("Authorization".into(), format!("Basic {basic}")));
                    s
                }
            }
        })
        .collect();
    let decoded = |samples: &[Sample]| -> Vec<Fields> {
        samples.iter().map(|s| Fields::of(&s.view())).collect()
    };
    let (corpus_fields, carrier_fields) = (decoded(&corpus), decoded(&carriers));
    let found: usize = carrier_fields
        .iter()
        .map(|f| tarpit::canary::search::find(&index, f).len())
        .sum();
    assert_eq!(found, carriers.len(), "every carried token is found");
    let search = |fields: &Fields| tarpit::canary::search::find(&index, fields).len();
    let search_corpus = per_item(&corpus_fields, seconds, search);
    let search_carriers = per_item(&carrier_fields, seconds, search);
    let decode_and_search = per_item(&corpus, seconds, |s| {
        tarpit::canary::search::find(&index, &Fields::of(&s.view())).len()
    });
    let classifier = Classifier::load(None).unwrap();
    let classify = per_item(&corpus, seconds, |s| classifier.classify(&s.view()).len());
    println!(
        "canary token search, {} issued tokens in the index, one thread (µs per request):",
        index.len()
    );
    let rows = [
        (
            format!("search, corpora ({} requests, no token)", corpus.len()),
            search_corpus,
        ),
        (
            format!("search, requests carrying a token ({})", carriers.len()),
            search_carriers,
        ),
        (
            "decode + search, corpora (classification off)".to_owned(),
            decode_and_search,
        ),
        (
            "reference, same run: decode + classify, corpora".to_owned(),
            classify,
        ),
        ("bar: search".to_owned(), 2000.0),
    ];
    for (what, nanos) in rows {
        println!("  {what:<52} {:>8.3}", nanos / 1000.0);
    }
}
