//! The catalogue of research scanners and search engines (`tarpit/assets/scanners.toml`, or
//! the operator's copy named by `[scanners] file`): per organisation its documented
//! User-Agent, the domains of its scanners' reverse DNS names and its published address
//! ranges, compiled for lookups that cost a few hash probes per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use regex::RegexSet;
use serde::Deserialize;

/// The catalogue shipped with the tarpit.
const BUILTIN: &str = include_str!("../../assets/scanners.toml");

/// The tags [`super::VERIFIED`] and [`super::CLAIMED`] end in these: no organisation may.
const RESERVED_ORGS: [&str; 2] = ["verified", "claimed"];

/// A catalogue that cannot be used; names the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {key}: {reason}")]
pub struct CatalogError {
    /// The file (or "built-in").
    pub source_name: String,
    /// The offending key (`scanner[2].ranges[0]`), or `(file)`.
    pub key: String,
    /// What is wrong, in words.
    pub reason: String,
}

/// One `[[scanner]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    org: String,
    name: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    rdns: Vec<String>,
    #[serde(default)]
    ranges: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    scanner: Vec<Entry>,
}

/// An organisation of the catalogue.
#[derive(Debug, Clone)]
pub struct Org {
    /// The tag's name: `scanner:<id>`.
    pub id: String,
    /// The organisation, for people.
    pub name: String,
    /// Where the facts were published.
    pub source: String,
}

/// The compiled catalogue.
#[derive(Debug)]
pub struct Catalog {
    orgs: Vec<Org>,
    /// Every organisation's User-Agent expression; `ua_orgs[i]` owns pattern `i`.
    user_agents: RegexSet,
    ua_orgs: Vec<usize>,
    /// Published prefixes, by (IPv6?, prefix length): network bits → organisation. A lookup
    /// probes one map per length present (a handful), whatever the number of prefixes.
    ranges: Vec<((bool, u8), HashMap<u128, usize>)>,
    /// Reverse DNS domains (lower case, no trailing dot) → organisation.
    domains: HashMap<String, usize>,
}

