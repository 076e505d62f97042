//! Every port without NAT (`[server] ports`): a BPF `sk_lookup` program, attached to the
//! network namespace, hands each new TCP connection for a chosen port and local address to
//! the tarpit's listener (the design of Cloudflare's tubular; kernel documentation
//! `Documentation/bpf/prog_sk_lookup.rst`, Linux 5.9+).
//!
//! Compared with `iptables ... -j REDIRECT`: nothing is translated, so no conntrack entry is
//! made for the tarpit's sake (a SYN flood cannot fill the table and cost real connections),
//! and the port and address the client dialled are simply the accepted socket's local address
//! (`getsockname`, which the worker reads anyway): rows get `target_port_source = 'sk_lookup'`.
//!
//! What the program steers is decided in user space and written to its maps:
//! - the ports: `[server] ports` minus `[server] exclude_ports` minus every port another
//!   service of the namespace listens on (sshd, the metrics endpoint, a web server started
//!   later). [`ListenerWatch`] asks the kernel for the listening sockets (sock_diag, see
//!   [`listeners`]) at start and every [`SCAN_INTERVAL`] afterwards, and gives a port back the
//!   scan after its service starts listening, within a second. The tarpit's own listeners
//!   (told apart by inode) do not count, so its own port is steered on every address too;
//! - the addresses: `[server] prefixes` (a longest-prefix-match trie), or every local address
//!   when none is set;
//! - the listener: one socket of the workers' SO_REUSEPORT group, so the kernel's reuseport
//!   selection (keyed by a secret hash of the 4-tuple) still picks the worker.
//!
//! How it holds against crafted traffic: the program only reads its maps; no packet writes
//! state, so a flood of SYNs to every port costs one array and one trie lookup each and leaves
//! nothing behind (the listener's accept queue and SYN cookies handle the flood as on a single
//! port). A client cannot choose the worker (the reuseport hash is keyed by the kernel), and
//! cannot make the tarpit take a port from a local service: the steered ports are decided only
//! by configuration and by which sockets listen on the host.
//!
//! Attaching needs CAP_BPF and CAP_NET_ADMIN at start only; the port map is rewritten afterwards
//! through its open descriptor, which needs no capability (Linux 6.5+) and only the `bpf` map
//! commands the system-call allow-list already permits to the eBPF hook.

pub mod listeners;
pub mod ports;

use crate::error_chain::error_chain;
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, SockMap};
use aya::programs::SkLookup;
use ipnet::IpNet;
use tarpit_ebpf::{
    HELD_MAP_NAME, MAP_NAME, STEER_ANY_ADDRESS_GLOBAL, STEER_LISTENER_MAP_NAME,
    STEER_PORTS_MAP_NAME, STEER_PREFIXES_MAP_NAME, STEER_PROGRAM_NAME,
};

use listeners::ListenerScanner;
use ports::PortSet;

/// How often the listening sockets of the namespace are looked at again.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// What `[server]` asks to steer.
#[derive(Debug, Clone)]
pub struct SteerSettings {
    /// `[server] ports`.
    pub ports: PortSet,
    /// `[server] exclude_ports` (empty when unset).
    pub exclude: PortSet,
    /// `[server] prefixes`; empty: every local address.
    pub prefixes: Vec<IpNet>,
}

impl SteerSettings {
    /// The ports the program may steer before looking at other listeners: `ports` minus the
    /// exclusions. A connection reaching the tarpit on one of these came through the program.
    pub fn candidate_ports(&self) -> PortSet {
        self.ports.without(&self.exclude)
    }
}

/// Why steering could not start.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// This binary has no eBPF object inside.
    #[error(
        "this binary was built without the eBPF object (run `cargo xtask build-ebpf`, then rebuild)"
    )]
    NoObject,
    /// The maps could not be created or filled.
    #[error("creating the sk_lookup maps failed: {0} (needs root, or CAP_BPF + CAP_NET_ADMIN)")]
    Maps(String),
    /// The kernel refused the program: too old for sk_lookup (5.9), or no privileges.
    #[error(
        "the kernel refused the sk_lookup program: {0} (needs Linux 5.9+ with BPF, and CAP_BPF + CAP_NET_ADMIN)"
    )]
    Load(String),
    /// Attaching to the network namespace failed.
    #[error("attaching sk_lookup to this network namespace failed: {0}")]
    Attach(String),
    /// The listening sockets could not be listed.
    #[error("listing the listening sockets (sock_diag) failed: {0}")]
    Scan(#[from] std::io::Error),
}

