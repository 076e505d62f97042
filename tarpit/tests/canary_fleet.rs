//! Canary tokens across a fleet, with Debian's ClickHouse 18.16 started per test and two
//! sensors sharing one key: a token sensor A served is recognised on sensor B, and B joins
//! the two addresses with A named in the evidence; both sensors' issues and sightings reach the
//! store once each.

mod common;

use std::path::Path;
use std::time::Duration;

use common::clickhouse::{ClickHouse, PASSWORD, SERVER, ship_section};
use common::netns::prerequisites_met;
use common::{Tarpit, run_tool, wait_for};

const KEY: &str = "a fleet's shared canary key, 32 bytes";

fn sensor(dir: &Path, id: &str, server: &ClickHouse) -> Tarpit {
    let config = format!(
        "[sensor]\nid = \"{id}\"\n[server]\nworkers = 2\n[tarpit]\nmode = \"adaptive\"\n\
         response_delay = 0.01\nmax_response_bytes = 10\n{}",
        ship_section(server, "")
    );
    std::fs::write(dir.join("tarpit.toml"), config).unwrap();
    let env = [
        ("TARPIT_CLICKHOUSE_PASSWORD", PASSWORD),
        ("TARPIT_CANARY_KEY", KEY),
    ];
    Tarpit::launch(dir, &env, &["--config", "tarpit.toml"], 0)
}

