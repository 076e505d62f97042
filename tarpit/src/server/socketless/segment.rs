//! Crafted TCP segments for socketless holds: headers and checksums built by `etherparse` into
//! a caller's buffer, and the raw sockets (`IPPROTO_RAW`, the IP header ours) that send them in
//! batches with one `sendmmsg` per wake-up ([`Out`]: a flow's bytes into its family's batch).
//!
//! Raw sockets are opened once at start, while the process still has CAP_NET_RAW.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use etherparse::{IpNumber, Ipv4Header, Ipv6Header, TcpHeader, TcpOptionElement};
use tarpit_ebpf::HeldStatus;

use super::flow::{Flow, Source};

/// The largest segment built here: IPv6 header, TCP header with the timestamp option, and a
/// payload of at most [`super::repair::Frozen::mss`] (≤ 1400).
pub const MAX_PACKET: usize = 40 + 32 + 1400;

/// One segment to a held client.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Our address and port (the segment's source): the accepted socket's local address.
    pub local: SocketAddr,
    /// The client's address and port (the destination).
    pub peer: SocketAddr,
    /// Sequence number of the first payload byte (or of the FIN).
    pub seq: u32,
    /// Acknowledgement number: the next byte expected from the client.
    pub ack: u32,
    /// The window field.
    pub window: u16,
    /// `(TSval, TSecr)` when the connection negotiated timestamps.
    pub timestamps: Option<(u32, u32)>,
    /// Whether this segment ends our side of the stream.
    pub fin: bool,
    /// The bytes carried.
    pub payload: &'a [u8],
}

/// Why a segment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The two addresses are of different families.
    #[error("addresses of different families")]
    MixedFamilies,
    /// The buffer is too small, or the builder refused the headers.
    #[error("building the segment: {0}")]
    Build(String),
}

/// Writes the IP and TCP headers and the payload into `out`; returns the packet's length.
/// Uses etherparse's header types directly (its builder moves its large state at every
/// step, which showed in profiles at 100,000 held clients).
pub fn write(segment: &Segment<'_>, out: &mut [u8]) -> Result<usize, SegmentError> {
    let build = |e: &dyn std::fmt::Display| SegmentError::Build(e.to_string());
    let (local, peer) = (segment.local, segment.peer);
    let mut tcp = TcpHeader::new(local.port(), peer.port(), segment.seq, segment.window);
    tcp.ack = true;
    tcp.acknowledgment_number = segment.ack;
    tcp.psh = !segment.payload.is_empty();
    tcp.fin = segment.fin;
    if let Some((tsval, tsecr)) = segment.timestamps {
        // NOP NOP TS, the layout Linux itself sends.
        let options = [
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(tsval, tsecr),
        ];
        tcp.set_options(&options).map_err(|e| build(&e))?;
    }
    let tcp_len = tcp.header_len() + segment.payload.len();
    let ip_len = match (local.ip().to_canonical(), peer.ip().to_canonical()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            tcp.checksum = tcp
                .calc_checksum_ipv4_raw(src.octets(), dst.octets(), segment.payload)
                .map_err(|e| build(&e))?;
            let ip = Ipv4Header::new(
                tcp_len as u16,
                64,
                IpNumber::TCP,
                src.octets(),
                dst.octets(),
            )
            .map_err(|e| build(&e))?;
            put(out, 0, &ip.to_bytes())?
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            tcp.checksum = tcp
                .calc_checksum_ipv6_raw(src.octets(), dst.octets(), segment.payload)
                .map_err(|e| build(&e))?;
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: tcp_len as u16,
                next_header: IpNumber::TCP,
                hop_limit: 64,
                source: src.octets(),
                destination: dst.octets(),
            };
            put(out, 0, &ip.to_bytes())?
        }
        _ => return Err(SegmentError::MixedFamilies),
    };
    let at = put(out, ip_len, &tcp.to_bytes())?;
    put(out, at, segment.payload)
}

/// Copies `bytes` into `out` at `at`; returns the end.
fn put(out: &mut [u8], at: usize, bytes: &[u8]) -> Result<usize, SegmentError> {
    let (end, room) = (at + bytes.len(), out.len());
    out.get_mut(at..end)
        .ok_or_else(|| SegmentError::Build(format!("{end} bytes do not fit in {room}")))?
        .copy_from_slice(bytes);
    Ok(end)
}

/// The two raw sockets, IPv4 and IPv6, shared by every worker.
#[derive(Debug)]
pub struct RawSockets {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl RawSockets {
    /// Opens both (needs CAP_NET_RAW), non-blocking, with room for a burst of segments.
    pub fn open() -> std::io::Result<Self> {
        Ok(Self {
            v4: raw_socket(libc::AF_INET)?,
            v6: raw_socket(libc::AF_INET6)?,
        })
    }

