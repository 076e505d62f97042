//! The give-up model, kept by the pipeline: per client family, the last few times its clients
//! gave up on a response, and the figure a worker should plan with (a low quantile of them).
//!
//! Why a quantile of recent give-ups, not a mean: ending a response too late loses the scanner
//! (gobuster aborts the whole scan on one timeout), ending it early costs one extra request.
//! So the plan is the impatient end of what was seen. Only give-ups are remembered: a
//! response the tarpit ended on plan says nothing new about when the client would have given
//! up, and a family that never gives up has no figure at all and keeps the full drip.
//!
//! Bounded: at most `max_families` families (least recently seen dropped first), 16 give-ups
//! each. Changed families are handed to the SQLite sink ([`GiveUpModel::take_changed`]) and
//! read back at the next start ([`GiveUpModel::restore`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use lru::LruCache;

use super::family::{FamilyKeys, FamilyKind, address_key, cut, family_key};
use super::priors::Prior;
use super::snapshot::Snapshot;

/// Give-ups remembered per family.
pub const RECENT: usize = 16;

/// How the model turns observations into plans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// The quantile of recent give-ups planned with (`[adaptive] quantile`).
    pub quantile: f64,
    /// Give-ups a family needs before its figure is used (`[adaptive] min_samples`).
    pub min_samples: usize,
    /// Families kept (`[adaptive] max_families`).
    pub max_families: usize,
    /// Give-ups sooner than this are not timeouts (the client took the status line and left)
    /// and are not learned: two drip delays.
    pub min_give_up: f64,
}

/// How an adaptive response ended, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The client closed or reset the connection this many seconds into the response.
    GaveUp(f64),
    /// The tarpit completed the response early, as planned.
    PlannedEnd,
    /// The response ran to its full length.
    Completed,
}

/// The readable names of a request's families, for storage and `tarpit stats`.
#[derive(Debug, Clone, Default)]
pub struct FamilyNames {
    /// The client address.
    pub address: String,
    /// The User-Agent (empty when absent).
    pub user_agent: String,
    /// The header order (`header_order`: lower-case names as sent).
    pub header_order: String,
    /// The tool, from the classification (`gobuster`), if any.
    pub tool: Option<String>,
}

/// One family's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// What it groups by.
    pub kind: FamilyKind,
    /// Its value (address, User-Agent, header order or tool).
    pub name: String,
    /// The latest give-ups, in seconds (a ring of [`RECENT`]).
    recent: Vec<f32>,
    /// Where the next give-up goes in `recent` once it is full.
    next: usize,
    /// Give-ups seen, in all.
    pub give_ups: u64,
    /// Responses ended early on plan.
    pub planned_ends: u64,
    /// Responses that ran to their full length.
    pub completed: u64,
    /// For a User-Agent family: the tool the classification names for it.
    pub tool: Option<String>,
    /// When a request of the family was last seen (UNIX seconds).
    pub last_seen: i64,
}

impl Family {
    fn new(kind: FamilyKind, name: &str) -> Self {
        Self {
            kind,
            name: cut(name).to_owned(),
            recent: Vec::new(),
            next: 0,
            give_ups: 0,
            planned_ends: 0,
            completed: 0,
            tool: None,
            last_seen: unix_now(),
        }
    }

    /// The give-ups remembered, oldest first.
    pub fn recent(&self) -> Vec<f32> {
        let mut ordered = self.recent[self.next..].to_vec();
        ordered.extend_from_slice(&self.recent[..self.next]);
        ordered
    }

    fn remember(&mut self, seconds: f32) {
        if self.recent.len() < RECENT {
            self.recent.push(seconds);
        } else {
            self.recent[self.next] = seconds;
            self.next = (self.next + 1) % RECENT;
        }
    }

