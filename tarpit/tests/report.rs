//! `tarpit report`: one self-contained, script-free HTML file, rendered by a real browser.

mod common;

use std::path::Path;
use std::process::Command;

use common::dataset::{self, HOSTILE_PATH};

fn report(db: &Path, out: &Path, extra: &[&str]) -> String {
    let result = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args([
            "report",
            "--db",
            db.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn the_report_is_self_contained_and_escapes_what_attackers_sent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    dataset::synthetic_db(&db, 400);
    let html = report(&db, &dir.path().join("report.html"), &[]);

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("default-src 'none'"),
        "a CSP forbids loading anything"
    );
    assert!(
        !html.contains("<script"),
        "no script, and the hostile path is escaped"
    );
    assert!(
        html.contains("&lt;script&gt;alert("),
        "the path is shown, escaped"
    );
    assert!(!html.contains(HOSTILE_PATH));
    // Nothing fetched at view time: the only URL is the SVG namespace.
    let urls = html.matches("http://").count() + html.matches("https://").count();
    let namespaces = html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(
        urls,
        namespaces + html.matches("http://10.20.30.40").count()
    );
    // Activity, map, four top charts, eight tag charts (the CRS rules and scores among them)
    // and the duration histogram.
    assert_eq!(html.matches("<svg").count(), 15);
    assert!(html.contains("Attack classes") && html.contains("Seconds held per tool"));
    assert!(html.contains("OWASP CRS rules fired") && html.contains("CRS anomaly score"));
    // The eight places of the dataset, three latitudes each.
    assert_eq!(html.matches("<circle").count(), 24);
    assert!(html.contains("<b>400</b><span class=\"muted\">requests</span>"));
    for label in [
        "Top countries",
        "Top ASNs",
        "Top target ports",
        "Top paths",
        "Time held per request",
    ] {
        assert!(html.contains(label), "{label}");
    }
    assert!(html.contains("AS64496 Example Net 0"));

    // --since narrows it; an empty period still renders, saying so.
    let later = report(
        &db,
        &dir.path().join("later.html"),
        &["--since", "2030-01-01T00:00:00Z"],
    );
    assert!(later.contains("<b>0</b><span class=\"muted\">requests</span>"));
    assert!(later.contains("no requests in this period"));
    assert!(later.contains("since 2030-01-01T00:00:00"));
}

/// Headless Chromium, in a network namespace with no network at all, loads the report without
/// a console error or a blocked load, lays out every chart, and takes the screenshot kept in
/// `docs/` (written there when `TARPIT_UPDATE_SCREENSHOT` is set).
#[test]
fn chromium_renders_the_report_offline() {
    if !common::netns::prerequisites_met(&["chromium", "ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    dataset::synthetic_db(&db, 2000);
    let page = dir.path().join("report.html");
    report(&db, &page, &[]);
    let namespace = format!("tarpit-report-{}", std::process::id());
    common::netns::sh(&format!("ip netns add {namespace}"));
    let chromium = |extra: &str| {
        Command::new("ip")
            .args(["netns", "exec", &namespace, "sh", "-c"])
            .arg(format!(
                "chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
                 --user-data-dir={profile} --window-size=1100,3900 --enable-logging=stderr \
                 --v=0 {extra} file://{page}",
                profile = dir.path().join("profile").display(),
                page = page.display(),
            ))
            .output()
            .unwrap()
    };
    let png = dir.path().join("report.png");
    let shot = chromium(&format!("--screenshot={}", png.display()));
    let dom = chromium("--dump-dom");
    common::netns::sh(&format!("ip netns del {namespace}"));

    let log =
        String::from_utf8_lossy(&shot.stderr).into_owned() + &String::from_utf8_lossy(&dom.stderr);
    assert!(shot.status.success() && dom.status.success(), "{log}");
    // Chromium's own pages (chrome://...) log about themselves, e.g. "Slow network is detected"
    // while its UI font loads on a busy machine; only what concerns the report counts.
    let about_the_report = |line: &&str| !line.contains("source: chrome://");
    for bad in ["CONSOLE", "Refused to", "Uncaught", "ERR_"] {
        let offending: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(bad))
            .filter(about_the_report)
            .collect();
        assert!(
            offending.is_empty(),
            "browser reported {bad}: {offending:?}"
        );
    }
    let rendered = String::from_utf8_lossy(&dom.stdout);
    assert!(rendered.contains("<h1>tarpit report</h1>"), "{rendered}");
    assert_eq!(rendered.matches("<svg").count(), 15);

    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1100, 3900));
    assert!(
        bytes.len() > 50_000,
        "a page of charts, not a blank one ({} bytes)",
        bytes.len()
    );
    if std::env::var_os("TARPIT_UPDATE_SCREENSHOT").is_some() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.png");
        std::fs::copy(&png, docs).unwrap();
    }
}
