//! The eBPF program: a netfilter hook at NF_INET_LOCAL_IN, priority 101 (just after the kernel's
//! last NAT step), that records the original destination of each new TCP connection whose
//! destination was translated (iptables REDIRECT/DNAT, nft redirect/dnat).
//!
//! It reads the connection's conntrack entry: the ORIGINAL tuple's destination is what the
//! client dialled; the REPLY tuple's source and destination are the accepted socket's local and
//! peer address exactly as `accept` will report them. It only observes: every packet is
//! accepted, except the packets of flows the server holds without a socket (`[tarpit] hold =
//! "socketless"`): for those, listed in the `HELD` map, the program notes what the client said
//! (its acknowledgement, timestamp, FIN, RST) and drops the packet, before the kernel, which has
//! no socket for it any more, would answer with a reset. Conntrack has seen the packet by then
//! (this hook runs after it), so NAT state stays current.
//!
//! A second program, `tarpit_sk_lookup` (`[server] ports`), is a BPF `sk_lookup` program
//! attached to the network namespace: it hands new connections for any chosen port and local
//! address to the tarpit's listener, so no NAT and no conntrack entry is needed (the design of
//! Cloudflare's tubular; kernel documentation `Documentation/bpf/prog_sk_lookup.rst`). Built for `bpfel-unknown-none` by `cargo xtask build-ebpf`; on other targets this
//! file is an empty program so that the workspace builds everywhere.

