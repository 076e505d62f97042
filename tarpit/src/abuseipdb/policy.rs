//! Who may be reported, how often, and what the report says. Pure code with the clock passed
//! in, so every rule is unit-tested without a network or a wait.
//!
//! The tool this project replaces warned about false positives: a search engine's crawler or a
//! research scanner hitting a sensor is not an attack, shared and cloud addresses change
//! hands, and a wrong report hurts an innocent party and the reporter's standing. Hence:
//! never a private/reserved address, never a whitelisted network, ASN or User-Agent, at most
//! one report per address per interval, and a daily budget.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use regex::Regex;

use crate::event::RequestRecord;
use crate::net_class::is_global;

/// The API's limit on a report's comment.
pub const COMMENT_LIMIT: usize = 1024;

/// The filters, from `[abuseipdb]`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Networks never reported.
    pub whitelist_cidrs: Vec<IpNet>,
    /// Autonomous systems never reported (needs the GeoIP ASN database).
    pub whitelist_asns: Vec<u32>,
    /// User-Agents never reported (regular expressions, matched anywhere).
    pub whitelist_user_agents: Vec<Regex>,
    /// Text that opens every comment.
    pub comment_prefix: String,
    /// The sensor's own addresses beyond those each request shows (cloud or NAT addresses).
    pub sensor_addresses: Vec<IpNet>,
}

impl Policy {
    /// Why this request must not be reported, or `None` when it may be.
    pub fn skip_reason(&self, record: &RequestRecord) -> Option<&'static str> {
        let ip = record.client_ip.to_canonical();
        if !is_global(ip) {
            return Some("not a public address");
        }
        if self.whitelist_cidrs.iter().any(|net| net.contains(&ip)) {
            return Some("whitelisted network");
        }
        if record
            .geo
            .asn_number
            .is_some_and(|asn| self.whitelist_asns.contains(&asn))
        {
            return Some("whitelisted ASN");
        }
        if let Some(ua) = &record.user_agent
            && self.whitelist_user_agents.iter().any(|re| re.is_match(ua))
        {
            return Some("whitelisted User-Agent");
        }
        None
    }

    /// The report's comment: what the scanner did, never secrets (no query string, no
    /// headers but the User-Agent) and never the sensor's own addresses (scanners put the
    /// address they probe in paths and User-Agents: the one the connection arrived on, the
    /// proxy in front and `sensor_addresses` become `[sensor]`, in any spelling
    /// [`crate::address_text`] recognises), without control characters, within the API's
    /// 1024 bytes.
    pub fn comment(&self, record: &RequestRecord) -> String {
        let what = match (&record.http_method, &record.http_path) {
            (Some(method), Some(path)) => format!("{method} {path}"),
            _ => format!(
                "non-HTTP input ({})",
                record.error_message.as_deref().unwrap_or("unknown")
            ),
        };
        let mut text = format!(
            "{} {what} on port {}",
            self.comment_prefix, record.target_port
        );
        if let Some(ua) = &record.user_agent {
            text.push_str(", User-Agent: ");
            text.push_str(ua);
        }
        let client = record.client_ip.to_canonical();
        let peer = record.peer_ip.to_canonical();
        let own = |address: IpAddr| {
            address == record.local_ip.to_canonical()
                || (peer != client && address == peer)
                || self.sensor_addresses.iter().any(|n| n.contains(&address))
        };
        clean_comment(&crate::address_text::mask_own(&text, &own))
    }
}

