//! The client's TCP SYN, as the kernel saved it (`TCP_SAVE_SYN` on the listener, read once with
//! `TCP_SAVED_SYN` after accept): the IP and TCP header fields that tell operating systems and
//! scanners' packet crafters apart.
//!
//! The fields are facts of IPv4 (RFC 791), IPv6 (RFC 8200) and TCP (RFC 9293, options from RFC
//! 7323 and RFC 2018). The combined string [`SynFields::fingerprint`] is this project's own
//! format (documented in the README); it is neither JA4T (FoxIO License, no commercial use) nor
//! p0f's signature format or database (LGPL).

/// Option kinds kept per SYN. Real stacks send at most about ten (40 option bytes); kinds after
/// the sixteenth are not recorded, which keeps the fields small beside every held connection.
const MAX_OPTIONS: usize = 16;

/// One TCP option's kind, in the order the SYN carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionKind(pub u8);

impl OptionKind {
    /// The short name used in `syn_options`: `eol`, `nop`, `mss`, `ws`, `sok` (SACK
    /// permitted), `sack`, `ts`, or `?N` for any other kind N.
    fn write_name(self, out: &mut String) {
        let name = match self.0 {
            0 => "eol",
            1 => "nop",
            2 => "mss",
            3 => "ws",
            4 => "sok",
            5 => "sack",
            8 => "ts",
            other => {
                out.push('?');
                out.push_str(&other.to_string());
                return;
            }
        };
        out.push_str(name);
    }
}

/// What one SYN said about its sender. `Copy` and allocation-free: a worker parses it once per
/// connection and keeps it beside the connection; the strings are made on the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynFields {
    /// 4 or 6.
    pub ip_version: u8,
    /// The TTL (IPv4) or hop limit (IPv6) as it arrived.
    pub ttl: u8,
    /// IPv4's Don't Fragment bit; `None` for IPv6, which has no such bit.
    pub df: Option<bool>,
    /// The TCP window field (unscaled, as in the SYN).
    pub window: u16,
    /// The maximum segment size option.
    pub mss: Option<u16>,
    /// The window scale option's shift count.
    pub wscale: Option<u8>,
    options: [OptionKind; MAX_OPTIONS],
    option_count: u8,
}

impl SynFields {
    /// The initial TTL the sender most likely used: the next of 32, 64, 128 and 255 at or above
    /// the TTL seen (hops only ever lower it).
    pub fn initial_ttl(&self) -> u8 {
        [32, 64, 128, 255]
            .into_iter()
            .find(|&initial| self.ttl <= initial)
            .unwrap_or(255)
    }

    /// The option kinds in order.
    pub fn options(&self) -> &[OptionKind] {
        &self.options[..self.option_count as usize]
    }

    /// The option layout, comma-joined: `mss,sok,ts,nop,ws` (empty when there were none).
    pub fn options_text(&self) -> String {
        let mut text = String::new();
        for (i, kind) in self.options().iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            kind.write_name(&mut text);
        }
        text
    }

    /// `syn_fp`: `IP:INITIAL_TTL:DF:WINDOW:MSS:WSCALE:OPTIONS`, one line per sender
    /// configuration, e.g. `4:64:1:65495:65495:7:mss,sok,ts,nop,ws`. DF is `1`/`0` (`-` for
    /// IPv6), an absent MSS or window scale is `-`. The initial TTL, not the TTL seen, so the
    /// same client at a different distance gives the same string. Takes the option layout
    /// already written ([`SynFields::options_text`], which the record keeps too) and builds
    /// the string in one allocation: it is computed for every connection.
    pub fn fingerprint(&self, options_text: &str) -> String {
        use std::fmt::Write as _;
        fn number_or_dash(fp: &mut String, number: Option<u16>) {
            match number {
                Some(number) => {
                    let _ = write!(fp, "{number}");
                }
                None => fp.push('-'),
            }
        }
        let mut fp = String::with_capacity(24 + options_text.len());
        let _ = write!(fp, "{}:{}:", self.ip_version, self.initial_ttl());
        fp.push_str(match self.df {
            Some(true) => "1",
            Some(false) => "0",
            None => "-",
        });
        let _ = write!(fp, ":{}:", self.window);
        number_or_dash(&mut fp, self.mss);
        fp.push(':');
        number_or_dash(&mut fp, self.wscale.map(u16::from));
        fp.push(':');
        fp.push_str(options_text);
        fp
    }
}

