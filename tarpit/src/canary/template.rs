//! Token slots in persona pages: `{{canary:KIND}}` in a page's file marks where a client's own
//! token goes. At load each placeholder becomes filler of the token's length (so the page's
//! `Content-Length` is fixed and, with canary tokens off, the page still reads like the real
//! thing); when a slice of the page is sent, the tokens it overlaps are written over the filler
//! ([`overlay`]). The page itself stays one `&'static` body shared by every response.

use super::token::{Kind, Minter, Recipient, Token};

/// Where one token goes in a page body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The token's first byte in the body.
    pub at: u32,
    /// What it imitates.
    pub kind: Kind,
    /// Which token of this kind in the page.
    pub ordinal: u8,
}

impl Slot {
    /// `at` of a token that goes in the head (a `Set-Cookie` value), not in the body.
    pub const IN_HEAD: u32 = u32::MAX;

    /// The session cookie's slot (in the head).
    pub const SESSION_COOKIE: Slot = Slot {
        at: Self::IN_HEAD,
        kind: Kind::Session,
        ordinal: u8::MAX,
    };

    /// The body range the token covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.at as usize..self.at as usize + self.kind.token_len()
    }
}

const OPEN: &[u8] = b"{{canary:";
const CLOSE: &[u8] = b"}}";

/// The most slots a page may hold (each ordinal fits a byte).
const MAX_SLOTS: usize = 32;

/// Replaces every placeholder in `body` by filler; returns the slots in body order, or why the
/// page cannot be used (an unknown kind, an unclosed placeholder, a token glued to letters or
/// digits, which the search could not find again).
pub fn parse(body: &[u8]) -> Result<(Vec<u8>, Vec<Slot>), String> {
    let filler = Minter::new(b"persona filler, not a secret", "filler").expect("a long key");
    let mut out = Vec::with_capacity(body.len());
    let mut slots: Vec<Slot> = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, OPEN) {
        out.extend_from_slice(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = find(after, CLOSE).ok_or("a {{canary: placeholder is not closed with }}")?;
        let name = std::str::from_utf8(&after[..end]).unwrap_or("");
        let kind = Kind::from_name(name).ok_or_else(|| {
            format!(
                "unknown canary kind {name:?} (known: {})",
                super::token::KINDS.map(Kind::name).join(", ")
            )
        })?;
        if slots.len() == MAX_SLOTS {
            return Err(format!("more than {MAX_SLOTS} canary placeholders"));
        }
        let ordinal = slots.iter().filter(|s| s.kind == kind).count() as u8;
        let recipient = Recipient {
            client_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            kind,
            ordinal,
        };
        slots.push(Slot {
            at: out.len() as u32,
            kind,
            ordinal,
        });
        out.extend_from_slice(filler.token(&recipient).as_bytes());
        rest = &after[end + CLOSE.len()..];
    }
    out.extend_from_slice(rest);
    for slot in &slots {
        let range = slot.range();
        let glued = |i: Option<usize>| {
            i.and_then(|i| out.get(i))
                .is_some_and(u8::is_ascii_alphanumeric)
        };
        if glued(range.start.checked_sub(1)) || glued(Some(range.end)) {
            return Err(format!(
                "the {} placeholder must not touch letters or digits (a token is found as a whole word)",
                slot.kind.name()
            ));
        }
    }
    Ok((out, slots))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Writes the tokens of `slots` that overlap `out` (the body's bytes from position `from`)
/// over their filler; `token` gives a slot's token (called only for slots that overlap).
pub fn overlay(slots: &[Slot], from: usize, out: &mut [u8], mut token: impl FnMut(&Slot) -> Token) {
    let end = from + out.len();
    for slot in slots.iter().filter(|slot| slot.at != Slot::IN_HEAD) {
        let range = slot.range();
        if range.end <= from || range.start >= end {
            continue;
        }
        let token = token(slot);
        let bytes = token.as_bytes();
        let lo = range.start.max(from);
        let hi = range.end.min(end);
        out[lo - from..hi - from].copy_from_slice(&bytes[lo - range.start..hi - range.start]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_slots_and_overlay_writes_any_slice() {
        let (body, slots) = parse(
            b"DB_PASSWORD={{canary:password}}\nKEY={{canary:aws_key_id}}\nP2={{canary:password}}\n",
        )
        .unwrap();
        assert_eq!(slots.len(), 3);
        assert_eq!((slots[0].kind, slots[0].ordinal), (Kind::Password, 0));
        assert_eq!((slots[2].kind, slots[2].ordinal), (Kind::Password, 1));
        assert_eq!(body.len(), 12 + 20 + 5 + 20 + 4 + 20 + 1);
        assert_eq!(&body[..12], b"DB_PASSWORD=");
        let minter = Minter::new(b"0123456789abcdef0123", "s").unwrap();
        let ip = "198.51.100.4".parse().unwrap();
        let mint = |slot: &Slot| {
            minter.token(&Recipient {
                client_ip: ip,
                kind: slot.kind,
                ordinal: slot.ordinal,
            })
        };
        let mut whole = body.clone();
        overlay(&slots, 0, &mut whole, mint);
        // Sent a byte at a time or in odd slices, the client reads the same bytes.
        for step in [1, 3, 7, 64] {
            let mut joined = Vec::new();
            for from in (0..body.len()).step_by(step) {
                let to = (from + step).min(body.len());
                let mut slice = body[from..to].to_vec();
                overlay(&slots, from, &mut slice, mint);
                joined.extend_from_slice(&slice);
            }
            assert_eq!(joined, whole, "step {step}");
        }
        let text = String::from_utf8(whole).unwrap();
        let password = mint(&slots[0]);
        assert!(text.contains(&format!(
            "DB_PASSWORD={}\n",
            std::str::from_utf8(password.as_bytes()).unwrap()
        )));
        assert!(
            !String::from_utf8_lossy(&body)
                .contains(std::str::from_utf8(password.as_bytes()).unwrap())
        );
    }

    #[test]
    fn bad_placeholders_are_refused_with_the_reason() {
        assert!(
            parse(b"x={{canary:pasword}}")
                .unwrap_err()
                .contains("unknown canary kind \"pasword\"")
        );
        assert!(
            parse(b"x={{canary:password")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            parse(b"x=A{{canary:password}}")
                .unwrap_err()
                .contains("must not touch")
        );
        assert!(parse(b"ghp_{{canary:git_token}}\n").is_ok());
    }
}
