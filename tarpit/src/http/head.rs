//! The request-head reader: decides, from the bytes a client has sent so far, whether a complete
//! HTTP request head is there, more bytes are needed, or the input will never be a request.
//!
//! It is a pure function over a byte slice so that it can be fuzzed (`tarpit/fuzz`) and unit
//! tested without sockets. `httparse` does the parsing; this module adds the limits, the
//! classification of common non-HTTP input (TLS ClientHello) and an owned, loggable result.

use std::fmt;

/// Limits that bound what one request head may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most bytes in a head, request line included.
    pub max_head: usize,
    /// Most header lines.
    pub max_headers: usize,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadStatus {
    /// Not a complete head yet, and nothing wrong so far: read more.
    Partial,
    /// A complete, parsed head.
    Complete(ParsedHead),
    /// The input will never become an acceptable request head.
    Rejected(Rejection),
}

/// Why input was refused as a request; the text form is what the database stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A TLS handshake sent to the plain-HTTP port (scanners probing for HTTPS).
    TlsClientHello,
    /// Bytes that are not HTTP/1.x; the detail is httparse's diagnosis.
    Malformed(&'static str),
    /// More header lines than `max_headers`.
    TooManyHeaders,
    /// No end of head within `max_head` bytes.
    HeadTooLarge,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::TlsClientHello => f.write_str("tls_client_hello"),
            Rejection::Malformed(detail) => write!(f, "malformed_request: {detail}"),
            Rejection::TooManyHeaders => f.write_str("too_many_headers"),
            Rejection::HeadTooLarge => f.write_str("head_too_large"),
        }
    }
}

/// HTTP versions the tarpit answers differently (1.0 gets raw bytes and a close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0: no chunked framing, connection closes after the response.
    Http10,
    /// HTTP/1.1: chunked framing, keep-alive.
    Http11,
}

impl HttpVersion {
    /// The version as written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
        }
    }
}

/// An owned copy of a parsed request head: everything the forensic record keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHead {
    /// Request method exactly as sent.
    pub method: String,
    /// Request target before any `?`.
    pub path: String,
    /// The part of the target after the first `?`, if there was one.
    pub query: Option<String>,
    /// Protocol version from the request line.
    pub version: HttpVersion,
    /// Headers in arrival order; repeated names are joined with ", " under the first spelling.
    /// Values that are not UTF-8 are stored lossily.
    pub headers: Vec<(String, String)>,
    /// The header names as sent: lower-case, comma-joined, repeats kept (`header_order`).
    pub header_order: String,
    /// Bytes the head occupied, up to and including the blank line.
    pub head_len: usize,
}

impl ParsedHead {
    /// The value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client allows another request on this connection after the response.
    pub fn wants_keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("");
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        match self.version {
            HttpVersion::Http11 => !has("close"),
            HttpVersion::Http10 => false,
        }
    }

    /// The declared body length, when there is a single valid Content-Length.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// Whether the body uses chunked transfer coding (whose length is unknown up front).
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// Classifies the bytes received so far. Call it again after every read; it is cheap while the
/// end of the head has not arrived (no allocation, one scan).
pub fn parse_head(buf: &[u8], limits: HeadLimits) -> HeadStatus {
    if looks_like_tls(buf) {
        // Wait for the whole first record (the ClientHello is fingerprinted), within the
        // head limit; a record that cannot fit is rejected at the limit.
        return match crate::fingerprint::tls::record_len(buf) {
            Some(len) if buf.len() < len && buf.len() < limits.max_head => HeadStatus::Partial,
            None if buf.len() < 5 => HeadStatus::Partial,
            _ => HeadStatus::Rejected(Rejection::TlsClientHello),
        };
    }
    let status = match find_head_end(buf) {
        Some(_) => parse_complete(buf, limits),
        None => check_request_line(buf),
    };
    // Still partial at the limit: no request will fit (16 KiB of blank lines, which HTTP
    // allows before a request line, are partial however many arrive).
    match status {
        HeadStatus::Partial if buf.len() >= limits.max_head => {
            HeadStatus::Rejected(Rejection::HeadTooLarge)
        }
        status => status,
    }
}

/// What can be read of a head cut at the size limit: the request line and every header line
/// that arrived whole (the line the limit cut is left out), so an oversized request, such as
/// Citrix Bleed's 24 KB `Host:`, is still recorded and classified by its method, path and
/// headers. `None` when the bytes do not start with a request line. Runs once per rejected
/// head, never per read.
pub fn truncated_head(buf: &[u8], max_headers: usize) -> Option<ParsedHead> {
    let last_line_end = buf.iter().rposition(|&b| b == b'\n')?;
    let mut whole = Vec::with_capacity(last_line_end + 3);
    whole.extend_from_slice(&buf[..=last_line_end]);
    whole.extend_from_slice(b"\r\n");
    let limits = HeadLimits {
        max_head: whole.len(),
        max_headers,
    };
    match parse_complete(&whole, limits) {
        HeadStatus::Complete(mut head) => {
            head.head_len = buf.len();
            Some(head)
        }
        _ => None,
    }
}

