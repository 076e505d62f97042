//! The live sharing outputs against real counterparts on loopback: the ISC's submission API
//! (a stand-in written from the ISC client's own code: it checks the HMAC), a TAXII 2.1
//! server (`medallion`, OASIS's reference implementation, from PyPI) and an HPFeeds broker
//! (`hpfeeds-broker` from PyPI), each started by the test on a free port in a private
//! directory. Clients are named by the trusted proxy header.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};

use common::fake_api::{FakeApi, Reply};
use common::fronts::free_port;
use common::{Tarpit, python_has, read_response, wait_for};

const DSHIELD_KEY: &str = "c2VjcmV0LWlzYy1rZXk=";
const SQLI: &str = "/index.php?id=1%27%20or%20%271%27=%271";

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap_or_else(|| panic!("nothing listens on {port}"));
}

fn dshield_config(api: &FakeApi, extra: &str) -> String {
    format!(
        "[tarpit]\nresponse_delay = 0.01\nmax_response_bytes = 2\n\n\
         [share.dshield]\nuser_id = 12345\nurl = \"http://{}/submitapi/\"\ninterval = 1\n{extra}\n",
        api.addr
    )
}

/// Every log of every submission received, in order.
fn logs(api: &FakeApi) -> Vec<serde_json::Value> {
    api.received()
        .iter()
        .flat_map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["logs"].as_array().unwrap().clone()
        })
        .collect()
}

fn check_authorization(header: &str) {
    // ISC-HMAC-SHA256 Credentials=C Userid=U Nonce=N, C = HMAC-SHA256(N + U, key)
    let field = |name: &str| {
        header
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {header}"))
            .to_owned()
    };
    assert!(header.starts_with("ISC-HMAC-SHA256 "), "{header}");
    assert_eq!(field("Userid"), "12345");
    let nonce = field("Nonce");
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(&nonce).unwrap().len(), 8);
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(format!("{nonce}12345").as_bytes()).unwrap();
    mac.update(DSHIELD_KEY.as_bytes());
    assert_eq!(
        field("Credentials"),
        b64.encode(mac.finalize().into_bytes())
    );
}

#[test]
fn dshield_gets_authenticated_batches_of_at_most_100_once_each_across_a_failure_and_a_restart() {
    // The first submission fails: it must come again, whole, and only then the cursor moves.
    let api = FakeApi::start(vec![Reply::Status(500, vec![], "{}".into())]);
    let env = [("TARPIT_DSHIELD_KEY", DSHIELD_KEY)];
    let mut tarpit = Tarpit::start_with_config(&dshield_config(&api, ""), &env, &[]);
    tarpit.request_as("81.2.69.142", SQLI, "sqlmap/1.7.2");
    tarpit.request_as("162.142.125.9", "/", "CensysInspect/1.1"); // verified: left out
    tarpit.request_as("10.1.2.3", "/private", "curl/8.5.0"); // not public: left out
    let mut plain = tarpit.connect(); // the sensor's own loopback: left out
    plain.write_all(b"GET /self HTTP/1.1\r\n\r\n").unwrap();
    read_response(&mut plain);
    api.wait_for(2, Duration::from_secs(60));
    let received = api.received();
    assert_eq!(
        received[0].body, received[1].body,
        "the failed batch is sent again as it was"
    );
    for r in &received {
        assert_eq!(r.header("x-isc-logtype"), Some("webhoneypot"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        check_authorization(r.header("x-isc-authorization").unwrap());
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], "webhoneypot");
    }
    let log = &logs(&api)[1];
    assert_eq!(log["sip"], "81.2.69.142");
    assert_eq!(log["method"], "GET");
    assert_eq!(log["url"], SQLI);
    assert_eq!(log["useragent"], "sqlmap/1.7.2");
    assert!(log["time"].as_f64().unwrap() > 1.7e9);
    assert!(
        log.get("dip").is_none(),
        "the sensor's address never leaves it"
    );
    let text: String = received.iter().map(|r| r.body.clone()).collect();
    for kept in ["162.142.125.9", "10.1.2.3", "/self", "127.0.0.1"] {
        assert!(!text.contains(kept), "{kept} was submitted");
    }
    // The fake API has answered; the output records the success just after (a busy CI
    // machine once read the state in between, still with the first failure).
    let state = || {
        tarpit
            .rows::<(i64, Option<String>)>(
                "SELECT sent, last_error FROM share_state WHERE output = 'dshield'",
            )
            .remove(0)
    };
    let recorded = wait_for(Duration::from_secs(30), || {
        let now = state();
        (now == (1, None)).then_some(now)
    });
    assert_eq!(recorded, Some((1, None)), "last seen: {:?}", state());
    // 150 more: a batch of 100, then the other 50 an interval later.
    for n in 0..150 {
        tarpit.request_as("81.2.69.142", &format!("/n{n}"), "curl/8.5.0");
    }
    wait_for(Duration::from_secs(60), || {
        (logs(&api).len() >= 152).then_some(())
    })
    .expect("all 150 submitted");
    let sizes: Vec<usize> = api
        .received()
        .iter()
        .skip(2)
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["logs"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 150);
    // A restart resumes at the cursor: nothing twice.
    tarpit.terminate(Duration::from_secs(30));
    let tarpit = Tarpit::launch(&tarpit.dir.clone(), &env, &["--config", "tarpit.toml"], 1);
    tarpit.request_as("89.160.20.112", "/after-restart", "curl/8.5.0");
    wait_for(Duration::from_secs(60), || {
        (logs(&api).len() >= 153).then_some(())
    })
    .expect("the new request submitted");
    std::thread::sleep(Duration::from_secs(2));
    let all = logs(&api);
    assert_eq!(all.len(), 153, "nothing sent twice after the restart");
    assert_eq!(all[152]["url"], "/after-restart");
}

