//! The transformations (`t:...`) the CRS applies to a value before its operator looks at it.
//!
//! Each is written from the ModSecurity reference manual's description and reproduces
//! libmodsecurity 3.0's behaviour byte for byte where the manual is silent (invalid escapes are
//! kept, `%u` keeps the low byte, a full-width `%uff01`-`%uff5e` becomes ASCII, numeric entities
//! keep the low byte): what the agreement test (`tests/crs.rs`) checks against the library.
//! Each works on bytes, never fails, and runs in time linear in its input.

use sha1::Digest;

use super::decode::{css_decode, html_entity_decode, js_decode};
pub use super::decode::{percent_decode, url_decode};

/// One transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// `t:lowercase`: ASCII letters to lower case.
    Lowercase,
    /// `t:urlDecode`: `%XX` and `+`.
    UrlDecode,
    /// `t:urlDecodeUni`: also IIS's `%uXXXX`.
    UrlDecodeUni,
    /// `t:htmlEntityDecode`: `&#NN;`, `&#xNN;`, `&quot; &amp; &lt; &gt; &nbsp;`.
    HtmlEntityDecode,
    /// `t:jsDecode`: JavaScript escapes.
    JsDecode,
    /// `t:cssDecode`: CSS 2 escapes.
    CssDecode,
    /// `t:cmdLine`: what a shell would ignore or join.
    CmdLine,
    /// `t:removeNulls`.
    RemoveNulls,
    /// `t:compressWhitespace`: runs of white space to one space.
    CompressWhitespace,
    /// `t:removeWhitespace`.
    RemoveWhitespace,
    /// `t:replaceComments`: `/* ... */` to one space.
    ReplaceComments,
    /// `t:normalizePath` (`normalisePath`): `./`, `../` and `//` resolved.
    NormalizePath,
    /// `t:normalizePathWin`: the same with `\` as a separator.
    NormalizePathWin,
    /// `t:utf8toUnicode`: multi-byte UTF-8 to `%uXXXX`.
    Utf8ToUnicode,
    /// `t:base64Decode`.
    Base64Decode,
    /// `t:sha1`: the raw digest.
    Sha1,
    /// `t:hexEncode`.
    HexEncode,
    /// `t:length`: the value's length in decimal.
    Length,
}

impl Transform {
    /// The transformation a `t:` name means; `None` for `none` (which clears the list) is the
    /// caller's business, unknown names are `Err`.
    pub fn named(name: &str) -> Result<Self, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "lowercase" => Self::Lowercase,
            "urldecode" => Self::UrlDecode,
            "urldecodeuni" => Self::UrlDecodeUni,
            "htmlentitydecode" => Self::HtmlEntityDecode,
            "jsdecode" => Self::JsDecode,
            "cssdecode" => Self::CssDecode,
            "cmdline" => Self::CmdLine,
            "removenulls" => Self::RemoveNulls,
            "compresswhitespace" => Self::CompressWhitespace,
            "removewhitespace" => Self::RemoveWhitespace,
            "replacecomments" => Self::ReplaceComments,
            "normalizepath" | "normalisepath" => Self::NormalizePath,
            "normalizepathwin" | "normalisepathwin" => Self::NormalizePathWin,
            "utf8tounicode" => Self::Utf8ToUnicode,
            "base64decode" => Self::Base64Decode,
            "sha1" => Self::Sha1,
            "hexencode" => Self::HexEncode,
            "length" => Self::Length,
            other => return Err(format!("the transformation t:{other} is not supported")),
        })
    }

    /// Applies the transformation.
    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::Lowercase => input.to_ascii_lowercase(),
            Self::UrlDecode => url_decode(input, false),
            Self::UrlDecodeUni => url_decode(input, true),
            Self::HtmlEntityDecode => html_entity_decode(input),
            Self::JsDecode => js_decode(input),
            Self::CssDecode => css_decode(input),
            Self::CmdLine => cmd_line(input),
            Self::RemoveNulls => input.iter().copied().filter(|&b| b != 0).collect(),
            Self::CompressWhitespace => compress_whitespace(input),
            Self::RemoveWhitespace => input.iter().copied().filter(|&b| !is_space(b)).collect(),
            Self::ReplaceComments => replace_comments(input),
            Self::NormalizePath => normalize_path(input, false),
            Self::NormalizePathWin => normalize_path(input, true),
            Self::Utf8ToUnicode => utf8_to_unicode(input),
            Self::Base64Decode => base64_decode(input),
            Self::Sha1 => sha1::Sha1::digest(input).to_vec(),
            Self::HexEncode => hex::encode(input).into_bytes(),
            Self::Length => input.len().to_string().into_bytes(),
        }
    }
}

