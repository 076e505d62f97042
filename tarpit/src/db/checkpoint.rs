//! The WAL checkpointer: a thread of its own that copies the write-ahead log into the database
//! file, so that the commits of the running tarpit's busy writers (the SQLite sink, the CRS
//! stage) never do.
//!
//! Why: SQLite's automatic checkpoint runs inside the commit that finds the WAL past its size,
//! on the writer's thread. At [`super::WAL_AUTOCHECKPOINT_PAGES`] that is ~40 MiB copied and
//! two `fsync`s; under a churn the SQLite sink stopped for that long while its queue filled,
//! and with no CRS stage sharing the checkpoints the sink dropped 5,883-46,270 events in eight
//! of nine 20 s churns on a slower machine (docs/benchmarks.md, seventh pass). Here the writers'
//! commits only wake this thread ([`Checkpointer::attach`]), which runs a passive checkpoint:
//! it copies what the WAL holds without taking the write lock, so the writers keep committing
//! while it works.
//!
//! The WAL stays bounded without it: a hooked writer checkpoints by itself past
//! [`WRITER_CHECKPOINT_PAGES`] (the checkpointer far behind), or at the usual size once the
//! checkpointer has stopped. Nothing here reads traffic; what a client can do is make rows,
//! and their pages are copied once per checkpoint however many versions of them the WAL
//! holds. Committed transactions are in the WAL before any of this runs: a `kill -9` during a
//! checkpoint loses nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use crate::log_throttle::LogThrottle;

/// WAL pages at which a hooked writer's commit wakes the checkpointer: half the size at which
/// the other writers (shippers, sharers, `tarpit classify`) checkpoint by themselves, so the
/// checkpointer starts first.
pub const WAKE_PAGES: i32 = super::WAL_AUTOCHECKPOINT_PAGES as i32 / 2;

/// WAL pages past which a hooked writer checkpoints in its own commit, as SQLite would: the
/// checkpointer has fallen this far behind (~160 MiB of WAL), and the file must not grow on.
pub const WRITER_CHECKPOINT_PAGES: i32 = super::WAL_AUTOCHECKPOINT_PAGES as i32 * 4;

/// The running checkpointer; [`Checkpointer::stop`] ends it after a last checkpoint.
#[derive(Debug)]
pub struct Checkpointer {
    /// Wakes the thread (capacity one: a wake-up already pending is enough).
    wake: SyncSender<()>,
    stop: Arc<AtomicBool>,
    /// Checkpoints run so far.
    runs: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to the database at `path` (already opened in
    /// WAL mode by [`super::open`]).
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let conn = Connection::open(path).context("opening the database for the checkpointer")?;
        // Reading the journal mode opens the file: a connection that has read nothing does not
        // know its WAL, and its checkpoints do nothing.
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .context("reading the database's journal mode")?;
        anyhow::ensure!(mode == "wal", "the database is in {mode} mode, not WAL");
        let (wake, woken) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), runs.clone());
        let thread = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || run(&conn, &woken, &flag, &count))
            .context("starting the checkpointer thread")?;
        Ok(Self {
            wake,
            stop,
            runs,
            thread,
        })
    }

    /// Makes `conn`'s commits wake this checkpointer instead of checkpointing themselves (see
    /// [`wal_hook`]). Replaces the connection's `wal_autocheckpoint`.
    pub fn attach(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let wake = self.wake.clone();
        conn.wal_hook(Some(move |wal: &mut Wal, pages| {
            wal_hook(&wake, wal, pages)
        }))
    }

    /// Checkpoints run so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Runs a last checkpoint and ends the thread. Hooked connections still open checkpoint by
    /// themselves from then on.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
        drop(self.wake);
        if self.thread.join().is_err() {
            tracing::error!("the WAL checkpointer panicked");
        }
    }
}

/// What a hooked writer's commit does with the WAL's size: nothing below [`WAKE_PAGES`]; wake
/// the checkpointer up to [`WRITER_CHECKPOINT_PAGES`]; checkpoint itself past that, or when
/// the checkpointer is gone. Never an error: an error returned here would fail the commit that
/// called it (already durable), and a checkpoint that could not run (the checkpointer is
/// running one) is retried at the next commit, as SQLite's own hook does.
fn wal_hook(wake: &SyncSender<()>, wal: &mut Wal, pages: i32) -> rusqlite::Result<()> {
    let by_itself = pages >= WRITER_CHECKPOINT_PAGES
        || (pages >= WAKE_PAGES
            && matches!(wake.try_send(()), Err(TrySendError::Disconnected(()))));
    if by_itself {
        let _ = wal.checkpoint();
    }
    Ok(())
}

/// Passes one wake-up runs at most, each copying the frames committed during the one before.
/// The WAL starts again from its beginning (and stops growing) only when a writer's
/// transaction begins with every frame copied: under a steady stream of commits one pass never
/// ends caught up, so the thread runs on while the tail shrinks.
const CATCH_UP_PASSES: usize = 16;

