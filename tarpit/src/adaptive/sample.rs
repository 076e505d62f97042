//! Give-up samples and the rules that keep one client from steering a shared figure.
//!
//! A shared family (a User-Agent, a header order, a tool) is what other clients are planned
//! with, so an attacker who can move its figure can have every browser answered in two seconds,
//! or keep a real scanner held past its timeout. Against that:
//! - each sample carries its client's network prefix (an IPv4 /24, an IPv6 /64), and a family
//!   keeps at most one sample per prefix: the latest. A thousand closes from one prefix weigh
//!   what one does;
//! - a shared family has a figure only once [`Evidence::min_prefixes`] distinct prefixes gave up
//!   (3 by default, `[adaptive] min_prefixes`); an address family, which only ever plans that
//!   one address's own responses, needs its own samples only;
//! - samples expire after [`SAMPLE_TTL`], so an old campaign stops counting;
//! - the snapshot bounds every figure (`super::snapshot`): never below a floor, never above a
//!   known tool's own timeout.

use std::net::IpAddr;

/// Samples older than this no longer count (seven days).
pub const SAMPLE_TTL: i64 = 7 * 86_400;

/// Samples kept per family (one per prefix).
pub const RECENT: usize = 16;

/// A client's network prefix: the /24 of an IPv4 address (IPv4-mapped IPv6 included), the /64
/// of an IPv6 one, as the address's 128 bits with the rest zeroed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix(u128);

impl Prefix {
    /// The prefix a client address belongs to.
    pub fn of(client: IpAddr) -> Self {
        match client {
            IpAddr::V4(v4) => Self(u128::from(v4.to_ipv6_mapped()) & !0xff),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of(IpAddr::V4(v4)),
                None => Self(u128::from(v6) & !((1u128 << 64) - 1)),
            },
        }
    }

    /// The prefix in CIDR notation (what is stored).
    pub fn text(self) -> String {
        let v6 = std::net::Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}/24"),
            None => format!("{v6}/64"),
        }
    }

    /// Reads [`Prefix::text`] back.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, _) = text.split_once('/')?;
        address.parse::<IpAddr>().ok().map(Self::of)
    }

    /// The prefix samples stored before prefixes were recorded are given: all of them count as
    /// one client, so nothing learned then moves a shared figure.
    pub const LEGACY: Prefix = Prefix(0);
}

/// One give-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds into the response when the client gave up.
    pub seconds: f32,
    /// Its client's prefix.
    pub prefix: Prefix,
    /// When (UNIX seconds).
    pub at: i64,
}

/// What a family needs before its figure is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// The quantile of the samples planned with.
    pub quantile: f64,
    /// Samples (each from its own prefix) needed.
    pub min_samples: usize,
    /// Distinct prefixes needed (1 for an address family).
    pub min_prefixes: usize,
}

/// A family's samples: at most [`RECENT`] (for a shared family one per prefix), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(Vec<Sample>);

impl Samples {
    /// Notes a give-up; `one_per_prefix` (shared families) replaces the earlier one of the
    /// same prefix, an address family keeps its own latest [`RECENT`].
    pub fn remember(&mut self, sample: Sample, one_per_prefix: bool) {
        if one_per_prefix {
            self.0.retain(|s| s.prefix != sample.prefix);
        }
        self.0.push(sample);
        if self.0.len() > RECENT {
            self.0.remove(0);
        }
    }

    /// The samples, oldest first.
    pub fn all(&self) -> &[Sample] {
        &self.0
    }

    /// Forgets every sample (a family whose meaning changed).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The give-up time to plan with at `now`: the quantile (nearest rank) of the unexpired
    /// samples, once there are enough of them from enough prefixes.
    pub fn figure(&self, evidence: &Evidence, now: i64) -> Option<f64> {
        let fresh_samples: Vec<&Sample> =
            self.0.iter().filter(|s| now - s.at <= SAMPLE_TTL).collect();
        let mut prefixes: Vec<Prefix> = fresh_samples.iter().map(|s| s.prefix).collect();
        prefixes.sort_unstable_by_key(|p| p.0);
        prefixes.dedup();
        if fresh_samples.len() < evidence.min_samples.max(1)
            || prefixes.len() < evidence.min_prefixes.max(1)
        {
            return None;
        }
        let mut fresh: Vec<f32> = fresh_samples.iter().map(|s| s.seconds).collect();
        fresh.sort_by(f32::total_cmp);
        let rank = (evidence.quantile * fresh.len() as f64).ceil() as usize;
        Some(f64::from(fresh[rank.clamp(1, fresh.len()) - 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: f32, client: &str, at: i64) -> Sample {
        Sample {
            seconds,
            prefix: Prefix::of(client.parse().unwrap()),
            at,
        }
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_64_and_read_back() {
        let a = Prefix::of("203.0.113.7".parse().unwrap());
        assert_eq!(a, Prefix::of("203.0.113.200".parse().unwrap()));
        assert_eq!(a, Prefix::of("::ffff:203.0.113.9".parse().unwrap()));
        assert_ne!(a, Prefix::of("203.0.114.7".parse().unwrap()));
        assert_eq!(a.text(), "203.0.113.0/24");
        let b = Prefix::of("2001:db8:1:2:3:4:5:6".parse().unwrap());
        assert_eq!(b, Prefix::of("2001:db8:1:2::9".parse().unwrap()));
        assert_eq!(b.text(), "2001:db8:1:2::/64");
        for p in [a, b] {
            assert_eq!(Prefix::parse(&p.text()), Some(p));
        }
    }

    #[test]
    fn one_prefix_counts_once_and_old_samples_expire() {
        let evidence = Evidence {
            quantile: 0.1,
            min_samples: 3,
            min_prefixes: 3,
        };
        let mut samples = Samples::default();
        for i in 0..50 {
            samples.remember(sample(2.0, &format!("198.51.100.{i}"), 1000), true);
        }
        assert_eq!(samples.all().len(), 1);
        assert_eq!(samples.figure(&evidence, 1000), None);
        samples.remember(sample(9.0, "192.0.2.1", 1000), true);
        samples.remember(sample(10.0, "2001:db8::1", 1000), true);
        assert_eq!(samples.figure(&evidence, 1000), Some(2.0));
        assert_eq!(samples.figure(&evidence, 1000 + SAMPLE_TTL + 1), None);
        for i in 0..40 {
            samples.remember(sample(5.0, &format!("10.{i}.0.1"), 2000), true);
        }
        assert_eq!(samples.all().len(), RECENT);
        // An address family keeps its own give-ups, all from its one prefix.
        let mut own = Samples::default();
        for seconds in [3.0, 4.0, 5.0] {
            own.remember(sample(seconds, "192.0.2.7", 1000), false);
        }
        let address = Evidence {
            min_prefixes: 1,
            ..evidence
        };
        assert_eq!(own.figure(&address, 1000), Some(3.0));
        assert_eq!(own.figure(&evidence, 1000), None);
    }
}
