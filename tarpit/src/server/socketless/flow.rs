//! One socketless-held flow: what is left of a connection once its socket is gone (about a
//! hundred bytes), and the decision each tick makes from what the client last said.
//!
//! Positions count bytes of the response after its head (the stream), so any byte can be sent
//! again from its position alone: the drip's ticks and the persona's pages are pre-built
//! `&'static` slices. Sequence numbers are `seq_zero + position`. Pure: no socket, no clock;
//! the holder ([`super::Holder`]) does the I/O.

use tarpit_ebpf::{HeldKey, HeldStatus};

use crate::http::response::{DripResponse, Framing};

/// `Flow::fin_ms` while the client has sent no FIN.
pub const NO_FIN: u32 = u32::MAX;

/// Ticks a flow lingers after our FIN, for the client's FIN to be acknowledged.
const LINGER_TICKS: u8 = 4;

/// Resends of a full outstanding segment back off exponentially, up to `2^MAX_BACKOFF` ticks
/// apart (about 96 s at the default 1.5 s tick), as a kernel socket's retransmission timer.
const MAX_BACKOFF: u8 = 6;

/// Bytes a flow may send again beyond its stream's length before its peer counts as gone: a
/// client that keeps a flow alive without taking what it is sent gets no more than this.
const RESEND_ALLOWANCE: u32 = 16 * 1024;

/// Where the bytes of a held response come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The drip's ticks, then (chunked) the terminating chunk.
    Drip(&'a DripResponse, Framing),
    /// A persona page's body (or, for HEAD, its head's end), `per_tick` bytes a tick.
    Page {
        /// The bytes.
        bytes: &'static [u8],
        /// Bytes per tick.
        per_tick: usize,
    },
}

impl Source<'_> {
    /// The stream's whole length in bytes.
    pub fn length(&self) -> u32 {
        match self {
            Source::Drip(drip, framing) => drip.stream_len(*framing) as u32,
            Source::Page { bytes, .. } => bytes.len() as u32,
        }
    }

    /// Copies bytes from position `from` into `out`; returns how many.
    pub fn copy(&self, from: u32, out: &mut [u8]) -> usize {
        match self {
            Source::Drip(drip, framing) => drip.copy_stream(*framing, u64::from(from), out),
            Source::Page { bytes, .. } => {
                let rest = bytes.get(from as usize..).unwrap_or_default();
                let n = rest.len().min(out.len());
                out[..n].copy_from_slice(&rest[..n]);
                n
            }
        }
    }

    /// Where the next tick's bytes end, given the position sent so far (a tick boundary).
    fn tick_end(&self, sent: u32) -> u32 {
        match self {
            Source::Drip(drip, framing) => {
                let tick = drip.tick_at(u64::from(sent), *framing);
                if tick < drip.ticks() {
                    drip.stream_position(tick + 1, *framing) as u32
                } else {
                    self.length()
                }
            }
            Source::Page { per_tick, .. } => {
                (sent as usize + per_tick).min(self.length() as usize) as u32
            }
        }
    }
}

/// What a flow's tick comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send stream bytes `from..to` (and a FIN after them); `ended`: the response ended with
    /// this segment (record it now; the flow lingers for the closing handshake).
    Send {
        /// First position sent.
        from: u32,
        /// Position after the last byte sent.
        to: u32,
        /// Whether the FIN goes too.
        fin: bool,
        /// The end reason, when this segment ends the response.
        ended: Option<&'static str>,
    },
    /// The response ended at `at_ms` (CLOCK_MONOTONIC ms, the hook's clock) or now (`None`),
    /// with nothing to send: record it and forget the flow.
    Gone {
        /// Why.
        reason: &'static str,
        /// When the client's RST came, if that was it.
        at_ms: Option<u32>,
    },
    /// Closing: both FINs are acknowledged but the client's; acknowledge it and forget.
    AckFinAndForget,
    /// Nothing to send this tick (closing, or backing off a resend).
    Wait,
    /// Closing is over: forget the flow.
    Forget,
}

