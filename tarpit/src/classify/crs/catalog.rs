//! The CRS rules as files: which rule files make up the set at a paranoia level, and each
//! rule's id, message and paranoia level, read from the rule files themselves (for `tarpit
//! stats`/`report`, and to tell a rule id the engine logged from a look-alike a client wrote into
//! its own request).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One rule of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Its `msg`, empty for rules without one.
    pub message: String,
    /// The paranoia level its `paranoia-level/N` tag names (1 when untagged).
    pub paranoia: u8,
    /// Whether its `severity` is CRITICAL (or 2, its number): the rules that say "attack" on
    /// their own, as opposed to anomalies (a numeric Host, a missing header) that only add to
    /// the score.
    pub critical: bool,
}

/// Every rule id of the loaded files, with what it says.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    rules: BTreeMap<u32, RuleInfo>,
    version: Option<String>,
}

impl Catalog {
    /// Reads `files` (ModSecurity configuration files); unreadable files are the caller's
    /// error, reported before this is called.
    pub fn read(files: &[PathBuf]) -> std::io::Result<Self> {
        let mut catalog = Catalog::default();
        for file in files {
            catalog.add_text(&std::fs::read_to_string(file)?);
        }
        Ok(catalog)
    }

    /// Adds the rules of one file's text.
    pub fn add_text(&mut self, text: &str) {
        for directive in directives(text) {
            let Some(id) = action_value(&directive, "id").and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let message = action_value(&directive, "msg").unwrap_or_default();
            let paranoia = directive
                .find("paranoia-level/")
                .and_then(|at| directive[at + 15..].chars().next())
                .and_then(|c| c.to_digit(10))
                .map_or(1, |d| d as u8);
            let critical = matches!(
                action_value(&directive, "severity").as_deref(),
                Some("CRITICAL" | "2")
            );
            if self.version.is_none() {
                self.version = action_value(&directive, "ver");
            }
            self.rules.insert(
                id,
                RuleInfo {
                    message,
                    paranoia,
                    critical,
                },
            );
        }
    }

    /// Whether `id` is a rule of the set.
    pub fn contains(&self, id: u32) -> bool {
        self.rules.contains_key(&id)
    }

    /// What rule `id` says.
    pub fn get(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(&id)
    }

    /// Every rule, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &RuleInfo)> {
        self.rules.iter().map(|(id, rule)| (*id, rule))
    }

    /// How many rules (with an id) the files hold.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule was read.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule set's version, as its rules' `ver` action gives it (`OWASP_CRS/3.3.4`).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

/// The request-phase rule files of a CRS directory (`<dir>/rules/REQUEST-*.conf`, in name
/// order, which is the order the CRS is loaded in). The response files are left out: the
/// tarpit's responses are its own.
pub fn request_rule_files(crs_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let rules = crs_dir.join("rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rules)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("REQUEST-") && n.ends_with(".conf"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The file's directives with continuation lines joined and comments left out.
fn directives(text: &str) -> Vec<String> {
    super::native::parse::logical_lines(text)
        .into_iter()
        .map(|(_, joined)| joined)
        .collect()
}

/// The value of action `name` (`id:942100`, `msg:'...'`) in a directive's action list.
fn action_value(directive: &str, name: &str) -> Option<String> {
    let bytes = directive.as_bytes();
    let mut search = 0;
    while let Some(found) = directive[search..].find(name) {
        let at = search + found;
        search = at + name.len();
        let before = directive[..at].trim_end();
        let starts_action = before.ends_with(',') || before.ends_with('"');
        if !starts_action || bytes.get(search) != Some(&b':') {
            continue;
        }
        let rest = &directive[search + 1..];
        return Some(match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split('\'').next().unwrap_or_default().to_owned(),
            None => rest
                .split([',', '"'])
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_messages_and_levels_are_read_across_continued_lines() {
        let mut catalog = Catalog::default();
        catalog.add_text(
            r#"
# a comment with id:1
SecRule ARGS "@detectSQLi" \
    "id:942100,\
    phase:2,\
    block,\
    msg:'SQL Injection Attack Detected via libinjection',\
    severity:'CRITICAL',\
    tag:'paranoia-level/1',\
    ver:'OWASP_CRS/3.3.4',\
    setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule ARGS "@rx x" "id:942101,phase:2,pass,nolog,severity:'WARNING',tag:'paranoia-level/2',chain"
    SecRule MATCHED_VAR "@rx y" "t:none"
SecMarker "END-REQUEST-942-APPLICATION-ATTACK-SQLI"
"#,
        );
        assert_eq!(catalog.len(), 2);
        assert_eq!(
            catalog.get(942100),
            Some(&RuleInfo {
                message: "SQL Injection Attack Detected via libinjection".into(),
                paranoia: 1,
                critical: true,
            })
        );
        assert_eq!(catalog.get(942101).unwrap().paranoia, 2);
        assert!(!catalog.get(942101).unwrap().critical);
        assert!(!catalog.contains(1));
        assert_eq!(catalog.version(), Some("OWASP_CRS/3.3.4"));
    }
}