/// A TLS record header for a handshake: content type 22, major version 3.
fn looks_like_tls(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] == 0x16 && buf[1] == 0x03
}

/// Index just past the blank line that ends a head (`\r\n\r\n` or a bare `\n\n`, as httparse
/// accepts both), if it has arrived.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Early rejection of garbage before the head is complete: parses with room for no headers, so
/// the request line is checked without allocating.
fn check_request_line(buf: &[u8]) -> HeadStatus {
    if buf.len() == 1 && buf[0] == 0x16 {
        return HeadStatus::Partial; // maybe the first byte of a TLS record
    }
    let mut request = httparse::Request::new(&mut []);
    match request.parse(buf) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => HeadStatus::Partial,
        Err(e) => HeadStatus::Rejected(Rejection::Malformed(describe(e))),
    }
}

fn parse_complete(buf: &[u8], limits: HeadLimits) -> HeadStatus {
    // Uninitialised slots: httparse fills only what it parses, so the up to `max_headers`
    // (100 by default) slots of a few-header scanner request are not zeroed for every head.
    let mut headers = Vec::new();
    headers.resize_with(limits.max_headers, std::mem::MaybeUninit::uninit);
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return HeadStatus::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return HeadStatus::Rejected(Rejection::TooManyHeaders);
        }
        Err(e) => return HeadStatus::Rejected(Rejection::Malformed(describe(e))),
    };
    if head_len > limits.max_head {
        return HeadStatus::Rejected(Rejection::HeadTooLarge);
    }
    // httparse returns Complete only with method, path and version all present.
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return HeadStatus::Rejected(Rejection::Malformed("incomplete request line"));
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let version = if minor == 0 {
        HttpVersion::Http10
    } else {
        HttpVersion::Http11
    };
    HeadStatus::Complete(ParsedHead {
        method: method.to_owned(),
        path,
        query,
        version,
        headers: merge_headers(request.headers),
        header_order: crate::fingerprint::header_order(request.headers.iter().map(|h| h.name)),
        head_len,
    })
}

