//! Research scanners marked end to end: published ranges and User-Agent claims on loopback
//! (clients named by the trusted proxy header), what AbuseIPDB reporting leaves out by default
//! and with `[scanners] share = true`, the operator's catalogue; and, as root in network
//! namespaces, reverse DNS with forward confirmation through the C library's resolver (asking
//! a DNS server the test runs in the sensor's namespace, named in `/etc/netns/NAME/resolv.conf`,
//! which `ip netns exec` mounts over `/etc/resolv.conf`), under the seccomp filter: an address
//! proven after its first request, that request's row tagged afterwards, a spoofed PTR refused.

mod common;

use std::time::Duration;

use common::Tarpit;
use common::fake_api::FakeApi;
use common::netns::{CLIENT_V4, Lab, SENSOR_V4, prerequisites_met};

const KEY: &str = "test-key-0123456789abcdef";
const CENSYS_UA: &str = "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)";

/// The tags of the row with `path`, sorted, joined by spaces.
fn tags_of(tarpit: &Tarpit, path: &str) -> String {
    let rows: Vec<(String,)> = tarpit.rows(&format!(
        "SELECT t.tag FROM request_tags t JOIN events e ON e.id = t.event_id
         WHERE e.http_path = '{path}' AND t.tag LIKE 'scanner:%' ORDER BY t.tag"
    ));
    rows.into_iter().map(|(t,)| t).collect::<Vec<_>>().join(" ")
}

fn config(api: &FakeApi, extra: &str) -> String {
    format!(
        "[tarpit]\nresponse_delay = 0.05\nmax_response_bytes = 2\n\n[abuseipdb]\napi_url = \"{}\"\n\
         \n{extra}\n",
        api.url()
    )
}

fn reported(api: &FakeApi) -> Vec<String> {
    let mut ips: Vec<String> = api
        .received()
        .iter()
        .map(|r| r.field("ip").unwrap().to_owned())
        .collect();
    ips.sort();
    ips
}

#[test]
fn verified_scanners_are_tagged_and_left_out_of_reports_and_a_user_agent_only_claims() {
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let tarpit = Tarpit::start_with_config(&config(&api, ""), &env, &[]);
    // Censys's published range, with and without its User-Agent.
    tarpit.request_as("162.142.125.9", "/range-and-ua", CENSYS_UA);
    tarpit.request_as("2602:80d:1003::42", "/range-v6", "zgrab/0.x");
    // Censys's User-Agent from an address that is not Censys's: a claim, reported.
    tarpit.request_as("81.2.69.142", "/claim", CENSYS_UA);
    // A sentinel reported after the others proves the reporter went through them.
    tarpit.request_as("89.160.20.112", "/sentinel", "curl/8.5.0");
    api.wait_for(2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reported(&api), ["81.2.69.142", "89.160.20.112"]);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/sentinel'",
        1,
    );
    assert_eq!(
        tags_of(&tarpit, "/range-and-ua"),
        "scanner:censys scanner:verified"
    );
    assert_eq!(
        tags_of(&tarpit, "/range-v6"),
        "scanner:censys scanner:verified"
    );
    assert_eq!(tags_of(&tarpit, "/claim"), "scanner:censys scanner:claimed");
    assert_eq!(tags_of(&tarpit, "/sentinel"), "");
    // The rules' own tag for the tool stays beside the family.
    assert_eq!(
        tarpit.count(
            "SELECT COUNT(*) FROM request_tags t JOIN events e ON e.id = t.event_id
             WHERE e.http_path = '/claim' AND t.tag = 'tool:censys'"
        ),
        1
    );
}

#[test]
fn the_share_switch_reports_scanners_and_the_operator_catalogue_replaces_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("mine.toml");
    std::fs::write(
        &catalogue,
        "[[scanner]]\norg = \"lab-scan\"\nname = \"Our own\"\nranges = [\"89.160.20.0/24\"]\n",
    )
    .unwrap();
    let api = FakeApi::start(vec![]);
    let env = [("ABUSEIPDB_API_KEY", KEY)];
    let extra = format!(
        "[scanners]\nshare = true\nfile = \"{}\"\n",
        catalogue.display()
    );
    let tarpit = Tarpit::start_with_config(&config(&api, &extra), &env, &[]);
    tarpit.request_as("89.160.20.112", "/ours", "curl/8.5.0");
    // Not in this catalogue any more: no tags, however Censys it looks.
    tarpit.request_as("162.142.125.9", "/censys", CENSYS_UA);
    api.wait_for(2, Duration::from_secs(30));
    assert_eq!(reported(&api), ["162.142.125.9", "89.160.20.112"]);
    tarpit.wait_count("SELECT COUNT(*) FROM events WHERE http_path = '/censys'", 1);
    assert_eq!(
        tags_of(&tarpit, "/ours"),
        "scanner:lab-scan scanner:verified"
    );
    assert_eq!(tags_of(&tarpit, "/censys"), "");
}

