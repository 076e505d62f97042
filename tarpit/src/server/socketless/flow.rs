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
        // The budget is checked only with bytes outstanding: no work on an ordinary tick.
        let over_budget = || self.resent > source.length().saturating_add(RESEND_ALLOWANCE);
        if outstanding > 0 && (waiting >= timeouts.peer_ms || over_budget()) {
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
mod tests;
