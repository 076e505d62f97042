//! Directives to a compiled rule set: each `SecRule`/`SecAction` with its targets, operator,
//! transformations and the actions that matter to which rules fire and what they score
//! (`chain`, `skipAfter`/`SecMarker`, `setvar`, `capture`, `multiMatch`, `ctl`, `log`/`nolog`);
//! and the operator exclusion directives (`SecRuleRemoveById`, `SecRuleRemoveByTag`,
//! `SecRuleUpdateTargetById`, `SecRuleUpdateTargetByTag`).
//!
//! Anything the evaluator does not implement is refused at load with its file, line and
//! reason, never ignored: a rule that silently never fires would make the record lie.

use std::path::{Path, PathBuf};

use super::NativeError;
use super::operator::Operator;
use super::parse::{self, Directive};
use super::request::BodyProcessor;
use super::transform::Transform;
use super::variable::Target;

/// One rule, or one link of a chain.
#[derive(Debug)]
pub struct Rule {
    /// Its `id` (0 for a chain's later links).
    pub id: u32,
    /// 1 (request headers) or 2 (request body); other phases are not evaluated.
    pub phase: u8,
    /// Its targets, exclusions (`negated`) included; empty for `SecAction`.
    pub targets: Vec<Target>,
    /// The operator (`Always` for `SecAction`).
    pub operator: Operator,
    /// `!@op`.
    pub negated: bool,
    /// The operator's parameter as written (macros unexpanded).
    pub param: String,
    /// Transformations, in order.
    pub transforms: Vec<Transform>,
    /// `multiMatch`: the operator runs after each transformation.
    pub multi_match: bool,
    /// The same number for every rule with the same transformations and `multiMatch`: the key
    /// of the per-request cache of transformed values.
    pub transform_key: usize,
    /// `capture`: `TX:0`-`TX:9` from the match.
    pub capture: bool,
    /// `log`/`nolog` when given.
    pub log: Option<bool>,
    /// `setvar` arguments, run for each matched value.
    pub setvars: Vec<String>,
    /// `ctl` actions, run when the whole chain matched.
    pub ctls: Vec<Ctl>,
    /// `skipAfter` marker.
    pub skip_after: Option<String>,
    /// `tag`s (for `SecRuleRemoveByTag` and `ctl:ruleRemove...ByTag`).
    pub tags: Vec<String>,
    /// `msg`.
    pub msg: String,
    /// The next link of a chain.
    pub chain: Option<Box<Rule>>,
}

/// A `ctl` action.
#[derive(Debug, Clone)]
pub enum Ctl {
    /// `ruleEngine=Off`: no more rules for this request.
    EngineOff,
    /// `requestBodyProcessor=...`.
    BodyProcessor(BodyProcessor),
    /// `ruleRemoveById=` ids and ranges.
    RemoveById(Vec<(u32, u32)>),
    /// `ruleRemoveByTag=`.
    RemoveByTag(String),
    /// `ruleRemoveTargetById=id;TARGET`.
    RemoveTargetById(Vec<(u32, u32)>, Target),
    /// `ruleRemoveTargetByTag=tag;TARGET`.
    RemoveTargetByTag(String, Target),
    /// Settings with no effect on which rules fire (`auditEngine`, `auditLogParts`,
    /// `forceRequestBodyVariable`: `REQUEST_BODY` is always set here, as in the library).
    Ignored,
}

/// An entry of a phase: a rule or a `SecMarker`.
#[derive(Debug)]
pub enum Entry {
    /// A rule (with its chain).
    Rule(Box<Rule>),
    /// A marker `skipAfter` jumps to.
    Marker(String),
}

/// The compiled rules of phases 1 and 2, in load order.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// Phase 1 then phase 2 entries.
    pub phases: [Vec<Entry>; 2],
    /// `SecRuleEngine Off`.
    pub engine_off: bool,
    /// `SecRequestBodyAccess` (on unless turned off).
    pub body_access: bool,
}

/// Where a directive comes from, for errors.
struct Source<'a> {
    file: &'a str,
    dir: &'a Path,
}

/// Settings the evaluator accepts and does not need.
const SETTINGS: &[&str] = &[
    "SecAuditEngine",
    "SecAuditLog",
    "SecAuditLogParts",
    "SecAuditLogType",
    "SecAuditLogRelevantStatus",
    "SecRequestBodyLimit",
    "SecRequestBodyNoFilesLimit",
    "SecRequestBodyInMemoryLimit",
    "SecRequestBodyLimitAction",
    "SecResponseBodyAccess",
    "SecResponseBodyMimeType",
    "SecResponseBodyLimit",
    "SecResponseBodyLimitAction",
    "SecPcreMatchLimit",
    "SecPcreMatchLimitRecursion",
    "SecComponentSignature",
    "SecCollectionTimeout",
    "SecTmpDir",
    "SecDataDir",
    "SecDebugLog",
    "SecDebugLogLevel",
    "SecArgumentSeparator",
    "SecCookieFormat",
    "SecUnicodeMapFile",
    "SecStatusEngine",
    "SecServerSignature",
];