#[test]
fn a_bad_catalogue_stops_the_start_naming_file_entry_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("bad.toml");
    std::fs::write(
        &catalogue,
        "[[scanner]]\norg = \"a\"\nname = \"A\"\nranges = [\"10.0.0.0/40\"]\n",
    )
    .unwrap();
    let toml = dir.path().join("tarpit.toml");
    std::fs::write(
        &toml,
        format!("[scanners]\nfile = \"{}\"\n", catalogue.display()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir.path())
        .args(["--config", "tarpit.toml", "check-config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check-config accepted a bad catalogue: {text}"
    );
    assert!(text.contains("scanners.file"), "{text}");
    assert!(text.contains("bad.toml"), "{text}");
    assert!(text.contains("scanner[0].ranges[0]"), "{text}");
}

/// `/etc/netns/NAME/` for the sensor's namespace (`ip netns exec` mounts its files over
/// `/etc`), removed on drop.
struct NetnsEtc(std::path::PathBuf);

impl NetnsEtc {
    fn write(netns: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{netns}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Self(dir)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn reverse_dns_confirmed_forward_proves_a_scanner_and_tags_its_earlier_rows() {
    use common::dns::{Record, reverse_name};
    if !prerequisites_met(&["ip", "curl"]) {
        return;
    }
    let lab = Lab::new();
    let (spoofer, nameless) = ("10.88.1.1", "10.88.1.2");
    lab.add_client_addresses(
        "10.88.0.0/16",
        &[spoofer.parse().unwrap(), nameless.parse().unwrap()],
    );
    // The sensor's resolver asks a DNS server in its own namespace: the client's address
    // names a Shadowserver host that resolves back to it; the spoofer's PTR (its owner's to
    // write) claims another Shadowserver host, whose address is not the spoofer's; the third
    // address has no name at all.
    let ip = |text: &str| text.parse::<std::net::Ipv4Addr>().unwrap();
    let _dns = common::dns::start_in_netns(
        &lab.sensor,
        vec![
            (
                reverse_name(ip(CLIENT_V4)),
                Record::Ptr("scan-2.shadowserver.org".into()),
            ),
            (
                "scan-2.shadowserver.org".into(),
                Record::Address(CLIENT_V4.parse().unwrap()),
            ),
            (
                reverse_name(ip(spoofer)),
                Record::Ptr("scan-9.shadowserver.org".into()),
            ),
            (
                "scan-9.shadowserver.org".into(),
                Record::Address("10.77.0.99".parse().unwrap()),
            ),
        ],
    );
    let _etc = NetnsEtc::write(
        &lab.sensor,
        &[
            (
                "resolv.conf",
                "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n",
            ),
            ("hosts", "127.0.0.1 localhost\n"),
        ],
    );
    let args = [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--response-delay",
        "0.01",
        "--max-response-bytes",
        "2",
        "--scanner-rdns",
        "true",
    ];
    let tarpit = Tarpit::start_in_netns(&lab.sensor, &args);
    let curl = |from: &str, path: &str| {
        lab.in_client(&format!(
            "curl -s --max-time 30 --interface {from} http://{SENSOR_V4}:8080{path}"
        ))
    };
    curl(CLIENT_V4, "/first");
    tarpit.wait_count("SELECT COUNT(*) FROM scanner_hosts", 1);
    let host: Vec<(String, String, String, String)> =
        tarpit.rows("SELECT client_ip, org, via, host_name FROM scanner_hosts");
    assert_eq!(
        host,
        [(
            CLIENT_V4.to_owned(),
            "shadowserver".to_owned(),
            "rdns".to_owned(),
            "scan-2.shadowserver.org".to_owned()
        )]
    );
    // The row recorded before the answer came is tagged now; later ones at once.
    assert_eq!(
        tags_of(&tarpit, "/first"),
        "scanner:shadowserver scanner:verified"
    );
    curl(CLIENT_V4, "/second");
    curl(spoofer, "/spoofer-1");
    curl(nameless, "/nameless");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/nameless'",
        1,
    );
    assert_eq!(
        tags_of(&tarpit, "/second"),
        "scanner:shadowserver scanner:verified"
    );
    // Both were looked up (their answers come back within the resolver's timeout): a later
    // request of each is recorded after its verdict, and neither is a scanner.
    std::thread::sleep(Duration::from_secs(3));
    curl(spoofer, "/spoofer-2");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM events WHERE http_path = '/spoofer-2'",
        1,
    );
    for path in ["/spoofer-1", "/spoofer-2", "/nameless"] {
        assert_eq!(tags_of(&tarpit, path), "", "{path}");
    }
    assert_eq!(tarpit.count("SELECT COUNT(*) FROM scanner_hosts"), 1);
    let lines = tarpit.wait_json_lines(|lines| lines.iter().any(|l| l["event"] == "scanner_host"));
    let proof = lines.iter().find(|l| l["event"] == "scanner_host").unwrap();
    assert_eq!(proof["client_ip"], CLIENT_V4);
    assert_eq!(proof["org"], "shadowserver");
    assert_eq!(proof["host_name"], "scan-2.shadowserver.org");
}
