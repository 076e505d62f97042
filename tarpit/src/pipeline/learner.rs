//! The pipeline's half of the adaptive mode: turns `request` and `response_end` events into
//! give-up model updates, publishes a fresh snapshot to the workers, and hands changed
//! families to the sinks for storage. Here, above `event` and `adaptive`, so neither imports
//! the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::adaptive::model::{FamilyNames, FamilyRow, GiveUpModel, Outcome};
use crate::adaptive::priors::Prior;
use crate::adaptive::snapshot::{FleetFigures, SharedSnapshot};
use crate::adaptive::{FamilyKeys, family};
use crate::event::{RequestRecord, ResponseEnd};

/// Responses awaiting their end, at most (one per held connection is the normal case; the
/// bound only matters when `response_end` events are lost).
const PENDING: usize = 1 << 18;

/// At most one snapshot per this interval: a burst of give-ups rebuilds it once.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// End reasons that mean the client gave up on a response.
const GIVE_UPS: [&str; 2] = ["client_closed", "client_reset"];

/// The learning side of the adaptive mode, owned by the pipeline.
pub struct Learner {
    model: GiveUpModel,
    priors: Arc<[Prior]>,
    snapshot: SharedSnapshot,
    /// (conn_id, request_seq) → families and client, for adaptive responses still running.
    pending: LruCache<(u64, u32), (FamilyKeys, std::net::IpAddr)>,
    last_publish: Option<Instant>,
    dirty_snapshot: bool,
    /// Client address → the families and end time of its latest planned end, to tell whether
    /// its next request came at once (`adaptive::stretch`).
    released: LruCache<std::net::IpAddr, (FamilyKeys, std::time::SystemTime)>,
    /// The fleet's figures as the fleet exchange last read them (`crate::ship::fleet`).
    fleet: Option<tokio::sync::watch::Receiver<Arc<FleetFigures>>>,
}

impl Learner {
    /// A learner starting from `model` (restored from the database), publishing into
    /// `snapshot`.
    pub fn new(model: GiveUpModel, priors: Arc<[Prior]>, snapshot: SharedSnapshot) -> Self {
        let mut learner = Self {
            model,
            priors,
            snapshot,
            // Grown as needed (a bounded LruCache would allocate all of its capacity at once).
            pending: LruCache::unbounded(),
            last_publish: None,
            dirty_snapshot: true,
            released: LruCache::unbounded(),
            fleet: None,
        };
        learner.publish();
        learner
    }

    /// Plans with the fleet's figures too, as `fleet` receives them.
    pub fn follow_fleet(&mut self, fleet: tokio::sync::watch::Receiver<Arc<FleetFigures>>) {
        self.fleet = Some(fleet);
        self.dirty_snapshot = true;
    }

    /// Notes an adaptive request (classified already, so its tool tag is known).
    pub fn on_request(&mut self, record: &RequestRecord) {
        let Some(keys) = record.families else { return };
        if let Some((released, at)) = self.released.pop(&record.client_ip)
            && record
                .timestamp
                .duration_since(at)
                .is_ok_and(|gap| gap <= crate::adaptive::stretch::AT_ONCE)
        {
            self.model
                .observe(&released, record.client_ip, Outcome::Continued);
        }
        let names = FamilyNames {
            address: record.client_ip.to_string(),
            user_agent: family::cut(record.user_agent.as_deref().unwrap_or("")).to_owned(),
            header_order: record
                .fingerprint
                .as_ref()
                .and_then(|f| f.header_order.as_deref())
                .map(|order| family::cut(order).to_owned())
                .unwrap_or_default(),
            tool: record
                .tags
                .iter()
                .find_map(|tag| tag.strip_prefix("tool:"))
                .map(str::to_owned),
        };
        let keys = self.model.register(&keys, &names);
        self.pending.put(
            (record.conn_id, record.request_seq),
            (keys, record.client_ip),
        );
        if self.pending.len() > PENDING {
            self.pending.pop_lru();
        }
        self.dirty_snapshot = true;
    }

    /// Learns from the end of an adaptive response.
    pub fn on_response_end(&mut self, end: &ResponseEnd) {
        let Some((keys, client)) = self.pending.pop(&(end.conn_id, end.request_seq)) else {
            return;
        };
        let outcome = match end.end_reason {
            "planned_end" => Outcome::PlannedEnd,
            "complete" => Outcome::Completed,
            reason if GIVE_UPS.contains(&reason) => {
                Outcome::GaveUp(end.client_fin_s.unwrap_or(end.duration_s))
            }
            _ => return, // shutdown, lifetime, peer gone: nothing about patience
        };
        self.model.observe(&keys, client, outcome);
        if outcome == Outcome::PlannedEnd {
            self.released.put(client, (keys, end.closed_at));
            if self.released.len() > PENDING {
                self.released.pop_lru();
            }
        }
        self.dirty_snapshot = true;
    }

    /// Publishes a new snapshot when something changed (at most every half second, and
    /// always before families are stored) and returns the families to store, if any.
    pub fn tick(&mut self) -> Option<Vec<FamilyRow>> {
        if let Some(fleet) = &self.fleet
            && fleet.has_changed().unwrap_or(false)
        {
            self.dirty_snapshot = true;
        }
        let due = self
            .last_publish
            .is_none_or(|at| at.elapsed() >= PUBLISH_INTERVAL);
        // Families about to be stored are always published first, so a figure in the
        // database is one the workers already plan with.
        if self.dirty_snapshot && (due || self.model.has_changes()) {
            self.publish();
        }
        self.model.has_changes().then(|| self.model.take_changed())
    }

