//! The operators (`@rx`, `@pm`, `@detectSQLi`, `@eq`, ...) the CRS's request rules use.
//!
//! `@rx` runs on PCRE2 (the `pcre2` crate), the regex library libmodsecurity itself uses, with
//! the same options (`DOTALL | MULTILINE`, no UTF mode: patterns match bytes), so the CRS's
//! lookarounds and back-references mean exactly what they mean to the library. `@pm` is an
//! Aho-Corasick automaton without case, as the library's. `@detectSQLi`/`@detectXSS` are
//! libinjection (the `libinjectionrs` port). Operators that need state the tarpit does not keep
//! (`@rbl`, `@geoLookup`, `@ipMatchFromFile`) never match, as in a libmodsecurity built without
//! GeoIP and with no RBL configured.

use std::net::IpAddr;
use std::path::Path;

use aho_corasick::AhoCorasick;
use pcre2::bytes::{Regex, RegexBuilder};

/// A compiled operator.
#[derive(Debug)]
pub enum Operator {
    /// `@rx`: a PCRE2 pattern (compiled at load; patterns holding a macro at first use).
    Rx(Pattern),
    /// `@pm`/`@pmFromFile`: any of the phrases, without case.
    Pm(AhoCorasick),
    /// `@detectSQLi`.
    DetectSqli,
    /// `@detectXSS`.
    DetectXss,
    /// `@eq`, `@ge`, `@gt`, `@le`, `@lt`: integer comparison.
    Compare(Comparison, String),
    /// `@streq`.
    StrEq(String),
    /// `@contains`.
    Contains(String),
    /// `@beginsWith`.
    BeginsWith(String),
    /// `@endsWith`.
    EndsWith(String),
    /// `@within`: the value is part of the parameter.
    Within(String),
    /// `@validateByteRange`: a byte outside the ranges.
    ValidateByteRange([bool; 256]),
    /// `@validateUrlEncoding`: a `%` not followed by two hex digits.
    ValidateUrlEncoding,
    /// `@validateUtf8Encoding`: bytes that are not UTF-8.
    ValidateUtf8,
    /// `@ipMatch`: the value is an address in one of the networks.
    IpMatch(Vec<(IpAddr, u8)>),
    /// `@unconditionalMatch`.
    Always,
    /// Operators that never match here (`@rbl`, `@geoLookup`, `@ipMatchFromFile`, `@noMatch`).
    Never,
}

/// An integer comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `@eq`.
    Eq,
    /// `@ge`.
    Ge,
    /// `@gt`.
    Gt,
    /// `@le`.
    Le,
    /// `@lt`.
    Lt,
}

/// A regex, compiled now or (holding a `%{macro}`) when its text is known.
#[derive(Debug)]
pub enum Pattern {
    /// Compiled at load.
    Fixed(Regex),
    /// Holds a macro: expanded and compiled per evaluation.
    Macro(String),
}

/// Compiles a pattern with the library's options.
pub fn regex(pattern: &str, caseless: bool) -> Result<Regex, String> {
    RegexBuilder::new()
        .dotall(true)
        .multi_line(true)
        .caseless(caseless)
        .jit_if_available(true)
        .build(pattern)
        .map_err(|e| format!("the pattern `{pattern}` does not compile: {e}"))
}

