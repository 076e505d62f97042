//! One request through the rule set: phase 1, the body parsed as phase 1 chose, phase 2; the
//! rules in load order with `skipAfter` jumps, chains, `setvar` for each matched value, `capture`,
//! and the `ctl`s that exclude rules or targets for this request.

use super::operator;
use super::request::{Collection, Request};
use super::rules::{Ctl, Entry, Rule, RuleSet, in_ranges, tag_matches};
use super::variable::{self, Context, Target, Value, Variable};

/// What evaluating one request gives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Ids of the rules that fired with `log` in effect, in firing order, without repeats.
    pub fired: Vec<u32>,
    /// `TX:anomaly_score` at the end (0 when unset).
    pub anomaly_score: u32,
}

/// The state of one request's evaluation.
struct Transaction<'r> {
    rules: &'r RuleSet,
    request: Request,
    /// `TX`, lower-case keys.
    tx: Collection,
    /// `MATCHED_VARS` of the rule being evaluated.
    matched: Vec<Value>,
    unique_id: Vec<u8>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    /// `ctl:ruleRemoveTarget...`: (ids or tag, target).
    removed_targets: Vec<(RuleRef, Target)>,
    processor: Option<super::request::BodyProcessor>,
    engine_off: bool,
    fired: Vec<u32>,
}

/// Which rules a target removal is for.
enum RuleRef {
    Ids(Vec<(u32, u32)>),
    Tag(String),
}

/// Evaluates `request` (its variables built) against `rules`.
pub fn evaluate(rules: &RuleSet, request: Request, unique_id: u64) -> Outcome {
    let mut t = Transaction {
        rules,
        request,
        tx: Collection::new(),
        matched: Vec::new(),
        unique_id: unique_id.to_string().into_bytes(),
        removed_ids: Vec::new(),
        removed_tags: Vec::new(),
        removed_targets: Vec::new(),
        processor: None,
        engine_off: rules.engine_off,
        fired: Vec::new(),
    };
    t.phase(0);
    let processor = t
        .processor
        .unwrap_or_else(|| t.request.default_processor());
    if rules.body_access {
        t.request.process_body(processor);
    } else {
        t.request.body.clear();
    }
    t.phase(1);
    let anomaly_score = t
        .tx_get(b"anomaly_score")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<i64>().ok())
        .map_or(0, |score| score.clamp(0, i64::from(u32::MAX)) as u32);
    Outcome {
        fired: t.fired,
        anomaly_score,
    }
}

