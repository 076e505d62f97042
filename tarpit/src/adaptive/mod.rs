//! The adaptive mode (`[tarpit] mode = "adaptive"`): keep real scanners scanning.
//!
//! Most scanners give up on a response after a client timeout, and many abandon the host after
//! one failed request (gobuster aborts its whole scan). Holding a response past that point
//! gains nothing; completing it just before makes the scanner send its next request: more of
//! its time, and more of its wordlist on record. So:
//!
//! - the pipeline (`pipeline::learner`) learns, per client family ([`family`]: address, User-Agent, header order,
//!   tool), when its clients give up ([`model`]); built-in priors cover well-known tools seen
//!   for the first time ([`priors`]);
//! - it publishes the figures as an immutable [`Snapshot`] behind an `ArcSwap`; a worker loads
//!   it once per request, lock-free, and decides when to complete the response
//!   ([`Snapshot::decide`]): a margin before the earliest give-up any of the request's
//!   families is known for, or never (the full drip) when none is known;
//! - the answer is the [`persona`]'s page for the path (a 404 for random paths, bait pages for
//!   what scanners hunt), its body dripped with a jittered cadence and completed at the
//!   planned end.
//!
//! Every decision is recorded with the request (`response_mode`, `giveup_limit_s`,
//! `giveup_basis`, `planned_end_s`, `response_status`), and `end_reason = 'planned_end'`
//! tells an early planned end from a client's give-up.

pub mod family;
pub mod model;
pub mod persona;
pub mod priors;
pub mod sample;
pub mod snapshot;
pub mod store;
pub mod stretch;

use std::time::Duration;

pub use family::{FamilyKeys, FamilyKind};
pub use model::{GiveUpModel, ModelConfig, Outcome};
pub use persona::Persona;
pub use snapshot::{Basis, Decision, FleetFigures, SharedSnapshot, Snapshot};

/// What the workers need of the adaptive mode, built once at start.
#[derive(Debug)]
pub struct AdaptiveSettings {
    /// The model's latest figures.
    pub snapshot: SharedSnapshot,
    /// How long before the give-up time a response is completed.
    pub margin: Duration,
    /// Each drip gap is the delay times a factor in `1 ± jitter`.
    pub jitter: f64,
}

impl AdaptiveSettings {
    /// One drip gap: `delay` times a random factor in `1 ± jitter` (a perfectly regular tick
    /// is how scanners recognise a tarpit). The mean gap stays `delay`.
    pub fn gap(&self, delay: Duration) -> Duration {
        delay.mul_f64(1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0))
    }

    /// When to complete a response planned with this give-up time: `margin` before it, but
    /// never sooner than half of it (a family that gives up quickly still gets a slow answer).
    pub fn planned_end(&self, give_up_s: f32) -> Duration {
        let give_up = f64::from(give_up_s);
        Duration::from_secs_f64((give_up - self.margin.as_secs_f64()).max(give_up / 2.0))
    }
}

/// The persona (`[adaptive] persona`, else the built-in one), its bodies padded and dripped
/// over as many ticks as the drip's, when the adaptive mode or `drip_body = "persona"` serves
/// it; `None` when the drip drips dots.
pub fn load_persona(
    config: &crate::config::Config,
) -> Result<Option<Persona>, persona::PersonaError> {
    let serves = config.tarpit.mode == crate::config::TarpitMode::Adaptive
        || config.tarpit.drip_body == crate::config::DripBody::Persona;
    if !serves {
        return Ok(None);
    }
    let drip = crate::http::response::DripResponse::new(
        config.tarpit.response_chunk.as_bytes(),
        config.tarpit.max_response_bytes,
        &config.tarpit.server_header,
    );
    Persona::load(
        config.adaptive.persona.as_deref(),
        config.tarpit.max_response_bytes as usize,
        drip.ticks(),
    )
    .map(Some)
}

/// What the adaptive mode starts with: the workers' settings (an empty snapshot slot, margin
/// and jitter), the model restored from the database, and the priors. Errors name the file,
/// entry and reason. The persona is loaded apart ([`load_persona`]): the drip can serve it too.
pub fn start(
    config: &crate::config::Config,
    database: &rusqlite::Connection,
) -> anyhow::Result<(
    AdaptiveSettings,
    GiveUpModel,
    std::sync::Arc<[priors::Prior]>,
)> {
    use anyhow::Context;
    let a = &config.adaptive;
    let priors: std::sync::Arc<[priors::Prior]> = priors::load(a.priors.as_deref())?.into();
    let mut model = GiveUpModel::new(ModelConfig {
        quantile: a.quantile,
        min_samples: a.min_samples as usize,
        min_prefixes: a.min_prefixes as usize,
        floor: 4.0 * config.tarpit.response_delay,
        max_families: a.max_families,
        min_give_up: 2.0 * config.tarpit.response_delay,
    });
    let stored =
        store::load_families(database, a.max_families).context("reading the give-up model")?;
    tracing::info!(
        families = stored.len(),
        "adaptive mode: give-up model restored"
    );
    model.restore(stored);
    let snapshot: SharedSnapshot =
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::default()));
    let settings = AdaptiveSettings {
        snapshot,
        margin: Duration::from_secs_f64(a.margin),
        jitter: a.jitter,
    };
    Ok((settings, model, priors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_planned_end_is_a_margin_before_the_give_up_but_not_before_half_of_it() {
        let settings = AdaptiveSettings {
            snapshot: Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::default())),
            margin: Duration::from_secs(1),
            jitter: 0.3,
        };
        assert_eq!(settings.planned_end(10.0), Duration::from_secs(9));
        assert_eq!(settings.planned_end(1.5), Duration::from_secs_f64(0.75));
        let delay = Duration::from_millis(1500);
        let gaps: Vec<Duration> = (0..1000).map(|_| settings.gap(delay)).collect();
        assert!(
            gaps.iter()
                .all(|g| *g >= delay.mul_f64(0.7) && *g <= delay.mul_f64(1.3))
        );
        assert!(
            gaps.iter().any(|g| *g < delay.mul_f64(0.9)),
            "no gap was shorter"
        );
        assert!(
            gaps.iter().any(|g| *g > delay.mul_f64(1.1)),
            "no gap was longer"
        );
    }
}
