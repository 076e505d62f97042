//! What a client sees on the wire, and what the tarpit records about it.

mod common;

use std::io::Write;

use common::{FAST, FAST_BODY, Tarpit, read_response, split_head};

/// Checks the head lines except the Date value, which must be a valid HTTP date.
fn assert_head(head: &str, expected_lines: &[&str]) {
    let lines: Vec<&str> = head.trim_end().split("\r\n").collect();
    let (date_lines, others): (Vec<&str>, Vec<&str>) =
        lines.iter().partition(|l| l.starts_with("Date: "));
    assert_eq!(date_lines.len(), 1, "{head}");
    httpdate::parse_http_date(&date_lines[0]["Date: ".len()..]).expect("valid Date header");
    assert_eq!(others, expected_lines, "{head}");
    // Date sits between Transfer-Encoding (or Connection) and Server, as in the replaced tool.
    let date_index = lines.iter().position(|l| l.starts_with("Date: ")).unwrap();
    assert_eq!(date_index, lines.len() - 2);
}

#[test]
fn http11_gets_the_exact_chunked_drip() {
    let tarpit = Tarpit::start(FAST);
    let mut stream = tarpit.connect();
    stream
        .write_all(
            b"GET /wp-login.php?x=1 HTTP/1.1\r\nHost: sensor\r\nUser-Agent: zgrab/0.x\r\n\r\n",
        )
        .unwrap();
    let started = std::time::Instant::now();
    let response = read_response(&mut stream);
    let (head, body) = split_head(&response);
    assert_head(
        &head,
        &[
            "HTTP/1.1 200 OK",
            "Content-Type: text/plain",
            "Connection: keep-alive",
            "Transfer-Encoding: chunked",
            "Server: nginx",
        ],
    );
    assert_eq!(body, FAST_BODY);
    // Ten ticks 50 ms apart, then the end: the drip really is slow.
    assert!(started.elapsed() >= std::time::Duration::from_millis(450));
}

#[test]
fn http10_gets_raw_bytes_then_close() {
    let tarpit = Tarpit::start(&[FAST, &["--server-header", "Apache"]].concat());
    let mut stream = tarpit.connect();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let response = read_response(&mut stream); // ends at EOF: the server closed
    let (head, body) = split_head(&response);
    assert_head(
        &head,
        &[
            "HTTP/1.0 200 OK",
            "Content-Type: text/plain",
            "Connection: close",
            "Server: Apache",
        ],
    );
    assert_eq!(body, b"..........");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'response_complete'",
        1,
    );
}

#[test]
fn keep_alive_requests_are_tarpitted_again() {
    let tarpit = Tarpit::start(FAST);
    let mut stream = tarpit.connect();
    for path in ["/first", "/second"] {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (head, body) = split_head(&read_response(&mut stream));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(body, FAST_BODY);
    }
    // Pipelined: two requests in one write are answered one after the other.
    stream
        .write_all(b"GET /third HTTP/1.1\r\n\r\nGET /fourth HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let third = read_response(&mut stream);
    assert!(third.ends_with(FAST_BODY));
    let fourth = read_response(&mut stream);
    assert!(split_head(&fourth).0.contains("Connection: close\r\n"));
    assert!(fourth.ends_with(FAST_BODY));
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'response_complete' AND requests = 4",
        1,
    );
    let db = tarpit.db();
    let mut stmt = db
        .prepare("SELECT request_seq, http_path, end_reason FROM events ORDER BY request_seq")
        .unwrap();
    let rows: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = [(1, "/first"), (2, "/second"), (3, "/third"), (4, "/fourth")];
    for ((seq, path, end), (want_seq, want_path)) in rows.iter().zip(expected) {
        assert_eq!(
            (*seq, path.as_str(), end.as_str()),
            (want_seq, want_path, "complete")
        );
    }
    assert_eq!(rows.len(), 4);
}

#[test]
fn idle_keep_alive_connection_closes_after_its_timeout() {
    let tarpit = Tarpit::start(&[FAST, &["--keepalive-timeout", "0.3"]].concat());
    let mut stream = tarpit.connect();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    // Nothing more is sent: the server closes (EOF) after the keep-alive timeout.
    assert!(read_response(&mut stream).is_empty());
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason = 'keepalive_timeout' AND requests = 1",
        1,
    );
}

