//! AbuseIPDB reporting against a real HTTP server on loopback standing in for the API:
//! exact fields and headers, the per-address interval (across restarts), the daily limit, 429
//! with Retry-After, a 500 then success, a hanging API, never-reported addresses, dry runs, and
//! a key that appears nowhere.

mod common;

use std::io::Write;
use std::time::Duration;

use common::fake_api::{FakeApi, Reply};
use common::{Tarpit, read_response};

const KEY: &str = "test-key-0123456789abcdef";

fn config(api: &FakeApi, extra: &str) -> String {
    format!(
        "[tarpit]\nresponse_delay = 0.05\nmax_response_bytes = 2\n\n[abuseipdb]\napi_url = \"{}\"\n\
         {extra}\n",
        api.url()
    )
}

/// A request whose client, as the trusted (loopback) proxy reports it, is `client`.
fn request_from(tarpit: &Tarpit, client: &str, path: &str, user_agent: &str) {
    let mut stream = tarpit.connect();
    write!(
        stream,
        "GET {path}?token=secret HTTP/1.1\r\nX-Real-IP: {client}\r\nUser-Agent: {user_agent}\r\n\
         Authorization: Basic c2VjcmV0\r\n\r\n"
    )
    .unwrap();
    read_response(&mut stream);
}

/// (ip, outcome, http_status, confidence_score, error) of an `abuseipdb_reports` row.
type Outcome = (String, String, Option<i64>, Option<i64>, Option<String>);

