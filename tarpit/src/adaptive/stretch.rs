//! Planned ends checked against what the client did next.
//!
//! A figure is the impatient end of a family's give-ups, so most of the family's clients are
//! answered before they would have given up. A client that sends its next request at once after
//! a planned end (within [`AT_ONCE`]) was still waiting: it was released early. When that is seen
//! from `min_prefixes` distinct client prefixes (an address family: its own), the family's
//! figure moves one [`STEP_S`] later, and so on.
//!
//! Why this cannot be turned into the reverse attack (pushing a figure later until real tools
//! time out):
//! - the moved figure never passes the longest give-up the family has on record (no client is
//!   held past what some client was seen to wait), nor a known tool's prior (the snapshot's
//!   ceiling), nor [`MAX_STEPS`] steps;
//! - one prefix counts once per step, as for give-ups;
//! - the first give-up after a step undoes every step and blocks stretching the family for
//!   [`BLOCK_S`]: a crafted run of "continuations" costs real clients at most one timeout per
//!   family and day;
//! - it is kept in memory only: a restart plans from the evidence again.

use super::sample::Prefix;

/// A next request this soon after a planned end (by the events' own clocks) means the client
/// was still waiting.
pub const AT_ONCE: std::time::Duration = std::time::Duration::from_secs(1);

/// How much later a figure moves per step (seconds): the default margin.
pub const STEP_S: f64 = 1.0;

/// Steps a figure moves at most.
pub const MAX_STEPS: u8 = 8;

/// How long a family that gave up after being stretched is not stretched again (seconds).
pub const BLOCK_S: i64 = 86_400;

/// Prefixes remembered per step, at most.
const PREFIXES: usize = 16;

/// One family's stretch: how many steps its figure moved, and the evidence for the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stretch {
    /// Distinct prefixes that continued at once since the last step.
    continued: Vec<Prefix>,
    /// Steps taken.
    steps: u8,
    /// No stretching before this time (UNIX seconds).
    blocked_until: i64,
}

impl Stretch {
    /// Notes a planned end after which a client of `prefix` sent its next request at once; takes
    /// a step once `min_prefixes` distinct prefixes did. Whether it stepped.
    pub fn continued(&mut self, prefix: Prefix, min_prefixes: usize, now: i64) -> bool {
        if now < self.blocked_until || self.steps >= MAX_STEPS {
            return false;
        }
        if !self.continued.contains(&prefix) && self.continued.len() < PREFIXES {
            self.continued.push(prefix);
        }
        if self.continued.len() < min_prefixes.max(1) {
            return false;
        }
        self.continued.clear();
        self.steps += 1;
        true
    }

    /// A give-up: the steps were too many (or there were none); after a step, stretching
    /// stops for [`BLOCK_S`].
    pub fn gave_up(&mut self, now: i64) {
        if self.steps > 0 {
            self.blocked_until = now + BLOCK_S;
        }
        self.steps = 0;
        self.continued.clear();
    }

    /// Whether the figure has moved at all (else it is the evidence's as it stands).
    pub fn moved(&self) -> bool {
        self.steps > 0
    }

    /// `figure` moved by the steps, never past `longest` (the longest give-up on record).
    pub fn apply(&self, figure: f64, longest: f64) -> f64 {
        (figure + f64::from(self.steps) * STEP_S).min(longest.max(figure))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adaptive::family::{FamilyKeys, FamilyKind};
    use crate::adaptive::model::{FamilyNames, GiveUpModel, ModelConfig, Outcome};

    fn prefix(client: &str) -> Prefix {
        Prefix::of(client.parse().unwrap())
    }

    #[test]
    fn a_step_needs_distinct_prefixes_and_stops_at_the_longest_give_up() {
        let mut stretch = Stretch::default();
        for _ in 0..1000 {
            assert!(!stretch.continued(prefix("192.0.2.7"), 3, 0));
        }
        assert!(!stretch.continued(prefix("198.51.100.1"), 3, 0));
        assert!(stretch.continued(prefix("203.0.113.1"), 3, 0));
        assert_eq!(stretch.apply(5.0, 9.0), 6.0);
        for _ in 0..20 {
            for client in ["192.0.2.1", "198.51.100.1", "203.0.113.1"] {
                stretch.continued(prefix(client), 3, 0);
            }
        }
        assert_eq!(
            stretch.apply(5.0, 9.0),
            9.0,
            "never past the longest give-up"
        );
        assert_eq!(
            stretch.apply(5.0, 30.0),
            5.0 + f64::from(MAX_STEPS) * STEP_S
        );
    }

    #[test]
    fn a_give_up_after_a_step_undoes_it_and_blocks_stretching_for_a_day() {
        let mut stretch = Stretch::default();
        for client in ["192.0.2.1", "198.51.100.1", "203.0.113.1"] {
            stretch.continued(prefix(client), 3, 100);
        }
        assert_eq!(stretch.apply(5.0, 9.0), 6.0);
        stretch.gave_up(200);
        assert_eq!(stretch.apply(5.0, 9.0), 5.0);
        for client in ["192.0.2.1", "198.51.100.1", "203.0.113.1"] {
            assert!(!stretch.continued(prefix(client), 3, 300));
        }
        assert!(stretch.continued(prefix("192.0.2.1"), 1, 200 + BLOCK_S));
    }

    /// The model end to end: clients of a User-Agent released early from three networks move
    /// its figure later; the next give-up brings it back.
    #[test]
    fn continuations_move_a_shared_figure_later_within_its_evidence() {
        let mut model = GiveUpModel::new(ModelConfig::default());
        let ua_figure = |model: &GiveUpModel| {
            let snapshot = model.snapshot(Arc::from(Vec::new()));
            let keys = FamilyKeys::of("192.0.2.1".parse().unwrap(), Some("scan/1"), "h", None);
            snapshot.limit(keys.user_agent)
        };
        let observe = |model: &mut GiveUpModel, client: &str, outcome: Outcome| {
            let ip = client.parse().unwrap();
            let keys = FamilyKeys::of(ip, Some("scan/1"), "h", None);
            let names = FamilyNames {
                address: client.into(),
                user_agent: "scan/1".into(),
                header_order: "h".into(),
                tool: None,
            };
            let keys = model.register(&keys, &names);
            model.observe(&keys, ip, outcome);
        };
        for (client, seconds) in [
            ("192.0.2.1", 5.0),
            ("198.51.100.1", 8.0),
            ("203.0.113.1", 12.0),
        ] {
            observe(&mut model, client, Outcome::GaveUp(seconds));
        }
        assert_eq!(ua_figure(&model), Some(5.0));
        for _ in 0..500 {
            observe(&mut model, "192.0.3.9", Outcome::Continued);
        }
        assert_eq!(ua_figure(&model), Some(5.0), "one prefix moves nothing");
        for client in ["198.51.101.9", "203.0.114.9"] {
            observe(&mut model, client, Outcome::Continued);
        }
        assert_eq!(ua_figure(&model), Some(6.0));
        let order = model
            .families()
            .find(|f| f.kind == FamilyKind::HeaderOrder)
            .unwrap();
        assert_eq!(
            order.planned_ends, 0,
            "a continuation is not counted as a planned end"
        );
        observe(&mut model, "192.0.3.9", Outcome::GaveUp(5.5));
        assert_eq!(ua_figure(&model), Some(5.0));
    }
}
