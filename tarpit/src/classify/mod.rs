//! Classification: which tags (`attack:`, `cve:`, `target:`, `tool:`, `crawler:`) each request
//! earns, from a rule file ([`rules`]) compiled into one `RegexSet` per field.
//!
//! A request is decoded once ([`normalize::Fields`]), each field's set is run once (all of that
//! field's patterns in one automaton, not rule by rule), and a rule matches when every one of
//! its conditions did. SQL injection (and XSS, besides its patterns) is judged by libinjection,
//! the detector the field measures against ([`detect`]). Runs on the pipeline, never on a
//! worker, and again offline (`tarpit classify`) on stored rows, with the same input.

pub mod crs;
pub mod detect;
pub mod normalize;
pub mod rules;
pub mod stored;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use regex::RegexSet;

pub use normalize::RequestView;
pub use rules::{RuleError, RuleSpec};

/// The parts of a request a pattern can look at (see [`normalize::Fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The method.
    Method,
    /// The decoded path.
    Path,
    /// The decoded query.
    Query,
    /// Path and query.
    Uri,
    /// Header lines.
    Headers,
    /// The User-Agent.
    UserAgent,
    /// The body preview.
    Body,
    /// Uri, headers and body.
    Anywhere,
    /// The escaped preview of non-HTTP input.
    Raw,
}

impl Field {
    const ALL: [Field; 9] = [
        Field::Method,
        Field::Path,
        Field::Query,
        Field::Uri,
        Field::Headers,
        Field::UserAgent,
        Field::Body,
        Field::Anywhere,
        Field::Raw,
    ];

    /// The key that names the field in a rule.
    pub fn name(self) -> &'static str {
        match self {
            Field::Method => "method",
            Field::Path => "path",
            Field::Query => "query",
            Field::Uri => "uri",
            Field::Headers => "headers",
            Field::UserAgent => "user_agent",
            Field::Body => "body",
            Field::Anywhere => "anywhere",
            Field::Raw => "raw",
        }
    }

    /// The field's text in a decoded request.
    pub fn text(self, fields: &normalize::Fields) -> &str {
        match self {
            Field::Method => &fields.method,
            Field::Path => &fields.path,
            Field::Query => &fields.query,
            Field::Uri => &fields.uri,
            Field::Headers => &fields.headers,
            Field::UserAgent => &fields.user_agent,
            Field::Body => &fields.body,
            Field::Anywhere => &fields.anywhere,
            Field::Raw => &fields.raw,
        }
    }
}

/// The lazy DFA cache of each field's set (the regex crate's default is 2 MiB). With 325 rules
/// the default cache filled and was rebuilt or given up for the PikeVM on ordinary traffic
/// (throughput fell from 134,000 to 80,000-100,000 requests/s); at 8 MiB it holds (about
/// 120,000/s, `cargo xtask bench classify`). The cache grows only as states are built, so the
/// most a crafted request can make it cost is this per field set: 72 MiB per classifying thread.
const DFA_CACHE_BYTES: usize = 8 << 20;

/// One field's patterns as a single set, and the rule each pattern belongs to.
#[derive(Debug)]
struct FieldSet {
    field: Field,
    set: RegexSet,
    rule_of_pattern: Vec<usize>,
}

/// A compiled rule: its tags (shared, so a tag costs a request one reference count) and how
/// many conditions must hold.
#[derive(Debug)]
struct CompiledRule {
    tags: Vec<Arc<str>>,
    conditions: u8,
    detector: Option<detect::Detector>,
}

/// The rule set, compiled: cheap to share between threads and to swap when the file changes.
#[derive(Debug)]
pub struct Classifier {
    rules: Vec<CompiledRule>,
    sets: Vec<FieldSet>,
    /// Every tag a rule can give, sorted (the metric's label values).
    all_tags: Vec<Arc<str>>,
}