/// Owned header list with repeated names joined, so it maps one-to-one onto a JSON object.
fn merge_headers(raw: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for header in raw {
        let value = String::from_utf8_lossy(header.value).into_owned();
        match merged
            .iter_mut()
            .find(|(name, _)| name.eq_ignore_ascii_case(header.name))
        {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => merged.push((header.name.to_owned(), value)),
        }
    }
    merged
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Bytes made safe and bounded for a log line or a TEXT column: at most `max` input bytes,
/// non-printable bytes escaped (`\x00`, `\r`, ...), and a marker when truncated.
pub fn escape_preview(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut text = shown.escape_ascii().to_string();
    if bytes.len() > max {
        text.push_str(&format!("...[{} more bytes]", bytes.len() - max));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head: 16 * 1024,
        max_headers: 100,
    };

    fn complete(bytes: &[u8]) -> ParsedHead {
        match parse_head(bytes, LIMITS) {
            HeadStatus::Complete(head) => head,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn rejection(bytes: &[u8]) -> Rejection {
        match parse_head(bytes, LIMITS) {
            HeadStatus::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_request() {
        let raw =
            b"GET /wp-login.php?a=1&b=2 HTTP/1.1\r\nHost: x\r\nUser-Agent: zgrab/0.x\r\n\r\nrest";
        let head = complete(raw);
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/wp-login.php");
        assert_eq!(head.query.as_deref(), Some("a=1&b=2"));
        assert_eq!(head.version, HttpVersion::Http11);
        assert_eq!(head.header("user-agent"), Some("zgrab/0.x"));
        assert_eq!(head.head_len, raw.len() - 4);
        assert!(head.wants_keep_alive());
    }

    #[test]
    fn blank_lines_up_to_the_limit_are_a_head_too_large() {
        let blank = b"\r\n".repeat(LIMITS.max_head / 2);
        assert!(matches!(
            parse_head(&blank[..100], LIMITS),
            HeadStatus::Partial
        ));
        assert_eq!(rejection(&blank), Rejection::HeadTooLarge);
        let bare = b"\n".repeat(LIMITS.max_head);
        assert_eq!(rejection(&bare), Rejection::HeadTooLarge);
        // Blank lines before a request are allowed.
        assert_eq!(complete(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").path, "/");
    }

    #[test]
    fn partial_until_blank_line() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(
                parse_head(&raw[..cut], LIMITS),
                HeadStatus::Partial,
                "cut {cut}"
            );
        }
        complete(raw);
    }

    #[test]
    fn bare_newlines_end_a_head() {
        let head = complete(b"GET / HTTP/1.0\nHost: x\n\n");
        assert_eq!(head.version, HttpVersion::Http10);
        assert!(!head.wants_keep_alive());
    }

    #[test]
    fn repeated_headers_are_joined() {
        let head = complete(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nB: 3\r\n\r\n");
        assert_eq!(
            head.headers,
            vec![
                ("X-A".to_owned(), "1, 2".to_owned()),
                ("B".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn connection_close_and_content_length() {
        let head = complete(
            b"POST /x HTTP/1.1\r\nConnection: Close\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(!head.wants_keep_alive());
        assert_eq!(head.content_length(), Some(12));
        assert!(head.is_chunked());
    }

    #[test]
    fn tls_client_hello_is_recognised() {
        // The whole first record is waited for (it is fingerprinted), then rejected.
        let partial = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01];
        assert_eq!(parse_head(&partial, LIMITS), HeadStatus::Partial);
        assert_eq!(parse_head(&partial[..3], LIMITS), HeadStatus::Partial);
        assert_eq!(
            rejection(&[0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00]),
            Rejection::TlsClientHello
        );
        assert_eq!(parse_head(&[0x16], LIMITS), HeadStatus::Partial);
        // A record longer than the head limit is rejected when the limit is reached.
        let mut huge = vec![0x16, 0x03, 0x01, 0xff, 0xff];
        huge.resize(LIMITS.max_head, 0);
        assert_eq!(
            parse_head(&huge, LIMITS),
            HeadStatus::Rejected(Rejection::TlsClientHello)
        );
    }

    #[test]
    fn garbage_is_rejected_early() {
        assert!(matches!(
            rejection(b"\x00\x01\x02garbage"),
            Rejection::Malformed(_)
        ));
        assert!(matches!(
            rejection(b"GET / HTTP/9.9\r\n\r\n"),
            Rejection::Malformed("invalid HTTP version")
        ));
        assert!(matches!(
            rejection(b"GET / HTTP/1.1\r\nBad\0Name: x\r\n\r\n"),
            Rejection::Malformed(_)
        ));
        // SSH banners and other line protocols are not HTTP either.
        assert!(matches!(
            rejection(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            Rejection::Malformed(_)
        ));
    }

    #[test]
    fn too_many_headers() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..1000 {
            raw.extend_from_slice(format!("X{i}: y\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(rejection(&raw), Rejection::TooManyHeaders);
    }

    #[test]
    fn a_cut_head_keeps_its_request_line_and_whole_headers() {
        let mut raw = b"GET /oauth/idp/.well-known/openid-configuration?x=1 HTTP/1.1\r\n\
                        User-Agent: curl/8.0\r\nHost: "
            .to_vec();
        raw.extend(std::iter::repeat_n(b'a', 24_812));
        let head = truncated_head(&raw, 64).expect("the request line arrived");
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/oauth/idp/.well-known/openid-configuration");
        assert_eq!(head.query.as_deref(), Some("x=1"));
        assert_eq!(head.header("user-agent"), Some("curl/8.0"));
        assert_eq!(head.header("host"), None, "the cut line is left out");
        assert_eq!(head.head_len, raw.len());
        assert!(truncated_head(b"\x00\x01garbage\n more", 64).is_none());
        assert!(truncated_head(b"GET /no-line-end", 64).is_none());
    }

    #[test]
    fn head_too_large_without_end() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(LIMITS.max_head, b'a');
        assert_eq!(rejection(&raw), Rejection::HeadTooLarge);
        // The same size one byte short is still waiting for more.
        assert_eq!(
            parse_head(&raw[..LIMITS.max_head - 1], LIMITS),
            HeadStatus::Partial
        );
    }

    #[test]
    fn head_larger_than_limit_with_end_is_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(LIMITS.max_head + 10, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(rejection(&raw), Rejection::HeadTooLarge);
    }

    #[test]
    fn non_utf8_header_values_are_kept_lossily() {
        let head = complete(b"GET / HTTP/1.1\r\nX: a\xffb\r\n\r\n");
        assert_eq!(head.header("x"), Some("a\u{fffd}b"));
    }

    #[test]
    fn rejection_texts_are_stable() {
        assert_eq!(Rejection::TlsClientHello.to_string(), "tls_client_hello");
        assert_eq!(Rejection::HeadTooLarge.to_string(), "head_too_large");
        assert_eq!(Rejection::TooManyHeaders.to_string(), "too_many_headers");
        assert_eq!(
            Rejection::Malformed("invalid token in request line").to_string(),
            "malformed_request: invalid token in request line"
        );
    }

    #[test]
    fn preview_escapes_and_bounds() {
        assert_eq!(escape_preview(b"a\r\n\x00\xff", 100), "a\\r\\n\\x00\\xff");
        assert_eq!(escape_preview(b"abcdef", 3), "abc...[3 more bytes]");
    }
}
