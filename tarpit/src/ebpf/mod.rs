//! eBPF port attribution: which port a client dialled before iptables/nft REDIRECT or DNAT sent
//! it to the tarpit, recorded by a netfilter hook just after NAT (`tarpit-ebpf`).
//!
//! [`Attribution::start`] loads the embedded object (built by `cargo xtask build-ebpf`) when the
//! mode, the kernel (>= 6.4, BTF) and the privileges (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) allow;
//! otherwise it says why, once, and the server runs on the other sources. The server asks
//! [`EbpfMap::take`] for each accepted connection's own 4-tuple (or, behind a trusted proxy, the
//! client connection's 4-tuple the proxy reports).

pub mod btf;
pub mod held;
mod inserts;
mod mapped;
pub mod netfilter;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tarpit_ebpf::{
    ConnKey, HELD_MAP_NAME, HELD_PORT_GLOBAL, HELD_STATUS_MAP_NAME, INSERTS_MAP_NAME, MAP_NAME,
    OFFSETS_GLOBAL, OrigDst, PROGRAM_NAME, SKB_OFFSETS_GLOBAL, SkbOffsets, v4_mapped,
};

/// The eBPF object, embedded at build time when `cargo xtask build-ebpf` had built it.
#[cfg(tarpit_ebpf_object)]
pub const OBJECT: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/tarpit-ebpf.o")));
/// The eBPF object, embedded at build time when `cargo xtask build-ebpf` had built it.
#[cfg(not(tarpit_ebpf_object))]
pub const OBJECT: Option<&[u8]> = None;

/// `[ebpf] mode`: whether to use the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EbpfMode {
    /// Use it when everything it needs is there; otherwise say why once and go on.
    #[default]
    Auto,
    /// Refuse to start without it.
    On,
    /// Never load it.
    Off,
}

/// Why eBPF attribution is not running.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Turned off in the configuration.
    #[error("turned off in the configuration ([ebpf] mode = \"off\")")]
    Off,
    /// This binary has no eBPF object inside.
    #[error(
        "this binary was built without the eBPF object (run `cargo xtask build-ebpf`, then rebuild)"
    )]
    NoObject,
    /// The kernel is too old for netfilter BPF programs.
    #[error("kernel {0} is older than 6.4, the first with netfilter BPF links")]
    OldKernel(String),
    /// No usable kernel BTF.
    #[error("kernel BTF unusable: {0}")]
    Btf(#[from] btf::BtfError),
    /// Maps could not be created (usually missing privileges).
    #[error(
        "creating the eBPF maps failed: {0} (needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)"
    )]
    Maps(String),
    /// The object could not be relocated.
    #[error("preparing the eBPF program failed: {0}")]
    Relocation(String),
    /// Loading or attaching failed.
    #[error(transparent)]
    Netfilter(#[from] netfilter::NetfilterError),
}

/// The live hook: its links (dropped = detached) and the maps the server reads.
#[derive(Debug)]
pub struct Attribution {
    map: std::sync::Arc<EbpfMap>,
    held: Option<std::sync::Arc<held::HeldFlows>>,
    links: Vec<netfilter::NetfilterLink>,
    _program: OwnedFd,
    _ebpf: aya::Ebpf,
}

/// Read access to the map of original destinations; shared by all workers.
#[derive(Debug)]
pub struct EbpfMap {
    fd: OwnedFd,
    /// The hook's count of entries inserted, when the counter could be mapped into memory.
    inserts: Option<inserts::InsertCount>,
    /// Entries this process took out of the map (see [`inserts`]).
    taken: std::sync::atomic::AtomicU64,
}

