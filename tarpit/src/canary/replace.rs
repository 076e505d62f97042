//! Canary tokens out of anonymised exports: every issued token found in exported text (as a
//! whole word, and inside `Basic` credentials) is replaced by a pseudonym of the same shape,
//! keyed by the export's anonymisation key, so the same token reads the same throughout an
//! export (and every export made with that key) and no published row gives a reader a live
//! token, or anything derived from the canary key.

use std::collections::HashMap;

use base64::Engine as _;

use super::search::words_at;
use super::token::Token;

/// Issued token → its pseudonym.
#[derive(Debug, Default)]
pub struct Replacements {
    map: HashMap<Token, Token>,
}

impl Replacements {
    /// Replacements from (token, pseudonym) pairs.
    pub fn new(pairs: impl IntoIterator<Item = (Token, Token)>) -> Self {
        Self {
            map: pairs.into_iter().collect(),
        }
    }

    /// How many tokens are replaced.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there is nothing to replace.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `text` with every token replaced, or `None` when it holds none.
    pub fn apply(&self, text: &[u8]) -> Option<Vec<u8>> {
        if self.map.is_empty() {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        words_at(text, |at, word| {
            if let Some(pseudonym) = Token::from_bytes(word).and_then(|t| self.map.get(&t)) {
                let buffer = out.get_or_insert_with(|| text.to_vec());
                buffer[at..at + word.len()].copy_from_slice(pseudonym.as_bytes());
            }
        });
        let replaced = self.basic_credentials(out.as_deref().unwrap_or(text));
        replaced.or(out)
    }

    /// Tokens inside `Basic <base64>` credentials, re-encoded.
    fn basic_credentials(&self, text: &[u8]) -> Option<Vec<u8>> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut out: Option<Vec<u8>> = None;
        let mut from = 0;
        while let Some(found) = memchr::memmem::find(&text[from..], b"Basic ") {
            let start = from + found + b"Basic ".len();
            let end = text[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || b"+/=".contains(b)))
                .map_or(text.len(), |n| start + n);
            from = end.max(start + 1).min(text.len());
            let Ok(decoded) = engine.decode(&text[start..end]) else {
                continue;
            };
            let Some(replaced) = self.apply(&decoded) else {
                continue;
            };
            let encoded = engine.encode(replaced);
            let buffer = out.get_or_insert_with(|| text.to_vec());
            // Same length in, same length out: tokens and pseudonyms have one length.
            let offset = buffer.len() - text.len();
            buffer.splice(start + offset..end + offset, encoded.bytes());
            if from >= text.len() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::from_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn tokens_are_replaced_as_words_and_inside_basic_credentials() {
        let live = "Q8f3kLm2Zp9Xc4Vb7Nw1";
        let fake = "Zz9ZZz9ZZz9ZZz9ZZz9Z";
        let replacements = Replacements::new([(token(live), token(fake))]);
        let text = format!("/x?pw={live}&y={live}x");
        let out = String::from_utf8(replacements.apply(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(out, format!("/x?pw={fake}&y={live}x"));
        let engine = base64::engine::general_purpose::STANDARD;
        let header = format!(
            "{{\"Authorization\":\"Basic {}\",\"X\":\"1\"}}",
            engine.encode(format!("ops:{live}"))
        );
        let out = String::from_utf8(replacements.apply(header.as_bytes()).unwrap()).unwrap();
        assert!(out.contains(&engine.encode(format!("ops:{fake}"))), "{out}");
        assert!(replacements.apply(b"nothing here").is_none());
    }
}