    /// Families kept at most (in memory and in storage).
    pub fn max_families(&self) -> usize {
        self.model.config().max_families
    }

    fn publish(&mut self) {
        let fleet = self
            .fleet
            .as_mut()
            .map(|fleet| fleet.borrow_and_update().clone())
            .unwrap_or_default();
        self.snapshot.store(Arc::new(
            self.model.snapshot(self.priors.clone()).with_fleet(fleet),
        ));
        self.last_publish = Some(Instant::now());
        self.dirty_snapshot = false;
    }
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::model::ModelConfig;
    use crate::adaptive::snapshot::Snapshot;
    use crate::adaptive::{Basis, FamilyKind};

    fn request(conn_id: u64, snapshot: &Snapshot) -> RequestRecord {
        // Each connection from its own network: a tool's figure needs several.
        let client = format!("192.0.{}.1", conn_id % 250);
        let mut record = RequestRecord::sample(client.parse().unwrap());
        record.conn_id = conn_id;
        let decision = snapshot.decide(record.client_ip, record.user_agent.as_deref(), "host");
        record.families = Some(decision.keys);
        record.tags = vec![Arc::from("tool:mytool")];
        record
    }

    #[test]
    fn give_ups_become_a_published_figure_and_rows_to_store() {
        let snapshot: SharedSnapshot =
            Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::default()));
        let model = GiveUpModel::new(ModelConfig::default());
        let mut learner = Learner::new(model, Arc::from(Vec::new()), snapshot.clone());
        for conn_id in 1..=3 {
            let record = request(conn_id, &snapshot.load());
            learner.on_request(&record);
            learner.on_response_end(&ResponseEnd {
                conn_id,
                request_seq: 1,
                closed_at: std::time::SystemTime::now(),
                bytes_sent: 5,
                duration_s: 6.0 + conn_id as f64,
                end_reason: "client_closed",
                client_fin_s: None,
            });
        }
        // An end the learner never saw the request of is ignored.
        learner.on_response_end(&ResponseEnd {
            conn_id: 99,
            request_seq: 1,
            closed_at: std::time::SystemTime::now(),
            bytes_sent: 5,
            duration_s: 1.0,
            end_reason: "client_closed",
            client_fin_s: None,
        });
        learner.last_publish = None;
        let rows = learner.tick().expect("changed families");
        assert!(rows.iter().any(|r| r.family.kind == FamilyKind::Tool
            && r.family.name == "mytool"
            && r.give_up_s == Some(7.0)));
        let record = request(10, &snapshot.load());
        let decision =
            snapshot
                .load()
                .decide(record.client_ip, record.user_agent.as_deref(), "host");
        assert_eq!(decision.give_up.map(|(s, _)| s), Some(7.0));
        assert!(matches!(decision.give_up, Some((_, Basis::Learned(_)))));
        assert!(learner.tick().is_none(), "nothing changed since");
    }

    /// A planned end answered by a next request within a second, from three networks, moves
    /// the tool's figure one step later; a next request that came late moves nothing.
    #[test]
    fn a_next_request_at_once_after_a_planned_end_moves_the_figure_later() {
        let snapshot: SharedSnapshot =
            Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::default()));
        let model = GiveUpModel::new(ModelConfig::default());
        let mut learner = Learner::new(model, Arc::from(Vec::new()), snapshot.clone());
        let end = |conn_id, reason, seconds| ResponseEnd {
            conn_id,
            request_seq: 1,
            closed_at: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            bytes_sent: 5,
            duration_s: seconds,
            end_reason: reason,
            client_fin_s: None,
        };
        for (conn_id, seconds) in [(1, 7.0), (2, 9.0), (3, 12.0)] {
            learner.on_request(&request(conn_id, &snapshot.load()));
            learner.on_response_end(&end(conn_id, "client_closed", seconds));
        }
        let tool_figure = |learner: &mut Learner| {
            learner.last_publish = None;
            learner.tick();
            let key = crate::adaptive::family::family_key(FamilyKind::Tool, "mytool");
            snapshot.load().limit(key)
        };
        assert_eq!(tool_figure(&mut learner), Some(7.0));
        // Clients of three other networks are released on plan; their next requests come
        // 0.5 s later (one of them 5 s later: it was not waiting).
        for (conn_id, next_after) in [(11, 0.5), (12, 0.5), (13, 5.0)] {
            learner.on_request(&request(conn_id, &snapshot.load()));
            learner.on_response_end(&end(conn_id, "planned_end", 6.0));
            let mut next = request(conn_id + 100, &snapshot.load());
            next.client_ip = request(conn_id, &snapshot.load()).client_ip;
            next.timestamp = std::time::SystemTime::UNIX_EPOCH
                + Duration::from_secs(1000)
                + Duration::from_secs_f64(next_after);
            learner.on_request(&next);
        }
        assert_eq!(
            tool_figure(&mut learner),
            Some(7.0),
            "two networks are not three"
        );
        learner.on_request(&request(14, &snapshot.load()));
        learner.on_response_end(&end(14, "planned_end", 6.0));
        let mut next = request(114, &snapshot.load());
        next.client_ip = request(14, &snapshot.load()).client_ip;
        next.timestamp = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        learner.on_request(&next);
        assert_eq!(tool_figure(&mut learner), Some(8.0));
    }
}
