//! GeoIP enrichment in the running tarpit: a missing file is announced, a file put in place
//! while it runs is picked up, and rows and JSON lines carry the location and ASN.

mod common;

use std::io::Write;

use common::{FAST, Tarpit, read_response};

/// A request from `client` as a trusted proxy (loopback) reports it.
fn request_from(tarpit: &Tarpit, client: &str, path: &str) {
    let mut stream = tarpit.connect();
    write!(stream, "GET {path} HTTP/1.1\r\nX-Real-IP: {client}\r\n\r\n").unwrap();
    read_response(&mut stream);
    tarpit.wait_count(
        &format!(
            "SELECT COUNT(*) FROM events WHERE http_path = '{path}' AND end_reason IS NOT NULL"
        ),
        1,
    );
}

#[test]
fn location_and_asn_fill_the_seed_columns_and_a_new_file_is_picked_up() {
    let Some(shared) = common::shared_geoip_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("GeoLite2-City.mmdb");
    let asn = shared.join("GeoLite2-ASN-Test.mmdb");
    let args = [
        FAST,
        &[
            "--geoip-city-db",
            city.to_str().unwrap(),
            "--geoip-asn-db",
            asn.to_str().unwrap(),
            "--geoip-reload-interval",
            "0.1",
        ],
    ]
    .concat();
    let tarpit = Tarpit::start(&args);
    assert!(
        tarpit
            .stderr()
            .contains("not found; put MaxMind's GeoLite2 City file there"),
        "{}",
        tarpit.stderr()
    );
    // No City file yet: ASN only.
    request_from(&tarpit, "1.128.0.1", "/before");
    // geoipupdate-style replacement: write beside, rename into place.
    std::fs::copy(
        shared.join("GeoLite2-City-Test.mmdb"),
        city.with_extension("new"),
    )
    .unwrap();
    std::fs::rename(city.with_extension("new"), &city).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    request_from(&tarpit, "81.2.69.142", "/after");
    request_from(&tarpit, "10.9.8.7", "/private");

    let db = tarpit.db();
    /// country_iso_code, country_name, city_name, latitude, longitude, asn_number, asn_organization
    type GeoRow = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
        Option<String>,
    );
    let row = |path: &str| -> GeoRow {
        db.query_row(
            "SELECT country_iso_code, country_name, city_name, latitude, longitude, asn_number,
                    asn_organization FROM events WHERE http_path = ?1",
            [path],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap()
    };
    let before = row("/before");
    assert_eq!(
        (before.0, before.5, before.6.as_deref()),
        (None, Some(1221), Some("Telstra Pty Ltd"))
    );
    let after = row("/after");
    assert_eq!(after.0.as_deref(), Some("GB"));
    assert_eq!(after.1.as_deref(), Some("United Kingdom"));
    assert_eq!(after.2.as_deref(), Some("London"));
    assert_eq!((after.3, after.4), (Some(51.5142), Some(-0.0931)));
    assert_eq!(row("/private"), (None, None, None, None, None, None, None));
    assert!(
        tarpit.stderr().contains("GeoIP city_db: loaded"),
        "{}",
        tarpit.stderr()
    );

    let is_after = |l: &serde_json::Value| l["event"] == "request" && l["http_path"] == "/after";
    let line = tarpit
        .wait_json_lines(|lines| lines.iter().any(is_after))
        .into_iter()
        .find(is_after)
        .unwrap();
    assert_eq!(line["client_ip"], "81.2.69.142");
    assert_eq!(line["country_iso_code"], "GB");
    assert_eq!(line["city_name"], "London");
}
