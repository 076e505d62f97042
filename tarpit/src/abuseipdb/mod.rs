//! Optional AbuseIPDB reporting, off the hot path: the pipeline offers each enriched request,
//! [`policy`] decides whether it may be reported, a bounded queue holds the reports, and a task
//! on the pipeline runtime sends them ([`api`]) with the API's rate limits honoured. Outcomes
//! come back as [`Event::AbuseReport`] events, so the sinks record them like everything else.
//! A slow, failing or hanging API never affects the tarpit.
//!
//! Enabled only when `ABUSEIPDB_API_KEY` is set (environment, or `.env` in the working
//! directory). The key is never logged or stored.

pub mod api;
pub mod policy;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};

use crate::config::AbuseIpDbConfig;
use crate::event::{AbuseReport, Event, RequestRecord};
use crate::secret::Secret;
use policy::{Ledger, Policy, next_utc_midnight};

/// The environment variable (or `.env` entry) holding the API key.
pub const KEY_VAR: &str = "ABUSEIPDB_API_KEY";

/// The API key (masked in `Debug`, see [`Secret`]).
#[derive(Debug, Clone)]
pub struct ApiKey(Secret);

impl ApiKey {
    /// The key from the environment, else from `.env` in the working directory.
    pub fn from_env() -> Option<Self> {
        Secret::from_env(KEY_VAR).map(Self)
    }
}

/// Everything the reporter needs, gathered at start (the history comes from SQLite).
#[derive(Debug)]
pub struct ReporterSetup {
    /// `[abuseipdb]`.
    pub config: AbuseIpDbConfig,
    /// The key.
    pub key: ApiKey,
    /// The filters, with the User-Agent expressions compiled.
    pub policy: Policy,
    /// Addresses reported within the interval, and when.
    pub history: Vec<(IpAddr, SystemTime)>,
    /// API calls already made today (UTC).
    pub calls_today: u32,
    /// Leave verified research scanners out (`[scanners]` on and `share = false`).
    pub leave_out_scanners: bool,
}

/// A report waiting to be sent.
#[derive(Debug)]
struct Job {
    ip: IpAddr,
    conn_id: u64,
    request_seq: u32,
    comment: String,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Job>,
    ledger: Ledger,
    paused_until: Option<SystemTime>,
}

/// The running reporter.
#[derive(Debug)]
pub struct Reporter {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    policy: Policy,
    queue_size: usize,
    /// Reports dropped because the queue was full (the oldest go first).
    dropped: u64,
    /// Requests tagged `scanner:verified` are never offered.
    leave_out_scanners: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Starts the sending task on the current (pipeline) runtime. With `scanners` (when
    /// verified scanners are left out), each report first waits for its address's reverse DNS
    /// verdict if a lookup is in flight, so a scanner's first request, recorded before its
    /// proof, is not reported either.
    pub fn start(
        setup: ReporterSetup,
        outcomes: mpsc::UnboundedSender<Event>,
        scanners: Option<Arc<crate::scanner::Verifier>>,
    ) -> Self {
        let config = setup.config;
        let now = SystemTime::now();
        let state = Arc::new(Mutex::new(State {
            queue: VecDeque::new(),
            ledger: Ledger::new(
                Duration::from_secs(config.report_interval_minutes * 60),
                config.daily_limit,
                setup.history,
                setup.calls_today,
                now,
            ),
            paused_until: None,
        }));
        let notify = Arc::new(Notify::new());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout_seconds))
            .user_agent(concat!("tarpit/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS settings builds");
        tracing::info!(
            dry_run = config.dry_run,
            daily_limit = config.daily_limit,
            interval_minutes = config.report_interval_minutes,
            "AbuseIPDB reporting on (key from {KEY_VAR})"
        );
        let sender = Sender {
            state: state.clone(),
            notify: notify.clone(),
            client,
            key: setup.key,
            outcomes,
            categories: config
                .categories
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(","),
            config: config.clone(),
            scanners: scanners.filter(|_| setup.leave_out_scanners),
        };
        Self {
            state,
            notify,
            policy: setup.policy,
            queue_size: config.queue_size,
            dropped: 0,
            leave_out_scanners: setup.leave_out_scanners,
            task: tokio::spawn(sender.run()),
        }
    }

