//! What the workers plan with: an immutable copy of the model's figures, published by the
//! pipeline through an `ArcSwap`, so a worker reads it with one atomic load and no lock.
//!
//! How a plan is chosen, so that no client can steer another's: the most specific evidence
//! decides, not the earliest. The address's own figure, only for the tool it was learned
//! with; then the tool's learned figure (this sensor's, else the fleet's); then the tool's
//! prior; then the User-Agent's (this sensor's, else the fleet's); then the header order's. A client nothing is known about keeps the full drip, and so does a tool
//! whose prior says `hold` (a timer that restarts on every byte, or one request per target: an
//! early answer buys nothing), whatever any family learned. Whatever decides,
//! the plan never ends before the floor (half the tool's prior where it has one, else four
//! drip intervals) nor, for a tool with a prior (a known hard timeout), after the prior.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::family::{FamilyKeys, FamilyKind, family_key};
use super::priors::Prior;

/// The model's figures at one moment, and the built-in and operator priors.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Family key → the give-up time (seconds) to plan with.
    limits: HashMap<u64, f32>,
    /// User-Agent family key → tool family key, where the classification named the tool.
    tools: HashMap<u64, u64>,
    /// Default give-up times of well-known tools, tried in order.
    priors: Arc<[Prior]>,
    /// The tool family key of each prior.
    prior_keys: Vec<u64>,
    /// No plan ends sooner than this without a prior (seconds).
    floor: f32,
    /// What the other sensors of the fleet learned ([`FleetFigures`]), used where this sensor
    /// has no figure of its own.
    fleet: Arc<FleetFigures>,
}

/// The fleet's figures, as read back from the central store (`crate::ship::fleet`): per tool
/// and User-Agent family, the median of the other sensors' figures.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FleetFigures {
    /// Family key → the fleet's give-up time (seconds).
    pub limits: HashMap<u64, f32>,
    /// User-Agent family key → tool family key, as the other sensors classified it.
    pub tools: HashMap<u64, u64>,
}

/// Where the give-up time a response was planned with came from (the `giveup_basis` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// A family learned it (which kind).
    Learned(FamilyKind),
    /// A built-in or operator prior for the tool its User-Agent names.
    Prior,
    /// The fleet's figure for a family this sensor has none for (which kind).
    Fleet(FamilyKind),
}

impl Basis {
    /// The stored name: the family kind, or `prior`.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Learned(kind) => kind.name(),
            Basis::Prior => "prior",
            Basis::Fleet(FamilyKind::Tool) => "fleet_tool",
            Basis::Fleet(_) => "fleet_user_agent",
        }
    }
}

/// What a worker decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The request's families (for the model, when the response ends).
    pub keys: FamilyKeys,
    /// The give-up time planned with and where it came from; `None`: no family is known to
    /// give up, so the response runs its full length.
    pub give_up: Option<(f32, Basis)>,
}

impl Snapshot {
    /// A snapshot of these figures.
    pub fn new(limits: HashMap<u64, f32>, tools: HashMap<u64, u64>, priors: Arc<[Prior]>) -> Self {
        let prior_keys = priors
            .iter()
            .map(|p| family_key(FamilyKind::Tool, &p.tool))
            .collect();
        Self {
            limits,
            tools,
            priors,
            prior_keys,
            floor: 0.0,
            fleet: Arc::default(),
        }
    }

    /// The same snapshot with the fleet's figures.
    pub fn with_fleet(mut self, fleet: Arc<FleetFigures>) -> Self {
        self.fleet = fleet;
        self
    }

    /// The same snapshot with a floor: no plan without a prior ends sooner.
    pub fn with_floor(mut self, floor: f32) -> Self {
        self.floor = floor;
        self
    }

    /// A snapshot that knows only the priors (at start, before anything is learned).
    pub fn with_priors(priors: Arc<[Prior]>) -> Self {
        Self::new(HashMap::new(), HashMap::new(), priors)
    }

    /// The planned-with give-up time of one family, if it has one.
    pub fn limit(&self, key: u64) -> Option<f32> {
        self.limits.get(&key).copied()
    }

    /// The tool family the classification linked to a User-Agent family.
    pub fn tool_of(&self, user_agent_key: u64) -> Option<u64> {
        self.tools.get(&user_agent_key).copied()
    }