#[test]
fn dshield_dry_run_sends_nothing_and_moves_on() {
    let api = FakeApi::start(vec![]);
    let env = [("TARPIT_DSHIELD_KEY", DSHIELD_KEY)];
    let tarpit = Tarpit::start_with_config(&dshield_config(&api, "dry_run = true"), &env, &[]);
    tarpit.request_as("81.2.69.142", "/dry", "curl/8.5.0");
    tarpit.wait_count(
        "SELECT COALESCE(SUM(sent), 0) FROM share_state WHERE output = 'dshield'",
        1,
    );
    assert!(api.received().is_empty());
    assert!(
        tarpit.stderr().contains("DShield dry run"),
        "{}",
        tarpit.stderr()
    );
}

#[test]
fn a_configured_output_without_its_secret_stops_the_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tarpit.toml"),
        "[share.hpfeeds]\nhost = \"127.0.0.1\"\nident = \"s\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir.path())
        .args([
            "--config",
            "tarpit.toml",
            "--port",
            "0",
            "--scanner-rdns",
            "false",
        ])
        .env_remove("TARPIT_HPFEEDS_SECRET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("TARPIT_HPFEEDS_SECRET"), "{text}");
    // check-config says the same, and with the secret names it without showing it.
    let check = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_tarpit"))
            .current_dir(dir.path())
            .args(["--config", "tarpit.toml", "check-config"])
            .env_remove("TARPIT_HPFEEDS_SECRET")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let refused = check(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("TARPIT_HPFEEDS_SECRET"));
    let accepted = check(&[("TARPIT_HPFEEDS_SECRET", "do-not-print-me")]);
    let text = String::from_utf8_lossy(&accepted.stdout);
    assert!(accepted.status.success(), "{text}");
    assert!(
        text.contains("# share.hpfeeds: publishing on tarpit.events"),
        "{text}"
    );
    assert!(text.contains("# share.dshield: off"), "{text}");
    assert!(
        text.contains("# scanners: catalogue built in, reverse DNS on"),
        "{text}"
    );
    assert!(!text.contains("do-not-print-me"));
}

const COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";

/// medallion on `port`, with one API root (`tarpit`) and one writable collection.
fn medallion(dir: &Path, port: u16) -> Server {
    let data = serde_json::json!({
        "/discovery": {
            "title": "test", "description": "test", "contact": "test",
            "default": format!("http://127.0.0.1:{port}/tarpit/"),
            "api_roots": [format!("http://127.0.0.1:{port}/tarpit/")]
        },
        "tarpit": {
            "information": {
                "title": "tarpit", "description": "test",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 104857600
            },
            "status": [],
            "collections": [{
                "id": COLLECTION, "title": "scanners", "description": "test",
                "can_read": true, "can_write": true,
                "media_types": ["application/stix+json;version=2.1"],
                "objects": [], "manifest": []
            }]
        }
    });
    std::fs::write(dir.join("data.json"), data.to_string()).unwrap();
    let conf = serde_json::json!({
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": dir.join("data.json"),
        },
        "users": { "tarpit": "taxii-pass" },
        "taxii": { "max_page_size": 1000 }
    });
    std::fs::write(dir.join("conf.json"), conf.to_string()).unwrap();
    let child = Command::new("medallion")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(dir.join("conf.json"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("medallion.log")).unwrap())
        .spawn()
        .expect("medallion runs");
    let server = Server(child);
    wait_listening(port);
    server
}

