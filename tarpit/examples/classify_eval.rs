//! Measures the default classification rules on labelled payloads written by others and shipped
//! in Debian packages (sqlmap's payload and boundary files, wfuzz's injection and traversal
//! lists), and on benign paths, queries and browser User-Agents (dirb's and wfuzz's word lists,
//! sqlmap's list of browser User-Agents): recall per class, false positives on benign input.
//! With `--bench SECONDS` it instead measures classification throughput on one thread (run it
//! pinned to one core: `cargo xtask bench classify` does), beside a rule-by-rule scan of the
//! same patterns; `--crs-only SECONDS` measures only the OWASP CRS part (to profile it);
//! `--crs-agree` compares the native CRS evaluator with libmodsecurity on every corpus;
//! `--crs-one TARGET` prints the native verdict on one GET (to investigate a difference). Run through `cargo xtask classify-eval` and `cargo xtask bench classify`.

use std::time::{Duration, Instant};

use tarpit::classify::Classifier;
use tarpit::classify::crs::{Crs, CrsEngine, CrsSettings, DEFAULT_CRS_DIR};
use tarpit::classify::normalize::Fields;

#[path = "common/corpora.rs"]
mod corpora;

use corpora::{BROWSER, Sample, benign_sets, labelled_sets};

/// The tags of `sample`: the built-in rules', and the OWASP CRS's besides when it is loaded.
fn tags_of(classifier: &Classifier, crs: Option<&mut Crs>, sample: &Sample) -> Vec<String> {
    let mut tags: Vec<String> = classifier
        .classify(&sample.view())
        .iter()
        .map(|t| t.to_string())
        .collect();
    if let Some(crs) = crs {
        let verdict = crs.evaluate(&sample.view(), "203.0.113.7");
        tags.extend(verdict.tags(&crs.catalog().clone()));
    }
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// Recall per labelled set and false positives per benign set, with the built-in rules alone
/// and with the OWASP CRS besides. `misses`: also print up to that many payloads per set that
/// neither detects (for rule authors).
fn evaluate(classifier: &Classifier, mut crs: Option<Crs>, misses: usize) {
    println!("| class | labelled payloads (source) | payloads | built-in rules | with the CRS |");
    println!("|---|---|---:|---:|---:|");
    let percent = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    for set in labelled_sets() {
        let (mut own, mut both) = (0, 0);
        let mut missed = Vec::new();
        for sample in &set.samples {
            let hit = |tags: &[String]| tags.iter().any(|t| set.detected_by.contains(&t.as_str()));
            own += usize::from(hit(&tags_of(classifier, None, sample)));
            let with = hit(&tags_of(classifier, crs.as_mut(), sample));
            both += usize::from(with);
            if !with && missed.len() < misses {
                missed.push(format!(
                    "{}?{}",
                    sample.path,
                    sample.query.as_deref().unwrap_or("")
                ));
            }
        }
        for miss in &missed {
            eprintln!("missed ({}): {miss}", set.class);
        }
        let n = set.samples.len();
        println!(
            "| {} | {} | {n} | {own} ({:.1}%) | {} |",
            set.class,
            set.source,
            percent(own, n),
            match crs {
                Some(_) => format!("{both} ({:.1}%)", percent(both, n)),
                None => "(CRS not loaded)".into(),
            }
        );
    }
    println!();
    println!(
        "| benign input | requests | built-in rules | with the CRS | examples (with the CRS) |"
    );
    println!("|---|---:|---:|---:|---|");
    for (name, samples, wrong) in benign_sets() {
        let (mut own, mut both) = (0, 0);
        let mut examples = Vec::new();
        for sample in &samples {
            let bad = |tags: Vec<String>| -> Vec<String> {
                tags.into_iter()
                    .filter(|t| wrong.iter().any(|w| t.starts_with(w)))
                    .collect()
            };
            own += usize::from(!bad(tags_of(classifier, None, sample)).is_empty());
            let with = bad(tags_of(classifier, crs.as_mut(), sample));
            if !with.is_empty() {
                both += 1;
                if examples.len() < 4 {
                    let what = if *wrong == ["tool:"] {
                        &sample.user_agent
                    } else {
                        sample.query.as_deref().unwrap_or(&sample.path)
                    };
                    examples.push(format!(
                        "`{}` → {}",
                        what.replace('|', "\\|"),
                        with.join(",")
                    ));
                }
            }
        }
        let n = samples.len();
        println!(
            "| {name} | {n} | {own} ({:.2}%) | {both} ({:.2}%) | {} |",
            percent(own, n),
            percent(both, n),
            examples.join("; ")
        );
    }
}

/// Requests per second over `seconds` on this thread, for `classify` run on every sample.
fn throughput(samples: &[Sample], seconds: f64, mut classify: impl FnMut(&Sample) -> usize) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let (mut done, mut tags) = (0u64, 0usize);
    while Instant::now() < deadline {
        for sample in samples {
            tags += classify(sample);
        }
        done += samples.len() as u64;
    }
    std::hint::black_box(tags);
    done as f64 / start.elapsed().as_secs_f64()
}