impl RuleSet {
    /// Compiles configuration text (directives and absolute `Include`s); `origin` names it in
    /// errors.
    pub fn load(text: &str, origin: &str) -> Result<Self, NativeError> {
        let mut set = RuleSet {
            body_access: true,
            ..RuleSet::default()
        };
        let mut loader = Loader::default();
        loader.text(
            &mut set,
            text,
            &Source {
                file: origin,
                dir: Path::new("/"),
            },
        )?;
        loader.finish(&mut set);
        Ok(set)
    }
}

/// Load-time state: the open chain, default log flags, exclusions to apply at the end.
#[derive(Default)]
struct Loader {
    open_chain: Vec<Rule>,
    nolog_default: [bool; 2],
    removed: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_msgs: Vec<String>,
    target_updates: Vec<(TargetUpdate, Vec<Target>)>,
}

/// Which rules a `SecRuleUpdateTarget...` directive changes.
enum TargetUpdate {
    Ids(Vec<(u32, u32)>),
    Tag(String),
}

impl Loader {
    fn text(
        &mut self,
        set: &mut RuleSet,
        text: &str,
        source: &Source<'_>,
    ) -> Result<(), NativeError> {
        let at = |line: usize, reason: String| NativeError::At {
            file: source.file.to_owned(),
            line,
            reason,
        };
        let directives = parse::directives(text).map_err(|e| match e {
            NativeError::Syntax { line, reason } => at(line, reason),
            other => other,
        })?;
        for directive in directives {
            self.directive(set, &directive, source)
                .map_err(|reason| match reason {
                    Failure::Here(reason) => at(directive.line, reason),
                    Failure::Nested(error) => error,
                })?;
        }
        Ok(())
    }

