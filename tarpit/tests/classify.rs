//! Classification through the running server: real tools (curl, Python's urllib, sqlmap and
//! nmap's NSE vulnerability scripts, from Debian's packages) get their `tool:`, `attack:` and
//! `cve:` tags in `request_tags`, the JSON log and the metrics; an operator rule file adds and
//! replaces rules and is re-read when it changes; a bad rule stops the start with file, rule
//! and reason.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::fronts::free_port;
use common::netns::{Lab, prerequisites_met};
use common::{FAST, Tarpit, wait_for};

/// Every (path, tag) pair recorded so far.
fn tags(tarpit: &Tarpit) -> BTreeSet<(String, String)> {
    tarpit
        .db()
        .prepare(
            "SELECT IFNULL(e.http_path, ''), t.tag FROM request_tags t
             JOIN events e ON e.id = t.event_id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Waits until the tags of the request for `path` include every one of `expected`.
fn wait_tags(tarpit: &Tarpit, path: &str, expected: &[&str]) -> BTreeSet<String> {
    let found = wait_for(Duration::from_secs(30), || {
        let have: BTreeSet<String> = tags(tarpit)
            .into_iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| t)
            .collect();
        expected.iter().all(|t| have.contains(*t)).then_some(have)
    });
    found.unwrap_or_else(|| panic!("{path} lacks {expected:?}: {:?}", tags(tarpit)))
}

fn run(command: &str) -> std::process::Output {
    Command::new("sh").args(["-c", command]).output().unwrap()
}

fn send(tarpit: &Tarpit, request: &[u8]) {
    let mut stream = tarpit.connect();
    stream.write_all(request).unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
}

#[test]
fn curl_urllib_and_sqlmap_get_their_tags_in_every_record() {
    if !prerequisites_met(&["curl", "python3", "sqlmap"]) {
        return;
    }
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let tarpit = Tarpit::start(&[FAST, &["--metrics-listen", &listen]].concat());
    let base = format!("http://127.0.0.1:{}", tarpit.addr.port());
    run(&format!("curl -s -m 5 '{base}/wp-login.php' >/dev/null"));
    run(&format!(
        "python3 -c \"import urllib.request; urllib.request.urlopen('{base}/.env', timeout=5).read()\""
    ));
    // Besides the OWASP CRS's (`crs:`, written after the row by its stage: tests/crs.rs).
    let own = |tags: BTreeSet<String>| tags.into_iter().filter(|t| !t.starts_with("crs:")).count();
    assert_eq!(
        own(wait_tags(
            &tarpit,
            "/wp-login.php",
            &["tool:curl", "target:wordpress"]
        )),
        2
    );
    wait_tags(
        &tarpit,
        "/.env",
        &["tool:python-urllib", "target:env-exposure"],
    );

    // sqlmap with its defaults, boolean and UNION techniques, against a fast drip.
    let dir = tempfile::tempdir().unwrap();
    let out = run(&format!(
        "timeout 120 sqlmap -u '{base}/item.php?id=1' --batch --timeout=5 --retries=0 \
         --technique=BU --flush-session --output-dir={} 2>&1",
        dir.path().display()
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("testing"),
        "sqlmap ran"
    );
    let requests = tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/item.php'",
        5,
    );
    let with = |tag: &str| {
        tarpit.count(&format!(
            "SELECT COUNT(*) FROM request_tags t JOIN events e ON e.id = t.event_id
             WHERE e.http_path = '/item.php' AND t.tag = '{tag}'"
        ))
    };
    wait_for(Duration::from_secs(10), || {
        (with("tool:sqlmap") >= requests - 1).then_some(())
    })
    .unwrap_or_else(|| panic!("{} of {requests} tagged tool:sqlmap", with("tool:sqlmap")));
    let sqli = with("attack:sqli");
    assert!(
        sqli >= 5,
        "sqlmap's payloads are SQL injection: {sqli} of {requests}"
    );

    // The JSON log's request lines carry the same tags.
    let line = wait_for(Duration::from_secs(30), || {
        tarpit
            .json_lines()
            .into_iter()
            .find(|l| l["event"] == "request" && l["http_path"] == "/wp-login.php")
    })
    .unwrap();
    assert_eq!(
        line["tags"],
        serde_json::json!(["target:wordpress", "tool:curl"])
    );

    // And the metric by tag.
    let scraped = wait_for(Duration::from_secs(10), || {
        let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.contains("tarpit_request_tags_total{tag=\"tool:sqlmap\"}")
            .then_some(body)
    })
    .expect("the tag metric");
    assert!(scraped.contains("tarpit_request_tags_total{tag=\"tool:curl\"} 1"));
}

#[test]
fn nmap_vulnerability_scripts_get_their_cve_tags() {
    if !prerequisites_met(&["ip", "nmap"]) {
        return;
    }
    // NSE's HTTP scripts run against ports it takes for HTTP (8080 among them): the tarpit
    // listens on 8080 in a namespace of its own, and nmap scans it from there.
    let lab = Lab::new();
    let tarpit = Tarpit::start_in_netns(
        &lab.sensor,
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "8080",
            "--response-delay",
            "0.01",
            "--max-response-bytes",
            "2",
        ],
    );
    let scripts = "http-vuln-cve2017-5638,http-vuln-cve2012-1823,http-shellshock,\
                   http-vuln-cve2013-7091,http-vuln-cve2013-6786,http-vuln-cve2015-1635";
    let expected = [
        "tool:nmap",
        "cve:CVE-2017-5638",
        "cve:CVE-2012-1823",
        "cve:CVE-2014-6271",
        "cve:CVE-2013-7091",
        "cve:CVE-2013-6786",
        "cve:CVE-2015-1635",
        "attack:shellshock",
    ];
    let all = || -> BTreeSet<String> { tags(&tarpit).into_iter().map(|(_, t)| t).collect() };
    // NSE's HTTP library caches GET answers for the whole run by host, port and path (not
    // headers), and looks the cache up unless a request says `bypass_cache`.
    // http-vuln-cve2015-1635 GETs `/` and stores the answer; http-shellshock GETs `/` with
    // `no_cache` (store nothing) but not `bypass_cache`, so when 1635's answer is stored
    // first, shellshock is handed it and sends nothing: a race between two script threads that
    // a busy machine lost (issue 21). Its `uri` argument gives shellshock a path that no other
    // script requests, so its request is always sent.
    let out = run(&format!(
        "ip netns exec {} timeout 120 nmap -n -Pn -p 8080 --script {scripts} \
         --script-args http-shellshock.uri=/cgi-bin/status 127.0.0.1",
        lab.sensor
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = wait_for(Duration::from_secs(30), || {
        let all = all();
        expected.iter().all(|t| all.contains(*t)).then_some(())
    });
    assert!(found.is_some(), "expected {expected:?}, found {:?}", all());
    // The Shellshock request is the one for the path given to the script.
    assert_eq!(
        tarpit.count(
            "SELECT COUNT(*) FROM request_tags t JOIN events e ON e.id = t.event_id
             WHERE e.http_path = '/cgi-bin/status' AND t.tag = 'cve:CVE-2014-6271'"
        ),
        1
    );
    // nmap's own User-Agent tags every request but the one whose User-Agent is the
    // Shellshock payload.
    let untagged = tarpit.count(
        "SELECT COUNT(*) FROM events WHERE id NOT IN
           (SELECT event_id FROM request_tags WHERE tag = 'tool:nmap')",
    );
    assert!(untagged <= 1, "{untagged} requests without tool:nmap");
}

#[test]
fn an_operator_rule_file_adds_replaces_and_is_reread() {
    let rule = |pattern: &str| {
        format!(
            "[[rule]]\nid = \"tool-curl\"\ntags = [\"tool:replaced-curl\"]\nuser_agent = '^curl/'\n\
             [[rule]]\nid = \"ours\"\ntags = [\"target:ours\"]\npath = '{pattern}'\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tarpit.toml"),
        "[classify]\nrules = \"rules.toml\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.toml"), rule("^/first$")).unwrap();
    let tarpit = Tarpit::start_in(
        dir.path(),
        &[FAST, &["--config", "tarpit.toml"]].concat(),
        0,
    );
    send(
        &tarpit,
        b"GET /first HTTP/1.1\r\nUser-Agent: curl/8\r\n\r\n",
    );
    let first = wait_tags(&tarpit, "/first", &["target:ours", "tool:replaced-curl"]);
    assert!(
        !first.contains("tool:curl"),
        "the default rule was replaced"
    );

    std::fs::write(dir.path().join("rules.toml"), rule("^/second$")).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("rules.toml"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let reloaded = wait_for(Duration::from_secs(15), || {
        send(&tarpit, b"GET /second HTTP/1.1\r\n\r\n");
        tags(&tarpit)
            .contains(&("/second".into(), "target:ours".into()))
            .then_some(())
    });
    assert!(reloaded.is_some(), "the changed file was re-read");
    assert!(tarpit.stderr().contains("classification rules reloaded"));
}

#[test]
fn a_bad_rule_stops_the_start_naming_file_rule_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nid = \"broken\"\ntags = [\"attack:x\"]\nquery = '(unclosed'\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir.path())
        .args(["check-config", "--classify-rules", "rules.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        "classify.rules",
        "rules.toml: rule broken: query: invalid pattern",
    ] {
        assert!(stderr.contains(part), "{part} missing from {stderr}");
    }
}

/// A head larger than `max_request_head` (Citrix Bleed sends a 24.8 KB `Host:`) is recorded
/// `head_too_large` with what arrived of it: its path, and the tags the path earns.
#[test]
fn an_oversized_head_is_classified_by_what_arrived() {
    let tarpit = Tarpit::start(FAST);
    let mut request = b"GET /oauth/idp/.well-known/openid-configuration HTTP/1.1\r\n\
                        User-Agent: python-requests/2.31.0\r\nHost: "
        .to_vec();
    request.extend(std::iter::repeat_n(b'a', 24_812));
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    send(&tarpit, &request);
    let tags = wait_tags(
        &tarpit,
        "/oauth/idp/.well-known/openid-configuration",
        &["cve:CVE-2023-4966", "tool:python-requests"],
    );
    assert!(tags.contains("target:citrix"), "{tags:?}");
    let error: String = tarpit
        .db()
        .query_row(
            "SELECT error_message FROM events WHERE http_path LIKE '/oauth/%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(error, "head_too_large");
}
