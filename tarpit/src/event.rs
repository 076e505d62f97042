//! Events: what the workers tell the pipeline about each connection.
//!
//! Data flows one way: socket → request → [`Event`] → sinks (JSON lines, SQLite, and the later
//! metrics and reporting sinks). Each event is self-contained, so a sink never needs to ask the
//! server anything, and field names equal the SQLite column names so the JSON log and the
//! database can be joined on sight.
//!
//! A connection produces `connection_opened`, then per request a `request` (written "before", when
//! the head is parsed or rejected) and a `response_end` ("after"), then `connection_closed`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::fingerprint::{Fingerprint, SynFields};

/// One thing that happened to one connection.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A connection was accepted (or accepted and refused by a limit, see `ConnectionClosed`).
    ConnectionOpened(ConnectionOpened),
    /// A request head was parsed, or input was rejected as not a request: the "before" row.
    Request(Box<RequestRecord>),
    /// The response to a request ended: the "after" update of that row.
    ResponseEnd(ResponseEnd),
    /// The connection is gone.
    ConnectionClosed(ConnectionClosed),
    /// An AbuseIPDB report was made (or dry-run, or failed) for a request's client.
    AbuseReport(AbuseReport),
    /// A client address was proven to be a research scanner's after its requests were
    /// recorded (reverse DNS, confirmed forward): the `scanner_hosts` row, and the
    /// `scanner:<org>` tags of its rows recorded before.
    ScannerHost(ScannerHost),
    /// Give-up model families that changed (adaptive mode), for the `giveup_families` table
    /// and the metrics; not a connection's record, so the JSON log leaves it out.
    #[serde(skip)]
    GiveUpFamilies(Arc<crate::adaptive::model::FamilyBatch>),
}

/// The outcome of one AbuseIPDB report; the `abuseipdb_reports` table's columns.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    /// The connection of the request that was reported.
    pub conn_id: u64,
    /// The request on that connection.
    pub request_seq: u32,
    /// The reported address.
    pub ip: IpAddr,
    /// When the outcome was known.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// `reported`, `failed` or `dry_run`.
    pub outcome: &'static str,
    /// The API's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// The API's abuse confidence score for the address.
    pub confidence_score: Option<u8>,
    /// Why it failed.
    pub error: Option<String>,
    /// The categories sent.
    pub categories: String,
    /// The comment sent.
    pub comment: String,
}

/// An address proven to be a research scanner's; the `scanner_hosts` table's columns.
#[derive(Debug, Clone, Serialize)]
pub struct ScannerHost {
    /// The address.
    pub client_ip: IpAddr,
    /// The organisation (`scanner:<org>`).
    pub org: Arc<str>,
    /// How it was proven (`rdns`).
    pub via: &'static str,
    /// The confirmed host name.
    pub host_name: String,
    /// When it was proven.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
}

impl Event {
    /// The connection the event belongs to.
    pub fn conn_id(&self) -> u64 {
        match self {
            Event::ConnectionOpened(e) => e.conn_id,
            Event::Request(e) => e.conn_id,
            Event::ResponseEnd(e) => e.conn_id,
            Event::ConnectionClosed(e) => e.conn_id,
            Event::AbuseReport(e) => e.conn_id,
            Event::ScannerHost(_) | Event::GiveUpFamilies(_) => 0,
        }
    }

    /// What the event holds in memory while queued: itself plus the heap bytes of its
    /// strings and buffers (capacities, as the allocator sees them). The queues are bounded
    /// by this (the byte budgets of the `queue` module).
    pub fn queued_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        std::mem::size_of::<Event>()
            + match self {
                Event::Request(r) => {
                    std::mem::size_of::<RequestRecord>()
                        + text(&r.http_method)
                        + text(&r.http_path)
                        + text(&r.http_query)
                        + text(&r.user_agent)
                        + text(&r.body_sha256)
                        + text(&r.error_message)
                        + text(&r.raw_preview)
                        + r.body_preview.as_ref().map_or(0, Vec::capacity)
                        + r.headers_json.capacity() * std::mem::size_of::<(String, String)>()
                        + r.headers_json
                            .iter()
                            .map(|(k, v)| k.capacity() + v.capacity())
                            .sum::<usize>()
                        + r.geo.heap_bytes()
                        + r.fingerprint
                            .as_ref()
                            .map_or(0, |f| std::mem::size_of::<Fingerprint>() + f.heap_bytes())
                        + r.header_order.as_ref().map_or(0, String::capacity)
                        + r.client_hello.as_ref().map_or(0, Vec::capacity)
                        + r.tags.capacity() * std::mem::size_of::<Arc<str>>()
                        + r.canary.as_ref().map_or(0, |c| {
                            std::mem::size_of::<CanaryRecord>()
                                + c.issued.capacity() * std::mem::size_of::<IssuedToken>()
                                + c.sightings.capacity() * std::mem::size_of::<Sighting>()
                        })
                }
                Event::AbuseReport(r) => {
                    std::mem::size_of::<AbuseReport>()
                        + text(&r.error)
                        + r.categories.capacity()
                        + r.comment.capacity()
                }
                Event::GiveUpFamilies(batch) => batch.rows.len() * 512,
                _ => 0,
            }
    }
}

