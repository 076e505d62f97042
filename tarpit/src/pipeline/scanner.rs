//! The pipeline's scanner stage: the `scanner:<org>` tags of each request (see
//! `crate::scanner`), and the addresses reverse DNS proves afterwards, sent on to the sinks as
//! `Event::ScannerHost` so the rows recorded before the proof are tagged too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::ScannersConfig;
use crate::event::{Event, RequestRecord, ScannerHost};
use crate::scanner::verify::{Limits, Resolver, SystemResolver};
use crate::scanner::{Catalog, Verdict, Verifier, Via, tags_for};

/// The stage, with its catalogue and (when `[scanners] rdns` is on) its verifier.
#[derive(Debug)]
pub struct ScannerStage {
    catalog: Arc<Catalog>,
    /// `scanner:<org>` for each organisation, built once.
    org_tags: Vec<Arc<str>>,
    verifier: Option<Arc<Verifier>>,
    proven: Option<mpsc::Receiver<(IpAddr, Verdict)>>,
}

impl ScannerStage {
    /// The stage `[scanners]` asks for (`None` when it is off); the catalogue is the
    /// operator's file or the built-in one. Reverse DNS uses the system's resolver.
    pub fn from_config(config: &ScannersConfig) -> anyhow::Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let catalog = match &config.file {
            Some(path) => Catalog::load(path)?,
            None => Catalog::builtin(),
        };
        let resolver: Option<Arc<dyn Resolver>> = config
            .rdns
            .then(|| Arc::new(SystemResolver) as Arc<dyn Resolver>);
        let limits = Limits {
            concurrency: config.rdns_concurrency,
            cache_size: config.cache_size,
            timeout: Duration::from_secs_f64(config.rdns_timeout),
            ttl: Duration::from_secs_f64(config.cache_ttl),
        };
        Ok(Some(Self::new(Arc::new(catalog), resolver, limits)))
    }

    /// A stage over `catalog`; with a resolver, addresses are also verified by reverse DNS.
    pub fn new(catalog: Arc<Catalog>, resolver: Option<Arc<dyn Resolver>>, limits: Limits) -> Self {
        let org_tags = catalog
            .orgs()
            .iter()
            .map(|org| Arc::from(format!("{}{}", crate::scanner::PREFIX, org.id)))
            .collect();
        let (verifier, proven) = match resolver {
            Some(resolver) if catalog.has_domains() => {
                let (verifier, proven) = Verifier::new(catalog.clone(), resolver, limits);
                (Some(verifier), Some(proven))
            }
            _ => (None, None),
        };
        Self {
            catalog,
            org_tags,
            verifier,
            proven,
        }
    }

    /// The verifier, for the AbuseIPDB reporter to wait on a pending verdict.
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        self.verifier.clone()
    }

    /// Adds the request's scanner tags; starts a reverse DNS lookup for an address not known
    /// yet (must run on a tokio runtime).
    pub fn on_request(&mut self, record: &mut RequestRecord) {
        let ip = record.client_ip;
        let verified = self.catalog.org_by_range(ip).or_else(|| {
            match self.verifier.as_ref()?.verdict_or_lookup(ip)? {
                Verdict::Scanner { org, .. } => Some(org),
                _ => None,
            }
        });
        let claimed = record
            .user_agent
            .as_deref()
            .and_then(|ua| self.catalog.org_by_user_agent(ua));
        record
            .tags
            .extend(tags_for(&self.org_tags, verified, claimed));
    }

    /// The next address reverse DNS proved, as the event that records it (waits; never
    /// returns when reverse DNS is off).
    pub async fn next_proven(&mut self) -> Event {
        loop {
            let Some(proven) = self.proven.as_mut() else {
                return std::future::pending().await;
            };
            let Some((client_ip, verdict)) = proven.recv().await else {
                self.proven = None;
                continue;
            };
            if let Verdict::Scanner { org, host } = verdict {
                return Event::ScannerHost(ScannerHost {
                    client_ip,
                    org: Arc::from(self.catalog.org(org).id.as_str()),
                    via: Via::ReverseDns.as_str(),
                    host_name: host,
                    timestamp: SystemTime::now(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::verify::Resolver;

    /// Every address's PTR is `scan.shadowserver.org`, which resolves to 192.0.2.10 only.
    struct OneHost;

    impl Resolver for OneHost {
        fn reverse(&self, _ip: IpAddr) -> std::io::Result<Option<String>> {
            Ok(Some("scan.shadowserver.org".into()))
        }
        fn forward(&self, _name: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(vec!["192.0.2.10".parse().unwrap()])
        }
    }

    fn record(ip: &str, ua: &str) -> RequestRecord {
        let mut r = RequestRecord::sample(ip.parse().unwrap());
        r.user_agent = Some(ua.into());
        r.tags.clear();
        r
    }

    fn tags(r: &RequestRecord) -> Vec<&str> {
        r.tags.iter().map(|t| t.as_ref()).collect()
    }

    #[tokio::test]
    async fn ranges_tag_at_once_reverse_dns_later_and_a_user_agent_only_claims() {
        let limits = Limits {
            concurrency: 2,
            cache_size: 100,
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(60),
        };
        let mut stage = ScannerStage::new(
            Arc::new(Catalog::builtin()),
            Some(Arc::new(OneHost)),
            limits,
        );
        // A published Censys range: verified now, with or without its User-Agent.
        let mut r = record(
            "162.142.125.9",
            "Mozilla/5.0 (compatible; CensysInspect/1.1)",
        );
        stage.on_request(&mut r);
        assert_eq!(tags(&r), ["scanner:censys", "scanner:verified"]);
        // Censys's User-Agent from anywhere else: a claim only.
        let mut r = record(
            "198.51.100.7",
            "Mozilla/5.0 (compatible; CensysInspect/1.1)",
        );
        stage.on_request(&mut r);
        assert_eq!(tags(&r), ["scanner:censys", "scanner:claimed"]);
        // Reverse DNS: nothing on the first request, the proof as an event, then tags.
        let mut r = record("192.0.2.10", "curl/8.5.0");
        stage.on_request(&mut r);
        assert!(r.tags.is_empty());
        let Event::ScannerHost(host) = stage.next_proven().await else {
            panic!("not a scanner host");
        };
        assert_eq!(
            (
                host.client_ip.to_string().as_str(),
                host.org.as_ref(),
                host.via
            ),
            ("192.0.2.10", "shadowserver", "rdns")
        );
        assert_eq!(host.host_name, "scan.shadowserver.org");
        let mut r = record("192.0.2.10", "curl/8.5.0");
        stage.on_request(&mut r);
        assert_eq!(tags(&r), ["scanner:shadowserver", "scanner:verified"]);
        // 198.51.100.7's PTR claims Shadowserver too, but the name does not point back.
        let verifier = stage.verifier().unwrap();
        assert_eq!(
            verifier.settled("198.51.100.7".parse().unwrap()).await,
            Some(Verdict::NotScanner)
        );
    }
}
