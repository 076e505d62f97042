//! The escape decoders behind `t:urlDecode`, `t:urlDecodeUni`, `t:htmlEntityDecode`,
//! `t:jsDecode` and `t:cssDecode` (and the request target's percent-decoding), reproducing
//! libmodsecurity 3.0's behaviour byte for byte: invalid escapes kept, `%u`/`\u` keep the low
//! byte, full-width ASCII becomes ASCII, numeric entities keep the low byte. Each is linear in
//! its input.

use super::transform::is_space;

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Two hex digits as a byte (both known valid).
fn x2c(high: u8, low: u8) -> u8 {
    (hex_value(high).unwrap_or(0) << 4) | hex_value(low).unwrap_or(0)
}

/// The low byte of a `%uHHHH`/`\uHHHH` escape whose digits start at `digits`; full-width ASCII
/// (`ff01`-`ff5e`) becomes its ASCII letter.
fn unicode_low_byte(digits: &[u8]) -> u8 {
    let low = x2c(digits[2], digits[3]);
    let full_width = digits[0].eq_ignore_ascii_case(&b'f') && digits[1].eq_ignore_ascii_case(&b'f');
    if full_width && low > 0 && low < 0x5f {
        low + 0x20
    } else {
        low
    }
}

/// `%XX` (and with `unicode`, `%uXXXX`) decoding, `+` as a space; invalid escapes are kept as
/// they are.
pub fn url_decode(input: &[u8], unicode: bool) -> Vec<u8> {
    percent_decode(input, unicode, true)
}

/// `%XX` (and `%uXXXX`) decoding; `plus` makes `+` a space (arguments) or keeps it (the request
/// target, which the library decodes without it).
pub fn percent_decode(input: &[u8], unicode: bool, plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let hex = |at: usize| input.get(at).copied().and_then(hex_value).is_some();
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            if unicode && matches!(input.get(i + 1), Some(b'u' | b'U')) {
                if i + 5 < input.len() && (2..6).all(|k| hex(i + k)) {
                    out.push(unicode_low_byte(&input[i + 2..i + 6]));
                    i += 6;
                } else {
                    out.extend_from_slice(&input[i..i + 2]);
                    i += 2;
                }
            } else if i + 2 < input.len() && hex(i + 1) && hex(i + 2) {
                out.push(x2c(input[i + 1], input[i + 2]));
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        } else {
            out.push(if plus && b == b'+' { b' ' } else { b });
            i += 1;
        }
    }
    out
}

/// C's `strtol` of a run of digits, cut to a byte as the library's cast does.
fn strtol_byte(digits: &[u8], radix: u32) -> u8 {
    let mut value: i64 = 0;
    for &d in digits {
        let digit = (d as char).to_digit(radix).unwrap_or(0) as i64;
        value = value.saturating_mul(radix as i64).saturating_add(digit);
    }
    value as u8
}

pub(super) fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        let mut copy = 1;
        if input[i] == b'&' && i + 1 < n {
            let mut k = i + 1;
            if input[k] == b'#' {
                copy += 1;
                if k + 1 < n {
                    k += 1;
                    let hexadecimal = matches!(input[k], b'x' | b'X');
                    let mut ok = true;
                    if hexadecimal {
                        copy += 1;
                        ok = k + 1 < n;
                        k += 1;
                    }
                    if ok {
                        let digit = |b: u8| {
                            if hexadecimal {
                                b.is_ascii_hexdigit()
                            } else {
                                b.is_ascii_digit()
                            }
                        };
                        let mut j = k;
                        while j < n && digit(input[j]) {
                            j += 1;
                        }
                        if j > k {
                            out.push(strtol_byte(&input[k..j], if hexadecimal { 16 } else { 10 }));
                            i = if j < n && input[j] == b';' { j + 1 } else { j };
                            continue;
                        }
                    }
                }
            } else {
                let mut j = k;
                while j < n && input[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                if j > k {
                    let decoded = match input[k..j].to_ascii_lowercase().as_slice() {
                        b"quot" => Some(b'"'),
                        b"amp" => Some(b'&'),
                        b"lt" => Some(b'<'),
                        b"gt" => Some(b'>'),
                        b"nbsp" => Some(0xa0),
                        _ => None,
                    };
                    match decoded {
                        Some(byte) => {
                            out.push(byte);
                            i = if j < n && input[j] == b';' { j + 1 } else { j };
                            continue;
                        }
                        None => copy = j - k + 1,
                    }
                }
            }
        }
        let end = (i + copy).min(n);
        out.extend_from_slice(&input[i..end]);
        i = end;
    }
    out
}

pub(super) fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let hex = |at: usize| input.get(at).is_some_and(|b| b.is_ascii_hexdigit());
    let octal = |at: usize| input.get(at).is_some_and(|b| (b'0'..=b'7').contains(b));
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
        } else if i + 5 < n && input[i + 1] == b'u' && (2..6).all(|k| hex(i + k)) {
            out.push(unicode_low_byte(&input[i + 2..i + 6]));
            i += 6;
        } else if i + 3 < n && input[i + 1] == b'x' && hex(i + 2) && hex(i + 3) {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if i + 1 < n && octal(i + 1) {
            let mut j = 0;
            while i + 1 + j < n && j < 3 {
                j += 1;
                if !octal(i + 1 + j) {
                    break;
                }
            }
            if j == 3 && input[i + 1] > b'3' {
                j = 2;
            }
            out.push(strtol_byte(&input[i + 1..i + 1 + j], 8));
            i += 1 + j;
        } else if i + 1 < n {
            out.push(match input[i + 1] {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

pub(super) fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= n {
            // A backslash at the end continues to nothing.
            i += 1;
            continue;
        }
        i += 1;
        let mut j = 0;
        while j < 6 && i + j < n && input[i + j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > 0 {
            let last_two = |k: usize| x2c(input[k - 2], input[k - 1]);
            let (byte, full_check) = match j {
                1 => (hex_value(input[i]).unwrap_or(0), false),
                2 | 3 => (last_two(i + j), false),
                4 => (last_two(i + j), true),
                5 => (last_two(i + j), input[i] == b'0'),
                _ => (last_two(i + j), input[i] == b'0' && input[i + 1] == b'0'),
            };
            let widened = full_check
                && byte > 0
                && byte < 0x5f
                && input[i + j - 3].eq_ignore_ascii_case(&b'f')
                && input[i + j - 4].eq_ignore_ascii_case(&b'f');
            out.push(if widened { byte + 0x20 } else { byte });
            if i + j < n && is_space(input[i + j]) && input[i + j] != 0xa0 {
                j += 1;
            }
            i += j;
        } else if input[i] == b'\n' {
            i += 1;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}