/// One held flow.
#[derive(Debug)]
pub struct Flow {
    /// The map key: the client's address and port, our port (and address, folded).
    pub key: HeldKey,
    /// Sequence number of stream position 0.
    pub seq_zero: u32,
    /// Our acknowledgement number: the next byte expected from the client.
    pub rcv_nxt: u32,
    /// `TSval - CLOCK_MONOTONIC ms` (with [`Flow::TIMESTAMPS`]).
    pub ts_offset: u32,
    /// The position of the next byte never sent.
    pub sent: u32,
    /// The position the client has acknowledged (one past `sent` once our FIN is).
    pub acked: u32,
    /// When `acked` last moved (holder ms; the holder's clock wraps, so only differences of
    /// these times mean anything).
    pub progress_ms: u32,
    /// When the request was recorded (holder ms).
    pub started_ms: u32,
    /// When the connection was accepted (holder ms).
    pub accepted_ms: u32,
    /// The client's FIN, ms after `started_ms`, or [`NO_FIN`].
    pub fin_ms: u32,
    /// The connection's id.
    pub conn_id: u64,
    /// The request this response answers (also the connection's request count).
    pub request_seq: u32,
    /// Payload bytes of the connection's earlier responses.
    pub prior_bytes: u32,
    /// The window field to advertise.
    pub window: u16,
    /// Largest payload per segment.
    pub mss: u16,
    /// The persona page, for page streams.
    pub page: u16,
    /// Our address: an index into the holder's table of local addresses.
    pub local: u16,
    /// [`Flow::CHUNKED`], [`Flow::PAGE`], [`Flow::HEAD_ONLY`], [`Flow::CLOSING`],
    /// [`Flow::TIMESTAMPS`].
    pub bits: u8,
    /// Ticks spent closing.
    pub closing_ticks: u8,
    /// Resends in a row without the client's progress (the backoff's exponent).
    pub resends: u8,
    /// Ticks left before the next resend may go.
    pub resend_wait: u8,
    /// Bytes sent again so far (each byte counted once per time it went again).
    pub resent: u32,
    /// The client's place under the per-client cap, given back when the flow ends (with
    /// [`Flow::COUNTED`]).
    pub place: crate::server::limits::HeldPlace,
}

impl Flow {
    /// Drip stream framed in chunks (HTTP/1.1).
    pub const CHUNKED: u8 = 1;
    /// A persona page, not the drip.
    pub const PAGE: u8 = 2;
    /// A page answering HEAD (its head's end is dripped).
    pub const HEAD_ONLY: u8 = 4;
    /// Our FIN is sent: only the closing handshake is left.
    pub const CLOSING: u8 = 8;
    /// The connection negotiated TCP timestamps: segments carry the option.
    pub const TIMESTAMPS: u8 = 16;
    /// The flow holds its client's place under the per-client cap (`place`).
    pub const COUNTED: u8 = 32;

