//! STIX 2.1 (OASIS, "STIX Version 2.1", 2021): the summary as a bundle.
//!
//! - an `identity` for the sensor (`identity_class` "system");
//! - per client an `ipv4-addr` or `ipv6-addr` observable, and per sampled request a
//!   `network-traffic` observable with its `http-request-ext` (method, path, User-Agent);
//! - per client an `observed-data` (first and last seen, `number_observed` = requests), an
//!   `indicator` (`[ipv4-addr:value = '...']`, the shared tags as `labels`, CVE tags also as
//!   `external_references`) and a `sighting` of that indicator by the sensor.
//!
//! Identifiers are derived, not drawn: observables' are UUIDv5 of their ID contributing
//! properties under the STIX namespace (section 2.9 of the spec); the other objects' are
//! UUIDv4-shaped (the spec asks for version 4) with the bits of a UUIDv5 of sensor, client
//! and period under the tarpit's namespace. Exporting the same data twice gives the same
//! objects, and a TAXII server keeps one of each.

use serde_json::{Value, json};
use uuid::Uuid;

use super::clients::{ClientSummary, Summary};
use crate::event::format_timestamp;

/// The namespace of STIX Cyber-observable identifiers (STIX 2.1, section 2.9).
const SCO_NAMESPACE: Uuid = uuid::uuid!("00abedb4-aa42-466c-9c01-fed23315a9b7");
/// The tarpit's namespace for the identifiers of the objects it makes.
const TARPIT_NAMESPACE: Uuid = uuid::uuid!("6f1d1a4e-5b0e-4c57-9c5e-7a2f3e0b9d41");

/// An observable's id: UUIDv5 of its ID contributing properties as canonical JSON (keys
/// sorted: `serde_json`'s map is ordered).
fn sco_id(kind: &str, contributing: &Value) -> String {
    let canonical = serde_json::to_string(contributing).expect("JSON values serialise");
    format!(
        "{kind}--{}",
        Uuid::new_v5(&SCO_NAMESPACE, canonical.as_bytes())
    )
}

/// Another object's id, derived from `parts`: version 4 in form, a hash in content.
fn object_id(kind: &str, parts: &[&str]) -> String {
    let name = format!("{kind}\u{1f}{}", parts.join("\u{1f}"));
    let derived = Uuid::new_v5(&TARPIT_NAMESPACE, name.as_bytes()).into_bytes();
    let id = uuid::Builder::from_random_bytes(derived).into_uuid();
    format!("{kind}--{id}")
}

/// The bundle for `summary`.
pub fn bundle(summary: &Summary) -> Value {
    // Every timestamp comes from the data, so the same data gives the same objects: the
    // identity was created when the sensor first recorded; a client's objects at the end of
    // the period they describe.
    let since = format_timestamp(summary.sensor_since);
    let identity_id = object_id("identity", &[&summary.sensor]);
    let mut objects = vec![json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id,
        "created": since,
        "modified": since,
        "name": format!("tarpit sensor {}", summary.sensor),
        "description": "An HTTP tarpit: it accepts every connection, answers slowly, and records each request.",
        "identity_class": "system",
    })];
    for client in &summary.clients {
        objects.extend(client_objects(client, &identity_id, &summary.sensor));
    }
    json!({
        "type": "bundle",
        "id": format!("bundle--{}", Uuid::new_v4()),
        "objects": objects,
    })
}

