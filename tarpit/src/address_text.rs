//! Finding every address in what a client sent: so that an anonymised export keeps none
//! (`export::anonymize`) and an AbuseIPDB comment never names the sensor (`abuseipdb::policy`).
//!
//! The scanner works on the bytes as they were received, never on an escaped form (an escape's
//! hex digits would run into the address and hide it), and it does not look for word
//! boundaries: `proxy198.51.100.20`, `_198.51.100.8` and `1198.51.100.7` all contain an
//! address. Spellings that common parsers (inet_aton, browsers' URL parsers, Rust, Python)
//! accept are addresses too:
//! - IPv4 in four dotted parts, each decimal (leading zeros allowed: `198.051.100.009`) or hex
//!   (`0xc6.0x33.0x64.0x08`); the pseudonym is that of the value a person reads (decimal
//!   parts as decimal), and the whole spelling is replaced whatever its reading.
//! - IPv6 in any case, with leading zeros, `::` compression, an embedded IPv4 or a zone.
//! - Any of these percent-encoded in a URL or form, once or several times.
//! - Any of these in Unicode compatibility spellings that browsers and NFKC-normalising
//!   parsers read as ASCII: full-width digits, dots and colons (`１９８．５１．１００．７`),
//!   mathematical digits, the ideographic full stop as a dot; raw or percent-encoded.
//!
//! A field cut at a preview boundary may end in part of an address; that trailing run is
//! masked ([`MASK`]). Not recognised (see the README): addresses as one integer
//! (`3325256712`), the two- and three-part inet_aton forms, and addresses spelled in words.
//!
//! Hand-written: the regex crate has no backtracking over alternatives of different
//! lengths without boundaries, which is exactly what finding `198.51.100.77` inside
//! `198.51.100.7777` needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What replaces a possibly cut address at the end of a truncated field.
pub const MASK: &str = "[masked]";

/// The longest IPv6 text worth parsing (eight groups of four, or six and a dotted quad).
const V6_MAX_TEXT: usize = 45;

/// What the sensor's own addresses become in text it sends out (AbuseIPDB comments, shared
/// paths and User-Agents).
pub const SENSOR: &str = "[sensor]";

/// `text` with every address `own` says is the sensor's written [`SENSOR`] (in any spelling
/// [`scrub_bytes`] recognises; canonical form passed); other addresses are left as they are.
pub fn mask_own(text: &str, own: &dyn Fn(IpAddr) -> bool) -> String {
    let masked = scrub_bytes(text.as_bytes(), false, &|address| {
        let address = address.to_canonical();
        if own(address) {
            SENSOR.to_owned()
        } else {
            address.to_string()
        }
    });
    String::from_utf8_lossy(&masked).into_owned()
}

/// Replaces every address in `bytes` with `pseudonym(address)`; with `truncated`, masks a
/// trailing run that could be the start of an address. Bytes that are not part of an address
/// are kept as they are (UTF-8 or not): replacements are ASCII and replace ASCII runs only.
pub fn scrub_bytes(bytes: &[u8], truncated: bool, pseudonym: &dyn Fn(IpAddr) -> String) -> Vec<u8> {
    let source = match readable_form_if_it_hides_addresses(bytes) {
        Some(decoded) => std::borrow::Cow::Owned(decoded),
        None => std::borrow::Cow::Borrowed(bytes),
    };
    let mut out = replace_all(&source, pseudonym);
    if truncated {
        mask_tail(&mut out);
    }
    out
}

/// Both passes: IPv4 first, so that an IPv6 text with an embedded IPv4 in a spelling Rust
/// refuses (`::ffff:198.051.100.009`) loses the IPv4 part before the IPv6 pass.
fn replace_all(bytes: &[u8], pseudonym: &dyn Fn(IpAddr) -> String) -> Vec<u8> {
    replace_v6(&replace_v4(bytes, pseudonym), pseudonym)
}