#[test]
fn the_sqlite_row_has_every_seed_column_and_the_json_log_matches() {
    let tarpit = Tarpit::start(FAST);
    let mut stream = tarpit.connect();
    let client_port = stream.local_addr().unwrap().port();
    stream
        .write_all(
            b"POST /cgi-bin/luci?cmd=id&x=%20 HTTP/1.1\r\nHost: sensor\r\nUser-Agent: Mozilla/5.0 (scan)\r\n\
              Content-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
        )
        .unwrap();
    assert!(read_response(&mut stream).ends_with(FAST_BODY));
    drop(stream);
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason IS NOT NULL",
        1,
    );
    let db = tarpit.db();
    let row = db
        .query_row(
            "SELECT timestamp, client_ip, client_port, target_port, http_method, http_path,
                    http_query, user_agent, headers_json, response_status, bytes_sent,
                    duration_s, error_message, country_iso_code, asn_number,
                    reported_to_abuseipdb, abuseipdb_report_timestamp, end_reason, closed_at,
                    body_preview, body_sha256, body_length, http_version, local_port,
                    target_port_source
             FROM events",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, i64>(10)?,
                    r.get::<_, f64>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    (
                        r.get::<_, Option<String>>(13)?,
                        r.get::<_, Option<i64>>(14)?,
                        r.get::<_, i64>(15)?,
                        r.get::<_, Option<String>>(16)?,
                        r.get::<_, String>(17)?,
                        r.get::<_, String>(18)?,
                        r.get::<_, Vec<u8>>(19)?,
                        r.get::<_, String>(20)?,
                        r.get::<_, i64>(21)?,
                        r.get::<_, String>(22)?,
                        r.get::<_, i64>(23)?,
                        r.get::<_, String>(24)?,
                    ),
                ))
            },
        )
        .unwrap();
    let (
        ts,
        ip,
        port,
        target,
        method,
        path,
        query,
        ua,
        headers,
        status,
        sent,
        duration,
        error,
        rest,
    ) = row;
    humantime::parse_rfc3339(&ts).expect("RFC 3339 timestamp");
    assert!(ts.ends_with('Z'));
    assert_eq!(ip, "127.0.0.1");
    assert_eq!(port, i64::from(client_port));
    assert_eq!(target, i64::from(tarpit.addr.port()));
    assert_eq!(method, "POST");
    assert_eq!(path, "/cgi-bin/luci");
    assert_eq!(query, "cmd=id&x=%20");
    assert_eq!(ua, "Mozilla/5.0 (scan)");
    // The order the header lines arrived in, as in the JSON log (not sorted).
    assert!(
        headers
            .starts_with(r#"{"Host":"sensor","User-Agent":"Mozilla/5.0 (scan)","Content-Length""#),
        "{headers}"
    );
    let headers: serde_json::Value = serde_json::from_str(&headers).unwrap();
    assert_eq!(headers["Host"], "sensor");
    assert_eq!(headers["Content-Length"], "11");
    assert_eq!(status, 200);
    assert_eq!(sent, 10);
    assert!((0.45..5.0).contains(&duration), "{duration}");
    assert_eq!(error, None);
    let (country, asn, reported, report_ts, end, closed, body, sha, body_len, version, local, src) =
        rest;
    assert_eq!((country, asn, reported, report_ts), (None, None, 0, None));
    assert_eq!(end, "complete");
    humantime::parse_rfc3339(&closed).unwrap();
    assert_eq!(body, b"hello world");
    assert_eq!(
        sha,
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert_eq!(body_len, 11);
    assert_eq!(version, "HTTP/1.1");
    assert_eq!(local, i64::from(tarpit.addr.port()));
    // Not translated: whichever source is live agrees that the dialled port is the local one.
    assert!(
        ["ebpf", "original_dst", "local_port"].contains(&src.as_str()),
        "{src}"
    );
    let (ebpf_port, lookup, orig): (Option<i64>, Option<String>, Option<i64>) = db
        .query_row(
            "SELECT target_port_ebpf, ebpf_lookup, target_port_original_dst FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    if src == "ebpf" {
        assert_eq!(lookup.as_deref(), Some("untranslated"));
        assert_eq!(ebpf_port, Some(i64::from(tarpit.addr.port())));
    }
    assert!(orig.is_none() || orig == Some(i64::from(tarpit.addr.port())));

    // The JSON log tells the same story with the same field names.
    let lines =
        tarpit.wait_json_lines(|lines| lines.iter().any(|l| l["event"] == "connection_closed"));
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "connection_opened",
            "request",
            "response_end",
            "connection_closed"
        ]
    );
    let request = &lines[1];
    assert_eq!(request["http_path"], "/cgi-bin/luci");
    assert_eq!(request["client_port"], client_port);
    assert_eq!(request["headers_json"]["User-Agent"], "Mozilla/5.0 (scan)");
    assert_eq!(request["body_preview"], "hello world");
    assert_eq!(request["timestamp"], ts);
    assert_eq!(lines[2]["bytes_sent"], 10);
    assert_eq!(lines[3]["end_reason"], "client_closed");
    let conn_ids: Vec<&serde_json::Value> = lines.iter().map(|l| &l["conn_id"]).collect();
    assert!(conn_ids.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn sigterm_ends_open_responses_and_flushes_within_five_seconds() {
    let mut tarpit = Tarpit::start(&["--response-delay", "0.2", "--max-response-bytes", "1000"]);
    let mut streams: Vec<_> = (0..5)
        .map(|i| {
            let mut s = tarpit.connect();
            write!(s, "GET /held/{i} HTTP/1.1\r\n\r\n").unwrap();
            s
        })
        .collect();
    // A connection that has sent nothing yet is also ended.
    let _silent = tarpit.connect();
    tarpit.wait_count("SELECT COUNT(*) FROM events", 5);
    let (status, took) = tarpit.terminate(std::time::Duration::from_secs(5));
    assert!(status.success(), "{status:?}: {}", tarpit.stderr());
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    for stream in &mut streams {
        // Each client got a properly terminated response.
        let response = read_response(stream);
        assert!(response.ends_with(b"\r\n0\r\n\r\n"), "{response:?}");
    }
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE end_reason = 'shutdown'"),
        6
    );
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM events WHERE error_message = 'shutdown_before_request'"),
        1
    );
    assert_eq!(
        tarpit.count("SELECT COUNT(*) FROM connections WHERE end_reason = 'shutdown'"),
        6
    );
    assert!(tarpit.stderr().contains("every queued event written"));
}

