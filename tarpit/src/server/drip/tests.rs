//! The dripper's unit tests: a `Fake` held connection on a Unix socket pair.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use super::tick::tick_page;
use super::*;

/// What a finished response was given: the client's FIN (ms) and the outcome.
type Finished = Option<(u32, Result<&'static str, &'static str>)>;

/// A held connection on one end of a socket pair.
struct Fake {
    stream: UnixStream,
    settings: Settings,
    /// What `finish_response` was given: the client's FIN and the outcome.
    finished: Rc<Cell<Finished>>,
    /// When the connection must end.
    lifetime_end: Instant,
}

impl Held for Fake {
    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
    fn socket_error(&self) -> Option<Errno> {
        None
    }
    fn lifetime_end(&self) -> Instant {
        self.lifetime_end
    }
    fn settings(&self) -> &Settings {
        &self.settings
    }
    fn finish_response(&mut self, state: &DripState, outcome: Result<&'static str, &'static str>) {
        self.finished.set(Some((state.fin_ms, outcome)));
    }
    fn close(self: Box<Self>, _: &'static str) {}
    async fn drive(self: Box<Self>, _: &Rc<Dripper<Self>>) {}
}

#[test]
fn a_page_woken_just_before_its_planned_end_ends_as_planned_not_in_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::db::open(&dir.path().join("t.db")).unwrap();
    let mut config = crate::config::Config::default();
    config.tarpit.mode = crate::config::TarpitMode::Adaptive;
    let mut settings = Settings::from_config(&config);
    let adaptive = crate::adaptive::start(&config, &db).unwrap().0;
    let persona = crate::adaptive::load_persona(&config).unwrap().unwrap();
    let page = persona.page_for("/a", false);
    settings.adaptive = Some(adaptive);
    settings.persona = Some(persona);
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let fake = Fake {
        stream: ours,
        settings,
        finished: Rc::default(),
        lifetime_end: Instant::now() + Duration::from_secs(3600),
    };
    let started = Instant::now();
    let mut state = DripState {
        seq: 1,
        started,
        framing: Framing::Chunked,
        keep_alive: true,
        tick: 1,
        offset: 0,
        sent: 1,
        next: started,
        page,
        end_ms: 1000,
        fin_ms: NO_FIN,
        head_only: false,
        socketless: false,
    };
    // Well before the end: one slice.
    let early = started + Duration::from_millis(500);
    assert!(matches!(tick_page(&fake, &mut state, early), Tick::Again));
    assert_eq!(state.sent, 2);
    // Woken 3 ms before the end (inside the coalescing window): the rest, as planned.
    let almost = started + Duration::from_millis(997);
    assert!(matches!(
        tick_page(&fake, &mut state, almost),
        Tick::Done(Ok("planned_end"))
    ));
}

/// The client's FIN and its close noticed in the same wake (a loaded machine): the FIN is
/// on record, as when the two come apart. (The old code dropped it, and the adaptive
/// mode's give-up, learned from it, with it.)
#[test]
fn a_fin_and_close_seen_together_keep_the_fin_on_record() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let finished = Rc::new(Cell::new(None));
    let fake = Fake {
        stream: ours,
        settings: Settings::from_config(&crate::config::Config::default()),
        finished: finished.clone(),
        lifetime_end: Instant::now() + Duration::from_secs(3600),
    };
    let dripper = Dripper::new(
        Rc::new(Cell::new(0)),
        tokio_util::sync::CancellationToken::new(),
        None,
    );
    dripper.add(
        Box::new(fake),
        drip_state(Instant::now() + Duration::from_secs(60)),
    );
    drop(theirs); // FIN and hang-up at once
    dripper.end_hung_up();
    let (fin_ms, outcome) = finished.get().expect("the response ended");
    assert_eq!(outcome, Err("client_closed"));
    assert_ne!(fin_ms, NO_FIN, "the client's FIN is on record");
}