/// The attached program (dropped: detached) and what it was set up with.
#[derive(Debug)]
pub struct Steering {
    _ebpf: aya::Ebpf,
}

/// Keeps the program's port map equal to the steered ports as services come and go.
pub struct ListenerWatch {
    scanner: ListenerScanner,
    map: Array<MapData, u64>,
    candidates: PortSet,
    own_inodes: Vec<u32>,
    written: PortSet,
}

impl std::fmt::Debug for ListenerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerWatch")
            .field("steered", &self.written.len())
            .field("own_inodes", &self.own_inodes)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Loads the program, fills its maps (prefixes, the listener, the ports not taken by
    /// another service right now) and attaches it to this network namespace. `listeners` are
    /// the workers' listeners: the first is the one steered to, all are the tarpit's own.
    pub fn start(
        settings: &SteerSettings,
        listeners: &[std::net::TcpListener],
    ) -> Result<(Self, ListenerWatch), SteerError> {
        let object = crate::ebpf::OBJECT.ok_or(SteerError::NoObject)?;
        let maps = |e: &dyn std::fmt::Display| SteerError::Maps(e.to_string());
        let any_address = u32::from(settings.prefixes.is_empty());
        let mut ebpf = aya::EbpfLoader::new()
            // The attribution hook's maps are not used by this copy of the object.
            .map_max_entries(MAP_NAME, 64)
            .map_max_entries(HELD_MAP_NAME, 1)
            .map_max_entries(
                STEER_PREFIXES_MAP_NAME,
                settings.prefixes.len().max(1) as u32,
            )
            .override_global(STEER_ANY_ADDRESS_GLOBAL, &any_address, true)
            .load(object)
            .map_err(|e| maps(&e))?;

        let mut prefixes: LpmTrie<_, [u8; 16], u8> = ebpf
            .map_mut(STEER_PREFIXES_MAP_NAME)
            .ok_or_else(|| maps(&"map STEER_PREFIXES missing"))?
            .try_into()
            .map_err(|e| maps(&e))?;
        for prefix in &settings.prefixes {
            let (length, address) = trie_key(prefix);
            prefixes
                .insert(&Key::new(length, address), 1, 0)
                .map_err(|e| maps(&e))?;
        }
        let listener = listeners
            .first()
            .ok_or_else(|| maps(&"no listener to steer to"))?;
        let mut socket_map: SockMap<_> = ebpf
            .map_mut(STEER_LISTENER_MAP_NAME)
            .ok_or_else(|| maps(&"map STEER_LISTENER missing"))?
            .try_into()
            .map_err(|e| maps(&e))?;
        socket_map
            .set(0, &listener.as_raw_fd(), 0)
            .map_err(|e| maps(&e))?;

        let map: Array<MapData, u64> = ebpf
            .take_map(STEER_PORTS_MAP_NAME)
            .ok_or_else(|| maps(&"map STEER_PORTS missing"))?
            .try_into()
            .map_err(|e| maps(&e))?;
        let own_inodes = listeners
            .iter()
            .map(listeners::inode_of)
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut watch = ListenerWatch {
            scanner: ListenerScanner::open()?,
            map,
            candidates: settings.candidate_ports(),
            own_inodes,
            written: PortSet::empty(),
        };
        // The ports are set before the program is attached: no service loses a connection.
        watch.write_all()?;

        let program: &mut SkLookup = ebpf
            .program_mut(STEER_PROGRAM_NAME)
            .ok_or_else(|| SteerError::Load(format!("program {STEER_PROGRAM_NAME} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| SteerError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| SteerError::Load(error_chain(&e)))?;
        let netns = std::fs::File::open("/proc/self/ns/net")
            .map_err(|e| SteerError::Attach(format!("/proc/self/ns/net: {e}")))?;
        program
            .attach(netns)
            .map_err(|e| SteerError::Attach(error_chain(&e)))?;
        Ok((Self { _ebpf: ebpf }, watch))
    }
}

impl ListenerWatch {
    /// The ports steered as last written.
    pub fn steered(&self) -> &PortSet {
        &self.written
    }

    /// Writes every word of the port map from a fresh scan.
    fn write_all(&mut self) -> Result<(), SteerError> {
        let steered = self.scan()?;
        for (index, word) in steered.words().iter().enumerate() {
            self.map
                .set(index as u32, word, 0)
                .map_err(|e| SteerError::Maps(e.to_string()))?;
        }
        self.written = steered;
        Ok(())
    }

    fn scan(&mut self) -> std::io::Result<PortSet> {
        let others = self.scanner.ports_of_others(&self.own_inodes)?;
        Ok(self.candidates.without(&others))
    }

    /// Scans again and rewrites the words that changed; returns the ports given back to a
    /// service and the ports taken again.
    pub fn refresh(&mut self) -> Result<(Vec<u16>, Vec<u16>), SteerError> {
        let steered = self.scan()?;
        let mut released = Vec::new();
        let mut taken = Vec::new();
        for (index, (new, old)) in steered
            .words()
            .iter()
            .zip(self.written.words().iter())
            .enumerate()
        {
            if new == old {
                continue;
            }
            self.map
                .set(index as u32, new, 0)
                .map_err(|e| SteerError::Maps(e.to_string()))?;
            for bit in 0..64u16 {
                let port = index as u16 * 64 + bit;
                match (new >> bit & 1, old >> bit & 1) {
                    (0, 1) => released.push(port),
                    (1, 0) => taken.push(port),
                    _ => {}
                }
            }
        }
        self.written = steered;
        Ok((released, taken))
    }

    /// Runs [`ListenerWatch::refresh`] every [`SCAN_INTERVAL`] on a thread of its own until
    /// `cancel`; a failed scan keeps the last ports and is reported once a minute.
    pub fn spawn(
        mut self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let warnings = crate::log_throttle::SharedLogThrottle::new(Duration::from_secs(60));
        std::thread::Builder::new()
            .name("steer-watch".into())
            .spawn(move || {
                while !cancel.is_cancelled() {
                    std::thread::sleep(SCAN_INTERVAL);
                    match self.refresh() {
                        Ok((released, taken)) => report(&released, &taken),
                        Err(error) => {
                            if let Some(suppressed) = warnings.check() {
                                tracing::warn!(suppressed, "sk_lookup: {error}; ports unchanged");
                            }
                        }
                    }
                }
            })
    }
}

/// Says which ports changed hands, naming at most a few.
fn report(released: &[u16], taken: &[u16]) {
    let few = |ports: &[u16]| {
        let shown: Vec<String> = ports.iter().take(8).map(u16::to_string).collect();
        let more = ports.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} and {more} more", shown.join(","))
        } else {
            shown.join(",")
        }
    };
    if !released.is_empty() {
        tracing::info!(
            "sk_lookup: another service listens on port {}: left to it",
            few(released)
        );
    }
    if !taken.is_empty() {
        tracing::info!(
            "sk_lookup: nothing listens on port {} any more: steered to the tarpit again",
            few(taken)
        );
    }
}

/// The addresses answered for, as the start-up line and `check-config` say them.
pub fn describe_prefixes(prefixes: &[IpNet]) -> String {
    if prefixes.is_empty() {
        return "every local address".to_owned();
    }
    let list: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
    list.join(", ")
}

/// The trie key of a prefix: IPv4 as IPv4-mapped IPv6 (a /24 is a /120).
fn trie_key(prefix: &IpNet) -> (u32, [u8; 16]) {
    match prefix {
        IpNet::V4(v4) => (
            96 + u32::from(v4.prefix_len()),
            tarpit_ebpf::v4_mapped(v4.network().octets()),
        ),
        IpNet::V6(v6) => (u32::from(v6.prefix_len()), v6.network().octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_mapped_trie_keys() {
        let (length, address) = trie_key(&"10.1.2.0/24".parse().unwrap());
        assert_eq!(length, 120);
        assert_eq!(address, tarpit_ebpf::v4_mapped([10, 1, 2, 0]));
        let (length, address) = trie_key(&"2001:db8:1::/48".parse().unwrap());
        assert_eq!(length, 48);
        assert_eq!(&address[..6], &[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
        // A host address in a prefix is the network address.
        let (_, address) = trie_key(&"10.1.2.77/24".parse().unwrap());
        assert_eq!(address, tarpit_ebpf::v4_mapped([10, 1, 2, 0]));
    }

    #[test]
    fn candidates_leave_out_the_exclusions() {
        let settings = SteerSettings {
            ports: PortSet::parse("1-65535").unwrap(),
            exclude: PortSet::parse("22,9100").unwrap(),
            prefixes: vec![],
        };
        let candidates = settings.candidate_ports();
        assert_eq!(candidates.len(), 65_533);
        assert!(!candidates.contains(22) && candidates.contains(23));
    }
}