fn bench(classifier: &Classifier, seconds: f64) {
    // The mix a sensor sees: mostly plain scanner paths, some attacks.
    let mut samples: Vec<Sample> = benign_sets().into_iter().flat_map(|(_, s, _)| s).collect();
    samples.extend(labelled_sets().into_iter().flat_map(|s| s.samples));
    let specs = tarpit::classify::rules::load(None).unwrap();
    // The alternative the issue rules out: every pattern compiled alone, scanned rule by rule.
    let naive: Vec<Vec<(tarpit::classify::Field, regex::Regex)>> = specs
        .iter()
        .map(|s| {
            s.patterns()
                .map(|(f, p)| (f, regex::Regex::new(p).unwrap()))
                .collect()
        })
        .collect();
    let sets = throughput(&samples, seconds, |s| classifier.classify(&s.view()).len());
    let patterns_only: Vec<_> = specs
        .iter()
        .filter(|s| s.detector.is_none())
        .cloned()
        .collect();
    let patterns_only = Classifier::new(&patterns_only).unwrap();
    let sets_only = throughput(&samples, seconds, |s| {
        patterns_only.classify(&s.view()).len()
    });
    let rule_by_rule = throughput(&samples, seconds, |s| {
        let fields = Fields::of(&s.view());
        naive
            .iter()
            .filter(|conditions| {
                !conditions.is_empty()
                    && conditions
                        .iter()
                        .all(|(field, regex)| regex.is_match(field.text(&fields)))
            })
            .count()
    });
    println!(
        "classification, default rules ({} rules), {} requests (benign and attack mix), one thread:",
        classifier.rule_count(),
        samples.len()
    );
    println!("  RegexSet per field + libinjection (tarpit)   {sets:>10.0} requests/s");
    println!("  RegexSet per field, patterns only            {sets_only:>10.0} requests/s");
    println!("  rule by rule, patterns only                  {rule_by_rule:>10.0} requests/s");
    println!("  target                                          100000 requests/s");
    non_ascii_bench(classifier, &specs, seconds);
    crs_bench(classifier, seconds);
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The OWASP CRS stage on one thread, for each engine (the native evaluator, then
/// libmodsecurity, the reference, in the same run): the churn bench's request (the same request
/// again and again: the verdict cache), sqlmap's distinct payloads (the engine itself, no
/// repeat), and the whole classification (built-in rules and CRS) on those; and the memory the
/// engine adds.
fn crs_bench(classifier: &Classifier, seconds: f64) {
    for engine in [CrsEngine::Native, CrsEngine::Libmodsecurity] {
        let before = rss_kib();
        let mut crs = match Crs::load(&CrsSettings {
            engine,
            ..crs_settings()
        }) {
            Ok(crs) => crs,
            Err(error) => {
                println!("OWASP CRS on {engine}: not measured ({error})");
                continue;
            }
        };
        let added_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
        let churn = vec![Sample {
            path: "/bench".into(),
            query: None,
            headers: vec![
                ("Host".into(), "bench".into()),
                ("User-Agent".into(), "tarpit-bench".into()),
            ],
            user_agent: "tarpit-bench".into(),
        }];
        let cached = throughput(&churn, seconds, |s| {
            crs.evaluate(&s.view(), "127.0.0.1").rule_ids.len()
        });
        // Distinct: sqlmap's payloads, each through the engine itself (the cache is passed by).
        let distinct = corpora::sqlmap_payloads();
        let alone = throughput(&distinct, seconds, |s| {
            crs.evaluate_uncached(&s.view(), "203.0.113.7")
                .rule_ids
                .len()
        });
        let whole = throughput(&distinct, seconds, |s| {
            crs.evaluate_uncached(&s.view(), "203.0.113.7")
                .rule_ids
                .len()
                + classifier.classify(&s.view()).len()
        });
        println!(
            "OWASP CRS ({}, {} rules, paranoia 1) on {engine}, one thread:",
            crs.catalog().version().unwrap_or("?"),
            crs.catalog().len()
        );
        println!(
            "  churn bench's request, repeated (cache)     {cached:>10.0} requests/s   target 20000"
        );
        println!(
            "  {} distinct sqlmap payloads, CRS only      {alone:>10.0} requests/s   target 2000",
            distinct.len()
        );
        println!("  same, built-in rules + CRS                 {whole:>10.0} requests/s");
        println!("  memory the engine and rules add            {added_mib:>10.1} MiB");
    }
}

/// 16 KiB requests of non-ASCII text (a query of Cyrillic words, as a crafted burst would
/// send): the whole stage, and the `anywhere` patterns with Unicode word boundaries (as the rules
/// were compiled before) beside ASCII ones (as they are now).
fn non_ascii_bench(classifier: &Classifier, specs: &[tarpit::classify::RuleSpec], seconds: f64) {
    let word = "привет мир данные ";
    let text = word.repeat(16 * 1024 / word.len());
    let samples: Vec<Sample> = (0..16)
        .map(|i| Sample::new(&format!("/search/{i}"), Some(format!("q={text}")), BROWSER))
        .collect();
    let whole = throughput(&samples, seconds, |s| classifier.classify(&s.view()).len());
    let anywhere: Vec<&str> = specs
        .iter()
        .flat_map(|s| s.patterns())
        .filter(|(f, _)| *f == tarpit::classify::Field::Anywhere)
        .map(|(_, p)| p)
        .collect();
    let unicode = regex::RegexSet::new(&anywhere).unwrap();
    let ascii = regex::RegexSet::new(
        anywhere
            .iter()
            .map(|p| tarpit::classify::ascii_word_boundaries(p)),
    )
    .unwrap();
    let texts: Vec<String> = samples
        .iter()
        .map(|s| Fields::of(&s.view()).anywhere.clone())
        .collect();
    let per = |set: &regex::RegexSet| {
        let mut i = 0;
        throughput(&samples, seconds, |_| {
            i += 1;
            set.matches(&texts[i % texts.len()]).iter().count()
        })
    };
    let (unicode, ascii) = (per(&unicode), per(&ascii));
    println!(
        "16 KiB non-ASCII requests ({} bytes each), one thread:",
        text.len()
    );
    println!("  whole stage (tarpit)                         {whole:>10.0} requests/s");
    println!("  `anywhere` set, Unicode \\b (before)          {unicode:>10.0} requests/s");
    println!("  `anywhere` set, ASCII \\b (now)               {ascii:>10.0} requests/s");
}

/// The CRS as the tarpit loads it by default.
fn crs_settings() -> CrsSettings {
    CrsSettings {
        dir: DEFAULT_CRS_DIR.into(),
        paranoia: 1,
        exclusions: None,
        engine: CrsEngine::Native,
    }
}

/// The native evaluator against libmodsecurity on every corpus: the share of the library's
/// rule firings the native record has, the firings only the native one has, and the rules
/// that disagree most, with an example request each.
fn crs_agreement() {
    let load = |engine| {
        Crs::load(&CrsSettings {
            engine,
            ..crs_settings()
        })
        .expect("the CRS loads")
    };
    let (mut reference, mut native) = (load(CrsEngine::Libmodsecurity), load(CrsEngine::Native));
    let mut samples: Vec<Sample> = benign_sets().into_iter().flat_map(|(_, s, _)| s).collect();
    samples.extend(labelled_sets().into_iter().flat_map(|s| s.samples));
    samples.extend(corpora::sqlmap_payloads());
    let (mut firings, mut found, mut extra, mut scores) = (0usize, 0usize, 0usize, 0usize);
    let mut missed: std::collections::BTreeMap<u32, (usize, String)> = Default::default();
    let mut added: std::collections::BTreeMap<u32, (usize, String)> = Default::default();
    for sample in &samples {
        let a = reference.evaluate_uncached(&sample.view(), "203.0.113.7");
        let b = native.evaluate_uncached(&sample.view(), "203.0.113.7");
        let text = format!("{}?{}", sample.path, sample.query.as_deref().unwrap_or(""));
        firings += a.rule_ids.len();
        scores += usize::from(a.score == b.score);
        if a.score != b.score && std::env::var_os("CRS_AGREE_VERBOSE").is_some() {
            println!(
                "score {} vs {}: {:?} vs {:?} {text}",
                a.score, b.score, a.rule_ids, b.rule_ids
            );
        }
        for id in &a.rule_ids {
            if b.rule_ids.contains(id) {
                found += 1;
            } else {
                missed.entry(*id).or_insert((0, text.clone())).0 += 1;
            }
        }
        for id in b.rule_ids.iter().filter(|id| !a.rule_ids.contains(id)) {
            extra += 1;
            added.entry(*id).or_insert((0, text.clone())).0 += 1;
        }
    }
    println!(
        "{} requests, {firings} libmodsecurity rule firings: native has {found} ({:.2}%), \
         {extra} firings only native, scores equal on {:.2}%",
        samples.len(),
        100.0 * found as f64 / firings.max(1) as f64,
        100.0 * scores as f64 / samples.len().max(1) as f64
    );
    for (what, map) in [("missed", &missed), ("only native", &added)] {
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        for (id, (n, example)) in rows.into_iter().take(25) {
            let example: String = example.chars().take(110).collect();
            println!("  {what} {id}: {n}  e.g. {example}");
        }
    }
}

fn main() {
    let classifier = Classifier::load(None).expect("the default rules");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--crs-one") {
        let mut crs = Crs::load(&crs_settings()).expect("loads");
        let target = args[i + 1].clone();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.clone(), None),
        };
        let sample = Sample::new(&path, query, BROWSER);
        println!("{:?}", crs.evaluate_uncached(&sample.view(), "203.0.113.7"));
        return;
    }
    if args.iter().any(|a| a == "--crs-agree") {
        crs_agreement();
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--crs-only") {
        // Only the CRS part of the bench: what `perf record` is pointed at.
        let seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
        crs_bench(&classifier, seconds);
        return;
    }
    match args.iter().position(|a| a == "--bench") {
        Some(i) => {
            let seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
            bench(&classifier, seconds);
        }
        None => {
            let misses = args
                .iter()
                .position(|a| a == "--misses")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(0);
            let crs = match Crs::load(&crs_settings()) {
                Ok(crs) => Some(crs),
                Err(error) => {
                    eprintln!("the OWASP CRS is not measured: {error}");
                    None
                }
            };
            evaluate(&classifier, crs, misses)
        }
    }
}