impl Catalog {
    /// The catalogue shipped with the tarpit.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, "built-in scanners.toml").expect("the built-in catalogue is valid")
    }

    /// The operator's catalogue.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
            source_name: name.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &name)
    }

    /// Parses and compiles a catalogue; every error names the entry and key.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, CatalogError> {
        let error = |key: String, reason: String| CatalogError {
            source_name: source_name.to_owned(),
            key,
            reason,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            error(
                "(file)".into(),
                e.message().to_owned() + &span_note(text, e.span()),
            )
        })?;
        let mut orgs = Vec::new();
        let mut patterns = Vec::new();
        let mut ua_orgs = Vec::new();
        let mut ranges: Vec<((bool, u8), HashMap<u128, usize>)> = Vec::new();
        let mut domains = HashMap::new();
        for (at, entry) in file.scanner.into_iter().enumerate() {
            let key = |field: &str| format!("scanner[{at}].{field}");
            let valid_id = !entry.org.is_empty()
                && entry
                    .org
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_id || RESERVED_ORGS.contains(&entry.org.as_str()) {
                return Err(error(
                    key("org"),
                    format!(
                        "{:?}: lower-case letters, digits and dashes, not {RESERVED_ORGS:?}",
                        entry.org
                    ),
                ));
            }
            if orgs.iter().any(|o: &Org| o.id == entry.org) {
                return Err(error(key("org"), format!("{:?} appears twice", entry.org)));
            }
            let index = orgs.len();
            if let Some(pattern) = entry.user_agent {
                let case_blind = format!("(?i){pattern}");
                regex::Regex::new(&case_blind)
                    .map_err(|e| error(key("user_agent"), e.to_string()))?;
                patterns.push(case_blind);
                ua_orgs.push(index);
            }
            for (i, domain) in entry.rdns.iter().enumerate() {
                let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
                if domain.split('.').count() < 2 || domain.split('.').any(str::is_empty) {
                    return Err(error(
                        key(&format!("rdns[{i}]")),
                        format!("{domain:?} is not a domain with at least two labels"),
                    ));
                }
                if domains.insert(domain.clone(), index).is_some() {
                    return Err(error(
                        key(&format!("rdns[{i}]")),
                        format!("{domain:?} belongs to two organisations"),
                    ));
                }
            }
            for (i, text) in entry.ranges.iter().enumerate() {
                let net: IpNet = text
                    .trim()
                    .parse()
                    .map_err(|e| error(key(&format!("ranges[{i}]")), format!("{text:?}: {e}")))?;
                let net = net.trunc();
                let bucket = (matches!(net, IpNet::V6(_)), net.prefix_len());
                let network = bits(net.network());
                match ranges.iter_mut().find(|(b, _)| *b == bucket) {
                    Some((_, map)) => {
                        map.insert(network, index);
                    }
                    None => ranges.push((bucket, HashMap::from([(network, index)]))),
                }
            }
            orgs.push(Org {
                id: entry.org,
                name: entry.name,
                source: entry.source,
            });
        }
        // Longest prefixes first: the most specific entry wins.
        ranges.sort_by_key(|((_, len), _)| std::cmp::Reverse(*len));
        let user_agents =
            RegexSet::new(&patterns).map_err(|e| error("(file)".into(), e.to_string()))?;
        Ok(Self {
            orgs,
            user_agents,
            ua_orgs,
            ranges,
            domains,
        })
    }

    /// The organisation at `index`.
    pub fn org(&self, index: usize) -> &Org {
        &self.orgs[index]
    }

    /// Every organisation, in the file's order.
    pub fn orgs(&self) -> &[Org] {
        &self.orgs
    }

    /// Whether any organisation is verified by reverse DNS (else no lookup is worth making).
    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    /// The organisation whose published ranges hold `ip`.
    pub fn org_by_range(&self, ip: IpAddr) -> Option<usize> {
        let ip = ip.to_canonical();
        let v6 = ip.is_ipv6();
        let value = bits(ip);
        let width = if v6 { 128 } else { 32 };
        self.ranges
            .iter()
            .filter(|((is_v6, _), _)| *is_v6 == v6)
            .find_map(|((_, len), map)| {
                let host_bits = width - u32::from(*len);
                let network = if host_bits >= 128 {
                    0
                } else {
                    value >> host_bits << host_bits
                };
                map.get(&network).copied()
            })
    }

    /// The organisation whose documented User-Agent this is (a claim, not proof).
    pub fn org_by_user_agent(&self, user_agent: &str) -> Option<usize> {
        self.user_agents
            .matches(user_agent)
            .iter()
            .next()
            .map(|pattern| self.ua_orgs[pattern])
    }

    /// The organisation whose scanners' domain holds host `name`: the name is the domain or
    /// ends in `.` + the domain (`xcensys-scanner.com` is not under `censys-scanner.com`).
    pub fn org_by_host(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if let Some(&org) = self.domains.get(rest) {
                return Some(org);
            }
            rest = rest.split_once('.')?.1;
        }
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// " (line N)" for a TOML error's position.
fn span_note(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn id(catalog: &Catalog, org: Option<usize>) -> Option<&str> {
        org.map(|o| catalog.org(o).id.as_str())
    }

    #[test]
    fn the_builtin_catalogue_compiles_and_knows_censys_by_every_route() {
        let c = Catalog::builtin();
        assert!(c.orgs().len() >= 15);
        assert_eq!(id(&c, c.org_by_range(ip("162.142.125.7"))), Some("censys"));
        assert_eq!(
            id(&c, c.org_by_range(ip("::ffff:167.94.138.1"))),
            Some("censys")
        );
        assert_eq!(
            id(&c, c.org_by_range(ip("2602:80d:1003::42"))),
            Some("censys")
        );
        assert_eq!(c.org_by_range(ip("162.142.126.7")), None);
        assert_eq!(c.org_by_range(ip("2602:80d:1003::1:0")), None);
        let ua = "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)";
        assert_eq!(id(&c, c.org_by_user_agent(ua)), Some("censys"));
        assert_eq!(
            id(&c, c.org_by_host("scanner-05.ch1.censys-scanner.com.")),
            Some("censys")
        );
        assert_eq!(
            id(&c, c.org_by_host("dojo.census.SHODAN.io")),
            Some("shodan")
        );
        assert_eq!(
            id(&c, c.org_by_host("crawl-66-249-66-1.googlebot.com")),
            Some("google")
        );
        assert_eq!(c.org_by_user_agent("curl/8.5.0"), None);
    }

    #[test]
    fn a_host_counts_only_under_a_domain_at_a_label_boundary() {
        let c = Catalog::builtin();
        assert_eq!(c.org_by_host("evilcensys-scanner.com"), None);
        assert_eq!(c.org_by_host("censys-scanner.com.evil.example"), None);
        assert_eq!(c.org_by_host("scan.shadowserver.org.attacker.net"), None);
        // googleusercontent.com (anyone's cloud VM) is deliberately not Google's crawler.
        assert_eq!(c.org_by_host("1.2.3.4.bc.googleusercontent.com"), None);
        assert_eq!(c.org_by_host("localhost"), None);
    }

    #[test]
    fn the_most_specific_range_wins_and_families_never_mix() {
        let c = Catalog::parse(
            "[[scanner]]\norg = \"wide\"\nname = \"W\"\nranges = [\"10.0.0.0/8\"]\n\
             [[scanner]]\norg = \"narrow\"\nname = \"N\"\nranges = [\"10.1.2.0/24\", \"::/0\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(id(&c, c.org_by_range(ip("10.1.2.3"))), Some("narrow"));
        assert_eq!(id(&c, c.org_by_range(ip("10.9.2.3"))), Some("wide"));
        assert_eq!(id(&c, c.org_by_range(ip("2001:db8::1"))), Some("narrow"));
        assert_eq!(c.org_by_range(ip("11.0.0.1")), None);
    }

    #[test]
    fn errors_name_the_entry_the_key_and_the_reason() {
        let cases = [
            (
                "[[scanner]]\norg = \"Censys\"\nname = \"C\"\n",
                "scanner[0].org",
            ),
            (
                "[[scanner]]\norg = \"verified\"\nname = \"C\"\n",
                "scanner[0].org",
            ),
            (
                "[[scanner]]\norg = \"a\"\nname = \"A\"\n[[scanner]]\norg = \"a\"\nname = \"B\"\n",
                "scanner[1].org",
            ),
            (
                "[[scanner]]\norg = \"a\"\nname = \"A\"\nranges = [\"10.0.0.0/33\"]\n",
                "scanner[0].ranges[0]",
            ),
            (
                "[[scanner]]\norg = \"a\"\nname = \"A\"\nrdns = [\"com\"]\n",
                "scanner[0].rdns[0]",
            ),
            (
                "[[scanner]]\norg = \"a\"\nname = \"A\"\nuser_agent = \"(\"\n",
                "scanner[0].user_agent",
            ),
            ("[[scanner]]\norg = \"a\"\nnmae = \"A\"\n", "(file)"),
        ];
        for (text, key) in cases {
            let e = Catalog::parse(text, "mine.toml").unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert_eq!(e.source_name, "mine.toml");
            assert!(!e.reason.is_empty());
        }
        let missing = Catalog::load(Path::new("/nonexistent/scanners.toml")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("/nonexistent/scanners.toml: (file): cannot read")
        );
    }
}
