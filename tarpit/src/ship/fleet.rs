//! The fleet learns together: each sensor in the adaptive mode ships its give-up figures to the
//! central ClickHouse and reads back what the other sensors learned, so a sensor that has never
//! seen a tool plans its first request with the fleet's figure.
//!
//! Every `[adaptive] fleet_interval` seconds (300 by default) the exchange
//! 1. reads this sensor's tool and User-Agent families that have a figure from its SQLite
//!    (`giveup_families`, written by the SQLite sink), and inserts them into
//!    `[ship.clickhouse] figures_table` (`giveup_figures`, in `deploy/clickhouse/requests.sql`):
//!    figures only, never raw samples or client addresses;
//! 2. reads every other sensor's latest figure per family from the last 7 days, and hands the
//!    learner, per family, the median across sensors ([`fleet_figures`]).
//!
//! How it resists poisoning: a sensor's figure already needs give-ups from several client
//! networks (`adaptive::sample`), so one client cannot make a sensor ship a figure. Across the
//! fleet, a family's figure is the median of the other sensors' figures and needs at least
//! `[adaptive] fleet_min_sensors` (2) of them: from three sensors on, one poisoned sensor moves
//! it in neither direction; with two, the later figure is taken, so one sensor cannot shorten
//! another's plans. A sensor's own figure always beats the fleet's, a tool's prior bounds it
//! as it bounds a learned one (`adaptive::snapshot`), figures expire after 7 days, and what is
//! read is bounded ([`FLEET_ROWS`] rows, `max_families` families). Failures are logged (at
//! most once a minute) and retried at the next interval; recording never waits on them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use super::clickhouse::ClickHouse;
use crate::adaptive::family::{FamilyKind, family_key};
use crate::adaptive::sample::SAMPLE_TTL;
use crate::adaptive::snapshot::FleetFigures;
use crate::log_throttle::LogThrottle;

/// Most per-sensor figure rows read from the store in one pass.
pub const FLEET_ROWS: usize = 100_000;

/// What the exchange needs, gathered at start.
#[derive(Debug)]
pub struct FleetSetup {
    /// The store.
    pub client: ClickHouse,
    /// `database.table` of the figures.
    pub table: String,
    /// This sensor's id (its rows are shipped under it and left out of the fleet's figure).
    pub sensor_id: String,
    /// The sensor's SQLite database (the learner's stored families).
    pub database: PathBuf,
    /// Seconds between exchanges.
    pub interval: Duration,
    /// Other sensors a family needs figures from before the fleet's figure is used.
    pub min_sensors: usize,
    /// Families kept from the fleet at most.
    pub max_families: usize,
}

impl FleetSetup {
    /// The exchange for `config`, or `None` unless the adaptive mode, `[ship.clickhouse]` and
    /// a non-zero `[adaptive] fleet_interval` are all set.
    pub fn from_config(
        config: &crate::config::Config,
        database: &std::path::Path,
    ) -> anyhow::Result<Option<Self>> {
        let ch = &config.ship.clickhouse;
        let adaptive = config.tarpit.mode == crate::config::TarpitMode::Adaptive;
        if !(adaptive && ch.enabled() && config.adaptive.fleet_interval > 0.0) {
            return Ok(None);
        }
        let password = crate::secret::Secret::from_env(super::clickhouse::PASSWORD_VAR);
        Ok(Some(Self {
            client: ClickHouse::new(ch, password)?,
            table: format!("{}.{}", ch.database, ch.figures_table),
            sensor_id: config.sensor.effective_id(),
            database: database.to_owned(),
            interval: Duration::from_secs_f64(config.adaptive.fleet_interval),
            min_sensors: config.adaptive.fleet_min_sensors as usize,
            max_families: config.adaptive.max_families,
        }))
    }
}

/// One of this sensor's figures, as shipped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LocalFigure {
    /// `tool` or `user_agent`.
    pub kind: String,
    /// The tool name or User-Agent.
    pub name: String,
    /// For a User-Agent: the tool its classification names (empty if none).
    pub tool: String,
    /// The figure this sensor plans with (before floors and priors).
    pub give_up_s: f64,
    /// Give-ups the family has seen on this sensor.
    pub give_ups: i64,
}

/// One other sensor's latest figure for a family, as read from the store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SensorFigure {
    /// `tool` or `user_agent`.
    pub kind: String,
    /// The tool name or User-Agent.
    pub name: String,
    /// Which sensor.
    pub sensor_id: String,
    /// Its figure.
    pub give_up_s: f64,
    /// For a User-Agent: the tool it was classified as (empty if none).
    #[serde(default)]
    pub tool: String,
}

