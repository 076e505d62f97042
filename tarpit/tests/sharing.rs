//! Sharing exports end to end: a tarpit records requests from several clients (named by the
//! trusted proxy header), then `tarpit export --format stix|misp` writes what others get. The
//! STIX bundle is checked by OASIS's `stix2-validator` (strict: warnings fail too), the MISP
//! event is loaded by PyMISP's own classes with schema validation and each object rebuilt
//! against its template; and the tests read both for what must and must not be in them.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Tarpit, python_has};

const SQLI: &str = "/index.php?id=1%27%20or%20%271%27=%271";
const IVANTI: &str = "/api/v1/totp/user-backup-code/../../license/keys-status/x";

/// A tarpit that recorded four clients: an SQL injection, an Ivanti CVE probe (IPv6), a
/// plain crawl, and a verified Censys scanner.
fn recorded() -> Tarpit {
    let tarpit = Tarpit::start(&["--response-delay", "0.01", "--max-response-bytes", "2"]);
    tarpit.request_as(
        "81.2.69.142",
        SQLI,
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
    );
    tarpit.request_as(
        "81.2.69.142",
        "/admin/",
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
    );
    tarpit.request_as("2a02:c7f:1234::9", IVANTI, "python-requests/2.31.0");
    tarpit.request_as("89.160.20.112", "/robots.txt", "curl/8.5.0");
    tarpit.request_as(
        "162.142.125.9",
        "/",
        "Mozilla/5.0 (compatible; CensysInspect/1.1)",
    );
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE end_reason IS NOT NULL",
        5,
    );
    tarpit
}

