//! The bytes a trapped client receives, pre-built once at start.
//!
//! Every drip tick writes a `&'static [u8]` made here, so the hot path allocates nothing per tick.
//! The wire format is the one of the tool this project replaces (DESIGN.md section 3): a
//! `200 OK` head, then one HTTP chunk per tick, then the terminating chunk; HTTP/1.0 clients get
//! the raw payload bytes and a close.

use std::time::SystemTime;

use super::head::HttpVersion;

/// The chunk that ends a chunked response.
pub const CHUNKED_END: &[u8] = b"0\r\n\r\n";

/// How the payload is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1 chunked transfer coding.
    Chunked,
    /// Raw payload bytes (HTTP/1.0); the end of the response is the close.
    Raw,
}

impl Framing {
    /// The framing a client of this version gets.
    pub fn for_version(version: HttpVersion) -> Self {
        match version {
            HttpVersion::Http11 => Framing::Chunked,
            HttpVersion::Http10 => Framing::Raw,
        }
    }
}

/// The drip's pre-built pieces for one configuration.
#[derive(Debug)]
pub struct DripResponse {
    server_header: String,
    /// One tick's bytes, framed and raw.
    full_tick: Tick,
    /// The shorter final tick when `max_response_bytes` is not a multiple of the chunk size.
    last_tick: Option<Tick>,
    /// Ticks in one response.
    ticks: u64,
}

#[derive(Debug)]
struct Tick {
    chunked: &'static [u8],
    raw: &'static [u8],
}

impl Tick {
    /// Leaks the tick's bytes: one small allocation per process start, shared by every
    /// connection for the life of the process.
    fn new(payload: &[u8]) -> Self {
        let mut chunked = format!("{:x}\r\n", payload.len()).into_bytes();
        chunked.extend_from_slice(payload);
        chunked.extend_from_slice(b"\r\n");
        Tick {
            chunked: Box::leak(chunked.into_boxed_slice()),
            raw: Box::leak(payload.to_vec().into_boxed_slice()),
        }
    }

    fn bytes(&self, framing: Framing) -> &'static [u8] {
        match framing {
            Framing::Chunked => self.chunked,
            Framing::Raw => self.raw,
        }
    }
}

impl DripResponse {
    /// Builds the pieces; `chunk` must not be empty (config validation ensures it).
    pub fn new(chunk: &[u8], max_response_bytes: u64, server_header: &str) -> Self {
        assert!(!chunk.is_empty(), "the drip chunk must not be empty");
        let chunk_len = chunk.len() as u64;
        let full_ticks = max_response_bytes / chunk_len;
        let remainder = (max_response_bytes % chunk_len) as usize;
        DripResponse {
            server_header: server_header.to_owned(),
            full_tick: Tick::new(chunk),
            last_tick: (remainder > 0).then(|| Tick::new(&chunk[..remainder])),
            ticks: full_ticks + u64::from(remainder > 0),
        }
    }

    /// The `Server:` header value every response carries.
    pub fn server_header(&self) -> &str {
        &self.server_header
    }

    /// Number of ticks (writes of payload) in one response.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The bytes of tick `index` (0-based) and how many payload bytes they carry.
    pub fn tick(&self, index: u64, framing: Framing) -> (&'static [u8], u64) {
        let tick = match &self.last_tick {
            Some(last) if index + 1 == self.ticks => last,
            _ => &self.full_tick,
        };
        (tick.bytes(framing), tick.raw.len() as u64)
    }

    /// Bytes on the wire, after the head, of ticks `0..tick` (the start of tick `tick`; at
    /// `ticks()`, the start of the terminating chunk). A socketless hold numbers its sequence
    /// space with this, so that any byte can be sent again from its position alone.
    pub fn stream_position(&self, tick: u64, framing: Framing) -> u64 {
        let full = self.full_tick.bytes(framing).len() as u64;
        match &self.last_tick {
            Some(last) if tick >= self.ticks => {
                (self.ticks - 1) * full + last.bytes(framing).len() as u64
            }
            _ => tick.min(self.ticks) * full,
        }
    }

    /// The tick that starts at stream position `position` (a tick boundary); `ticks()` at
    /// the terminating chunk or past it. The inverse of [`Self::stream_position`].
    pub fn tick_at(&self, position: u64, framing: Framing) -> u64 {
        let full = self.full_tick.bytes(framing).len() as u64;
        if position >= self.stream_position(self.ticks, framing) {
            self.ticks
        } else {
            position / full
        }
    }

    /// Payload bytes carried by ticks `0..tick` (what `bytes_sent` counts).
    pub fn payload_through(&self, tick: u64) -> u64 {
        let full = self.full_tick.raw.len() as u64;
        match &self.last_tick {
            Some(last) if tick >= self.ticks => (self.ticks - 1) * full + last.raw.len() as u64,
            _ => tick.min(self.ticks) * full,
        }
    }

    /// The whole response after the head, every tick then (chunked) the terminating chunk:
    /// its length.
    pub fn stream_len(&self, framing: Framing) -> u64 {
        let end = match framing {
            Framing::Chunked => CHUNKED_END.len() as u64,
            Framing::Raw => 0,
        };
        self.stream_position(self.ticks, framing) + end
    }

