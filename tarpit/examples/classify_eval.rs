//! Measures the default classification rules on labelled payloads written by others and shipped
//! in Debian packages (sqlmap's payload and boundary files, wfuzz's injection and traversal
//! lists), and on benign paths, queries and browser User-Agents (dirb's and wfuzz's word lists,
//! sqlmap's list of browser User-Agents): recall per class, false positives on benign input.
//! With `--bench SECONDS` it instead measures classification throughput on one thread (run it
//! pinned to one core: `cargo xtask bench classify` does), beside a rule-by-rule scan of the
//! same patterns. Run through `cargo xtask classify-eval` and `cargo xtask bench classify`.

use std::path::Path;
use std::time::{Duration, Instant};

use tarpit::classify::normalize::Fields;
use tarpit::classify::{Classifier, RequestView};

/// One request of a corpus.
struct Sample {
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    user_agent: String,
}

impl Sample {
    fn new(path: &str, query: Option<String>, user_agent: &str) -> Self {
        let headers = vec![
            ("Host".to_owned(), "sensor.example".to_owned()),
            ("User-Agent".to_owned(), user_agent.to_owned()),
            ("Accept".to_owned(), "*/*".to_owned()),
        ];
        Sample {
            path: path.to_owned(),
            query,
            headers,
            user_agent: user_agent.to_owned(),
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: Some("GET"),
            path: Some(&self.path),
            query: self.query.as_deref(),
            headers: &self.headers,
            user_agent: Some(&self.user_agent),
            body: None,
            raw: None,
        }
    }
}

/// A browser's User-Agent, so that labelled payloads carry no tool tag of their own.
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn lines(path: &str) -> Vec<String> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (cargo xtask ci-setup installs the packages)"))
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim_end_matches('\r').to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Percent-encodes a value for a query string, as a client would send it.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// sqlmap's placeholders, filled the way sqlmap fills them (fixed values, for repeatability).
fn fill(template: &str) -> String {
    let mut text = template.to_owned();
    for (placeholder, value) in [
        ("[RANDNUM]", "5907"),
        ("[RANDNUM1]", "8421"),
        ("[RANDNUM2]", "1337"),
        ("[RANDNUM3]", "2718"),
        ("[RANDNUM4]", "3141"),
        ("[RANDNUM5]", "1618"),
        ("[RANDSTR]", "vQkz"),
        ("[RANDSTR1]", "pLmw"),
        ("[RANDSTR2]", "xTrc"),
        ("[SLEEPTIME]", "5"),
        ("[DELAYED]", "5"),
        ("[DELIMITER_START]", "qkjxq"),
        ("[DELIMITER_STOP]", "qvbpq"),
        ("[INFERENCE]", "5907=5907"),
        (
            "[QUERY]",
            "SELECT (CASE WHEN (5907=5907) THEN 1 ELSE 0 END)",
        ),
        ("[ORIGVALUE]", "1"),
        ("[ORIGINAL]", "1"),
        ("[GENERIC_SQL_COMMENT]", "-- -"),
        ("[CHAR]", "NULL"),
        ("[COLSTART]", "1"),
        ("[COLSTOP]", "10"),
        ("[SPACE_REPLACE]", " "),
        ("[DOLLAR_REPLACE]", "$"),
        ("[AT_REPLACE]", "@"),
        ("[HASH_REPLACE]", "#"),
    ] {
        text = text.replace(placeholder, value);
    }
    text
}

/// The text of every `<tag>...</tag>` in `xml`, comments skipped (sqlmap's files are simple
/// enough for this).
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let comments = regex::Regex::new("(?s)<!--.*?-->").unwrap();
    let xml = comments.replace_all(xml, "");
    let pattern = regex::Regex::new(&format!("(?s)<{tag}>(.*?)</{tag}>")).unwrap();
    pattern
        .captures_iter(&xml)
        .map(|c| {
            c[1].replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
                .replace("&quot;", "\"")
        })
        .collect()
}