/// curl from loopback address `from` for `path` on `tarpit` (`args`: curl's own); its stdout.
fn curl(from: &str, tarpit: &Tarpit, path: &str, args: &str) -> String {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "curl -s --max-time 20 --interface {from} {args} http://{}{path}",
                tarpit.addr
            ),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_token_served_by_one_sensor_joins_addresses_on_another() {
    if !prerequisites_met(&[SERVER, "curl"]) {
        return;
    }
    let server = ClickHouse::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = sensor(dir_a.path(), "sensor-a", &server);
    let b = sensor(dir_b.path(), "sensor-b", &server);
    let env = curl("127.0.0.2", &a, "/.env", "");
    let value = |key: &str| {
        env.lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {env}"))
            .to_owned()
    };
    let (password, key_id) = (value("DB_PASSWORD="), value("AWS_ACCESS_KEY_ID="));
    // A ships who it issued the tokens to; B reads them from the store (every 0.2 s).
    wait_for(Duration::from_secs(60), || {
        let n: i64 = server
            .query("SELECT count() FROM tarpit.canary_tokens WHERE sensor_id = 'sensor-a'")
            .trim()
            .parse()
            .ok()?;
        (n >= 4).then_some(())
    })
    .expect("sensor A's issues in ClickHouse");
    // Another address uses the password on B, until B recognises it.
    let seen = wait_for(Duration::from_secs(60), || {
        curl(
            "127.0.0.3",
            &b,
            "/admin/",
            &format!("-u ops:{password} -o /dev/null"),
        );
        std::thread::sleep(Duration::from_millis(300));
        (b.count("SELECT COUNT(*) FROM token_sightings") > 0).then_some(())
    });
    assert!(seen.is_some(), "sensor B never recognised sensor A's token");
    let (issued_by, issued_to, client, merged): (String, String, String, i64) = b
        .db()
        .query_row(
            "SELECT issued_by, issued_to, client_ip, merged FROM token_sightings \
             ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (
            issued_by.as_str(),
            issued_to.as_str(),
            client.as_str(),
            merged
        ),
        ("sensor-a", "127.0.0.2", "127.0.0.3", 1)
    );
    assert_eq!(
        b.count(
            "SELECT COUNT(DISTINCT actor_id) FROM actor_clients \
             WHERE client_ip IN ('127.0.0.2', '127.0.0.3')"
        ),
        1
    );
    let evidence: String = b
        .db()
        .query_row("SELECT evidence FROM actor_merges", [], |r| r.get(0))
        .unwrap();
    assert!(
        evidence.contains("issued to 127.0.0.2 by sensor sensor-a"),
        "{evidence}"
    );
    // A never saw the sighting; the store has B's sightings once each (a try that raced the
    // recognition may have made a second, which merges nothing), the merging one among them.
    assert_eq!(a.count("SELECT COUNT(*) FROM token_sightings"), 0);
    wait_for(Duration::from_secs(60), || {
        let merging = server.query(
            "SELECT sensor_id, issued_by, issued_to, client_ip FROM tarpit.token_sightings \
             FINAL WHERE merged = 1 FORMAT TabSeparated",
        );
        let stored: i64 = server
            .query("SELECT count() FROM tarpit.token_sightings FINAL")
            .trim()
            .parse()
            .ok()?;
        let local = b.count("SELECT COUNT(*) FROM token_sightings");
        (stored == local && merging.trim() == "sensor-b\tsensor-a\t127.0.0.2\t127.0.0.3")
            .then_some(())
    })
    .expect("B's sightings in ClickHouse, once each");
    // A third address, first on its own (its row shipped), then using the AWS key id on A:
    // joined there, and its shipped row is shipped again with its new actor.
    curl("127.0.0.4", &a, "/", "-o /dev/null");
    let shipped = |sql: &str| -> i64 { server.query(sql).trim().parse().unwrap_or(-1) };
    wait_for(Duration::from_secs(60), || {
        (shipped(
            "SELECT count() FROM tarpit.requests FINAL              WHERE sensor_id = 'sensor-a' AND client_ip = '127.0.0.4'",
        ) == 1)
            .then_some(())
    })
    .expect("127.0.0.4's first row shipped");
    curl(
        "127.0.0.4",
        &a,
        "/portal-prod-backups/",
        &format!(
            "-H 'Authorization: AWS4-HMAC-SHA256 Credential={key_id}/20261206/eu-west-1/s3/aws4_request' -o /dev/null"
        ),
    );
    a.wait_count("SELECT COUNT(*) FROM actor_merges", 1);
    let actor = a.count("SELECT actor_id FROM actor_clients WHERE client_ip = '127.0.0.2'");
    assert_eq!(
        a.count("SELECT COUNT(DISTINCT actor_id) FROM events WHERE client_ip = '127.0.0.4'"),
        1
    );
    wait_for(Duration::from_secs(60), || {
        let stale = shipped(&format!(
            "SELECT count() FROM tarpit.requests FINAL WHERE sensor_id = 'sensor-a' \
             AND client_ip IN ('127.0.0.2', '127.0.0.4') AND actor_id != {actor}"
        ));
        let all = shipped(
            "SELECT count() FROM tarpit.requests FINAL WHERE sensor_id = 'sensor-a' \
             AND client_ip IN ('127.0.0.2', '127.0.0.4')",
        );
        (stale == 0 && all == 3).then_some(())
    })
    .expect("A's rows of both addresses in the store with one actor");
    // Across the fleet, the three addresses are one actor, seen by both sensors.
    let fleet = wait_for(Duration::from_secs(60), || {
        let text = run_tool(
            dir_b.path(),
            &["--config", "tarpit.toml", "actors", "--fleet"],
            &[("TARPIT_CLICKHOUSE_PASSWORD", PASSWORD)],
        );
        text.contains("fleet actor 1: 3 addresses, sensors sensor-a, sensor-b")
            .then_some(text)
    })
    .expect("the fleet's actor of three addresses");
    assert!(
        fleet.contains("addresses: 127.0.0.2, 127.0.0.3, 127.0.0.4"),
        "{fleet}"
    );
    // A's four issues of the .env (two passwords, the AWS key id and secret) are there once.
    let issues = server.query(
        "SELECT sensor_id, count() FROM tarpit.canary_tokens FINAL GROUP BY sensor_id \
         ORDER BY sensor_id FORMAT TabSeparated",
    );
    assert!(issues.starts_with("sensor-a\t4\n"), "{issues}");
}