/// Runs `tarpit export` on the tarpit's database; the file's JSON.
fn export(
    tarpit: &Tarpit,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (std::path::PathBuf, serde_json::Value) {
    let out = dir.join(name);
    let db = tarpit.dir.join("data/tarpit_events.db");
    let mut all = vec![
        "export",
        "--db",
        db.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend(args);
    common::run_tool(dir, &all, &[]);
    let text = std::fs::read_to_string(&out).unwrap();
    (out, serde_json::from_str(&text).unwrap())
}

/// Runs a Python check; its standard output.
fn python(script: &str, file: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", script, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed on {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const STIX_CHECK: &str = r#"
import sys
from stix2validator import validate_file, ValidationOptions, print_results
# Strict: every warning fails, but one. The tests' clients come through the proxy header,
# which names no client port, and STIX makes both ports of network traffic a SHOULD (301):
# an unknown port is left out rather than made up.
results = validate_file(sys.argv[1], ValidationOptions(strict=True, version="2.1", disabled="301"))
print_results(results)
sys.exit(0 if results.is_valid else 1)
"#;

const MISP_CHECK: &str = r#"
import sys, json
from pymisp import MISPEvent, MISPObject
event = MISPEvent(strict_validation=True)
event.load_file(sys.argv[1])
for obj in event.objects:
    rebuilt = MISPObject(obj.name, strict=True)
    for a in obj.attributes:
        rebuilt.add_attribute(a.object_relation, value=a.value, type=a.type)
print(json.dumps({
    "info": event.info,
    "ips": sorted(a.value for a in event.attributes if a.type == "ip-src"),
    "tags": {a.value: sorted(t.name for t in a.tags) for a in event.attributes},
    "sightings": sum(len(a.sightings) for a in event.attributes),
    "objects": len(event.objects),
    "uris": sorted(a.value for o in event.objects for a in o.attributes if a.object_relation == "uri"),
}))
"#;

fn objects<'a>(bundle: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == kind)
        .collect()
}

fn values(bundle: &serde_json::Value, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = objects(bundle, kind)
        .iter()
        .map(|o| o["value"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_stix_bundle_passes_the_oasis_validator_and_shares_only_what_it_should() {
    if !python_has("stix2validator, pymisp") {
        return;
    }
    let tarpit = recorded();
    let dir = tempfile::tempdir().unwrap();
    let (file, bundle) = export(&tarpit, dir.path(), "b.json", &["--format", "stix"]);
    python(STIX_CHECK, &file);
    assert_eq!(
        values(&bundle, "ipv4-addr"),
        ["81.2.69.142", "89.160.20.112"]
    );
    assert_eq!(values(&bundle, "ipv6-addr"), ["2a02:c7f:1234::9"]);
    assert_eq!(objects(&bundle, "identity").len(), 1);
    assert_eq!(objects(&bundle, "indicator").len(), 3);
    assert_eq!(objects(&bundle, "sighting").len(), 3);
    let sqli = objects(&bundle, "indicator")
        .into_iter()
        .find(|i| i["pattern"] == "[ipv4-addr:value = '81.2.69.142']")
        .unwrap();
    let labels = sqli["labels"].as_array().unwrap();
    assert!(labels.contains(&"attack:sqli".into()), "{labels:?}");
    assert!(labels.contains(&"tool:sqlmap".into()), "{labels:?}");
    let ivanti = objects(&bundle, "indicator")
        .into_iter()
        .find(|i| i["pattern"] == "[ipv6-addr:value = '2a02:c7f:1234::9']")
        .unwrap();
    assert_eq!(
        ivanti["external_references"][0]["external_id"],
        "CVE-2023-46805"
    );
    let observed = objects(&bundle, "observed-data");
    assert!(observed.iter().any(|o| o["number_observed"] == 2));
    // Two requests of the SQL injection client, as network traffic with their method and path.
    let paths: Vec<&str> = objects(&bundle, "network-traffic")
        .iter()
        .map(|t| {
            t["extensions"]["http-request-ext"]["request_value"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        paths.contains(&"/admin/") && paths.contains(&"/index.php"),
        "{paths:?}"
    );
    // The proxy header names no client port: left out, never made up.
    assert!(
        objects(&bundle, "network-traffic")
            .iter()
            .all(|t| t.get("src_port").is_none())
    );
    // Never: the verified scanner, a query string, the sensor's own address.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("162.142.125.9"));
    assert!(!text.contains("or%20") && !text.contains("id=1"));
    assert!(!text.contains("127.0.0.1"));
    // Every object is derived from the data: exported again, the same objects (a TAXII
    // server keeps one of each; STIX versions must share their `created`).
    let (_, again) = export(&tarpit, dir.path(), "again.json", &["--format", "stix"]);
    assert_eq!(again["objects"], bundle["objects"]);
    // Included when asked.
    let (_, with) = export(
        &tarpit,
        dir.path(),
        "w.json",
        &["--format", "stix", "--include-scanners"],
    );
    assert!(values(&with, "ipv4-addr").contains(&"162.142.125.9".to_owned()));
    // Anonymised: valid still, and no real address left.
    let key = dir.path().join("k.key");
    std::fs::write(&key, (1..=32u8).collect::<Vec<u8>>()).unwrap();
    let (anonymous, bundle) = export(
        &tarpit,
        dir.path(),
        "a.json",
        &[
            "--format",
            "stix",
            "--anonymize",
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    python(STIX_CHECK, &anonymous);
    let text = std::fs::read_to_string(&anonymous).unwrap();
    for real in ["81.2.69.142", "89.160.20.112", "2a02:c7f:1234::9"] {
        assert!(!text.contains(real), "{real} in the anonymised bundle");
    }
    assert_eq!(values(&bundle, "ipv4-addr").len(), 2);
}

#[test]
fn a_misp_event_loads_in_pymisp_with_its_objects_true_to_their_template() {
    if !python_has("stix2validator, pymisp") {
        return;
    }
    let tarpit = recorded();
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = export(&tarpit, dir.path(), "e.json", &["--format", "misp"]);
    let checked: serde_json::Value = serde_json::from_str(&python(MISP_CHECK, &file)).unwrap();
    assert_eq!(
        checked["ips"],
        serde_json::json!(["2a02:c7f:1234::9", "81.2.69.142", "89.160.20.112"])
    );
    let tags = checked["tags"]["81.2.69.142"].as_array().unwrap();
    assert!(tags.contains(&"attack:sqli".into()), "{tags:?}");
    assert!(
        checked["tags"]["2a02:c7f:1234::9"]
            .as_array()
            .unwrap()
            .contains(&"cve:CVE-2023-46805".into())
    );
    assert_eq!(checked["sightings"], 3);
    assert_eq!(
        checked["objects"], 4,
        "one http-request per distinct request"
    );
    assert!(
        checked["uris"]
            .as_array()
            .unwrap()
            .contains(&"/index.php".into())
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("162.142.125.9") && !text.contains("id=1"));
}
