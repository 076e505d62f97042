//! Give-up priors: how long well-known tools wait for a response by default
//! (`tarpit/assets/adaptive-priors.toml`, documented at its top), so that the first request of
//! a tool never seen before is already answered in time. A worker matches them against the
//! User-Agent once per request: a handful of substring searches, no allocation.

use std::path::Path;

use serde::Deserialize;

/// The built-in priors, compiled in.
pub const BUILTIN: &str = include_str!("../../assets/adaptive-priors.toml");

/// One tool's default give-up time.
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    /// The classification's tool tag without `tool:` (`gobuster`).
    pub tool: String,
    /// A User-Agent substring, compared without regard to ASCII case.
    pub user_agent: String,
    /// Seconds after which the tool gives up by default.
    pub give_up: f64,
    /// Keep the full drip for this tool, whatever weaker evidence says: its timer restarts on
    /// every byte (the drip already holds it), or it sends one request per target, so an
    /// early answer buys no further request.
    pub hold: bool,
}

impl Prior {
    /// Whether `user_agent` names this tool.
    pub fn matches(&self, user_agent: &str) -> bool {
        let (hay, needle) = (user_agent.as_bytes(), self.user_agent.as_bytes());
        hay.len() >= needle.len()
            && hay
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle))
    }
}

/// A prior file that cannot be used: names the file, the entry and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {entry}: {reason}")]
pub struct PriorError {
    /// The file (`built-in` for the compiled-in one).
    pub file: String,
    /// Which entry (`prior[2]`) or `(file)`.
    pub entry: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorFile {
    #[serde(default)]
    prior: Vec<PriorSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorSpec {
    tool: String,
    user_agent: String,
    give_up: f64,
    #[serde(default)]
    hold: bool,
    #[allow(dead_code)] // documentation for the reader of the file
    source: Option<String>,
}

/// The priors in the order they are tried: the operator's first, then the built-in ones whose
/// tool the operator did not name.
pub fn load(operator_file: Option<&Path>) -> Result<Vec<Prior>, PriorError> {
    let mut priors = match operator_file {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| PriorError {
                file: name.clone(),
                entry: "(file)".into(),
                reason: format!("cannot read: {e}"),
            })?;
            parse(&text, &name)?
        }
        None => Vec::new(),
    };
    for prior in parse(BUILTIN, "built-in")? {
        if !priors.iter().any(|p: &Prior| p.tool == prior.tool) {
            priors.push(prior);
        }
    }
    Ok(priors)
}

fn parse(text: &str, file: &str) -> Result<Vec<Prior>, PriorError> {
    let error = |entry: String, reason: String| PriorError {
        file: file.to_owned(),
        entry,
        reason,
    };
    let parsed: PriorFile =
        toml::from_str(text).map_err(|e| error("(file)".into(), e.message().to_owned()))?;
    parsed
        .prior
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let entry = format!("prior[{i}] ({})", spec.tool);
            if spec.tool.is_empty() || spec.tool.contains(char::is_whitespace) {
                return Err(error(entry, "tool must be one word".into()));
            }
            if spec.user_agent.trim().is_empty() {
                return Err(error(entry, "user_agent must not be empty".into()));
            }
            if !(spec.give_up.is_finite() && spec.give_up > 0.0 && spec.give_up <= 86_400.0) {
                return Err(error(
                    entry,
                    format!("give_up must be seconds above 0, got {}", spec.give_up),
                ));
            }
            Ok(Prior {
                tool: spec.tool,
                user_agent: spec.user_agent,
                give_up: spec.give_up,
                hold: spec.hold,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_priors_load_and_name_classified_tools() {
        let priors = load(None).unwrap();
        let rules = crate::classify::rules::load(None).unwrap();
        for prior in &priors {
            let tag = format!("tool:{}", prior.tool);
            assert!(
                rules.iter().any(|r| r.tags.iter().any(|t| t == &tag)),
                "{tag} is not a classification tag"
            );
        }
        let gobuster = priors.iter().find(|p| p.tool == "gobuster").unwrap();
        assert!(gobuster.matches("gobuster/3.5"));
        assert!(!gobuster.matches("curl/7.88.1"));
        let ffuf = priors.iter().find(|p| p.tool == "ffuf").unwrap();
        assert!(ffuf.matches("Fuzz Faster U Fool v1.1.0"));
        let feroxbuster = priors.iter().find(|p| p.tool == "feroxbuster").unwrap();
        assert!(feroxbuster.matches("feroxbuster/2.10.4"));
        assert_eq!(feroxbuster.give_up, 7.0);
        // The tools the issue names, each matched by the User-Agent it sends by default.
        let named = |tool: &str| priors.iter().find(|p| p.tool == tool).unwrap();
        assert!(
            named("nuclei")
                .matches("Nuclei - Open-source project (github.com/projectdiscovery/nuclei)")
        );
        assert!(
            named("httpx-pd")
                .matches("httpx - Open-source project (github.com/projectdiscovery/httpx)")
        );
        assert!(
            named("masscan").matches("masscan/1.3 (https://github.com/robertdavidgraham/masscan)")
        );
        assert!(named("zgrab").matches("Mozilla/5.0 zgrab/0.x"));
        // One request per target, or a timer per read: the full drip.
        for tool in ["zgrab", "masscan", "nmap"] {
            assert!(named(tool).hold, "{tool}");
        }
        assert!(!named("nuclei").hold && !named("gobuster").hold);
        // The first prior that matches decides: httpx's User-Agent is not nuclei's.
        let httpx = "httpx - Open-source project (github.com/projectdiscovery/httpx)";
        assert_eq!(
            priors.iter().find(|p| p.matches(httpx)).unwrap().tool,
            "httpx-pd"
        );
    }

    #[test]
    fn matching_ignores_ascii_case() {
        let prior = Prior {
            tool: "x".into(),
            user_agent: "Fuzz Faster".into(),
            give_up: 1.0,
            hold: false,
        };
        assert!(prior.matches("fuzz faster u fool v1.1.0"));
        assert!(!prior.matches("Fuzz"));
    }

    #[test]
    fn operator_priors_come_first_and_replace_by_tool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("priors.toml");
        std::fs::write(
            &path,
            "[[prior]]\ntool = \"gobuster\"\nuser_agent = \"gobuster/\"\ngive_up = 4\n\
             [[prior]]\ntool = \"mytool\"\nuser_agent = \"MyTool\"\ngive_up = 7\n",
        )
        .unwrap();
        let priors = load(Some(&path)).unwrap();
        assert_eq!(priors[0].tool, "gobuster");
        assert_eq!(priors[0].give_up, 4.0);
        assert_eq!(priors[1].tool, "mytool");
        assert_eq!(priors.iter().filter(|p| p.tool == "gobuster").count(), 1);
    }

    #[test]
    fn a_bad_prior_names_file_entry_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("priors.toml");
        std::fs::write(
            &path,
            "[[prior]]\ntool = \"t\"\nuser_agent = \"T\"\ngive_up = -1\n",
        )
        .unwrap();
        let error = load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("priors.toml"), "{error}");
        assert!(error.contains("prior[0] (t)"), "{error}");
        assert!(error.contains("give_up"), "{error}");
    }
}