    /// Considers a request for a report: queued when the policy and the interval allow.
    pub fn offer(&mut self, record: &RequestRecord) {
        if self.leave_out_scanners && crate::scanner::is_verified(&record.tags) {
            tracing::trace!(ip = %record.client_ip, "not reported: a verified research scanner");
            return;
        }
        if let Some(reason) = self.policy.skip_reason(record) {
            tracing::trace!(ip = %record.client_ip, reason, "not reported");
            return;
        }
        let ip = record.client_ip.to_canonical();
        let mut state = self.state.lock().expect("reporter state");
        if !state.ledger.claim(ip, SystemTime::now()) {
            return; // reported within the interval
        }
        if state.queue.len() >= self.queue_size
            && let Some(oldest) = state.queue.pop_front()
        {
            state.ledger.release(oldest.ip);
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    "AbuseIPDB report queue full: dropping the oldest reports"
                );
            }
        }
        state.queue.push_back(Job {
            ip,
            conn_id: record.conn_id,
            request_seq: record.request_seq,
            comment: self.policy.comment(record),
        });
        drop(state);
        self.notify.notify_one();
    }

    /// Stops sending; reports still queued are not sent (they were never promised).
    pub fn stop(self) {
        self.task.abort();
        let queued = self.state.lock().map(|s| s.queue.len()).unwrap_or(0);
        if queued > 0 || self.dropped > 0 {
            tracing::info!(
                queued,
                dropped = self.dropped,
                "AbuseIPDB reporter stopped with reports unsent"
            );
        }
    }
}

/// The sending task's side.
struct Sender {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    client: reqwest::Client,
    key: ApiKey,
    outcomes: mpsc::UnboundedSender<Event>,
    categories: String,
    config: AbuseIpDbConfig,
    /// Verified research scanners are left out: their verdicts.
    scanners: Option<Arc<crate::scanner::Verifier>>,
}

/// How long to wait before retry `attempt` (1, 2, ...) after a 5xx or a timeout.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

impl Sender {
    async fn next_job(&self) -> Job {
        loop {
            let notified = self.notify.notified();
            if let Some(job) = self.state.lock().expect("reporter state").queue.pop_front() {
                return job;
            }
            notified.await;
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("reporter state"))
    }

    async fn run(self) {
        let mut daily_warned_for = None;
        loop {
            let job = self.next_job().await;
            if let Some(until) = self.with_state(|s| s.paused_until.take())
                && let Ok(wait) = until.duration_since(SystemTime::now())
            {
                tokio::time::sleep(wait).await;
            }
            if let Some(scanners) = &self.scanners
                && let Some(crate::scanner::Verdict::Scanner { .. }) =
                    scanners.settled(job.ip).await
            {
                tracing::debug!(ip = %job.ip, "not reported: a verified research scanner");
                continue; // the address stays claimed: nothing to report for the interval
            }
            let now = SystemTime::now();
            if !self.with_state(|s| s.ledger.budget_left(now)) {
                self.with_state(|s| s.ledger.release(job.ip));
                let day = policy::utc_day(now);
                if daily_warned_for != Some(day) {
                    daily_warned_for = Some(day);
                    tracing::warn!(
                        daily_limit = self.config.daily_limit,
                        "AbuseIPDB daily limit reached: no more reports until 00:00 UTC"
                    );
                }
                continue;
            }
            if self.config.dry_run {
                tracing::info!(ip = %job.ip, comment = %job.comment, "AbuseIPDB dry run: would report");
                self.outcome(&job, "dry_run", None, None, None);
                continue;
            }
            self.send(job).await;
        }
    }

    /// Sends one job, retrying 5xx and timeouts with capped backoff.
    async fn send(&self, job: Job) {
        let ip = job.ip.to_string();
        let mut attempt = 0;
        loop {
            self.with_state(|s| s.ledger.count_call(SystemTime::now()));
            let answer = api::report(
                &self.client,
                &self.config.api_url,
                self.key.0.expose(),
                &ip,
                &self.categories,
                &job.comment,
            )
            .await;
            match answer {
                api::Answer::Reported {
                    status,
                    confidence_score,
                } => {
                    tracing::info!(ip, confidence_score, "reported to AbuseIPDB");
                    self.outcome(&job, "reported", Some(status), confidence_score, None);
                    return;
                }
                api::Answer::RateLimited { retry_after, daily } if daily => {
                    let now = SystemTime::now();
                    let until = next_utc_midnight(now).max(now + retry_after.unwrap_or_default());
                    self.with_state(|s| {
                        s.ledger.exhaust_today(now);
                        s.ledger.release(job.ip);
                        s.paused_until = Some(until);
                    });
                    tracing::warn!("AbuseIPDB daily quota exhausted (HTTP 429): reports paused");
                    let error = "daily quota exhausted".to_owned();
                    self.outcome(&job, "failed", Some(429), None, Some(error));
                    return;
                }
                api::Answer::RateLimited { retry_after, .. } => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(60));
                    tracing::warn!(
                        wait_s = wait.as_secs(),
                        "AbuseIPDB rate limit (HTTP 429): pausing"
                    );
                    self.with_state(|s| {
                        s.paused_until = Some(SystemTime::now() + wait);
                        s.queue.push_front(job);
                    });
                    return;
                }
                api::Answer::Retryable { status, error } => {
                    attempt += 1;
                    if attempt > self.config.max_retries {
                        tracing::warn!(ip, error, "AbuseIPDB report failed; giving up");
                        self.with_state(|s| s.ledger.release(job.ip));
                        self.outcome(&job, "failed", status, None, Some(error));
                        return;
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                api::Answer::Refused { status, error } => {
                    if status == 401 || status == 403 {
                        tracing::error!(status, "AbuseIPDB refused the API key: {error}");
                    } else {
                        tracing::warn!(ip, status, "AbuseIPDB refused the report: {error}");
                    }
                    self.outcome(&job, "failed", Some(status), None, Some(error));
                    return;
                }
            }
        }
    }

