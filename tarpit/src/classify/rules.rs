//! The rule file: its format, loading, checking and merging.
//!
//! The default rules are `tarpit/assets/classify-rules.toml`, compiled in; an operator file
//! (`[classify] rules = "PATH"`) is read after them: a rule with the same `id` replaces the
//! default one (`enabled = false` turns it off), a new `id` adds a rule. The format is
//! documented at the top of the default file and in README.md.

use std::path::Path;

use serde::Deserialize;

/// The default rule files, compiled in, with the names they are reported under in errors: the
/// attack, target, tool and crawler rules with the first CVEs, then the CVEs seen exploited
/// over HTTP, each with the request its rule was written from (`example`).
pub const DEFAULT_RULE_FILES: &[(&str, &str)] = &[
    (
        "tarpit/assets/classify-rules.toml (built in)",
        include_str!("../../assets/classify-rules.toml"),
    ),
    (
        "tarpit/assets/classify-cves.toml (built in)",
        include_str!("../../assets/classify-cves.toml"),
    ),
];

/// Tag families; every tag is `family:name`.
pub const FAMILIES: &[&str] = &["attack", "cve", "target", "tool", "crawler"];

/// The detectors a rule may name instead of (or besides) patterns.
pub const DETECTORS: &[&str] = &["libinjection-sqli", "libinjection-xss"];

/// A rule that cannot be used: the file, the rule and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: rule {rule}: {reason}")]
pub struct RuleError {
    /// The rule file.
    pub file: String,
    /// The rule's `id` (or its position when it has none).
    pub rule: String,
    /// What is wrong.
    pub reason: String,
}

/// One file's contents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

/// One rule as written: tags, and the conditions that must all hold. Each pattern is a
/// regular expression (Rust `regex` syntax) searched in its field.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name; an operator rule with the same id replaces the default one.
    pub id: String,
    /// Tags given when the rule matches, `family:name`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What the rule recognises and why (documentation only).
    #[serde(default)]
    pub description: Option<String>,
    /// `false` turns the rule off (an operator file can switch off a default rule).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Pattern on the method.
    #[serde(default)]
    pub method: Option<String>,
    /// Pattern on the decoded, normalised path.
    #[serde(default)]
    pub path: Option<String>,
    /// Pattern on the decoded query.
    #[serde(default)]
    pub query: Option<String>,
    /// Pattern on path and query.
    #[serde(default)]
    pub uri: Option<String>,
    /// Pattern on the `name: value` header lines.
    #[serde(default)]
    pub headers: Option<String>,
    /// Pattern on the User-Agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Pattern on the body preview.
    #[serde(default)]
    pub body: Option<String>,
    /// Pattern on uri, headers and body together.
    #[serde(default)]
    pub anywhere: Option<String>,
    /// Pattern on the escaped preview of non-HTTP input.
    #[serde(default)]
    pub raw: Option<String>,
    /// A detector (`libinjection-sqli`, `libinjection-xss`) run on each user-controlled value.
    #[serde(default)]
    pub detector: Option<String>,
    /// The request the rule was written from (an advisory's or a public exploit's), which it
    /// must tag: checked by the test suite for every built-in rule that has one, and a
    /// self-test an operator's rule can carry.
    #[serde(default)]
    pub example: Option<RuleExample>,
}

/// A request a rule must match, as its source sends it (not yet decoded).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleExample {
    /// Where the shape comes from: the advisory or exploit, by name or URL.
    pub source: String,
    /// The method (GET when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// The path as sent.
    pub path: String,
    /// The query as sent, without `?`.
    #[serde(default)]
    pub query: Option<String>,
    /// Header lines, `Name: value`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// The body as sent.
    #[serde(default)]
    pub body: Option<String>,
}

fn enabled() -> bool {
    true
}

impl RuleSpec {
    /// The rule's patterns with the field each applies to.
    pub fn patterns(&self) -> impl Iterator<Item = (super::Field, &str)> {
        use super::Field;
        [
            (Field::Method, &self.method),
            (Field::Path, &self.path),
            (Field::Query, &self.query),
            (Field::Uri, &self.uri),
            (Field::Headers, &self.headers),
            (Field::UserAgent, &self.user_agent),
            (Field::Body, &self.body),
            (Field::Anywhere, &self.anywhere),
            (Field::Raw, &self.raw),
        ]
        .into_iter()
        .filter_map(|(field, pattern)| pattern.as_deref().map(|p| (field, p)))
    }
}

