//! SQLite persistence: servers, actions, their step events, and the numbered
//! event log that watchers resume from (which is also the power-state history).
//!
//! WAL mode with `synchronous = FULL`: an action the API answered is on disk
//! before the answer leaves, and a step is on disk as "started" before its BMC
//! command is sent.
//!
//! Writes go to one writer thread of their own ([`writer`]) through a
//! channel and are **group-committed**: everything queued while a commit is
//! under way goes into the next transaction, one fsync for all of them, and
//! each caller's [`Ticket`] resolves once its writes are durable. No async
//! worker ever waits on a disk flush while holding a lock; reads use their
//! own connections (WAL readers never wait for the writer). Appended events
//! are numbered at commit and sent to subscribers in that order, after they
//! are durable.

mod rows;
mod schema;
mod writer;
mod writes;

pub use writes::Write;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::broadcast;

use crate::model::*;
use rows::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot prepare the state directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state database holds a value this version cannot read: {0}")]
    Corrupt(String),
    /// A write failed in the writer thread (the cause, as text: errors do not
    /// cross threads as values).
    #[error("state database write failed: {0}")]
    Write(String),
    #[error("the state database writer has stopped")]
    WriterGone,
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

fn parse_enum<T>(what: &str, s: String, f: fn(&str) -> Option<T>) -> Result<T> {
    f(&s).ok_or_else(|| corrupt(what, &s))
}

/// Resolves once the writes it stands for are durable (or failed); gives the
/// events they appended, numbered.
#[must_use = "a write is durable only once its ticket resolved"]
pub struct Ticket(TicketRx);

#[cfg(not(test))]
type TicketRx = tokio::sync::oneshot::Receiver<Result<Vec<ServerEvent>>>;
/// Unit tests run on tokio's paused clock, which jumps ahead whenever the
/// runtime has nothing to do — also while the writer thread is committing.
/// There a ticket is waited for in a blocking task, which holds the clock.
#[cfg(test)]
type TicketRx = tokio::task::JoinHandle<Result<Vec<ServerEvent>>>;

impl Ticket {
    pub async fn durable(self) -> Result<Vec<ServerEvent>> {
        self.0.await.unwrap_or(Err(StoreError::WriterGone))
    }
}

pub struct Store {
    path: PathBuf,
    writer: writer::Handle,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<ServerEvent>,
    /// A scratch database's directory, removed when the store is dropped.
    scratch: Option<PathBuf>,
}

/// `PRAGMA journal_size_limit`: the WAL file is cut back to this many bytes
/// each time a checkpoint lets it start over.
const WAL_SIZE_LIMIT: i64 = 4 << 20;