    fn outcome(
        &self,
        job: &Job,
        outcome: &'static str,
        http_status: Option<u16>,
        confidence_score: Option<u8>,
        error: Option<String>,
    ) {
        let _ = self.outcomes.send(Event::AbuseReport(AbuseReport {
            conn_id: job.conn_id,
            request_seq: job.request_seq,
            ip: job.ip,
            timestamp: SystemTime::now(),
            outcome,
            http_status,
            confidence_score,
            error,
            categories: self.categories.clone(),
            comment: job.comment.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey(crate::secret::Secret::for_test("supersecretkey"));
        assert!(!format!("{key:?}").contains("supersecretkey"));
    }

    /// Every address's PTR is `scan.shadowserver.org`, which resolves to 81.2.69.142 only,
    /// after a pause: the first report waits for the verdict.
    struct SlowShadowserver;

    impl crate::scanner::verify::Resolver for SlowShadowserver {
        fn reverse(&self, _ip: IpAddr) -> std::io::Result<Option<String>> {
            std::thread::sleep(Duration::from_millis(300));
            Ok(Some("scan.shadowserver.org".into()))
        }
        fn forward(&self, _name: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(vec!["81.2.69.142".parse().unwrap()])
        }
    }

    #[tokio::test]
    async fn a_scanner_proven_while_its_report_waits_is_not_reported() {
        use crate::scanner::{Catalog, Verifier, verify::Limits};
        let limits = Limits {
            concurrency: 4,
            cache_size: 16,
            timeout: Duration::from_secs(10),
            ttl: Duration::from_secs(60),
        };
        let (verifier, _proven) = Verifier::new(
            Arc::new(Catalog::builtin()),
            Arc::new(SlowShadowserver),
            limits,
        );
        let setup = |leave_out_scanners| ReporterSetup {
            config: AbuseIpDbConfig {
                dry_run: true,
                ..Default::default()
            },
            key: ApiKey(crate::secret::Secret::for_test("k")),
            policy: Policy {
                whitelist_cidrs: vec![],
                whitelist_asns: vec![],
                whitelist_user_agents: vec![],
                comment_prefix: String::new(),
                sensor_addresses: vec![],
            },
            history: vec![],
            calls_today: 0,
            leave_out_scanners,
        };
        for (leave_out, expected) in [
            (true, vec!["89.160.20.112"]),
            (false, vec!["81.2.69.142", "89.160.20.112"]),
        ] {
            let (outcomes, mut received) = mpsc::unbounded_channel();
            let mut reporter = Reporter::start(setup(leave_out), outcomes, Some(verifier.clone()));
            // The scanner's first request: recorded before its lookup ends, so not tagged.
            let scanner: IpAddr = "81.2.69.142".parse().unwrap();
            let mut first = RequestRecord::sample(scanner);
            first.tags.clear();
            verifier.verdict_or_lookup(scanner);
            reporter.offer(&first);
            reporter.offer(&RequestRecord::sample("89.160.20.112".parse().unwrap()));
            let mut reported = Vec::new();
            while reported.len() < expected.len() {
                let Some(Event::AbuseReport(report)) = received.recv().await else {
                    panic!("no outcome");
                };
                assert_eq!(report.outcome, "dry_run");
                reported.push(report.ip.to_string());
            }
            reported.sort();
            assert_eq!(reported, expected, "leave out: {leave_out}");
            reporter.stop();
        }
    }
}
