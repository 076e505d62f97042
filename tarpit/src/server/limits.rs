//! Connection caps: the total held at once and the number held from one client address.
//!
//! Both are checked at accept on every worker at once, so they are atomics rather than a map
//! behind a lock. The per-address count uses a count-min sketch: two tables of counters indexed
//! by two independent hashes of the address, the address's count being the smaller of its two
//! counters. It never under-counts (a scanner cannot dodge the cap), uses fixed memory whatever
//! the number of addresses, and over-counts only when an address collides with heavy addresses
//! in both tables at once, which at 2 x 65,536 counters is rare.
//!
//! "One client" is an address aggregated by prefix: an IPv6 client owns at least a /64, so a
//! per-/128 cap would be no cap (default /64 for IPv6, /32 for IPv4). Behind a trusted proxy the
//! socket peer is the proxy, shared by every scanner; its connections are admitted under the
//! total cap only, and each is counted against its real client once a request names it
//! ([`ConnectionPermit::claim_client`]).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Counters per sketch row.
const SLOTS: usize = 1 << 16;
// A held flow keeps its slots as 16-bit numbers (`HeldPlace`).
const _: () = assert!(SLOTS <= 1 << 16);

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
    prefixes: ClientPrefixes,
    active: AtomicUsize,
    sketch: Option<Sketch>,
}

/// The prefix lengths that make one client for the per-client cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPrefixes {
    /// IPv4 prefix length (32: each address).
    pub v4: u8,
    /// IPv6 prefix length (64: each /64).
    pub v6: u8,
}

impl Default for ClientPrefixes {
    fn default() -> Self {
        Self { v4: 32, v6: 64 }
    }
}

impl ClientPrefixes {
    /// The network `ip` belongs to, as counted by the per-client cap. IPv4-mapped IPv6 peers
    /// (`::ffff:a.b.c.d`) count as IPv4.
    pub fn client_key(self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.v4.min(32)))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.v6.min(128)))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }
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

    fn slots(&self, key: IpAddr) -> [usize; 2] {
        [0, 1].map(|i| self.hashers[i].hash_one(key) as usize % SLOTS)
    }

    /// Takes a place in both counters, or none when the client already holds `max` places.
    fn acquire(&self, slots: [usize; 2], max: usize) -> bool {
        let before = [0, 1].map(|i| self.rows[i][slots[i]].fetch_add(1, Ordering::AcqRel));
        if before[0].min(before[1]) as usize >= max {
            release(self, slots);
            return false;
        }
        true
    }
}

/// Proof that a connection was admitted; dropping it releases its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    slots: Option<[usize; 2]>,
}

impl ConnectionLimits {
    /// Caps of `max_total` connections and `max_per_ip` per client (0 = no per-client cap),
    /// a client being an address aggregated by `prefixes`.
    pub fn new(max_total: usize, max_per_ip: usize, prefixes: ClientPrefixes) -> Self {
        Self {
            max_total,
            max_per_ip,
            prefixes,
            active: AtomicUsize::new(0),
            sketch: (max_per_ip > 0).then(Sketch::new),
        }
    }

    /// Gives back the per-client place of a held flow that ended.
    pub fn release_held(&self, place: HeldPlace) {
        if let Some(sketch) = &self.sketch {
            release(sketch, place.map(usize::from));
        }
    }

    /// Connections held right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Admits a connection, or says which cap it hits. `client` is the peer's address, or
    /// `None` for a trusted proxy: its connections count only under the total cap until a
    /// request names the real client.
    pub fn try_admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
    ) -> Result<ConnectionPermit, Refusal> {
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        let mut permit = ConnectionPermit {
            limits: self.clone(),
            slots: None,
        };
        if let Some(ip) = client {
            // On refusal the permit is dropped, which gives the total place back.
            permit.claim_client(ip)?;
        }
        Ok(permit)
    }
}

/// A client's place under the per-client cap, kept by a socketless-held flow after its
/// socket (and its place under the total cap, which counts descriptors) is gone: the two
/// sketch slots, which fit in 16 bits each.
pub type HeldPlace = [u16; 2];

impl ConnectionPermit {
    /// The per-client place this connection holds, if any, to be kept by a held flow.
    pub fn client_place(&self) -> Option<HeldPlace> {
        self.slots.map(|slots| slots.map(|slot| slot as u16))
    }

