//! `tarpit report`: one self-contained HTML file with what the tarpit caught: totals, activity
//! over time, top countries, ASNs, ports and paths, how long clients were held, a world map of
//! where they came from, and the largest actors canary tokens joined.
//!
//! Self-contained means viewable offline and safe to mail around: the charts are inline SVG
//! drawn with `plotters`, the map's outline is embedded ([`world`]), there is no script, and a
//! Content-Security-Policy forbids loading anything. Every string in it came from an attacker
//! (paths, User-Agents) and is escaped before it reaches the page.

mod charts;
pub mod world;

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::analysis::stats::Stats;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The database could not be opened or has a schema this build does not read.
    #[error(transparent)]
    Open(#[from] crate::db::DbError),
    /// A query failed.
    #[error(transparent)]
    Database(#[from] rusqlite::Error),
    /// A chart could not be drawn.
    #[error("drawing the {chart} chart: {reason}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// What failed.
        reason: String,
    },
}

/// The duration buckets of the "time held" histogram: (upper bound in seconds, label).
const DURATION_BUCKETS: &[(f64, &str)] = &[
    (1.0, "< 1 s"),
    (10.0, "1-10 s"),
    (60.0, "10-60 s"),
    (300.0, "1-5 min"),
    (900.0, "5-15 min"),
    (1800.0, "15-30 min"),
    (3600.0, "30-60 min"),
    (f64::INFINITY, "1 h +"),
];

/// Most actors shown (the most addresses first).
const MAX_ACTORS: usize = 10;

/// Most map points drawn (the busiest locations first).
const MAX_LOCATIONS: usize = 5000;

/// Where requests came from, rounded to a tenth of a degree.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// Requests from there.
    pub requests: u64,
}

