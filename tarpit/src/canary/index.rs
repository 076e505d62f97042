//! The tokens this sensor (and its fleet) has issued, for recognising them when they come back.
//!
//! Bounded: at most `max` tokens, the oldest forgotten first. A token is keyed by its own
//! characters in a `HashMap` with the standard library's randomly keyed SipHash, so no client
//! can choose candidates that collide. Tokens are a function of the recipient (see
//! [`super::token`]): a client that fetches bait again and again is issued the same tokens and
//! adds nothing; only new addresses add tokens, and each address adds at most the persona's
//! few slots.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use super::token::{Recipient, Token};

/// Who a token was issued to, by which sensor, and when first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The issuing sensor's id.
    pub sensor: Arc<str>,
    /// The client and the slot.
    pub recipient: Recipient,
    /// When it was first served (as far as this process knows).
    pub first_issued: SystemTime,
    /// The request path that first served it.
    pub path: Arc<str>,
}

/// The recognisable tokens.
#[derive(Debug)]
pub struct TokenIndex {
    tokens: HashMap<Token, Issued>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<Token>,
    max: usize,
}

impl TokenIndex {
    /// An empty index holding at most `max` tokens.
    pub fn new(max: usize) -> Self {
        Self {
            tokens: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Adds `token`; `false` when it was known already (its first issue is kept).
    pub fn insert(&mut self, token: Token, issued: Issued) -> bool {
        if self.tokens.contains_key(&token) {
            return false;
        }
        if self.tokens.len() == self.max
            && let Some(oldest) = self.order.pop_front()
        {
            self.tokens.remove(&oldest);
        }
        self.tokens.insert(token, issued);
        self.order.push_back(token);
        true
    }

    /// Whom `token` was issued to, if it is one.
    pub fn get(&self, token: &Token) -> Option<&Issued> {
        self.tokens.get(token)
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::token::{Kind, Minter};
    use super::*;

    fn issued(ip: u32) -> Issued {
        Issued {
            sensor: "s".into(),
            recipient: Recipient {
                client_ip: std::net::Ipv4Addr::from(ip).into(),
                kind: Kind::Password,
                ordinal: 0,
            },
            first_issued: SystemTime::UNIX_EPOCH,
            path: "/.env".into(),
        }
    }

    #[test]
    fn the_index_is_bounded_and_forgets_the_oldest() {
        let minter = Minter::new(b"0123456789abcdef0123", "s").unwrap();
        let mut index = TokenIndex::new(1000);
        let token = |ip: u32| minter.token(&issued(ip).recipient);
        for ip in 0..5000 {
            index.insert(token(ip), issued(ip));
            // The same client again adds nothing.
            assert!(!index.insert(token(ip), issued(ip)));
        }
        assert_eq!(index.len(), 1000);
        assert!(index.get(&token(0)).is_none());
        assert_eq!(index.get(&token(4999)), Some(&issued(4999)));
    }
}