#[test]
fn taxii_adds_valid_stix_objects_to_a_medallion_collection() {
    if !python_has("medallion, stix2validator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = medallion(dir.path(), port);
    let config = format!(
        "[tarpit]\nresponse_delay = 0.01\nmax_response_bytes = 2\n\n\
         [share.taxii]\nurl = \"http://127.0.0.1:{port}/tarpit/\"\ncollection = \"{COLLECTION}\"\n\
         user = \"tarpit\"\ninterval = 1\n"
    );
    let env = [("TARPIT_TAXII_PASSWORD", "taxii-pass")];
    let tarpit = Tarpit::start_with_config(&config, &env, &[]);
    tarpit.request_as("81.2.69.142", SQLI, "sqlmap/1.7.2");
    tarpit.request_as("162.142.125.9", "/", "CensysInspect/1.1");
    let url = format!("http://127.0.0.1:{port}/tarpit/collections/{COLLECTION}/objects/");
    let objects = wait_for(Duration::from_secs(60), || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-u",
                "tarpit:taxii-pass",
                "-H",
                "Accept: application/taxii+json;version=2.1",
                &url,
            ])
            .output()
            .ok()?;
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let objects = page["objects"].as_array()?.clone();
        objects
            .iter()
            .any(|o| o["type"] == "indicator")
            .then_some(objects)
    })
    .expect("the collection got an indicator");
    let of = |kind: &str| objects.iter().filter(|o| o["type"] == kind).count();
    assert_eq!(
        (
            of("identity"),
            of("ipv4-addr"),
            of("indicator"),
            of("sighting")
        ),
        (1, 1, 1, 1)
    );
    let indicator = objects.iter().find(|o| o["type"] == "indicator").unwrap();
    assert_eq!(indicator["pattern"], "[ipv4-addr:value = '81.2.69.142']");
    assert!(
        indicator["labels"]
            .as_array()
            .unwrap()
            .contains(&"attack:sqli".into())
    );
    let text = serde_json::to_string(&objects).unwrap();
    assert!(
        !text.contains("162.142.125.9"),
        "the verified scanner was shared"
    );
    // What the server holds is valid STIX 2.1 (strict: warnings fail too).
    let bundle = serde_json::json!({
        "type": "bundle",
        "id": "bundle--6b8f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e",
        "objects": objects
    });
    let file = dir.path().join("held.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom stix2validator import validate_file, ValidationOptions, print_results\n\
             r = validate_file(sys.argv[1], ValidationOptions(strict=True, version='2.1', disabled='301'))\n\
             print_results(r)\nsys.exit(0 if r.is_valid else 1)",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    tarpit.wait_count(
        "SELECT COALESCE(SUM(sent), 0) FROM share_state WHERE output = 'taxii'",
        1,
    );
}