/// A new TCP connection, as the socket saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionOpened {
    /// Unique across restarts (continues from the database's highest id).
    pub conn_id: u64,
    /// When accept returned.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// The TCP peer (a proxy, when there is one in front).
    pub peer_ip: IpAddr,
    /// The TCP peer's port.
    pub peer_port: u16,
    /// The address the connection arrived on.
    pub local_ip: IpAddr,
    /// The port the connection arrived on.
    pub local_port: u16,
    /// Which worker thread holds it.
    pub worker: usize,
}

/// One request (or one rejected attempt at one), with everything known when its head ended.
/// Field names are the `events` table's columns.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// The connection it arrived on.
    pub conn_id: u64,
    /// 1 for the first request on the connection, 2 for the next keep-alive request, ...
    pub request_seq: u32,
    /// When the head was complete (or rejected).
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// The client, after trusted-proxy resolution.
    pub client_ip: IpAddr,
    /// The client's port, when known.
    pub client_port: Option<u16>,
    /// `socket`, `x-real-ip` or `x-forwarded-for`.
    pub client_ip_source: &'static str,
    /// The TCP peer.
    pub peer_ip: IpAddr,
    /// The TCP peer's port.
    pub peer_port: u16,
    /// Local address of the accepted socket.
    pub local_ip: IpAddr,
    /// Local port of the accepted socket.
    pub local_port: u16,
    /// The port the client meant to reach (see `target_port_source`).
    pub target_port: u16,
    /// Which attribution source gave `target_port` (`ebpf`, `original_dst`, `header`,
    /// `local_port`).
    pub target_port_source: &'static str,
    /// The eBPF hook's answer: the original port, or the reached port when untranslated.
    pub target_port_ebpf: Option<u16>,
    /// `translated` or `untranslated` when the hook is live, else null.
    pub ebpf_lookup: Option<&'static str>,
    /// SO_ORIGINAL_DST's port.
    pub target_port_original_dst: Option<u16>,
    /// X-Tarpit-Target-Port from a trusted proxy.
    pub target_port_header: Option<u16>,
    /// Method, when a request line was parsed.
    pub http_method: Option<String>,
    /// Path without the query.
    pub http_path: Option<String>,
    /// Query string without the `?`.
    pub http_query: Option<String>,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub http_version: Option<&'static str>,
    /// The User-Agent header.
    pub user_agent: Option<String>,
    /// All headers, as a JSON object (repeated names joined with ", ").
    #[serde(serialize_with = "header_object")]
    pub headers_json: Vec<(String, String)>,
    /// Size of the request head in bytes (or of the bytes received, when rejected).
    pub head_size: usize,
    /// Up to the configured number of body bytes (a BLOB in SQLite, escaped text in JSON).
    #[serde(serialize_with = "escaped_bytes")]
    pub body_preview: Option<Vec<u8>>,
    /// Hex SHA-256 of the previewed body bytes.
    pub body_sha256: Option<String>,
    /// Declared body length (Content-Length), when there was one.
    pub body_length: Option<u64>,
    /// The status line the client is given; `None` when nothing is sent.
    pub response_status: Option<u16>,
    /// `drip` (the replaced tool's response) or `adaptive` (a persona page, completed early
    /// when the client's family is known to give up).
    pub response_mode: &'static str,
    /// The give-up time (seconds) the adaptive response was planned with, if any.
    pub giveup_limit_s: Option<f64>,
    /// Where that figure came from: `address`, `user_agent`, `header_order`, `tool` (learned)
    /// or `prior`.
    pub giveup_basis: Option<&'static str>,
    /// Seconds after the request at which the response was to be completed early.
    pub planned_end_s: Option<f64>,
    /// The request's client families (adaptive mode), for the give-up model; not stored.
    #[serde(skip)]
    pub families: Option<crate::adaptive::FamilyKeys>,
    /// Why this is not a normal request (`tls_client_hello`, `head_timeout`, ...), else `None`.
    pub error_message: Option<String>,
    /// The first bytes received, escaped, for rejected input.
    pub raw_preview: Option<String>,
    /// GeoIP/ASN of `client_ip`, filled by the pipeline (the seed columns `country_iso_code`
    /// ... `asn_organization`, flattened into the JSON line).
    #[serde(flatten)]
    pub geo: GeoInfo,
    /// SYN, TLS and header-order fingerprints, derived on the pipeline from what the worker
    /// captured (`syn`, `client_hello`, `header_order`). Boxed and absent until then, so a
    /// request costs the workers' queues no more than what they captured.
    #[serde(flatten)]
    pub fingerprint: Option<Box<Fingerprint>>,
    /// The header names in order, as the worker saw them; moved into `fingerprint`.
    #[serde(skip)]
    pub header_order: Option<String>,
    /// The client's SYN as the worker parsed it; `None` behind a proxy (it would be the
    /// proxy's). Turned into `fingerprint` on the pipeline.
    #[serde(skip)]
    pub syn: Option<SynFields>,
    /// The ClientHello record of TLS input, for the pipeline to fingerprint; freed there.
    #[serde(skip)]
    pub client_hello: Option<Vec<u8>>,
    /// Classification tags (`attack:sqli`, `tool:curl`, ...), filled by the pipeline; the
    /// `request_tags` table's rows.
    pub tags: Vec<Arc<str>>,
    /// The canary token slots of the persona page served (canary tokens on): the tokens this
    /// response issues to the client, which the pipeline records.
    #[serde(skip)]
    pub canary_slots: &'static [crate::canary::Slot],
    /// Canary tokens issued by this response and found in this request, by the pipeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Box<CanaryRecord>>,
}

