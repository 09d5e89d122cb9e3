//! The heart of the agent: per-server state, the action state machine, one BMC
//! operation at a time per BMC, conflict rules, crash recovery.
//!
//! State lives in memory (one map, one lock) and is written through to the
//! store; changes are published as numbered events. The lock is held only for
//! in-memory decisions and to queue their writes in order: the store's writer
//! thread commits them (grouped), and callers await that outside the lock.
//!
//! Parts: [`request`] (what callers ask), [`registry`] (servers, drivers,
//! secrets, enrolment), [`intake`] (actions in, their state, their history),
//! [`power`] (reads and the event stream), [`lifecycle`] (health, shutdown),
//! and for running actions [`runner`], [`programs`], [`replay`] and
//! [`recovery`].

mod error;
mod intake;
mod inventory;
pub mod killpoint;
mod lifecycle;
mod power;
mod programs;
mod recovery;
mod registry;
mod replay;
mod request;
pub mod rules;
mod runner;

pub use error::EngineError;
pub use request::{ActionRequest, BootSource, EnrollRequest, PowerReading};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tracing::info;

use crate::bmc::{BmcError, BmcFactory, SharedBmc};
use crate::config::{ActionSettings, ServerEntry, SyncSettings, Timeouts};
use crate::metrics::Metrics;
use crate::model::*;
use crate::policy::Policy;
use crate::store::{Store, Write};
use registry::new_record;

pub type Result<T> = std::result::Result<T, EngineError>;

/// What the engine needs from the config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub timeouts: Timeouts,
    pub sync: SyncSettings,
    pub event_retain: u64,
    pub actions: ActionSettings,
    pub credentials_dir: PathBuf,
    /// Where inline passwords given at enrolment are kept (0700, files 0600).
    pub secrets_dir: PathBuf,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
}

struct Slot {
    rec: ServerRecord,
    bmc: SharedBmc,
    /// Abort handle of the running action's task.
    running: Option<(String, tokio::task::AbortHandle)>,
    failures: u32,
    /// Whether the BMC's capabilities were read once since the agent started.
    checked: bool,
    /// What the capability check found wrong (no Reset action, a system to
    /// choose): shown as the server's BMC error until the agent restarts,
    /// even while power reads succeed.
    setup_problem: Option<String>,
}

struct Inner {
    servers: HashMap<String, Slot>,
    /// One lock per BMC endpoint: one operation at a time per BMC.
    bmc_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The actions recent request ids made.
    requests: intake::RecentRequests,
}

pub struct Engine {
    inner: Mutex<Inner>,
    store: Arc<Store>,
    factory: Arc<dyn BmcFactory>,
    settings: EngineSettings,
    action_updates: broadcast::Sender<String>,
    shutting_down: AtomicBool,
    stopping: tokio::sync::watch::Sender<bool>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// When the sync loop last began or ended a pass (ms), for the watchdog.
    sync_tick: AtomicI64,
    /// One permit per accepted action waiting for its write (`actions.max_unwritten`).
    unwritten: Arc<tokio::sync::Semaphore>,
    /// Actions accepted since start, to prune the history every so often.
    accepted: std::sync::atomic::AtomicU64,
    /// Crash-test hooks (empty in production builds).
    kill_points: killpoint::KillPoints,
}

impl Engine {
    /// Loads the servers from the store, applies the static inventory, and
    /// recovers the actions a previous run left unfinished.
    pub fn start(
        store: Store,
        factory: Arc<dyn BmcFactory>,
        settings: EngineSettings,
        inventory: &[ServerEntry],
    ) -> Result<Arc<Engine>> {
        let (action_updates, _) = broadcast::channel(4096);
        let unwritten = Arc::new(tokio::sync::Semaphore::new(settings.actions.max_unwritten));
        let engine = Arc::new(Engine {
            inner: Mutex::new(Inner {
                servers: HashMap::new(),
                bmc_locks: HashMap::new(),
                requests: Default::default(),
            }),
            store: Arc::new(store),
            factory,
            settings,
            action_updates,
            shutting_down: AtomicBool::new(false),
            stopping: tokio::sync::watch::channel(false).0,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            sync_tick: AtomicI64::new(now_ms()),
            unwritten,
            accepted: std::sync::atomic::AtomicU64::new(0),
            kill_points: if cfg!(test) {
                killpoint::KillPoints::default()
            } else {
                killpoint::KillPoints::from_env()
            },
        });
        let mut known = HashMap::new();
        for rec in engine.store.all_servers()? {
            known.insert(rec.id.clone(), rec);
        }
        // One transaction for the whole inventory, and only what changed:
        // 10,000 servers must not cost 10,000 commits at every start.
        let mut writes = Vec::new();
        for entry in inventory {
            let bmc = BmcRecord {
                protocol: entry.protocol,
                address: entry.address.clone(),
                port: entry.port.unwrap_or(entry.protocol.default_port()),
                username: entry.username.clone(),
                credential: Credential::File(entry.password_file.clone()),
                options: entry.options.clone(),
            };
            let (rec, changed) = match known.remove(&entry.id) {
                Some(stored) => {
                    let mut rec = stored.clone();
                    rec.project_id = entry.project.clone();
                    rec.bmc = bmc;
                    rec.source = Source::Config;
                    let changed = rec != stored;
                    (rec, changed)
                }
                None => (
                    new_record(&entry.id, &entry.project, bmc, Source::Config, None),
                    true,
                ),
            };
            if changed {
                writes.push(Write::PutServer(rec.clone()));
            }
            engine.install(rec);
        }
        for (id, rec) in known {
            if rec.source == Source::Config && rec.task.is_none() {
                info!(server_id = %id, "server left the static inventory; removing it");
                writes.push(Write::DeleteServer(id));
                continue;
            }
            engine.install(rec);
        }
        engine.store.write_now(writes)?;
        recovery::recover(&engine)?;
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }
}

/// Counts an action task as in flight until it ends (or is aborted).
struct InFlight(Arc<Engine>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The vm-state that matches an observed power state when no task runs. An
/// unknown power state is ERROR until the first reading.
fn vm_state_for(p: PowerState) -> VmState {
    match p {
        PowerState::On => VmState::Active,
        PowerState::Off => VmState::Shutoff,
        PowerState::Unknown => VmState::Error,
    }
}

fn not_found_server(id: &str) -> EngineError {
    EngineError::NotFound {
        what: "server",
        id: id.to_string(),
    }
}

/// Runs a BMC call with a deadline; a hang becomes `BmcError::Timeout`.
pub(crate) async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, BmcError>>,
) -> std::result::Result<T, BmcError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(BmcError::Timeout(limit)),
    }
}

#[cfg(test)]
mod tests;