    /// The give-up time to plan with: the `quantile` of recent give-ups (nearest rank), once
    /// there are `min_samples` of them.
    pub fn give_up(&self, config: &ModelConfig) -> Option<f64> {
        if self.recent.len() < config.min_samples.max(1) {
            return None;
        }
        let mut sorted = self.recent.clone();
        sorted.sort_by(f32::total_cmp);
        let rank = (config.quantile * sorted.len() as f64).ceil() as usize;
        Some(f64::from(sorted[rank.clamp(1, sorted.len()) - 1]))
    }
}

/// A family as stored in the `giveup_families` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyRow {
    /// The family.
    pub family: Family,
    /// Its planned-with give-up time when the row was written (for readers of the table).
    pub give_up_s: Option<f64>,
}

/// Every family's state, on the pipeline.
pub struct GiveUpModel {
    config: ModelConfig,
    families: LruCache<u64, Family>,
    /// Families changed since the last [`GiveUpModel::take_changed`].
    changed: HashSet<u64>,
    /// Changed families pushed out of memory before they were stored.
    evicted: Vec<Family>,
}

impl GiveUpModel {
    /// An empty model.
    pub fn new(config: ModelConfig) -> Self {
        Self {
            config,
            // Grown as needed and bounded by `entry` (a bounded LruCache would allocate all of
            // its capacity at once).
            families: LruCache::unbounded(),
            changed: HashSet::new(),
            evicted: Vec::new(),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Loads stored families (oldest first, so the most recent stay when there are too many).
    pub fn restore(&mut self, rows: impl IntoIterator<Item = Family>) {
        for mut family in rows {
            family.recent.truncate(RECENT);
            family.next = 0;
            if let Some(key) = stored_key(&family) {
                self.families.push(key, family);
                if self.families.len() > self.config.max_families.max(1) {
                    self.families.pop_lru();
                }
            }
        }
    }

    /// Notes a request's families (creating them, refreshing them, linking its User-Agent to
    /// the tool the classification found); returns its keys with the tool filled in.
    pub fn register(&mut self, keys: &FamilyKeys, names: &FamilyNames) -> FamilyKeys {
        let mut keys = *keys;
        if let Some(tool) = &names.tool {
            keys.tool = family_key(FamilyKind::Tool, tool);
        }
        let now = unix_now();
        for kind in FamilyKind::ALL {
            let key = keys.get(kind);
            let name = match kind {
                FamilyKind::Address => names.address.as_str(),
                FamilyKind::UserAgent => names.user_agent.as_str(),
                FamilyKind::HeaderOrder => names.header_order.as_str(),
                FamilyKind::Tool => match &names.tool {
                    Some(tool) => tool.as_str(),
                    None => continue,
                },
            };
            if key == 0 {
                continue;
            }
            let family = self.entry(key, kind, name);
            family.last_seen = now;
            if kind == FamilyKind::UserAgent && names.tool.is_some() && family.tool != names.tool {
                family.tool = names.tool.clone();
                self.changed.insert(key);
            }
        }
        keys
    }

    /// Learns from the end of an adaptive response of a request with these (registered) keys.
    pub fn observe(&mut self, keys: &FamilyKeys, outcome: Outcome) {
        if let Outcome::GaveUp(seconds) = outcome
            && seconds < self.config.min_give_up
        {
            return;
        }
        for kind in FamilyKind::ALL {
            let key = keys.get(kind);
            if key == 0 {
                continue;
            }
            let Some(family) = self.families.get_mut(&key) else {
                continue;
            };
            match outcome {
                Outcome::GaveUp(seconds) => {
                    family.give_ups += 1;
                    family.remember(seconds as f32);
                }
                Outcome::PlannedEnd => family.planned_ends += 1,
                Outcome::Completed => family.completed += 1,
            }
            self.changed.insert(key);
        }
    }

    /// Whether anything changed since the last [`GiveUpModel::take_changed`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty() || !self.evicted.is_empty()
    }

    /// The changed families, for storage.
    pub fn take_changed(&mut self) -> Vec<FamilyRow> {
        let mut families: Vec<Family> = std::mem::take(&mut self.evicted);
        for key in std::mem::take(&mut self.changed) {
            if let Some(family) = self.families.peek(&key) {
                families.push(family.clone());
            }
        }
        families
            .into_iter()
            .map(|family| FamilyRow {
                give_up_s: family.give_up(&self.config),
                family,
            })
            .collect()
    }

    /// What the workers plan with: every family with a figure, and the User-Agent → tool
    /// links.
    pub fn snapshot(&self, priors: Arc<[Prior]>) -> Snapshot {
        let mut limits = HashMap::new();
        let mut tools = HashMap::new();
        for (key, family) in self.families.iter() {
            if let Some(seconds) = family.give_up(&self.config) {
                limits.insert(*key, seconds as f32);
            }
            if let Some(tool) = &family.tool {
                tools.insert(*key, family_key(FamilyKind::Tool, tool));
            }
        }
        Snapshot::new(limits, tools, priors)
    }

    /// The families in memory, most recently seen first.
    pub fn families(&self) -> impl Iterator<Item = &Family> {
        self.families.iter().map(|(_, family)| family)
    }

    fn entry(&mut self, key: u64, kind: FamilyKind, name: &str) -> &mut Family {
        if !self.families.contains(&key) {
            if self.families.len() >= self.config.max_families.max(1)
                && let Some((old_key, old)) = self.families.pop_lru()
                && self.changed.remove(&old_key)
            {
                self.evicted.push(old);
            }
            self.families.put(key, Family::new(kind, name));
        }
        self.families.get_mut(&key).expect("just inserted")
    }
}

/// The key of a stored family, recomputed from its name (the hash never leaves the process).
fn stored_key(family: &Family) -> Option<u64> {
    Some(match family.kind {
        FamilyKind::Address => address_key(family.name.parse().ok()?),
        kind => family_key(kind, &family.name),
    })
}

/// Rebuilds a family from its stored columns.
pub fn family_from_row(
    kind: &str,
    name: String,
    recent: &[f32],
    counts: (u64, u64, u64),
    tool: Option<String>,
    last_seen: i64,
) -> Option<Family> {
    let mut family = Family::new(FamilyKind::from_name(kind)?, &name);
    for seconds in recent.iter().take(RECENT) {
        family.remember(*seconds);
    }
    (family.give_ups, family.planned_ends, family.completed) = counts;
    family.tool = tool;
    family.last_seen = last_seen;
    Some(family)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig {
            quantile: 0.1,
            min_samples: 3,
            max_families: 100,
            min_give_up: 3.0,
        }
    }

