//! Types shared by the eBPF program and the server: the map key and value, and the kernel
//! structure offsets the server reads from BTF and hands to the program.
//!
//! Everything is `#[repr(C)]` with explicit padding, so the bytes the kernel hashes and copies
//! are exactly the bytes both sides build, and no uninitialised padding reaches a helper.

#![no_std]

/// Name of the LRU hash map the program fills and the server reads.
pub const MAP_NAME: &str = "ORIG_DST";
/// Name of the global holding [`ConntrackOffsets`], set by the loader.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the program function.
pub const PROGRAM_NAME: &str = "tarpit_nat";

/// A connection as the server's accepted socket sees it: its own local address and port, and
/// the peer's (after any source-port rewrite by conntrack). IPv4 addresses are stored
/// IPv4-mapped (`::ffff:a.b.c.d`); ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Local address of the accepted socket.
    pub local_addr: [u8; 16],
    /// Peer address of the accepted socket.
    pub peer_addr: [u8; 16],
    /// Local port of the accepted socket.
    pub local_port: u16,
    /// Peer port of the accepted socket.
    pub peer_port: u16,
}

/// Where the client meant to connect before NAT rewrote the destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// Original destination address (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    /// Original destination port, host byte order.
    pub port: u16,
    /// Explicit padding: always zero.
    pub _pad: [u8; 6],
    /// `bpf_ktime_get_ns` when the first packet passed the hook.
    pub ktime_ns: u64,
}

/// Byte offsets of the few kernel fields the program reads. Rust eBPF has no CO-RE relocations,
/// so the server reads these from `/sys/kernel/btf/vmlinux` and sets them as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackOffsets {
    /// `sk_buff._nfct`: conntrack pointer | ctinfo.
    pub skb_nfct: u32,
    /// `nf_conn.tuplehash`: the array of two `nf_conntrack_tuple_hash`.
    pub conn_tuplehash: u32,
    /// `sizeof(struct nf_conntrack_tuple_hash)`: stride from ORIGINAL to REPLY.
    pub tuplehash_size: u32,
    /// `nf_conntrack_tuple_hash.tuple`.
    pub hash_tuple: u32,
    /// `nf_conntrack_tuple.src.u3`.
    pub src_addr: u32,
    /// `nf_conntrack_tuple.src.u.all` (the port, network order).
    pub src_port: u32,
    /// `nf_conntrack_tuple.src.l3num` (address family).
    pub l3num: u32,
    /// `nf_conntrack_tuple.dst.u3`.
    pub dst_addr: u32,
    /// `nf_conntrack_tuple.dst.u.all`.
    pub dst_port: u32,
    /// `nf_conntrack_tuple.dst.protonum`.
    pub protonum: u32,
}

/// An IPv4 address in the IPv4-mapped IPv6 form the map uses.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OrigDst {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConntrackOffsets {}
}

// The layouts the kernel map was sized for (notes/ebpf-port-attribution.md).
const _: () = assert!(core::mem::size_of::<ConnKey>() == 36);
const _: () = assert!(core::mem::size_of::<OrigDst>() == 32);