/// Control characters become spaces, and the text is cut on a character boundary so that it
/// fits [`COMMENT_LIMIT`] bytes.
pub fn clean_comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(COMMENT_LIMIT));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > COMMENT_LIMIT {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// Addresses the ledger remembers at most. A flood of more distinct addresses than this within
/// one interval (easy in dry run, where no budget limits claims) is refused new claims until
/// the oldest expire, rather than grow without bound.
pub const LEDGER_CAPACITY: usize = 100_000;

/// What has been reported: per-address times (for the interval) and today's API calls (for
/// the daily budget). Loaded from SQLite at start, so both survive a restart.
///
/// The addresses are kept in claim order (an LRU list keyed by address), so expired claims are
/// dropped from the old end, and a claim costs O(1) whatever the number remembered.
#[derive(Debug)]
pub struct Ledger {
    interval: Duration,
    daily_limit: u32,
    last_report: lru::LruCache<IpAddr, SystemTime>,
    day: u64,
    calls_today: u32,
}

/// The UTC day number of a time.
pub fn utc_day(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400
}

/// The start of the next UTC day.
pub fn next_utc_midnight(time: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs((utc_day(time) + 1) * 86_400)
}

impl Ledger {
    /// A ledger with the history read from the database.
    pub fn new(
        interval: Duration,
        daily_limit: u32,
        reported: impl IntoIterator<Item = (IpAddr, SystemTime)>,
        calls_today: u32,
        now: SystemTime,
    ) -> Self {
        let mut history: Vec<(IpAddr, SystemTime)> = reported.into_iter().collect();
        history.sort_by_key(|(_, at)| *at);
        let mut last_report = lru::LruCache::unbounded();
        for (ip, at) in history.into_iter().rev().take(LEDGER_CAPACITY).rev() {
            last_report.put(ip, at);
        }
        Self {
            interval,
            daily_limit,
            last_report,
            day: utc_day(now),
            calls_today,
        }
    }

    /// Claims `ip` for a report now, unless it was reported (or claimed) within the interval,
    /// or the ledger is full of claims still within it.
    pub fn claim(&mut self, ip: IpAddr, now: SystemTime) -> bool {
        let live = |at: &SystemTime| now.duration_since(*at).unwrap_or_default() < self.interval;
        if self.last_report.peek(&ip).is_some_and(live) {
            return false;
        }
        // Forget expired claims from the old end: each is removed once, so O(1) amortised.
        while let Some((_, at)) = self.last_report.peek_lru() {
            if live(at) {
                break;
            }
            self.last_report.pop_lru();
        }
        if self.last_report.len() >= LEDGER_CAPACITY && !self.last_report.contains(&ip) {
            return false;
        }
        self.last_report.put(ip, now);
        true
    }

    /// Addresses remembered now.
    pub fn remembered(&self) -> usize {
        self.last_report.len()
    }

    /// Gives a claim back after a report failed, so a later request may try again.
    pub fn release(&mut self, ip: IpAddr) {
        self.last_report.pop(&ip);
    }

    /// Whether today's budget still allows an API call.
    pub fn budget_left(&mut self, now: SystemTime) -> bool {
        self.roll(now);
        self.calls_today < self.daily_limit
    }

    /// Counts one API call made today.
    pub fn count_call(&mut self, now: SystemTime) {
        self.roll(now);
        self.calls_today += 1;
    }

    /// Marks today's budget as spent (the API said the daily quota is exhausted).
    pub fn exhaust_today(&mut self, now: SystemTime) {
        self.roll(now);
        self.calls_today = self.calls_today.max(self.daily_limit);
    }

    fn roll(&mut self, now: SystemTime) {
        let today = utc_day(now);
        if today != self.day {
            self.day = today;
            self.calls_today = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ip: &str, ua: Option<&str>, asn: Option<u32>) -> RequestRecord {
        let mut record = RequestRecord::sample(ip.parse().unwrap());
        record.user_agent = ua.map(str::to_owned);
        record.geo.asn_number = asn;
        record
    }

    fn policy() -> Policy {
        Policy {
            whitelist_cidrs: vec!["66.249.64.0/19".parse().unwrap()],
            whitelist_asns: vec![15169],
            whitelist_user_agents: vec![Regex::new("(?i)googlebot").unwrap()],
            comment_prefix: "Tarpit:".into(),
            sensor_addresses: vec!["198.51.100.0/24".parse().unwrap()],
        }
    }

    #[test]
    fn comments_never_name_the_sensor() {
        let mut r = record("81.2.69.142", None, None);
        r.local_ip = "203.0.113.10".parse().unwrap();
        r.peer_ip = "10.0.0.5".parse().unwrap();
        r.http_path = Some("/proxy/http://203.0.113.10/x_10.0.0.5/cb/192.0.2.55".into());
        r.user_agent = Some("scan (+https://198.51.100.77) 203.000.113.010 ::ffff:10.0.0.5".into());
        let c = policy().comment(&r);
        for own in [
            "203.0.113.10",
            "198.51.100.77",
            "10.0.0.5",
            "203.000.113.010",
        ] {
            assert!(!c.contains(own), "{own} in {c}");
        }
        assert_eq!(c.matches("[sensor]").count(), 5, "{c}");
        // Other addresses (a callback server, say) are the scanner's, and stay.
        assert!(c.contains("192.0.2.55"), "{c}");
        // Not proxied: the peer is the client, who may be named.
        let mut direct = record("81.2.69.142", Some("from 81.2.69.142"), None);
        direct.local_ip = "203.0.113.10".parse().unwrap();
        assert!(policy().comment(&direct).contains("from 81.2.69.142"));
    }

    #[test]
    fn the_ledger_stays_bounded_and_forgets_expired_claims() {
        let interval = Duration::from_secs(900);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut ledger = Ledger::new(interval, 10, [], 0, t0);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let total = LEDGER_CAPACITY as u32 + 5_000;
        let claimed = (0..total).filter(|&i| ledger.claim(ip(i), t0)).count();
        assert_eq!(
            claimed, LEDGER_CAPACITY,
            "claims beyond the capacity are refused"
        );
        assert_eq!(ledger.remembered(), LEDGER_CAPACITY);
        // Still within the interval: the same address is not claimed twice.
        assert!(!ledger.claim(ip(1), t0 + Duration::from_secs(60)));
        // After the interval every old claim expires and new ones are taken again.
        let later = t0 + interval;
        assert!(ledger.claim(ip(total + 1), later));
        assert_eq!(ledger.remembered(), 1);
        assert!(ledger.claim(ip(1), later));
    }

    #[test]
    fn only_public_unwhitelisted_clients_are_reported() {
        let p = policy();
        assert_eq!(
            p.skip_reason(&record("81.2.69.142", Some("zgrab"), Some(20712))),
            None
        );
        assert_eq!(
            p.skip_reason(&record("10.0.0.1", None, None)),
            Some("not a public address")
        );
        assert_eq!(
            p.skip_reason(&record("::1", None, None)),
            Some("not a public address")
        );
        assert_eq!(
            p.skip_reason(&record("66.249.66.1", None, None)),
            Some("whitelisted network")
        );
        assert_eq!(
            p.skip_reason(&record("8.8.8.8", None, Some(15169))),
            Some("whitelisted ASN")
        );
        assert_eq!(
            p.skip_reason(&record(
                "81.2.69.142",
                Some("Mozilla/5.0 (compatible; Googlebot/2.1)"),
                None
            )),
            Some("whitelisted User-Agent")
        );
    }

    #[test]
    fn comment_has_the_facts_and_no_secrets() {
        let c = policy().comment(&record("81.2.69.142", Some("zgrab/0.x"), None));
        assert_eq!(
            c,
            "Tarpit: GET /wp-login.php on port 80, User-Agent: zgrab/0.x"
        );
        assert!(!c.contains("secret") && !c.contains("pwd"));
        let mut garbage = record("81.2.69.142", None, None);
        garbage.http_method = None;
        garbage.http_path = None;
        garbage.error_message = Some("tls_client_hello".into());
        assert_eq!(
            policy().comment(&garbage),
            "Tarpit: non-HTTP input (tls_client_hello) on port 80"
        );
    }

    #[test]
    fn comment_is_cleaned_and_bounded() {
        assert_eq!(clean_comment("a\r\nb\u{7}c\0"), "a  b c");
        let long = "é".repeat(2000);
        let cleaned = clean_comment(&long);
        assert!(cleaned.len() <= COMMENT_LIMIT);
        assert_eq!(cleaned.len(), COMMENT_LIMIT); // 512 two-byte characters
        assert!(cleaned.chars().all(|c| c == 'é'));
    }

    #[test]
    fn one_report_per_address_per_interval_survives_restart() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ip: IpAddr = "81.2.69.142".parse().unwrap();
        let other: IpAddr = "81.2.69.143".parse().unwrap();
        let interval = Duration::from_secs(40 * 60);
        // History says `ip` was reported ten minutes ago.
        let mut ledger = Ledger::new(interval, 10, [(ip, t0)], 0, t0);
        assert!(!ledger.claim(ip, t0 + Duration::from_secs(600)));
        assert!(ledger.claim(other, t0 + Duration::from_secs(600)));
        assert!(!ledger.claim(other, t0 + Duration::from_secs(601)));
        assert!(ledger.claim(ip, t0 + interval));
        // A failed report gives its claim back.
        ledger.release(other);
        assert!(ledger.claim(other, t0 + Duration::from_secs(602)));
    }

    #[test]
    fn daily_budget_counts_calls_and_resets_at_utc_midnight() {
        let t0 = UNIX_EPOCH + Duration::from_secs(86_400 * 100 + 3600);
        let mut ledger = Ledger::new(Duration::from_secs(900), 2, [], 1, t0);
        assert!(ledger.budget_left(t0));
        ledger.count_call(t0);
        assert!(!ledger.budget_left(t0));
        let tomorrow = next_utc_midnight(t0);
        assert_eq!(tomorrow, UNIX_EPOCH + Duration::from_secs(86_400 * 101));
        assert!(ledger.budget_left(tomorrow));
        ledger.exhaust_today(tomorrow);
        assert!(!ledger.budget_left(tomorrow + Duration::from_secs(10)));
    }
}
