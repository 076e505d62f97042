//! Types shared by the eBPF program and the server: the map key and value, and the kernel
//! structure offsets the server reads from BTF and hands to the program.
//!
//! Everything is `#[repr(C)]` with explicit padding, so the bytes the kernel hashes and copies
//! are exactly the bytes both sides build, and no uninitialised padding reaches a helper.

#![no_std]

/// Name of the LRU hash map the program fills and the server reads.
pub const MAP_NAME: &str = "ORIG_DST";
/// Name of the one-element array (`u64`, `BPF_F_MMAPABLE`) counting the entries the program
/// has inserted into [`MAP_NAME`]. The server maps it into memory and counts the entries it
/// took out: while the two are equal the map is empty, and accepting a connection needs no
/// map lookup (a host with no NAT rule never makes one).
pub const INSERTS_MAP_NAME: &str = "ORIG_DST_INSERTS";
/// `BPF_F_MMAPABLE` (`include/uapi/linux/bpf.h`): an array the server can map into memory.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Name of the global holding [`ConntrackOffsets`], set by the loader.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the program function.
pub const PROGRAM_NAME: &str = "tarpit_nat";
/// Name of the hash map of socketless-held flows (`[tarpit] hold = "socketless"`): the server
/// adds a flow before it closes the flow's socket; the program drops the client's packets of
/// every flow in it and records what they said.
pub const HELD_MAP_NAME: &str = "HELD";
/// Name of the array of [`HeldStatus`] (`BPF_F_MMAPABLE`, one per `socketless_max`) the
/// program writes what a held flow's client said into: the [`HELD_MAP_NAME`] entry names the
/// slot. The server reads it from memory, so a held flow's tick makes no system call.
pub const HELD_STATUS_MAP_NAME: &str = "HELD_STATUS";
/// Bytes between two [`HeldStatus`] in the memory-mapped [`HELD_STATUS_MAP_NAME`] (the kernel
/// rounds an array's values up to 8 bytes; this one is exactly 32).
pub const HELD_STATUS_STRIDE: usize = 32;
/// Name of the global holding [`SkbOffsets`], set by the loader (all zero: no flow is held).
pub const SKB_OFFSETS_GLOBAL: &str = "SKB_OFFSETS";
/// Name of the global holding the tarpit's listening port (a `u32`; 0: any): only packets to it
/// are looked up in the held-flow map, so the rest of the host's traffic costs one comparison.
pub const HELD_PORT_GLOBAL: &str = "HELD_PORT";

/// Name of the `sk_lookup` program (`[server] ports`): steers new TCP connections for the
/// chosen ports and local addresses to the tarpit's listener, with no NAT.
pub const STEER_PROGRAM_NAME: &str = "tarpit_sk_lookup";
/// Name of the array of 64-bit words, one bit per port, that the program steers (bit
/// `port % 64` of word `port / 64`): the configured ports minus the exclusions and minus every
/// port another local service listens on, kept current by the server.
pub const STEER_PORTS_MAP_NAME: &str = "STEER_PORTS";
/// Words in [`STEER_PORTS_MAP_NAME`]: 65,536 ports.
pub const STEER_PORT_WORDS: u32 = 1024;
/// Name of the longest-prefix-match trie of local addresses answered for (`[server] prefixes`;
/// IPv4 as IPv4-mapped /96 + length); unused when [`STEER_ANY_ADDRESS_GLOBAL`] is set.
pub const STEER_PREFIXES_MAP_NAME: &str = "STEER_PREFIXES";
/// Name of the socket map holding the listener connections are steered to (index 0). It is
/// one socket of the workers' SO_REUSEPORT group, so the kernel's reuseport selection still
/// spreads connections over every worker.
pub const STEER_LISTENER_MAP_NAME: &str = "STEER_LISTENER";
/// Name of the global (a `u32`) that, when 1, makes every local address match: no
/// `[server] prefixes` configured.
pub const STEER_ANY_ADDRESS_GLOBAL: &str = "STEER_ANY_ADDRESS";

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

/// A socketless-held flow as its client's packets name it: the client's address and port,
/// our port, and our address folded to 32 bits by [`fold`] (exact for IPv4). 24 bytes: a
/// [`ConnKey`] would take 40 in the map, and the map is most of what a held client costs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeldKey {
    /// The client's address (IPv4-mapped for IPv4).
    pub peer_addr: [u8; 16],
    /// Our address, folded.
    pub local_fold: u32,
    /// The client's port, host byte order.
    pub peer_port: u16,
    /// Our port, host byte order.
    pub local_port: u16,
}

