//! The give-up model, kept by the pipeline: per client family, the last few times its clients
//! gave up on a response, and the figure a worker should plan with (a low quantile of them).
//!
//! Why a quantile of recent give-ups, not a mean: ending a response too late loses the scanner
//! (gobuster aborts the whole scan on one timeout), ending it early costs one extra request.
//! So the plan is the impatient end of what was seen. Give-ups are the samples; a response the
//! tarpit ended on plan only says the client was still there (which [`super::stretch`] uses),
//! and a family that never gives up has no figure at all and keeps the full drip.
//!
//! Who can move a figure: see [`super::sample`] (one sample per network prefix, several
//! prefixes before a shared family has a figure, samples expire), [`super::stretch`] (planned
//! ends the client answered at once move it later, within its evidence) and
//! [`super::snapshot`] (floors and ceilings, the most specific evidence decides).
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
use super::sample::{Evidence, Prefix, Sample, Samples};
use super::snapshot::Snapshot;
use super::stretch::Stretch;

pub use super::sample::RECENT;

/// How the model turns observations into plans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// The quantile of recent give-ups planned with (`[adaptive] quantile`).
    pub quantile: f64,
    /// Give-ups a family needs before its figure is used (`[adaptive] min_samples`).
    pub min_samples: usize,
    /// Distinct client prefixes (/24, /64) a shared family's give-ups must come from before
    /// its figure is used (`[adaptive] min_prefixes`).
    pub min_prefixes: usize,
    /// No plan ends a response sooner than this (seconds) unless a tool's prior says less:
    /// four drip intervals.
    pub floor: f64,
    /// Families kept (`[adaptive] max_families`).
    pub max_families: usize,
    /// Give-ups sooner than this are not timeouts (the client took the status line and left)
    /// and are not learned: two drip delays.
    pub min_give_up: f64,
}

impl Default for ModelConfig {
    /// What the default configuration gives (`[adaptive]` defaults, a 1.5 s drip interval).
    fn default() -> Self {
        Self {
            quantile: 0.1,
            min_samples: 3,
            min_prefixes: 3,
            floor: 6.0,
            max_families: 10_000,
            min_give_up: 3.0,
        }
    }
}

/// How an adaptive response ended, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The client closed or reset the connection this many seconds into the response.
    GaveUp(f64),
    /// The tarpit completed the response early, as planned.
    PlannedEnd,
    /// After a planned end, the client sent its next request at once: it was still waiting
    /// (see [`super::stretch`]).
    Continued,
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
    /// The latest give-ups, one per client prefix.
    samples: Samples,
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
    /// How far planned ends showed the figure to be early (in memory only).
    stretch: Stretch,
}

impl Family {
    fn new(kind: FamilyKind, name: &str) -> Self {
        Self {
            kind,
            name: cut(name).to_owned(),
            samples: Samples::default(),
            give_ups: 0,
            planned_ends: 0,
            completed: 0,
            tool: None,
            last_seen: unix_now(),
            stretch: Stretch::default(),
        }
    }

    /// The give-ups remembered (one per client prefix), oldest first.
    pub fn samples(&self) -> &[Sample] {
        self.samples.all()
    }

    /// The give-up times remembered, oldest first.
    pub fn recent(&self) -> Vec<f32> {
        self.samples.all().iter().map(|s| s.seconds).collect()
    }

    /// The give-up time to plan with: the `quantile` of the unexpired give-ups, once there are
    /// `min_samples` of them from `min_prefixes` prefixes (an address family: its own), moved
    /// later by the [`Stretch`] within the longest of them.
    pub fn give_up(&self, config: &ModelConfig) -> Option<f64> {
        let evidence = Evidence {
            quantile: config.quantile,
            min_samples: config.min_samples,
            min_prefixes: self.min_prefixes(config),
        };
        let now = unix_now();
        let figure = self.samples.figure(&evidence, now)?;
        if !self.stretch.moved() {
            return Some(figure);
        }
        let longest = Evidence {
            quantile: 1.0,
            ..evidence
        };
        let longest = self.samples.figure(&longest, now).unwrap_or(figure);
        Some(self.stretch.apply(figure, longest))
    }

    /// Distinct prefixes this family's evidence must come from.
    fn min_prefixes(&self, config: &ModelConfig) -> usize {
        match self.kind {
            FamilyKind::Address => 1,
            _ => config.min_prefixes,
        }
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

/// Changed families on their way to storage, and how many families storage keeps (the
/// model's bound: the least recently seen beyond it are deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyBatch {
    /// The changed families.
    pub rows: Vec<FamilyRow>,
    /// Families kept in the table at most.
    pub keep: usize,
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
        for family in rows {
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
            let linked = matches!(kind, FamilyKind::UserAgent | FamilyKind::Address);
            if linked && names.tool.is_some() && family.tool != names.tool {
                // An address that turns to another tool starts over: its give-ups were the
                // other tool's.
                if kind == FamilyKind::Address {
                    family.samples.clear();
                }
                family.tool = names.tool.clone();
                self.changed.insert(key);
            }
        }
        keys
    }

    /// Learns from the end of an adaptive response of a request with these (registered) keys,
    /// from `client`.
    pub fn observe(&mut self, keys: &FamilyKeys, client: std::net::IpAddr, outcome: Outcome) {
        let now = unix_now();
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
                    family.stretch.gave_up(now);
                    family.give_ups += 1;
                    let shared = kind != FamilyKind::Address;
                    let sample = Sample {
                        seconds: seconds as f32,
                        prefix: Prefix::of(client),
                        at: now,
                    };
                    family.samples.remember(sample, shared);
                }
                Outcome::PlannedEnd => family.planned_ends += 1,
                Outcome::Continued => {
                    let min_prefixes = family.min_prefixes(&self.config);
                    if !family
                        .stretch
                        .continued(Prefix::of(client), min_prefixes, now)
                    {
                        continue; // nothing stored changed
                    }
                }
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
        Snapshot::new(limits, tools, priors).with_floor(self.config.floor as f32)
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
    samples: &[Sample],
    counts: (u64, u64, u64),
    tool: Option<String>,
    last_seen: i64,
) -> Option<Family> {
    let mut family = Family::new(FamilyKind::from_name(kind)?, &name);
    let shared = family.kind != FamilyKind::Address;
    for sample in samples.iter().take(RECENT) {
        family.samples.remember(*sample, shared);
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
mod tests;
