//! A set of TCP ports written as the operator writes them: `"1-65535"`, `"1-21,23-65535"`,
//! `"80,443,8000-8999"` (`[server] ports`, `[server] exclude_ports`), and the bitmap the
//! `sk_lookup` program reads (one bit per port, 1,024 words of 64).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Words of the program's port bitmap.
pub const WORDS: usize = tarpit_ebpf::STEER_PORT_WORDS as usize;

/// A set of ports 1-65535, as a bitmap (8 KiB): membership and set differences are word
/// operations, and the program's map is written word by word.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: Box<[u64; WORDS]>,
}

/// Why a port list could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortSetError {
    /// An item is neither a port nor a range of ports.
    #[error("\"{0}\" is not a port (1-65535) or a range of ports (\"1000-2000\")")]
    NotAPort(String),
    /// A range runs backwards.
    #[error("range \"{0}\" ends before it starts")]
    Backwards(String),
    /// Nothing in the list.
    #[error("no port listed")]
    Empty,
}

impl PortSet {
    /// No port.
    pub fn empty() -> Self {
        Self {
            words: Box::new([0; WORDS]),
        }
    }

    /// Reads a comma-separated list of ports and inclusive ranges; spaces are ignored.
    pub fn parse(text: &str) -> Result<Self, PortSetError> {
        let mut set = Self::empty();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let port = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| PortSetError::NotAPort(item.to_owned()))
            };
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(item)?, port(item)?),
            };
            if last < first {
                return Err(PortSetError::Backwards(item.to_owned()));
            }
            for p in first..=last {
                set.insert(p);
            }
        }
        if set.is_empty() {
            return Err(PortSetError::Empty);
        }
        Ok(set)
    }

    /// Adds `port`.
    pub fn insert(&mut self, port: u16) {
        self.words[usize::from(port) / 64] |= 1 << (port % 64);
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.words[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    /// How many ports.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether no port is in the set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ports in `self` and not in `other`.
    pub fn without(&self, other: &PortSet) -> PortSet {
        let mut out = self.clone();
        for (word, taken) in out.words.iter_mut().zip(other.words.iter()) {
            *word &= !taken;
        }
        out
    }

    /// The bitmap as the program reads it.
    pub fn words(&self) -> &[u64; WORDS] {
        &self.words
    }

    /// The ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=u16::MAX).filter(|p| self.contains(*p))
    }

    /// The ranges, ascending: what [`fmt::Display`] writes.
    fn ranges(&self) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for port in self.iter() {
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == port => *last = port,
                _ => ranges.push((port, port)),
            }
        }
        ranges
    }
}

impl fmt::Display for PortSet {
    /// The shortest list of ports and ranges, the form [`PortSet::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (a, b) in self.ranges() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet(\"{self}\")")
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PortSet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_and_lists() {
        let all = PortSet::parse("1-65535").unwrap();
        assert_eq!(all.len(), 65_535);
        assert!(all.contains(1) && all.contains(65_535) && !all.contains(0));
        let but_ssh = PortSet::parse("1-21, 23-65535").unwrap();
        assert_eq!(but_ssh.len(), 65_534);
        assert!(!but_ssh.contains(22) && but_ssh.contains(21) && but_ssh.contains(23));
        let few = PortSet::parse("80,443,8000-8002").unwrap();
        assert_eq!(few.iter().collect::<Vec<_>>(), [80, 443, 8000, 8001, 8002]);
    }

    #[test]
    fn writes_what_it_reads() {
        for text in ["1-65535", "1-21,23-65535", "80,443,8000-8002", "65535"] {
            assert_eq!(PortSet::parse(text).unwrap().to_string(), text);
        }
        let json = serde_json::to_string(&PortSet::parse("22,80-81").unwrap()).unwrap();
        assert_eq!(json, "\"22,80-81\"");
        let back: PortSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, PortSet::parse("22,80-81").unwrap());
    }

    #[test]
    fn refuses_what_is_not_a_port() {
        assert_eq!(
            PortSet::parse("0-10"),
            Err(PortSetError::NotAPort("0-10".into()))
        );
        assert_eq!(
            PortSet::parse("80,65536"),
            Err(PortSetError::NotAPort("65536".into()))
        );
        assert_eq!(
            PortSet::parse("http"),
            Err(PortSetError::NotAPort("http".into()))
        );
        assert_eq!(
            PortSet::parse("90-80"),
            Err(PortSetError::Backwards("90-80".into()))
        );
        assert_eq!(PortSet::parse(" , "), Err(PortSetError::Empty));
    }

    #[test]
    fn differences_and_bits_are_the_programs_layout() {
        let all = PortSet::parse("1-65535").unwrap();
        let taken = PortSet::parse("22,9100").unwrap();
        let steered = all.without(&taken);
        assert!(!steered.contains(22) && !steered.contains(9100) && steered.contains(80));
        // Port 22 is bit 22 of word 0; port 9100 is bit 9100 % 64 of word 9100 / 64.
        assert_eq!(steered.words()[0] & (1 << 22), 0);
        assert_eq!(steered.words()[9100 / 64] & (1 << (9100 % 64)), 0);
        assert_eq!(steered.words()[0] & 1, 0, "port 0 is never steered");
    }
}