impl Classifier {
    /// Compiles checked rules (from [`rules::load`]).
    pub fn new(specs: &[RuleSpec]) -> Result<Self, RuleError> {
        let mut interned: std::collections::BTreeMap<String, Arc<str>> = Default::default();
        let mut rules = Vec::with_capacity(specs.len());
        let mut patterns: Vec<(Field, Vec<&str>, Vec<usize>)> = Field::ALL
            .iter()
            .map(|&f| (f, Vec::new(), Vec::new()))
            .collect();
        for (index, spec) in specs.iter().enumerate() {
            let mut conditions = 0u8;
            for (field, pattern) in spec.patterns() {
                let slot = patterns
                    .iter_mut()
                    .find(|(f, ..)| *f == field)
                    .expect("every field");
                slot.1.push(pattern);
                slot.2.push(index);
                conditions += 1;
            }
            let tags = spec
                .tags
                .iter()
                .map(|t| {
                    interned
                        .entry(t.clone())
                        .or_insert_with(|| t.as_str().into())
                        .clone()
                })
                .collect();
            rules.push(CompiledRule {
                tags,
                conditions,
                detector: spec.detector.as_deref().and_then(detect::Detector::named),
            });
        }
        let mut sets = Vec::new();
        for (field, field_patterns, rule_of_pattern) in patterns {
            if field_patterns.is_empty() {
                continue;
            }
            // The regex crate's default limits: a rule set that needs more is too big to match
            // at the rate the pipeline must keep.
            let field_patterns: Vec<std::borrow::Cow<'_, str>> = field_patterns
                .iter()
                .map(|p| ascii_word_boundaries(p))
                .collect();
            let set = regex::RegexSetBuilder::new(&field_patterns)
                .dfa_size_limit(DFA_CACHE_BYTES)
                .build()
                .map_err(|e| RuleError {
                    file: "(rule set)".into(),
                    rule: field.name().into(),
                    reason: format!("the {} patterns do not compile together: {e}", field.name()),
                })?;
            sets.push(FieldSet {
                field,
                set,
                rule_of_pattern,
            });
        }
        Ok(Self {
            rules,
            sets,
            all_tags: interned.into_values().collect(),
        })
    }

    /// Loads the default rules and `operator_file`, and compiles them.
    pub fn load(operator_file: Option<&Path>) -> Result<Self, RuleError> {
        Self::new(&rules::load(operator_file)?)
    }

    /// The tags `request` earns, sorted and without repeats.
    pub fn classify(&self, request: &RequestView<'_>) -> Vec<Arc<str>> {
        self.classify_fields(request, &normalize::Fields::of(request))
    }