#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The insert counter's atomic add: `AtomicU64::fetch_add` is not offered on this target (it
// has no compare-and-swap), but the add itself is one BPF instruction (`lock xadd`).
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
    use aya_ebpf::macros::{map, sk_lookup};
    use aya_ebpf::maps::lpm_trie::Key;
    use aya_ebpf::maps::{Array, HashMap, LpmTrie, LruHashMap, SockMap};
    use aya_ebpf::programs::SkLookupContext;
    use tarpit_ebpf::{
        BPF_F_MMAPABLE, ConnKey, ConntrackOffsets, HeldKey, HeldSlot, HeldStatus, OrigDst,
        SkbOffsets, fold, v4_mapped,
    };

    const NF_DROP: i32 = 0;
    const NF_ACCEPT: i32 = 1;
    const BPF_F_NO_PREALLOC: u32 = 1;
    const TCP_FIN: u8 = 0x01;
    const TCP_RST: u8 = 0x04;
    const TCP_ACK: u8 = 0x10;
    const IP_CT_NEW: u64 = 2;
    const IPPROTO_TCP: u8 = 6;
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    /// `tuplehash[0]` is the ORIGINAL direction, `tuplehash[1]` the REPLY.
    const REPLY: u32 = 1;

    #[map(name = "ORIG_DST")]
    static ORIG_DST: LruHashMap<ConnKey, OrigDst> = LruHashMap::with_max_entries(65_536, 0);

    /// Entries ever inserted into `ORIG_DST`; see `tarpit_ebpf::INSERTS_MAP_NAME`.
    #[map(name = "ORIG_DST_INSERTS")]
    static ORIG_DST_INSERTS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// Flows held without a socket, each naming its slot in `HELD_STATUS`; entries are
    /// allocated as added (the map is sized by the loader to `[tarpit] socketless_max`).
    #[map(name = "HELD")]
    static HELD: HashMap<HeldKey, HeldSlot> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

    /// What each held flow's client said, one slot per flow the server may hold (sized by the
    /// loader like `HELD`); the server reads it from memory on every tick.
    #[map(name = "HELD_STATUS")]
    static HELD_STATUS: Array<HeldStatus> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// Set by the loader from BTF when socketless holding is on; all zero otherwise.
    #[unsafe(no_mangle)]
    static SKB_OFFSETS: SkbOffsets = SkbOffsets {
        head: 0,
        data: 0,
        len: 0,
        data_len: 0,
        network_header: 0,
        transport_header: 0,
    };

    /// The tarpit's listening port, set by the loader (0: any port).
    #[unsafe(no_mangle)]
    static HELD_PORT: u32 = 0;

    /// Set by the loader from the kernel's BTF before the program is loaded.
    #[unsafe(no_mangle)]
    static OFFSETS: ConntrackOffsets = ConntrackOffsets {
        skb_nfct: 0,
        conn_tuplehash: 0,
        tuplehash_size: 0,
        hash_tuple: 0,
        src_addr: 0,
        src_port: 0,
        l3num: 0,
        dst_addr: 0,
        dst_port: 0,
        protonum: 0,
    };

    /// The hook. `ctx` is `struct bpf_nf_ctx { nf_hook_state *state; sk_buff *skb; }`.
    #[unsafe(no_mangle)]
    #[unsafe(link_section = "classifier")]
    pub fn tarpit_nat(ctx: *const *const u8) -> i32 {
        // SAFETY: ctx is the netfilter program context; every kernel read below goes through
        // bpf_probe_read_kernel, which fails cleanly on a bad address.
        if unsafe { held(ctx) } == Ok(true) {
            return NF_DROP;
        }
        // SAFETY: as above.
        let _ = unsafe { record(ctx) };
        NF_ACCEPT
    }

    #[inline(always)]
    fn be16(b: &[u8]) -> u16 {
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline(always)]
    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Whether the packet belongs to a socketless-held flow (then it is to be dropped); notes
    /// its acknowledgement, timestamp, FIN and RST in the flow's status.
    #[inline(always)]
    unsafe fn held(ctx: *const *const u8) -> Result<bool, i32> {
        let off: SkbOffsets = unsafe { core::ptr::read_volatile(&SKB_OFFSETS) };
        if off.head == 0 {
            return Ok(false);
        }
        let skb: *const u8 = unsafe { *ctx.wrapping_add(1) };
        let head: u64 = unsafe { read(skb, off.head)? };
        let data: u64 = unsafe { read(skb, off.data)? };
        let len: u32 = unsafe { read(skb, off.len)? };
        let data_len: u32 = unsafe { read(skb, off.data_len)? };
        let network: u16 = unsafe { read(skb, off.network_header)? };
        let transport: u16 = unsafe { read(skb, off.transport_header)? };
        // Headers are read only from the linear part of the buffer.
        let linear_end = data.wrapping_add(u64::from(len.wrapping_sub(data_len)));
        let ip = head.wrapping_add(u64::from(network)) as *const u8;
        let version: u8 = unsafe { read(ip, 0)? };
        let (local, peer) = match version >> 4 {
            4 => {
                let h: [u8; 20] = unsafe { read(ip, 0)? };
                // Not TCP, or a fragment: never one of ours.
                if h[9] != IPPROTO_TCP || h[6] & 0x3f != 0 || h[7] != 0 {
                    return Ok(false);
                }
                (
                    v4_mapped([h[16], h[17], h[18], h[19]]),
                    v4_mapped([h[12], h[13], h[14], h[15]]),
                )
            }
            6 => {
                let h: [u8; 40] = unsafe { read(ip, 0)? };
                if h[6] != IPPROTO_TCP {
                    return Ok(false); // extension headers: not a flow we hold
                }
                let mut dst = [0u8; 16];
                let mut src = [0u8; 16];
                dst.copy_from_slice(&h[24..40]);
                src.copy_from_slice(&h[8..24]);
                (dst, src)
            }
            _ => return Ok(false),
        };
        let tcp_at = head.wrapping_add(u64::from(transport));
        if tcp_at + 20 > linear_end {
            return Ok(false);
        }
        let tcp = tcp_at as *const u8;
        let h: [u8; 20] = unsafe { read(tcp, 0)? };
        let port = unsafe { core::ptr::read_volatile(&HELD_PORT) };
        if port != 0 && u32::from(be16(&h[2..4])) != port {
            return Ok(false); // not to the tarpit: never a held flow
        }
        let key = HeldKey {
            peer_addr: peer,
            local_fold: fold(local),
            peer_port: be16(&h[0..2]),
            local_port: be16(&h[2..4]),
        };
        // SAFETY: the map value stays valid while the program runs (RCU).
        let Some(slot) = (unsafe { HELD.get(&key) }).copied() else {
            return Ok(false);
        };
        let Some(status) = HELD_STATUS.get_ptr_mut(slot.index) else {
            return Ok(true); // held, but its slot is out of range: drop, note nothing
        };
        // SAFETY: array values live as long as the map; the server fills a slot before it adds
        // the entry naming it.
        if unsafe { core::ptr::read_volatile(&(*status).generation) } != slot.generation {
            return Ok(true); // the flow ended and its slot went to another one meanwhile
        }
        let flags = h[13];
        let now_ms = ((unsafe { bpf_ktime_get_ns() } / 1_000_000) as u32).max(1);
        // SAFETY: the slot stays valid as long as the map; fields are plain integers, a
        // concurrent writer on another CPU (or the server) can only leave another valid value.
        unsafe {
            if flags & TCP_ACK != 0 {
                let ack = be32(&h[8..12]);
                // Not beyond what was sent: one forged ACK must not freeze the flow.
                if (*status).believes_ack(ack) {
                    (*status).ack = ack;
                    (*status).window = be16(&h[14..16]);
                } else if ack == (*status).ack {
                    (*status).window = be16(&h[14..16]); // a window update
                }
            }
            // The timestamp option where every common stack puts it: NOP NOP TS, or TS first.
            let header_len = u64::from(h[12] >> 4) * 4;
            if header_len >= 32 && tcp_at + 32 <= linear_end {
                let o: [u8; 12] = read(tcp, 20)?;
                if o[0] == 1 && o[1] == 1 && o[2] == 8 && o[3] == 10 {
                    (*status).tsval = be32(&o[4..8]);
                } else if o[0] == 8 && o[1] == 10 {
                    (*status).tsval = be32(&o[2..6]);
                }
            }
            // A FIN or RST counts only in the window: a blind guess of the 4-tuple cannot end
            // or close a held flow.
            let in_window = (*status).in_window(be32(&h[4..8]));
            if flags & TCP_FIN != 0 && in_window && (*status).fin_ms == 0 {
                (*status).fin_ms = now_ms;
            }
            if flags & TCP_RST != 0 && in_window && (*status).rst_ms == 0 {
                (*status).rst_ms = now_ms;
            }
        }
        Ok(true)
    }

    #[inline(always)]
    unsafe fn read<T>(base: *const u8, offset: u32) -> Result<T, i32> {
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
    }

    #[inline(always)]
    unsafe fn record(ctx: *const *const u8) -> Result<(), i32> {
        let off: ConntrackOffsets = unsafe { core::ptr::read_volatile(&OFFSETS) };
        if off.conn_tuplehash == 0 {
            return Ok(()); // offsets never set: do nothing rather than guess
        }
        let skb: *const u8 = unsafe { *ctx.wrapping_add(1) };
        let nfct: u64 = unsafe { read(skb, off.skb_nfct)? };
        if nfct & 7 != IP_CT_NEW {
            return Ok(()); // not the first packet of a connection
        }
        let conn = (nfct & !7) as *const u8;
        if conn.is_null() {
            return Ok(());
        }
        let original = conn.wrapping_add((off.conn_tuplehash + off.hash_tuple) as usize);
        let reply = conn.wrapping_add(
            (off.conn_tuplehash + REPLY * off.tuplehash_size + off.hash_tuple) as usize,
        );
        let protonum: u8 = unsafe { read(original, off.protonum)? };
        if protonum != IPPROTO_TCP {
            return Ok(());
        }
        let family: u16 = unsafe { read(original, off.l3num)? };
        let orig_dst: [u8; 16] = unsafe { read(original, off.dst_addr)? };
        let orig_port: u16 = unsafe { read(original, off.dst_port)? };
        let local: [u8; 16] = unsafe { read(reply, off.src_addr)? };
        let local_port: u16 = unsafe { read(reply, off.src_port)? };
        let peer: [u8; 16] = unsafe { read(reply, off.dst_addr)? };
        let peer_port: u16 = unsafe { read(reply, off.dst_port)? };
        let (orig_dst, local, peer) = match family {
            AF_INET => (
                v4_mapped([orig_dst[0], orig_dst[1], orig_dst[2], orig_dst[3]]),
                v4_mapped([local[0], local[1], local[2], local[3]]),
                v4_mapped([peer[0], peer[1], peer[2], peer[3]]),
            ),
            AF_INET6 => (orig_dst, local, peer),
            _ => return Ok(()),
        };
        if orig_dst == local && orig_port == local_port {
            return Ok(()); // not translated: the socket's own address is the truth
        }
        let key = ConnKey {
            local_addr: local,
            peer_addr: peer,
            local_port: u16::from_be(local_port),
            peer_port: u16::from_be(peer_port),
        };
        let value = OrigDst {
            addr: orig_dst,
            port: u16::from_be(orig_port),
            _pad: [0; 6],
            ktime_ns: unsafe { bpf_ktime_get_ns() },
        };
        ORIG_DST.insert(&key, &value, 0).map_err(|e| e as i32)?;
        // Counted after the entry is in: a server that sees the count sees the entry.
        if let Some(count) = ORIG_DST_INSERTS.get_ptr_mut(0) {
            use core::intrinsics::{AtomicOrdering, atomic_xadd};
            // SAFETY: the array's value lives as long as the map; an atomic add (BPF_XADD).
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, 1) };
        }
        Ok(())
    }

    /// One bit per port to steer; see `tarpit_ebpf::STEER_PORTS_MAP_NAME`.
    #[map(name = "STEER_PORTS")]
    static STEER_PORTS: Array<u64> = Array::with_max_entries(1024, 0);

    /// Local addresses answered for; see `tarpit_ebpf::STEER_PREFIXES_MAP_NAME`.
    #[map(name = "STEER_PREFIXES")]
    static STEER_PREFIXES: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(1, 0);

    /// The listener connections go to (index 0).
    #[map(name = "STEER_LISTENER")]
    static STEER_LISTENER: SockMap = SockMap::with_max_entries(1, 0);

    /// 1: every local address is answered for (no prefixes configured). Set by the loader.
    #[unsafe(no_mangle)]
    static STEER_ANY_ADDRESS: u32 = 0;

    const SK_PASS: u32 = 1;
    // The word indexes the program reads the local address at (UAPI, never reordered).
    const _: () = assert!(
        core::mem::offset_of!(aya_ebpf::bindings::bpf_sk_lookup, local_ip4) == 10 * 4
            && core::mem::offset_of!(aya_ebpf::bindings::bpf_sk_lookup, local_ip6) == 11 * 4
    );

    /// The `sk_lookup` program (`[server] ports`): runs when a SYN for a local address finds
    /// no established socket, before the kernel looks for a listener. A TCP connection to a
    /// steered port on an address answered for is given the tarpit's listener; anything else
    /// passes on to the normal lookup untouched. It never drops: a failed assignment (the
    /// listener gone) is the kernel's normal path.
    #[sk_lookup]
    pub fn tarpit_sk_lookup(ctx: SkLookupContext) -> u32 {
        // SAFETY: the context is the kernel's `bpf_sk_lookup`, readable field by field.
        let lookup = unsafe { &*ctx.lookup };
        if lookup.protocol != u32::from(IPPROTO_TCP) || lookup.local_port > 65_535 {
            return SK_PASS;
        }
        let port = lookup.local_port;
        let Some(word) = STEER_PORTS.get(port / 64) else {
            return SK_PASS;
        };
        if *word & (1u64 << (port % 64)) == 0 {
            return SK_PASS; // not ours, excluded, or another service listens on it
        }
        // SAFETY: a plain global the loader sets before the program is loaded.
        if unsafe { core::ptr::read_volatile(&STEER_ANY_ADDRESS) } == 0 {
            // The verifier takes context reads only at a constant offset from the context
            // pointer itself, so each 32-bit word is read on its own (`struct bpf_sk_lookup`:
            // local_ip4 at byte 40, local_ip6 at 44..60).
            let word = |index: usize| -> [u8; 4] {
                // SAFETY: a field of the kernel's context, inside the structure.
                unsafe { core::ptr::read_volatile((ctx.lookup as *const u32).add(index)) }
                    .to_ne_bytes()
            };
            // All five words first, unconditionally: were they read in the branches below,
            // the compiler would merge the two reads into one at a computed offset.
            let (ip4, a, b, c, d) = (word(10), word(11), word(12), word(13), word(14));
            let address = match lookup.family {
                f if f == u32::from(AF_INET) => v4_mapped(ip4),
                f if f == u32::from(AF_INET6) => [
                    a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0],
                    d[1], d[2], d[3],
                ],
                _ => return SK_PASS,
            };
            if STEER_PREFIXES.get(Key::new(128, address)).is_none() {
                return SK_PASS;
            }
        }
        let _ = STEER_LISTENER.redirect_sk_lookup(&ctx, 0, 0);
        SK_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// The kernel requires a GPL-compatible license for bpf_probe_read_kernel.
#[cfg(target_arch = "bpf")]
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
