//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: that commit — and every accepted action group-committed with it
//! — waits while the WAL's pages are copied into the database file and both
//! are fsynced. Here the writer's connection has automatic checkpoints off,
//! and this thread, on a connection of its own, runs a PASSIVE checkpoint
//! (which never blocks the writer or a reader) a moment after commits
//! happened. Durability is unchanged: a commit is durable once its WAL frames
//! are fsynced, which the writer still does on every commit.
//!
//! The writer restarts the WAL from its start once a checkpoint has copied
//! all of it. Should a checkpoint never catch up (readers holding old
//! snapshots under constant writes), the writer checkpoints itself, blocking,
//! once the WAL passes [`WAL_LIMIT_FRAMES`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tracing::warn;

/// How long after a commit the checkpoint runs (commits meanwhile share it).
const PAUSE: Duration = Duration::from_millis(200);

/// WAL frames (pages) past which the writer checkpoints itself: 64 MiB.
pub(super) const WAL_LIMIT_FRAMES: u64 = 16_384;

pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// `commits` counts the writer's commits; `wal_frames` is where this
    /// thread reports the WAL's size after each checkpoint.
    pub fn start(
        path: &Path,
        durable: bool,
        commits: Arc<AtomicU64>,
        wal_frames: Arc<AtomicU64>,
    ) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(1))?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(conn, stopped, &commits, &wal_frames))
            .expect("cannot start the store checkpoint thread");
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread after its last checkpoint.
    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>, commits: &AtomicU64, wal_frames: &AtomicU64) {
    let mut seen = commits.load(Ordering::Relaxed);
    loop {
        let stopping = matches!(
            stopped.recv_timeout(PAUSE),
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(())
        );
        let now = commits.load(Ordering::Relaxed);
        if now != seen || stopping {
            seen = now;
            match checkpoint(&conn, "PASSIVE") {
                Ok(frames) => wal_frames.store(frames, Ordering::Relaxed),
                Err(e) => warn!(error = %e, "state database checkpoint failed; will retry"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Runs one checkpoint; gives the WAL's size in frames (0 once it was reset).
pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        let log: i64 = row.get(1)?;
        Ok(log.max(0) as u64)
    })
}