fn run(conn: &Connection, woken: &Receiver<()>, stop: &AtomicBool, runs: &AtomicU64) {
    let mut errors = LogThrottle::new(Duration::from_secs(60));
    // Every sender gone (the tarpit stopping) ends the loop as a stop does.
    while woken.recv().is_ok() {
        let stopping = stop.load(Ordering::Relaxed);
        for _ in 0..CATCH_UP_PASSES {
            match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
                Ok((log, copied)) if log >= 0 => {
                    runs.fetch_add(1, Ordering::Relaxed);
                    if copied >= log {
                        break;
                    }
                }
                outcome => {
                    let error =
                        outcome.map_or_else(|e| e.to_string(), |_| "not in WAL mode".into());
                    if let Some(suppressed) = errors.check(Instant::now()) {
                        tracing::warn!(
                            suppressed,
                            "WAL checkpoint: {error}; the next commit retries"
                        );
                    }
                    break;
                }
            }
        }
        if stopping {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// About `pages` 4 KiB pages of new rows, committed on `conn` in one transaction.
    fn commit_pages(conn: &Connection, pages: usize) {
        conn.execute("INSERT INTO scratch VALUES (?1)", [vec![7u8; pages * 4096]])
            .unwrap();
    }

    /// A migrated database with a table for bulk rows, opened as the sink opens it.
    fn database(dir: &tempfile::TempDir) -> (std::path::PathBuf, Connection) {
        let path = dir.path().join("t.db");
        let conn = super::super::open(&path).unwrap();
        conn.execute("CREATE TABLE scratch (b BLOB)", []).unwrap();
        (path, conn)
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// Hooks `writer` to a checkpointer that never runs (no thread): its commits can only wake
    /// it, so what the WAL holds stays there unless the writer copies it itself. Keep the
    /// returned end alive: once it is dropped, the writer checkpoints by itself.
    fn hook_to_an_idle_checkpointer(writer: &mut Connection) -> Receiver<()> {
        let (wake, woken) = mpsc::sync_channel(1);
        writer
            .wal_hook(Some(move |wal: &mut Wal, pages| {
                wal_hook(&wake, wal, pages)
            }))
            .unwrap();
        woken
    }

    #[test]
    fn a_hooked_writer_commits_past_the_checkpoint_size_without_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        let _idle = hook_to_an_idle_checkpointer(&mut writer);
        let before = file_len(&path);
        // Past the size at which every writer checkpointed in its own commit before
        // (`WAL_AUTOCHECKPOINT_PAGES`), short of the writer's own limit.
        let pages = usize::try_from(super::super::WAL_AUTOCHECKPOINT_PAGES).unwrap() + 2_000;
        for _ in 0..pages / 1_000 {
            commit_pages(&writer, 1_000);
        }
        assert_eq!(
            file_len(&path),
            before,
            "the writer's commit copied the WAL into the database file"
        );
    }

    #[test]
    fn the_checkpointer_copies_the_wal_a_hooked_writer_filled() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        let checkpointer = Checkpointer::start(&path).unwrap();
        checkpointer.attach(&mut writer).unwrap();
        let before = file_len(&path);
        let pages = usize::try_from(WAKE_PAGES).unwrap() + 1_000;
        commit_pages(&writer, pages);
        // The thread was woken by that commit; its copy grows the database file by the rows.
        let deadline = Instant::now() + Duration::from_secs(60);
        while checkpointer.runs() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(checkpointer.runs() > 0, "no checkpoint in 60 s");
        let grown = file_len(&path) - before;
        assert!(
            grown >= (pages as u64 - 100) * 4096,
            "the database file grew by {grown} bytes"
        );
        checkpointer.stop();
    }

    #[test]
    fn a_hooked_writer_checkpoints_by_itself_once_the_checkpointer_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        let checkpointer = Checkpointer::start(&path).unwrap();
        checkpointer.attach(&mut writer).unwrap();
        checkpointer.stop();
        let before = file_len(&path);
        let pages = usize::try_from(WAKE_PAGES).unwrap() + 1_000;
        commit_pages(&writer, pages);
        assert!(file_len(&path) - before >= (pages as u64 - 100) * 4096);
    }

    #[test]
    fn a_writer_far_ahead_of_the_checkpointer_checkpoints_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        let _idle = hook_to_an_idle_checkpointer(&mut writer);
        let before = file_len(&path);
        // The commit that takes the WAL to the writer's limit copies it all.
        let limit = usize::try_from(WRITER_CHECKPOINT_PAGES).unwrap();
        for _ in 0..limit / 1_000 {
            commit_pages(&writer, 1_000);
        }
        assert!(file_len(&path) - before >= (limit as u64 - 100) * 4096);
    }

    #[test]
    fn a_writer_committing_beside_the_checkpointer_never_sees_its_checkpoint_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        let checkpointer = Checkpointer::start(&path).unwrap();
        checkpointer.attach(&mut writer).unwrap();
        // Back-to-back commits past the writer's own limit: its checkpoints meet the
        // checkpointer's (one runs at a time, the other is refused), and a refused one must not
        // fail the commit that asked for it.
        let commits = usize::try_from(WRITER_CHECKPOINT_PAGES).unwrap() / 1_000 + 10;
        for commit in 0..commits {
            let blob = vec![7u8; 1_000 * 4096];
            if let Err(error) = writer.execute("INSERT INTO scratch VALUES (?1)", [blob]) {
                panic!("commit {commit} failed: {error}");
            }
        }
        let rows: i64 = writer
            .query_row("SELECT COUNT(*) FROM scratch", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, commits as i64);
        checkpointer.stop();
    }
}