    /// Whether a bit is set.
    pub fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    /// Takes in what the hook saw of the client, then says what this tick does.
    pub fn step(
        &mut self,
        status: &HeldStatus,
        source: &Source<'_>,
        now_ms: u32,
        timeouts: Timeouts,
    ) -> Step {
        let fin_sent = self.has(Self::CLOSING);
        let acked = status.ack.wrapping_sub(self.seq_zero);
        let highest = self.sent + u32::from(fin_sent);
        // Never an ACK of more than was sent (the hook passes any).
        if acked > self.acked && acked <= highest {
            let (advance, outstanding) = (acked - self.acked, highest - self.acked);
            self.acked = acked;
            // Real progress: at least half a segment, or all that was outstanding. A client that
            // acknowledges a byte at a time to keep a flow alive does not reset its silence.
            if advance >= (u32::from(self.mss) / 2).min(outstanding) {
                self.progress_ms = now_ms;
                (self.resends, self.resend_wait) = (0, 0);
            }
        }
        let client_fin = status.fin_ms != 0 || self.fin_ms != NO_FIN;
        if fin_sent {
            return self.closing_step(status);
        }
        if status.rst_ms != 0 {
            // As on a socket: a reset after the client's FIN is a close, without one a reset.
            let reason = if client_fin {
                "client_closed"
            } else {
                "client_reset"
            };
            return Step::Gone {
                reason,
                at_ms: Some(status.rst_ms),
            };
        }
        // Times are the holder's wrapping millisecond clock: differences, never comparisons
        // (a flow lives far less than the 49 days the clock takes to wrap).
        if now_ms.wrapping_sub(self.accepted_ms) >= timeouts.lifetime_ms {
            return self.end_with_fin("lifetime_exceeded");
        }
        if self.acked >= self.sent {
            self.progress_ms = now_ms; // nothing outstanding: silence counts from the next send
        }
        let waiting = now_ms.wrapping_sub(self.progress_ms);
        let outstanding = self.sent - self.acked;
        let over_budget = self.resent > source.length().saturating_add(RESEND_ALLOWANCE);
        if outstanding > 0 && (waiting >= timeouts.peer_ms || over_budget) {
            return Step::Gone {
                reason: "peer_gone",
                at_ms: None,
            };
        }
        // The next tick's bytes, never more than one segment past the client's ACK, sent
        // together with anything not yet acknowledged (a lost segment goes again from the
        // client's last ACK). A tick larger than a segment goes over several ticks.
        // The client's window is respected, unscaled (conservative: the scale is not known
        // here): a zero window gets nothing new, only backed-off probes.
        let mss = u32::from(self.mss).max(1);
        let room = mss.min(u32::from(status.window));
        let to = source.tick_end(self.sent).min(self.acked + room);
        if to <= self.sent {
            // A full segment (or window) outstanding and nothing new fits: send it again (with
            // nothing outstanding, an empty probe of a closed window), backing off.
            if self.resend_wait > 0 {
                self.resend_wait -= 1;
                return Step::Wait;
            }
            self.resends = (self.resends + 1).min(MAX_BACKOFF);
            self.resend_wait = (1u8 << self.resends) - 1;
            self.resent = self.resent.saturating_add(outstanding);
            return Step::Send {
                from: self.acked,
                to: self.sent,
                fin: false,
                ended: None,
            };
        }
        self.resent = self.resent.saturating_add(outstanding);
        self.sent = to;
        let complete = to >= source.length();
        if complete {
            self.bits |= Self::CLOSING;
        }
        Step::Send {
            from: self.acked,
            to,
            fin: complete,
            ended: complete.then_some("complete"),
        }
    }

    /// At shutdown the unacknowledged bytes go again, then `tail_len` bytes of closing chunk
    /// with our FIN: whether they fit one segment (else the tail and FIN go in a second one,
    /// so no segment is ever larger than the MSS).
    pub fn shutdown_fits(&self, tail_len: usize) -> bool {
        (self.sent - self.acked.min(self.sent)) as usize + tail_len <= usize::from(self.mss)
    }

    /// Ends the response here: what was not acknowledged goes again with our FIN.
    pub fn end_with_fin(&mut self, reason: &'static str) -> Step {
        self.bits |= Self::CLOSING;
        Step::Send {
            from: self.acked,
            to: self.sent,
            fin: true,
            ended: Some(reason),
        }
    }

    fn closing_step(&mut self, status: &HeldStatus) -> Step {
        if status.rst_ms != 0 {
            return Step::Forget;
        }
        let fin_acked = self.acked == self.sent + 1;
        if fin_acked && status.fin_ms != 0 {
            return Step::AckFinAndForget;
        }
        if self.closing_ticks >= LINGER_TICKS {
            return Step::Forget;
        }
        self.closing_ticks += 1;
        if fin_acked {
            return Step::Wait;
        }
        Step::Send {
            from: self.acked.min(self.sent),
            to: self.sent,
            fin: true,
            ended: None,
        }
    }
}

