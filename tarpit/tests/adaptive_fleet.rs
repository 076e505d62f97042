//! A fleet learns together (the adaptive mode's `crate::ship::fleet`): two real sensors and
//! Debian's ClickHouse (18.16, started with a private directory). Sensor a learns when a
//! scanner's User-Agent gives up, from three networks, and ships the figure; sensor b has never
//! seen the scanner and plans its first request with the fleet's figure: the median of the
//! other sensors' figures, which one poisoned sensor does not move.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::clickhouse::{ClickHouse, PASSWORD, SERVER, ship_section};
use common::netns::prerequisites_met;
use common::{Tarpit, wait_for};

const PASSWORD_VAR: &str = "TARPIT_CLICKHOUSE_PASSWORD";

/// The scanner nothing is known about in advance (no prior, no classification).
const SCANNER: &str = "fleetscan/1.0";

fn start_sensor(dir: &Path, id: &str, ship: &str) -> Tarpit {
    // A drip interval of 0.5 s: the floor is 2 s, give-ups under 1 s are not timeouts.
    let config = format!(
        "[tarpit]\nmode = \"adaptive\"\nresponse_delay = 0.5\n\
         [adaptive]\nfleet_interval = 0.5\nfleet_min_sensors = 2\n\
         [sensor]\nid = \"{id}\"\n{ship}"
    );
    std::fs::write(dir.join("tarpit.toml"), config).unwrap();
    Tarpit::launch(
        dir,
        &[(PASSWORD_VAR, PASSWORD)],
        &["--config", "tarpit.toml"],
        0,
    )
}

/// Sends a GET for `path` from `source` (a loopback address: another network).
fn connect_from(source: &str, tarpit: &Tarpit, path: &str) -> TcpStream {
    let mut stream = common::connect_from(source, tarpit.addr);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: {SCANNER}\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Sends requests to `tarpit` until one is planned with a fleet figure `accept`s; that plan.
fn fleet_plan(tarpit: &Tarpit, accept: impl Fn(f64) -> bool) -> Option<(f64, String)> {
    let mut attempt = 0;
    wait_for(Duration::from_secs(60), || {
        attempt += 1;
        let path = format!("/probe{attempt}");
        let _held = connect_from("127.0.30.1", tarpit, &path);
        tarpit.wait_count(
            &format!("SELECT COUNT(*) FROM events WHERE http_path = '{path}'"),
            1,
        );
        let plan: Vec<(Option<f64>, Option<String>)> = tarpit.rows(&format!(
            "SELECT giveup_limit_s, giveup_basis FROM events WHERE http_path = '{path}'"
        ));
        match plan.into_iter().next() {
            Some((Some(limit), Some(basis))) if basis.starts_with("fleet") && accept(limit) => {
                Some((limit, basis))
            }
            _ => {
                std::thread::sleep(Duration::from_millis(300));
                None
            }
        }
    })
}

#[test]
fn a_sensor_plans_a_scanner_it_never_saw_with_the_fleets_median() {
    if !prerequisites_met(&[SERVER, "curl"]) {
        return;
    }
    let server = ClickHouse::start();
    let ship = ship_section(&server, "");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_sensor(dir_a.path(), "edge-a", &ship);
    // Sensor a: the scanner gives up after 3 s, from three networks.
    let scan =
        format!("GET /scan HTTP/1.1\r\nHost: t\r\nUser-Agent: {SCANNER}\r\nAccept: */*\r\n\r\n");
    a.give_up_from(
        &["127.0.21.1", "127.0.22.1", "127.0.23.1"],
        "/scan",
        &scan,
        Duration::from_secs(3),
    );
    // Its figure reaches the store: the figure, never the samples or the clients.
    let shipped = wait_for(Duration::from_secs(30), || {
        let text = server.query(&format!(
            "SELECT give_up_s FROM tarpit.giveup_figures FINAL
             WHERE sensor_id = 'edge-a' AND kind = 'user_agent' AND name = '{SCANNER}'
             FORMAT TabSeparated"
        ));
        text.trim().parse::<f64>().ok()
    })
    .unwrap_or_else(|| panic!("no figure shipped\n{}", a.stderr()));
    assert!((2.9..3.6).contains(&shipped), "{shipped}");
    assert_eq!(
        server.count(
            "SELECT count() FROM tarpit.giveup_figures
             WHERE kind NOT IN ('tool', 'user_agent') OR name LIKE '%127.0.%'"
        ),
        0
    );
    // A third sensor's figure, 5 s: with two sensors the fleet takes the later one.
    server.query(&format!(
        "INSERT INTO tarpit.giveup_figures VALUES
         ('edge-c', 'user_agent', '{SCANNER}', '', 5.0, 4, now())"
    ));
    let b = start_sensor(dir_b.path(), "edge-b", &ship);
    let (limit, basis) = fleet_plan(&b, |limit| limit > 4.0)
        .unwrap_or_else(|| panic!("b never planned with the fleet\n{}", b.stderr()));
    assert_eq!(basis, "fleet_user_agent");
    assert!((limit - 5.0).abs() < 1e-3, "{limit}");
    // A poisoned sensor claims the scanner gives up at once: the median of three is sensor a's
    // honest figure, not the poison (which the floor would have turned into 2 s).
    server.query(&format!(
        "INSERT INTO tarpit.giveup_figures VALUES
         ('evil', 'user_agent', '{SCANNER}', '', 0.1, 1000, now())"
    ));
    let (limit, _) = fleet_plan(&b, |limit| limit < 4.0)
        .unwrap_or_else(|| panic!("b never read the third figure\n{}", b.stderr()));
    assert!((limit - shipped).abs() < 1e-3, "{limit} vs {shipped}");
    // Sensor b knew nothing of its own: it shipped nothing.
    assert_eq!(
        server.count("SELECT count() FROM tarpit.giveup_figures WHERE sensor_id = 'edge-b'"),
        0
    );
}