    /// Decides one request's plan from the most specific evidence there is (see the module
    /// doc), bounded by the floor and the tool's prior. No allocation.
    pub fn decide(&self, client: IpAddr, user_agent: Option<&str>, header_order: &str) -> Decision {
        let prior = user_agent.and_then(|ua| self.priors.iter().position(|p| p.matches(ua)));
        let mut keys = FamilyKeys::of(client, user_agent, header_order, None);
        keys.tool = match prior {
            Some(index) => self.prior_keys[index],
            None => self
                .tool_of(keys.user_agent)
                .or_else(|| self.fleet.tools.get(&keys.user_agent).copied())
                .unwrap_or(0),
        };
        let learned = |kind: FamilyKind| {
            let key = keys.get(kind);
            (key != 0)
                .then(|| self.limit(key))
                .flatten()
                .map(|seconds| (seconds, Basis::Learned(kind)))
        };
        if prior.is_some_and(|index| self.priors[index].hold) {
            // A per-read timer or one request per target: nothing, learned or not, shortens it.
            return Decision {
                keys,
                give_up: None,
            };
        }
        let fleet = |kind: FamilyKind| {
            let key = keys.get(kind);
            (key != 0)
                .then(|| self.fleet.limits.get(&key).copied())
                .flatten()
                .map(|seconds| (seconds, Basis::Fleet(kind)))
        };
        let same_tool = keys.tool != 0 && self.tool_of(keys.address) == Some(keys.tool);
        let chosen = same_tool
            .then(|| learned(FamilyKind::Address))
            .flatten()
            .or_else(|| learned(FamilyKind::Tool))
            .or_else(|| fleet(FamilyKind::Tool))
            .or_else(|| prior.map(|index| (self.priors[index].give_up as f32, Basis::Prior)))
            .or_else(|| learned(FamilyKind::UserAgent))
            .or_else(|| fleet(FamilyKind::UserAgent))
            .or_else(|| learned(FamilyKind::HeaderOrder));
        let give_up = chosen.map(|(seconds, basis)| {
            let bounded = match prior {
                Some(index) => {
                    let ceiling = self.priors[index].give_up as f32;
                    seconds.clamp(ceiling / 2.0, ceiling)
                }
                None => seconds.max(self.floor),
            };
            (bounded, basis)
        });
        Decision { keys, give_up }
    }
}