impl Store {
    /// Opens (or creates) `DIR/rack-agent.db`. The directory is made 0700 and
    /// the database files 0600: the inline BMC passwords' files live beside
    /// it (the database holds only their names).
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, true, None)
    }

    /// A private database in a directory of its own under the system's
    /// temporary directory, removed on drop; not synced to disk (tests).
    pub fn open_in_memory() -> Result<Store> {
        let dir = std::env::temp_dir().join(format!("rack-agent-scratch-{}", uuid::Uuid::new_v4()));
        Self::open_with(&dir, false, Some(dir.clone()))
    }

    fn open_with(dir: &Path, durable: bool, scratch: Option<PathBuf>) -> Result<Store> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir_err = |source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        let path = dir.join("rack-agent.db");
        if !path.exists() {
            // Create the file ourselves so it is never world-readable, even briefly.
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(dir_err)?;
        }
        let conn = Connection::open(&path)?;
        // Another process holding the database (a second agent) is waited for,
        // then refused: the agent must be the only writer of its state.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The WAL file keeps the size of the longest stretch between two
        // checkpoints that could start it over (a reader of an older snapshot
        // holds a checkpoint back): without a limit that high-water mark is
        // kept on disk for good. Cut back to 4 MiB whenever it starts over.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let schema = schema::migrate(&conn).and_then(|()| Ok(conn.execute_batch(schema::SCHEMA)?));
        match schema {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        let (events, _) = broadcast::channel(4096);
        Ok(Store {
            writer: writer::Handle::start(conn, events.clone()),
            path,
            readers: Mutex::new(Vec::new()),
            events,
            scratch,
        })
    }

    // ---- writes ----

    /// Queues writes, applied in one transaction after every write queued
    /// before them. Queue under the lock that ordered the change; await the
    /// ticket outside it.
    pub fn write(&self, writes: Vec<Write>) -> Ticket {
        #[cfg(not(test))]
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.writer.send(writes, writer::Reply::Async(tx));
            Ticket(rx)
        }
        #[cfg(test)]
        {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            self.writer.send(writes, writer::Reply::Blocking(tx));
            Ticket(tokio::task::spawn_blocking(move || {
                rx.recv().unwrap_or(Err(StoreError::WriterGone))
            }))
        }
    }

    /// Queues writes nobody waits for (a power reading); a failure is logged.
    pub fn write_later(&self, writes: Vec<Write>) {
        #[cfg(not(test))]
        self.writer.send(writes, writer::Reply::Log);
        #[cfg(test)]
        {
            // Holds the paused test clock until the write is done (see `Ticket`).
            let ticket = self.write(writes);
            tokio::spawn(async move {
                if let Err(e) = ticket.durable().await {
                    tracing::error!(error = %e, "a state database write failed");
                }
            });
        }
    }

    /// Writes and waits, blocking the thread (start-up, tests).
    pub fn write_now(&self, writes: Vec<Write>) -> Result<Vec<ServerEvent>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.writer.send(writes, writer::Reply::Blocking(tx));
        rx.recv().unwrap_or(Err(StoreError::WriterGone))
    }

    /// Transactions committed so far (each covers every job queued meanwhile).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Events as they become durable, in order.
    pub fn subscribe_events(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    // ---- reads ----

    /// Runs `f` on a reader connection of the pool.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 8 {
            idle.push(conn);
        }
        out
    }

    /// A trivial query on both sides: a reader answers, and the writer
    /// commits (an empty transaction).
    pub fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))?;
        self.write_now(Vec::new()).map(|_| ())
    }

    pub fn all_servers(&self) -> Result<Vec<ServerRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT * FROM servers ORDER BY id")?;
            let rows = stmt.query_map([], raw_server)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(server_from_raw))
                .collect()
        })
    }

    pub fn get_action(&self, id: &str) -> Result<Option<Action>> {
        self.read(|conn| {
            let raw = conn
                .prepare_cached("SELECT * FROM actions WHERE id = ?1")?
                .query_row([id], raw_action)
                .optional()?;
            raw.map(|r| action_with_steps(conn, r)).transpose()
        })
    }

    /// The action a request id names within a scope (`Caller::request_scope`).
    pub fn action_by_request_id(&self, scope: &str, request_id: &str) -> Result<Option<Action>> {
        self.read(|conn| {
            let raw = conn
                .prepare_cached(
                    "SELECT * FROM actions WHERE request_scope = ?1 AND request_id = ?2",
                )?
                .query_row([scope, request_id], raw_action)
                .optional()?;
            raw.map(|r| action_with_steps(conn, r)).transpose()
        })
    }

    /// A page of a server's actions, newest first. `before` is the cursor of the
    /// previous page; the second value is the cursor of the next one.
    pub fn list_actions(
        &self,
        server_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Action>, Option<i64>)> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT * FROM actions WHERE server_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )?;
            let raws: Vec<RawAction> = stmt
                .query_map(
                    params![server_id, before.unwrap_or(i64::MAX), limit as i64 + 1],
                    raw_action,
                )?
                .collect::<rusqlite::Result<_>>()?;
            let more = raws.len() > limit;
            let mut out = Vec::new();
            let mut last_seq = None;
            for raw in raws.into_iter().take(limit) {
                last_seq = Some(raw.seq);
                out.push(action_with_steps(conn, raw)?);
            }
            Ok((out, if more { last_seq } else { None }))
        })
    }

    /// Actions that were accepted but had not ended when the agent stopped.
    pub fn unfinished_actions(&self) -> Result<Vec<Action>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT * FROM actions WHERE state IN ('pending', 'running') ORDER BY seq",
            )?;
            let raws: Vec<RawAction> = stmt
                .query_map([], raw_action)?
                .collect::<rusqlite::Result<_>>()?;
            raws.into_iter()
                .map(|r| action_with_steps(conn, r))
                .collect()
        })
    }

    /// Events after `after_seq`, oldest first, at most `limit`.
    pub fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<ServerEvent>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT * FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = stmt.query_map(params![after_seq as i64, limit as i64], raw_event)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(event_from_raw))
                .collect()
        })
    }

    /// The oldest and newest retained sequence numbers (0, 0 when empty).
    pub fn event_bounds(&self) -> Result<(u64, u64)> {
        self.read(|conn| {
            let (lo, hi): (Option<i64>, Option<i64>) =
                conn.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            // AUTOINCREMENT never reuses numbers, even after pruning to empty.
            let hi = match hi {
                Some(h) => h,
                None => conn
                    .query_row(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                        [],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0),
            };
            Ok((lo.unwrap_or(hi + 1) as u64, hi as u64))
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Let the writer finish what was queued, then close the readers.
        self.writer.stop();
        self.readers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests;
