//! MISP: the summary as one MISP event in MISP's JSON format (the format `/events/add` takes
//! and PyMISP's `MISPEvent.load` reads):
//!
//! - per client an `ip-src` attribute (category "Network activity", `to_ids`), with first and
//!   last seen, the shared tags as its `Tag`s, and a `Sighting` by the sensor;
//! - per sampled request an `http-request` object (the MISP object template of that name,
//!   uuid `b4a8d163-8110-4239-bfcf-e08f3a9fdf7b`, version 4): `ip-src`, `method`, `uri`,
//!   `user-agent`.
//!
//! Identifiers are UUIDv5 under the tarpit's namespace from sensor, client and sample, so the
//! same data exported twice makes the same attributes (MISP merges them on import).

use std::time::UNIX_EPOCH;

use serde_json::{Value, json};
use uuid::Uuid;

use super::clients::{ClientSummary, Summary};
use crate::event::format_timestamp;

/// The tarpit's namespace for MISP identifiers.
const NAMESPACE: Uuid = uuid::uuid!("0c5f7f0e-2b44-4a54-8f7e-3a1d6a8c2b17");
/// The `http-request` object template (misp-objects, `objects/http-request/definition.json`).
const HTTP_REQUEST_TEMPLATE: &str = "b4a8d163-8110-4239-bfcf-e08f3a9fdf7b";
const HTTP_REQUEST_VERSION: &str = "4";

fn id(parts: &[&str]) -> String {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes()).to_string()
}

fn epoch(time: std::time::SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string()
}

/// The MISP event for `summary`.
pub fn event(summary: &Summary) -> Value {
    let now = epoch(summary.generated);
    let date = format_timestamp(summary.generated)[..10].to_owned();
    let first = summary.clients.iter().map(|c| c.first_seen).min();
    let last = summary.clients.iter().map(|c| c.last_seen).max();
    let period = match (first, last) {
        (Some(first), Some(last)) => format!(
            " from {} to {}",
            format_timestamp(first),
            format_timestamp(last)
        ),
        _ => String::new(),
    };
    let mut attributes = Vec::new();
    let mut objects = Vec::new();
    for client in &summary.clients {
        attributes.push(address_attribute(client, &summary.sensor, &now));
        objects.extend(
            client
                .samples
                .iter()
                .map(|sample| http_request(client, sample, &summary.sensor, &now)),
        );
    }
    json!({
        "Event": {
            "uuid": id(&["event", &summary.sensor, &now]),
            "info": format!(
                "HTTP scanners held by tarpit sensor {}: {} addresses{period}",
                summary.sensor,
                summary.clients.len()
            ),
            "date": date,
            "timestamp": now,
            "threat_level_id": "3",
            "analysis": "2",
            "distribution": "0",
            "published": false,
            "Tag": [{ "name": "tarpit" }],
            "Attribute": attributes,
            "Object": objects,
        }
    })
}

fn address_attribute(client: &ClientSummary, sensor: &str, now: &str) -> Value {
    let tags: Vec<Value> = client
        .tags
        .iter()
        .map(|tag| json!({ "name": tag }))
        .collect();
    json!({
        "uuid": id(&["ip-src", sensor, &client.ip]),
        "type": "ip-src",
        "category": "Network activity",
        "value": client.ip,
        "to_ids": true,
        "timestamp": now,
        "first_seen": format_timestamp(client.first_seen),
        "last_seen": format_timestamp(client.last_seen),
        "comment": format!(
            "{} to a tarpit",
            crate::share::clients::requests_text(client.requests)
        ),
        "Tag": tags,
        "Sighting": [{
            "uuid": id(&["sighting", sensor, &client.ip, now]),
            "type": "0",
            "source": format!("tarpit sensor {sensor}"),
            "date_sighting": epoch(client.last_seen),
        }],
    })
}

fn http_request(
    client: &ClientSummary,
    sample: &super::clients::Sample,
    sensor: &str,
    now: &str,
) -> Value {
    let object_id = id(&[
        "http-request",
        sensor,
        &client.ip,
        &sample.timestamp,
        &sample.path,
    ]);
    let attribute = |relation: &str, kind: &str, value: &str| {
        json!({
            "uuid": id(&[&object_id, relation]),
            "object_relation": relation,
            "type": kind,
            "category": "Network activity",
            "value": value,
            "to_ids": false,
            "timestamp": now,
        })
    };
    let mut attributes = vec![
        attribute("ip-src", "ip-src", &client.ip),
        attribute("method", "http-method", &sample.method),
        attribute("uri", "uri", &sample.path),
    ];
    if let Some(user_agent) = &sample.user_agent {
        attributes.push(attribute("user-agent", "user-agent", user_agent));
    }
    json!({
        "uuid": object_id,
        "name": "http-request",
        "meta-category": "network",
        "template_uuid": HTTP_REQUEST_TEMPLATE,
        "template_version": HTTP_REQUEST_VERSION,
        "description": "A request the tarpit recorded",
        "timestamp": now,
        "first_seen": sample.timestamp,
        "comment": format!("port {}", sample.target_port),
        "Attribute": attributes,
    })
}