/// The two limits a tick checks, in holder ms.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `max_connection_lifetime`, counted from `accepted_ms`.
    pub lifetime_ms: u32,
    /// How long unacknowledged bytes may wait (`peer_timeout`).
    pub peer_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(seq_zero: u32) -> Flow {
        Flow {
            key: HeldKey::default(),
            local: 0,
            seq_zero,
            rcv_nxt: 1,
            ts_offset: 0,
            sent: 6,
            acked: 6,
            progress_ms: 0,
            started_ms: 0,
            accepted_ms: 0,
            fin_ms: NO_FIN,
            conn_id: 1,
            request_seq: 1,
            prior_bytes: 0,
            window: 100,
            mss: 1000,
            page: 0,
            bits: Flow::CHUNKED,
            closing_ticks: 0,
            resends: 0,
            resend_wait: 0,
            resent: 0,
            place: [0; 2],
        }
    }

    const TIMEOUTS: Timeouts = Timeouts {
        lifetime_ms: 1_000_000,
        peer_ms: 60_000,
    };

    fn status(ack: u32) -> HeldStatus {
        HeldStatus {
            ack,
            window: u16::MAX,
            ..Default::default()
        }
    }

    /// A held flow's user-space state: what the memory goal of `bench hold --hold socketless`
    /// is built on (the hook's map entry is the rest). 96 since the resend backoff and budget
    /// (issue 24); 88 before.
    #[test]
    fn a_flow_is_at_most_96_bytes() {
        assert!(
            std::mem::size_of::<Flow>() <= 96,
            "{}",
            std::mem::size_of::<Flow>()
        );
    }

    #[test]
    fn each_tick_sends_the_next_tick_and_a_lost_one_goes_again() {
        let drip = DripResponse::new(b".", 4, "nginx");
        let source = Source::Drip(&drip, Framing::Chunked);
        // Sequence numbers wrap: position 6 is 4 past u32::MAX.
        let mut f = flow(u32::MAX - 1);
        let zero = f.seq_zero;
        let send = |from, to| Step::Send {
            from,
            to,
            fin: false,
            ended: None,
        };
        assert_eq!(
            f.step(&status(zero.wrapping_add(6)), &source, 1, TIMEOUTS),
            send(6, 12)
        );
        // Acknowledged: only the next tick.
        assert_eq!(
            f.step(&status(zero.wrapping_add(12)), &source, 2, TIMEOUTS),
            send(12, 18)
        );
        // That one was lost (the ACK did not move): it goes again with the next.
        assert_eq!(
            f.step(&status(zero.wrapping_add(12)), &source, 3, TIMEOUTS),
            send(12, 24)
        );
        // The last tick was tick 3; then the terminating chunk with our FIN.
        assert_eq!(
            f.step(&status(zero.wrapping_add(24)), &source, 4, TIMEOUTS),
            Step::Send {
                from: 24,
                to: 29,
                fin: true,
                ended: Some("complete"),
            }
        );
        // Our FIN unacknowledged: it goes again; acknowledged with the client's FIN: done.
        assert_eq!(
            f.step(&status(zero.wrapping_add(24)), &source, 5, TIMEOUTS),
            Step::Send {
                from: 24,
                to: 29,
                fin: true,
                ended: None,
            }
        );
        let both = HeldStatus {
            ack: zero.wrapping_add(30),
            fin_ms: 9,
            ..Default::default()
        };
        assert_eq!(f.step(&both, &source, 6, TIMEOUTS), Step::AckFinAndForget);
    }

    #[test]
    fn a_reset_after_a_fin_is_a_close_and_without_one_a_reset() {
        let drip = DripResponse::new(b".", 1200, "nginx");
        let source = Source::Drip(&drip, Framing::Raw);
        let mut f = flow(100);
        let reset = HeldStatus {
            ack: 106,
            rst_ms: 77,
            ..Default::default()
        };
        assert_eq!(
            f.step(&reset, &source, 1, TIMEOUTS),
            Step::Gone {
                reason: "client_reset",
                at_ms: Some(77)
            }
        );
        let closed = HeldStatus {
            fin_ms: 70,
            ..reset
        };
        assert_eq!(
            f.step(&closed, &source, 1, TIMEOUTS),
            Step::Gone {
                reason: "client_closed",
                at_ms: Some(77)
            }
        );
    }

    #[test]
    fn silence_with_bytes_outstanding_is_peer_gone_and_the_lifetime_ends_with_a_fin() {
        let drip = DripResponse::new(b".", 1200, "nginx");
        let source = Source::Drip(&drip, Framing::Raw);
        let mut f = flow(0);
        f.bits = 0;
        (f.sent, f.acked) = (1, 1);
        // Nothing outstanding until 1000 s: the silence is counted from the send.
        let sent = |from, to| Step::Send {
            from,
            to,
            fin: false,
            ended: None,
        };
        assert_eq!(f.step(&status(1), &source, 1_000, TIMEOUTS), sent(1, 2));
        assert_eq!(f.step(&status(1), &source, 60_999, TIMEOUTS), sent(1, 3));
        assert_eq!(
            f.step(&status(1), &source, 61_000, TIMEOUTS),
            Step::Gone {
                reason: "peer_gone",
                at_ms: None
            }
        );
        let mut f = flow(0);
        f.bits = 0;
        (f.sent, f.acked) = (1, 1);
        let end = Timeouts {
            lifetime_ms: 5_000,
            ..TIMEOUTS
        };
        assert_eq!(
            f.step(&status(1), &source, 5_000, end),
            Step::Send {
                from: 1,
                to: 1,
                fin: true,
                ended: Some("lifetime_exceeded")
            }
        );
        assert!(f.has(Flow::CLOSING));
    }

    #[test]
    fn a_page_sends_per_tick_slices_and_ends_with_its_last() {
        static BODY: &[u8] = b"0123456789";
        let source = Source::Page {
            bytes: BODY,
            per_tick: 4,
        };
        let mut f = flow(0);
        f.bits = Flow::PAGE;
        (f.sent, f.acked) = (2, 2);
        let mut out = [0u8; 16];
        assert_eq!(source.copy(2, &mut out), 8);
        assert_eq!(&out[..8], b"23456789");
        assert!(matches!(
            f.step(&status(2), &source, 1, TIMEOUTS),
            Step::Send {
                from: 2,
                to: 6,
                fin: false,
                ..
            }
        ));
        assert_eq!(
            f.step(&status(6), &source, 2, TIMEOUTS),
            Step::Send {
                from: 6,
                to: 10,
                fin: true,
                ended: Some("complete")
            }
        );
    }

    /// The holder's millisecond clock wraps after 49 days; a flow accepted just before the
    /// wrap is timed by differences, so it is neither ended at once nor held forever.
    #[test]
    fn the_clock_wrapping_changes_nothing() {
        let drip = DripResponse::new(b".", 1200, "nginx");
        let source = Source::Drip(&drip, Framing::Raw);
        let mut f = flow(0);
        f.bits = 0;
        (f.sent, f.acked) = (1, 1);
        f.accepted_ms = u32::MAX - 1_000;
        f.progress_ms = u32::MAX - 1_000;
        let end = Timeouts {
            lifetime_ms: 5_000,
            ..TIMEOUTS
        };
        // 1.5 s after acceptance, across the wrap: a tick.
        assert!(matches!(
            f.step(&status(1), &source, 499, end),
            Step::Send { ended: None, .. }
        ));
        // 5 s after: the lifetime is over.
        assert!(matches!(
            f.step(&status(2), &source, 3_999, end),
            Step::Send {
                ended: Some("lifetime_exceeded"),
                ..
            }
        ));
    }

    /// Issue 24, item 1: a client that acknowledges one byte every 58 s. On a kernel socket
    /// it would get resends with backoff and be dropped; here too: the byte-at-a-time ACKs are
    /// no progress, resends of a full segment back off, and the flow ends `peer_gone` one
    /// `peer_timeout` after the last real progress, having been sent little more than its
    /// stream.
    #[test]
    fn a_slow_acking_client_gets_backed_off_resends_and_is_peer_gone() {
        static BODY: [u8; 20_000] = [b'x'; 20_000];
        let source = Source::Page {
            bytes: &BODY,
            per_tick: 600,
        };
        let mut f = flow(0);
        f.bits = Flow::PAGE;
        (f.sent, f.acked, f.mss) = (0, 0, 1000);
        let (mut sent_bytes, mut segments, mut ack) = (0u64, 0u32, 0u32);
        let mut ended = None;
        for tick in 1..=2400u32 {
            let now = tick * 1500;
            if now % 58_000 < 1500 {
                ack += 1; // one more byte, every 58 s
            }
            match f.step(&status(ack), &source, now, TIMEOUTS) {
                Step::Send { from, to, .. } => {
                    sent_bytes += u64::from(to - from);
                    segments += 1;
                    assert!(to <= f.sent, "never past what was sent");
                    assert!(to - from <= u32::from(f.mss));
                }
                Step::Wait => {}
                Step::Gone { reason, .. } => {
                    ended = Some((reason, now));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let (reason, at) = ended.expect("the flow ends");
        assert_eq!(reason, "peer_gone");
        assert!(at <= 62_000, "ended at {at} ms");
        assert!(segments < 20, "{segments} segments");
        assert!(sent_bytes < 8_000, "{sent_bytes} bytes");
    }

    /// A client that never acknowledges: resends of the outstanding segment come 1, 2, 4, ...
    /// ticks apart, not every tick.
    #[test]
    fn resends_of_a_full_segment_back_off_exponentially() {
        static BODY: [u8; 20_000] = [b'x'; 20_000];
        let source = Source::Page {
            bytes: &BODY,
            per_tick: 1000,
        };
        let mut f = flow(0);
        f.bits = Flow::PAGE;
        (f.sent, f.acked, f.mss) = (0, 0, 1000);
        let quiet = Timeouts {
            lifetime_ms: u32::MAX / 4,
            peer_ms: u32::MAX / 4,
        };
        let sends: Vec<u32> = (1..=40u32)
            .filter(|tick| {
                matches!(
                    f.step(&status(0), &source, tick * 1500, quiet),
                    Step::Send { .. }
                )
            })
            .collect();
        // The first send, then resends after waits of 1, 3, 7, 15 ticks, ...
        assert_eq!(sends, [1, 2, 4, 8, 16, 32]);
    }

    /// The resend budget: once a flow has sent its stream's length and 16 KiB again, a client
    /// still behind is gone, whatever its ACKs.
    #[test]
    fn a_flow_past_its_resend_budget_is_peer_gone() {
        let drip = DripResponse::new(b".", 1200, "nginx");
        let source = Source::Drip(&drip, Framing::Raw);
        let mut f = flow(0);
        f.bits = 0;
        (f.sent, f.acked) = (10, 5);
        f.resent = source.length() + RESEND_ALLOWANCE;
        assert!(matches!(
            f.step(&status(5), &source, 1, TIMEOUTS),
            Step::Send { .. }
        ));
        assert_eq!(
            f.step(&status(5), &source, 2, TIMEOUTS),
            Step::Gone {
                reason: "peer_gone",
                at_ms: None
            }
        );
    }

    /// Issue 24, item 2: a tick larger than a segment (2,000 bytes, MSS 536) goes over several
    /// ticks, each segment within what was sent, and the client's ACK of it is taken: the flow
    /// goes on to its end instead of sending one segment again until its lifetime ends.
    #[test]
    fn a_tick_larger_than_a_segment_never_stalls_the_flow() {
        static BODY: [u8; 6_000] = [b'y'; 6_000];
        let source = Source::Page {
            bytes: &BODY,
            per_tick: 2_000,
        };
        let mut f = flow(0);
        f.bits = Flow::PAGE;
        (f.sent, f.acked, f.mss) = (0, 0, 536);
        let mut ack = 0;
        for tick in 1..=40u32 {
            match f.step(&status(ack), &source, tick * 1500, TIMEOUTS) {
                Step::Send {
                    from, to, ended, ..
                } => {
                    assert!(to <= f.sent && to - from <= 536, "{from}..{to}");
                    ack = to; // the client takes everything it is sent
                    if ended == Some("complete") {
                        assert_eq!(to, 6_000);
                        return;
                    }
                }
                other => panic!("tick {tick}: {other:?}"),
            }
        }
        panic!(
            "the page never completed: sent {}, acked {}",
            f.sent, f.acked
        );
    }

    /// Issue 24, item 2: at shutdown, a full segment pending and the closing chunk do not fit
    /// one segment; the holder sends them as two.
    #[test]
    fn a_full_segment_and_the_closing_chunk_do_not_fit_one_segment() {
        let mut f = flow(0);
        (f.sent, f.acked, f.mss) = (1406, 6, 1400);
        assert!(f.shutdown_fits(0));
        assert!(!f.shutdown_fits(5));
        f.acked = 11;
        assert!(f.shutdown_fits(5));
    }

    /// Issue 24, item 1: the client's advertised window bounds what is sent past its ACK; a
    /// closed window gets only backed-off empty probes.
    #[test]
    fn the_clients_window_is_respected() {
        static BODY: [u8; 5_000] = [b'z'; 5_000];
        let source = Source::Page {
            bytes: &BODY,
            per_tick: 1_000,
        };
        let mut f = flow(0);
        f.bits = Flow::PAGE;
        (f.sent, f.acked, f.mss) = (0, 0, 1400);
        let narrow = HeldStatus {
            ack: 0,
            window: 300,
            ..Default::default()
        };
        assert!(matches!(
            f.step(&narrow, &source, 1, TIMEOUTS),
            Step::Send {
                from: 0,
                to: 300,
                ..
            }
        ));
        let closed = HeldStatus {
            ack: 300,
            window: 0,
            ..Default::default()
        };
        let sends: Vec<u32> = (2..=12)
            .filter(|&t| match f.step(&closed, &source, t, TIMEOUTS) {
                Step::Send { from, to, .. } => {
                    assert_eq!((from, to), (300, 300), "an empty probe");
                    true
                }
                Step::Wait => false,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(f.sent, 300, "nothing new into a closed window");
        assert_eq!(sends, [2, 4, 8], "probes back off");
    }

    /// Issue 24, item 4: what the hook believes. An ACK beyond the stream's end and our FIN,
    /// or an old one, is not taken; a FIN or RST outside the receive window is a blind guess.
    #[test]
    fn the_hook_believes_only_acks_of_what_was_sent_and_in_window_resets() {
        let status = HeldStatus {
            ack: 1_000,
            rcv_nxt: u32::MAX - 10,
            ack_limit: 5_000,
            ..Default::default()
        };
        assert!(status.believes_ack(1_001));
        assert!(status.believes_ack(5_000));
        assert!(
            !status.believes_ack(5_001),
            "beyond what can have been sent"
        );
        assert!(!status.believes_ack(1_000_000_000));
        assert!(!status.believes_ack(999), "old");
        assert!(status.in_window(u32::MAX - 10));
        assert!(status.in_window(20), "across the wrap");
        assert!(!status.in_window(u32::MAX - 11));
        assert!(!status.in_window(1 << 20));
    }
}
