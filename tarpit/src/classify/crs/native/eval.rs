//! One request through the rule set: phase 1, the body parsed as phase 1 chose, phase 2; the
//! rules in load order with `skipAfter` jumps, chains, `setvar` for each matched value, `capture`,
//! and the `ctl`s that exclude rules or targets for this request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use super::operator;
use super::request::{BodyProcessor, Collection, Request};
use super::rules::{Ctl, Entry, Rule, RuleSet, in_ranges, tag_matches};
use super::variable::{self, Item, State, Target, Value, Variable};

/// What evaluating one request gives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Ids of the rules that fired with `log` in effect, in firing order, without repeats.
    pub fired: Vec<u32>,
    /// `TX:anomaly_score` at the end (0 when unset).
    pub anomaly_score: u32,
}

/// The state of one request's evaluation (the request itself is passed beside it: it is read
/// by every rule and changed only between the phases).
struct Transaction<'r> {
    rules: &'r RuleSet,
    /// `TX`, lower-case keys.
    tx: Collection,
    /// `MATCHED_VARS` of the rule being evaluated.
    matched: Vec<Value>,
    unique_id: Vec<u8>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    /// `ctl:ruleRemoveTarget...`: (ids or tag, target).
    removed_targets: Vec<(RuleRef, Target)>,
    processor: Option<BodyProcessor>,
    engine_off: bool,
    fired: Vec<u32>,
    /// Values after each transformation list (indexed by the rules' `transform_key`): most
    /// rules of a family transform the same arguments the same way. Lives for one request, so
    /// a client cannot grow it past its own request's size.
    transformed: Vec<TransformCache>,
}

/// Values already transformed by one transformation list: value → what the operator sees.
type TransformCache = HashMap<Vec<u8>, Rc<[Vec<u8>]>>;

/// Which rules a target removal is for.
enum RuleRef {
    Ids(Vec<(u32, u32)>),
    Tag(String),
}

/// The values an operator looks at for one target value.
enum Candidates<'a> {
    /// No transformation: the value itself.
    Itself(Cow<'a, [u8]>),
    /// Transformed (from the per-request cache).
    Transformed(Rc<[Vec<u8>]>),
}

