//! Finding issued tokens in a request: its path, query, headers (cookies and `Authorization`
//! included, `Basic` credentials base64-decoded) and body preview, each decoded as the
//! classifier decodes it ([`Fields`]: repeated percent-decoding, `+` as space in queries and
//! form bodies).
//!
//! A token is found as a whole word: a maximal run of ASCII letters and digits whose length is
//! a token length, looked up in the [`TokenIndex`]. Nothing else is tried, so the work is one
//! pass over the decoded text and one hash lookup per run of a token's length: a request
//! crafted with thousands of token-shaped words costs a lookup each, within the bounded head
//! and body preview, and a word that was never issued (a guessed or invented token, however
//! well shaped) matches nothing.

use base64::Engine as _;

use super::index::{Issued, TokenIndex};
use super::token::{KINDS, MAX_LEN, Token};
use crate::classify::normalize::Fields;

/// One issued token found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The token.
    pub token: Token,
    /// Whom it was issued to.
    pub issued: Issued,
    /// Where it was: `path`, `query`, `cookie`, `authorization`, `header` or `body`.
    pub location: &'static str,
}

/// Whether `len` is the length of some kind of token.
fn is_token_length(len: usize) -> bool {
    len <= MAX_LEN && KINDS.iter().any(|kind| kind.token_len() == len)
}

/// Calls `found` with every maximal run of letters and digits in `text` of a token's length.
fn words(text: &[u8], mut found: impl FnMut(&[u8])) {
    words_at(text, |_, word| found(word));
}

/// [`words`], with where each run starts.
pub(super) fn words_at(text: &[u8], mut found: impl FnMut(usize, &[u8])) {
    let mut start = None;
    for (i, byte) in text.iter().enumerate() {
        match (byte.is_ascii_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if is_token_length(i - s) {
                    found(s, &text[s..i]);
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start
        && is_token_length(text.len() - s)
    {
        found(s, &text[s..]);
    }
}

/// Every issued token in the request whose decoded fields are `fields`, each once, in the
/// order found.
pub fn find(index: &TokenIndex, fields: &Fields) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    if index.is_empty() {
        return out;
    }
    let mut look = |text: &[u8], location: &'static str| {
        words(text, |word| {
            let Some(token) = Token::from_bytes(word) else {
                return;
            };
            if out.iter().any(|f| f.token == token) {
                return;
            }
            if let Some(issued) = index.get(&token) {
                out.push(Found {
                    token,
                    issued: issued.clone(),
                    location,
                });
            }
        })
    };
    look(fields.path.as_bytes(), "path");
    look(fields.query.as_bytes(), "query");
    for line in fields.headers.lines() {
        let (name, value) = line.split_once(": ").unwrap_or((line, ""));
        let location = match name {
            "cookie" => "cookie",
            "authorization" | "proxy-authorization" => "authorization",
            _ => "header",
        };
        look(value.as_bytes(), location);
        if location == "authorization"
            && let Some(encoded) = basic_credentials(value)
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
        {
            look(&decoded, "authorization");
        }
    }
    look(fields.body.as_bytes(), "body");
    out
}

/// The base64 part of `Basic ...` (the scheme is case-insensitive).
fn basic_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::super::token::{Kind, Minter, Recipient};
    use super::*;
    use crate::classify::RequestView;

    fn setup() -> (Minter, TokenIndex, Token, Token) {
        let minter = Minter::new(b"0123456789abcdef0123", "s").unwrap();
        let mut index = TokenIndex::new(100);
        let mut add = |kind| {
            let recipient = Recipient {
                client_ip: "192.0.2.1".parse().unwrap(),
                kind,
                ordinal: 0,
            };
            let token = minter.token(&recipient);
            index.insert(
                token,
                Issued {
                    sensor: "s".into(),
                    recipient,
                    first_issued: std::time::SystemTime::UNIX_EPOCH,
                    path: "/.env".into(),
                },
            );
            token
        };
        let password = add(Kind::Password);
        let link = add(Kind::Link);
        (minter, index, password, link)
    }

    fn text(token: &Token) -> &str {
        std::str::from_utf8(token.as_bytes()).unwrap()
    }

    fn fields(path: &str, query: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Fields {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Fields::of(&RequestView {
            method: Some("GET"),
            path: Some(path),
            query,
            headers: &headers,
            body: Some(body),
            ..Default::default()
        })
    }

    #[test]
    fn tokens_are_found_through_every_encoding_a_client_would_use() {
        let (_, index, password, link) = setup();
        let (p, l) = (text(&password), text(&link));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("portal:{p}"));
        let cases: Vec<(Fields, &str)> = vec![
            (
                fields(&format!("/dl/{l}/backup.zip"), None, &[], b""),
                "path",
            ),
            (
                fields("/x", Some(&format!("session={l}")), &[], b""),
                "query",
            ),
            // Percent-encoded twice.
            (
                fields(
                    "/x",
                    Some(&format!("t=%25{:02X}{}", l.as_bytes()[0], &l[1..])),
                    &[],
                    b"",
                ),
                "query",
            ),
            (
                fields("/", None, &[("Cookie", &format!("a=1; sid={l}"))], b""),
                "cookie",
            ),
            (
                fields(
                    "/",
                    None,
                    &[("Authorization", &format!("Basic {basic}"))],
                    b"",
                ),
                "authorization",
            ),
            (
                fields("/", None, &[("Authorization", &format!("Bearer {p}"))], b""),
                "authorization",
            ),
            (fields("/", None, &[("X-Api-Key", p)], b""), "header"),
            (
                fields(
                    "/login",
                    None,
                    &[],
                    format!("user=portal&pass={p}").as_bytes(),
                ),
                "body",
            ),
        ];
        for (i, (fields, location)) in cases.into_iter().enumerate() {
            let found = find(&index, &fields);
            assert_eq!(found.len(), 1, "case {i}: {found:?}");
            assert_eq!(found[0].location, location, "case {i}");
        }
        // Found once however often it appears.
        let twice = fields(&format!("/{p}"), Some(&format!("a={p}")), &[], b"");
        assert_eq!(find(&index, &twice).len(), 1);
    }

    #[test]
    fn invented_and_altered_tokens_match_nothing() {
        let (minter, index, password, _) = setup();
        let p = text(&password);
        // Well-shaped guesses: another client's token, one character changed, glued to more
        // letters, cut short.
        let other = minter.token(&Recipient {
            client_ip: "192.0.2.2".parse().unwrap(),
            kind: Kind::Password,
            ordinal: 0,
        });
        let mut changed = p.as_bytes().to_vec();
        changed[5] = if changed[5] == b'a' { b'b' } else { b'a' };
        let guesses = [
            text(&other).to_owned(),
            String::from_utf8(changed).unwrap(),
            format!("{p}x"),
            p[..19].to_owned(),
            "AKIAIOSFODNN7EXAMPLE".to_owned(),
        ];
        for guess in &guesses {
            let request = fields(
                "/",
                Some(&format!("k={guess}")),
                &[("Cookie", guess)],
                guess.as_bytes(),
            );
            assert!(find(&index, &request).is_empty(), "{guess}");
        }
        // Thousands of token-shaped words find nothing and stay one pass.
        let flood: String = (0..2000).map(|i| format!("{i:020} ")).collect();
        assert!(find(&index, &fields("/", None, &[], flood.as_bytes())).is_empty());
    }
}