    fn directive(
        &mut self,
        set: &mut RuleSet,
        d: &Directive,
        source: &Source<'_>,
    ) -> Result<(), Failure> {
        let arg = |i: usize| d.args.get(i).map(String::as_str).unwrap_or_default();
        match d.name.as_str() {
            "Include" => {
                let path = source.dir.join(arg(0));
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Failure::Here(format!("{}: {e}", path.display())))?;
                let file = path.display().to_string();
                let dir = path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("/"));
                self.text(
                    set,
                    &text,
                    &Source {
                        file: &file,
                        dir: &dir,
                    },
                )
                .map_err(Failure::Nested)?;
            }
            "SecRuleEngine" => set.engine_off = arg(0).eq_ignore_ascii_case("off"),
            "SecRequestBodyAccess" => set.body_access = arg(0).eq_ignore_ascii_case("on"),
            "SecDefaultAction" => {
                let actions = parse::actions(arg(0));
                let phase = phase_of(&actions).map_err(Failure::Here)?;
                if let Some(phase @ 1..=2) = phase {
                    self.nolog_default[usize::from(phase - 1)] =
                        actions.iter().any(|a| a.name == "nolog");
                }
            }
            "SecMarker" => {
                self.close_chain(set);
                for phase in &mut set.phases {
                    phase.push(Entry::Marker(arg(0).to_owned()));
                }
            }
            "SecRule" => {
                if d.args.len() < 2 {
                    return Err(Failure::Here(
                        "SecRule needs targets and an operator".into(),
                    ));
                }
                let rule = compile(arg(0), arg(1), arg(2), source.dir).map_err(Failure::Here)?;
                self.add(set, rule, arg(2));
            }
            "SecAction" => {
                let rule = compile("", "@unconditionalMatch", arg(0), source.dir)
                    .map_err(Failure::Here)?;
                self.add(set, rule, arg(0));
            }
            "SecRuleRemoveById" => {
                if d.args.is_empty() {
                    return Err(Failure::Here("SecRuleRemoveById needs rule ids".into()));
                }
                for part in &d.args {
                    self.removed.extend(id_ranges(part).map_err(Failure::Here)?);
                }
            }
            "SecRuleRemoveByTag" | "SecRuleRemoveByMsg" if d.args.len() != 1 => {
                return Err(Failure::Here(format!("{} needs one argument", d.name)));
            }
            "SecRuleRemoveByTag" => self.removed_tags.push(arg(0).to_owned()),
            "SecRuleRemoveByMsg" => self.removed_msgs.push(arg(0).to_owned()),
            "SecRuleUpdateTargetById" | "SecRuleUpdateTargetByTag" if d.args.len() != 2 => {
                return Err(Failure::Here(format!(
                    "{} needs a rule and targets",
                    d.name
                )));
            }
            "SecRuleUpdateTargetById" | "SecRuleUpdateTargetByTag" => {
                let targets = arg(1)
                    .split('|')
                    .map(Target::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Failure::Here)?;
                let which = if d.name == "SecRuleUpdateTargetById" {
                    TargetUpdate::Ids(id_ranges(arg(0)).map_err(Failure::Here)?)
                } else {
                    TargetUpdate::Tag(arg(0).to_owned())
                };
                self.target_updates.push((which, targets));
            }
            name if SETTINGS.contains(&name) => {}
            other => {
                return Err(Failure::Here(format!(
                    "the directive {other} is not supported by the native evaluator"
                )));
            }
        }
        Ok(())
    }

    /// Adds a compiled rule: the next link of an open chain, or a rule of its phase.
    fn add(&mut self, set: &mut RuleSet, mut rule: Rule, actions: &str) {
        let chained = parse::actions(actions).iter().any(|a| a.name == "chain");
        if let Some(parent) = self.open_chain.first() {
            rule.phase = parent.phase;
        } else if rule.log.is_none() && (1..=2).contains(&rule.phase) {
            rule.log = Some(!self.nolog_default[usize::from(rule.phase - 1)]);
        }
        self.open_chain.push(rule);
        if !chained {
            self.close_chain(set);
        }
    }

    /// Folds the open chain's links into their first rule and files it under its phase.
    fn close_chain(&mut self, set: &mut RuleSet) {
        let mut links = std::mem::take(&mut self.open_chain);
        let Some(mut child) = links.pop() else { return };
        while let Some(mut parent) = links.pop() {
            parent.chain = Some(Box::new(child));
            child = parent;
        }
        if let 1..=2 = child.phase {
            set.phases[usize::from(child.phase - 1)].push(Entry::Rule(Box::new(child)));
        }
    }

    /// Applies the exclusion directives to every rule, and numbers the transformation lists.
    fn finish(&mut self, set: &mut RuleSet) {
        self.close_chain(set);
        let mut lists: Vec<(Vec<Transform>, bool)> = Vec::new();
        for entry in set.phases.iter_mut().flatten() {
            let Entry::Rule(rule) = entry else { continue };
            let mut link: Option<&mut Rule> = Some(rule);
            while let Some(rule) = link {
                let list = (rule.transforms.clone(), rule.multi_match);
                rule.transform_key = match lists.iter().position(|l| *l == list) {
                    Some(at) => at,
                    None => {
                        lists.push(list);
                        lists.len() - 1
                    }
                };
                link = rule.chain.as_deref_mut();
            }
        }
        for phase in &mut set.phases {
            phase.retain(|entry| match entry {
                Entry::Rule(rule) => {
                    !(in_ranges(&self.removed, rule.id)
                        || self.removed_tags.iter().any(|t| tag_matches(rule, t))
                        || self
                            .removed_msgs
                            .iter()
                            .any(|m| rule.msg.contains(m.as_str())))
                }
                Entry::Marker(_) => true,
            });
            for entry in phase.iter_mut() {
                let Entry::Rule(rule) = entry else { continue };
                for (which, targets) in &self.target_updates {
                    let applies = match which {
                        TargetUpdate::Ids(ranges) => in_ranges(ranges, rule.id),
                        TargetUpdate::Tag(tag) => tag_matches(rule, tag),
                    };
                    if applies {
                        rule.targets.extend(targets.iter().cloned());
                    }
                }
            }
        }
    }
}

/// Why a directive failed: here (its line), or in an included file (already placed).
enum Failure {
    Here(String),
    Nested(NativeError),
}

/// Whether a rule carries a tag matching `pattern` (the library compares tags by regex).
pub fn tag_matches(rule: &Rule, pattern: &str) -> bool {
    let regex = super::operator::regex(pattern, false).ok();
    rule.tags.iter().any(|tag| match &regex {
        Some(regex) => regex.is_match(tag.as_bytes()).unwrap_or(false),
        None => tag == pattern,
    })
}

/// Whether `id` is in one of the ranges.
pub fn in_ranges(ranges: &[(u32, u32)], id: u32) -> bool {
    id != 0 && ranges.iter().any(|&(low, high)| (low..=high).contains(&id))
}

/// `942100`, `942100-942199`, or several of them separated by commas or spaces.
fn id_ranges(text: &str) -> Result<Vec<(u32, u32)>, String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let number = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("`{part}` is not a rule id or id range"))
            };
            match part.split_once('-') {
                Some((low, high)) => Ok((number(low)?, number(high)?)),
                None => number(part).map(|id| (id, id)),
            }
        })
        .collect()
}