const SUBSCRIBER: &str = r#"
import asyncio, json, sys
from hpfeeds.asyncio import ClientSession
async def main(port, out):
    async with ClientSession('127.0.0.1', int(port), 'reader', 'reader-secret') as client:
        client.subscribe('tarpit.events')
        with open(out, 'a') as f:
            f.write('"subscribed"\n'); f.flush()
            async for ident, channel, payload in client:
                f.write(json.dumps({"ident": ident, "channel": channel,
                                    "payload": json.loads(payload)}) + "\n")
                f.flush()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn hpfeeds_publishes_one_message_per_request_and_a_wrong_secret_is_refused() {
    if !python_has("hpfeeds, aiorun") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Command::new("hpfeeds-broker")
        .args(["--bind", &format!("127.0.0.1:{port}"), "--auth", "env"])
        .current_dir(dir.path())
        .env("HPFEEDS_TARPIT_SECRET", "tarpit-secret")
        .env("HPFEEDS_TARPIT_PUBCHANS", "tarpit.events")
        .env("HPFEEDS_READER_SECRET", "reader-secret")
        .env("HPFEEDS_READER_SUBCHANS", "tarpit.events")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("broker.log")).unwrap())
        .spawn()
        .expect("hpfeeds-broker runs");
    let _broker = Server(broker);
    wait_listening(port);
    let received = dir.path().join("received.jsonl");
    let subscriber = Command::new("python3")
        .args(["-c", SUBSCRIBER, &port.to_string()])
        .arg(&received)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("subscriber.log")).unwrap())
        .spawn()
        .unwrap();
    let _subscriber = Server(subscriber);
    wait_for(Duration::from_secs(30), || {
        (!lines(&received).is_empty()).then_some(())
    })
    .expect("the subscriber subscribed");
    let config = |ident: &str| {
        format!(
            "[tarpit]\nresponse_delay = 0.01\nmax_response_bytes = 2\n\n\
             [share.hpfeeds]\nhost = \"127.0.0.1\"\nport = {port}\nident = \"{ident}\"\n\
             channel = \"tarpit.events\"\ninterval = 1\n"
        )
    };
    // An ident with the wrong secret is refused: nothing published, the error on record.
    let wrong = Tarpit::start_with_config(
        &config("tarpit"),
        &[("TARPIT_HPFEEDS_SECRET", "wrong")],
        &[],
    );
    wrong.request_as("89.160.20.112", "/wrong-secret", "curl/8.5.0");
    wait_for(Duration::from_secs(60), || {
        wrong
            .rows::<(Option<String>,)>(
                "SELECT last_error FROM share_state WHERE output = 'hpfeeds'",
            )
            .first()
            .and_then(|(e,)| e.clone())
    })
    .expect("the refusal recorded");
    drop(wrong);
    let tarpit = Tarpit::start_with_config(
        &config("tarpit"),
        &[("TARPIT_HPFEEDS_SECRET", "tarpit-secret")],
        &[],
    );
    tarpit.request_as("81.2.69.142", SQLI, "sqlmap/1.7.2");
    tarpit.request_as("81.2.69.142", "/admin/", "sqlmap/1.7.2");
    tarpit.request_as("162.142.125.9", "/", "CensysInspect/1.1");
    wait_for(Duration::from_secs(60), || {
        let got = lines(&received).iter().filter(|l| l.is_object()).count();
        (got >= 2).then_some(())
    })
    .expect("two messages published");
    std::thread::sleep(Duration::from_secs(2));
    let messages: Vec<_> = lines(&received)
        .into_iter()
        .filter(|l| l.is_object())
        .collect();
    assert_eq!(
        messages.len(),
        2,
        "one per request, the scanner left out: {messages:?}"
    );
    let first = &messages[0];
    assert_eq!(
        (first["ident"].as_str(), first["channel"].as_str()),
        (Some("tarpit"), Some("tarpit.events"))
    );
    let payload = &first["payload"];
    assert_eq!(payload["src_ip"], "81.2.69.142");
    assert_eq!(payload["path"], "/index.php");
    assert!(
        payload["src_port"].is_null(),
        "the proxy header names no client port"
    );
    assert!(
        payload["tags"]
            .as_array()
            .unwrap()
            .contains(&"attack:sqli".into())
    );
    assert!(
        !serde_json::to_string(&messages)
            .unwrap()
            .contains("/wrong-secret")
    );
}

#[test]
fn a_hanging_destination_never_stops_recording() {
    let api = FakeApi::start(vec![Reply::Hang]);
    let env = [("TARPIT_DSHIELD_KEY", DSHIELD_KEY)];
    let tarpit = Tarpit::start_with_config(&dshield_config(&api, ""), &env, &[]);
    tarpit.request_as("81.2.69.142", "/first", "curl/8.5.0");
    api.wait_for(1, Duration::from_secs(60)); // the submission hangs from here on
    for n in 0..20 {
        tarpit.request_as("89.160.20.112", &format!("/during-{n}"), "curl/8.5.0");
    }
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path LIKE '/during-%' AND end_reason IS NOT NULL",
        20,
    );
    tarpit.assert_still_answers();
    let sent: i64 = tarpit.count("SELECT sent FROM share_state WHERE output = 'dshield'");
    assert_eq!(
        sent, 0,
        "nothing counted as sent while the destination hangs"
    );
}
