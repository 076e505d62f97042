//! Connection caps: the total held at once and the number held from one client address.
//!
//! Both are checked at accept on every worker at once, so they are atomics rather than a map
//! behind a lock. The per-address count uses a count-min sketch: two tables of counters indexed
//! by two independent hashes of the address, the address's count being the smaller of its two
//! counters. It never under-counts (a scanner cannot dodge the cap), uses fixed memory whatever
//! the number of addresses, and over-counts only when an address collides with heavy addresses
//! in both tables at once, which at 2 x 65,536 counters is rare.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Counters per sketch row.
const SLOTS: usize = 1 << 16;

/// Why a connection was refused; the text is the recorded `end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `server.max_connections` are already held.
    MaxConnections,
    /// `server.max_connections_per_ip` are already held from this address.
    PerIp,
}

impl Refusal {
    /// The `end_reason` recorded for the refused connection.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "refused_max_connections",
            Refusal::PerIp => "refused_per_ip",
        }
    }
}

/// The shared counters.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    active: AtomicUsize,
    sketch: Option<Sketch>,
}

#[derive(Debug)]
struct Sketch {
    hashers: [std::collections::hash_map::RandomState; 2],
    rows: [Box<[AtomicU32]>; 2],
}

impl Sketch {
    fn new() -> Self {
        let row = || (0..SLOTS).map(|_| AtomicU32::new(0)).collect::<Box<[_]>>();
        Self {
            hashers: Default::default(),
            rows: [row(), row()],
        }
    }

    fn slots(&self, ip: IpAddr) -> [usize; 2] {
        let ip = ip.to_canonical();
        [0, 1].map(|i| self.hashers[i].hash_one(ip) as usize % SLOTS)
    }
}

/// Proof that a connection was admitted; dropping it releases its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    slots: Option<[usize; 2]>,
}

impl ConnectionLimits {
    /// Caps of `max_total` connections and `max_per_ip` per address (0 = no per-address cap).
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            active: AtomicUsize::new(0),
            sketch: (max_per_ip > 0).then(Sketch::new),
        }
    }

    /// Connections held right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Admits a connection from `ip`, or says which cap it hits.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        let slots = match &self.sketch {
            None => None,
            Some(sketch) => {
                let slots = sketch.slots(ip);
                let before =
                    [0, 1].map(|i| sketch.rows[i][slots[i]].fetch_add(1, Ordering::AcqRel));
                if before[0].min(before[1]) as usize >= self.max_per_ip {
                    release(sketch, slots);
                    self.active.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::PerIp);
                }
                Some(slots)
            }
        };
        Ok(ConnectionPermit {
            limits: self.clone(),
            slots,
        })
    }
}

fn release(sketch: &Sketch, slots: [usize; 2]) {
    for (row, slot) in sketch.rows.iter().zip(slots) {
        row[slot].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let (Some(sketch), Some(slots)) = (&self.limits.sketch, self.slots) {
            release(sketch, slots);
        }
        self.limits.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the soft open-file limit to the hard one (a tarpit's capacity is its file
/// descriptors) and returns the connection cap: `configured`, or, when 0, the limit less a
/// reserve for the database, logs and listeners.
pub fn effective_max_connections(configured: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const RESERVE: u64 = 64;
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            1024
        }
    };
    let by_fds = soft.saturating_sub(RESERVE).max(1) as usize;
    match configured {
        0 => by_fds,
        n if n > by_fds => {
            tracing::warn!(
                "server.max_connections = {n} exceeds what the open-file limit ({soft}) allows; \
                 accept will back off at the limit"
            );
            n
        }
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn total_cap_refuses_then_admits_after_release() {
        let limits = Arc::new(ConnectionLimits::new(2, 0));
        let a = limits.try_admit(ip("10.0.0.1")).unwrap();
        let _b = limits.try_admit(ip("10.0.0.2")).unwrap();
        assert_eq!(
            limits.try_admit(ip("10.0.0.3")).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(limits.active(), 2);
        drop(a);
        assert!(limits.try_admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn per_ip_cap_counts_each_address() {
        let limits = Arc::new(ConnectionLimits::new(1000, 3));
        let held: Vec<_> = (0..3)
            .map(|_| limits.try_admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(
            limits.try_admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerIp
        );
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert_eq!(
            limits.try_admit(ip("::ffff:192.0.2.1")).unwrap_err(),
            Refusal::PerIp
        );
        // Other addresses are unaffected.
        for i in 0..200 {
            assert!(limits.try_admit(ip(&format!("198.51.100.{i}"))).is_ok());
        }
        drop(held);
        assert!(limits.try_admit(ip("192.0.2.1")).is_ok());
        assert_eq!(limits.active(), 0);
    }

    #[test]
    fn zero_configured_follows_the_fd_limit() {
        let n = effective_max_connections(0);
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(n as u64, soft - 64);
        assert_eq!(effective_max_connections(10), 10);
    }
}