/// A drip without keep-alive whose next tick is due at `next`.
fn drip_state(next: Instant) -> DripState {
    DripState {
        seq: 1,
        started: Instant::now(),
        framing: Framing::Chunked,
        keep_alive: false,
        tick: 1,
        offset: 0,
        sent: 1,
        next,
        page: DRIP_TICKS,
        end_ms: NO_PLANNED_END,
        fin_ms: NO_FIN,
        head_only: false,
        socketless: false,
    }
}

/// A closed connection is not deleted from the epoll set: its socket's close takes it out.
/// Here something else still holds that socket (as an abandoned read in the ring can), so its
/// registration outlives the close, and its hang-up comes after another connection has taken
/// its slab key: that connection stays held. (Without the watch in each event's data, the
/// late hang-up ended the new connection.)
#[test]
fn a_closed_connections_late_hang_up_does_not_end_the_connection_at_its_key() {
    let settings = || Settings::from_config(&crate::config::Config::default());
    let dripper = Dripper::new(
        Rc::new(Cell::new(0)),
        tokio_util::sync::CancellationToken::new(),
        None,
    );
    // The first connection: its lifetime is over, so its first tick ends it.
    let (first, first_peer) = UnixStream::pair().unwrap();
    let still_held = first.try_clone().unwrap(); // the socket outlives the connection
    let first_finished = Rc::new(Cell::new(None));
    let now = Instant::now();
    let first = Fake {
        stream: first,
        settings: settings(),
        finished: first_finished.clone(),
        lifetime_end: now,
    };
    dripper.add(Box::new(first), drip_state(now));
    dripper.tick_due();
    assert_eq!(
        first_finished.get().map(|(_, outcome)| outcome),
        Some(Err("lifetime_exceeded"))
    );
    assert_eq!(dripper.held(), 0);
    // The second connection takes the freed key.
    let (second, _second_peer) = UnixStream::pair().unwrap();
    let second_finished = Rc::new(Cell::new(None));
    let second = Fake {
        stream: second,
        settings: settings(),
        finished: second_finished.clone(),
        lifetime_end: now + Duration::from_secs(3600),
    };
    dripper.add(Box::new(second), drip_state(now + Duration::from_secs(60)));
    // The first connection's peer hangs up: its registration (still there) reports it.
    drop(first_peer);
    dripper.end_hung_up();
    assert_eq!(dripper.held(), 1, "the second connection is still held");
    assert_eq!(second_finished.get(), None);
    drop(still_held);
}

/// Connections that reset leave their deadlines in the heap; once those outnumber the live
/// ones they are swept, so churn does not leave a tick delay's worth of them for every push
/// and pop to pay for. The live connection's deadline stays.
#[test]
fn the_deadlines_of_reset_connections_are_swept_from_the_heap() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const STALE: usize = STALE_DEADLINES_KEPT + 500;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, soft.max(4096).min(hard), hard).unwrap();
    let dripper = Dripper::new(
        Rc::new(Cell::new(0)),
        tokio_util::sync::CancellationToken::new(),
        None,
    );
    let later = Instant::now() + Duration::from_secs(60);
    let fake = |stream: UnixStream| Fake {
        stream,
        settings: Settings::from_config(&crate::config::Config::default()),
        finished: Rc::default(),
        lifetime_end: later,
    };
    let (live, _live_peer) = UnixStream::pair().unwrap();
    dripper.add(Box::new(fake(live)), drip_state(later));
    // Every churned connection a descriptor of one socket: its peer's close hangs up all.
    let (churned, churned_peer) = UnixStream::pair().unwrap();
    for _ in 0..STALE {
        let stream = churned.try_clone().unwrap();
        dripper.add(Box::new(fake(stream)), drip_state(later));
    }
    drop(churned);
    assert_eq!(dripper.queue.borrow().deadlines.len(), STALE + 1);
    drop(churned_peer);
    dripper.end_hung_up();
    assert_eq!(dripper.held(), 1, "the live connection is still held");
    let queue = dripper.queue.borrow();
    let left: Vec<usize> = queue.deadlines.iter().map(|d| d.0.1).collect();
    let live_key = queue.entries.iter().next().unwrap().0;
    assert_eq!(left.len(), 1, "deadlines left in the heap");
    assert_eq!(left[0], live_key, "the live connection's deadline is left");
}
