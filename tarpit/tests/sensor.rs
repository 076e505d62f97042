//! Sensor identity through the running server and the offline commands: `[sensor] id` (or the
//! host name) on every row and JSON line, the labels in the `sensors` table, the id in the
//! export, `tarpit stats` and the report; a bad id names the key.

mod common;

use std::io::Write;
use std::process::Command;

use common::{FAST, Tarpit, read_response};

fn tarpit_cli(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_request(tarpit: &Tarpit) {
    let mut stream = tarpit.connect();
    stream
        .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_response(&mut stream);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason IS NOT NULL",
        1,
    );
}

#[test]
fn the_sensor_id_is_on_every_row_line_export_and_report() {
    let config =
        "[sensor]\nid = \"fra-1\"\nlabels = { region = \"eu-central\", provider = \"hz\" }\n";
    let mut tarpit = Tarpit::start_with_config(config, &[], FAST);
    one_request(&tarpit);
    for table in ["events", "connections"] {
        assert_eq!(
            tarpit.count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE sensor_id IS NOT 'fra-1'"
            )),
            0,
            "{table}"
        );
    }
    let labels: Vec<(String, String)> = tarpit.rows("SELECT sensor_id, labels_json FROM sensors");
    assert_eq!(
        labels,
        [(
            "fra-1".to_owned(),
            r#"{"provider":"hz","region":"eu-central"}"#.to_owned()
        )]
    );
    let lines = tarpit.wait_json_lines(|lines| lines.len() >= 4);
    assert!(lines.iter().all(|l| l["sensor_id"] == "fra-1"), "{lines:?}");
    tarpit.terminate(std::time::Duration::from_secs(10));

    let dir = tarpit.dir.clone();
    let (code, _, stderr) = tarpit_cli(&dir, &["export", "--format", "csv", "--out", "out.csv"]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut csv = csv::Reader::from_path(dir.join("out.csv")).unwrap();
    // Shipping's bookkeeping is not data: never exported.
    assert!(!csv.headers().unwrap().iter().any(|h| h == "changed_seq"));
    let column = csv
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "sensor_id")
        .expect("a sensor_id column");
    for row in csv.records() {
        assert_eq!(&row.unwrap()[column], "fra-1");
    }
    let (code, stats, _) = tarpit_cli(&dir, &["stats"]);
    assert_eq!(code, Some(0));
    let after = stats.split("top sensor\n").nth(1).expect("a sensor table");
    assert!(after.lines().next().unwrap().ends_with("fra-1"), "{stats}");
    let (code, _, stderr) = tarpit_cli(&dir, &["report", "--out", "r.html"]);
    assert_eq!(code, Some(0), "{stderr}");
    let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
    assert!(html.contains("&middot; sensor fra-1 &middot;"));
}

#[test]
fn the_host_name_is_the_default_id_and_a_bad_id_names_the_key() {
    let tarpit = Tarpit::start(FAST);
    one_request(&tarpit);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        tarpit.count(&format!(
            "SELECT COUNT(*) FROM events WHERE sensor_id = '{host}'"
        )),
        1
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = tarpit_cli(dir.path(), &["check-config", "--sensor-id", "a b"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sensor.id"), "{stderr}");
}
