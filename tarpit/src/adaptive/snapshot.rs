//! What the workers plan with: an immutable copy of the model's figures, published by the
//! pipeline through an `ArcSwap`, so a worker reads it with one atomic load and no lock.

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
}

/// Where the give-up time a response was planned with came from (the `giveup_basis` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// A family learned it (which kind).
    Learned(FamilyKind),
    /// A built-in or operator prior for the tool its User-Agent names.
    Prior,
}

impl Basis {
    /// The stored name: the family kind, or `prior`.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Learned(kind) => kind.name(),
            Basis::Prior => "prior",
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
        }
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

    /// Decides one request's plan: the earliest give-up time any of its families is known for
    /// (learned, or the prior of the tool its User-Agent names). Ending too early costs one
    /// more request; ending too late can lose the scanner, hence the earliest. No allocation.
    pub fn decide(&self, client: IpAddr, user_agent: Option<&str>, header_order: &str) -> Decision {
        let prior = user_agent.and_then(|ua| self.priors.iter().position(|p| p.matches(ua)));
        let mut keys = FamilyKeys::of(client, user_agent, header_order, None);
        keys.tool = match prior {
            Some(index) => self.prior_keys[index],
            None => self.tool_of(keys.user_agent).unwrap_or(0),
        };
        let mut give_up: Option<(f32, Basis)> = None;
        let mut consider = |seconds: f32, basis: Basis| {
            if give_up.is_none_or(|(best, _)| seconds < best) {
                give_up = Some((seconds, basis));
            }
        };
        for kind in FamilyKind::ALL {
            let key = keys.get(kind);
            if key != 0
                && let Some(seconds) = self.limit(key)
            {
                consider(seconds, Basis::Learned(kind));
            }
        }
        // A tool's prior counts only until the tool has a figure of its own.
        if let Some(index) = prior
            && self.limit(keys.tool).is_none()
        {
            consider(self.priors[index].give_up as f32, Basis::Prior);
        }
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
    fn the_earliest_known_give_up_wins_and_a_learned_tool_replaces_its_prior() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let keys = FamilyKeys::of(ip, Some("gobuster/3.5"), "h", Some("gobuster"));
        let mut limits = HashMap::new();
        limits.insert(keys.tool, 20.0);
        limits.insert(keys.header_order, 30.0);
        let snapshot = Snapshot::new(limits.clone(), HashMap::new(), priors());
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        assert_eq!(
            decision.give_up,
            Some((20.0, Basis::Learned(FamilyKind::Tool)))
        );
        limits.insert(keys.address, 4.0);
        let snapshot = Snapshot::new(limits, HashMap::new(), priors());
        let decision = snapshot.decide(ip, Some("gobuster/3.5"), "h");
        assert_eq!(
            decision.give_up,
            Some((4.0, Basis::Learned(FamilyKind::Address)))
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