/// One client's observables, observed-data, indicator and sighting.
fn client_objects(client: &ClientSummary, identity: &str, sensor: &str) -> Vec<Value> {
    let v6 = client.ip.contains(':');
    let (address_type, pattern_type) = if v6 {
        ("ipv6-addr", "ipv6-addr")
    } else {
        ("ipv4-addr", "ipv4-addr")
    };
    let address_id = sco_id(address_type, &json!({ "value": client.ip }));
    let first = format_timestamp(client.first_seen);
    let last = format_timestamp(client.last_seen);
    let mut objects = vec![json!({
        "type": address_type,
        "spec_version": "2.1",
        "id": address_id,
        "value": client.ip,
    })];
    let mut observed = vec![address_id.clone()];
    for sample in &client.samples {
        let mut extension = json!({
            "request_method": sample.method.to_ascii_lowercase(),
            "request_value": sample.path,
        });
        if let Some(user_agent) = &sample.user_agent {
            extension["request_header"] = json!({ "User-Agent": [user_agent] });
        }
        let mut contributing = json!({
            "start": sample.timestamp,
            "src_ref": address_id,
            "dst_port": sample.target_port,
            "protocols": [if v6 { "ipv6" } else { "ipv4" }, "tcp", "http"],
            "extensions": { "http-request-ext": extension },
        });
        // Unknown behind a proxy that names only the client's address: left out, not 0.
        if let Some(port) = sample.client_port {
            contributing["src_port"] = json!(port);
        }
        let id = sco_id("network-traffic", &contributing);
        let mut traffic = contributing;
        traffic["type"] = json!("network-traffic");
        traffic["spec_version"] = json!("2.1");
        traffic["id"] = json!(id);
        observed.push(id);
        objects.push(traffic);
    }
    let period = [sensor, client.ip.as_str(), first.as_str(), last.as_str()];
    let observed_id = object_id("observed-data", &period);
    let indicator_id = object_id("indicator", &period);
    let now = &last;
    let count = client.requests.clamp(1, 999_999_999);
    objects.push(json!({
        "type": "observed-data",
        "spec_version": "2.1",
        "id": observed_id,
        "created_by_ref": identity,
        "created": now,
        "modified": now,
        "first_observed": first,
        "last_observed": last,
        "number_observed": count,
        "object_refs": observed,
    }));
    let mut indicator = json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": indicator_id,
        "created_by_ref": identity,
        "created": now,
        "modified": now,
        "name": format!("HTTP scanner {}", client.ip),
        "description": describe(client),
        "indicator_types": ["malicious-activity"],
        "pattern": format!("[{pattern_type}:value = '{}']", client.ip),
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": first,
    });
    if !client.tags.is_empty() {
        indicator["labels"] = json!(client.tags);
    }
    let cves: Vec<Value> = client
        .tags
        .iter()
        .filter_map(|tag| tag.strip_prefix("cve:"))
        .map(|cve| json!({ "source_name": "cve", "external_id": cve }))
        .collect();
    if !cves.is_empty() {
        indicator["external_references"] = json!(cves);
    }
    objects.push(indicator);
    objects.push(json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": object_id("sighting", &period),
        "created_by_ref": identity,
        "created": now,
        "modified": now,
        "first_seen": first,
        "last_seen": last,
        "count": count,
        "sighting_of_ref": indicator_id,
        "observed_data_refs": [observed_id],
        "where_sighted_refs": [identity],
    }));
    objects
}

/// A sentence on what the client did.
fn describe(client: &ClientSummary) -> String {
    let ports: Vec<String> = client.ports.iter().map(u16::to_string).collect();
    let mut text = format!(
        "{} to a tarpit on port {}",
        crate::share::clients::requests_text(client.requests),
        ports.join(", ")
    );
    if let Some(sample) = client.samples.first() {
        text.push_str(&format!(", for example {} {}", sample.method, sample.path));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observable_ids_follow_the_spec_derivation() {
        // STIX 2.1, section 2.9: UUIDv5 of the canonical JSON of the ID contributing
        // properties under 00abedb4-...; the value for {"value":"198.51.100.3"} computed
        // independently with Python's uuid.uuid5.
        assert_eq!(
            sco_id("ipv4-addr", &json!({ "value": "198.51.100.3" })),
            "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"
        );
        // Other ids are stable for the same inputs, differ otherwise, and are version 4 in form.
        assert_eq!(
            object_id("indicator", &["s", "1.2.3.4"]).as_bytes()[11 + 14],
            b'4'
        );
        assert_eq!(
            object_id("indicator", &["s", "1.2.3.4"]),
            object_id("indicator", &["s", "1.2.3.4"])
        );
        assert_ne!(
            object_id("indicator", &["s", "1.2.3.4"]),
            object_id("indicator", &["s", "1.2.3.5"])
        );
    }
}