/// What the pipeline found of canary tokens in one request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CanaryRecord {
    /// The tokens the response issued (the client is the request's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issued: Vec<IssuedToken>,
    /// Issued tokens the request carried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sightings: Vec<Sighting>,
}

/// One token a response issued.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IssuedToken {
    /// What it imitates (`password`, `aws_key_id`, ...).
    pub kind: &'static str,
    /// Which token of the kind in the page.
    pub ordinal: u8,
}

/// One issued token found in a request: whom it was issued to, by which sensor, when.
#[derive(Debug, Clone, Serialize)]
pub struct Sighting {
    /// What it imitates.
    pub kind: &'static str,
    /// Which token of the kind in its page.
    pub ordinal: u8,
    /// Where in the request (`path`, `query`, `cookie`, `authorization`, `header`, `body`).
    pub location: &'static str,
    /// The client it was issued to.
    pub issued_to: IpAddr,
    /// The sensor that issued it.
    pub issued_by: Arc<str>,
    /// When it was first issued.
    #[serde(serialize_with = "rfc3339")]
    pub first_issued: SystemTime,
    /// The request path that first issued it.
    pub issued_path: Arc<str>,
}

/// The end of one response: completes the row that the `request` event created.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseEnd {
    /// The connection.
    pub conn_id: u64,
    /// Which request on it.
    pub request_seq: u32,
    /// When the response ended.
    #[serde(serialize_with = "rfc3339")]
    pub closed_at: SystemTime,
    /// Payload bytes dripped (framing not counted), as the replaced tool counted them.
    pub bytes_sent: u64,
    /// Seconds from the request to the end of its response: time the client was held.
    pub duration_s: f64,
    /// `complete`, or what cut the response short (`client_reset`, `shutdown`, ...).
    pub end_reason: &'static str,
    /// Seconds from the request to the client's FIN, when one arrived during the response:
    /// when a client that gave up really left (the end is noticed at the next write).
    pub client_fin_s: Option<f64>,
}

/// The end of a connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionClosed {
    /// The connection.
    pub conn_id: u64,
    /// When it closed.
    #[serde(serialize_with = "rfc3339")]
    pub closed_at: SystemTime,
    /// Requests (and rejected attempts) it carried.
    pub requests: u32,
    /// Payload bytes dripped over all its responses.
    pub bytes_sent: u64,
    /// Seconds from accept to close.
    pub duration_s: f64,
    /// Why it ended (`keepalive_timeout`, `client_closed`, `refused_max_connections`, ...).
    pub end_reason: &'static str,
}