/// This sensor's tool and User-Agent figures from its `giveup_families` table, most recently
/// seen first, at most `limit`, none older than the samples' lifetime.
pub fn local_figures(
    conn: &rusqlite::Connection,
    limit: usize,
    now: i64,
) -> rusqlite::Result<Vec<LocalFigure>> {
    let mut statement = conn.prepare(
        "SELECT kind, name, COALESCE(tool, ''), give_up_s, give_ups FROM giveup_families
         WHERE kind IN ('tool', 'user_agent') AND give_up_s IS NOT NULL AND last_seen > ?1
         ORDER BY last_seen DESC LIMIT ?2",
    )?;
    let rows = statement.query_map(rusqlite::params![now - SAMPLE_TTL, limit as i64], |row| {
        Ok(LocalFigure {
            kind: row.get(0)?,
            name: row.get(1)?,
            tool: row.get(2)?,
            give_up_s: row.get(3)?,
            give_ups: row.get(4)?,
        })
    })?;
    rows.collect()
}

/// The INSERT body for `figures`: one JSON object per line, stamped with the sensor and time.
pub fn figures_body(sensor_id: &str, figures: &[LocalFigure], now: i64) -> Vec<u8> {
    let mut body = Vec::new();
    for figure in figures {
        let row = serde_json::json!({
            "sensor_id": sensor_id,
            "kind": figure.kind,
            "name": figure.name,
            "tool": figure.tool,
            "give_up_s": figure.give_up_s,
            "give_ups": figure.give_ups.max(0),
            "updated_at": now,
        });
        serde_json::to_writer(&mut body, &row).expect("a JSON value serialises");
        body.push(b'\n');
    }
    body
}

/// The query for every other sensor's latest figure per family (newest families first).
/// `sensor_id` is a validated token (`A-Z a-z 0-9 . _ -`), `table` a validated identifier.
pub fn fleet_query(table: &str, sensor_id: &str) -> String {
    format!(
        "SELECT kind, name, sensor_id, argMax(give_up_s, updated_at) AS give_up_s, \
         argMax(tool, updated_at) AS tool, max(updated_at) AS seen \
         FROM {table} WHERE sensor_id != '{sensor_id}' AND updated_at > now() - {SAMPLE_TTL} \
         GROUP BY kind, name, sensor_id ORDER BY seen DESC LIMIT {FLEET_ROWS} \
         FORMAT JSONEachRow"
    )
}

/// The fleet's figure per family: the median of the sensors' figures (the upper middle for an
/// even count), for families with figures from at least `min_sensors` sensors; at most
/// `max_families` families, in the order they first appear (newest first).
pub fn fleet_figures(
    rows: &[SensorFigure],
    min_sensors: usize,
    max_families: usize,
) -> FleetFigures {
    let mut order: Vec<(FamilyKind, &str)> = Vec::new();
    let mut by_family: HashMap<(FamilyKind, &str), Vec<(f64, &str)>> = HashMap::new();
    for row in rows {
        let Some(kind) = FamilyKind::from_name(&row.kind) else {
            continue;
        };
        let usable = matches!(kind, FamilyKind::Tool | FamilyKind::UserAgent)
            && row.give_up_s.is_finite()
            && row.give_up_s > 0.0;
        if !usable {
            continue;
        }
        let entry = by_family.entry((kind, row.name.as_str())).or_default();
        if entry.is_empty() {
            order.push((kind, row.name.as_str()));
        }
        entry.push((row.give_up_s, row.tool.as_str()));
    }
    let mut fleet = FleetFigures::default();
    for family in order {
        if fleet.limits.len() >= max_families {
            break;
        }
        let mut figures = by_family.remove(&family).unwrap_or_default();
        if figures.len() < min_sensors.max(1) {
            continue;
        }
        figures.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (median, tool) = figures[figures.len() / 2];
        let key = family_key(family.0, family.1);
        fleet.limits.insert(key, median as f32);
        if family.0 == FamilyKind::UserAgent && !tool.is_empty() {
            fleet.tools.insert(key, family_key(FamilyKind::Tool, tool));
        }
    }
    fleet
}