#[test]
fn sighup_reopens_the_json_log_and_nothing_is_lost_across_a_rotation() {
    let tarpit = Tarpit::start(FAST);
    let one_request = |path: &str| {
        let mut stream = tarpit.connect();
        write!(stream, "GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        read_response(&mut stream);
    };
    one_request("/before-rotation");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason IS NOT NULL",
        1,
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    // logrotate: rename, then SIGHUP.
    let log = tarpit.dir.join("logs/tarpit.log");
    let rotated = tarpit.dir.join("logs/tarpit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tarpit.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    one_request("/after-rotation");
    tarpit.wait_count(
        "SELECT COUNT(*) FROM connections WHERE end_reason IS NOT NULL",
        2,
    );
    let read = |path: &std::path::Path| -> Vec<serde_json::Value> {
        common::wait_for(std::time::Duration::from_secs(30), || {
            let text = std::fs::read_to_string(path).ok()?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= 4).then_some(lines)
        })
        .unwrap_or_default()
    };
    let old = read(&rotated);
    let new = read(&log);
    // Each connection's four events are all in one file or the other.
    assert_eq!(old.len(), 4, "{old:?}");
    assert_eq!(new.len(), 4, "{new:?}");
    assert_eq!(old[1]["http_path"], "/before-rotation");
    assert_eq!(new[1]["http_path"], "/after-rotation");
    assert!(tarpit.stderr().contains("reopened the JSON log"));
}
