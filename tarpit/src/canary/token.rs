//! Minting canary tokens: a keyed HMAC-SHA256 of who received the token, written in the
//! alphabet and length of the secret it imitates.
//!
//! A token is a function of the key, the sensor, the client's address, the kind and its
//! ordinal in the page, nothing else: the same client is served the same token every time (a
//! client fetching bait ten thousand times grows nothing), the sensor and pipeline compute it
//! alike without passing it around, and a restarted sensor recomputes what it issued from the
//! `canary_tokens` rows. The output shows nothing of its inputs: without the key, a token
//! cannot be tied to a sensor or a client, nor forged for one (each kind has at least 80 bits
//! from the MAC).

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a token imitates: its alphabet, length and fixed prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A database or admin password: 20 letters and digits.
    Password,
    /// An AWS access key id: `AKIA` and 16 characters of base32.
    AwsKeyId,
    /// An AWS secret access key: 40 letters and digits.
    AwsSecret,
    /// A personal access token (after `ghp_`): 36 letters and digits.
    GitToken,
    /// A link's path segment or query value: 32 lower-case hex digits.
    Link,
    /// A session cookie's value: 26 characters of `0-9a-v` (PHP's session id alphabet).
    Session,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";
const SESSION: &[u8] = b"0123456789abcdefghijklmnopqrstuv";

/// Every kind, for the templates' names and the tests.
pub const KINDS: [Kind; 6] = [
    Kind::Password,
    Kind::AwsKeyId,
    Kind::AwsSecret,
    Kind::GitToken,
    Kind::Link,
    Kind::Session,
];

/// The longest token, in bytes.
pub const MAX_LEN: usize = 40;

impl Kind {
    /// The name in templates (`{{canary:password}}`) and in the database.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Password => "password",
            Kind::AwsKeyId => "aws_key_id",
            Kind::AwsSecret => "aws_secret",
            Kind::GitToken => "git_token",
            Kind::Link => "link",
            Kind::Session => "session",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        KINDS.into_iter().find(|kind| kind.name() == name)
    }

    /// A token's length in bytes.
    pub fn token_len(self) -> usize {
        self.prefix().len() + self.random_len()
    }

    /// The fixed start (`AKIA` for an AWS key id).
    fn prefix(self) -> &'static [u8] {
        match self {
            Kind::AwsKeyId => b"AKIA",
            _ => b"",
        }
    }

    /// Characters drawn from the MAC.
    fn random_len(self) -> usize {
        match self {
            Kind::Password => 20,
            Kind::AwsKeyId => 16,
            Kind::AwsSecret => 40,
            Kind::GitToken => 36,
            Kind::Link => 32,
            Kind::Session => 26,
        }
    }

    fn alphabet(self) -> &'static [u8] {
        match self {
            Kind::Password | Kind::AwsSecret | Kind::GitToken => ALNUM,
            Kind::AwsKeyId => BASE32,
            Kind::Link => HEX,
            Kind::Session => SESSION,
        }
    }
}

/// A token: at most [`MAX_LEN`] ASCII letters and digits, kept inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl Token {
    /// `bytes` as a token, if they fit.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_LEN {
            return None;
        }
        let mut token = Self {
            bytes: [0; MAX_LEN],
            len: bytes.len() as u8,
        };
        token.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(token)
    }

    /// The token's characters.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Who a token was made for: the inputs of its MAC besides the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// The client's address, as recorded.
    pub client_ip: IpAddr,
    /// What the token imitates.
    pub kind: Kind,
    /// Which token of that kind in the page (a page with two passwords has ordinals 0 and 1).
    pub ordinal: u8,
}

impl Recipient {
    /// A recipient as stored (`canary_tokens` and the fleet's table: the address and the
    /// kind's name as text); `None` for a row this build cannot read (an unknown kind).
    pub fn parse(client_ip: &str, kind: &str, ordinal: u8) -> Option<Self> {
        Some(Self {
            client_ip: client_ip.parse().ok()?,
            kind: Kind::from_name(kind)?,
            ordinal,
        })
    }
}