/// The snapshot slot shared by the pipeline (which stores) and the workers (which load).
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn priors() -> Arc<[Prior]> {
        Arc::from(vec![Prior {
            tool: "gobuster".into(),
            user_agent: "gobuster/".into(),
            give_up: 10.0,
            hold: false,
        }])
    }

    #[test]
    fn a_prior_answers_a_tool_never_seen() {
        let snapshot = Snapshot::with_priors(priors());
        let ip = "192.0.2.1".parse().unwrap();
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "host,user-agent");
        assert_eq!(decision.give_up, Some((10.0, Basis::Prior)));
        assert_eq!(decision.keys.tool, family_key(FamilyKind::Tool, "gobuster"));
        let unknown = snapshot.decide(ip, Some("curl/7.88.1"), "host,user-agent,accept");
        assert_eq!(unknown.give_up, None, "no figure: the full drip");
        assert_eq!(unknown.keys.tool, 0);
    }

    #[test]
    fn the_most_specific_evidence_decides_within_the_priors_bounds() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let keys = FamilyKeys::of(ip, Some("gobuster/3.5"), "h", Some("gobuster"));
        let mut limits = HashMap::new();
        limits.insert(keys.header_order, 2.0);
        limits.insert(keys.user_agent, 3.0);
        let snapshot = Snapshot::new(limits.clone(), HashMap::new(), priors());
        // The prior beats a User-Agent or a header order, however early they are.
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        assert_eq!(decision.give_up, Some((10.0, Basis::Prior)));
        limits.insert(keys.tool, 20.0);
        let snapshot = Snapshot::new(limits.clone(), HashMap::new(), priors());
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        // The learned tool figure decides, but never past the tool's own timeout.
        assert_eq!(
            decision.give_up,
            Some((10.0, Basis::Learned(FamilyKind::Tool)))
        );
        limits.insert(keys.tool, 1.0);
        let snapshot = Snapshot::new(limits.clone(), HashMap::new(), priors());
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        assert_eq!(
            decision.give_up,
            Some((5.0, Basis::Learned(FamilyKind::Tool)))
        );
        // The address's own figure only for the tool it was learned with.
        limits.insert(keys.address, 6.0);
        let other_tool = HashMap::from([(keys.address, family_key(FamilyKind::Tool, "nikto"))]);
        let snapshot = Snapshot::new(limits.clone(), other_tool, priors());
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        assert_eq!(
            decision.give_up,
            Some((5.0, Basis::Learned(FamilyKind::Tool)))
        );
        let same_tool = HashMap::from([(keys.address, keys.tool)]);
        let snapshot = Snapshot::new(limits, same_tool, priors());
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        assert_eq!(
            decision.give_up,
            Some((6.0, Basis::Learned(FamilyKind::Address)))
        );
    }

    #[test]
    fn a_hold_prior_keeps_the_full_drip_whatever_was_learned() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let priors: Arc<[Prior]> = Arc::from(vec![Prior {
            tool: "zgrab".into(),
            user_agent: "zgrab/".into(),
            give_up: 60.0,
            hold: true,
        }]);
        let keys = FamilyKeys::of(ip, Some("Mozilla/5.0 zgrab/0.x"), "h", Some("zgrab"));
        let limits = HashMap::from([
            (keys.tool, 5.0),
            (keys.user_agent, 5.0),
            (keys.header_order, 5.0),
            (keys.address, 5.0),
        ]);
        let tools = HashMap::from([(keys.address, keys.tool)]);
        let snapshot = Snapshot::new(limits, tools, priors);
        let decision = snapshot.decide(ip, Some("Mozilla/5.0 zgrab/0.x"), "h");
        assert_eq!(decision.give_up, None);
        assert_eq!(decision.keys.tool, keys.tool, "still learned as the tool");
    }

    #[test]
    fn without_a_prior_the_floor_holds_and_no_user_agent_is_no_family() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let keys = FamilyKeys::of(ip, Some("curl/8"), "h", None);
        let limits = HashMap::from([(keys.user_agent, 1.5), (keys.header_order, 9.0)]);
        let snapshot = Snapshot::new(limits, HashMap::new(), priors()).with_floor(6.0);
        let decision = snapshot.decide(ip, Some("curl/8"), "h");
        assert_eq!(
            decision.give_up,
            Some((6.0, Basis::Learned(FamilyKind::UserAgent)))
        );
        let bare = snapshot.decide(ip, None, "h");
        assert_eq!(bare.keys.user_agent, 0);
        assert_eq!(
            bare.give_up,
            Some((9.0, Basis::Learned(FamilyKind::HeaderOrder)))
        );
    }

    #[test]
    fn the_fleets_figure_fills_in_where_this_sensor_has_none() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let keys = FamilyKeys::of(ip, Some("Custom/1"), "h", None);
        let tool = family_key(FamilyKind::Tool, "custom");
        let fleet = Arc::new(FleetFigures {
            limits: HashMap::from([(tool, 8.0), (keys.user_agent, 12.0)]),
            tools: HashMap::from([(keys.user_agent, tool)]),
        });
        let snapshot =
            Snapshot::new(HashMap::new(), HashMap::new(), priors()).with_fleet(fleet.clone());
        let decision = snapshot.decide(ip, Some("Custom/1"), "h");
        // The fleet linked the User-Agent to its tool: the tool's fleet figure decides.
        assert_eq!(
            decision.give_up,
            Some((8.0, Basis::Fleet(FamilyKind::Tool)))
        );
        assert_eq!(decision.keys.tool, tool);
        // This sensor's own figure for the tool beats the fleet's.
        let own = HashMap::from([(tool, 9.0)]);
        let snapshot = Snapshot::new(own, HashMap::new(), priors()).with_fleet(fleet.clone());
        let decision = snapshot.decide(ip, Some("Custom/1"), "h");
        assert_eq!(
            decision.give_up,
            Some((9.0, Basis::Learned(FamilyKind::Tool)))
        );
        // A prior beats the fleet's User-Agent figure, and bounds a fleet tool figure.
        let gobuster = FamilyKeys::of(ip, Some("gobuster/3.6"), "h", Some("gobuster"));
        let fleet = Arc::new(FleetFigures {
            limits: HashMap::from([(gobuster.user_agent, 2.0), (gobuster.tool, 60.0)]),
            tools: HashMap::new(),
        });
        let snapshot = Snapshot::new(HashMap::new(), HashMap::new(), priors()).with_fleet(fleet);
        let decision = snapshot.decide(ip, Some("gobuster/3.6"), "h");
        assert_eq!(
            decision.give_up,
            Some((10.0, Basis::Fleet(FamilyKind::Tool)))
        );
    }

    #[test]
    fn a_user_agent_linked_to_a_tool_uses_the_tools_figure() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let keys = FamilyKeys::of(ip, Some("Custom/1"), "h", None);
        let tool = family_key(FamilyKind::Tool, "custom");
        let limits = HashMap::from([(tool, 7.0)]);
        let tools = HashMap::from([(keys.user_agent, tool)]);
        let snapshot = Snapshot::new(limits, tools, priors());
        let decision = snapshot.decide(ip, Some("Custom/1"), "h");
        assert_eq!(
            decision.give_up,
            Some((7.0, Basis::Learned(FamilyKind::Tool)))
        );
        assert_eq!(decision.keys.tool, tool);
    }
}
