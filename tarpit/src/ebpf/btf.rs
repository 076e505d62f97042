//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`), just enough to find the byte
//! offsets of the conntrack fields the eBPF program reads.
//!
//! Rust eBPF programs get no CO-RE relocations, and the field offsets of `sk_buff` and `nf_conn`
//! change between kernel builds, so they are looked up here at start and passed to the program.
//! aya-obj keeps BTF members private and `btf-rs` is LGPL, hence this reader: it understands
//! every kind well enough to skip it, and resolves structs, unions, arrays, typedefs and
//! modifiers. Any surprise is an error, never a guess.

use std::path::Path;

use tarpit_ebpf::ConntrackOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

/// Why offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read (no BTF in this kernel, or no permission).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not BTF this reader understands.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// A struct or member the program needs is not there (or not as expected).
    #[error("BTF: {0}")]
    Missing(String),
}

#[derive(Debug, Clone, Copy)]
struct TypeEntry {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` for sized kinds, `type` for reference kinds.
    size_or_type: u32,
    /// Byte offset of the kind-specific data that follows the common header.
    extra: usize,
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Parsed BTF: the raw type section, the string section, and an index of the types.
#[derive(Debug)]
pub struct Btf {
    types_section: Vec<u8>,
    strings: Vec<u8>,
    /// Index 0 stands for `void`; type ids are indexes.
    types: Vec<TypeEntry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Reads and parses a BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parses BTF bytes (little-endian, as on x86_64 and arm64).
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let bad = |what: &str| BtfError::Malformed(what.to_owned());
        if u16_at(bytes, 0) != Some(MAGIC) {
            return Err(bad("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(bytes, 4).ok_or_else(|| bad("short header"))? as usize;
        let field = |i: usize| u32_at(bytes, 8 + 4 * i).ok_or_else(|| bad("short header"));
        let (type_off, type_len, str_off, str_len) = (
            field(0)? as usize,
            field(1)? as usize,
            field(2)? as usize,
            field(3)? as usize,
        );
        let section = |off: usize, len: usize| {
            bytes
                .get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| bad("section outside the file"))
        };
        let types_section = section(type_off, type_len)?.to_vec();
        let strings = section(str_off, str_len)?.to_vec();
        let mut types = vec![TypeEntry {
            name_off: 0,
            kind: 0,
            vlen: 0,
            kind_flag: false,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < types_section.len() {
            let word =
                |i: usize| u32_at(&types_section, at + 4 * i).ok_or_else(|| bad("truncated type"));
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = at + 12;
            let extra_len = match kind {
                KIND_INT => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => 12 * vlen as usize,
                KIND_ENUM => 8 * vlen as usize,
                13 /* FUNC_PROTO */ => 8 * vlen as usize,
                14 /* VAR */ => 4,
                15 /* DATASEC */ => 12 * vlen as usize,
                17 /* DECL_TAG */ => 4,
                KIND_ENUM64 => 12 * vlen as usize,
                KIND_PTR | 7 /* FWD */ | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST
                | KIND_RESTRICT | 12 /* FUNC */ | 16 /* FLOAT */ | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::Malformed(format!("unknown kind {other}"))),
            };
            types.push(TypeEntry {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                extra,
            });
            at = extra + extra_len;
        }
        Ok(Self {
            types_section,
            strings,
            types,
        })
    }

    fn name(&self, name_off: u32) -> &str {
        let rest = self.strings.get(name_off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn entry(&self, id: u32) -> Result<TypeEntry, BtfError> {
        self.types
            .get(id as usize)
            .copied()
            .ok_or_else(|| BtfError::Malformed(format!("type id {id} out of range")))
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<TypeEntry, BtfError> {
        for _ in 0..32 {
            let entry = self.entry(id)?;
            match entry.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = entry.size_or_type;
                }
                _ => return Ok(entry),
            }
        }
        Err(BtfError::Malformed(format!("type chain too long at {id}")))
    }

    /// Size in bytes of a type.
    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let entry = self.resolve(id)?;
        match entry.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => Ok(entry.size_or_type),
            KIND_PTR => Ok(8),
            KIND_ARRAY => {
                let elem = u32_at(&self.types_section, entry.extra).unwrap_or(0);
                let count = u32_at(&self.types_section, entry.extra + 8).unwrap_or(0);
                Ok(self.size_of(elem)? * count)
            }
            other => Err(BtfError::Malformed(format!("no size for kind {other}"))),
        }
    }

    /// The id of the struct named `name`.
    fn struct_named(&self, name: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name)
            .map(|i| i as u32)
            .ok_or_else(|| BtfError::Missing(format!("struct {name} not found")))
    }

    /// Finds member `name` in the struct or union `id`, looking inside anonymous members.
    /// Returns its byte offset from the start of `id` and its type id.
    fn find_member(&self, id: u32, name: &str) -> Result<Option<(u32, u32)>, BtfError> {
        let entry = self.resolve(id)?;
        if entry.kind != KIND_STRUCT && entry.kind != KIND_UNION {
            return Ok(None);
        }
        for i in 0..entry.vlen as usize {
            let at = entry.extra + 12 * i;
            let member_name = u32_at(&self.types_section, at).unwrap_or(0);
            let member_type = u32_at(&self.types_section, at + 4).unwrap_or(0);
            let raw_offset = u32_at(&self.types_section, at + 8).unwrap_or(0);
            let bit_offset = if entry.kind_flag {
                raw_offset & 0x00ff_ffff
            } else {
                raw_offset
            };
            let this_name = self.name(member_name);
            if this_name == name {
                if !bit_offset.is_multiple_of(8) {
                    return Err(BtfError::Missing(format!("{name} is a bitfield")));
                }
                return Ok(Some((bit_offset / 8, member_type)));
            }
            if this_name.is_empty()
                && let Some((inner, ty)) = self.find_member(member_type, name)?
            {
                return Ok(Some((bit_offset / 8 + inner, ty)));
            }
        }
        Ok(None)
    }

    /// Byte offset and size of a dotted member path (`src.u.all`) inside struct `struct_name`.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<(u32, u32), BtfError> {
        let mut id = self.struct_named(struct_name)?;
        let mut offset = 0;
        for part in path.split('.') {
            let (at, ty) = self.find_member(id, part)?.ok_or_else(|| {
                BtfError::Missing(format!("{struct_name}.{path}: no member {part}"))
            })?;
            offset += at;
            id = ty;
        }
        Ok((offset, self.size_of(id)?))
    }

    /// Size of struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        self.size_of(self.struct_named(name)?)
    }
}

/// The conntrack offsets the program needs, each checked for the size the program reads.
pub fn conntrack_offsets(btf: &Btf) -> Result<ConntrackOffsets, BtfError> {
    let field = |strukt: &str, path: &str, size: u32| -> Result<u32, BtfError> {
        let (offset, actual) = btf.member(strukt, path)?;
        if actual != size {
            return Err(BtfError::Missing(format!(
                "{strukt}.{path} is {actual} bytes, expected {size}"
            )));
        }
        Ok(offset)
    };
    let tuplehash_size = btf.struct_size("nf_conntrack_tuple_hash")?;
    let (conn_tuplehash, array_size) = btf.member("nf_conn", "tuplehash")?;
    if array_size != 2 * tuplehash_size {
        return Err(BtfError::Missing(format!(
            "nf_conn.tuplehash is {array_size} bytes, expected 2 x {tuplehash_size}"
        )));
    }
    Ok(ConntrackOffsets {
        skb_nfct: field("sk_buff", "_nfct", 8)?,
        conn_tuplehash,
        tuplehash_size,
        hash_tuple: btf.member("nf_conntrack_tuple_hash", "tuple")?.0,
        src_addr: field("nf_conntrack_tuple", "src.u3", 16)?,
        src_port: field("nf_conntrack_tuple", "src.u.all", 2)?,
        l3num: field("nf_conntrack_tuple", "src.l3num", 2)?,
        dst_addr: field("nf_conntrack_tuple", "dst.u3", 16)?,
        dst_port: field("nf_conntrack_tuple", "dst.u.all", 2)?,
        protonum: field("nf_conntrack_tuple", "dst.protonum", 1)?,
    })
}

/// The `sk_buff` offsets the program needs to read a packet's headers (socketless holding).
pub fn skb_offsets(btf: &Btf) -> Result<tarpit_ebpf::SkbOffsets, BtfError> {
    let field = |path: &str, size: u32| -> Result<u32, BtfError> {
        let (offset, actual) = btf.member("sk_buff", path)?;
        if actual != size {
            return Err(BtfError::Missing(format!(
                "sk_buff.{path} is {actual} bytes, expected {size}"
            )));
        }
        Ok(offset)
    };
    Ok(tarpit_ebpf::SkbOffsets {
        head: field("head", 8)?,
        data: field("data", 8)?,
        len: field("len", 4)?,
        data_len: field("data_len", 4)?,
        network_header: field("network_header", 2)?,
        transport_header: field("transport_header", 2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF. Every Linux this project targets has it; `TARPIT_E2E` makes
    /// its absence a failure rather than a skip.
    fn kernel_btf() -> Option<Btf> {
        match Btf::from_file(Path::new(VMLINUX_BTF)) {
            Ok(btf) => Some(btf),
            Err(e) if std::env::var_os("TARPIT_E2E").is_none() => {
                eprintln!("SKIPPED: no kernel BTF ({e}); TARPIT_E2E=1 makes this a failure");
                None
            }
            Err(e) => panic!("TARPIT_E2E is set but kernel BTF is unavailable: {e}"),
        }
    }

    #[test]
    fn conntrack_offsets_of_the_running_kernel_are_consistent() {
        let Some(btf) = kernel_btf() else { return };
        let off = conntrack_offsets(&btf).unwrap();
        // Layout facts that hold on every kernel with IPv6 (union nf_inet_addr is 16 bytes):
        // the tuple is src { u3, u, l3num } then dst { u3, u, protonum, dir }.
        assert_eq!(off.src_addr, 0);
        assert_eq!(off.src_port, 16);
        assert_eq!(off.l3num, 18);
        assert_eq!(off.dst_addr, 20);
        assert_eq!(off.dst_port, 36);
        assert_eq!(off.protonum, 38);
        // The hash entry is a list node followed by the tuple.
        assert_eq!(off.hash_tuple, 16);
        assert_eq!(off.tuplehash_size, 56);
        assert!(off.skb_nfct > 0 && off.skb_nfct.is_multiple_of(8));
        assert!(off.conn_tuplehash > 0);
    }

    #[test]
    fn skb_offsets_of_the_running_kernel_are_distinct_and_aligned() {
        let Some(btf) = kernel_btf() else { return };
        let off = skb_offsets(&btf).unwrap();
        assert!(off.head.is_multiple_of(8) && off.data.is_multiple_of(8));
        assert_eq!(
            off.data,
            off.head + 8,
            "head and data are declared together"
        );
        assert_eq!(
            off.data_len,
            off.len + 4,
            "len and data_len are declared together"
        );
        assert_ne!(off.network_header, off.transport_header);
        assert!(off.transport_header.is_multiple_of(2));
    }

    #[test]
    fn member_paths_step_through_anonymous_members_and_check_sizes() {
        let Some(btf) = kernel_btf() else { return };
        // sk_buff's first members sit inside anonymous unions/structs.
        let (next, size) = btf.member("sk_buff", "next").unwrap();
        assert_eq!((next, size), (0, 8));
        assert_eq!(btf.member("nf_conntrack_tuple", "dst.u.all").unwrap().1, 2);
        assert!(matches!(
            btf.member("nf_conntrack_tuple", "dst.nonexistent"),
            Err(BtfError::Missing(_))
        ));
        assert!(matches!(
            btf.member("no_such_struct_anywhere", "x"),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn garbage_is_rejected_not_guessed() {
        assert!(matches!(Btf::parse(b"nope"), Err(BtfError::Malformed(_))));
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        header.extend_from_slice(&[0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(Btf::parse(&header), Err(BtfError::Malformed(_))));
    }
}
