//! Canary tokens and actors end to end, as root, in network namespaces, with real clients
//! (curl, and plain sockets from a thousand addresses): a scripted actor harvests bait from one
//! address and uses its credentials and links from 20 others, and all 21 become one actor with
//! the evidence of each merge; a thousand clients with identical tools that only send back their
//! own tokens stay a thousand actors; invented tokens never merge.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;

use common::netns::{CLIENT_V4, Lab, SENSOR_V4, prerequisites_met};
use common::{Tarpit, run_tool, wait_for};

const KEY: &str = "TARPIT_CANARY_KEY=an end-to-end test key, 32 bytes+";

fn start(lab: &Lab) -> Tarpit {
    // Pages of 10 ticks, 10 ms apart: a bait page arrives whole in a tenth of a second.
    let args = [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--mode",
        "adaptive",
        "--response-delay",
        "0.01",
        "--max-response-bytes",
        "10",
        "--workers",
        "2",
    ];
    let tarpit = Tarpit::start_wrapped(&["ip", "netns", "exec", &lab.sensor, "env", KEY], &args);
    assert!(
        tarpit.stderr().contains("canary tokens on"),
        "{}",
        tarpit.stderr()
    );
    tarpit
}

/// curl in the client namespace from `from`; its stdout (`args` are curl's).
fn curl(lab: &Lab, from: &str, args: &str) -> String {
    lab.in_client(&format!("curl -s --max-time 30 --interface {from} {args}"))
}

fn line_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .trim()
}

fn extra_addresses(count: u32) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|n| Ipv4Addr::from(0x0A58_0000 + 256 + n))
        .collect() // 10.88.1.0 ...
}

