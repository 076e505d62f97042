//! Client families: the groups a give-up time is learned for. A request belongs to four at
//! once: its client address, its exact User-Agent, its header order, and its tool (from a
//! prior's User-Agent match on the worker, or the classification's `tool:` tag on the
//! pipeline).
//!
//! A worker hashes the first three (and the prior's tool name) into [`FamilyKeys`] once per
//! request, without allocating; the pipeline keeps the readable names beside the model and
//! stores those, so the hashes never leave the process.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// What a family groups requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyKind {
    /// One client address.
    Address,
    /// One exact User-Agent (requests without one are in no User-Agent family: thousands of
    /// unrelated clients send none).
    UserAgent,
    /// One header order (the names as sent).
    HeaderOrder,
    /// One tool (`gobuster`, ...).
    Tool,
}

impl FamilyKind {
    /// Every kind, in the order a worker consults them (most specific first).
    pub const ALL: [FamilyKind; 4] = [
        FamilyKind::Address,
        FamilyKind::UserAgent,
        FamilyKind::HeaderOrder,
        FamilyKind::Tool,
    ];

    /// The name stored in SQLite and shown by `tarpit stats`.
    pub fn name(self) -> &'static str {
        match self {
            FamilyKind::Address => "address",
            FamilyKind::UserAgent => "user_agent",
            FamilyKind::HeaderOrder => "header_order",
            FamilyKind::Tool => "tool",
        }
    }

    /// The kind a stored name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Longest User-Agent kept as a family name; longer ones are told apart by their first bytes.
pub const MAX_NAME: usize = 256;

/// The hash of a family: its kind and its value (cut to [`MAX_NAME`] bytes).
pub fn family_key(kind: FamilyKind, value: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    kind.hash(&mut hasher);
    cut(value).hash(&mut hasher);
    hasher.finish()
}

/// `value` cut to at most [`MAX_NAME`] bytes on a character boundary.
pub fn cut(value: &str) -> &str {
    if value.len() <= MAX_NAME {
        return value;
    }
    let mut end = MAX_NAME;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The families of one request, hashed ([`family_key`]); `tool` is 0 when no prior matched
/// the User-Agent (the pipeline may still know the tool from the classification).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyKeys {
    /// The client address's family.
    pub address: u64,
    /// The exact User-Agent's family.
    pub user_agent: u64,
    /// The header order's family.
    pub header_order: u64,
    /// The prior-matched tool's family, or 0.
    pub tool: u64,
}

impl FamilyKeys {
    /// Hashes a request's families; `tool` is the name of the prior its User-Agent matched.
    pub fn of(
        client: IpAddr,
        user_agent: Option<&str>,
        header_order: &str,
        tool: Option<&str>,
    ) -> Self {
        Self {
            address: address_key(client),
            user_agent: user_agent
                .filter(|ua| !ua.is_empty())
                .map_or(0, |ua| family_key(FamilyKind::UserAgent, ua)),
            header_order: family_key(FamilyKind::HeaderOrder, header_order),
            tool: tool.map_or(0, |tool| family_key(FamilyKind::Tool, tool)),
        }
    }

    /// The key of one kind (0: none).
    pub fn get(&self, kind: FamilyKind) -> u64 {
        match kind {
            FamilyKind::Address => self.address,
            FamilyKind::UserAgent => self.user_agent,
            FamilyKind::HeaderOrder => self.header_order,
            FamilyKind::Tool => self.tool,
        }
    }
}

/// The address family's key, hashing the address without formatting it.
pub fn address_key(client: IpAddr) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    FamilyKind::Address.hash(&mut hasher);
    client.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_kind_and_value() {
        assert_eq!(
            family_key(FamilyKind::UserAgent, "curl/8"),
            family_key(FamilyKind::UserAgent, "curl/8")
        );
        assert_ne!(
            family_key(FamilyKind::UserAgent, "curl/8"),
            family_key(FamilyKind::Tool, "curl/8")
        );
        let keys = FamilyKeys::of(
            "192.0.2.1".parse().unwrap(),
            Some("gobuster/3.5"),
            "host,user-agent",
            Some("gobuster"),
        );
        assert_eq!(keys.tool, family_key(FamilyKind::Tool, "gobuster"));
        assert_eq!(keys.address, address_key("192.0.2.1".parse().unwrap()));
        assert_ne!(keys.address, address_key("192.0.2.2".parse().unwrap()));
        assert_eq!(FamilyKeys::of(keys_ip(), None, "", None).tool, 0);
    }

    fn keys_ip() -> IpAddr {
        "::1".parse().unwrap()
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        assert!(cut(&long).len() <= MAX_NAME);
        assert!(long.starts_with(cut(&long)));
        let a = format!("{}a", "x".repeat(MAX_NAME));
        let b = format!("{}b", "x".repeat(MAX_NAME));
        assert_eq!(
            family_key(FamilyKind::UserAgent, &a),
            family_key(FamilyKind::UserAgent, &b)
        );
        for kind in FamilyKind::ALL {
            assert_eq!(FamilyKind::from_name(kind.name()), Some(kind));
        }
    }
}
