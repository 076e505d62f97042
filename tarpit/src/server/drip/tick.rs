//! What one tick writes: the drip's next tick, or the next slice of a persona page (with the
//! client's canary tokens written in), each a non-blocking `send` of a `&'static` slice or of
//! a per-worker buffer, so a tick allocates nothing.

use std::cell::RefCell;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use tokio::time::Instant;

use super::{COALESCE, DripState, Held, io_end_reason};
use crate::http::response::{CHUNKED_END, Framing};

/// What one tick came to.
pub(super) enum Tick {
    /// Written (or the socket was full for now): due again one delay later.
    Again,
    /// The response ended: `Ok` with `complete` or `planned_end` when it was answered in
    /// full, else why it stopped.
    Done(Result<&'static str, &'static str>),
}

/// A non-blocking send; a full socket buffer is not an error (`Ok(0)`).
pub(super) fn send_now(conn: &impl Held, bytes: &[u8]) -> std::io::Result<usize> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    match send(conn.fd().as_raw_fd(), bytes, flags) {
        Ok(n) => Ok(n),
        Err(Errno::EAGAIN) => Ok(0),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// Writes one tick (or the terminating chunk) of a response.
pub(super) fn tick(conn: &impl Held, state: &mut DripState, now: Instant) -> Tick {
    if now >= conn.lifetime_end() {
        return Tick::Done(Err("lifetime_exceeded"));
    }
    if state.is_page() {
        return tick_page(conn, state, now);
    }
    let drip = &conn.settings().drip;
    let last = state.tick >= drip.ticks();
    let (bytes, payload) = match (last, state.framing) {
        (false, framing) => drip.tick(state.tick, framing),
        (true, Framing::Chunked) => (CHUNKED_END, 0),
        (true, Framing::Raw) => return Tick::Done(Ok("complete")),
    };
    let rest = &bytes[state.offset as usize..];
    match send_now(conn, rest) {
        Ok(n) if n == rest.len() => {
            if last {
                return Tick::Done(Ok("complete"));
            }
            state.sent += payload;
            state.tick += 1;
            state.offset = 0;
            Tick::Again
        }
        Ok(n) => {
            state.offset += n as u16; // partial or full buffer: the rest goes next time
            Tick::Again
        }
        Err(error) => Tick::Done(Err(io_end_reason(&error, "write_error"))),
    }
}

thread_local! {
    /// A worker's buffer for a page slice with a client's tokens written in: reused, so a tick
    /// allocates nothing.
    static WITH_TOKENS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// [`send_now`] of a page slice (body bytes from `from`) with the client's tokens written over
/// the slots it overlaps.
fn send_with_tokens(
    conn: &impl Held,
    slice: &[u8],
    from: usize,
    slots: &[crate::canary::Slot],
    issuer: crate::canary::Issuer<'_>,
) -> std::io::Result<usize> {
    WITH_TOKENS.with_borrow_mut(|buffer| {
        buffer.clear();
        buffer.extend_from_slice(slice);
        issuer.write(slots, from, buffer);
        send_now(conn, buffer)
    })
}

/// Writes the next slice of a persona page, or all the rest once its planned end has come.
/// `state.sent` is the position in the body (the head carried the first slice); for HEAD, in
/// the head's fixed end.
pub(super) fn tick_page(conn: &impl Held, state: &mut DripState, now: Instant) -> Tick {
    let settings = conn.settings();
    let Some(persona) = &settings.persona else {
        return Tick::Done(Err("write_error")); // a page is dripped only when there is a persona
    };
    let page = persona.page(state.page);
    let (bytes, per_tick) = match state.head_only {
        true => (page.tail(state.keep_alive), 1),
        false => (page.body, page.per_tick),
    };
    let at = (state.sent as usize).min(bytes.len());
    // Due within the coalescing window counts as due (as in `tick_due`): else a wake just
    // before the planned end would send a slice and find itself due again at once, in the
    // same pass, until the whole page had gone out as if it had run its course.
    let planned = state.planned_end().is_some_and(|end| now + COALESCE >= end);
    let end = if planned {
        bytes.len()
    } else {
        (at + per_tick).min(bytes.len())
    };
    let sent = match conn.canary_issuer() {
        Some(issuer) if !state.head_only && !page.slots.is_empty() => {
            send_with_tokens(conn, &bytes[at..end], at, page.slots, issuer)
        }
        _ => send_now(conn, &bytes[at..end]),
    };
    match sent {
        Ok(n) => {
            state.sent += n as u64;
            if state.sent as usize >= bytes.len() {
                Tick::Done(Ok(if planned { "planned_end" } else { "complete" }))
            } else {
                Tick::Again
            }
        }
        Err(error) => Tick::Done(Err(io_end_reason(&error, "write_error"))),
    }
}