/// The phase an action list names (`phase:2`, `phase:request`).
fn phase_of(actions: &[parse::Action]) -> Result<Option<u8>, String> {
    let Some(action) = actions.iter().find(|a| a.name == "phase") else {
        return Ok(None);
    };
    Ok(Some(match action.value.to_ascii_lowercase().as_str() {
        "1" | "request_headers" => 1,
        "2" | "request" | "request_body" => 2,
        "3" | "response_headers" => 3,
        "4" | "response" | "response_body" => 4,
        "5" | "logging" => 5,
        other => return Err(format!("phase:{other} is not a phase")),
    }))
}

/// Compiles one rule from its three arguments.
fn compile(targets: &str, operator: &str, actions: &str, dir: &Path) -> Result<Rule, String> {
    let targets = if targets.is_empty() {
        Vec::new()
    } else {
        targets
            .split('|')
            .map(Target::parse)
            .collect::<Result<Vec<_>, _>>()?
    };
    let (negated, operator) = match operator.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, operator),
    };
    let (name, param) = match operator.strip_prefix('@') {
        Some(rest) => rest.split_once(' ').unwrap_or((rest, "")),
        None => ("rx", operator),
    };
    let actions = parse::actions(actions);
    let mut rule = Rule {
        id: 0,
        phase: phase_of(&actions)?.unwrap_or(2),
        targets,
        operator: Operator::compile(name, param, dir)?,
        negated,
        param: param.to_owned(),
        transforms: Vec::new(),
        multi_match: false,
        transform_key: 0,
        capture: false,
        log: None,
        setvars: Vec::new(),
        ctls: Vec::new(),
        skip_after: None,
        tags: Vec::new(),
        msg: String::new(),
        chain: None,
    };
    for action in actions {
        let value = action.value;
        match action.name.as_str() {
            "id" => {
                rule.id = value
                    .parse()
                    .map_err(|_| format!("id:{value} is not a rule id"))?;
            }
            "t" if value.eq_ignore_ascii_case("none") => rule.transforms.clear(),
            "t" => rule.transforms.push(Transform::named(&value)?),
            "multimatch" => rule.multi_match = true,
            "capture" => rule.capture = true,
            "log" => rule.log = Some(true),
            "nolog" => rule.log = Some(false),
            "setvar" => rule.setvars.push(value),
            "ctl" => rule.ctls.push(ctl(&value)?),
            "skipafter" => rule.skip_after = Some(value),
            "tag" => rule.tags.push(value),
            "msg" => rule.msg = value,
            "skip" => return Err("the action skip is not supported (skipAfter is)".into()),
            "exec"
            | "prepend"
            | "append"
            | "xmlns"
            | "sanitisearg"
            | "sanitisematched"
            | "sanitiserequestheader"
            | "initcol"
            | "setsid"
            | "setuid"
            | "setenv"
            | "expirevar"
            | "deprecatevar"
            | "phase"
            | "chain"
            | "pass"
            | "block"
            | "deny"
            | "drop"
            | "allow"
            | "redirect"
            | "proxy"
            | "status"
            | "severity"
            | "ver"
            | "rev"
            | "accuracy"
            | "maturity"
            | "logdata"
            | "auditlog"
            | "noauditlog" => {}
            other => return Err(format!("the action {other} is not supported")),
        }
    }
    Ok(rule)
}

/// Parses a `ctl:` value.
fn ctl(value: &str) -> Result<Ctl, String> {
    let (name, setting) = value.split_once('=').unwrap_or((value, ""));
    let target_of = |spec: &str| -> Result<(String, Target), String> {
        let (which, target) = spec
            .split_once(';')
            .ok_or_else(|| format!("ctl:{value} needs `rule;TARGET`"))?;
        Ok((which.to_owned(), Target::parse(target)?))
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "ruleengine" if setting.eq_ignore_ascii_case("off") => Ctl::EngineOff,
        "ruleengine" => Ctl::Ignored,
        "requestbodyprocessor" => Ctl::BodyProcessor(
            BodyProcessor::named(setting)
                .ok_or_else(|| format!("ctl:{value}: not a body processor"))?,
        ),
        "ruleremovebyid" => Ctl::RemoveById(id_ranges(setting)?),
        "ruleremovebytag" => Ctl::RemoveByTag(setting.to_owned()),
        "ruleremovetargetbyid" => {
            let (ids, target) = target_of(setting)?;
            Ctl::RemoveTargetById(id_ranges(&ids)?, target)
        }
        "ruleremovetargetbytag" => {
            let (tag, target) = target_of(setting)?;
            Ctl::RemoveTargetByTag(tag, target)
        }
        "auditengine"
        | "auditlogparts"
        | "forcerequestbodyvariable"
        | "requestbodyaccess"
        | "debugloglevel" => Ctl::Ignored,
        other => return Err(format!("ctl:{other} is not supported")),
    })
}
