//! Canary tokens: values unique to the client that was served them, hidden in the persona's
//! bait (a `.env`'s database password, cloud-style access keys, a `.git/config` remote's
//! credentials, a `wp-config.php` backup, links and a session cookie), so that when any
//! address sends one back, the record can say which client it was given to. Clients joined
//! by a token are one actor (`pipeline/canary.rs` finds them, `sink/sqlite/actors.rs` merges
//! them).
//!
//! - [`token`]: a token is a keyed HMAC-SHA256 (key `TARPIT_CANARY_KEY`, environment or
//!   `.env`, never written anywhere) of the sensor, the client's address and the slot,
//!   shaped like the secret it imitates.
//! - [`template`]: `{{canary:KIND}}` in a persona file marks a slot; the token is written over
//!   the slot's filler as the page is sent, a slice at a time.
//! - [`index`]: the issued tokens, bounded, for recognising them.
//! - [`search`]: every word of a token's length in a request's decoded fields, looked up.
//!
//! Against a client that sends thousands of crafted requests: a token is unguessable (80 to 238
//! bits of MAC), so an invented or altered one matches nothing and merges nothing; a client
//! fetching bait again is issued the same tokens (they depend on its address, not on the
//! request), so it cannot grow the index; the search is one pass and one hash lookup per
//! token-length word within the bounded head and body preview; and what merges actors is only
//! a token seen from an address other than the one it was issued to, each merge recorded with
//! that evidence (fingerprints never merge).

pub mod index;
pub mod replace;
pub mod search;
pub mod template;
pub mod token;

pub use index::{Issued, TokenIndex};
pub use search::Found;
pub use template::Slot;
pub use token::{KINDS, Kind, Minter, Recipient, Token};

use crate::secret::Secret;

/// The environment variable (or `.env` entry) holding the key.
pub const KEY_VARIABLE: &str = "TARPIT_CANARY_KEY";

/// The tag a request carrying an issued token gets.
pub const HIT_TAG: &str = "canary:hit";

/// This sensor's minter, when `TARPIT_CANARY_KEY` is set (environment or `.env`); an error
/// when it is set but unusable.
pub fn minter_from_env(sensor: &str) -> Result<Option<Minter>, token::KeyError> {
    match Secret::from_env(KEY_VARIABLE) {
        Some(key) => Minter::new(key.expose().as_bytes(), sensor).map(Some),
        None => Ok(None),
    }
}

/// The minter and the client a response is for: what writes that client's tokens into the
/// slices of a page.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    /// This sensor's minter.
    pub minter: &'a Minter,
    /// The client the response answers.
    pub client_ip: std::net::IpAddr,
}

impl Issuer<'_> {
    /// The client's token for `slot`.
    pub fn token(&self, slot: &Slot) -> Token {
        self.minter.token(&Recipient {
            client_ip: self.client_ip,
            kind: slot.kind,
            ordinal: slot.ordinal,
        })
    }

    /// Writes the client's tokens over the filler of the `slots` that overlap `out`, the body
    /// bytes from position `from`.
    pub fn write(&self, slots: &[Slot], from: usize, out: &mut [u8]) {
        template::overlay(slots, from, out, |slot| self.token(slot));
    }
}