    fn request(ip: &str, ua: &str, tool: Option<&str>) -> (FamilyKeys, FamilyNames) {
        let keys = FamilyKeys::of(ip.parse().unwrap(), Some(ua), "host,user-agent", None);
        let names = FamilyNames {
            address: ip.into(),
            user_agent: ua.into(),
            header_order: "host,user-agent".into(),
            tool: tool.map(str::to_owned),
        };
        (keys, names)
    }

    #[test]
    fn a_family_plans_with_a_low_quantile_once_it_has_enough_give_ups() {
        let mut model = GiveUpModel::new(config());
        let (keys, names) = request("192.0.2.1", "gobuster/3.5", Some("gobuster"));
        let keys = model.register(&keys, &names);
        let tool_key = family_key(FamilyKind::Tool, "gobuster");
        assert_eq!(keys.tool, tool_key);
        model.observe(&keys, Outcome::GaveUp(10.2));
        model.observe(&keys, Outcome::GaveUp(10.1));
        let snapshot = model.snapshot(Arc::from(Vec::new()));
        assert_eq!(
            snapshot.limit(tool_key),
            None,
            "two give-ups are not enough"
        );
        model.observe(&keys, Outcome::GaveUp(12.0));
        let snapshot = model.snapshot(Arc::from(Vec::new()));
        let limit = snapshot.limit(tool_key).unwrap();
        assert!((limit - 10.1).abs() < 1e-3, "{limit}");
        // 16 more give-ups: the ring keeps the latest, and the 10% rank is the second lowest.
        for i in 0..16 {
            model.observe(&keys, Outcome::GaveUp(20.0 + f64::from(i)));
        }
        let family = model
            .families()
            .find(|f| f.kind == FamilyKind::Tool)
            .unwrap();
        assert_eq!(family.recent().len(), RECENT);
        assert_eq!(family.give_ups, 19);
        assert_eq!(family.give_up(&config()), Some(21.0));
    }