    /// [`Classifier::classify`] of a request already decoded (`fields` of `request`), so the
    /// pipeline decodes each request once for the rules and the canary token search.
    pub fn classify_fields(
        &self,
        request: &RequestView<'_>,
        fields: &normalize::Fields,
    ) -> Vec<Arc<str>> {
        let mut hits = vec![0u8; self.rules.len()];
        for field_set in &self.sets {
            let text = field_set.field.text(fields);
            // Most fields of most requests match nothing: one search that stops at the first
            // match, without the set of every pattern's result that `matches` allocates and
            // then walks (a fifth of the classifier's time under churn).
            if !field_set.set.is_match(text) {
                continue;
            }
            for pattern in field_set.set.matches(text).iter() {
                hits[field_set.rule_of_pattern[pattern]] += 1;
            }
        }
        let mut values: Option<Vec<std::borrow::Cow<'_, str>>> = None;
        let mut tags: Vec<Arc<str>> = Vec::new();
        for (rule, hit) in self.rules.iter().zip(&hits) {
            if *hit != rule.conditions {
                continue;
            }
            if let Some(detector) = rule.detector {
                let values =
                    values.get_or_insert_with(|| normalize::parameter_values(fields, request));
                if !values.iter().any(|v| detector.detects(v)) {
                    continue;
                }
            }
            tags.extend(rule.tags.iter().cloned());
        }
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    /// Every tag the rules can give (bounds the metric's label set).
    pub fn all_tags(&self) -> &[Arc<str>] {
        &self.all_tags
    }

    /// How many rules are in force.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

/// The rules in force on the pipeline, re-read when the operator file changes (its
/// modification time, checked at most every few seconds). A file that no longer loads keeps
/// the rules in force and logs the error (file, rule, reason).
#[derive(Debug)]
pub struct LiveRules {
    path: Option<PathBuf>,
    modified: Option<SystemTime>,
    classifier: Arc<Classifier>,
}

impl LiveRules {
    /// Loads the rules; an error here stops the start-up (a bad file is a configuration error).
    pub fn load(path: Option<PathBuf>) -> Result<Self, RuleError> {
        let modified = path.as_deref().and_then(modified);
        let classifier = Arc::new(Classifier::load(path.as_deref())?);
        Ok(Self {
            path,
            modified,
            classifier,
        })
    }

    /// The rules in force.
    pub fn classifier(&self) -> &Arc<Classifier> {
        &self.classifier
    }

    /// Re-reads the operator file if it changed; returns whether new rules are in force.
    pub fn reload_if_changed(&mut self) -> bool {
        let Some(path) = self.path.clone() else {
            return false;
        };
        let now = modified(&path);
        if now == self.modified {
            return false;
        }
        self.modified = now;
        match Classifier::load(Some(&path)) {
            Ok(classifier) => {
                tracing::info!(
                    file = %path.display(),
                    rules = classifier.rule_count(),
                    "classification rules reloaded"
                );
                self.classifier = Arc::new(classifier);
                true
            }
            Err(error) => {
                tracing::error!("{error}; the rules in force stay");
                false
            }
        }
    }
}

/// A pattern with every `\b` and `\B` made an ASCII word boundary (`(?-u:\b)`).
///
/// A Unicode word boundary cannot be decided by the regex crate's DFAs once the text holds a
/// non-ASCII byte: the whole set then falls back to its slowest engine, and a 16 KiB request of
/// non-ASCII letters cost 15-45 ms to classify (a burst of them stalled the pipeline and lost
/// events). Attack payloads are ASCII, so an ASCII boundary loses nothing, and the cost per
/// request stays linear in its bytes whatever they are (`cargo xtask bench classify` measures
/// both).
pub fn ascii_word_boundaries(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains("\\b") && !pattern.contains("\\B") {
        return pattern.into();
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(b @ ('b' | 'B')) if !in_class => {
                    out.push_str("(?-u:\\");
                    out.push(b);
                    out.push(')');
                }
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            '[' => {
                in_class = true;
                out.push(c);
            }
            ']' => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.into()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags_of(classifier: &Classifier, view: RequestView<'_>) -> Vec<String> {
        classifier
            .classify(&view)
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn word_boundaries_become_ascii_and_escapes_stay() {
        assert_eq!(ascii_word_boundaries(r"\bid\b"), r"(?-u:\b)id(?-u:\b)");
        assert_eq!(ascii_word_boundaries(r"a\Bb"), r"a(?-u:\B)b");
        // An escaped backslash followed by `b` is a backslash and a letter, not a boundary.
        assert_eq!(ascii_word_boundaries(r"c:\\boot"), r"c:\\boot");
        assert_eq!(ascii_word_boundaries(r"[\\b]x"), r"[\\b]x");
        assert_eq!(ascii_word_boundaries("plain"), "plain");
        // Non-ASCII letters are not word characters for an ASCII boundary: `é` before `id`
        // leaves a boundary, as it does for the ASCII-only payloads the rules are written for.
        let specs = rules::parse(
            "[[rule]]\nid = \"w\"\ntags = [\"tool:w\"]\nanywhere = '\\bwget\\b'\n",
            "test",
        )
        .unwrap();
        let c = Classifier::new(&specs).unwrap();
        let view = |path| RequestView {
            path: Some(path),
            ..Default::default()
        };
        assert_eq!(tags_of(&c, view("/éwget")), ["tool:w"]);
        assert!(tags_of(&c, view("/xwget")).is_empty());
    }

    #[test]
    fn all_conditions_of_a_rule_must_hold_and_tags_are_sorted_unique() {
        let specs = rules::parse(
            r#"
            [[rule]]
            id = "both"
            tags = ["target:x", "attack:y"]
            method = "^POST$"
            path = "^/a"
            [[rule]]
            id = "again"
            tags = ["attack:y"]
            path = "^/a"
            [[rule]]
            id = "sqli"
            tags = ["attack:sqli"]
            detector = "libinjection-sqli"
            "#,
            "test",
        )
        .unwrap();
        let c = Classifier::new(&specs).unwrap();
        let get = RequestView {
            method: Some("GET"),
            path: Some("/a"),
            ..Default::default()
        };
        assert_eq!(tags_of(&c, get), ["attack:y"]);
        let post = RequestView {
            method: Some("POST"),
            ..get
        };
        assert_eq!(tags_of(&c, post), ["attack:y", "target:x"]);
        let sqli = RequestView {
            query: Some("id=1%27%20OR%20%271%27%3D%271"),
            ..get
        };
        assert_eq!(tags_of(&c, sqli), ["attack:sqli", "attack:y"]);
        assert_eq!(c.all_tags().len(), 3);
    }

    #[test]
    fn a_changed_operator_file_is_reloaded_and_a_broken_one_keeps_the_old_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        let rule = |ua: &str| {
            format!("[[rule]]\nid = \"ours\"\ntags = [\"tool:ours\"]\nuser_agent = \"{ua}\"\n")
        };
        std::fs::write(&path, rule("^ours-1")).unwrap();
        let mut live = LiveRules::load(Some(path.clone())).unwrap();
        let view = |ua| RequestView {
            user_agent: Some(ua),
            ..Default::default()
        };
        assert!(tags_of(live.classifier(), view("ours-1")).contains(&"tool:ours".into()));
        assert!(!live.reload_if_changed());
        // Each edit gets a later modification time, as a real edit a few seconds apart would.
        let rewrite = |text: String, seconds: u64| {
            std::fs::write(&path, text).unwrap();
            let later = SystemTime::now() + std::time::Duration::from_secs(seconds);
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(later).unwrap();
        };
        rewrite(rule("^ours-2"), 5);
        assert!(live.reload_if_changed());
        assert!(tags_of(live.classifier(), view("ours-2")).contains(&"tool:ours".into()));
        rewrite(rule("("), 10);
        assert!(!live.reload_if_changed());
        assert!(tags_of(live.classifier(), view("ours-2")).contains(&"tool:ours".into()));
    }
}