    /// Hands the per-client place over (to a held flow, which gives it back with
    /// [`ConnectionLimits::release_held`]): dropping the permit then releases only the total
    /// place.
    pub fn hand_over_client_place(&mut self) {
        self.slots = None;
    }

    /// Counts this connection against `client` (prefix-aggregated) under the per-client cap,
    /// giving back the place of any client it was counted against before (a proxy's
    /// keep-alive connection may carry several clients in turn). On refusal the connection
    /// holds no per-client place.
    pub fn claim_client(&mut self, client: IpAddr) -> Result<(), Refusal> {
        let Some(sketch) = &self.limits.sketch else {
            return Ok(());
        };
        let slots = sketch.slots(self.limits.prefixes.client_key(client));
        if self.slots == Some(slots) {
            return Ok(());
        }
        if let Some(previous) = self.slots.take() {
            release(sketch, previous);
        }
        if !sketch.acquire(slots, self.limits.max_per_ip) {
            return Err(Refusal::PerIp);
        }
        self.slots = Some(slots);
        Ok(())
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

    /// A connection handed to the socketless hold gives back its place under the total cap
    /// (it no longer holds a descriptor) but keeps its client's until the held flow ends.
    #[test]
    fn a_held_flow_keeps_its_clients_place() {
        let limits = Arc::new(ConnectionLimits::new(2, 2, ClientPrefixes::default()));
        let mut places = Vec::new();
        for _ in 0..2 {
            let mut permit = limits.try_admit(ip("192.0.2.7")).unwrap();
            places.push(permit.client_place().unwrap());
            permit.hand_over_client_place();
        }
        assert_eq!(limits.active(), 0, "no descriptors held");
        assert_eq!(
            limits.try_admit(ip("192.0.2.7")).unwrap_err(),
            Refusal::PerIp,
            "two held flows are two of the client's places"
        );
        let _other = limits.try_admit(ip("192.0.2.8")).unwrap();
        limits.release_held(places.pop().unwrap());
        let _again = limits.try_admit(ip("192.0.2.7")).unwrap();
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_by_address() {
        let limits = Arc::new(ConnectionLimits::new(1000, 2, ClientPrefixes::default()));
        let _a = limits.try_admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = limits.try_admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            limits
                .try_admit(ip("2001:db8:1:2:dead:beef::1"))
                .unwrap_err(),
            Refusal::PerIp,
            "a third address of the same /64 is the same client"
        );
        assert!(limits.try_admit(ip("2001:db8:1:3::1")).is_ok());
        let _c = limits.try_admit(ip("192.0.2.1")).unwrap();
        let _d = limits.try_admit(ip("192.0.2.1")).unwrap();
        assert!(limits.try_admit(ip("192.0.2.2")).is_ok());
        let wide = ClientPrefixes { v4: 24, v6: 48 };
        assert_eq!(
            wide.client_key("192.0.2.77".parse().unwrap()),
            "192.0.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            wide.client_key("2001:db8:1:2::1".parse().unwrap()),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn proxy_connections_count_against_the_client_they_carry() {
        let limits = Arc::new(ConnectionLimits::new(1000, 2, ClientPrefixes::default()));
        // Many connections from the proxy itself are admitted under the total cap only.
        let mut from_proxy: Vec<_> = (0..5).map(|_| limits.try_admit(None).unwrap()).collect();
        let scanner = "198.51.100.9".parse().unwrap();
        from_proxy[0].claim_client(scanner).unwrap();
        from_proxy[1].claim_client(scanner).unwrap();
        assert_eq!(from_proxy[2].claim_client(scanner), Err(Refusal::PerIp));
        // The scanner at its cap does not starve another client behind the same proxy.
        from_proxy[3]
            .claim_client("203.0.113.4".parse().unwrap())
            .unwrap();
        // A connection moving to another client gives its old place back.
        from_proxy[1]
            .claim_client("203.0.113.5".parse().unwrap())
            .unwrap();
        from_proxy[2].claim_client(scanner).unwrap();
        drop(from_proxy);
        assert_eq!(limits.active(), 0);
        assert!(
            limits
                .sketch
                .as_ref()
                .unwrap()
                .rows
                .iter()
                .all(|row| row.iter().all(|c| c.load(Ordering::Relaxed) == 0))
        );
    }

    #[test]
    fn total_cap_refuses_then_admits_after_release() {
        let limits = Arc::new(ConnectionLimits::new(2, 0, ClientPrefixes::default()));
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
        let limits = Arc::new(ConnectionLimits::new(1000, 3, ClientPrefixes::default()));
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