/// C's `isspace`, plus the non-breaking space (0xA0) that ModSecurity treats as one.
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(b);
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let (n, mut i, mut in_comment) = (input.len(), 0, false);
    while i < n {
        let pair = |a: u8, b: u8| input[i] == a && i + 1 < n && input[i + 1] == b;
        if !in_comment {
            if pair(b'/', b'*') {
                in_comment = true;
                i += 2;
            } else {
                out.push(input[i]);
                i += 1;
            }
        } else if pair(b'*', b'/') {
            in_comment = false;
            out.push(b' ');
            i += 2;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// ModSecurity's path normalisation, step for step (it differs from a textbook resolver: a
/// relative path that climbs past its start keeps its `../`).
fn normalize_path(input: &[u8], windows: bool) -> Vec<u8> {
    if input.is_empty() {
        return Vec::new();
    }
    let mut buf = input.to_vec();
    let sep = |b: u8| b == b'/' || (windows && b == b'\\');
    let end = buf.len() - 1;
    let relative = !sep(buf[0]);
    let trailing = sep(buf[end]);
    let (mut src, mut dst) = (0usize, 0usize);
    let (mut hit_root, mut done) = (false, false);
    while !done && src <= end && dst <= end {
        if windows {
            if buf[src] == b'\\' {
                buf[src] = b'/';
            }
            if src < end && buf[src + 1] == b'\\' {
                buf[src + 1] = b'/';
            }
        }
        let mut skip_copy = false;
        let mut normalise = true;
        if src == end {
            done = true;
        } else if buf[src + 1] != b'/' {
            normalise = false;
        }
        if normalise {
            if src != end && buf[src] == b'/' {
                // An empty segment: the copy below skips repeated slashes.
            } else if buf[src] == b'.' {
                if dst > 0 && buf[dst - 1] == b'.' {
                    if relative && (hit_root || dst < 2 || dst - 2 == 0) {
                        hit_root = true;
                    } else {
                        // Drop the `..` and the segment before it.
                        let mut d = dst as isize - 3;
                        while d > 0 && buf[d as usize] != b'/' {
                            d -= 1;
                        }
                        if d <= 0 {
                            hit_root = true;
                            d = 0;
                            if !relative && src == end {
                                d += 1;
                            }
                        }
                        dst = d as usize;
                        if done {
                            skip_copy = true;
                        } else {
                            src += 1;
                        }
                    }
                } else if dst == 0 {
                    if done {
                        skip_copy = true;
                    } else {
                        src += 1;
                    }
                } else if buf[dst - 1] == b'/' {
                    if done {
                        skip_copy = true;
                    } else {
                        dst -= 1;
                        src += 1;
                    }
                }
            } else if dst > 0 {
                hit_root = false;
            }
        }
        if skip_copy {
            continue;
        }
        if src > end {
            break;
        }
        if buf[src] == b'/' {
            while src < end && sep(buf[src + 1]) {
                src += 1;
            }
            if relative && dst == 0 {
                src += 1;
                continue;
            }
        }
        buf[dst] = buf[src];
        dst += 1;
        src += 1;
    }
    if !trailing && dst > 0 && buf[dst - 1] == b'/' {
        dst -= 1;
    }
    buf.truncate(dst);
    buf
}

/// libmodsecurity's `utf8toUnicode`, quirks included (the agreement test checks them): a
/// multi-byte sequence becomes `%uXXXX`, followed by its lead byte again when it is overlong or
/// a surrogate; a lead byte whose continuation bytes are missing or wrong is dropped, as is a
/// NUL; any other byte is copied.
fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let total = input.len();
    // Past the end the library reads the string's terminating NUL.
    let at = |k: usize| input.get(k).copied().unwrap_or(0);
    let cont = |k: usize| at(k) & 0xc0 == 0x80;
    let mut i = 0;
    while i < total {
        let c = input[i];
        let (len, code) = if c & 0x80 == 0 {
            if c != 0 {
                out.push(c);
            }
            i += 1;
            continue;
        } else if c & 0xe0 == 0xc0 {
            if total < 2 || !cont(i + 1) {
                (0, 0)
            } else {
                (2, ((c as u32 & 0x1f) << 6) | (at(i + 1) as u32 & 0x3f))
            }
        } else if c & 0xf0 == 0xe0 {
            if total < 3 || !cont(i + 1) || !cont(i + 2) {
                (0, 0)
            } else {
                let code = ((c as u32 & 0x0f) << 12)
                    | ((at(i + 1) as u32 & 0x3f) << 6)
                    | (at(i + 2) as u32 & 0x3f);
                (3, code)
            }
        } else if c & 0xf8 == 0xf0 {
            if total < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3) {
                (0, 0)
            } else {
                let code = ((c as u32 & 0x07) << 18)
                    | ((at(i + 1) as u32 & 0x3f) << 12)
                    | ((at(i + 2) as u32 & 0x3f) << 6)
                    | (at(i + 3) as u32 & 0x3f);
                (4, code)
            }
        } else {
            out.push(c);
            i += 1;
            continue;
        };
        if len > 0 {
            out.extend_from_slice(format!("%u{code:04x}").as_bytes());
        }
        if (0xd800..=0xdfff).contains(&code) {
            out.push(c);
        }
        let overlong = (len == 4 && code < 0x1_0000)
            || (len == 3 && code < 0x800)
            || (len == 2 && code < 0x80);
        if overlong {
            out.push(c);
        }
        i += len.max(1);
    }
    out
}