#[test]
fn an_actor_using_harvested_bait_from_20_addresses_is_one_actor_with_evidence() {
    if !prerequisites_met(&["ip", "curl"]) {
        return;
    }
    let lab = Lab::new();
    let others = extra_addresses(20);
    lab.add_client_addresses("10.88.0.0/16", &others);
    let tarpit = start(&lab);
    let base = format!("http://{SENSOR_V4}:8080");

    // The harvest, from one address: the .env, robots.txt, the git config, the login cookie.
    let env = curl(&lab, CLIENT_V4, &format!("{base}/.env"));
    let password = line_value(&env, "DB_PASSWORD=").to_owned();
    let key_id = line_value(&env, "AWS_ACCESS_KEY_ID=").to_owned();
    let secret = line_value(&env, "AWS_SECRET_ACCESS_KEY=").to_owned();
    assert_eq!(password.len(), 20, "{env}");
    assert!(key_id.starts_with("AKIA") && key_id.len() == 20, "{key_id}");
    let robots = curl(&lab, CLIENT_V4, &format!("{base}/robots.txt"));
    let hidden = line_value(&robots, "Disallow: /old-site-")
        .trim_end_matches('/')
        .to_owned();
    let git = curl(&lab, CLIENT_V4, &format!("{base}/.git/config"));
    let url = line_value(&git, "url = ");
    let git_token = url
        .split("ghp_")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .unwrap()
        .to_owned();
    let login = curl(
        &lab,
        CLIENT_V4,
        &format!("-D - -o /dev/null {base}/admin/login"),
    );
    let session = line_value(&login, "Set-Cookie: PHPSESSID=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // Tokens are the client's own: another address is served other values.
    let env_elsewhere = curl(&lab, "10.77.0.2", &format!("{base}/.env"));
    assert_eq!(line_value(&env_elsewhere, "DB_PASSWORD="), password);
    assert_ne!(
        line_value(
            &curl(&lab, &others[19].to_string(), &format!("{base}/.env")),
            "DB_PASSWORD="
        ),
        password,
        "the 21st address's own .env (it is one of the 20 below too)"
    );

    // The use: each of 20 other addresses sends one of them back, each as a client would.
    for (n, from) in others.iter().enumerate() {
        let from = from.to_string();
        let args = match n % 6 {
            0 => format!("-u ops:{password} {base}/staging/"),
            1 => format!("-d user=admin -d password={password} {base}/admin/login"),
            2 => format!("{base}/old-site-{hidden}/"),
            3 => format!("-H \"Cookie: lang=en; PHPSESSID={session}\" {base}/admin/"),
            4 => format!(
                "-H \"Authorization: AWS4-HMAC-SHA256 Credential={key_id}/20261206/eu-west-1/s3/aws4_request\" {base}/portal-prod-backups/"
            ),
            _ => format!("-u deploy:ghp_{git_token} {base}/portal-web/portal.git/info/refs"),
        };
        let _ = curl(&lab, &from, &args);
    }
    let addresses: Vec<String> = std::iter::once(CLIENT_V4.to_owned())
        .chain(others.iter().map(Ipv4Addr::to_string))
        .map(|a| format!("'{a}'"))
        .collect();
    let within = addresses.join(",");
    tarpit.wait_count("SELECT COUNT(*) FROM actor_merges", 20);
    tarpit.wait_count(
        &format!("SELECT COUNT(*) FROM events WHERE client_ip IN ({within})"),
        26,
    );
    assert_eq!(
        tarpit.count(&format!(
            "SELECT COUNT(DISTINCT actor_id) FROM events WHERE client_ip IN ({within})"
        )),
        1
    );
    assert_eq!(
        tarpit.count(&format!(
            "SELECT COUNT(DISTINCT actor_id) FROM actor_clients WHERE client_ip IN ({within})"
        )),
        1
    );
    assert_eq!(
        tarpit.count(
            "SELECT clients FROM actors WHERE merged_into IS NULL ORDER BY clients DESC LIMIT 1"
        ),
        21
    );
    assert_eq!(tarpit.count("SELECT COUNT(*) FROM actor_merges"), 20);
    let evidence: Vec<(String,)> = tarpit.rows("SELECT evidence FROM actor_merges");
    for (line,) in &evidence {
        assert!(
            line.contains(&format!("issued to {CLIENT_V4} by sensor")),
            "{line}"
        );
    }
    for (kind, location) in [
        ("password", "authorization"),
        ("password", "body"),
        ("link", "path"),
        ("session", "cookie"),
        ("aws_key_id", "authorization"),
        ("git_token", "authorization"),
    ] {
        let seen = tarpit.count(&format!(
            "SELECT COUNT(*) FROM token_sightings WHERE kind = '{kind}' AND location = '{location}' \
             AND issued_to = '{CLIENT_V4}' AND merged = 1"
        ));
        assert!(seen >= 3, "{kind} in {location}: {seen} sightings");
    }
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM request_tags WHERE tag = 'canary:hit'"),
        20
    );
    // The JSON log carries the sightings too; the key is nowhere in the record.
    // (The JSON log is written by its own thread: it may trail the database.)
    let sighted = || {
        tarpit
            .json_lines()
            .into_iter()
            .filter(|line| line["canary"]["sightings"].is_array())
            .count()
    };
    let lines = wait_for(Duration::from_secs(30), || (sighted() >= 20).then(sighted));
    assert_eq!(lines, Some(20));
    // `tarpit actors` lists the one actor: its 21 addresses and the 20 merges' evidence.
    let actors = |args: &[&str]| run_tool(&tarpit.dir, &[&["actors"], args].concat(), &[]);
    let text = actors(&[]);
    assert!(text.contains(": 21 addresses, 26 requests"), "{text}");
    assert!(text.contains("merges (20):"), "{text}");
    assert!(text.contains("and 9 more"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&actors(&["--json", "--limit", "1"])).unwrap();
    let root = json[0]["actor_id"].as_i64().unwrap();
    let full: serde_json::Value =
        serde_json::from_str(&actors(&["--json", "--actor", &root.to_string()])).unwrap();
    let mut listed: Vec<&str> = full[0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = std::iter::once(CLIENT_V4.to_owned())
        .chain(others.iter().map(Ipv4Addr::to_string))
        .collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    assert_eq!(full[0]["merges"].as_array().unwrap().len(), 20);
    assert_eq!(full[0]["tools"][0]["value"], "tool:curl");
    // The report shows the actor: its addresses and the merges that made it.
    run_tool(&tarpit.dir, &["report", "--out", "report.html"], &[]);
    let html = std::fs::read_to_string(tarpit.dir.join("report.html")).unwrap();
    let section = &html[html
        .find("Actors: addresses joined by canary tokens")
        .expect("the section")..];
    assert!(section.contains("Addresses per actor"), "the chart");
    assert!(section.contains(&format!("<code>{}", others[0])) || section.contains(CLIENT_V4));
    assert!(
        section.contains(" and 9 more</td>"),
        "21 addresses, 12 shown"
    );
    assert!(
        section.contains("<td class=\"n\">20</td></tr>"),
        "20 merges"
    );
    // An anonymised export replaces every token (whole words and inside Basic credentials)
    // by a pseudonym, and is refused without the canary key.
    let key_file = tarpit.dir.join("export.key");
    std::fs::write(
        &key_file,
        std::array::from_fn::<u8, 32, _>(|i| (i * 37 + 11) as u8),
    )
    .unwrap();
    let export = |with_key: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"));
        command.current_dir(&tarpit.dir).args([
            "export",
            "--format",
            "jsonl",
            "--out",
            "out.jsonl",
            "--anonymize",
            "--key-file",
        ]);
        command.arg(&key_file);
        if with_key {
            command.env("TARPIT_CANARY_KEY", KEY.split_once('=').unwrap().1);
        }
        command.output().unwrap()
    };
    let refused = export(false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("TARPIT_CANARY_KEY"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let done = export(true);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let exported = std::fs::read_to_string(tarpit.dir.join("out.jsonl")).unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    for secret in [&password, &key_id, &secret, &hidden, &session, &git_token] {
        assert!(
            !exported.contains(secret.as_str()),
            "{secret} in the export"
        );
    }
    for basic in [format!("ops:{password}"), format!("deploy:ghp_{git_token}")] {
        assert!(
            !exported.contains(&engine.encode(basic)),
            "Basic credentials in the export"
        );
    }
    assert!(
        exported.contains("old-site-"),
        "the path is kept, its token replaced"
    );
    let log = std::fs::read_to_string(tarpit.dir.join("logs/tarpit.log")).unwrap();
    let db = std::fs::read(tarpit.dir.join("data/tarpit_events.db")).unwrap();
    let key = KEY.split_once('=').unwrap().1;
    assert!(!log.contains(key));
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));
}

/// One plain HTTP/1.1 exchange from `from`; the whole response.
fn exchange(from: Ipv4Addr, request: &str) -> String {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    let to: SocketAddr = format!("{SENSOR_V4}:8080").parse().unwrap();
    socket
        .connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn a_thousand_clients_with_one_tool_sending_back_their_own_tokens_stay_a_thousand_actors() {
    if !prerequisites_met(&["ip"]) {
        return;
    }
    let lab = Lab::new();
    let clients = extra_addresses(1000);
    lab.add_client_addresses("10.88.0.0/16", &clients);
    let tarpit = start(&lab);
    let fetched = lab.as_client(move || {
        let chunks: Vec<Vec<Ipv4Addr>> = clients.chunks(10).map(<[_]>::to_vec).collect();
        let threads: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                std::thread::spawn(move || {
                    let mut passwords = Vec::new();
                    for from in chunk {
                        let env = exchange(
                            from,
                            "GET /.env HTTP/1.1\r\nHost: sensor\r\nUser-Agent: harvest/1.0\r\nConnection: close\r\n\r\n",
                        );
                        let password = line_value(&env, "DB_PASSWORD=").to_owned();
                        let body = format!("user=portal&password={password}");
                        exchange(
                            from,
                            &format!(
                                "POST /admin/login HTTP/1.1\r\nHost: sensor\r\nUser-Agent: harvest/1.0\r\n\
                                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                                 Connection: close\r\n\r\n{body}",
                                body.len()
                            ),
                        );
                        passwords.push(password);
                    }
                    passwords
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect::<Vec<String>>()
    });
    let distinct: std::collections::HashSet<&String> = fetched.iter().collect();
    assert_eq!(
        distinct.len(),
        1000,
        "every client was served its own password"
    );
    tarpit.wait_count("SELECT COUNT(*) FROM token_sightings", 1000);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE client_ip LIKE '10.88.%'",
        2000,
    );
    assert_eq!(
        tarpit.count("SELECT COUNT(DISTINCT actor_id) FROM events WHERE client_ip LIKE '10.88.%'"),
        1000
    );
    assert_eq!(tarpit.count("SELECT COUNT(*) FROM actor_merges"), 0);
    assert_eq!(
        tarpit.count(
            "SELECT COUNT(*) FROM token_sightings WHERE merged = 0 AND issued_to = client_ip"
        ),
        1000
    );
    // Their identical fingerprints propose no candidate either: every value is everyone's.
    let actor = tarpit.count("SELECT actor_id FROM actor_clients WHERE client_ip = '10.88.1.7'");
    let text = run_tool(
        &tarpit.dir,
        &["actors", "--candidates", &actor.to_string()],
        &[],
    );
    assert!(text.contains("none: nothing rare is shared"), "{text}");
}

#[test]
fn invented_tokens_never_merge() {
    if !prerequisites_met(&["ip", "curl"]) {
        return;
    }
    let lab = Lab::new();
    let others = extra_addresses(3);
    lab.add_client_addresses("10.88.0.0/16", &others);
    let tarpit = start(&lab);
    let base = format!("http://{SENSOR_V4}:8080");
    let env = curl(&lab, CLIENT_V4, &format!("{base}/.env"));
    let password = line_value(&env, "DB_PASSWORD=");
    // Guesses in the right shapes: a changed character, the AWS documentation's example key, a
    // fresh random value of each shape.
    let mut altered = password.as_bytes().to_vec();
    altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let from = others[0].to_string();
    for guess in [
        altered.as_str(),
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12",
        "9f86d081884c7d659a2feaa0c55ad015",
    ] {
        let _ = curl(&lab, &from, &format!("-u ops:{guess} {base}/admin/"));
        let _ = curl(&lab, &from, &format!("{base}/old-site-{guess}/"));
    }
    tarpit.wait_count(
        &format!("SELECT COUNT(*) FROM events WHERE client_ip = '{from}'"),
        8,
    );
    assert_eq!(tarpit.count("SELECT COUNT(*) FROM token_sightings"), 0);
    assert_eq!(tarpit.count("SELECT COUNT(*) FROM actor_merges"), 0);
    assert_eq!(
        tarpit.count(&format!(
            "SELECT COUNT(DISTINCT actor_id) FROM events WHERE client_ip IN ('{CLIENT_V4}', '{from}')"
        )),
        2
    );
}

/// `drip_body = "persona"`: the drip mode drips the persona's page for the path (bait with the
/// client's tokens, a 404 elsewhere) instead of dots, never ending it early.
#[test]
fn the_drip_can_drip_the_persona_with_tokens() {
    if !prerequisites_met(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = KEY.split_once('=').unwrap().1;
    let args = [
        "--drip-body",
        "persona",
        "--response-delay",
        "0.01",
        "--max-response-bytes",
        "10",
    ];
    let tarpit = Tarpit::launch(dir.path(), &[("TARPIT_CANARY_KEY", key)], &args, 0);
    assert!(
        tarpit
            .stderr()
            .contains("canary tokens on: issued in the persona's bait")
    );
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "--max-time", "20"])
            .arg(format!("http://{}{path}", tarpit.addr))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let env = get("/.env");
    assert!(env.starts_with("HTTP/1.1 200 OK"), "{env}");
    assert!(env.contains("Content-Length: "), "{env}");
    let password = line_value(&env, "DB_PASSWORD=");
    assert_eq!(password.len(), 20);
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
    let missing = get("/no-such-page");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        2,
    );
    let rows: Vec<(String, i64, String)> =
        tarpit.rows("SELECT response_mode, response_status, end_reason FROM events ORDER BY id");
    assert_eq!(rows[0], ("drip".to_owned(), 200, "complete".to_owned()));
    assert_eq!(rows[1].1, 404);
    tarpit.wait_count("SELECT COUNT(*) FROM canary_tokens", 4);
}
