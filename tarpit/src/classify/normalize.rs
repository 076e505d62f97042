//! What the rules see of a request: each field decoded the way a server would decode it, so an
//! attack hidden behind `%2527` or `%252e%252e/` matches the same rule as the plain one.

use std::borrow::Cow;

/// Percent-decoding rounds: scanners double- and triple-encode to slip past filters; four
/// rounds undo every encoding seen in practice while bounding the work.
const DECODE_ROUNDS: usize = 4;

/// The request, as stored: borrowed from a live record or a database row, so the server and
/// `tarpit classify` see exactly the same input.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    /// Method as sent.
    pub method: Option<&'a str>,
    /// Path without the query.
    pub path: Option<&'a str>,
    /// Query without the `?`.
    pub query: Option<&'a str>,
    /// Header names and values (repeats joined), any order.
    pub headers: &'a [(String, String)],
    /// The User-Agent header.
    pub user_agent: Option<&'a str>,
    /// The previewed body bytes.
    pub body: Option<&'a [u8]>,
    /// The escaped preview of input that was not a request (TLS, garbage).
    pub raw: Option<&'a str>,
}

/// The texts the rules match, one per field (see the rule file's documentation).
#[derive(Debug, Default)]
pub struct Fields {
    /// `method`.
    pub method: String,
    /// `path`: decoded, `//` and `/./` collapsed (`..` kept: it is what traversal rules seek).
    pub path: String,
    /// `query`: decoded, `+` as space.
    pub query: String,
    /// `uri`: path, then `?` and the query when there is one.
    pub uri: String,
    /// `headers`: one `name: value` line per header, names lower-case, values decoded.
    pub headers: String,
    /// `user_agent`: as sent.
    pub user_agent: String,
    /// `body`: the preview as text, decoded like a query when it is form data.
    pub body: String,
    /// `anywhere`: uri, headers and body, one after the other.
    pub anywhere: String,
    /// `raw`: the escaped preview of non-HTTP input.
    pub raw: String,
}

impl Fields {
    /// Decodes every field of `request`.
    pub fn of(request: &RequestView<'_>) -> Self {
        let path = normalize_path(&decode(request.path.unwrap_or(""), false));
        let query = decode(request.query.unwrap_or(""), true);
        let mut uri = path.clone();
        if request.query.is_some() {
            uri.push('?');
            uri.push_str(&query);
        }
        let mut headers = String::new();
        for (name, value) in request.headers {
            headers.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            headers.push_str(": ");
            headers.push_str(&decode(value, false));
            headers.push('\n');
        }
        let body = request
            .body
            .map(|b| decode(&String::from_utf8_lossy(b), true))
            .unwrap_or_default();
        let anywhere = format!("{uri}\n{headers}\n{body}");
        Fields {
            method: request.method.unwrap_or("").to_owned(),
            path,
            query,
            uri,
            headers,
            user_agent: request.user_agent.unwrap_or("").to_owned(),
            body,
            anywhere,
            raw: request.raw.unwrap_or("").to_owned(),
        }
    }
}

/// Percent-decodes up to [`DECODE_ROUNDS`] times, until nothing changes; `+` becomes a space
/// when `plus_is_space` (query strings and form bodies). Invalid UTF-8 is replaced, NUL kept.
pub fn decode(text: &str, plus_is_space: bool) -> String {
    let mut current: Cow<'_, str> = Cow::Borrowed(text);
    if plus_is_space && current.contains('+') {
        current = Cow::Owned(current.replace('+', " "));
    }
    for _ in 0..DECODE_ROUNDS {
        if !current.contains('%') {
            break;
        }
        let unaliased = unalias(&current);
        let decoded = percent_encoding::percent_decode_str(&unaliased).decode_utf8_lossy();
        if decoded == current {
            break;
        }
        current = Cow::Owned(decoded.into_owned());
    }
    current.into_owned()
}

/// Encodings that old servers (IIS, Tomcat) decoded to `.`, `/` and `\\`: overlong UTF-8
/// (`%c0%ae`, RFC 3629 forbids it) and IIS's `%uXXXX`. Scanners still send them to slip a
/// traversal past filters, so they are read as the characters they stood for.
const ALIASES: &[(&str, &str)] = &[
    ("%c0%ae", "."),
    ("%c0%2e", "."),
    ("%e0%80%ae", "."),
    ("%c0%af", "/"),
    ("%c0%2f", "/"),
    ("%e0%80%af", "/"),
    ("%c1%9c", "\\"),
    ("%c1%1c", "\\"),
    ("%c0%5c", "\\"),
    ("%u002e", "."),
    ("%u2215", "/"),
    ("%u2216", "\\"),
];