/// Runs the exchange until `stop`: ships this sensor's figures, reads the fleet's, publishes
/// them to the learner through `figures`.
pub async fn run(
    setup: Arc<FleetSetup>,
    figures: Arc<watch::Sender<Arc<FleetFigures>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut errors = LogThrottle::new(Duration::from_secs(60));
    loop {
        match exchange(&setup).await {
            Ok(fleet) => {
                metrics::gauge!("tarpit_fleet_families").set(fleet.limits.len() as f64);
                figures.send_replace(Arc::new(fleet));
            }
            Err(error) => {
                metrics::counter!("tarpit_fleet_failures_total").increment(1);
                if let Some(suppressed) = errors.check(Instant::now()) {
                    tracing::warn!(
                        suppressed,
                        "fleet give-up figures not exchanged: {error:#}; planning with this \
                         sensor's own figures and the last fleet figures read"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(setup.interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One exchange: ship, then read.
async fn exchange(setup: &FleetSetup) -> anyhow::Result<FleetFigures> {
    use anyhow::Context;
    let now = super::outbox::unix_now() as i64;
    let (database, limit) = (setup.database.clone(), setup.max_families);
    let local = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open_with_flags(
            &database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        local_figures(&conn, limit, now)
    })
    .await
    .expect("reading figures does not panic")
    .context("reading this sensor's give-up figures")?;
    if !local.is_empty() {
        let body = figures_body(&setup.sensor_id, &local, now);
        setup
            .client
            .insert_into(&setup.table, body)
            .await
            .context("shipping give-up figures")?;
    }
    let text = setup
        .client
        .select(fleet_query(&setup.table, &setup.sensor_id))
        .await
        .context("reading the fleet's give-up figures")?;
    let rows: Vec<SensorFigure> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    Ok(fleet_figures(&rows, setup.min_sensors, setup.max_families))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, name: &str, sensor: &str, give_up_s: f64) -> SensorFigure {
        SensorFigure {
            kind: kind.into(),
            name: name.into(),
            sensor_id: sensor.into(),
            give_up_s,
            tool: String::new(),
        }
    }

    #[test]
    fn the_fleets_figure_is_the_median_and_one_poisoned_sensor_cannot_move_it() {
        let key = family_key(FamilyKind::Tool, "custom");
        let honest = [
            row("tool", "custom", "a", 9.0),
            row("tool", "custom", "b", 10.0),
        ];
        // Two sensors: the later figure (one sensor cannot shorten the other's plans).
        assert_eq!(fleet_figures(&honest, 2, 100).limits[&key], 10.0);
        // One sensor is not enough when two are asked for.
        assert!(fleet_figures(&honest[..1], 2, 100).limits.is_empty());
        // A third, poisoned sensor, either way: the median stays an honest figure.
        for poison in [0.1, 5_000.0] {
            let mut rows = honest.to_vec();
            rows.push(row("tool", "custom", "evil", poison));
            let figure = fleet_figures(&rows, 2, 100).limits[&key];
            assert!((9.0..=10.0).contains(&figure), "{poison}: {figure}");
        }
        // Thousands of rows from one sensor for other families change nothing for this one,
        // and the families read are bounded.
        let mut rows = honest.to_vec();
        rows.extend((0..5000).map(|i| row("user_agent", &format!("x/{i}"), "evil", 0.1)));
        let fleet = fleet_figures(&rows, 1, 50);
        assert_eq!(fleet.limits.len(), 50);
        let fleet = fleet_figures(&rows, 2, 10_000);
        assert_eq!(fleet.limits.len(), 1, "one sensor's families need a second");
        assert_eq!(fleet.limits[&key], 10.0);
    }

    #[test]
    fn address_and_header_order_figures_and_nonsense_are_not_taken() {
        let rows = [
            row("address", "192.0.2.1", "a", 3.0),
            row("header_order", "host,user-agent", "a", 3.0),
            row("tool", "x", "a", f64::NAN),
            row("tool", "y", "a", -1.0),
            row("nonsense", "z", "a", 3.0),
        ];
        assert!(fleet_figures(&rows, 1, 100).limits.is_empty());
    }

    #[test]
    fn a_user_agents_tool_travels_with_its_figure() {
        let mut ua = row("user_agent", "Custom/1", "a", 7.0);
        ua.tool = "custom".into();
        let fleet = fleet_figures(&[ua], 1, 100);
        let key = family_key(FamilyKind::UserAgent, "Custom/1");
        assert_eq!(fleet.tools[&key], family_key(FamilyKind::Tool, "custom"));
    }

    #[test]
    fn local_figures_are_the_tool_and_user_agent_families_with_a_recent_figure() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let now = 1_800_000_000;
        for (kind, name, give_up, last_seen) in [
            ("tool", "gobuster", Some(9.5), now),
            ("user_agent", "gobuster/3.6", Some(9.6), now - 10),
            ("user_agent", "nofigure/1", None, now),
            ("address", "192.0.2.1", Some(3.0), now),
            ("tool", "stale", Some(4.0), now - SAMPLE_TTL - 1),
        ] {
            conn.execute(
                "INSERT INTO giveup_families VALUES (?1, ?2, ?3, '[]', 3, 0, 0, 'gobuster', ?4)",
                rusqlite::params![kind, name, give_up, last_seen],
            )
            .unwrap();
        }
        let figures = local_figures(&conn, 100, now).unwrap();
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["gobuster", "gobuster/3.6"]);
        let body = String::from_utf8(figures_body("edge-a", &figures, now)).unwrap();
        assert_eq!(body.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
        assert_eq!(first["sensor_id"], "edge-a");
        assert_eq!(first["give_up_s"], 9.5);
        assert_eq!(first["updated_at"], now);
        assert!(!body.contains("recent"), "no samples leave the sensor");
    }
}