/// Everything the report shows.
#[derive(Debug)]
pub struct ReportData {
    /// Totals and top tables (the same as `tarpit stats`).
    pub stats: Stats,
    /// Requests per duration bucket, in [`DURATION_BUCKETS`] order.
    pub durations: Vec<(&'static str, u64)>,
    /// Source locations with GeoIP coordinates.
    pub locations: Vec<Location>,
    /// The actors with the most addresses (two at least), from `crate::analysis::actors`.
    pub actors: Vec<crate::analysis::actors::Actor>,
}

impl ReportData {
    /// Reads the report's figures from the database (read-only).
    pub fn load(path: &Path, since: Option<String>) -> Result<Self, ReportError> {
        let stats = crate::analysis::stats::build(path, since.clone())?;
        let conn = crate::db::open_read_only(path)?;
        let cutoff = since.unwrap_or_default();
        let from = crate::db::events_from(!cutoff.is_empty());
        let bucket_sql: String = DURATION_BUCKETS
            .iter()
            .enumerate()
            .filter(|(_, (bound, _))| bound.is_finite())
            .map(|(i, (bound, _))| format!("WHEN duration_s < {bound} THEN {i} "))
            .collect();
        let mut durations: Vec<(&'static str, u64)> = DURATION_BUCKETS
            .iter()
            .map(|(_, label)| (*label, 0))
            .collect();
        let mut stmt = conn.prepare(&format!(
            "SELECT CASE {bucket_sql} ELSE {} END AS bucket, COUNT(*) FROM {from}
             WHERE timestamp >= ?1 AND duration_s IS NOT NULL GROUP BY bucket",
            DURATION_BUCKETS.len() - 1
        ))?;
        let mut rows = stmt.query([&cutoff])?;
        while let Some(row) = rows.next()? {
            let bucket: i64 = row.get(0)?;
            if let Some(slot) = durations.get_mut(bucket as usize) {
                slot.1 = row.get::<_, i64>(1)? as u64;
            }
        }
        let mut stmt = conn.prepare(&format!(
            "SELECT ROUND(latitude, 1) AS lat, ROUND(longitude, 1) AS lon, COUNT(*) AS n
             FROM {from} WHERE timestamp >= ?1 AND latitude IS NOT NULL AND longitude IS NOT NULL
             GROUP BY lat, lon ORDER BY n DESC LIMIT {MAX_LOCATIONS}"
        ))?;
        let locations = stmt
            .query_map([&cutoff], |r| {
                Ok(Location {
                    latitude: r.get(0)?,
                    longitude: r.get(1)?,
                    requests: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let actors = crate::analysis::actors::build(
            path,
            crate::analysis::actors::Query {
                min_addresses: 2,
                limit: MAX_ACTORS,
                actor: None,
            },
        )?;
        Ok(Self {
            stats,
            durations,
            locations,
            actors,
        })
    }

    /// One bar chart per (top table title, chart caption).
    fn bar_charts(&self, wanted: &[(&str, &str)]) -> Result<Vec<String>, ReportError> {
        wanted
            .iter()
            .map(|(title, label)| charts::bars(label, self.top(title)).map_err(chart_error("top")))
            .collect()
    }

    /// A top table of the stats by title (empty when there is none).
    fn top(&self, title: &str) -> &[(String, u64)] {
        self.stats
            .top
            .iter()
            .find(|t| t.title == title)
            .map_or(&[], |t| t.rows.as_slice())
    }
}

/// Reads the database at `path` and renders the report as one HTML document.
pub fn render(path: &Path, since: Option<String>) -> Result<String, ReportError> {
    let data = ReportData::load(path, since)?;
    to_html(&data, SystemTime::now())
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's style: plain, printable, readable without any external font.
const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1040px;color:#222}
h1{margin-bottom:0}.muted{color:#666}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:1.5em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:140px}
.card b{display:block;font-size:1.5em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
figure{margin:0}svg{max-width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
code{word-break:break-all}";

fn chart_error(chart: &'static str) -> impl Fn(String) -> ReportError {
    move |reason| ReportError::Chart { chart, reason }
}

/// Renders the page (`now` is the generation time printed in it).
pub fn to_html(data: &ReportData, now: SystemTime) -> Result<String, ReportError> {
    let stats = &data.stats;
    let activity = charts::activity(&stats.hourly).map_err(chart_error("activity"))?;
    let map = charts::world_map(&world::land_rings(), &data.locations)
        .map_err(chart_error("world map"))?;
    let durations = charts::columns("Time held per request", &data.durations)
        .map_err(chart_error("time held"))?;
    let bars = data.bar_charts(&[
        ("country", "Top countries"),
        ("ASN", "Top ASNs"),
        ("target port", "Top target ports"),
        ("path", "Top paths"),
    ])?;
    let tag_bars = data.bar_charts(&[
        ("attack class", "Attack classes"),
        ("CVE", "CVEs tried"),
        ("targeted application", "Targeted applications"),
        ("tool", "Tools"),
        (
            crate::analysis::tag_stats::TIME_PER_TOOL,
            "Seconds held per tool",
        ),
        ("crawler", "Crawlers"),
        ("CRS rule", "OWASP CRS rules fired"),
        (
            crate::analysis::tag_stats::CRS_SCORE,
            "CRS anomaly score (requests)",
        ),
    ])?;

    let mut html = String::with_capacity(256 * 1024);
    let period = crate::db::period_label(stats.since.as_deref());
    let generated = humantime::format_rfc3339_seconds(now);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>tarpit report</title><style>{STYLE}</style></head><body>\n\
         <h1>tarpit report</h1><p class=\"muted\">{} &middot; {} &middot; generated {generated}</p>\n",
        escape(&period),
        escape(&sensors_label(stats))
    );
    let held_hours = stats.seconds_held / 3600.0;
    let cards = [
        ("requests", stats.requests.to_string()),
        ("distinct sources", stats.clients.to_string()),
        ("attacker-time held", format!("{held_hours:.1} h")),
        ("bytes dripped", stats.bytes_sent.to_string()),
        (
            "first request",
            stats.first.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "last request",
            stats.last.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    html.push_str("<div class=\"cards\">");
    for (label, value) in cards {
        let _ = write!(
            html,
            "<div class=\"card\"><b>{}</b><span class=\"muted\">{label}</span></div>",
            escape(&value)
        );
    }
    html.push_str("</div>\n");
    let _ = write!(
        html,
        "<h2>Activity</h2><figure>{activity}</figure>\n\
         <h2>Where they came from</h2><figure>{map}</figure>\
         <p class=\"muted\">{} locations from GeoIP coordinates (busiest first, at most \
         {MAX_LOCATIONS}); dot area grows with requests. Land outline: Natural Earth.</p>\n\
         <h2>What they wanted</h2><div class=\"grid\">",
        data.locations.len()
    );
    for svg in &bars {
        let _ = write!(html, "<figure>{svg}</figure>");
    }
    html.push_str(
        "</div>\n<h2>Who they were and what they tried</h2>\
         <p class=\"muted\">Requests per tag of the classification rules (tarpit classify \
         re-tags stored requests with the current rules).</p><div class=\"grid\">",
    );
    for svg in &tag_bars {
        let _ = write!(html, "<figure>{svg}</figure>");
    }
    let _ = write!(
        html,
        "</div>\n<h2>How long they were held</h2><figure>{durations}</figure>\n"
    );
    for (title, heading) in [
        ("source address", "Top source addresses"),
        ("User-Agent", "Top User-Agents"),
        ("method", "Methods"),
        ("end reason", "End reasons"),
    ] {
        let _ = write!(
            html,
            "<h2>{heading}</h2><table><tr><th>value</th><th>requests</th></tr>"
        );
        for (value, count) in data.top(title) {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td class=\"n\">{count}</td></tr>",
                escape(value)
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str(&actors_section(&data.actors)?);
    html.push_str("</body></html>\n");
    Ok(html)
}

/// The largest actors: a bar of addresses per actor (labelled with its sensors), and a table of
/// its addresses, sensors, ASNs, tools and the merges that made it.
fn actors_section(actors: &[crate::analysis::actors::Actor]) -> Result<String, ReportError> {
    let mut html = String::from("<h2>Actors: addresses joined by canary tokens</h2>");
    if actors.is_empty() {
        html.push_str(
            "<p class=\"muted\">No actor has more than one address: no canary token was sent \
             back from an address other than the one it was issued to (or tokens are off; \
             see README, \"Who is behind the addresses\").</p>\n",
        );
        return Ok(html);
    }
    let rows: Vec<(String, u64)> = actors
        .iter()
        .map(|a| {
            let label = format!("actor {} ({})", a.actor_id, a.sensors.join(", "));
            (label, a.address_count.max(0) as u64)
        })
        .collect();
    let chart = charts::bars("Addresses per actor", &rows).map_err(chart_error("actors"))?;
    let _ = write!(
        html,
        "<figure>{chart}</figure><table><tr><th>actor</th><th>addresses</th><th>sensors</th>\
         <th>ASNs</th><th>tools</th><th>merges</th></tr>"
    );
    let counted = |items: &[crate::analysis::actors::Counted]| -> String {
        let shown: Vec<String> = items
            .iter()
            .map(|c| format!("{} ({})", escape(&c.value), c.requests))
            .collect();
        shown.join(", ")
    };
    for a in actors {
        let more = a.address_count - a.addresses.len() as i64;
        let addresses: Vec<String> = a.addresses.iter().map(|x| escape(x)).collect();
        let _ = write!(
            html,
            "<tr><td class=\"n\">{}</td><td><code>{}</code>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td></tr>",
            a.actor_id,
            addresses.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            escape(&a.sensors.join(", ")),
            counted(&a.asns),
            counted(&a.tools),
            a.merges.len()
        );
    }
    html.push_str("</table>\n");
    Ok(html)
}

/// "sensor s1" or "sensors s1, s2, ..." (the sensors whose requests are in the report, most
/// first; rows from before sensor ids count as "unnamed").
fn sensors_label(stats: &Stats) -> String {
    let names: Vec<&str> = stats
        .top
        .iter()
        .find(|t| t.title == "sensor")
        .map(|t| t.rows.iter().map(|(name, _)| name.as_str()).collect())
        .unwrap_or_default();
    match names.as_slice() {
        [] => "no sensor named".to_owned(),
        [one] => format!("sensor {one}"),
        many => format!("sensors {}", many.join(", ")),
    }
}