    #[test]
    fn quick_exits_and_planned_ends_do_not_move_the_figure() {
        let mut model = GiveUpModel::new(config());
        let (keys, names) = request("192.0.2.1", "x", None);
        let keys = model.register(&keys, &names);
        for _ in 0..3 {
            model.observe(&keys, Outcome::GaveUp(5.0));
        }
        for _ in 0..50 {
            model.observe(&keys, Outcome::GaveUp(0.2)); // took the status line and left
            model.observe(&keys, Outcome::PlannedEnd);
        }
        let address = model
            .families()
            .find(|f| f.kind == FamilyKind::Address)
            .unwrap();
        assert_eq!(address.give_up(&config()), Some(5.0));
        assert_eq!(address.planned_ends, 50);
        assert_eq!(address.give_ups, 3);
    }

    #[test]
    fn a_family_that_never_gives_up_has_no_figure() {
        let mut model = GiveUpModel::new(config());
        let (keys, names) = request("192.0.2.9", "curl/7.88.1", Some("curl"));
        let keys = model.register(&keys, &names);
        for _ in 0..10 {
            model.observe(&keys, Outcome::Completed);
        }
        let snapshot = model.snapshot(Arc::from(Vec::new()));
        for kind in FamilyKind::ALL {
            assert_eq!(snapshot.limit(keys.get(kind)), None);
        }
    }

    #[test]
    fn the_model_is_bounded_and_keeps_evicted_changes_for_storage() {
        let mut model = GiveUpModel::new(ModelConfig {
            max_families: 8,
            ..config()
        });
        for i in 0..20 {
            let (keys, names) = request(&format!("192.0.2.{i}"), "ua", None);
            let keys = model.register(&keys, &names);
            model.observe(&keys, Outcome::GaveUp(9.0));
        }
        assert_eq!(model.families().count(), 8);
        let rows = model.take_changed();
        let addresses = rows
            .iter()
            .filter(|r| r.family.kind == FamilyKind::Address)
            .count();
        assert_eq!(addresses, 20, "every changed address reaches storage");
        assert!(!model.has_changes());
    }

    #[test]
    fn stored_families_come_back_with_their_keys() {
        let mut model = GiveUpModel::new(config());
        let (keys, names) = request("2001:db8::7", "gobuster/3.5", Some("gobuster"));
        let keys = model.register(&keys, &names);
        for seconds in [9.5, 10.0, 10.5] {
            model.observe(&keys, Outcome::GaveUp(seconds));
        }
        let rows = model.take_changed();
        let mut restored = GiveUpModel::new(config());
        restored.restore(rows.iter().map(|row| {
            let f = &row.family;
            family_from_row(
                f.kind.name(),
                f.name.clone(),
                &f.recent(),
                (f.give_ups, f.planned_ends, f.completed),
                f.tool.clone(),
                f.last_seen,
            )
            .unwrap()
        }));
        let snapshot = restored.snapshot(Arc::from(Vec::new()));
        for kind in FamilyKind::ALL {
            assert_eq!(snapshot.limit(keys.get(kind)), Some(9.5), "{kind:?}");
        }
        assert_eq!(
            snapshot.tool_of(keys.user_agent),
            Some(family_key(FamilyKind::Tool, "gobuster"))
        );
    }
}
