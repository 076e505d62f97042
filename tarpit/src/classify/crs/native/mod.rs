//! The native evaluator of the OWASP CRS: the same rule files libmodsecurity loads, run by the
//! tarpit itself, about three times as fast (`cargo xtask bench classify`), so that distinct
//! attack requests are tagged at the pace a sensor receives them.
//!
//! It implements the subset of ModSecurity's rule language the CRS 3.x request rules use: the
//! directives `SecRule`, `SecAction`, `SecMarker`, `SecDefaultAction` and the exclusion
//! directives; the variables of [`variable`], the operators of [`operator`], the
//! transformations of [`transform`]; the actions `chain`, `skipAfter`, `setvar`, `capture`,
//! `multiMatch`, `ctl`, `log`/`nolog`. Whatever else a rule file holds is refused at load with
//! its file, line and reason, and the tarpit can run libmodsecurity instead
//! (`[classify] crs_engine`). libmodsecurity stays the reference: `tests/crs.rs` runs both on the
//! same corpora and requires agreement on at least 99% of rule firings.
//!
//! Against crafted input: each transformation is linear in its input; `@rx` runs on PCRE2's JIT
//! with the library's own options, so a pattern costs what it costs libmodsecurity (the CRS's
//! patterns are reviewed for backtracking); request bodies are the preview the tarpit keeps;
//! `TX` keys a client can name (through `setvar` with `%{MATCHED_VAR_NAME}`) live only for its
//! own request.

pub mod decode;
pub mod eval;
pub mod operator;
pub mod parse;
pub mod request;
pub mod rules;
pub mod transform;
pub mod variable;

use super::catalog::Catalog;
use super::modsec::{EngineRequest, Firings};

/// The rules could not be loaded by the native evaluator.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// A directive could not be split (an unclosed quote).
    #[error("line {line}: {reason}")]
    Syntax {
        /// Line of the directive.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A directive of a file is not supported or does not compile.
    #[error("{file}, line {line}: {reason}")]
    At {
        /// The file (or the generated configuration).
        file: String,
        /// Line of the directive.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// The compiled rule set, ready to evaluate requests (one per thread that evaluates; the
/// compiled regexes keep per-thread scratch space).
#[derive(Debug)]
pub struct NativeEngine {
    rules: rules::RuleSet,
    transactions: u64,
}

impl NativeEngine {
    /// Compiles configuration text (the same text libmodsecurity is given).
    pub fn load(config: &str) -> Result<Self, NativeError> {
        Ok(Self {
            rules: rules::RuleSet::load(config, "the CRS configuration")?,
            transactions: 0,
        })
    }

    /// Evaluates the request phases and returns the rules of `catalog` that fired, and the
    /// anomaly score.
    pub fn evaluate(&mut self, request: &EngineRequest<'_>, catalog: &Catalog) -> Firings {
        self.transactions += 1;
        let outcome = eval::evaluate(
            &self.rules,
            request::Request::of(request),
            self.transactions,
        );
        Firings {
            rule_ids: outcome
                .fired
                .into_iter()
                .filter(|&id| catalog.contains(id))
                .collect(),
            score: outcome.anomaly_score,
        }
    }
}
