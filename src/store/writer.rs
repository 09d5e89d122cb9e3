//! The one thread that writes the database, with group commit.
//!
//! It takes the first queued job, then everything else already queued (up to
//! a bound), and applies them in one transaction: each job inside a savepoint
//! of its own, so a job that fails (a constraint) is rolled back alone and
//! answered with its error while the others commit. One commit, one fsync,
//! for all of them; then every job is answered, and the events they appended
//! are sent to subscribers, numbered, in order.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::broadcast;
use tracing::{error, warn};

use super::writes::{apply, Write};
use super::{Result, StoreError};
use crate::model::ServerEvent;

/// Most jobs in one transaction.
const MAX_BATCH: usize = 1024;

/// Who waits for a job.
#[cfg_attr(test, allow(dead_code))]
pub(super) enum Reply {
    Async(tokio::sync::oneshot::Sender<Result<Vec<ServerEvent>>>),
    Blocking(mpsc::SyncSender<Result<Vec<ServerEvent>>>),
    /// Nobody: a failure is logged.
    Log,
}

impl Reply {
    fn send(self, result: Result<Vec<ServerEvent>>) {
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Log => {
                if let Err(e) = result {
                    error!(error = %e, "a state database write failed");
                }
            }
        }
    }
}

struct Job {
    writes: Vec<Write>,
    reply: Reply,
}

pub(super) struct Handle {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Transactions committed so far.
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Handle {
    pub fn start(conn: Connection, events: broadcast::Sender<ServerEvent>) -> Handle {
        let (tx, rx) = mpsc::channel::<Job>();
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = commits.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, rx, events, &counter))
            .expect("cannot start the store writer thread");
        Handle {
            tx: Some(tx),
            thread: Some(thread),
            commits,
        }
    }

    pub fn send(&self, writes: Vec<Write>, reply: Reply) {
        let job = Job { writes, reply };
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    job.reply.send(Err(StoreError::WriterGone));
                }
            }
            None => job.reply.send(Err(StoreError::WriterGone)),
        }
    }

    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the queue and waits until everything queued is written.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    events: broadcast::Sender<ServerEvent>,
    commits: &std::sync::atomic::AtomicU64,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(&conn, batch, &events);
        commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn commit(conn: &Connection, batch: Vec<Job>, events: &broadcast::Sender<ServerEvent>) {
    if let Err(e) = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
    {
        let why = e.to_string();
        for job in batch {
            job.reply.send(Err(StoreError::Write(why.clone())));
        }
        return;
    }
    let mut results: Vec<Result<Vec<ServerEvent>>> = Vec::with_capacity(batch.len());
    for job in &batch {
        results.push(apply_job(conn, &job.writes));
    }
    if let Err(e) = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        let why = e.to_string();
        warn!(error = %why, jobs = batch.len(), "state database commit failed");
        let _ = conn.execute_batch("ROLLBACK");
        for job in batch {
            job.reply.send(Err(StoreError::Write(why.clone())));
        }
        return;
    }
    for (job, result) in batch.into_iter().zip(results) {
        if let Ok(evs) = &result {
            for ev in evs {
                let _ = events.send(ev.clone());
            }
        }
        job.reply.send(result);
    }
}

/// One job, all or nothing: in a savepoint of its own, unless it is one SQL
/// statement (which undoes itself when it fails). The statements are
/// prepared once per connection, not parsed per job.
fn apply_job(conn: &Connection, writes: &[Write]) -> Result<Vec<ServerEvent>> {
    let guarded = !matches!(writes, [w] if w.is_one_statement());
    if guarded {
        conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    }
    let mut evs = Vec::new();
    for w in writes {
        match apply(conn, w) {
            Ok(Some(ev)) => evs.push(ev),
            Ok(None) => {}
            Err(e) => {
                if guarded {
                    let undo = conn
                        .prepare_cached("ROLLBACK TO job")
                        .and_then(|mut s| s.execute([]))
                        .and_then(|_| conn.prepare_cached("RELEASE job")?.execute([]));
                    if let Err(u) = undo {
                        error!(error = %u, "cannot roll a failed job back");
                    }
                }
                return Err(StoreError::Write(match e {
                    StoreError::Write(w) => w,
                    other => format!("{other}: {}", source_text(&other)),
                }));
            }
        }
    }
    if guarded {
        conn.prepare_cached("RELEASE job")?.execute([])?;
    }
    Ok(evs)
}

fn source_text(e: &StoreError) -> String {
    use std::error::Error as _;
    e.source().map(|s| s.to_string()).unwrap_or_default()
}
