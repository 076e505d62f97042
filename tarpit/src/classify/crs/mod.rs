//! The OWASP Core Rule Set on every recorded request: the attack engine of record.
//!
//! The CRS (Debian's `modsecurity-crs`, Apache-2.0) is evaluated in detection-only,
//! anomaly-scoring mode, over the request phases, at the configured paranoia level, by the
//! tarpit's own evaluator of the rule files ([`native`], the default) or by libmodsecurity
//! ([`modsec`], `crs_engine = "libmodsecurity"`), the reference the native one is tested against. Each request gets `crs:<rule id>` for every rule that fired, its inbound anomaly score,
//! and `attack:<class>` from the fired rules' families ([`attack_tag`]). The project's own rules
//! keep what the CRS does not say (`cve:`, `target:`, `tool:`, `crawler:`).
//!
//! Evaluation is slow next to the own rules (about 0.3 ms a distinct request natively, 1 ms on
//! libmodsecurity), so it never runs on a worker or on the pipeline: the CRS stage ([`stage`]) tags rows after SQLite holds them.
//! Against a client that sends thousands of crafted requests: a verdict cache keyed by the whole
//! request (bounded entries; random-keyed hash, so no client can aim collisions) makes repeats
//! free; distinct requests cost the engine's bounded time each and wait as rows in SQLite (a
//! backlog on disk, never dropped); the rule ids recorded are only ids of the loaded set.

pub mod catalog;
pub mod modsec;
pub mod native;
pub mod stage;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use catalog::Catalog;
use modsec::{EngineRequest, Firings, ModSecurity};
use native::NativeEngine;

use super::RequestView;

/// Where Debian's `modsecurity-crs` package puts the rule set.
pub const DEFAULT_CRS_DIR: &str = "/usr/share/modsecurity-crs";

/// Verdicts kept for repeated requests (a verdict is a few ids: ~100 bytes each).
const CACHE_ENTRIES: usize = 65_536;

/// How the CRS is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrsSettings {
    /// The CRS directory (holding `rules/REQUEST-*.conf`).
    pub dir: PathBuf,
    /// Paranoia level, 1-4 (the CRS's `tx.paranoia_level`).
    pub paranoia: u8,
    /// Operator exclusions in the CRS's own syntax (`SecRuleRemoveById`,
    /// `SecRuleUpdateTargetById`, ...), loaded after the rules.
    pub exclusions: Option<PathBuf>,
    /// Which engine evaluates the rules.
    pub engine: CrsEngine,
}

/// The engine that evaluates the CRS (`[classify] crs_engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrsEngine {
    /// The tarpit's own evaluator of the rule files ([`native`]): no library needed, and fast
    /// enough for distinct attack requests at a sensor's pace.
    #[default]
    Native,
    /// Debian's libmodsecurity 3, the reference engine ([`modsec`]).
    Libmodsecurity,
}

impl std::fmt::Display for CrsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Libmodsecurity => "libmodsecurity",
        })
    }
}

impl std::str::FromStr for CrsEngine {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "native" => Ok(Self::Native),
            "libmodsecurity" => Ok(Self::Libmodsecurity),
            other => Err(format!("`{other}` is not native or libmodsecurity")),
        }
    }
}

/// The CRS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CrsError {
    /// The rule directory or a file could not be read.
    #[error("{path}: {reason}")]
    Files {
        /// The file or directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The engine is missing or refused the rules.
    #[error(transparent)]
    Engine(#[from] modsec::ModSecurityError),
    /// The native evaluator refused a rule (it names the file, line and reason).
    #[error(
        "the native CRS evaluator cannot load the rules: {0} (crs_engine = \"libmodsecurity\" runs them on the library)"
    )]
    Native(#[from] native::NativeError),
    /// The rules load, but not with the operator's exclusions: the file is at fault.
    #[error("{file}: the CRS engine refused the exclusions: {reason}")]
    Exclusions {
        /// The exclusions file.
        file: String,
        /// The engine's reason.
        reason: String,
    },
}