/// sqlmap's requests: every test payload of its payload files (UNION tests as sqlmap builds
/// them), each with the level-1 boundaries (numeric and single-quoted) and placed as the test's
/// `<where>` says (appended to the original value `1`, to a negative value, or replacing it),
/// in `?id=`.
fn sqlmap_payloads() -> Vec<Sample> {
    let dir = Path::new("/usr/share/sqlmap/data/xml");
    let boundaries = std::fs::read_to_string(dir.join("boundaries.xml")).expect("sqlmap");
    let mut pairs: Vec<(String, String)> = Vec::new();
    for boundary in elements(&boundaries, "boundary") {
        let level = elements(&boundary, "level");
        if level.first().map(String::as_str) == Some("1") {
            let prefix = elements(&boundary, "prefix").pop().unwrap_or_default();
            let suffix = elements(&boundary, "suffix").pop().unwrap_or_default();
            pairs.push((prefix, suffix));
        }
    }
    let mut samples = Vec::new();
    for entry in std::fs::read_dir(dir.join("payloads")).expect("sqlmap payloads") {
        let xml = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for test in elements(&xml, "test") {
            let payload = elements(&test, "payload").pop().unwrap_or_default();
            let comment = elements(&test, "comment").pop().unwrap_or_default();
            let payload = if payload.trim().is_empty() {
                // UNION tests: sqlmap generates the column list.
                "UNION ALL SELECT NULL,NULL,CONCAT(0x716b6a7871,0x4a6b,0x7176627071)".to_owned()
            } else {
                payload
            };
            let place = elements(&test, "where").pop().unwrap_or_default();
            for (prefix, suffix) in &pairs {
                let attack = match place.split(',').next().unwrap_or("1").trim() {
                    "3" => fill(&format!("{payload}{comment}")),
                    "2" => fill(&format!("-5907{prefix} {payload}{comment}{suffix}")),
                    _ => fill(&format!("1{prefix} {payload}{comment}{suffix}")),
                };
                samples.push(Sample::new(
                    "/item.php",
                    Some(format!("id={}", encode(&attack))),
                    BROWSER,
                ));
            }
        }
    }
    samples
}

/// Each line of a word list as the value of one query parameter.
fn in_query(file: &str, parameter: &str) -> Vec<Sample> {
    lines(file)
        .iter()
        .map(|l| {
            Sample::new(
                "/index.php",
                Some(format!("{parameter}={}", encode(l))),
                BROWSER,
            )
        })
        .collect()
}

/// Each line of a word list as the request path (as a client sends it: spaces encoded).
fn as_path(file: &str) -> Vec<Sample> {
    lines(file)
        .iter()
        .map(|l| {
            Sample::new(
                &format!("/{}", l.trim_start_matches('/').replace(' ', "%20")),
                None,
                BROWSER,
            )
        })
        .collect()
}

/// A labelled set: its name, its source, its samples, and the tags that count as detected.
struct LabelledSet {
    class: &'static str,
    source: &'static str,
    samples: Vec<Sample>,
    detected_by: &'static [&'static str],
}

fn labelled_sets() -> Vec<LabelledSet> {
    let wfuzz = "/usr/share/wfuzz/wordlist";
    vec![
        LabelledSet {
            class: "attack:sqli",
            source: "sqlmap 1.7.2 payloads/*.xml x level-1 boundaries, in ?id=",
            samples: sqlmap_payloads(),
            detected_by: &["attack:sqli"],
        },
        LabelledSet {
            class: "attack:sqli",
            source: "wfuzz 3.1.0 Injections/SQL.txt, in ?id=",
            samples: in_query(&format!("{wfuzz}/Injections/SQL.txt"), "id"),
            detected_by: &["attack:sqli"],
        },
        LabelledSet {
            class: "attack:xss",
            source: "wfuzz 3.1.0 Injections/XSS.txt, in ?q=",
            samples: in_query(&format!("{wfuzz}/Injections/XSS.txt"), "q"),
            detected_by: &["attack:xss"],
        },
        LabelledSet {
            class: "attack:path-traversal / lfi",
            source: "wfuzz 3.1.0 Injections/Traversal.txt, in ?file=",
            samples: in_query(&format!("{wfuzz}/Injections/Traversal.txt"), "file"),
            detected_by: &["attack:path-traversal", "attack:lfi"],
        },
        LabelledSet {
            class: "attack:path-traversal / lfi",
            source: "wfuzz 3.1.0 vulns/dirTraversal-nix.txt + -win.txt, as the path",
            samples: [
                as_path(&format!("{wfuzz}/vulns/dirTraversal-nix.txt")),
                as_path(&format!("{wfuzz}/vulns/dirTraversal-win.txt")),
            ]
            .into_iter()
            .flatten()
            .collect(),
            detected_by: &["attack:path-traversal", "attack:lfi"],
        },
    ]
}