impl Operator {
    /// Compiles `name` with `param`; `dir` is where `@pmFromFile` files are looked for.
    pub fn compile(name: &str, param: &str, dir: &Path) -> Result<Self, String> {
        let number = |c| Self::Compare(c, param.trim().to_owned());
        Ok(match name.to_ascii_lowercase().as_str() {
            "rx" if param.contains("%{") => Self::Rx(Pattern::Macro(param.to_owned())),
            "rx" => Self::Rx(Pattern::Fixed(regex(param, false)?)),
            "pm" => Self::Pm(phrases(param.split_ascii_whitespace())?),
            "pmfromfile" | "pmf" => {
                let mut all = Vec::new();
                for file in param.split_ascii_whitespace() {
                    let path = dir.join(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    all.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_owned),
                    );
                }
                Self::Pm(phrases(all.iter().map(String::as_str))?)
            }
            "detectsqli" => Self::DetectSqli,
            "detectxss" => Self::DetectXss,
            "eq" => number(Comparison::Eq),
            "ge" => number(Comparison::Ge),
            "gt" => number(Comparison::Gt),
            "le" => number(Comparison::Le),
            "lt" => number(Comparison::Lt),
            "streq" => Self::StrEq(param.to_owned()),
            "contains" => Self::Contains(param.to_owned()),
            "beginswith" => Self::BeginsWith(param.to_owned()),
            "endswith" => Self::EndsWith(param.to_owned()),
            "within" => Self::Within(param.to_owned()),
            "validatebyterange" => Self::ValidateByteRange(byte_ranges(param)?),
            "validateurlencoding" => Self::ValidateUrlEncoding,
            "validateutf8encoding" => Self::ValidateUtf8,
            "ipmatch" => Self::IpMatch(networks(param)?),
            "unconditionalmatch" => Self::Always,
            "nomatch" | "rbl" | "geolookup" | "ipmatchfromfile" | "ipmatchf" => Self::Never,
            other => return Err(format!("the operator @{other} is not supported")),
        })
    }

    /// Whether the operator's text parameter holds a macro to expand first.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::Compare(_, p)
            | Self::StrEq(p)
            | Self::Contains(p)
            | Self::BeginsWith(p)
            | Self::EndsWith(p)
            | Self::Within(p) => Some(p),
            Self::Rx(Pattern::Macro(p)) => Some(p),
            _ => None,
        }
    }
}

/// What one evaluation of an operator found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Whether it matched.
    pub matched: bool,
    /// With `capture`: `TX:0`..`TX:9` as (group, text).
    pub captures: Vec<(usize, Vec<u8>)>,
}

/// Runs `operator` on `value`; `param` is its parameter with macros expanded (for the
/// operators that take text) and `capture` whether the rule keeps captures.
pub fn evaluate(operator: &Operator, param: &str, value: &[u8], capture: bool) -> Outcome {
    let yes = |matched: bool| Outcome {
        matched,
        captures: Vec::new(),
    };
    match operator {
        Operator::Rx(pattern) => {
            let compiled;
            let regex = match pattern {
                Pattern::Fixed(regex) => regex,
                Pattern::Macro(_) => match regex(param, false) {
                    Ok(regex) => {
                        compiled = regex;
                        &compiled
                    }
                    Err(_) => return yes(false),
                },
            };
            if !capture {
                return yes(regex.is_match(value).unwrap_or(false));
            }
            match regex.captures(value) {
                Ok(Some(found)) => Outcome {
                    matched: true,
                    captures: (0..found.len().min(10))
                        .filter_map(|g| found.get(g).map(|m| (g, m.as_bytes().to_vec())))
                        .collect(),
                },
                _ => yes(false),
            }
        }
        Operator::Pm(phrases) => match phrases.find(value) {
            Some(found) => Outcome {
                matched: true,
                captures: if capture {
                    vec![(0, value[found.start()..found.end()].to_vec())]
                } else {
                    Vec::new()
                },
            },
            None => yes(false),
        },
        Operator::DetectSqli => {
            let result = libinjectionrs::detect_sqli(value);
            Outcome {
                matched: result.is_injection(),
                captures: match (capture, &result.fingerprint) {
                    (true, Some(fingerprint)) => {
                        vec![(0, fingerprint.as_str().as_bytes().to_vec())]
                    }
                    _ => Vec::new(),
                },
            }
        }
        Operator::DetectXss => yes(libinjectionrs::detect_xss(value).is_injection()),
        Operator::Compare(comparison, _) => {
            let (left, right) = (to_int(value), to_int(param.as_bytes()));
            yes(match comparison {
                Comparison::Eq => left == right,
                Comparison::Ge => left >= right,
                Comparison::Gt => left > right,
                Comparison::Le => left <= right,
                Comparison::Lt => left < right,
            })
        }
        Operator::StrEq(_) => yes(value == param.as_bytes()),
        Operator::Contains(_) => yes(find(value, param.as_bytes())),
        Operator::BeginsWith(_) => yes(value.starts_with(param.as_bytes())),
        Operator::EndsWith(_) => yes(value.ends_with(param.as_bytes())),
        Operator::Within(_) => yes(find(param.as_bytes(), value)),
        Operator::ValidateByteRange(allowed) => yes(value.iter().any(|&b| !allowed[b as usize])),
        Operator::ValidateUrlEncoding => yes(invalid_url_encoding(value)),
        Operator::ValidateUtf8 => yes(std::str::from_utf8(value).is_err()),
        Operator::IpMatch(networks) => yes(std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.trim().parse::<IpAddr>().ok())
            .is_some_and(|address| networks.iter().any(|n| contains(*n, address)))),
        Operator::Always => yes(true),
        Operator::Never => yes(false),
    }
}