/// Makes the tokens of one sensor from the key (`TARPIT_CANARY_KEY`).
#[derive(Clone)]
pub struct Minter {
    /// The HMAC keyed once; each token clones this state.
    keyed: Hmac<Sha256>,
    /// The sensor's id, fed to the MAC: two sensors sharing a key issue different tokens.
    sensor: String,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Minter(sensor {:?}, key <masked>)", self.sensor)
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TARPIT_CANARY_KEY: {0}")]
pub struct KeyError(String);

/// The shortest key accepted, in bytes: a short key could be guessed and tokens forged.
pub const MIN_KEY_LEN: usize = 16;

impl Minter {
    /// A minter for sensor `sensor` with `key`.
    pub fn new(key: &[u8], sensor: &str) -> Result<Self, KeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError(format!(
                "must be at least {MIN_KEY_LEN} bytes (for example `openssl rand -hex 32`), got {}",
                key.len()
            )));
        }
        let keyed = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|e| KeyError(format!("cannot key the MAC: {e}")))?;
        Ok(Self {
            keyed,
            sensor: sensor.to_owned(),
        })
    }

    /// The sensor these tokens are issued by.
    pub fn sensor(&self) -> &str {
        &self.sensor
    }

    /// The token for `recipient` on sensor `sensor` (this minter's own, or another sensor's
    /// of a fleet that shares the key).
    pub fn token_of(&self, sensor: &str, recipient: &Recipient) -> Token {
        let kind = recipient.kind;
        let mut bytes = [0u8; MAX_LEN];
        let prefix = kind.prefix();
        bytes[..prefix.len()].copy_from_slice(prefix);
        let alphabet = kind.alphabet();
        let mut at = prefix.len();
        let mut block = 0u8;
        while at < kind.token_len() {
            let mut mac = self.keyed.clone();
            mac.update(b"tarpit canary v1\0");
            mac.update(sensor.as_bytes());
            mac.update(b"\0");
            // The address's family and octets: no allocation, as a worker computes tokens
            // while it drips a page.
            match recipient.client_ip.to_canonical() {
                IpAddr::V4(v4) => {
                    mac.update(&[4]);
                    mac.update(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    mac.update(&[6]);
                    mac.update(&v6.octets());
                }
            }
            mac.update(kind.name().as_bytes());
            mac.update(&[0, recipient.ordinal, block]);
            for byte in mac.finalize().into_bytes() {
                if at == kind.token_len() {
                    break;
                }
                // 256 is a multiple of every alphabet's size but 62's; its bias (8 of 256) is
                // far below what guessing a 20-character token would need.
                bytes[at] = alphabet[usize::from(byte) % alphabet.len()];
                at += 1;
            }
            block += 1;
        }
        Token {
            bytes,
            len: kind.token_len() as u8,
        }
    }

    /// This sensor's token for `recipient`.
    pub fn token(&self, recipient: &Recipient) -> Token {
        self.token_of(&self.sensor, recipient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(ip: &str, kind: Kind, ordinal: u8) -> Recipient {
        Recipient {
            client_ip: ip.parse().unwrap(),
            kind,
            ordinal,
        }
    }

    #[test]
    fn a_stored_recipient_parses_back_and_an_unknown_row_does_not() {
        let parsed = Recipient::parse("203.0.113.7", Kind::Password.name(), 1);
        assert_eq!(parsed, Some(recipient("203.0.113.7", Kind::Password, 1)));
        assert_eq!(Recipient::parse("not an address", "password", 0), None);
        assert_eq!(
            Recipient::parse("203.0.113.7", "a kind from a newer build", 0),
            None
        );
    }

    #[test]
    fn every_kind_has_its_shape_and_is_stable() {
        let minter = Minter::new(b"0123456789abcdef0123", "sensor-a").unwrap();
        for kind in KINDS {
            let token = minter.token(&recipient("203.0.113.7", kind, 0));
            let text = std::str::from_utf8(token.as_bytes()).unwrap();
            assert_eq!(text.len(), kind.token_len(), "{kind:?}: {text}");
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()), "{text}");
            assert_eq!(token, minter.token(&recipient("203.0.113.7", kind, 0)));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        let key_id = minter.token(&recipient("203.0.113.7", Kind::AwsKeyId, 0));
        assert!(key_id.as_bytes().starts_with(b"AKIA"));
        assert!(key_id.as_bytes()[4..].iter().all(|b| BASE32.contains(b)));
        let link = minter.token(&recipient("203.0.113.7", Kind::Link, 0));
        assert!(link.as_bytes().iter().all(|b| HEX.contains(b)));
    }

    #[test]
    fn tokens_differ_by_client_ordinal_sensor_and_key() {
        let a = Minter::new(b"0123456789abcdef0123", "sensor-a").unwrap();
        let b = Minter::new(b"0123456789abcdef0123", "sensor-b").unwrap();
        let other_key = Minter::new(b"0123456789abcdef0124", "sensor-a").unwrap();
        let base = recipient("203.0.113.7", Kind::Password, 0);
        let token = a.token(&base);
        assert_ne!(token, a.token(&recipient("203.0.113.8", Kind::Password, 0)));
        assert_ne!(token, a.token(&recipient("203.0.113.7", Kind::Password, 1)));
        assert_ne!(token, b.token(&base));
        assert_eq!(b.token(&base), a.token_of("sensor-b", &base));
        assert_ne!(token, other_key.token(&base));
        // An IPv4-mapped address is the same client as the plain one.
        assert_eq!(
            token,
            a.token(&recipient("::ffff:203.0.113.7", Kind::Password, 0))
        );
    }

    #[test]
    fn a_short_key_is_refused_naming_the_variable() {
        let error = Minter::new(b"short", "s").unwrap_err().to_string();
        assert!(error.starts_with("TARPIT_CANARY_KEY:"), "{error}");
        assert!(error.contains("16"), "{error}");
        assert!(
            !format!("{:?}", Minter::new(b"0123456789abcdefXYZ", "s").unwrap()).contains("XYZ")
        );
    }
}
