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