/// Where a held flow's status is: its slot in [`HELD_STATUS_MAP_NAME`], and the generation
/// the server gave the flow when it filled the slot. The program writes into the slot only
/// while the slot still carries that generation, so a packet of a flow that just ended, seen
/// by a program that looked the flow up a moment before its entry was removed, does not write
/// into the next flow given the same slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldSlot {
    /// Index in [`HELD_STATUS_MAP_NAME`].
    pub index: u32,
    /// The flow's generation, as in [`HeldStatus::generation`].
    pub generation: u32,
}

/// An address folded to 32 bits: the XOR of its four 32-bit words. For an IPv4-mapped address
/// three words are fixed, so IPv4 addresses never collide; two IPv6 addresses of the sensor
/// itself could, and then the second flow simply stays on its socket (flows are added only if
/// absent).
#[inline(always)]
pub fn fold(addr: [u8; 16]) -> u32 {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    word(0) ^ word(4) ^ word(8) ^ word(12)
}

/// Byte offsets of the `sk_buff` fields the program needs to read a packet's IP and TCP headers
/// (from BTF, like [`ConntrackOffsets`]). `head == 0` means socketless holding is off and the
/// program never looks at headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbOffsets {
    /// `sk_buff.head`: start of the buffer (a pointer).
    pub head: u32,
    /// `sk_buff.data`: start of the data (a pointer).
    pub data: u32,
    /// `sk_buff.len`: bytes of data, linear and paged.
    pub len: u32,
    /// `sk_buff.data_len`: bytes of data in pages (not linear).
    pub data_len: u32,
    /// `sk_buff.network_header`: the IP header, as an offset from `head` (u16).
    pub network_header: u32,
    /// `sk_buff.transport_header`: the TCP header, as an offset from `head` (u16).
    pub transport_header: u32,
}

/// What the client of a socketless-held flow last said, written by the program for every
/// packet of the flow it drops, read by the server on each tick. Times are
/// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) in milliseconds, never 0 once set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldStatus {
    /// The highest acknowledgement number seen (network order converted to host order).
    pub ack: u32,
    /// The client's latest TCP timestamp value (TSval), to echo as TSecr; 0 before any.
    pub tsval: u32,
    /// When the client's first FIN arrived, or 0.
    pub fin_ms: u32,
    /// When the client's first RST arrived, or 0.
    pub rst_ms: u32,
    /// The client's next sequence number, as the tarpit acknowledges it (set by the server at
    /// hand-over): a FIN or RST counts only within [`RECEIVE_WINDOW`] from here.
    pub rcv_nxt: u32,
    /// The highest acknowledgement the client can send, the end of the stream and our FIN
    /// (set by the server at hand-over; 0: no bound): an ACK beyond it is not believed.
    pub ack_limit: u32,
    /// The window field of the client's latest believed ACK (unscaled), `u16::MAX` before any.
    pub window: u16,
    /// Explicit padding (zero).
    pub _pad: u16,
    /// The generation of the flow the slot holds now (see [`HeldSlot`]); set by the server,
    /// never by the program.
    pub generation: u32,
}

/// The window a held flow's FIN or RST must fall in, from [`HeldStatus::rcv_nxt`]: the
/// largest unscaled receive window (a flow's receive side never moves, the client has nothing
/// more to send us that we take).
pub const RECEIVE_WINDOW: u32 = 65_535;

impl HeldStatus {
    /// Whether an ACK of `ack` is to be believed: newer than the one held, and not beyond what
    /// can have been sent ([`HeldStatus::ack_limit`]). Sequence space wraps: differences.
    #[inline(always)]
    pub fn believes_ack(&self, ack: u32) -> bool {
        let newer = ack.wrapping_sub(self.ack) as i32 > 0;
        let sent = self.ack_limit == 0 || self.ack_limit.wrapping_sub(ack) as i32 >= 0;
        newer && sent
    }

    /// Whether a FIN or RST with sequence number `seq` is in the window (not a blind guess).
    #[inline(always)]
    pub fn in_window(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.rcv_nxt) < RECEIVE_WINDOW
    }
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SkbOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldStatus {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldSlot {}
}

// The layouts the kernel map was sized for (notes/ebpf-port-attribution.md).
const _: () = assert!(core::mem::size_of::<ConnKey>() == 36);
const _: () = assert!(core::mem::size_of::<OrigDst>() == 32);
const _: () = assert!(core::mem::size_of::<HeldStatus>() == HELD_STATUS_STRIDE);
const _: () = assert!(core::mem::size_of::<HeldSlot>() == 8);
const _: () = assert!(core::mem::size_of::<HeldKey>() == 24);