/// What the CRS said of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Rules that fired, sorted.
    pub rule_ids: Vec<u32>,
    /// Inbound anomaly score.
    pub score: u32,
}

impl Verdict {
    /// The tags the verdict gives: `crs:<id>` per rule, and `attack:<class>` per family of the
    /// CRITICAL rules among them (see [`attack_tag`]).
    pub fn tags(&self, catalog: &Catalog) -> Vec<String> {
        let mut tags: Vec<String> = self.rule_ids.iter().map(|id| format!("crs:{id}")).collect();
        tags.extend(
            self.rule_ids
                .iter()
                .filter(|&&id| catalog.get(id).is_some_and(|rule| rule.critical))
                .filter_map(|&id| attack_tag(id))
                .map(str::to_owned),
        );
        tags.sort_unstable();
        tags.dedup();
        tags
    }
}

/// The `attack:` class of a CRS rule, from its family (the first three digits of its id, the
/// CRS's own file numbering). Families that describe no attack (initialisation, exclusions,
/// scanner detection, the score check) give none. Only CRITICAL rules give their class
/// ([`Verdict::tags`]): a WARNING or NOTICE (a numeric `Host`, a missing `Accept`, which almost
/// every scanner sends) adds to the score and is recorded as `crs:<id>`, but is no attack by
/// itself.
///
/// | family | class |
/// |---|---|
/// | 911 method enforcement, 920 protocol enforcement, 921 protocol attack, 922 multipart | `attack:protocol` |
/// | 930 local file inclusion: 930100/930110 traversal, others file access | `attack:path-traversal`, `attack:lfi` |
/// | 931 remote file inclusion | `attack:rfi` |
/// | 932 remote command execution | `attack:cmd-injection` |
/// | 933 PHP, 934 Node.js, 944 Java injection | `attack:code-injection` |
/// | 941 cross-site scripting | `attack:xss` |
/// | 942 SQL injection | `attack:sqli` |
/// | 943 session fixation | `attack:session-fixation` |
pub fn attack_tag(rule_id: u32) -> Option<&'static str> {
    Some(match rule_id / 1000 {
        911 | 920 | 921 | 922 => "attack:protocol",
        930 if matches!(rule_id, 930100 | 930110) => "attack:path-traversal",
        930 => "attack:lfi",
        931 => "attack:rfi",
        932 => "attack:cmd-injection",
        933 | 934 | 944 => "attack:code-injection",
        941 => "attack:xss",
        942 => "attack:sqli",
        943 => "attack:session-fixation",
        _ => return None,
    })
}

/// The ModSecurity configuration the engine is loaded with: detection only, request bodies
/// read, XML and JSON bodies parsed as ModSecurity's recommended configuration does, the CRS's
/// set-up variables, the request rule files, the operator's exclusions, then our score rule.
pub fn engine_config(settings: &CrsSettings, files: &[PathBuf]) -> String {
    let mut text = format!(
        "SecRuleEngine DetectionOnly\n\
         SecAuditEngine Off\n\
         SecRequestBodyAccess On\n\
         SecRequestBodyLimit 13107200\n\
         SecRequestBodyNoFilesLimit 131072\n\
         SecRequestBodyLimitAction ProcessPartial\n\
         SecPcreMatchLimit 1000\n\
         SecPcreMatchLimitRecursion 1000\n\
         SecRule REQUEST_HEADERS:Content-Type \"^(?:application(?:/soap\\+|/)|text/)xml\" \
         \"id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML\"\n\
         SecRule REQUEST_HEADERS:Content-Type \"^application/json\" \
         \"id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON\"\n\
         SecDefaultAction \"phase:1,log,auditlog,pass\"\n\
         SecDefaultAction \"phase:2,log,auditlog,pass\"\n\
         SecAction \"id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={}\"\n\
         SecAction \"id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334\"\n",
        settings.paranoia
    );
    for file in files.iter().chain(&settings.exclusions) {
        text.push_str(&format!("Include \"{}\"\n", file.display()));
    }
    text.push_str(&modsec::score_rule());
    text
}

