//! The adaptive mode through the running server, with curl as the client: the persona's pages
//! (a 404 for a random path, bait pages, HEAD kept on the drip), a client without a timeout
//! held for the whole page, give-ups learned, stored and used to answer early and completely
//! (keep-alive goes on), the model kept across a restart, `tarpit stats` and the metrics, and
//! persona errors naming file, entry and reason. gobuster against both modes runs in the
//! scanner bench's smoke test (`xtask/tests/bench_smoke.rs`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::fronts::free_port;
use common::netns::prerequisites_met;
use common::{FAST, Tarpit, wait_for};

/// A random-looking path, like gobuster's wildcard probe.
const RANDOM_PATH: &str = "/3f2a9c1e-0b7d-4e55-9a61-2c8d1f0e4b7a";

fn sh(command: &str) -> std::process::Output {
    Command::new("sh").args(["-c", command]).output().unwrap()
}

/// curl's exit code and its `-w` output.
fn curl(args: &str) -> (Option<i32>, String) {
    let out = sh(&format!("curl -s {args}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn scrape(port: u16, wanted: &str) -> String {
    let mut last = String::from("nothing read");
    wait_for(Duration::from_secs(30), || {
        let read = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        };
        match read() {
            Ok(body) if body.contains(wanted) => Some(body),
            Ok(body) => {
                last = body;
                None
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    })
    .unwrap_or_else(|| panic!("no {wanted} in the metrics; last read: {last}"))
}

#[test]
fn a_client_that_never_gives_up_gets_the_whole_persona_page() {
    if !prerequisites_met(&["curl"]) {
        return;
    }
    let tarpit = Tarpit::start(&[&["--mode", "adaptive"], FAST].concat());
    let base = format!("http://127.0.0.1:{}", tarpit.addr.port());
    let body = tarpit.dir.join("body");
    let (code, out) = curl(&format!(
        "-o {} -w '%{{http_code}} %{{size_download}}' '{base}{RANDOM_PATH}'",
        body.display()
    ));
    assert_eq!(code, Some(0), "curl completes the 404 page: {out}");
    let page = std::fs::read(&body).unwrap();
    assert_eq!(out, format!("404 {}", page.len()));
    assert!(page.starts_with(b"<html>\n<head><title>404 Not Found</title>"));
    let (code, out) = curl(&format!(
        "-o {} -w '%{{http_code}}' '{base}/.env'",
        body.display()
    ));
    assert_eq!((code, out.as_str()), (Some(0), "200"));
    assert!(std::fs::read(&body).unwrap().starts_with(b"APP_NAME="));
    // HEAD: the page's head, its end dripped a byte per tick, and no body.
    let (code, out) = curl(&format!("-I -m 30 '{base}/head'"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
    assert!(
        out.contains(&format!("Content-Length: {}\r\n", page.len())),
        "{out}"
    );

    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        3,
    );
    let rows: Vec<(String, u16, String, Option<f64>, String, i64)> = tarpit.rows(
        "SELECT http_path, response_status, response_mode, giveup_limit_s, end_reason, bytes_sent
         FROM events ORDER BY id",
    );
    assert_eq!(
        rows[0],
        (
            RANDOM_PATH.to_owned(),
            404,
            "adaptive".into(),
            None,
            "complete".into(),
            page.len() as i64
        )
    );
    assert_eq!((rows[1].1, rows[1].2.as_str()), (200, "adaptive"));
    assert_eq!(
        (
            rows[2].0.as_str(),
            rows[2].1,
            rows[2].2.as_str(),
            rows[2].4.as_str()
        ),
        ("/head", 404, "adaptive", "complete")
    );
}

#[test]
fn give_ups_are_learned_then_answered_early_and_kept_across_restarts() {
    if !prerequisites_met(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let args = [
        "--mode",
        "adaptive",
        "--response-delay",
        "0.5",
        "--metrics-listen",
        &listen,
    ];
    let mut tarpit = Tarpit::start_in(dir.path(), &args, 0);
    let base = format!("http://127.0.0.1:{}", tarpit.addr.port());
    // Three clients from three networks (127.0.1.0/24, ...: a tool's figure needs give-ups
    // from three) give up after 2 s (curl -m 2 exits 28, a timeout).
    for i in 0..3 {
        let (code, _) = curl(&format!(
            "-m 2 --interface 127.0.{}.1 -o /dev/null '{base}/probe{i}'",
            i + 1
        ));
        assert_eq!(code, Some(28));
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM giveup_families WHERE kind = 'tool' AND name = 'curl'
         AND give_ups = 3 AND give_up_s IS NOT NULL",
        1,
    );
    // Each give-up is timed to curl's FIN (`client_fin_s`), and that is what is learned.
    let give_ups: Vec<(String, f64)> = tarpit.rows(
        "SELECT end_reason, client_fin_s FROM events WHERE http_path LIKE '/probe%'
         AND duration_s >= client_fin_s",
    );
    assert_eq!(give_ups.len(), 3, "{give_ups:?}");
    for (reason, seconds) in &give_ups {
        assert!(["client_closed", "client_reset"].contains(&reason.as_str()));
        assert!(*seconds >= 1.9, "curl -m 2 gave up at {seconds} s");
    }

    // The next curl, patient this time, is answered early and in full; keep-alive carries its
    // second request on the same connection.
    let (code, out) = curl(&format!(
        "-m 30 -o /dev/null -o /dev/null -w '%{{http_code}} %{{num_connects}}\\n' \
         '{base}/a' '{base}/b'"
    ));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, "404 1\n404 0\n", "one connection, two complete 404s");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path IN ('/a', '/b') AND end_reason IS NOT NULL",
        2,
    );
    let planned: Vec<(u32, String, String, f64, f64, u16)> = tarpit.rows(
        "SELECT request_seq, end_reason, giveup_basis, giveup_limit_s, planned_end_s,
                response_status
         FROM events WHERE http_path IN ('/a', '/b') ORDER BY request_seq",
    );
    let shortest = give_ups.iter().map(|(_, s)| *s).fold(f64::MAX, f64::min);
    // No plan ends before four drip intervals (2 s here), whatever was learned.
    let planned_with = shortest.max(2.0);
    for (index, (seq, reason, basis, limit, end, status)) in planned.iter().enumerate() {
        assert_eq!(*seq, index as u32 + 1);
        assert_eq!(reason, "planned_end");
        assert!(
            ["address", "user_agent", "header_order", "tool"].contains(&basis.as_str()),
            "{basis}"
        );
        assert!(
            (limit - planned_with).abs() < 0.01,
            "{limit} vs {planned_with}"
        );
        assert!((end - (limit - 1.0).max(limit / 2.0)).abs() < 0.01, "{end}");
        assert_eq!(*status, 404);
    }
    assert_eq!(
        tarpit.count("SELECT COUNT(DISTINCT conn_id) FROM events WHERE http_path IN ('/a','/b')"),
        1
    );
    let metrics = scrape(metrics_port, "tarpit_giveup_seconds{tool=\"curl\"}");
    assert!(metrics.contains("tarpit_response_end_total{reason=\"planned_end\"} 2"));
    assert!(metrics.contains("tarpit_response_mode_total{mode=\"adaptive\"} 5"));
    let learned: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tarpit_giveup_seconds{tool=\"curl\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the learned figure");
    assert!((learned - shortest).abs() < 0.01, "{learned} vs {shortest}");
    let line = tarpit
        .wait_json_lines(|lines| lines.iter().any(|l| l["http_path"] == "/a"))
        .into_iter()
        .find(|l| l["http_path"] == "/a")
        .expect("the JSON line of /a");
    assert_eq!(line["response_mode"], "adaptive");
    assert_eq!(line["giveup_basis"], planned[0].2.as_str());

    // Restarted, the model is read back: no new give-up needed to answer early.
    tarpit.terminate(Duration::from_secs(10));
    let stats = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir.path())
        .args(["stats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    // No ClickHouse is configured: stats says nothing of a shipping backlog.
    assert!(!stats.contains("shipping outbox"), "{stats}");
    assert!(!stats.contains("not shipped"), "{stats}");
    let row = stats
        .lines()
        .skip_while(|l| !l.starts_with("give-up time by tool"))
        .find(|l| l.trim_start().starts_with("curl"))
        .unwrap_or_else(|| panic!("no curl row in\n{stats}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], format!("{shortest:.1}"), "{row}");
    assert_eq!(&cells[4..], ["3", "2", "0"], "{row}");

    let tarpit = Tarpit::start_in(dir.path(), &args, 1);
    let base = format!("http://127.0.0.1:{}", tarpit.addr.port());
    let (code, out) = curl(&format!(
        "-m 30 -o /dev/null -w '%{{http_code}}' '{base}/c'"
    ));
    assert_eq!((code, out.as_str()), (Some(0), "404"));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/c' AND end_reason = 'planned_end'
         AND giveup_limit_s IS NOT NULL",
        1,
    );
}

#[test]
fn the_adaptive_cadence_is_jittered() {
    // 0.2 s ticks: adaptive gaps spread over 0.14-0.26 s (a regular drip's within a few ms).
    let spread = {
        let tarpit = Tarpit::start(&["--mode", "adaptive", "--response-delay", "0.2"]);
        let mut stream = tarpit.connect();
        stream
            .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut arrivals = Vec::new();
        while arrivals.len() < 10 {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the response ended early");
            arrivals.push(std::time::Instant::now());
        }
        let gaps: Vec<f64> = arrivals
            .windows(2)
            .skip(1) // the first read may hold the head alone
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let max = gaps.iter().copied().fold(f64::MIN, f64::max);
        let min = gaps.iter().copied().fold(f64::MAX, f64::min);
        max - min
    };
    assert!(spread > 0.04, "adaptive gaps spread by {spread} s");
}

#[test]
fn the_drip_records_when_a_client_gave_up() {
    if !prerequisites_met(&["curl"]) {
        return;
    }
    // The drip mode, unchanged on the wire, also notes the client's FIN.
    let tarpit = Tarpit::start(&["--response-delay", "0.5", "--workers", "2"]);
    let base = format!("http://127.0.0.1:{}", tarpit.addr.port());
    let (code, _) = curl(&format!("-m 2 -o /dev/null '{base}/x'"));
    assert_eq!(code, Some(28));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        1,
    );
    let (mode, fin, duration): (String, f64, f64) = tarpit
        .db()
        .query_row(
            "SELECT response_mode, client_fin_s, duration_s FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(mode, "drip");
    assert!(
        fin >= 1.9 && fin <= duration,
        "FIN at {fin} s, held {duration} s"
    );
}

#[test]
fn an_operator_persona_is_served_and_a_bad_one_names_file_entry_and_reason() {
    if !prerequisites_met(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let persona = dir.path().join("persona");
    std::fs::create_dir(&persona).unwrap();
    std::fs::write(persona.join("gone.html"), "nothing here").unwrap();
    std::fs::write(persona.join("secret.txt"), "token=abc").unwrap();
    let manifest = |status: u16| {
        format!(
            "not_found = \"gone.html\"\n[[page]]\npaths = [\"/secret\"]\nstatus = {status}\n\
             content_type = \"text/plain\"\nfile = \"secret.txt\"\n"
        )
    };
    std::fs::write(persona.join("persona.toml"), manifest(200)).unwrap();
    let persona_arg = persona.display().to_string();
    let tarpit = Tarpit::start(&[
        "--mode",
        "adaptive",
        "--response-delay",
        "0.05",
        "--max-response-bytes",
        "4",
        "--adaptive-persona",
        &persona_arg,
    ]);
    let base = format!("http://127.0.0.1:{}", tarpit.addr.port());
    let (code, out) = curl(&format!("-m 10 '{base}/secret'"));
    assert_eq!((code, out.as_str()), (Some(0), "token=abc"));
    let (code, out) = curl(&format!("-m 10 -w ' %{{http_code}}' '{base}/.env'"));
    assert_eq!((code, out.as_str()), (Some(0), "nothing here 404"));

    std::fs::write(persona.join("persona.toml"), manifest(302)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir.path())
        .args(["check-config", "--adaptive-persona", &persona_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        "adaptive.persona",
        "persona.toml: page[0] (secret.txt)",
        "must be 200, 401 or 403, got 302",
    ] {
        assert!(stderr.contains(part), "{part} missing from {stderr}");
    }
}

/// Sends `request` from `source` (a loopback address: another network).
fn connect_from(source: &str, tarpit: &Tarpit, request: &str) -> TcpStream {
    let mut stream = common::connect_from(source, tarpit.addr);
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Poisoning: 3, 10 and 50 connections from one network, each closing early with the header
/// order browsers and curl share, change nothing for clients from other networks (they keep the
/// full drip); give-ups from three networks do make a figure, and never one below the floor.
#[test]
fn one_network_cannot_shorten_other_clients_plans() {
    let dir = tempfile::tempdir().unwrap();
    // A drip interval of 0.5 s: give-ups under 1 s are not timeouts, and the floor is 2 s.
    let tarpit = Tarpit::start_in(
        dir.path(),
        &["--mode", "adaptive", "--response-delay", "0.5"],
        0,
    );
    let request = |ua: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n")
    };
    let mut sent = 0;
    for (round, attackers) in [3usize, 10, 50].into_iter().enumerate() {
        let streams: Vec<TcpStream> = (0..attackers)
            .map(|i| {
                let source = format!("127.0.9.{}", 1 + i % 200);
                connect_from(&source, &tarpit, &request(&format!("attacker/{i}"), "/p"))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1300));
        drop(streams);
        sent += attackers;
        tarpit.wait_count(
            "SELECT COUNT(*) FROM events WHERE http_path = '/p'
             AND end_reason IN ('client_closed', 'client_reset')",
            sent as i64,
        );
        // Let the learner publish (at most every half second), then a client from another
        // network with the same header order and a User-Agent nobody gave up with.
        std::thread::sleep(Duration::from_millis(800));
        let victim = format!("/victim{round}");
        let _held = connect_from("127.0.7.1", &tarpit, &request("curl/8.1", &victim));
        tarpit.wait_count(
            &format!("SELECT COUNT(*) FROM events WHERE http_path = '{victim}'"),
            1,
        );
        let plan: Vec<(Option<f64>, Option<String>)> = tarpit.rows(&format!(
            "SELECT giveup_limit_s, giveup_basis FROM events WHERE http_path = '{victim}'"
        ));
        assert_eq!(plan, [(None, None)], "round {round}: {attackers} attackers");
    }
    // The same give-ups from three networks are evidence: the header order gets a figure,
    // bounded below by the floor (2 s) although the clients left after 1.3 s.
    tarpit.give_up_from(
        &["127.0.10.1", "127.0.11.1", "127.0.12.1"],
        "/q",
        &request("other/1", "/q"),
        Duration::from_millis(1300),
    );
    // Stored, so published (both happen on the same tick of the learner).
    tarpit.wait_count(
        "SELECT COUNT(*) FROM giveup_families WHERE kind = 'header_order'
         AND give_up_s IS NOT NULL",
        1,
    );
    let _held = connect_from("127.0.7.1", &tarpit, &request("curl/8.1", "/after"));
    tarpit.wait_count("SELECT COUNT(*) FROM events WHERE http_path = '/after'", 1);
    let plan: Vec<(f64, String)> =
        tarpit.rows("SELECT giveup_limit_s, giveup_basis FROM events WHERE http_path = '/after'");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].1, "header_order");
    assert!((plan[0].0 - 2.0).abs() < 1e-6, "the floor: {plan:?}");
}

/// The reverse poisoning: clients from three networks that the classification names as
/// gobuster wait 4 s before giving up, so gobuster's learned figure becomes 4 s; a real
/// gobuster, whose timeout (its prior, here 2.5 s) is shorter, is still planned within it.
#[test]
fn a_fake_slow_family_cannot_push_a_real_tool_past_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // The tool's prior matches only the real version's User-Agent; the fakes are classified as
    // gobuster (`^gobuster/`) without matching it, so they keep the full drip and can give up
    // as late as they like.
    let priors = dir.path().join("priors.toml");
    std::fs::write(
        &priors,
        "[[prior]]\ntool = \"gobuster\"\nuser_agent = \"gobuster/3.6\"\ngive_up = 2.5\n",
    )
    .unwrap();
    let tarpit = Tarpit::start_in(
        dir.path(),
        &[
            "--mode",
            "adaptive",
            "--response-delay",
            "0.5",
            "--adaptive-priors",
            priors.to_str().unwrap(),
        ],
        0,
    );
    let request = |ua: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n")
    };
    tarpit.give_up_from(
        &["127.0.40.1", "127.0.41.1", "127.0.42.1"],
        "/slow",
        &request("gobuster/9.9", "/slow"),
        Duration::from_secs(4),
    );
    // The learner has the slow figure: stored, so published (both happen on the same tick).
    tarpit.wait_count(
        "SELECT COUNT(*) FROM giveup_families WHERE kind = 'tool' AND name = 'gobuster'
         AND give_up_s IS NOT NULL",
        1,
    );
    let stored: Vec<(f64,)> = tarpit
        .rows("SELECT give_up_s FROM giveup_families WHERE kind = 'tool' AND name = 'gobuster'");
    assert!(
        stored.first().is_some_and(|(s,)| *s > 3.5),
        "the fake figure was learned: {stored:?}"
    );
    let _real = connect_from("127.0.43.1", &tarpit, &request("gobuster/3.6", "/real"));
    tarpit.wait_count("SELECT COUNT(*) FROM events WHERE http_path = '/real'", 1);
    let plan: Vec<(f64, String)> =
        tarpit.rows("SELECT giveup_limit_s, giveup_basis FROM events WHERE http_path = '/real'");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].1, "tool", "the learned figure decides ...");
    assert!(
        (plan[0].0 - 2.5).abs() < 1e-6,
        "... but never past the tool's timeout: {plan:?}"
    );
}