/// `needle` in `haystack` (an empty needle is everywhere).
fn find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || memchr::memmem::find(haystack, needle).is_some()
}

/// C++'s `std::stoi` as the library uses it: leading white space, a sign and digits; anything
/// else (or too large a number) is 0.
fn to_int(text: &[u8]) -> i64 {
    let text = std::str::from_utf8(text).unwrap_or_default().trim_start();
    let digits_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(text.len(), |(i, _)| i);
    text[..digits_end]
        .parse::<i32>()
        .map(i64::from)
        .unwrap_or(0)
}

fn phrases<'a>(list: impl Iterator<Item = &'a str>) -> Result<AhoCorasick, String> {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(list)
        .map_err(|e| format!("the phrase list does not build: {e}"))
}

/// `1-255` or `9,10,13,32-126` to the set of allowed bytes.
fn byte_ranges(param: &str) -> Result<[bool; 256], String> {
    let mut allowed = [false; 256];
    for part in param.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bound = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("`{part}` is not a byte range"))
        };
        let (low, high) = match part.split_once('-') {
            Some((low, high)) => (bound(low)?, bound(high)?),
            None => (bound(part)?, bound(part)?),
        };
        for b in low..=high {
            allowed[b as usize] = true;
        }
    }
    Ok(allowed)
}

fn invalid_url_encoding(value: &[u8]) -> bool {
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            if i + 2 >= value.len() {
                return true;
            }
            if !(value[i + 1].is_ascii_hexdigit() && value[i + 2].is_ascii_hexdigit()) {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// `127.0.0.1,::1,10.0.0.0/8` to networks.
fn networks(param: &str) -> Result<Vec<(IpAddr, u8)>, String> {
    param
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (address, bits) = part.split_once('/').unwrap_or((part, ""));
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("`{part}` is not an address or network"))?;
            let full = if address.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() {
                full
            } else {
                bits.parse::<u8>()
                    .ok()
                    .filter(|&b| b <= full)
                    .ok_or_else(|| format!("`{part}` has no valid prefix length"))?
            };
            Ok((address, bits))
        })
        .collect()
}

fn contains((network, bits): (IpAddr, u8), address: IpAddr) -> bool {
    let (network, address, width) = match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    network >> shift == address >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, param: &str, value: &str) -> bool {
        let operator = Operator::compile(name, param, Path::new("/")).unwrap();
        evaluate(&operator, param, value.as_bytes(), false).matched
    }

    #[test]
    fn comparisons_read_numbers_as_stoi_does() {
        assert!(run("eq", "0", "abc"));
        assert!(run("lt", "2", " 1x"));
        assert!(run("ge", "5", "+5"));
        assert!(!run("gt", "1", "99999999999"));
    }

    #[test]
    fn strings_ranges_addresses_and_encodings() {
        assert!(run("within", " get post ", "get"));
        assert!(run("endsWith", ".pdf", "/a.pdf"));
        assert!(run("validateByteRange", "32-126", "a\x01"));
        assert!(!run("validateByteRange", "1-255", "abc"));
        assert!(run("validateUrlEncoding", "", "a%zz"));
        assert!(run("validateUrlEncoding", "", "a%4"));
        assert!(run("ipMatch", "127.0.0.1,::1,10.0.0.0/8", "10.2.3.4"));
        assert!(!run("ipMatch", "127.0.0.1,::1", "203.0.113.7"));
        assert!(run("pm", "document.cookie <!--", "x DOCUMENT.COOKIE"));
    }

    #[test]
    fn rx_is_pcre_with_dotall_multiline_and_captures() {
        let operator = Operator::compile("rx", r"^b(\d)(?=c)", Path::new("/")).unwrap();
        let outcome = evaluate(&operator, "", b"a\nb1c", true);
        assert!(outcome.matched);
        assert_eq!(outcome.captures, [(0, b"b1".to_vec()), (1, b"1".to_vec())]);
        assert!(run("rx", "a.b", "a\nb"));
        assert!(Operator::compile("nosuch", "", Path::new("/")).is_err());
    }
}