fn outcomes(tarpit: &Tarpit) -> Vec<Outcome> {
    let db = tarpit.db();
    let mut stmt = db
        .prepare(
            "SELECT ip, outcome, http_status, confidence_score, error FROM abuseipdb_reports ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn reports_once_per_interval_with_exact_fields_and_remembers_across_restarts() {
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let mut tarpit = Tarpit::start_with_config(&config(&api, ""), &env, &[]);
    request_from(&tarpit, "81.2.69.142", "/wp-login.php", "zgrab/0.x");
    request_from(&tarpit, "81.2.69.142", "/again", "zgrab/0.x");
    let got = api.wait_for(1, Duration::from_secs(30));
    let report = &got[0];
    assert_eq!(report.request_line, "POST /api/v2/report HTTP/1.1");
    assert_eq!(report.header("key"), Some(KEY));
    assert_eq!(report.header("accept"), Some("application/json"));
    assert_eq!(
        report.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(report.field("ip"), Some("81.2.69.142"));
    assert_eq!(report.field("categories"), Some("19,21"));
    let port = tarpit.addr.port();
    assert_eq!(
        report.field("comment"),
        Some(format!("HTTP scanner held by a tarpit: GET /wp-login.php on port {port}, User-Agent: zgrab/0.x").as_str())
    );
    assert!(!report.field("comment").unwrap().contains("secret"));
    tarpit.wait_count("SELECT COUNT(*) FROM abuseipdb_reports", 1);
    assert_eq!(
        outcomes(&tarpit),
        vec![(
            "81.2.69.142".into(),
            "reported".into(),
            Some(200),
            Some(42),
            None
        )]
    );
    // The report's row says which sensor made it, like every row.
    assert_eq!(
        tarpit.count(
            "SELECT COUNT(*) FROM abuseipdb_reports r JOIN events e ON e.conn_id = r.conn_id
             WHERE r.sensor_id = e.sensor_id AND r.sensor_id IS NOT NULL"
        ),
        1
    );
    let (reported, at): (i64, Option<String>) = tarpit
        .db()
        .query_row(
            "SELECT reported_to_abuseipdb, abuseipdb_report_timestamp FROM events
             WHERE http_path = '/wp-login.php'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(reported, 1);
    humantime::parse_rfc3339(&at.unwrap()).unwrap();
    // The JSON log records the report too.
    tarpit.wait_json_lines(|lines| {
        lines
            .iter()
            .any(|l| l["event"] == "abuse_report" && l["outcome"] == "reported")
    });

    // Restart on the same database: the address is still within its interval.
    let (status, _) = tarpit.terminate(Duration::from_secs(5));
    assert!(status.success());
    let dir = tarpit.dir.clone();
    let restarted = Tarpit::launch(&dir, &env, &["--config", "tarpit.toml"], 1);
    request_from(&restarted, "81.2.69.142", "/after-restart", "zgrab/0.x");
    request_from(&restarted, "89.160.20.112", "/other-client", "zgrab/0.x");
    let got = api.wait_for(2, Duration::from_secs(30));
    assert_eq!(got[1].field("ip"), Some("89.160.20.112"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        api.received().len(),
        2,
        "the same address was reported twice"
    );
    // The key went to the API and nowhere else.
    for file in [
        "stderr-0.log",
        "stderr-1.log",
        "logs/tarpit.log",
        "data/tarpit_events.db",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the API key leaked into {file}"
        );
    }
}

#[test]
fn daily_limit_stops_reporting_for_the_day() {
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let tarpit = Tarpit::start_with_config(&config(&api, "daily_limit = 2"), &env, &[]);
    for client in ["81.2.69.142", "89.160.20.112", "175.16.199.10"] {
        request_from(&tarpit, client, "/x", "scanner");
    }
    api.wait_for(2, Duration::from_secs(30));
    common::wait_for(Duration::from_secs(30), || {
        tarpit
            .stderr()
            .contains("AbuseIPDB daily limit reached")
            .then_some(())
    })
    .expect("a daily-limit warning");
    assert_eq!(api.received().len(), 2);
}

#[test]
fn rate_limit_429_with_retry_after_is_honoured() {
    let api = FakeApi::start(vec![Reply::Status(
        429,
        vec![("Retry-After", "1".into())],
        "{}".into(),
    )]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let tarpit = Tarpit::start_with_config(&config(&api, ""), &env, &[]);
    request_from(&tarpit, "81.2.69.142", "/x", "scanner");
    let got = api.wait_for(2, Duration::from_secs(30));
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(got[1].field("ip"), Some("81.2.69.142"));
    tarpit.wait_count("SELECT COUNT(*) FROM abuseipdb_reports", 1);
    assert_eq!(outcomes(&tarpit)[0].1, "reported");
}

#[test]
fn server_error_then_success_is_retried() {
    let api = FakeApi::start(vec![Reply::Status(500, vec![], "oops".into())]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let tarpit = Tarpit::start_with_config(&config(&api, ""), &env, &[]);
    request_from(&tarpit, "81.2.69.142", "/x", "scanner");
    let got = api.wait_for(2, Duration::from_secs(30));
    assert!(got[1].at - got[0].at >= Duration::from_millis(950)); // backoff
    tarpit.wait_count("SELECT COUNT(*) FROM abuseipdb_reports", 1);
    assert_eq!(
        outcomes(&tarpit),
        vec![(
            "81.2.69.142".into(),
            "reported".into(),
            Some(200),
            Some(42),
            None
        )]
    );
}

#[test]
fn a_hanging_api_never_stalls_the_tarpit_and_gives_up_with_a_record() {
    let api = FakeApi::start(vec![Reply::Hang]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let extra = "timeout_seconds = 1\nmax_retries = 0";
    let tarpit = Tarpit::start_with_config(&config(&api, extra), &env, &[]);
    request_from(&tarpit, "81.2.69.142", "/x", "scanner");
    api.wait_for(1, Duration::from_secs(30));
    // While the API hangs, the tarpit keeps serving.
    let started = std::time::Instant::now();
    for i in 0..5 {
        request_from(&tarpit, "10.0.0.1", &format!("/during/{i}"), "scanner");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    tarpit.wait_count("SELECT COUNT(*) FROM abuseipdb_reports", 1);
    let (ip, outcome, status, _, error) = outcomes(&tarpit).remove(0);
    assert_eq!(
        (ip.as_str(), outcome.as_str(), status),
        ("81.2.69.142", "failed", None)
    );
    assert_eq!(error.as_deref(), Some("timed out"));
}

#[test]
fn private_and_whitelisted_clients_are_never_reported() {
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let extra = "whitelist_cidrs = [\"66.249.64.0/19\"]\n\
                 whitelist_user_agents = [\"(?i)googlebot\"]";
    let tarpit = Tarpit::start_with_config(&config(&api, extra), &env, &[]);
    request_from(&tarpit, "10.0.0.1", "/private", "scanner");
    request_from(&tarpit, "192.168.1.1", "/private", "scanner");
    request_from(&tarpit, "2001:db8::1", "/documentation", "scanner");
    request_from(&tarpit, "66.249.66.1", "/whitelisted-network", "scanner");
    request_from(
        &tarpit,
        "89.160.20.112",
        "/whitelisted-ua",
        "Mozilla/5.0 (compatible; Googlebot/2.1)",
    );
    let mut plain = tarpit.connect(); // loopback, no proxy header
    plain.write_all(b"GET /loopback HTTP/1.1\r\n\r\n").unwrap();
    read_response(&mut plain);
    // A sentinel that must be reported proves the reporter ran through the others first.
    request_from(&tarpit, "81.2.69.142", "/sentinel", "scanner");
    let got = api.wait_for(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let ips: Vec<_> = api
        .received()
        .iter()
        .map(|r| r.field("ip").unwrap().to_owned())
        .collect();
    assert_eq!(ips, ["81.2.69.142"], "{got:?}");
}

#[test]
fn whitelisted_asn_is_never_reported() {
    let Some(dir) = common::shared_geoip_dir() else {
        return;
    };
    let shared = dir.join("GeoLite2-ASN-Test.mmdb");
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let extra = format!(
        "whitelist_asns = [15169]\n\n[geoip]\nasn_db = \"{}\"",
        shared.display()
    );
    let tarpit = Tarpit::start_with_config(&config(&api, &extra), &env, &[]);
    request_from(&tarpit, "1.0.0.1", "/google-asn", "scanner"); // AS15169 in the test data
    request_from(&tarpit, "1.128.0.1", "/telstra", "scanner"); // AS1221: reported
    api.wait_for(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let ips: Vec<_> = api
        .received()
        .iter()
        .map(|r| r.field("ip").unwrap().to_owned())
        .collect();
    assert_eq!(ips, ["1.128.0.1"]);
}

#[test]
fn dry_run_sends_nothing_and_records_the_decision() {
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let tarpit = Tarpit::start_with_config(&config(&api, "dry_run = true"), &env, &[]);
    request_from(&tarpit, "81.2.69.142", "/x", "scanner");
    tarpit.wait_count("SELECT COUNT(*) FROM abuseipdb_reports", 1);
    assert_eq!(outcomes(&tarpit)[0].1, "dry_run");
    assert_eq!(
        tarpit.count("SELECT SUM(reported_to_abuseipdb) FROM events"),
        0
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(api.received().is_empty());
}

#[test]
fn without_a_key_nothing_is_reported_and_dot_env_supplies_one() {
    let api = FakeApi::start(vec![]);
    let tarpit = Tarpit::start_with_config(&config(&api, ""), &[], &[]);
    assert!(
        tarpit
            .stderr()
            .contains("AbuseIPDB reporting off: ABUSEIPDB_API_KEY is not set")
    );
    request_from(&tarpit, "81.2.69.142", "/x", "scanner");
    std::thread::sleep(Duration::from_millis(500));
    assert!(api.received().is_empty());
    drop(tarpit);

    // The same key in `.env` in the working directory turns reporting on.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tarpit.toml"), config(&api, "")).unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("OTHER=1\nABUSEIPDB_API_KEY={KEY}\n"),
    )
    .unwrap();
    let tarpit = Tarpit::launch(dir.path(), &[], &["--config", "tarpit.toml"], 0);
    request_from(&tarpit, "81.2.69.142", "/x", "scanner");
    let got = api.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].header("key"), Some(KEY));
}

#[test]
fn check_config_flags_an_empty_whitelist_and_never_prints_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .arg("check-config")
        .env("ABUSEIPDB_API_KEY", KEY)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("# abuseipdb: reporting on"), "{stdout}");
    assert!(stdout.contains("WARNING: abuseipdb reporting is enabled with an empty whitelist"));
    assert!(!stdout.contains(KEY));
}