/// Parses the bytes `TCP_SAVED_SYN` returns: an IPv4 or IPv6 header, then the TCP header.
/// `None` for anything else (never panics: every length is checked against the slice).
pub fn parse(bytes: &[u8]) -> Option<SynFields> {
    let version = bytes.first()? >> 4;
    let (ttl, df, tcp) = match version {
        4 => {
            let header_len = usize::from(bytes[0] & 0x0f) * 4;
            if header_len < 20 || *bytes.get(9)? != 6 {
                return None;
            }
            let df = bytes.get(6)? & 0x40 != 0;
            (*bytes.get(8)?, Some(df), bytes.get(header_len..)?)
        }
        // Only a TCP header directly after the fixed header: kernels save what they received,
        // and a SYN with extension headers is too rare to be worth walking them.
        6 if *bytes.get(6)? == 6 => (*bytes.get(7)?, None, bytes.get(40..)?),
        _ => return None,
    };
    let window = u16::from_be_bytes([*tcp.get(14)?, *tcp.get(15)?]);
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let options = tcp.get(20..data_offset.max(20))?;
    let mut fields = SynFields {
        ip_version: version,
        ttl,
        df,
        window,
        mss: None,
        wscale: None,
        options: [OptionKind(0); MAX_OPTIONS],
        option_count: 0,
    };
    let mut at = 0;
    while at < options.len() && usize::from(fields.option_count) < MAX_OPTIONS {
        let kind = options[at];
        fields.options[usize::from(fields.option_count)] = OptionKind(kind);
        fields.option_count += 1;
        match kind {
            0 => break,
            1 => at += 1,
            _ => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 {
                    break; // malformed: the rest cannot be walked
                }
                let body = options.get(at + 2..at + len)?;
                match (kind, body) {
                    (2, [a, b]) => fields.mss = Some(u16::from_be_bytes([*a, *b])),
                    (3, [shift]) => fields.wscale = Some(*shift),
                    _ => {}
                }
                at += len;
            }
        }
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Linux SYN over loopback: IPv4 with DF, TTL 64, window 65495, MSS 65495, SACK
    /// permitted, timestamps, NOP, window scale 7 (bytes as `TCP_SAVED_SYN` returns them).
    fn linux_syn() -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        let tcp = [
            0xc3, 0x50, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xff, 0xd7, 0, 0, 0, 0,
            // options: mss 65495, sok, ts, nop, ws 7
            2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        ip.extend_from_slice(&tcp);
        ip
    }

    #[test]
    fn a_linux_syn_gives_every_field() {
        let syn = parse(&linux_syn()).unwrap();
        assert_eq!(syn.ip_version, 4);
        assert_eq!(syn.ttl, 64);
        assert_eq!(syn.initial_ttl(), 64);
        assert_eq!(syn.df, Some(true));
        assert_eq!(syn.window, 65495);
        assert_eq!(syn.mss, Some(65495));
        assert_eq!(syn.wscale, Some(7));
        assert_eq!(syn.options_text(), "mss,sok,ts,nop,ws");
        assert_eq!(
            syn.fingerprint(&syn.options_text()),
            "4:64:1:65495:65495:7:mss,sok,ts,nop,ws"
        );
    }

    #[test]
    fn initial_ttl_is_the_next_common_value() {
        let mut syn = parse(&linux_syn()).unwrap();
        for (seen, initial) in [
            (1, 32),
            (32, 32),
            (33, 64),
            (117, 128),
            (128, 128),
            (129, 255),
        ] {
            syn.ttl = seen;
            assert_eq!(syn.initial_ttl(), initial, "ttl {seen}");
        }
    }

    #[test]
    fn ipv6_has_no_df_and_a_masscan_like_syn_has_no_options() {
        let mut bytes = vec![0x60, 0, 0, 0, 0, 20, 6, 52];
        bytes.extend_from_slice(&[0; 32]);
        bytes.extend_from_slice(&[
            0, 1, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x04, 0, 0, 0, 0, 0,
        ]);
        let syn = parse(&bytes).unwrap();
        assert_eq!((syn.ip_version, syn.ttl, syn.df), (6, 52, None));
        assert_eq!(syn.window, 1024);
        assert_eq!(syn.options_text(), "");
        assert_eq!(syn.fingerprint(&syn.options_text()), "6:64:-:1024:-:-:");
    }

    #[test]
    fn unknown_options_are_named_by_number_and_bad_input_is_refused() {
        let mut bytes = linux_syn();
        bytes[20 + 12] = 0xb0; // one more option word
        bytes.extend_from_slice(&[30, 4, 0, 0]); // kind 30 (MPTCP), length 4
        assert!(parse(&bytes).unwrap().options_text().ends_with(",ws,?30"));
        for cut in 0..40 {
            let _ = parse(&bytes[..cut]); // never panics
        }
        assert_eq!(parse(&[0x45; 10]), None);
        assert_eq!(parse(b"GET / HTTP/1.1"), None);
    }
}
