//! The eBPF program: a netfilter hook at NF_INET_LOCAL_IN, priority 101 (just after the kernel's
//! last NAT step), that records the original destination of each new TCP connection whose
//! destination was translated (iptables REDIRECT/DNAT, nft redirect/dnat).
//!
//! It reads the connection's conntrack entry: the ORIGINAL tuple's destination is what the
//! client dialled; the REPLY tuple's source and destination are the accepted socket's local and
//! peer address exactly as `accept` will report them. It only observes: every packet is
//! accepted. Built for `bpfel-unknown-none` by `cargo xtask build-ebpf`; on other targets this
//! file is an empty program so that the workspace builds everywhere.

#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
    use aya_ebpf::macros::map;
    use aya_ebpf::maps::LruHashMap;
    use tarpit_ebpf::{ConnKey, ConntrackOffsets, OrigDst, v4_mapped};

    const NF_ACCEPT: i32 = 1;
    const IP_CT_NEW: u64 = 2;
    const IPPROTO_TCP: u8 = 6;
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    /// `tuplehash[0]` is the ORIGINAL direction, `tuplehash[1]` the REPLY.
    const REPLY: u32 = 1;

    #[map(name = "ORIG_DST")]
    static ORIG_DST: LruHashMap<ConnKey, OrigDst> = LruHashMap::with_max_entries(65_536, 0);

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
        let _ = unsafe { record(ctx) };
        NF_ACCEPT
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
        ORIG_DST.insert(&key, &value, 0).map_err(|e| e as i32)
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