    /// Copies the response's bytes from stream position `from` into `out`, as far as both
    /// go; returns how many. No allocation: the ticks are the pre-built slices.
    pub fn copy_stream(&self, framing: Framing, from: u64, out: &mut [u8]) -> usize {
        let mut at = from;
        let mut written = 0;
        while written < out.len() && at < self.stream_len(framing) {
            let body_end = self.stream_position(self.ticks, framing);
            let (piece, start) = if at >= body_end {
                (CHUNKED_END, body_end)
            } else {
                let full = self.full_tick.bytes(framing).len() as u64;
                let tick = at / full;
                (self.tick(tick, framing).0, tick * full)
            };
            let piece = &piece[(at - start) as usize..];
            let n = piece.len().min(out.len() - written);
            out[written..written + n].copy_from_slice(&piece[..n]);
            written += n;
            at += n as u64;
        }
        written
    }

    /// The response head followed by the first tick, written together so the client's first
    /// byte and first payload byte arrive at once. Allocates once per response, not per tick.
    pub fn head_with_first_tick(
        &self,
        version: HttpVersion,
        keep_alive: bool,
        now: SystemTime,
    ) -> (Vec<u8>, u64) {
        let framing = Framing::for_version(version);
        let mut head = String::with_capacity(192);
        head.push_str(version.as_str());
        head.push_str(" 200 OK\r\nContent-Type: text/plain\r\nConnection: ");
        head.push_str(if keep_alive { "keep-alive" } else { "close" });
        head.push_str("\r\n");
        if framing == Framing::Chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        head.push_str("Date: ");
        head.push_str(&httpdate::fmt_http_date(now));
        head.push_str("\r\nServer: ");
        head.push_str(&self.server_header);
        head.push_str("\r\n\r\n");
        let mut bytes = head.into_bytes();
        let (first, payload) = self.tick(0, framing);
        bytes.extend_from_slice(first);
        (bytes, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn default_drip_is_1200_single_dot_chunks() {
        let drip = DripResponse::new(b".", 1200, "nginx");
        assert_eq!(drip.ticks(), 1200);
        assert_eq!(drip.tick(0, Framing::Chunked), (&b"1\r\n.\r\n"[..], 1));
        assert_eq!(drip.tick(1199, Framing::Raw), (&b"."[..], 1));
    }

    /// The stream a socketless hold regenerates is exactly the ticks the socket drip writes,
    /// then the terminating chunk, from any position (a resend starts mid-tick).
    #[test]
    fn the_stream_is_the_ticks_then_the_end_from_any_position() {
        for (chunk, max) in [(&b"."[..], 5u64), (&b"abc"[..], 7), (&b"xy"[..], 6)] {
            let drip = DripResponse::new(chunk, max, "nginx");
            for framing in [Framing::Chunked, Framing::Raw] {
                let mut expected = Vec::new();
                for tick in 0..drip.ticks() {
                    assert_eq!(drip.stream_position(tick, framing), expected.len() as u64);
                    assert_eq!(drip.tick_at(expected.len() as u64, framing), tick);
                    assert_eq!(
                        drip.payload_through(tick),
                        (tick * chunk.len() as u64).min(max)
                    );
                    expected.extend_from_slice(drip.tick(tick, framing).0);
                }
                assert_eq!(drip.payload_through(drip.ticks()), max);
                assert_eq!(
                    drip.stream_position(drip.ticks(), framing),
                    expected.len() as u64
                );
                assert_eq!(drip.tick_at(expected.len() as u64, framing), drip.ticks());
                if framing == Framing::Chunked {
                    expected.extend_from_slice(CHUNKED_END);
                }
                assert_eq!(drip.stream_len(framing), expected.len() as u64);
                for from in 0..=expected.len() {
                    for size in [1, 3, 64] {
                        let mut out = [0u8; 64];
                        let n = drip.copy_stream(framing, from as u64, &mut out[..size]);
                        let want = &expected[from..(from + size).min(expected.len())];
                        assert_eq!(&out[..n], want, "{chunk:?} {max} {framing:?} {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn head_matches_the_replaced_tool_byte_for_byte() {
        let drip = DripResponse::new(b".", 10, "nginx");
        let when = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let (bytes, payload) = drip.head_with_first_tick(HttpVersion::Http11, true, when);
        assert_eq!(payload, 1);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\
             Transfer-Encoding: chunked\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Server: nginx\r\n\r\n1\r\n.\r\n"
        );
    }

    #[test]
    fn http10_head_has_no_chunking_and_closes() {
        let drip = DripResponse::new(b"xy", 10, "Apache");
        let when = UNIX_EPOCH;
        let (bytes, payload) = drip.head_with_first_tick(HttpVersion::Http10, false, when);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(!text.contains("Transfer-Encoding"));
        assert!(text.ends_with("Server: Apache\r\n\r\nxy"));
        assert_eq!(payload, 2);
    }

    #[test]
    fn uneven_maximum_gets_a_short_last_chunk() {
        let drip = DripResponse::new(b"abc", 7, "nginx");
        assert_eq!(drip.ticks(), 3);
        assert_eq!(drip.tick(1, Framing::Chunked), (&b"3\r\nabc\r\n"[..], 3));
        assert_eq!(drip.tick(2, Framing::Chunked), (&b"1\r\na\r\n"[..], 1));
        let total: u64 = (0..drip.ticks())
            .map(|i| drip.tick(i, Framing::Raw).1)
            .sum();
        assert_eq!(total, 7);
    }

    #[test]
    fn long_chunks_use_hex_sizes() {
        let drip = DripResponse::new(&[b'z'; 26], 26, "nginx");
        assert!(drip.tick(0, Framing::Chunked).0.starts_with(b"1a\r\n"));
    }
}