    /// The IPv4 socket.
    pub fn v4(&self) -> &OwnedFd {
        &self.v4
    }

    /// The IPv6 socket.
    pub fn v6(&self) -> &OwnedFd {
        &self.v6
    }
}

fn raw_socket(family: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size: libc::c_int = 4 << 20;
    // SAFETY: SO_SNDBUF takes an int. Best effort: the default works, only smaller bursts.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// Segments waiting to go out together: packet buffers, addresses and message headers, all
/// allocated once per worker and reused for every batch.
pub struct Batch {
    packets: Vec<[u8; MAX_PACKET]>,
    lengths: Vec<usize>,
    addresses: Vec<libc::sockaddr_in6>,
    address_lengths: Vec<libc::socklen_t>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    queued: usize,
}

/// Segments per `sendmmsg`.
pub const BATCH: usize = 64;

impl Default for Batch {
    fn default() -> Self {
        Self {
            packets: vec![[0; MAX_PACKET]; BATCH],
            lengths: vec![0; BATCH],
            // SAFETY: sockaddr_in6 is plain data; all zero is a valid (unspecified) value.
            addresses: vec![unsafe { std::mem::zeroed() }; BATCH],
            address_lengths: vec![0; BATCH],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            // SAFETY: mmsghdr is plain data; all zero is a valid empty header.
            headers: vec![unsafe { std::mem::zeroed() }; BATCH],
            queued: 0,
        }
    }
}

impl Batch {
    /// Whether another segment fits before a send.
    pub fn is_full(&self) -> bool {
        self.queued == BATCH
    }

    /// Builds `segment` into the next free buffer.
    pub fn push(&mut self, segment: &Segment<'_>) -> Result<(), SegmentError> {
        let at = self.queued;
        let len = write(segment, &mut self.packets[at])?;
        self.lengths[at] = len;
        self.address_lengths[at] = write_sockaddr(segment.peer, &mut self.addresses[at]);
        self.queued += 1;
        Ok(())
    }

    /// Sends what is queued on `socket` (all to one family); returns how many went out.
    pub fn send(&mut self, socket: &OwnedFd) -> usize {
        let count = std::mem::take(&mut self.queued);
        if count == 0 {
            return 0;
        }
        for at in 0..count {
            self.iovecs[at] = libc::iovec {
                iov_base: self.packets[at].as_mut_ptr().cast(),
                iov_len: self.lengths[at],
            };
            let header = &mut self.headers[at].msg_hdr;
            header.msg_name = (&mut self.addresses[at] as *mut libc::sockaddr_in6).cast();
            header.msg_namelen = self.address_lengths[at];
            header.msg_iov = &mut self.iovecs[at];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point into buffers owned by self, live for the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // A full buffer or an unreachable client: the segments left are lost like a
                // dropped packet, and go again from the client's last ACK on the next tick.
                break;
            }
            sent += n as usize;
        }
        sent
    }
}

/// Writes `peer` (with port 0: raw sockets take no port) into `out`; returns its length.
fn write_sockaddr(peer: SocketAddr, out: &mut libc::sockaddr_in6) -> libc::socklen_t {
    match peer.ip().to_canonical() {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_in6 and both are plain data.
            unsafe {
                std::ptr::write(
                    (out as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        IpAddr::V6(v6) => {
            *out = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Segments on their way out, per family, and a scratch buffer for one payload.
pub struct Out {
    /// IPv4 segments waiting.
    pub v4: Batch,
    /// IPv6 segments waiting.
    pub v6: Batch,
    /// One payload, assembled before it is framed.
    pub payload: Vec<u8>,
}

impl Out {
    /// Builds the segment carrying stream bytes `from..to` of `flow` (then a FIN if `fin`)
    /// into its family's batch, sending the batch first if it is full.
    pub fn queue(
        &mut self,
        (raw, local_ip): (&RawSockets, std::net::IpAddr),
        flow: &Flow,
        (from, to): (u32, u32),
        ack: u32,
        (fin, status): (bool, &HeldStatus),
        (source, tail): (Option<&Source<'_>>, &[u8]),
    ) {
        let mss = usize::from(flow.mss);
        let len = (to.saturating_sub(from) as usize).min(mss);
        let mut n = source.map_or(0, |source| source.copy(from, &mut self.payload[..len]));
        // Never past the MSS (the caller splits what does not fit: `Flow::shutdown_fits`).
        let extra = tail.len().min(mss.min(self.payload.len()) - n);
        self.payload[n..n + extra].copy_from_slice(&tail[..extra]);
        n += extra;
        let local = SocketAddr::new(local_ip, flow.key.local_port);
        let peer = SocketAddr::new(
            crate::ebpf::unmapped(flow.key.peer_addr),
            flow.key.peer_port,
        );
        let segment = Segment {
            local,
            peer,
            seq: flow.seq_zero.wrapping_add(from),
            ack,
            window: flow.window,
            timestamps: flow.has(Flow::TIMESTAMPS).then(|| {
                let tsval = flow.ts_offset.wrapping_add(super::repair::monotonic_ms());
                (tsval, status.tsval)
            }),
            fin,
            payload: &self.payload[..n],
        };
        let (batch, socket) = match local.ip() {
            std::net::IpAddr::V4(_) => (&mut self.v4, raw.v4()),
            std::net::IpAddr::V6(_) => (&mut self.v6, raw.v6()),
        };
        if batch.is_full() {
            batch.send(socket);
        }
        if let Err(error) = batch.push(&segment) {
            tracing::debug!("socketless segment not built: {error}");
        }
    }

    /// Sends both batches.
    pub fn flush(&mut self, raw: &RawSockets) {
        self.v4.send(raw.v4());
        self.v6.send(raw.v6());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn parse(bytes: &[u8]) -> (SlicedPacket<'_>, bool) {
        let packet = SlicedPacket::from_ip(bytes).unwrap();
        let checksum_ok = match (&packet.net, &packet.transport) {
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) => {
                let header = tcp.to_header();
                header
                    .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                    .unwrap()
                    == tcp.checksum()
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(tcp))) => {
                let header = tcp.to_header();
                header
                    .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                    .unwrap()
                    == tcp.checksum()
            }
            _ => false,
        };
        (packet, checksum_ok)
    }

    #[test]
    fn segments_carry_the_sequence_state_timestamps_and_a_valid_checksum() {
        for (local, peer) in [
            ("192.0.2.1:8080", "198.51.100.7:40000"),
            ("[2001:db8::1]:8080", "[2001:db8::7]:40000"),
            ("[::ffff:192.0.2.1]:80", "[::ffff:198.51.100.7]:40001"),
        ] {
            let segment = Segment {
                local: local.parse().unwrap(),
                peer: peer.parse().unwrap(),
                seq: 0xfffffffe,
                ack: 77,
                window: 512,
                timestamps: Some((1000, 2000)),
                fin: true,
                payload: b"1\r\n.\r\n",
            };
            let mut out = [0u8; MAX_PACKET];
            let len = write(&segment, &mut out).unwrap();
            let (packet, checksum_ok) = parse(&out[..len]);
            assert!(checksum_ok, "{local}");
            let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
                panic!("not TCP")
            };
            assert_eq!(tcp.source_port(), segment.local.port());
            assert_eq!(tcp.destination_port(), segment.peer.port());
            assert_eq!(tcp.sequence_number(), 0xfffffffe);
            assert_eq!(tcp.acknowledgment_number(), 77);
            assert!(tcp.ack() && tcp.psh() && tcp.fin() && !tcp.syn() && !tcp.rst());
            assert_eq!(tcp.window_size(), 512);
            assert_eq!(tcp.payload(), b"1\r\n.\r\n");
            let options: Vec<_> = tcp.options_iterator().map(|o| o.unwrap()).collect();
            assert!(options.contains(&TcpOptionElement::Timestamp(1000, 2000)));
            let is_v6 = matches!(packet.net, Some(NetSlice::Ipv6(_)));
            assert_eq!(is_v6, local.starts_with("[2001"), "{local}");
        }
    }

    #[test]
    fn without_timestamps_there_are_no_options_and_an_empty_fin_has_no_push() {
        let segment = Segment {
            local: "192.0.2.1:8080".parse().unwrap(),
            peer: "198.51.100.7:40000".parse().unwrap(),
            seq: 5,
            ack: 6,
            window: 100,
            timestamps: None,
            fin: true,
            payload: b"",
        };
        let mut out = [0u8; MAX_PACKET];
        let len = write(&segment, &mut out).unwrap();
        assert_eq!(len, 40);
        let (packet, checksum_ok) = parse(&out[..len]);
        assert!(checksum_ok);
        let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
            panic!("not TCP")
        };
        assert!(tcp.fin() && !tcp.psh());
        assert_eq!(tcp.options_iterator().count(), 0);
    }

    #[test]
    fn mixed_families_are_refused() {
        let segment = Segment {
            local: "192.0.2.1:8080".parse().unwrap(),
            peer: "[2001:db8::7]:40000".parse().unwrap(),
            seq: 0,
            ack: 0,
            window: 0,
            timestamps: None,
            fin: false,
            payload: b"",
        };
        assert!(matches!(
            write(&segment, &mut [0u8; MAX_PACKET]),
            Err(SegmentError::MixedFamilies)
        ));
    }
}