impl Transaction<'_> {
    fn phase(&mut self, index: usize) {
        let rules = self.rules;
        let mut skip_to: Option<&str> = None;
        for entry in &rules.phases[index] {
            if self.engine_off {
                return;
            }
            let rule = match entry {
                Entry::Marker(name) => {
                    if skip_to == Some(name.as_str()) {
                        skip_to = None;
                    }
                    continue;
                }
                Entry::Rule(rule) => rule,
            };
            if skip_to.is_some() || self.removed(rule) {
                continue;
            }
            self.matched.clear();
            if self.rule(rule, rule) {
                if rule.log == Some(true) && !self.fired.contains(&rule.id) {
                    self.fired.push(rule.id);
                }
                if let Some(marker) = &rule.skip_after {
                    skip_to = Some(marker);
                }
            }
        }
    }

    /// Whether a `ctl` removed the rule for this request.
    fn removed(&self, rule: &Rule) -> bool {
        in_ranges(&self.removed_ids, rule.id)
            || self.removed_tags.iter().any(|tag| tag_matches(rule, tag))
    }

    /// Evaluates one link (and the rest of its chain); `top` is the chain's first rule.
    fn rule(&mut self, link: &Rule, top: &Rule) -> bool {
        let values = self.values(link, top);
        let mut any = false;
        for (name, value) in values {
            let mut candidates: Vec<Vec<u8>> = Vec::new();
            let mut current = value;
            if link.multi_match {
                candidates.push(current.clone());
            }
            for transform in &link.transforms {
                let next = transform.apply(&current);
                // multiMatch looks again only after a transformation that changed the value.
                if link.multi_match && next != current {
                    candidates.push(next.clone());
                }
                current = next;
            }
            if !link.multi_match {
                candidates.push(current);
            }
            for candidate in candidates {
                if self.operator(link, &candidate) {
                    any = true;
                    self.matched.push((name.clone(), candidate));
                    for setvar in &link.setvars {
                        self.setvar(setvar, top);
                    }
                }
            }
        }
        if !any {
            return false;
        }
        if let Some(next) = &link.chain
            && !self.rule(next, top)
        {
            return false;
        }
        for ctl in &link.ctls {
            self.ctl(ctl);
        }
        true
    }

    /// The values of a link's targets, after exclusions.
    fn values(&self, link: &Rule, top: &Rule) -> Vec<Value> {
        if link.targets.is_empty() {
            // SecAction: one empty value, so the operator (always true) runs once.
            return vec![(Vec::new(), Vec::new())];
        }
        let mut excluded: Vec<&Target> = link.targets.iter().filter(|t| t.negated).collect();
        for (which, target) in &self.removed_targets {
            let applies = match which {
                RuleRef::Ids(ranges) => in_ranges(ranges, top.id),
                RuleRef::Tag(tag) => tag_matches(top, tag),
            };
            if applies {
                excluded.push(target);
            }
        }
        let context = Context {
            request: &self.request,
            tx: &self.tx,
            matched: &self.matched,
            unique_id: &self.unique_id,
        };
        let mut out = Vec::new();
        for target in link.targets.iter().filter(|t| !t.negated) {
            let whole_removed = excluded.iter().any(|e| {
                e.variable == target.variable
                    && matches!(e.selector, variable::Selector::All)
                    && !target.count
            });
            if whole_removed {
                continue;
            }
            out.extend(variable::values(target, &excluded, &context));
        }
        out
    }

    /// Runs a link's operator on one value, keeping captures.
    fn operator(&mut self, link: &Rule, value: &[u8]) -> bool {
        let param = match link.operator.param() {
            Some(param) if param.contains("%{") => self.expand(param, link),
            Some(param) => param.to_owned(),
            None => String::new(),
        };
        let outcome = operator::evaluate(&link.operator, &param, value, link.capture);
        if link.capture && outcome.matched {
            for (group, text) in outcome.captures {
                self.tx_set(group.to_string().as_bytes(), text);
            }
        }
        outcome.matched != link.negated
    }

    fn ctl(&mut self, ctl: &Ctl) {
        match ctl {
            Ctl::EngineOff => self.engine_off = true,
            Ctl::BodyProcessor(processor) => self.processor = Some(*processor),
            Ctl::RemoveById(ranges) => self.removed_ids.extend(ranges.iter().copied()),
            Ctl::RemoveByTag(tag) => self.removed_tags.push(tag.clone()),
            Ctl::RemoveTargetById(ranges, target) => self
                .removed_targets
                .push((RuleRef::Ids(ranges.clone()), target.clone())),
            Ctl::RemoveTargetByTag(tag, target) => self
                .removed_targets
                .push((RuleRef::Tag(tag.clone()), target.clone())),
            Ctl::Ignored => {}
        }
    }

    fn tx_get(&self, key: &[u8]) -> Option<&[u8]> {
        self.tx
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    }

    fn tx_set(&mut self, key: &[u8], value: Vec<u8>) {
        let key = key.to_ascii_lowercase();
        match self.tx.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.tx.push((key, value)),
        }
    }

    /// `setvar:tx.name=value`, `=+n`, `=-n`, `!tx.name`; other collections are not kept.
    fn setvar(&mut self, spec: &str, rule: &Rule) {
        let (delete, spec) = match spec.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, spec),
        };
        let (name, value) = spec.split_once('=').unwrap_or((spec, ""));
        let Some(key) = name
            .split_once('.')
            .filter(|(collection, _)| collection.eq_ignore_ascii_case("tx"))
            .map(|(_, key)| self.expand(key, rule))
        else {
            return;
        };
        if delete {
            let key = key.to_ascii_lowercase();
            self.tx.retain(|(k, _)| *k != key.as_bytes());
            return;
        }
        let new = if let Some(number) = value.strip_prefix('+').or_else(|| value.strip_prefix('-'))
        {
            let sign = if value.starts_with('-') { -1 } else { 1 };
            let amount = stoi(&self.expand(number, rule));
            let old = self.tx_get(key.as_bytes()).map_or(0, stoi);
            (old + sign * amount).to_string().into_bytes()
        } else {
            self.expand(value, rule).into_bytes()
        };
        if std::env::var_os("NATIVE_DEBUG").is_some() {
            eprintln!("rule {} setvar {key} = {}", rule.id, String::from_utf8_lossy(&new));
        }
        self.tx_set(key.as_bytes(), new);
    }

    /// Expands `%{tx.name}`, `%{MATCHED_VAR}`, `%{request_headers.host}`, `%{rule.id}`...;
    /// unknown names expand to nothing.
    fn expand(&self, text: &str, rule: &Rule) -> String {
        if !text.contains("%{") {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &rest[start + 2..start + end];
            out.push_str(&String::from_utf8_lossy(&self.macro_value(name, rule)));
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn macro_value(&self, name: &str, rule: &Rule) -> Vec<u8> {
        let (collection, key) = match name.split_once('.') {
            Some((collection, key)) => (collection, Some(key)),
            None => (name, None),
        };
        match (collection.to_ascii_lowercase().as_str(), key) {
            ("tx", Some(key)) => self.tx_get(key.as_bytes()).unwrap_or_default().to_vec(),
            ("rule", Some(key)) => match key.to_ascii_lowercase().as_str() {
                "id" => rule.id.to_string().into_bytes(),
                "msg" => rule.msg.clone().into_bytes(),
                _ => Vec::new(),
            },
            (_, key) => {
                let Ok(variable) = Variable::named(collection) else {
                    return Vec::new();
                };
                let target = Target {
                    variable,
                    selector: match key {
                        Some(key) => variable::Selector::Key(key.as_bytes().to_vec()),
                        None => variable::Selector::All,
                    },
                    count: false,
                    negated: false,
                };
                let context = Context {
                    request: &self.request,
                    tx: &self.tx,
                    matched: &self.matched,
                    unique_id: &self.unique_id,
                };
                variable::values(&target, &[], &context)
                    .into_iter()
                    .next()
                    .map(|(_, v)| v)
                    .unwrap_or_default()
            }
        }
    }
}

/// C++'s `std::stoi` as `setvar` arithmetic uses it (0 for anything that is not a number).
fn stoi(text: impl AsRef<[u8]>) -> i64 {
    let text = String::from_utf8_lossy(text.as_ref());
    let text = text.trim_start();
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(text.len(), |(i, _)| i);
    text[..end].parse::<i32>().map(i64::from).unwrap_or(0)
}