/// Parses and checks one file's rules. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<RuleSpec>, RuleError> {
    let parsed: RuleFile = toml::from_str(text).map_err(|e| RuleError {
        file: file.to_owned(),
        rule: "-".to_owned(),
        reason: e.message().to_owned()
            + &e.span()
                .map(|s| format!(" (at line {})", text[..s.start].lines().count().max(1)))
                .unwrap_or_default(),
    })?;
    let mut seen = std::collections::HashSet::new();
    for (index, rule) in parsed.rules.iter().enumerate() {
        let error = |reason: String| RuleError {
            file: file.to_owned(),
            rule: if rule.id.is_empty() {
                format!("#{}", index + 1)
            } else {
                rule.id.clone()
            },
            reason,
        };
        if rule.id.is_empty() {
            return Err(error("`id` is empty".into()));
        }
        if !seen.insert(rule.id.as_str()) {
            return Err(error("a second rule with this id in the same file".into()));
        }
        if !rule.enabled {
            continue; // a switched-off rule needs nothing else
        }
        if rule.tags.is_empty() {
            return Err(error("`tags` is empty".into()));
        }
        for tag in &rule.tags {
            check_tag(tag).map_err(error)?;
        }
        if rule.patterns().next().is_none() && rule.detector.is_none() {
            return Err(error(
                "no condition: give a pattern field or a `detector`".into(),
            ));
        }
        if let Some(detector) = &rule.detector
            && !DETECTORS.contains(&detector.as_str())
        {
            return Err(error(format!(
                "unknown detector {detector:?} (known: {})",
                DETECTORS.join(", ")
            )));
        }
        for (field, pattern) in rule.patterns() {
            regex::Regex::new(&super::ascii_word_boundaries(pattern))
                .map_err(|e| error(format!("{}: invalid pattern: {e}", field.name())))?;
        }
    }
    Ok(parsed.rules)
}

/// A tag is `family:name`, the family one of [`FAMILIES`], the name of letters, digits and
/// `.-_` (tags become metric labels and table values).
fn check_tag(tag: &str) -> Result<(), String> {
    let Some((family, name)) = tag.split_once(':') else {
        return Err(format!("tag {tag:?} is not family:name"));
    };
    if !FAMILIES.contains(&family) {
        return Err(format!(
            "tag {tag:?}: unknown family {family:?} (known: {})",
            FAMILIES.join(", ")
        ));
    }
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "tag {tag:?}: the name must be 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// The default rules with an operator file's merged in (same id: replaced; new: added).
pub fn load(operator_file: Option<&Path>) -> Result<Vec<RuleSpec>, RuleError> {
    let mut rules = Vec::new();
    for (name, text) in DEFAULT_RULE_FILES {
        for rule in parse(text, name)? {
            if rules.iter().any(|r: &RuleSpec| r.id == rule.id) {
                return Err(RuleError {
                    file: (*name).to_owned(),
                    rule: rule.id,
                    reason: "a second rule with this id among the built-in files".into(),
                });
            }
            rules.push(rule);
        }
    }
    if let Some(path) = operator_file {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: name.clone(),
            rule: "-".into(),
            reason: format!("cannot read: {e}"),
        })?;
        for rule in parse(&text, &name)? {
            match rules.iter_mut().find(|r| r.id == rule.id) {
                Some(existing) => *existing = rule,
                None => rules.push(rule),
            }
        }
    }
    rules.retain(|r| r.enabled);
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_load_and_cover_every_family() {
        let rules = load(None).unwrap();
        for family in FAMILIES {
            assert!(
                rules
                    .iter()
                    .any(|r| r.tags.iter().any(|t| t.starts_with(&format!("{family}:")))),
                "no {family}: rule"
            );
        }
    }

    #[test]
    fn bad_rules_name_file_rule_and_reason() {
        let cases = [
            (
                "[[rule]]\nid = \"a\"\ntags = [\"attack:x\"]\npath = \"(\"\n",
                "rule a: path: invalid pattern",
            ),
            (
                "[[rule]]\nid = \"b\"\ntags = [\"evil:x\"]\npath = \"x\"\n",
                "unknown family \"evil\"",
            ),
            (
                "[[rule]]\nid = \"c\"\ntags = [\"tool:x\"]\n",
                "rule c: no condition",
            ),
            (
                "[[rule]]\nid = \"d\"\ntags = [\"tool:x\"]\ndetector = \"magic\"\n",
                "unknown detector",
            ),
            (
                "[[rule]]\nid = \"e\"\ntags = [\"tool:x\"]\npath = \"x\"\n[[rule]]\nid = \"e\"\ntags = [\"tool:y\"]\npath = \"y\"\n",
                "rule e: a second rule",
            ),
            (
                "[[rule]]\nid = \"f\"\ntags = [\"tool:x\"]\npaht = \"x\"\n",
                "unknown field `paht`",
            ),
            (
                "[[rule]]\nid = \"\"\ntags = [\"tool:x\"]\npath = \"x\"\n",
                "rule #1: `id` is empty",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text, "/etc/tarpit/rules.toml")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("/etc/tarpit/rules.toml: "), "{error}");
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn an_operator_file_replaces_disables_and_adds() {
        let defaults = load(None).unwrap();
        let first = defaults[0].id.clone();
        let second = defaults[1].id.clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(
            &path,
            format!(
                "[[rule]]\nid = \"{first}\"\ntags = [\"target:mine\"]\npath = \"^/mine$\"\n\
                 [[rule]]\nid = \"{second}\"\nenabled = false\n\
                 [[rule]]\nid = \"new\"\ntags = [\"tool:ours\"]\nuser_agent = \"ours\"\n"
            ),
        )
        .unwrap();
        let merged = load(Some(&path)).unwrap();
        assert_eq!(merged.len(), defaults.len());
        assert_eq!(merged[0].tags, ["target:mine"]);
        assert!(!merged.iter().any(|r| r.id == second));
        assert!(merged.iter().any(|r| r.id == "new"));
    }
}
