//! `tarpit actors --fleet`: the fleet's actors, rebuilt from every sensor's shipped canary
//! token sightings in ClickHouse (`tarpit.token_sightings`, see `crate::ship::canary`).
//!
//! Each sensor joins addresses locally; across sensors, an address joined on one and another
//! joined on a second are one actor when a chain of sightings links them. The query
//! ([`LINKS_QUERY`], documented in docs/fleet.md for use without the tarpit) lists every pair of
//! addresses a sensor joined; the components are found here with a union-find, since
//! ClickHouse 18.16 has no recursive query. Only sightings a sensor merged on count (`merged =
//! 1`): a sensor's own limits (a token past its merge limit, a client sending back its own
//! token) hold fleet-wide.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Every pair of addresses a canary token joined, on any sensor, with when and where.
pub const LINKS_QUERY: &str = "SELECT issued_to, client_ip, \
     groupUniqArray(issued_by) AS issued_by, groupUniqArray(sensor_id) AS seen_by, \
     toUnixTimestamp(min(timestamp)) AS first_joined, toUInt32(count()) AS sightings \
     FROM {table} FINAL WHERE merged = 1 \
     GROUP BY issued_to, client_ip ORDER BY first_joined LIMIT 1000000 FORMAT JSONEachRow";

/// One pair of joined addresses, as the query returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    /// The address the token was issued to.
    pub issued_to: String,
    /// The address that sent it.
    pub client_ip: String,
    /// The sensors that issued it.
    pub issued_by: Vec<String>,
    /// The sensors that saw it sent.
    pub seen_by: Vec<String>,
    /// When first (Unix seconds).
    pub first_joined: i64,
    /// How many sightings.
    pub sightings: u64,
}

/// One actor of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct FleetActor {
    /// Its addresses, sorted.
    pub addresses: Vec<String>,
    /// The sensors that issued its tokens or saw them.
    pub sensors: Vec<String>,
    /// The links that joined it, oldest first: (issued to, sent by, first joined).
    pub links: Vec<(String, String, i64)>,
}

/// The connected components of `links`, the largest first.
pub fn actors(links: &[Link]) -> Vec<FleetActor> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut intern = |address| {
        let next = index.len();
        *index.entry(address).or_insert_with(|| {
            parent.push(next);
            next
        })
    };
    let pairs: Vec<(usize, usize)> = links
        .iter()
        .map(|l| (intern(l.issued_to.as_str()), intern(l.client_ip.as_str())))
        .collect();
    fn root(parent: &mut [usize], mut at: usize) -> usize {
        while parent[at] != at {
            parent[at] = parent[parent[at]];
            at = parent[at];
        }
        at
    }
    for &(a, b) in &pairs {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    /// One component as it is gathered: addresses, sensors, links.
    #[derive(Default)]
    struct Group {
        addresses: BTreeSet<String>,
        sensors: BTreeSet<String>,
        links: Vec<(String, String, i64)>,
    }
    let mut groups: BTreeMap<usize, Group> = BTreeMap::new();
    for (link, &(a, _)) in links.iter().zip(&pairs) {
        let group = groups.entry(root(&mut parent, a)).or_default();
        group.addresses.insert(link.issued_to.clone());
        group.addresses.insert(link.client_ip.clone());
        let sensors = link.issued_by.iter().chain(&link.seen_by).cloned();
        group.sensors.extend(sensors);
        let joined = (
            link.issued_to.clone(),
            link.client_ip.clone(),
            link.first_joined,
        );
        group.links.push(joined);
    }
    let mut actors: Vec<FleetActor> = groups
        .into_values()
        .map(|group| FleetActor {
            addresses: group.addresses.into_iter().collect(),
            sensors: group.sensors.into_iter().collect(),
            links: group.links,
        })
        .collect();
    actors.sort_by_key(|actor| std::cmp::Reverse(actor.addresses.len()));
    actors
}

/// Reads the links from the fleet's store and returns its actors.
pub async fn from_store(
    client: &crate::ship::clickhouse::ClickHouse,
    table: &str,
) -> anyhow::Result<Vec<FleetActor>> {
    let text = client.select(LINKS_QUERY.replace("{table}", table)).await?;
    let links: Vec<Link> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    Ok(actors(&links))
}

/// The fleet's actors as text.
pub fn to_text(actors: &[FleetActor]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if actors.is_empty() {
        out.push_str("no addresses joined by canary tokens in the fleet's store\n");
    }
    for (n, actor) in actors.iter().enumerate() {
        let _ = writeln!(
            out,
            "fleet actor {}: {} addresses, sensors {}",
            n + 1,
            actor.addresses.len(),
            actor.sensors.join(", ")
        );
        let _ = writeln!(out, "  addresses: {}", actor.addresses.join(", "));
        for (to, from, at) in &actor.links {
            let _ = writeln!(
                out,
                "  joined at {at}: a token issued to {to} sent by {from}"
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(to: &str, from: &str, by: &str, seen: &str) -> Link {
        Link {
            issued_to: to.into(),
            client_ip: from.into(),
            issued_by: vec![by.into()],
            seen_by: vec![seen.into()],
            first_joined: 1,
            sightings: 1,
        }
    }

    #[test]
    fn chains_across_sensors_are_one_actor_and_strangers_stay_apart() {
        let links = [
            link("10.0.0.1", "10.0.0.2", "a", "a"),
            link("10.0.0.2", "10.0.0.3", "a", "b"),
            link("10.0.0.9", "10.0.0.3", "c", "c"),
            link("192.0.2.1", "192.0.2.2", "b", "b"),
        ];
        let actors = actors(&links);
        assert_eq!(actors.len(), 2);
        assert_eq!(
            actors[0].addresses,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]
        );
        assert_eq!(actors[0].sensors, ["a", "b", "c"]);
        assert_eq!(actors[0].links.len(), 3);
        assert_eq!(actors[1].addresses, ["192.0.2.1", "192.0.2.2"]);
    }
}