/// The addresses `bytes` spells, in order.
fn addresses_in(bytes: &[u8]) -> Vec<IpAddr> {
    let found = std::cell::RefCell::new(Vec::new());
    replace_all(bytes, &|address| {
        found.borrow_mut().push(address);
        String::new()
    });
    found.into_inner()
}

/// Dotted-quad IPv4 in any position, leftmost first.
fn replace_v4(bytes: &[u8], pseudonym: &dyn Fn(IpAddr) -> String) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit()
            && let Some((end, address)) = v4_at(bytes, i)
        {
            // An IPv4-mapped IPv6 address is the IPv4 client (as in the address columns).
            const MAPPED: &[u8] = b"::ffff:";
            if out.len() >= MAPPED.len()
                && out[out.len() - MAPPED.len()..].eq_ignore_ascii_case(MAPPED)
            {
                out.truncate(out.len() - MAPPED.len());
            }
            out.extend_from_slice(pseudonym(IpAddr::V4(address)).as_bytes());
            i = end;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The IPv4 address spelled from `start`, and where it ends: four parts, each tried longest
/// first and shorter on failure.
fn v4_at(bytes: &[u8], start: usize) -> Option<(usize, Ipv4Addr)> {
    fn parts(bytes: &[u8], at: usize, index: usize, acc: &mut [u8; 4]) -> Option<usize> {
        for (end, value) in part_candidates(bytes, at) {
            acc[index] = value;
            if index == 3 {
                return Some(end);
            }
            if bytes.get(end) == Some(&b'.')
                && let Some(done) = parts(bytes, end + 1, index + 1, acc)
            {
                return Some(done);
            }
        }
        None
    }
    let mut acc = [0u8; 4];
    let end = parts(bytes, start, 0, &mut acc)?;
    Some((end, Ipv4Addr::from(acc)))
}

/// The ways one dotted part can be read at `at`, longest first: `0x` and up to four hex
/// digits, or up to five decimal digits (leading zeros), each with a value of at most 255.
fn part_candidates(bytes: &[u8], at: usize) -> Vec<(usize, u8)> {
    let mut found = Vec::new();
    let rest = bytes.get(at..).unwrap_or_default();
    if rest.len() > 2 && rest[0] == b'0' && (rest[1] | 0x20) == b'x' {
        let digits = rest[2..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        for n in (1..=digits).rev() {
            let text = std::str::from_utf8(&rest[2..2 + n]).expect("ASCII");
            if let Ok(value) = u8::from_str_radix(text, 16) {
                found.push((at + 2 + n, value));
            }
        }
    }
    let digits = rest
        .iter()
        .take(5)
        .take_while(|b| b.is_ascii_digit())
        .count();
    for n in (1..=digits).rev() {
        let text = std::str::from_utf8(&rest[..n]).expect("ASCII");
        if let Ok(value) = text.parse::<u8>() {
            found.push((at + n, value));
        }
    }
    found
}

/// IPv6 in any position: from each position, the longest text that parses.
fn replace_v6(bytes: &[u8], pseudonym: &dyn Fn(IpAddr) -> String) -> Vec<u8> {
    let is_v6_byte = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if !is_v6_byte(bytes[i]) {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let run_end = i + bytes[i..].iter().take_while(|&&b| is_v6_byte(b)).count();
        if bytes[i..run_end].iter().filter(|&&b| b == b':').count() < 2 {
            out.extend_from_slice(&bytes[i..run_end]);
            i = run_end;
            continue;
        }
        match v6_at(&bytes[i..run_end.min(i + V6_MAX_TEXT)]) {
            Some((len, address)) => {
                out.extend_from_slice(pseudonym(IpAddr::V6(address)).as_bytes());
                i += len;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// The longest prefix of `run` that is an IPv6 address (with a hex digit: `::` alone is not).
fn v6_at(run: &[u8]) -> Option<(usize, Ipv6Addr)> {
    (2..=run.len()).rev().find_map(|len| {
        let text = std::str::from_utf8(&run[..len]).ok()?;
        let address = text.parse::<Ipv6Addr>().ok()?;
        text.bytes()
            .any(|b| b.is_ascii_hexdigit())
            .then_some((len, address))
    })
}

/// The percent-decoded text (decoded up to four times, for double encoding) when decoding
/// reveals addresses the text as written does not show; `None` otherwise, so that text whose
/// escapes hide nothing keeps its encoding. Each address is then replaced exactly once.
fn readable_form_if_it_hides_addresses(bytes: &[u8]) -> Option<Vec<u8>> {
    let encoded = bytes.contains(&b'%');
    if !encoded && bytes.is_ascii() {
        return None;
    }
    let mut decoded = bytes.to_vec();
    for _ in 0..4 {
        let next: Vec<u8> = percent_encoding::percent_decode(&decoded).collect();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    if !decoded.is_ascii() {
        decoded = ascii_compatible(&decoded);
    }
    (decoded != bytes && addresses_in(&decoded) != addresses_in(bytes)).then_some(decoded)
}

/// `bytes` (as UTF-8, invalid sequences replaced) in NFKC, with the ideographic full stops a
/// URL parser takes for dots (IDNA: U+3002, and U+FF61 which NFKC turns into it) made `.`.
fn ascii_compatible(bytes: &[u8]) -> Vec<u8> {
    use unicode_normalization::UnicodeNormalization;
    String::from_utf8_lossy(bytes)
        .nfkc()
        .map(|c| if c == '\u{3002}' { '.' } else { c })
        .collect::<String>()
        .into_bytes()
}

/// Masks a trailing run of characters that could begin an address (digits, hex letters, `.`,
/// `:`, `x`) when it holds a digit or a separator.
fn mask_tail(bytes: &mut Vec<u8>) {
    let is_address_byte = |b: &u8| b.is_ascii_hexdigit() || matches!(*b, b'.' | b':' | b'x' | b'X');
    let run = bytes
        .iter()
        .rev()
        .take_while(|b| is_address_byte(b))
        .count();
    let tail = &bytes[bytes.len() - run..];
    if run > 0
        && tail
            .iter()
            .any(|b| b.is_ascii_digit() || *b == b'.' || *b == b':')
    {
        bytes.truncate(bytes.len() - run);
        bytes.extend_from_slice(MASK.as_bytes());
    }
}

/// Reverses `escape_ascii` (how `raw_preview` stores bytes: `\t \r \n \\ \' \" \xNN`), so the
/// received bytes can be scrubbed. Returns the bytes and the truncation marker
/// (`...[N more bytes]`) that followed them, if any.
pub fn unescape_preview(text: &str) -> (Vec<u8>, Option<&str>) {
    let (body, marker) = match text.rfind("...[") {
        Some(at) if text.ends_with(" more bytes]") => (&text[..at], Some(&text[at..])),
        _ => (text, None),
    };
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let (byte, used) = match bytes[i + 1] {
                b't' => (b'\t', 2),
                b'r' => (b'\r', 2),
                b'n' => (b'\n', 2),
                b'\\' | b'\'' | b'"' => (bytes[i + 1], 2),
                b'x' if bytes.len() >= i + 4 => {
                    match std::str::from_utf8(&bytes[i + 2..i + 4])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(byte) => (byte, 4),
                        None => (b'\\', 1),
                    }
                }
                _ => (b'\\', 1),
            };
            out.push(byte);
            i += used;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    (out, marker)
}

/// Applies `scrub` to the decoded value of every string literal in a JSON text (keys and
/// values), keeping everything else, order included, as it was. `None` if it is not JSON.
pub fn map_json_strings(text: &str, scrub: &dyn Fn(&str) -> String) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        if i >= bytes.len() {
            return None;
        }
        i += 1;
        let literal = &text[start..i];
        let value: String = serde_json::from_str(literal).ok()?;
        out.push_str(&text[copied..start]);
        out.push_str(&serde_json::to_string(&scrub(&value)).ok()?);
        copied = i;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(address: IpAddr) -> String {
        format!("<{address}>")
    }

    fn scrub(text: &str, truncated: bool) -> String {
        String::from_utf8(scrub_bytes(text.as_bytes(), truncated, &tag)).unwrap()
    }

    #[test]
    fn addresses_are_found_without_word_boundaries() {
        assert_eq!(
            scrub("/backup_198.51.100.8.zip", false),
            "/backup_<198.51.100.8>.zip"
        );
        assert_eq!(
            scrub("1.1 proxy198.51.100.20", false),
            "1.1 proxy<198.51.100.20>"
        );
        assert_eq!(scrub("x1198.51.100.7y", false), "x1<198.51.100.7>y");
        assert_eq!(scrub("198.51.100.7777", false), "<198.51.100.77>77");
        assert_eq!(scrub("cafe2001:db8::1z", false), "cafe<2001:db8::1>z");
    }

    #[test]
    fn every_common_spelling_is_an_address() {
        assert_eq!(scrub("198.051.100.009", false), "<198.51.100.9>");
        assert_eq!(scrub("0xc6.0x33.0x64.0x08", false), "<198.51.100.8>");
        assert_eq!(scrub("2001:0DB8:0000::0001", false), "<2001:db8::1>");
        assert_eq!(scrub("[fe80::1%eth0]", false), "[<fe80::1>%eth0]");
        assert_eq!(scrub("::FFFF:198.051.100.009", false), "<198.51.100.9>");
        assert_eq!(
            scrub("[::ffff:198.51.100.9]:80", false),
            "[<198.51.100.9>]:80"
        );
        assert_eq!(scrub("/?u=%31%39%38.51.100.7", false), "/?u=<198.51.100.7>");
        assert_eq!(
            scrub("/?u=198%252E51%252E100%252E7", false),
            "/?u=<198.51.100.7>"
        );
        assert_eq!(
            scrub("http://１９８．５１．１００．７/", false),
            "http://<198.51.100.7>/"
        );
        assert_eq!(scrub("𝟏𝟗𝟖。51｡100.7", false), "<198.51.100.7>");
        assert_eq!(
            scrub("ip=２００１：ｄｂ８：：１", false),
            "ip=<2001:db8::1>"
        );
        assert_eq!(
            scrub("/?r=%EF%BC%91%EF%BC%99%EF%BC%98%EF%BC%8E51.100.7", false),
            "/?r=<198.51.100.7>"
        );
        // Unicode without an address in it is kept as it is.
        assert_eq!(scrub("ｃａｆé 2026", false), "ｃａｆé 2026");
        assert_eq!(scrub("v1.2.3 and 10.1", false), "v1.2.3 and 10.1");
        assert_eq!(scrub("at 12:30:45, ab:cd", false), "at 12:30:45, ab:cd");
    }

    #[test]
    fn a_cut_address_at_the_end_of_a_truncated_field_is_masked() {
        assert_eq!(scrub("GET /x 198.51.10", true), format!("GET /x {MASK}"));
        assert_eq!(scrub("ip=2001:db8:", true), format!("ip={MASK}"));
        assert_eq!(scrub("ip=198.51.100.7", true), "ip=<198.51.100.7>");
        assert_eq!(scrub("GET /x 198.51.10", false), "GET /x 198.51.10");
    }

    #[test]
    fn previews_are_unescaped_to_what_was_received() {
        let received = b"\x02198.51.100.11\r\n198.51.100.10\t\\'\"\xff";
        let escaped = received.escape_ascii().to_string() + "...[12 more bytes]";
        let (bytes, marker) = unescape_preview(&escaped);
        assert_eq!(bytes, received);
        assert_eq!(marker, Some("...[12 more bytes]"));
    }

    #[test]
    fn json_strings_are_scrubbed_decoded_and_order_is_kept() {
        let json = r#"{"zz":"\t198.51.100.7","aa":"\u0031\u0039\u0038.51.100.9","n":1}"#;
        let out = map_json_strings(json, &|s| scrub(s, false)).unwrap();
        assert_eq!(
            out,
            r#"{"zz":"\t<198.51.100.7>","aa":"<198.51.100.9>","n":1}"#
        );
        assert!(map_json_strings("{\"open", &|s| s.to_owned()).is_none());
    }
}