impl Attribution {
    /// Loads and attaches the hook in this network namespace, for IPv4 and IPv6.
    /// `held`: for socketless hold (`[tarpit] hold = "socketless"`), the most flows held
    /// without a socket and the tarpit's port (0: any); `None` when every flow keeps its socket
    /// (the hook then never reads packet headers).
    pub fn start(
        mode: EbpfMode,
        map_entries: u32,
        held: Option<(u32, u16)>,
    ) -> Result<Self, Unavailable> {
        let held_capacity = held.map(|(capacity, _)| capacity);
        let held_port = held.map_or(0, |(_, port)| u32::from(port));
        if mode == EbpfMode::Off {
            return Err(Unavailable::Off);
        }
        let object = OBJECT.ok_or(Unavailable::NoObject)?;
        check_kernel_version()?;
        let kernel_btf = btf::Btf::from_file(Path::new(btf::VMLINUX_BTF))?;
        let offsets = btf::conntrack_offsets(&kernel_btf)?;
        let skb_offsets = match held_capacity {
            Some(_) => btf::skb_offsets(&kernel_btf)?,
            None => SkbOffsets::default(),
        };

        // aya parses the object, creates the maps and writes the offsets into .rodata.
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(MAP_NAME, map_entries)
            .map_max_entries(HELD_MAP_NAME, held_capacity.unwrap_or(1))
            .map_max_entries(HELD_STATUS_MAP_NAME, held_capacity.unwrap_or(1))
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(SKB_OFFSETS_GLOBAL, &skb_offsets, true)
            .override_global(HELD_PORT_GLOBAL, &held_port, true)
            .load(object)
            .map_err(|e| Unavailable::Maps(e.to_string()))?;

        // aya cannot load netfilter programs: relocate our own parse against aya's maps.
        let instructions = relocated_instructions(object, &ebpf)?;
        let program = netfilter::load(PROGRAM_NAME, &instructions)?;
        let links = [netfilter::NFPROTO_IPV4, netfilter::NFPROTO_IPV6]
            .into_iter()
            .map(|family| netfilter::attach(&program, family))
            .collect::<Result<Vec<_>, _>>()?;

        let map = ebpf
            .take_map(MAP_NAME)
            .and_then(|m| map_fd(&m).map(|fd| (m, fd)))
            .ok_or_else(|| Unavailable::Maps(format!("map {MAP_NAME} missing from the object")))?;
        // Keep our own fd so the map outlives aya's handle independently.
        let fd = dup(map.1).map_err(|e| Unavailable::Maps(e.to_string()))?;
        // Without it every accept asks the map, as it did before the counter existed.
        let inserts = ebpf.map(INSERTS_MAP_NAME).and_then(map_fd).and_then(|fd| {
            // SAFETY: aya's map stays open while `ebpf` lives; mmap takes its own reference.
            inserts::InsertCount::map(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
                .inspect_err(|e| tracing::warn!("eBPF: the insert count is not mapped ({e})"))
                .ok()
        });
        let held = match held_capacity {
            None => None,
            Some(capacity) => {
                let held_map = ebpf.map(HELD_MAP_NAME).and_then(map_fd).ok_or_else(|| {
                    Unavailable::Maps(format!("map {HELD_MAP_NAME} missing from the object"))
                })?;
                let fd = dup(held_map).map_err(|e| Unavailable::Maps(e.to_string()))?;
                let status = ebpf
                    .map(HELD_STATUS_MAP_NAME)
                    .and_then(map_fd)
                    .ok_or_else(|| {
                        Unavailable::Maps(format!(
                            "map {HELD_STATUS_MAP_NAME} missing from the object"
                        ))
                    })?;
                // SAFETY: aya's map stays open while `ebpf` lives; mmap takes its own reference.
                let status = unsafe { std::os::fd::BorrowedFd::borrow_raw(status) };
                let flows = held::HeldFlows::new(fd, status, capacity).map_err(|e| {
                    Unavailable::Maps(format!("mapping {HELD_STATUS_MAP_NAME}: {e}"))
                })?;
                Some(std::sync::Arc::new(flows))
            }
        };
        Ok(Self {
            map: std::sync::Arc::new(EbpfMap {
                fd,
                inserts,
                taken: std::sync::atomic::AtomicU64::new(0),
            }),
            held,
            links,
            _program: program,
            _ebpf: ebpf,
        })
    }

    /// The hook priorities it got (101 unless another program held it), IPv4 then IPv6.
    pub fn priorities(&self) -> Vec<i32> {
        self.links.iter().map(|l| l.priority).collect()
    }

    /// The map of original destinations, to share with the workers.
    pub fn map(&self) -> std::sync::Arc<EbpfMap> {
        self.map.clone()
    }

    /// The map of flows held without a socket, when socketless holding was asked for.
    pub fn held(&self) -> Option<std::sync::Arc<held::HeldFlows>> {
        self.held.clone()
    }
}

fn dup(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: `fd` is open for the duration of this call (aya's map is still alive).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned()
}

fn map_fd(map: &aya::maps::Map) -> Option<RawFd> {
    use aya::maps::Map;
    match map {
        // The sk_lookup program's maps too: every function of the object is relocated.
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::LpmTrie(data)
        | Map::SockMap(data) => Some(data.fd().as_fd().as_raw_fd()),
        _ => None,
    }
}

/// The program's instructions with map references pointing at aya's maps and its calls linked
/// (only the functions it calls, so the verifier sees no unreachable code).
fn relocated_instructions(
    object: &[u8],
    ebpf: &aya::Ebpf,
) -> Result<Vec<aya_obj::generated::bpf_insn>, Unavailable> {
    let err = |e: &dyn std::fmt::Display| Unavailable::Relocation(e.to_string());
    let mut obj = aya_obj::Object::parse(object).map_err(|e| err(&e))?;
    let fds: HashMap<&str, RawFd> = ebpf
        .maps()
        .filter_map(|(name, map)| map_fd(map).map(|fd| (name, fd)))
        .collect();
    let obj_maps = obj.maps.clone();
    let maps = obj_maps
        .iter()
        .filter_map(|(name, map)| fds.get(name.as_str()).map(|fd| (name.as_str(), *fd, map)));
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(maps, &text_sections)
        .map_err(|e| err(&e))?;
    obj.relocate_calls(&text_sections).map_err(|e| err(&e))?;
    let program = obj
        .programs
        .get(PROGRAM_NAME)
        .ok_or_else(|| Unavailable::Relocation(format!("no program {PROGRAM_NAME}")))?;
    Ok(obj.functions[&program.function_key()].instructions.clone())
}

fn check_kernel_version() -> Result<(), Unavailable> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 4) {
        return Err(Unavailable::OldKernel(release));
    }
    Ok(())
}

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// One `bpf()` map element command (`BPF_MAP_LOOKUP_ELEM` = 1, `UPDATE` = 2, `DELETE` = 3,
/// `LOOKUP_AND_DELETE` = 21) on `fd`; `value` may be null for a delete.
fn map_elem(
    command: libc::c_long,
    fd: RawFd,
    key: *const u8,
    value: *mut u8,
    flags: u64,
) -> Result<(), nix::errno::Errno> {
    let mut attr = MapElemAttr {
        map_fd: fd as u32,
        key: key as u64,
        value: value as u64,
        flags,
        ..Default::default()
    };
    // SAFETY: the caller passes key and value buffers of the map's sizes, live for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            &mut attr as *mut MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}

impl EbpfMap {
    /// Looks up, and removes, the original destination of the connection with this local and
    /// peer address (as `accept` or a trusted proxy reports them). One syscall, no lock; none
    /// while the map is known to be empty ([`inserts`]).
    pub fn take(&self, local: SocketAddr, peer: SocketAddr) -> Option<SocketAddr> {
        use std::sync::atomic::Ordering;
        if let Some(inserts) = &self.inserts
            && inserts.load() == self.taken.load(Ordering::Acquire)
        {
            return None;
        }
        let value = self.lookup_and_delete(&conn_key(local, peer)).ok()?;
        self.taken.fetch_add(1, Ordering::AcqRel);
        Some(SocketAddr::new(unmapped(value.addr), value.port))
    }

    /// Whether this process may still use the map: a lookup of a key no connection has
    /// (ENOENT) proves it; EPERM says the running kernel wants a capability for map calls
    /// (before Linux 6.5, with `kernel.unprivileged_bpf_disabled` set).
    pub fn probe_access(&self) -> Result<(), nix::errno::Errno> {
        match self.lookup_and_delete(&ConnKey::default()) {
            Ok(_) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(errno) => Err(errno),
        }
    }

    /// One BPF_MAP_LOOKUP_AND_DELETE_ELEM call.
    fn lookup_and_delete(&self, key: &ConnKey) -> Result<OrigDst, nix::errno::Errno> {
        let mut value = OrigDst::default();
        map_elem(
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            self.fd.as_raw_fd(),
            (key as *const ConnKey).cast(),
            (&mut value as *mut OrigDst).cast(),
            0,
        )?;
        Ok(value)
    }
}

/// The maps' key for the connection with this local and peer address.
pub fn conn_key(local: SocketAddr, peer: SocketAddr) -> ConnKey {
    ConnKey {
        local_addr: mapped(local.ip()),
        peer_addr: mapped(peer.ip()),
        local_port: local.port(),
        peer_port: peer.port(),
    }
}

/// An address as the maps store it (IPv4-mapped for IPv4).
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A map's stored address, back as an address (IPv4-mapped means IPv4): the inverse of
/// [`mapped`].
pub fn unmapped(bytes: [u8; 16]) -> IpAddr {
    IpAddr::from(bytes).to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_both_ways() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(mapped(v4)[10..12], [0xff, 0xff]);
        assert_eq!(unmapped(mapped(v4)), v4);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(unmapped(mapped(v6)), v6);
    }

    /// Loading needs root and the embedded object; `TARPIT_E2E` makes their absence a failure.
    #[test]
    fn loads_verifies_and_attaches_then_detaches_on_drop() {
        let required = std::env::var_os("TARPIT_E2E").is_some();
        match Attribution::start(EbpfMode::Auto, 1024, None) {
            Ok(attribution) => {
                // A lookup of a connection that was never translated finds nothing.
                let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
                let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
                assert_eq!(attribution.map().take(local, peer), None);
            }
            Err(e) if !required => eprintln!("SKIPPED: eBPF unavailable ({e}); TARPIT_E2E=1 fails"),
            Err(e) => panic!("TARPIT_E2E is set but eBPF attribution failed to start: {e}"),
        }
    }

    /// The hook with room for two held flows (any port), or `None` (a skip, said on stderr)
    /// when eBPF is unavailable; `TARPIT_E2E` makes that a failure.
    fn with_two_held_slots() -> Option<Attribution> {
        match Attribution::start(EbpfMode::Auto, 1024, Some((2, 0))) {
            Ok(attribution) => Some(attribution),
            Err(e) if std::env::var_os("TARPIT_E2E").is_none() => {
                eprintln!("SKIPPED: eBPF unavailable ({e})");
                None
            }
            Err(e) => panic!("TARPIT_E2E is set but eBPF failed to start: {e}"),
        }
    }

    /// The held-flow map: add (never twice, never past its size), read from memory, remove;
    /// its memory grows with what it holds. `TARPIT_E2E` makes a missing prerequisite a failure.
    #[test]
    fn the_held_flow_map_adds_reads_and_removes_within_its_size() {
        let Some(attribution) = with_two_held_slots() else {
            return;
        };
        let held = attribution.held().expect("asked for");
        assert_eq!(held.capacity(), 2);
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let keys: Vec<_> = (1..=3)
            .map(|port| held::held_key(local, SocketAddr::from(([127, 0, 0, 2], port))))
            .collect();
        let empty = held.memlock_bytes().expect("fdinfo has memlock");
        let status = tarpit_ebpf::HeldStatus {
            ack: 7,
            ..Default::default()
        };
        let slot = |index, generation| tarpit_ebpf::HeldSlot { index, generation };
        held.add(&keys[0], slot(0, 1), &status).unwrap();
        assert_eq!(
            held.add(&keys[0], slot(1, 1), &status),
            Err(nix::errno::Errno::EEXIST)
        );
        let later = tarpit_ebpf::HeldStatus { ack: 9, ..status };
        held.add(&keys[1], slot(1, 2), &later).unwrap();
        // Each slot reads back what was written into it, generation included.
        let read = |index| held.status(index).map(|s| (s.ack, s.generation));
        assert_eq!(read(0), Some((7, 1)));
        assert_eq!(read(1), Some((9, 2)));
        assert_eq!(held.status(2), None, "slot 2 is past the array");
        assert!(
            held.memlock_bytes().unwrap() > empty,
            "entries are allocated as added"
        );
        held.remove(&keys[1]);
        assert_eq!(
            held.add(&keys[2], slot(2, 3), &status),
            Err(nix::errno::Errno::E2BIG),
            "the map has room, but slot 2 is past the array"
        );
        // A freed slot goes to the next flow, with its own generation and status.
        held.add(&keys[2], slot(1, 3), &status).unwrap();
        assert_eq!(read(1), Some((7, 3)));
        // Without socketless hold there is no map to hold flows in.
        let plain = Attribution::start(EbpfMode::Auto, 1024, None).unwrap();
        assert!(plain.held().is_none());
    }

    /// A packet of a flow whose slot went to another flow (the slot's generation is newer than
    /// the one its `HELD` entry names) is dropped and writes nothing: only the slot's own flow
    /// moves its status. Real packets through the hook: ACKs crafted by the socketless
    /// holder's segment builder, sent on loopback in one `sendmmsg`, so they pass in order.
    #[test]
    fn the_hook_writes_a_slot_only_for_the_flow_of_its_generation() {
        use crate::server::socketless::segment::{Batch, RawSockets, Segment};
        let Some(attribution) = with_two_held_slots() else {
            return;
        };
        let held = attribution.held().expect("asked for");
        let raw = RawSockets::open().expect("raw sockets (root)");
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let (stale, current): (SocketAddr, SocketAddr) = (
            "127.0.0.2:40101".parse().unwrap(),
            "127.0.0.2:40102".parse().unwrap(),
        );
        let status = tarpit_ebpf::HeldStatus {
            ack: 100,
            window: u16::MAX,
            ..Default::default()
        };
        // The stale flow's entry names slot 1 at generation 1; the current flow then took
        // slot 1 at generation 2 (as when a worker reuses a slot).
        let slot = |generation| tarpit_ebpf::HeldSlot {
            index: 1,
            generation,
        };
        held.add(&held::held_key(local, stale), slot(1), &status)
            .unwrap();
        held.add(&held::held_key(local, current), slot(2), &status)
            .unwrap();
        let ack_from = |peer: SocketAddr, ack: u32| Segment {
            local: peer,
            peer: local,
            seq: 1,
            ack,
            window: 1000,
            timestamps: None,
            fin: false,
            payload: &[],
        };
        // The stale ACK is the higher: had it been written, the current one (lower, so not
        // believed after it) could not replace it.
        let mut batch = Batch::default();
        batch.push(&ack_from(stale, 9_000)).unwrap();
        batch.push(&ack_from(current, 7_000)).unwrap();
        assert_eq!(batch.send(raw.v4()), 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let seen = loop {
            match held.status(1).filter(|s| s.ack != 100) {
                Some(seen) => break seen,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                None => panic!("no ACK reached the slot"),
            }
        };
        assert_eq!(
            (seen.ack, seen.window, seen.generation),
            (7_000, 1000, 2),
            "only the current flow's ACK is in the slot"
        );
    }

    #[test]
    fn off_mode_never_loads() {
        assert!(matches!(
            Attribution::start(EbpfMode::Off, 1024, None),
            Err(Unavailable::Off)
        ));
    }
}