fn base64_decode(input: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(input).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, input: &str) -> String {
        String::from_utf8_lossy(&Transform::named(name).unwrap().apply(input.as_bytes())).into()
    }

    #[test]
    fn url_decoding_keeps_invalid_escapes_and_takes_the_low_byte_of_u() {
        assert_eq!(
            t("urlDecodeUni", "a%27+b%zz%u0041%uff41%u12"),
            "a' b%zzAa%u12"
        );
        assert_eq!(t("urlDecode", "%u0041%4"), "%u0041%4");
    }

    #[test]
    fn entities_javascript_and_css_escapes_decode_as_the_library_does() {
        assert_eq!(
            t("htmlEntityDecode", "&lt;a&#x41;&#66&foo;&amp"),
            "<aAB&foo;&"
        );
        assert_eq!(t("jsDecode", r"\x41\u0042\103\n\q"), "ABC\nq");
        assert_eq!(t("cssDecode", r"\41 \000062x\\"), "Abx\\");
    }

    #[test]
    fn shell_comments_whitespace_and_paths() {
        assert_eq!(
            t("cmdLine", "C^at  \"/etc\"/PASSWD ;id"),
            "cat/etc/passwd id"
        );
        assert_eq!(t("replaceComments", "a/*x*/b/*"), "a b ");
        assert_eq!(t("compressWhitespace", "a \t\n b"), "a b");
        assert_eq!(t("normalizePath", "/a/./b/../../../c//d"), "/c/d");
        assert_eq!(t("normalizePathWin", "a\\b\\..\\c"), "a/c");
        assert_eq!(t("utf8toUnicode", "aé"), "a%u00e9");
        let overlong = Transform::Utf8ToUnicode.apply(b"/\xc0\xae..\xc0/\0x");
        assert_eq!(overlong, b"/%u002e\xc0../x");
    }
}