/// What GeoIP knows about one address: the seed columns it fills. Defined here, with the
/// record that carries it; `geoip` fills it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code.
    pub country_iso_code: Option<String>,
    /// English country name.
    pub country_name: Option<String>,
    /// English city name.
    pub city_name: Option<String>,
    /// Approximate latitude.
    pub latitude: Option<f64>,
    /// Approximate longitude.
    pub longitude: Option<f64>,
    /// Autonomous system number.
    pub asn_number: Option<u32>,
    /// Autonomous system organisation.
    pub asn_organization: Option<String>,
}

impl GeoInfo {
    /// Heap bytes of its strings.
    pub fn heap_bytes(&self) -> usize {
        [
            &self.country_iso_code,
            &self.country_name,
            &self.city_name,
            &self.asn_organization,
        ]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::capacity))
        .sum()
    }
}

/// RFC 3339 UTC with milliseconds, the timestamp format of every forensic record.
pub fn format_timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn header_object<S: Serializer>(
    headers: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(headers.iter().map(|(k, v)| (k, v)))
}

fn escaped_bytes<S: Serializer>(bytes: &Option<Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => serializer.collect_str(&bytes.escape_ascii()),
        None => serializer.serialize_none(),
    }
}

/// `headers_json` as the text stored in SQLite: the same object as in the JSON log, in the
/// order the header lines arrived (header order is part of a client's fingerprint, and the
/// replaced tool kept it too).
pub fn headers_to_json(headers: &[(String, String)]) -> String {
    struct InOrder<'a>(&'a [(String, String)]);
    impl Serialize for InOrder<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            header_object(self.0, serializer)
        }
    }
    serde_json::to_string(&InOrder(headers)).expect("strings always serialise")
}

impl RequestRecord {
    /// A GET of `/wp-login.php` from `client_ip`, for tests and benchmarks of what reads
    /// records (`tarpit/examples/sink_bench.rs` starts from it).
    #[doc(hidden)]
    pub fn sample(client_ip: IpAddr) -> Self {
        RequestRecord {
            conn_id: 1,
            request_seq: 1,
            timestamp: SystemTime::now(),
            client_ip,
            client_port: Some(1),
            client_ip_source: "socket",
            peer_ip: client_ip,
            peer_port: 1,
            local_ip: client_ip,
            local_port: 8080,
            target_port: 80,
            target_port_source: "ebpf",
            target_port_ebpf: Some(80),
            ebpf_lookup: Some("translated"),
            target_port_original_dst: Some(80),
            target_port_header: None,
            http_method: Some("GET".into()),
            http_path: Some("/wp-login.php".into()),
            http_query: Some("pwd=secret".into()),
            http_version: Some("HTTP/1.1"),
            user_agent: None,
            headers_json: vec![("Authorization".into(), "Basic c2VjcmV0".into())],
            head_size: 10,
            body_preview: None,
            body_sha256: None,
            body_length: None,
            response_status: Some(200),
            response_mode: "drip",
            giveup_limit_s: None,
            giveup_basis: None,
            planned_end_s: None,
            families: None,
            error_message: None,
            raw_preview: None,
            geo: GeoInfo::default(),
            fingerprint: None,
            header_order: None,
            syn: None,
            client_hello: None,
            tags: Vec::new(),
            canary_slots: &[],
            canary: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn events_serialise_with_their_kind_and_column_names() {
        let event = Event::ResponseEnd(ResponseEnd {
            conn_id: 7,
            request_seq: 1,
            closed_at: UNIX_EPOCH + Duration::from_millis(1_500),
            bytes_sent: 10,
            duration_s: 0.5,
            end_reason: "complete",
            client_fin_s: None,
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "response_end");
        assert_eq!(json["closed_at"], "1970-01-01T00:00:01.500Z");
        assert_eq!(json["bytes_sent"], 10);
        assert_eq!(event.conn_id(), 7);
    }

    #[test]
    fn headers_become_an_object() {
        let headers = vec![
            ("Host".to_owned(), "x".to_owned()),
            ("User-Agent".to_owned(), "curl".to_owned()),
        ];
        let parsed: serde_json::Value = serde_json::from_str(&headers_to_json(&headers)).unwrap();
        assert_eq!(parsed["User-Agent"], "curl");
        assert_eq!(parsed["Host"], "x");
    }

    #[test]
    fn stored_headers_keep_the_order_they_arrived_in() {
        let headers: Vec<(String, String)> = ["Zeta", "Host", "Accept", "X-A"]
            .iter()
            .map(|n| (n.to_string(), "v".to_owned()))
            .collect();
        assert_eq!(
            headers_to_json(&headers),
            r#"{"Zeta":"v","Host":"v","Accept":"v","X-A":"v"}"#
        );
    }
}
