//! The labelled corpora the classification is measured on, all from Debian packages written by
//! others for attacking or browsing: sqlmap 1.7.2, wfuzz 3.1.0, wapiti 3.0.4, dirb 2.22
//! (`cargo xtask ci-setup` installs them). Shared by `classify_eval`.

use std::path::Path;

use tarpit::classify::RequestView;

/// One request of a corpus.
pub struct Sample {
    /// The path as sent.
    pub path: String,
    /// The query as sent.
    pub query: Option<String>,
    /// Host, User-Agent and Accept.
    pub headers: Vec<(String, String)>,
    /// The User-Agent.
    pub user_agent: String,
}

impl Sample {
    /// A GET with a browser's headers and `user_agent`.
    pub fn new(path: &str, query: Option<String>, user_agent: &str) -> Self {
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

    /// The classifier's view.
    pub fn view(&self) -> RequestView<'_> {
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
pub const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The non-empty, non-comment lines of a file.
pub fn lines(path: &str) -> Vec<String> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (cargo xtask ci-setup installs the packages)"))
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim_end_matches('\r').to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Percent-encodes a value for a query string, as a client would send it.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// sqlmap's placeholders, filled the way sqlmap fills them (fixed values, for repeatability).
pub fn fill(template: &str) -> String {
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
pub fn elements(xml: &str, tag: &str) -> Vec<String> {
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
pub fn sqlmap_payloads() -> Vec<Sample> {
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
pub fn in_query(file: &str, parameter: &str) -> Vec<Sample> {
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
pub fn as_path(file: &str) -> Vec<Sample> {
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

/// wapiti's payloads with its placeholders filled as wapiti fills them (fixed values).
fn wapiti_fill(payload: &str) -> String {
    payload
        .replace("[VALUE]", "1")
        .replace("[LF]", "\n")
        .replace("[TIME]", "5")
        .replace("[EXTERNAL_ENDPOINT]", "http://evil.example/")
        .replace("\\0", "\0")
}

/// One wapiti attack file (one payload a line, or `payload = ...` lines of its .ini files), each
/// payload as the value of `parameter`.
pub fn wapiti(file: &str, parameter: &str) -> Vec<Sample> {
    let path = format!("/usr/lib/python3/dist-packages/wapitiCore/data/attacks/{file}");
    lines(&path)
        .iter()
        .filter_map(|l| match file.ends_with(".ini") {
            true => l.strip_prefix("payload = ").map(str::to_owned),
            false => Some(l.clone()),
        })
        .map(|p| {
            Sample::new(
                "/index.php",
                Some(format!("{parameter}={}", encode(&wapiti_fill(&p)))),
                BROWSER,
            )
        })
        .collect()
}

/// A labelled set: its name, its source, its samples, and the tags that count as detected.
pub struct LabelledSet {
    /// The class measured.
    pub class: &'static str,
    /// Where the payloads come from.
    pub source: &'static str,
    /// The requests.
    pub samples: Vec<Sample>,
    /// The tags that count as detected.
    pub detected_by: &'static [&'static str],
}

pub fn labelled_sets() -> Vec<LabelledSet> {
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
        LabelledSet {
            class: "attack:sqli",
            source: "wapiti 3.0.4 blindSQLPayloads.txt, in ?id=",
            samples: wapiti("blindSQLPayloads.txt", "id"),
            detected_by: &["attack:sqli"],
        },
        LabelledSet {
            class: "attack:xss",
            source: "wapiti 3.0.4 xssPayloads.ini, in ?q=",
            samples: wapiti("xssPayloads.ini", "q"),
            detected_by: &["attack:xss"],
        },
        LabelledSet {
            class: "attack:path-traversal / lfi / rfi",
            source: "wapiti 3.0.4 fileHandlingPayloads.ini, in ?file=",
            samples: wapiti("fileHandlingPayloads.ini", "file"),
            detected_by: &["attack:path-traversal", "attack:lfi", "attack:rfi"],
        },
        LabelledSet {
            class: "attack:cmd-injection / code-injection",
            source: "wapiti 3.0.4 execPayloads.txt, in ?cmd=",
            samples: wapiti("execPayloads.txt", "cmd"),
            detected_by: &["attack:cmd-injection", "attack:code-injection"],
        },
    ]
}

/// Benign sets: (name, samples, the tag prefixes that would be false positives).
pub fn benign_sets() -> Vec<(&'static str, Vec<Sample>, &'static [&'static str])> {
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