impl Candidates<'_> {
    fn list(&self) -> Vec<&[u8]> {
        match self {
            Self::Itself(value) => vec![value.as_ref()],
            Self::Transformed(values) => values.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// Evaluates `request` (its variables built) against `rules`.
pub fn evaluate(rules: &RuleSet, mut request: Request, unique_id: u64) -> Outcome {
    let mut t = Transaction {
        rules,
        tx: Collection::new(),
        matched: Vec::new(),
        unique_id: unique_id.to_string().into_bytes(),
        removed_ids: Vec::new(),
        removed_tags: Vec::new(),
        removed_targets: Vec::new(),
        processor: None,
        engine_off: rules.engine_off,
        fired: Vec::new(),
        transformed: Vec::new(),
    };
    t.phase(0, &request);
    let processor = t.processor.unwrap_or_else(|| request.default_processor());
    if rules.body_access {
        request.process_body(processor);
    } else {
        request.body.clear();
    }
    t.phase(1, &request);
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
    fn phase(&mut self, index: usize, request: &Request) {
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
            if self.rule(rule, rule, request) {
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
    fn rule(&mut self, link: &Rule, top: &Rule, request: &Request) -> bool {
        let items = self.values(link, top, request);
        let mut any = false;
        for item in items {
            let candidates = self.transform(link, item.value.clone());
            for candidate in candidates.list() {
                if self.operator(link, candidate, request) {
                    any = true;
                    self.matched.push((item.name(), candidate.to_vec()));
                    for setvar in &link.setvars {
                        self.setvar(setvar, top, request);
                    }
                }
            }
        }
        if !any {
            return false;
        }
        if let Some(next) = &link.chain
            && !self.rule(next, top, request)
        {
            return false;
        }
        for ctl in &link.ctls {
            self.ctl(ctl);
        }
        true
    }

    /// The values the operator looks at: the value after the link's transformations, and with
    /// `multiMatch` the value before and after each transformation that changed it.
    fn transform<'v>(&mut self, link: &Rule, value: Cow<'v, [u8]>) -> Candidates<'v> {
        if link.transforms.is_empty() {
            return Candidates::Itself(value);
        }
        if self.transformed.len() <= link.transform_key {
            self.transformed
                .resize_with(link.transform_key + 1, HashMap::new);
        }
        if let Some(done) = self.transformed[link.transform_key].get(value.as_ref()) {
            return Candidates::Transformed(Rc::clone(done));
        }
        let mut candidates: Vec<Vec<u8>> = Vec::new();
        let mut current = value.to_vec();
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
        let candidates: Rc<[Vec<u8>]> = candidates.into();
        self.transformed[link.transform_key].insert(value.into_owned(), Rc::clone(&candidates));
        Candidates::Transformed(candidates)
    }

    /// The values of a link's targets, after exclusions.
    fn values<'r>(&self, link: &Rule, top: &Rule, request: &'r Request) -> Vec<Item<'r>> {
        if link.targets.is_empty() {
            // SecAction: one empty value, so the operator (always true) runs once.
            return vec![Item {
                variable: Variable::Empty,
                key: Cow::Borrowed(b""),
                keyed: false,
                value: Cow::Borrowed(b""),
            }];
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
        let state = self.state();
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
            out.extend(variable::values(target, &excluded, request, &state));
        }
        out
    }

    fn state(&self) -> State<'_> {
        State {
            tx: &self.tx,
            matched: &self.matched,
            unique_id: &self.unique_id,
        }
    }

    /// Runs a link's operator on one value, keeping captures.
    fn operator(&mut self, link: &Rule, value: &[u8], request: &Request) -> bool {
        let param = match link.operator.param() {
            Some(param) if param.contains("%{") => self.expand_in(param, link, request),
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
    fn setvar(&mut self, spec: &str, rule: &Rule, request: &Request) {
        let (delete, spec) = match spec.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, spec),
        };
        let (name, value) = spec.split_once('=').unwrap_or((spec, ""));
        let Some(key) = name
            .split_once('.')
            .filter(|(collection, _)| collection.eq_ignore_ascii_case("tx"))
            .map(|(_, key)| self.expand_in(key, rule, request))
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
            let amount = stoi(self.expand_in(number, rule, request));
            let old = self.tx_get(key.as_bytes()).map_or(0, stoi);
            (old + sign * amount).to_string().into_bytes()
        } else {
            self.expand_in(value, rule, request).into_bytes()
        };
        tracing::trace!(rule = rule.id, key, value = %String::from_utf8_lossy(&new), "setvar");
        self.tx_set(key.as_bytes(), new);
    }

    /// Expands `%{tx.name}`, `%{MATCHED_VAR}`, `%{request_headers.host}`, `%{rule.id}`...;
    /// unknown names expand to nothing.
    fn expand_in(&self, text: &str, rule: &Rule, request: &Request) -> String {
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
            out.push_str(&String::from_utf8_lossy(
                &self.macro_value(name, rule, request),
            ));
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn macro_value(&self, name: &str, rule: &Rule, request: &Request) -> Vec<u8> {
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
                let (Ok(variable), request) = (Variable::named(collection), request) else {
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
                variable::values(&target, &[], request, &self.state())
                    .into_iter()
                    .next()
                    .map(|item| item.value.into_owned())
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

#[cfg(test)]
mod tests {
    use super::super::super::modsec::EngineRequest;
    use super::*;

    /// Fires `rules` (configuration text) on a GET of `target` with `headers`.
    fn fire(rules: &str, target: &str, headers: &[(&str, &str)]) -> Outcome {
        let set = RuleSet::load(rules, "test").unwrap();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let request = EngineRequest {
            client: ("203.0.113.7", 1),
            method: "GET",
            uri: target,
            version: "1.1",
            headers: &headers,
            body: b"",
        };
        evaluate(&set, Request::of(&request), 1)
    }

    #[test]
    fn chains_fire_only_whole_and_skip_after_jumps_to_its_marker() {
        let rules = r#"
SecDefaultAction "phase:2,log,pass"
SecRule ARGS "@rx a" "id:1,chain"
    SecRule REQUEST_METHOD "@streq POST" "t:none"
SecRule ARGS "@rx a" "id:2,chain"
    SecRule MATCHED_VARS_NAMES "@rx ^ARGS:q$" "t:none"
SecRule &ARGS "@eq 1" "id:3,nolog,skipAfter:END"
SecRule ARGS "@rx a" "id:4"
SecMarker END
SecRule ARGS:Q "@rx a" "id:5"
SecRule ARGS|!ARGS:q "@rx a" "id:6"
SecRule ARGS "!@rx z" "id:7,nolog"
"#;
        assert_eq!(fire(rules, "/?q=a", &[]).fired, [2, 5]);
    }

    #[test]
    fn setvar_counts_macros_expand_and_captures_land_in_tx() {
        let rules = r#"
SecAction "id:1,phase:1,nolog,setvar:tx.points=5"
SecRule REQUEST_HEADERS:User-Agent "@rx ^(\w+)/(\d)" "id:2,phase:1,capture,nolog,setvar:'tx.tool=%{tx.1}'"
SecRule ARGS "@rx x" "id:3,phase:2,nolog,setvar:'tx.anomaly_score=+%{tx.points}'"
SecRule TX:TOOL "@streq sqlmap" "id:4,phase:2,log"
SecRule TX:anomaly_score "@eq 10" "id:5,phase:2,log,setvar:!tx.tool"
SecRule &TX:tool "@eq 0" "id:6,phase:2,log"
"#;
        let outcome = fire(rules, "/?a=x&b=x", &[("User-Agent", "sqlmap/1.7")]);
        assert_eq!(outcome.fired, [4, 5, 6]);
        assert_eq!(outcome.anomaly_score, 10);
    }

    #[test]
    fn ctl_removes_rules_and_targets_for_this_request_only() {
        let rules = r#"
SecDefaultAction "phase:1,log,pass"
SecRule REQUEST_URI "@beginsWith /admin" "id:1,phase:1,nolog,ctl:ruleRemoveById=10,ctl:ruleRemoveTargetById=11;ARGS:safe,ctl:ruleRemoveByTag=noisy"
SecRule ARGS "@rx evil" "id:10,phase:2,log"
SecRule ARGS "@rx evil" "id:11,phase:2,log"
SecRule ARGS "@rx evil" "id:12,phase:2,log,tag:'noisy'"
SecRule REQUEST_URI "@beginsWith /off" "id:2,phase:1,nolog,ctl:ruleEngine=Off"
SecRule ARGS "@rx evil" "id:13,phase:2,log"
"#;
        assert_eq!(fire(rules, "/admin?safe=evil", &[]).fired, [13]);
        assert_eq!(fire(rules, "/admin?other=evil", &[]).fired, [11, 13]);
        assert_eq!(fire(rules, "/?safe=evil", &[]).fired, [10, 11, 12, 13]);
        assert_eq!(fire(rules, "/off?x=evil", &[]).fired, Vec::<u32>::new());
    }

    #[test]
    fn multi_match_looks_after_each_changing_transformation() {
        let rules = r#"
SecRule ARGS "@rx ^%41$" "id:1,phase:2,log,t:none,t:urlDecodeUni"
SecRule ARGS "@rx ^%41$" "id:2,phase:2,log,t:none,t:urlDecodeUni,multiMatch"
SecRule ARGS "@rx A" "id:3,phase:2,log,t:none,t:lowercase,t:urlDecodeUni,multiMatch,setvar:tx.anomaly_score=+1"
"#;
        // The argument arrives as `%41` (its own `%` encoded as %25).
        let outcome = fire(rules, "/?q=%2541", &[]);
        assert_eq!(outcome.fired, [2, 3]);
        // Matched once, after urlDecodeUni; lowercase changed nothing it could match.
        assert_eq!(outcome.anomaly_score, 1);
    }

    #[test]
    fn what_is_not_implemented_is_refused_with_its_line() {
        for (text, says) in [
            ("SecRule ARGS \"@nosuch x\" \"id:1\"", "@nosuch"),
            ("SecRule NOSUCH \"@rx x\" \"id:1\"", "NOSUCH"),
            ("SecRule ARGS \"@rx x\" \"id:1,t:nosuch\"", "t:nosuch"),
            ("SecRule ARGS \"@rx x\" \"id:1,skip:2\"", "skip"),
            ("SecRule XML:/a/b \"@rx x\" \"id:1\"", "XML:/a/b"),
            ("SecRule ARGS \"@rx (\" \"id:1\"", "does not compile"),
            ("SecWebAppId x", "SecWebAppId"),
        ] {
            let error = RuleSet::load(&format!("\n{text}\n"), "f.conf").unwrap_err();
            let message = error.to_string();
            assert!(message.contains("f.conf, line 2"), "{message}");
            assert!(message.contains(says), "{message}");
        }
    }
}