/// Benign sets: (name, samples, the tag prefixes that would be false positives).
fn benign_sets() -> Vec<(&'static str, Vec<Sample>, &'static [&'static str])> {
    let words = lines("/usr/share/dirb/wordlists/big.txt");
    let paths: Vec<Sample> = words
        .iter()
        .flat_map(|w| {
            [
                Sample::new(&format!("/{w}"), None, BROWSER),
                Sample::new(&format!("/{w}/index.html"), None, BROWSER),
            ]
        })
        .collect();
    let queries: Vec<Sample> = words
        .iter()
        .map(|w| {
            Sample::new(
                "/search",
                Some(format!("q={}&page=2&sort=name&lang=en-US", encode(w))),
                BROWSER,
            )
        })
        .collect();
    let browsers: Vec<Sample> = lines("/usr/share/sqlmap/data/txt/user-agents.txt")
        .iter()
        .map(|ua| Sample::new("/", None, ua))
        .collect();
    vec![
        (
            "dirb 2.22 big.txt as paths (/WORD and /WORD/index.html): attack or cve tags",
            paths,
            &["attack:", "cve:"],
        ),
        (
            "dirb 2.22 big.txt as search queries (?q=WORD&page=2&sort=name&lang=en-US): attack or cve tags",
            queries,
            &["attack:", "cve:"],
        ),
        (
            "sqlmap 1.7.2 txt/user-agents.txt (browsers) on /: tool tags",
            browsers,
            &["tool:"],
        ),
    ]
}

/// `misses`: also print up to that many undetected payloads per set (for rule authors).
fn evaluate(classifier: &Classifier, misses: usize) {
    println!("| class | labelled payloads (source) | payloads | detected | recall |");
    println!("|---|---|---:|---:|---:|");
    for set in labelled_sets() {
        let mut missed = Vec::new();
        let detected = set
            .samples
            .iter()
            .filter(|s| {
                let tags = classifier.classify(&s.view());
                let hit = tags.iter().any(|t| set.detected_by.contains(&t.as_ref()));
                if !hit && missed.len() < misses {
                    missed.push(format!("{}?{}", s.path, s.query.as_deref().unwrap_or("")));
                }
                hit
            })
            .count();
        for miss in &missed {
            eprintln!("missed ({}): {miss}", set.class);
        }
        println!(
            "| {} | {} | {} | {} | {:.1}% |",
            set.class,
            set.source,
            set.samples.len(),
            detected,
            100.0 * detected as f64 / set.samples.len() as f64
        );
    }
    println!();
    println!("| benign input | requests | false positives | rate | examples |");
    println!("|---|---:|---:|---:|---|");
    for (name, samples, wrong) in benign_sets() {
        let mut examples = Vec::new();
        let mut false_positives = 0;
        for sample in &samples {
            let tags = classifier.classify(&sample.view());
            let bad: Vec<String> = tags
                .iter()
                .filter(|t| wrong.iter().any(|w| t.starts_with(w)))
                .map(|t| t.to_string())
                .collect();
            if !bad.is_empty() {
                false_positives += 1;
                if examples.len() < 4 {
                    let what = sample.query.as_deref().unwrap_or(&sample.path);
                    let what = if *wrong == ["tool:"] {
                        &sample.user_agent
                    } else {
                        what
                    };
                    examples.push(format!(
                        "`{}` → {}",
                        what.replace('|', "\\|"),
                        bad.join(",")
                    ));
                }
            }
        }
        println!(
            "| {name} | {} | {false_positives} | {:.2}% | {} |",
            samples.len(),
            100.0 * false_positives as f64 / samples.len() as f64,
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

fn main() {
    let classifier = Classifier::load(None).expect("the default rules");
    let args: Vec<String> = std::env::args().collect();
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
            evaluate(&classifier, misses)
        }
    }
}