/// `text` with every [`ALIASES`] spelling (any case) replaced; borrowed when it has none.
fn unalias(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !ALIASES.iter().any(|(alias, _)| lower.contains(alias)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    'scan: while at < text.len() {
        for (alias, plain) in ALIASES {
            if lower[at..].starts_with(alias) {
                out.push_str(plain);
                at += alias.len();
                continue 'scan;
            }
        }
        let c = text[at..].chars().next().expect("at a char boundary");
        out.push(c);
        at += c.len_utf8();
    }
    Cow::Owned(out)
}

/// Collapses repeated slashes and `/./` (servers treat them as one), keeps everything else.
fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        if segment == "." || (segment.is_empty() && out.ends_with('/')) {
            continue;
        }
        if (!out.is_empty() || path.starts_with('/')) && !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(segment);
    }
    if out.is_empty() && path.starts_with('/') {
        out.push('/');
    }
    out
}

/// The values a user controls, one by one (libinjection judges single values): query and form
/// parameters (keys too), split on `&` and `=` before decoding (a decoded `=` is part of the
/// value: `1 AND 1=1`), cookie values, path segments and the headers scanners inject into.
pub fn parameter_values<'a>(fields: &'a Fields, request: &RequestView<'_>) -> Vec<Cow<'a, str>> {
    let mut values: Vec<Cow<'a, str>> = Vec::new();
    // An XML body is markup, not `name=value` pairs: split at `&` and `=`, its elements
    // (`<object class=...>` in every Java XMLDecoder payload) would look like injected HTML.
    let xml_body = fields
        .headers
        .lines()
        .any(|l| l.starts_with("content-type: ") && l.contains("xml"));
    let body = request
        .body
        .filter(|_| !xml_body)
        .map(String::from_utf8_lossy);
    for list in [request.query, body.as_deref()].into_iter().flatten() {
        for part in list.split('&') {
            match part.split_once('=') {
                Some((key, value)) => {
                    values.push(decode(key, true).into());
                    values.push(decode(value, true).into());
                }
                None => values.push(decode(part, true).into()),
            }
        }
    }
    values.extend(fields.path.split('/').map(Cow::Borrowed));
    for (name, value) in fields.headers.lines().filter_map(|l| l.split_once(": ")) {
        match name {
            "cookie" => values.extend(
                value
                    .split(';')
                    .filter_map(|c| c.split_once('=').map(|(_, v)| Cow::Borrowed(v))),
            ),
            "user-agent" | "referer" | "x-forwarded-for" => values.push(Cow::Borrowed(value)),
            _ => {}
        }
    }
    // A value of letters, digits and `-_./:,` cannot be an injection: skip the detector.
    values.retain(|v| {
        v.bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b"-_./:, ".contains(&b)))
    });
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_encoding_is_undone() {
        assert_eq!(
            decode("%252e%252e%252fetc%252fpasswd", false),
            "../etc/passwd"
        );
        assert_eq!(decode("id=1%2527+or+1%3D1", true), "id=1' or 1=1");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("%zz%", false), "%zz%");
        assert_eq!(decode("%ff", false), "\u{fffd}");
        assert_eq!(decode("%C0%AE%c0%ae%c0%afboot.ini", false), "../boot.ini");
        assert_eq!(decode("%25c0%25ae%25c0%25ae%25c1%259cx", false), "..\\x");
        assert_eq!(decode("%u002e%u002e%u2215é", false), "../é");
    }

    #[test]
    fn paths_collapse_like_a_server_but_keep_dot_dot() {
        assert_eq!(normalize_path("//a/./b//../c"), "/a/b/../c");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "");
        assert_eq!(normalize_path("*"), "*");
    }

    #[test]
    fn fields_are_built_from_every_part() {
        let headers = vec![("Cookie".to_owned(), "a=1%27%20or%201%3D1".to_owned())];
        let view = RequestView {
            method: Some("POST"),
            path: Some("/x/%2e/y"),
            query: Some("q=%3Cscript%3E"),
            headers: &headers,
            body: Some(b"u=a+b"),
            ..Default::default()
        };
        let fields = Fields::of(&view);
        assert_eq!(fields.uri, "/x/y?q=<script>");
        assert_eq!(fields.headers, "cookie: a=1' or 1=1\n");
        assert_eq!(fields.body, "u=a b");
        assert!(fields.anywhere.contains("<script>") && fields.anywhere.contains("a b"));
        let values = parameter_values(&fields, &view);
        let has = |v: &str| values.iter().any(|x| x == v);
        assert!(has("<script>"));
        assert!(has("1' or 1=1"), "{values:?}");
        assert!(!has("x"), "plain words are skipped");
        let equals = RequestView {
            query: Some("id=1%20AND%205907%3D5907&b=2"),
            ..Default::default()
        };
        let fields = Fields::of(&equals);
        let values = parameter_values(&fields, &equals);
        assert!(values.iter().any(|v| v == "1 AND 5907=5907"), "{values:?}");
    }
}