/// A loaded engine of either kind.
#[derive(Debug)]
enum Engine {
    Native(NativeEngine),
    ModSecurity(ModSecurity),
}

impl Engine {
    /// Loads the configuration into the engine `kind`.
    fn load(kind: CrsEngine, config: &str) -> Result<Self, CrsError> {
        Ok(match kind {
            CrsEngine::Native => Self::Native(NativeEngine::load(config)?),
            CrsEngine::Libmodsecurity => Self::ModSecurity(ModSecurity::load(config)?),
        })
    }

    fn evaluate(&mut self, request: &EngineRequest<'_>, catalog: &Catalog) -> Firings {
        match self {
            Self::Native(engine) => engine.evaluate(request, catalog),
            Self::ModSecurity(engine) => engine.evaluate(request, catalog),
        }
    }
}

/// The CRS, loaded and ready: one per thread that evaluates.
#[derive(Debug)]
pub struct Crs {
    engine: Engine,
    catalog: Arc<Catalog>,
    cache: lru::LruCache<u64, Verdict>,
    hasher: RandomState,
    /// Cache hits and misses since start (for the stage's metrics).
    pub hits: u64,
    /// Requests the engine evaluated.
    pub misses: u64,
}

impl Crs {
    /// Loads the rule set; errors name the directory, file or the engine's reason.
    pub fn load(settings: &CrsSettings) -> Result<Self, CrsError> {
        let files_error = |path: &Path, e: std::io::Error| CrsError::Files {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let files = catalog::request_rule_files(&settings.dir)
            .map_err(|e| files_error(&settings.dir.join("rules"), e))?;
        if files.is_empty() {
            return Err(CrsError::Files {
                path: settings.dir.join("rules").display().to_string(),
                reason: "no REQUEST-*.conf rule files (is Debian's modsecurity-crs installed?)"
                    .into(),
            });
        }
        let mut catalog = Catalog::default();
        for file in files.iter().chain(&settings.exclusions) {
            let text = std::fs::read_to_string(file).map_err(|e| files_error(file, e))?;
            catalog.add_text(&text);
        }
        let engine = match Engine::load(settings.engine, &engine_config(settings, &files)) {
            Ok(engine) => engine,
            // Loading again without the exclusions tells whose fault it is.
            Err(CrsError::Engine(modsec::ModSecurityError::Rules(reason)))
                if settings.exclusions.is_some()
                    && Self::loads_without_exclusions(settings, &files) =>
            {
                return Err(CrsError::Exclusions {
                    file: exclusions_name(settings),
                    reason,
                });
            }
            Err(CrsError::Native(error))
                if settings.exclusions.is_some()
                    && Self::loads_without_exclusions(settings, &files) =>
            {
                return Err(CrsError::Exclusions {
                    file: exclusions_name(settings),
                    reason: error.to_string(),
                });
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            engine,
            catalog: Arc::new(catalog),
            cache: lru::LruCache::new(NonZeroUsize::new(CACHE_ENTRIES).expect("not zero")),
            hasher: RandomState::new(),
            hits: 0,
            misses: 0,
        })
    }

    /// Whether the rules load with the same settings but no exclusions file.
    fn loads_without_exclusions(settings: &CrsSettings, files: &[PathBuf]) -> bool {
        let plain = CrsSettings {
            exclusions: None,
            ..settings.clone()
        };
        Engine::load(settings.engine, &engine_config(&plain, files)).is_ok()
    }

    /// The rules loaded (messages, levels, version).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Evaluates a request (or answers from the cache).
    pub fn evaluate(&mut self, request: &RequestView<'_>, client_ip: &str) -> Verdict {
        let loopback = client_ip == "127.0.0.1" || client_ip == "::1";
        let key = self.key(request, loopback);
        if let Some(verdict) = self.cache.get(&key) {
            self.hits += 1;
            return verdict.clone();
        }
        self.misses += 1;
        let verdict = self.evaluate_uncached(request, client_ip);
        self.cache.put(key, verdict.clone());
        verdict
    }

    /// Evaluates a request with the engine, past the cache (what a distinct request costs).
    pub fn evaluate_uncached(&mut self, request: &RequestView<'_>, client_ip: &str) -> Verdict {
        let uri = match request.query {
            Some(query) => format!("{}?{query}", request.path.unwrap_or("/")),
            None => request.path.unwrap_or("/").to_owned(),
        };
        let Firings {
            mut rule_ids,
            score,
        } = self.engine.evaluate(
            &EngineRequest {
                client: (client_ip, 40_000),
                method: request.method.unwrap_or("GET"),
                uri: &uri,
                version: "1.1",
                headers: request.headers,
                body: request.body.unwrap_or_default(),
            },
            &self.catalog,
        );
        rule_ids.sort_unstable();
        Verdict { rule_ids, score }
    }

    /// The cache key: everything the engine reads of a request, and whether the client is
    /// loopback (the CRS's 905 exceptions depend on it), hashed with a key chosen at start.
    fn key(&self, request: &RequestView<'_>, loopback: bool) -> u64 {
        self.hasher.hash_one((
            request.method,
            request.path,
            request.query,
            request.headers,
            request.body,
            loopback,
        ))
    }
}

/// The exclusions file's name, for an error.
fn exclusions_name(settings: &CrsSettings) -> String {
    settings
        .exclusions
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_map_to_attack_classes() {
        assert_eq!(attack_tag(942100), Some("attack:sqli"));
        assert_eq!(attack_tag(941110), Some("attack:xss"));
        assert_eq!(attack_tag(930100), Some("attack:path-traversal"));
        assert_eq!(attack_tag(930120), Some("attack:lfi"));
        assert_eq!(attack_tag(932160), Some("attack:cmd-injection"));
        assert_eq!(attack_tag(944150), Some("attack:code-injection"));
        assert_eq!(attack_tag(920350), Some("attack:protocol"));
        assert_eq!(attack_tag(913100), None);
        assert_eq!(attack_tag(949110), None);
        let mut catalog = Catalog::default();
        for (id, severity) in [
            (930120, "CRITICAL"),
            (932160, "CRITICAL"),
            (920350, "WARNING"),
            (949110, "CRITICAL"),
        ] {
            catalog.add_text(&format!(
                "SecRule X \"@rx y\" \"id:{id},phase:2,block,severity:'{severity}'\"\n"
            ));
        }
        let verdict = Verdict {
            rule_ids: vec![920350, 930120, 932160, 949110],
            score: 13,
        };
        assert_eq!(
            verdict.tags(&catalog),
            [
                "attack:cmd-injection",
                "attack:lfi",
                "crs:920350",
                "crs:930120",
                "crs:932160",
                "crs:949110"
            ]
        );
    }

    #[test]
    fn the_engine_config_sets_the_level_and_loads_exclusions_after_the_rules() {
        let settings = CrsSettings {
            dir: DEFAULT_CRS_DIR.into(),
            paranoia: 3,
            exclusions: Some("/etc/tarpit/crs-exclusions.conf".into()),
            engine: CrsEngine::Native,
        };
        let text = engine_config(&settings, &["/r/REQUEST-942.conf".into()]);
        assert!(text.contains("setvar:tx.paranoia_level=3"));
        let rules = text.find("Include \"/r/REQUEST-942.conf\"").unwrap();
        let exclusions = text
            .find("Include \"/etc/tarpit/crs-exclusions.conf\"")
            .unwrap();
        let score = text.find("id:99990").unwrap();
        assert!(rules < exclusions && exclusions < score);
    }
}
