//! The heart of the agent: per-server state, the action state machine, one BMC
//! operation at a time per BMC, conflict rules, crash recovery.
//!
//! State lives in memory (one map, one lock) and is written through to the
//! store on every change; changes are published as numbered events.

mod error;
pub mod killpoint;
mod programs;
mod recovery;
mod replay;
pub mod rules;
mod runner;

pub use error::EngineError;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tracing::{info, warn};

use crate::bmc::{Bmc, BmcError, BmcFactory, Endpoint, Power, PowerOp, Secret, SharedBmc};
use crate::config::{ServerEntry, SyncSettings, Timeouts};
use crate::metrics::{ActionLabels, KindLabels, Metrics};
use crate::model::*;
use crate::policy::{Op, Policy};
use crate::store::Store;
use rules::{decide, Decision};

pub type Result<T> = std::result::Result<T, EngineError>;

/// What the engine needs from the config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub timeouts: Timeouts,
    pub sync: SyncSettings,
    pub event_retain: u64,
    pub credentials_dir: PathBuf,
    /// Where inline passwords given at enrolment are kept (0700, files 0600).
    pub secrets_dir: PathBuf,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRequest {
    Reboot { hard: bool },
    Start,
    Stop { force: bool },
    Reinstall(BootSource),
    ResetState(VmState),
    Lock,
    Unlock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    Pxe,
    VirtualMedia(String),
}

impl ActionRequest {
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionRequest::Reboot { hard: false } => ActionKind::RebootSoft,
            ActionRequest::Reboot { hard: true } => ActionKind::RebootHard,
            ActionRequest::Start => ActionKind::Start,
            ActionRequest::Stop { .. } => ActionKind::Stop,
            ActionRequest::Reinstall(_) => ActionKind::Reinstall,
            ActionRequest::ResetState(_) => ActionKind::ResetState,
            ActionRequest::Lock => ActionKind::Lock,
            ActionRequest::Unlock => ActionKind::Unlock,
        }
    }

    fn op(&self) -> Op {
        match self {
            ActionRequest::Reboot { .. } => Op::Reboot,
            ActionRequest::Start => Op::Start,
            ActionRequest::Stop { .. } => Op::Stop,
            ActionRequest::Reinstall(_) => Op::Reinstall,
            ActionRequest::ResetState(_) => Op::ResetState,
            ActionRequest::Lock => Op::Lock,
            ActionRequest::Unlock => Op::Unlock,
        }
    }

    /// The request's arguments, kept on the action.
    fn params(&self) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        match self {
            ActionRequest::Stop { force } => {
                p.insert("force".into(), force.to_string());
            }
            ActionRequest::Reinstall(BootSource::Pxe) => {
                p.insert("boot_source".into(), "pxe".into());
            }
            ActionRequest::Reinstall(BootSource::VirtualMedia(url)) => {
                p.insert("boot_source".into(), "virtual_media".into());
                p.insert("image_url".into(), url.clone());
            }
            ActionRequest::ResetState(state) => {
                p.insert("state".into(), state.as_str().into());
            }
            _ => {}
        }
        p
    }

    /// Rebuilds a request from a stored action (for recovery).
    fn from_action(a: &Action) -> Option<ActionRequest> {
        Some(match a.kind {
            ActionKind::RebootSoft => ActionRequest::Reboot { hard: false },
            ActionKind::RebootHard => ActionRequest::Reboot { hard: true },
            ActionKind::Start => ActionRequest::Start,
            ActionKind::Stop => ActionRequest::Stop {
                force: a.params.get("force").map(|f| f == "true").unwrap_or(false),
            },
            ActionKind::Reinstall => match a.params.get("image_url") {
                Some(url) => ActionRequest::Reinstall(BootSource::VirtualMedia(url.clone())),
                None => ActionRequest::Reinstall(BootSource::Pxe),
            },
            ActionKind::ResetState => {
                ActionRequest::ResetState(VmState::parse(a.params.get("state")?)?)
            }
            ActionKind::Lock => ActionRequest::Lock,
            ActionKind::Unlock => ActionRequest::Unlock,
        })
    }
}

/// What an operator enrols.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub id: String,
    pub project_id: String,
    pub bmc: BmcRecord,
    pub skip_verify: bool,
}

/// Answer to a power-state read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerReading {
    pub server_id: String,
    pub power: PowerState,
    pub observed_at: Option<Millis>,
    pub fresh: bool,
    pub vm_state: VmState,
    pub task: Option<ActionKind>,
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
}

pub struct Engine {
    inner: Mutex<Inner>,
    store: Store,
    factory: Arc<dyn BmcFactory>,
    settings: EngineSettings,
    events: broadcast::Sender<ServerEvent>,
    action_updates: broadcast::Sender<String>,
    shutting_down: AtomicBool,
    stopping: tokio::sync::watch::Sender<bool>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// When the sync loop last began or ended a pass (ms), for the watchdog.
    sync_tick: AtomicI64,
    /// Crash-test hooks (empty in production builds).
    kill_points: killpoint::KillPoints,
}

/// A BMC the agent could not set up (a missing secret file, say): every call
/// answers with the reason, so the server shows it instead of vanishing.
#[derive(Debug)]
struct BrokenBmc(BmcError);

#[async_trait::async_trait]
impl Bmc for BrokenBmc {
    async fn capabilities(&self) -> std::result::Result<crate::bmc::Capabilities, BmcError> {
        Err(self.0.clone())
    }
    async fn power_state(&self) -> std::result::Result<Power, BmcError> {
        Err(self.0.clone())
    }
    async fn power(&self, _op: crate::bmc::PowerOp) -> std::result::Result<(), BmcError> {
        Err(self.0.clone())
    }
    async fn set_boot_once(&self, _d: crate::bmc::BootDevice) -> std::result::Result<(), BmcError> {
        Err(self.0.clone())
    }
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
        let (events, _) = broadcast::channel(4096);
        let (action_updates, _) = broadcast::channel(4096);
        let engine = Arc::new(Engine {
            inner: Mutex::new(Inner {
                servers: HashMap::new(),
                bmc_locks: HashMap::new(),
            }),
            store,
            factory,
            settings,
            events,
            action_updates,
            shutting_down: AtomicBool::new(false),
            stopping: tokio::sync::watch::channel(false).0,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            sync_tick: AtomicI64::new(now_ms()),
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
        for entry in inventory {
            let bmc = BmcRecord {
                protocol: entry.protocol,
                address: entry.address.clone(),
                port: entry.port.unwrap_or(entry.protocol.default_port()),
                username: entry.username.clone(),
                credential: Credential::File(entry.password_file.clone()),
                options: entry.options.clone(),
            };
            let rec = match known.remove(&entry.id) {
                Some(mut rec) => {
                    rec.project_id = entry.project.clone();
                    rec.bmc = bmc;
                    rec.source = Source::Config;
                    rec
                }
                None => new_record(&entry.id, &entry.project, bmc, Source::Config, None),
            };
            engine.store.put_server(&rec)?;
            engine.install(rec);
        }
        for (id, rec) in known {
            if rec.source == Source::Config && rec.task.is_none() {
                info!(server_id = %id, "server left the static inventory; removing it");
                engine.store.delete_server(&id)?;
                continue;
            }
            engine.install(rec);
        }
        recovery::recover(&engine)?;
        Ok(engine)
    }

    /// Builds the driver for a record and puts the server in the map.
    fn install(&self, rec: ServerRecord) {
        let bmc = self.connect(&rec).unwrap_or_else(|e| {
            warn!(server_id = %rec.id, bmc = %rec.bmc.key(), error = %e, "BMC setup failed");
            Arc::new(BrokenBmc(e)) as SharedBmc
        });
        insert_slot(&mut self.lock(), rec, bmc);
    }

    fn connect(&self, rec: &ServerRecord) -> std::result::Result<SharedBmc, BmcError> {
        let password = self.resolve_secret(&rec.bmc.credential)?;
        let endpoint = Endpoint {
            protocol: rec.bmc.protocol,
            address: rec.bmc.address.clone(),
            port: rec.bmc.port,
            username: rec.bmc.username.clone(),
            password,
            options: rec.bmc.options.clone(),
        };
        self.factory.connect(&rec.id, &endpoint)
    }

    /// Reads a password file; refuses one that others may read.
    fn resolve_secret(&self, cred: &Credential) -> std::result::Result<Secret, BmcError> {
        use std::os::unix::fs::PermissionsExt;
        match cred {
            Credential::Inline(s) => Ok(s.clone()),
            Credential::File(_) | Credential::Stored(_) => {
                let path = self.secret_path(cred);
                let meta = std::fs::metadata(&path).map_err(|e| {
                    BmcError::Unreachable(format!(
                        "cannot read password file {}: {e}",
                        path.display()
                    ))
                })?;
                if meta.permissions().mode() & 0o007 != 0 {
                    return Err(BmcError::Unreachable(format!(
                        "password file {} is readable by others; refusing it (chmod o-rwx)",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    BmcError::Unreachable(format!(
                        "cannot read password file {}: {e}",
                        path.display()
                    ))
                })?;
                Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
            }
        }
    }

    fn secret_path(&self, cred: &Credential) -> PathBuf {
        match cred {
            Credential::Stored(name) => self.settings.secrets_dir.join(name),
            Credential::File(name) => self.settings.credentials_dir.join(name),
            Credential::Inline(_) => PathBuf::new(),
        }
    }

    /// Moves an inline password to a 0600 file of its own, so neither the
    /// database nor any answer ever holds it.
    fn store_secret(&self, server_id: &str, secret: &Secret) -> Result<Credential> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = &self.settings.secrets_dir;
        let io_err = |e: std::io::Error| {
            EngineError::Store(crate::store::StoreError::Dir {
                path: dir.display().to_string(),
                source: e,
            })
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let name = format!("{server_id}.pass");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(&name))
            .map_err(io_err)?;
        f.write_all(secret.expose().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err)?;
        Ok(Credential::Stored(name))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    // ---- servers ----

    pub async fn enroll(&self, caller: &Caller, req: EnrollRequest) -> Result<ServerRecord> {
        self.settings.policy.check(caller, Op::Enroll, None)?;
        validate_server_id(&req.id).map_err(EngineError::InvalidArgument)?;
        validate_enroll(&req)?;
        if self.lock().servers.contains_key(&req.id) {
            return Err(EngineError::AlreadyExists {
                what: "server",
                id: req.id,
            });
        }
        let mut rec = new_record(&req.id, &req.project_id, req.bmc, Source::Api, None);
        let bmc = self.connect(&rec).map_err(|source| EngineError::Bmc {
            server: rec.id.clone(),
            bmc: rec.bmc.key(),
            source,
        })?;
        // Whatever refuses the enrolment from here on closes what the driver
        // opened at the BMC (a session) before answering.
        let stored = match self.verify_and_store(&mut rec, &bmc, req.skip_verify).await {
            Ok(()) => Ok(()),
            Err(e) => {
                bmc.close().await;
                Err(e)
            }
        };
        stored?;
        info!(server_id = %rec.id, bmc = %rec.bmc.key(), protocol = rec.bmc.protocol.as_str(), "server enrolled");
        Ok(rec)
    }

    /// Reads the new server's BMC (unless `skip_verify`), records the server
    /// and puts it in the map, under one lock so two enrolments of one id
    /// cannot both pass.
    async fn verify_and_store(
        &self,
        rec: &mut ServerRecord,
        bmc: &SharedBmc,
        skip_verify: bool,
    ) -> Result<()> {
        if !skip_verify {
            let t = self.settings.timeouts.bmc_command;
            let bmc_err = |source| EngineError::Bmc {
                server: rec.id.clone(),
                bmc: rec.bmc.key(),
                source,
            };
            with_timeout(t, bmc.capabilities()).await.map_err(bmc_err)?;
            let power = with_timeout(t, bmc.power_state()).await.map_err(bmc_err)?;
            rec.power = power.into();
            rec.power_observed_at = Some(now_ms());
            rec.vm_state = vm_state_for(power.into());
        }
        let mut inner = self.lock();
        if inner.servers.contains_key(&rec.id) {
            return Err(EngineError::AlreadyExists {
                what: "server",
                id: rec.id.clone(),
            });
        }
        if let Credential::Inline(secret) = &rec.bmc.credential {
            rec.bmc.credential = self.store_secret(&rec.id, secret)?;
        }
        self.store.put_server(rec)?;
        insert_slot(&mut inner, rec.clone(), bmc.clone());
        self.publish(rec, EventKind::ServerEnrolled, "api")?;
        Ok(())
    }

    pub fn get_server(&self, caller: &Caller, id: &str) -> Result<ServerRecord> {
        let rec = self.record(id)?;
        self.settings
            .policy
            .check(caller, Op::Read, Some(&rec.project_id))?;
        Ok(rec)
    }

    fn record(&self, id: &str) -> Result<ServerRecord> {
        self.lock()
            .servers
            .get(id)
            .map(|s| s.rec.clone())
            .ok_or_else(|| not_found_server(id))
    }

    /// A page of the servers the caller may read, ordered by id, after `after`.
    pub fn list_servers(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ServerRecord>, Option<String>) {
        let inner = self.lock();
        let mut visible: Vec<&ServerRecord> = inner
            .servers
            .values()
            .map(|s| &s.rec)
            .filter(|r| after.is_none_or(|a| r.id.as_str() > a))
            .filter(|r| {
                self.settings
                    .policy
                    .check(caller, Op::Read, Some(&r.project_id))
                    .is_ok()
            })
            .collect();
        visible.sort_by(|a, b| a.id.cmp(&b.id));
        let more = visible.len() > limit;
        let page: Vec<ServerRecord> = visible.into_iter().take(limit).cloned().collect();
        let next = if more {
            page.last().map(|r| r.id.clone())
        } else {
            None
        };
        (page, next)
    }

    pub async fn remove_server(&self, caller: &Caller, id: &str) -> Result<()> {
        self.settings.policy.check(caller, Op::Remove, None)?;
        let slot = {
            let mut inner = self.lock();
            let slot = inner.servers.get(id).ok_or_else(|| not_found_server(id))?;
            if slot.rec.source == Source::Config {
                return Err(EngineError::Conflict(format!(
                    "server {id} comes from the config file's static inventory; remove it there"
                )));
            }
            if let Some((running, kind)) = &slot.rec.task {
                return Err(EngineError::Conflict(format!(
                    "server {id} has action {running} ({kind}) in progress"
                )));
            }
            self.store.delete_server(id)?;
            let slot = inner.servers.remove(id).expect("checked above");
            self.publish(&slot.rec, EventKind::ServerRemoved, "api")?;
            slot
        };
        slot.bmc.close().await;
        if let Credential::Stored(_) = &slot.rec.bmc.credential {
            let _ = std::fs::remove_file(self.secret_path(&slot.rec.bmc.credential));
        }
        info!(server_id = %id, "server removed");
        Ok(())
    }

    pub fn server_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().servers.keys().cloned().collect();
        ids.sort();
        ids
    }

    // ---- actions ----

    /// Accepts (or refuses) an action. Returns at once; BMC work runs in a task.
    pub fn submit(
        self: &Arc<Self>,
        caller: &Caller,
        server_id: &str,
        req: ActionRequest,
        request_id: Option<String>,
    ) -> Result<Action> {
        if let Some(rid) = &request_id {
            validate_id("request_id", rid).map_err(EngineError::InvalidArgument)?;
        }
        if let ActionRequest::Reinstall(BootSource::VirtualMedia(url)) = &req {
            validate_media_url("virtual_media_url", url).map_err(EngineError::InvalidArgument)?;
        }
        let kind = req.kind();
        let mut inner = self.lock();
        let slot = inner
            .servers
            .get_mut(server_id)
            .ok_or_else(|| not_found_server(server_id))?;
        self.settings
            .policy
            .check(caller, req.op(), Some(&slot.rec.project_id))?;
        if let Some(rid) = &request_id {
            // Scoped to the caller's project: another project's use of the
            // same id is neither found nor named.
            let scope = caller.request_scope();
            if let Some(existing) = self.store.action_by_request_id(&scope, rid)? {
                if existing.server_id == server_id && existing.kind == kind {
                    info!(server_id, action_id = %existing.id, request_id = %rid, "retried request; returning the existing action");
                    return Ok(existing);
                }
                return Err(EngineError::InvalidArgument(format!(
                    "request_id {rid:?} was already used for action {} ({} on server {}); request ids are unique per project",
                    existing.id, existing.kind, existing.server_id
                )));
            }
        }
        // An admin's lock is the admin's: a non-admin may neither lift it nor
        // replace it with a lock of their own (which would clear
        // `locked_by_admin` and so let them unlock it next).
        let lock_op = match kind {
            ActionKind::Lock => Some("lock"),
            ActionKind::Unlock => Some("unlock"),
            _ => None,
        };
        if let Some(op) = lock_op {
            if slot.rec.locked_by_admin && !caller.is_admin() {
                return Err(crate::policy::Denied {
                    caller: caller.id.clone(),
                    op,
                    rule: "admin (the lock was set by an admin)",
                }
                .into());
            }
        }
        if kind.uses_bmc() && self.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let decision =
            decide(&slot.rec, kind, caller.is_admin()).map_err(|r| EngineError::Conflict(r.0))?;
        let now = now_ms();
        let mut action = Action {
            id: uuid::Uuid::new_v4().to_string(),
            server_id: server_id.to_string(),
            kind,
            state: ActionState::Pending,
            params: req.params(),
            request_id,
            caller: caller.clone(),
            created_at: now,
            started_at: None,
            finished_at: None,
            message: String::new(),
            events: Vec::new(),
            superseded_by: None,
        };
        if !kind.uses_bmc() {
            // No BMC traffic: the action is done the moment it is recorded.
            action.state = ActionState::Succeeded;
            action.started_at = Some(now);
            action.finished_at = Some(now);
        }
        self.store.insert_action(&action)?;
        if let Decision::Supersede(old) = &decision {
            self.supersede(&mut inner, server_id, old, &action.id)?;
        }
        let slot = inner.servers.get_mut(server_id).expect("present");
        let (event_kind, cause) = match &req {
            ActionRequest::ResetState(state) => {
                slot.rec.vm_state = *state;
                slot.rec.task = None;
                action.message = format!("state set to {state} by {}", caller.id);
                (EventKind::TaskChanged, "reset-state")
            }
            ActionRequest::Lock => {
                slot.rec.locked = true;
                slot.rec.locked_by_admin = caller.is_admin();
                action.message = format!("locked by {}", caller.id);
                (EventKind::LockChanged, "api")
            }
            ActionRequest::Unlock => {
                slot.rec.locked = false;
                slot.rec.locked_by_admin = false;
                action.message = format!("unlocked by {}", caller.id);
                (EventKind::LockChanged, "api")
            }
            _ => {
                slot.rec.task = Some((action.id.clone(), kind));
                if kind == ActionKind::Reinstall {
                    slot.rec.vm_state = VmState::Rebuilding;
                }
                (EventKind::TaskChanged, "action")
            }
        };
        if !action.message.is_empty() {
            self.store.update_action(&action)?;
        }
        self.store.put_server(&slot.rec)?;
        let rec = slot.rec.clone();
        if kind.uses_bmc() {
            self.spawn_runner(&mut inner, &action, req, false);
        }
        self.publish(&rec, event_kind, cause)?;
        drop(inner);
        let _ = self.action_updates.send(action.id.clone());
        info!(server_id, action_id = %action.id, action = %kind, caller = %caller.id, "action accepted");
        Ok(action)
    }

    /// Ends the running action as SUPERSEDED by `by` (caller holds the lock).
    fn supersede(&self, inner: &mut Inner, server_id: &str, old: &str, by: &str) -> Result<()> {
        let slot = inner.servers.get_mut(server_id).expect("present");
        if let Some((running, handle)) = slot.running.take() {
            if running == old {
                handle.abort();
            } else {
                slot.running = Some((running, handle));
            }
        }
        if let Some(mut prev) = self.store.get_action(old)? {
            if !prev.state.is_terminal() {
                // A step that was sent but never answered stays visible as such.
                if let Some(open) = replay::in_flight(&prev.events) {
                    self.add_step(
                        old,
                        &open,
                        StepPhase::Interrupted,
                        &format!("superseded by action {by} while in flight"),
                        None,
                    )?;
                }
                prev.state = ActionState::Superseded;
                prev.superseded_by = Some(by.to_string());
                prev.finished_at = Some(now_ms());
                prev.message = format!("superseded by action {by}");
                self.store.update_action(&prev)?;
                let _ = self.action_updates.send(old.to_string());
                info!(server_id, action_id = %old, superseded_by = %by, "action superseded");
            }
        }
        Ok(())
    }

    /// Runs an action in a task of its own. `resumed`: an earlier run of the
    /// agent accepted it (its step log, in `action.events`, says how far it got).
    fn spawn_runner(
        self: &Arc<Self>,
        inner: &mut Inner,
        action: &Action,
        req: ActionRequest,
        resumed: bool,
    ) {
        let slot = inner.servers.get_mut(&action.server_id).expect("present");
        let op_lock = inner
            .bmc_locks
            .get(&slot.rec.bmc.key())
            .cloned()
            .expect("every server has a BMC lock");
        let slot = inner.servers.get_mut(&action.server_id).expect("present");
        let run = runner::Run::new(
            self.clone(),
            action.id.clone(),
            action.kind,
            action.server_id.clone(),
            slot.rec.bmc.key(),
            slot.bmc.clone(),
            op_lock,
            &action.events,
            resumed,
        );
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.clone());
        let handle = tokio::spawn(async move {
            let _guard = guard;
            run.execute(req).await;
        });
        slot.running = Some((action.id.clone(), handle.abort_handle()));
    }

    /// Records a step event on an action and tells its watchers.
    fn add_step(
        &self,
        action_id: &str,
        step: &str,
        phase: StepPhase,
        detail: &str,
        data: Option<String>,
    ) -> Result<()> {
        self.store.add_step(
            action_id,
            &StepEvent {
                at: now_ms(),
                step: step.to_string(),
                phase,
                detail: detail.to_string(),
                data,
            },
        )?;
        let _ = self.action_updates.send(action_id.to_string());
        Ok(())
    }

    /// Moves an action to RUNNING, unless it already ended (superseded).
    fn mark_running(&self, action_id: &str) -> Result<bool> {
        let _inner = self.lock();
        let Some(mut a) = self.store.get_action(action_id)? else {
            return Ok(false);
        };
        if a.state.is_terminal() {
            return Ok(false);
        }
        if a.state == ActionState::Pending {
            a.state = ActionState::Running;
            a.started_at = Some(now_ms());
            self.store.update_action(&a)?;
            let _ = self.action_updates.send(action_id.to_string());
        }
        Ok(true)
    }

    /// Ends an action and, when it still holds the server's task, the task.
    fn finish(
        &self,
        action_id: &str,
        outcome: std::result::Result<String, String>,
        vm_state: VmState,
    ) -> Result<()> {
        let mut inner = self.lock();
        let Some(mut a) = self.store.get_action(action_id)? else {
            return Ok(());
        };
        if a.state.is_terminal() {
            return Ok(());
        }
        let ok = outcome.is_ok();
        a.state = if ok {
            ActionState::Succeeded
        } else {
            ActionState::Failed
        };
        a.message = match outcome {
            Ok(m) | Err(m) => m,
        };
        a.finished_at = Some(now_ms());
        if a.started_at.is_none() {
            a.started_at = a.finished_at;
        }
        self.store.update_action(&a)?;
        let protocol = inner
            .servers
            .get(&a.server_id)
            .map(|s| s.rec.bmc.protocol.as_str())
            .unwrap_or("unknown");
        self.settings
            .metrics
            .actions
            .get_or_create(&ActionLabels {
                protocol: protocol.into(),
                kind: a.kind.as_str().into(),
                outcome: a.state.as_str().into(),
            })
            .inc();
        self.settings
            .metrics
            .action_seconds
            .get_or_create(&KindLabels {
                protocol: protocol.into(),
                kind: a.kind.as_str().into(),
            })
            .observe((a.finished_at.unwrap_or(0) - a.created_at).max(0) as f64 / 1000.0);
        let mut changed = None;
        if let Some(slot) = inner.servers.get_mut(&a.server_id) {
            if slot.rec.task.as_ref().map(|t| t.0.as_str()) == Some(action_id) {
                slot.rec.task = None;
                slot.rec.vm_state = vm_state;
                if slot.running.as_ref().map(|r| r.0.as_str()) == Some(action_id) {
                    slot.running = None;
                }
                self.store.put_server(&slot.rec)?;
                changed = Some(slot.rec.clone());
            }
        }
        if let Some(rec) = changed {
            self.publish(&rec, EventKind::TaskChanged, "action")?;
        }
        drop(inner);
        let _ = self.action_updates.send(action_id.to_string());
        if ok {
            info!(server_id = %a.server_id, action_id, action = %a.kind, message = %a.message, "action succeeded");
        } else {
            warn!(server_id = %a.server_id, action_id, action = %a.kind, message = %a.message, "action failed");
        }
        Ok(())
    }

    pub fn get_action(&self, caller: &Caller, id: &str) -> Result<Action> {
        let a = self
            .store
            .get_action(id)?
            .ok_or_else(|| EngineError::NotFound {
                what: "action",
                id: id.to_string(),
            })?;
        self.check_read_action(caller, &a)?;
        Ok(a)
    }

    fn check_read_action(&self, caller: &Caller, a: &Action) -> Result<()> {
        if caller.is_admin() || a.caller.id == caller.id {
            return Ok(());
        }
        let owner = self
            .lock()
            .servers
            .get(&a.server_id)
            .map(|s| s.rec.project_id.clone());
        self.settings
            .policy
            .check(caller, Op::Read, owner.as_deref())?;
        Ok(())
    }

    pub fn list_actions(
        &self,
        caller: &Caller,
        server_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Action>, Option<i64>)> {
        let rec = self.record(server_id)?;
        self.settings
            .policy
            .check(caller, Op::Read, Some(&rec.project_id))?;
        Ok(self.store.list_actions(server_id, before, limit)?)
    }

    /// Action ids whose record changed (steps, state). Lagging receivers should
    /// re-read what they follow.
    pub fn action_updates(&self) -> broadcast::Receiver<String> {
        self.action_updates.subscribe()
    }

    /// Reads an action without a policy check (for streams already authorised).
    pub fn load_action(&self, id: &str) -> Result<Option<Action>> {
        Ok(self.store.get_action(id)?)
    }

    // ---- power ----

    pub async fn power_state(
        &self,
        caller: &Caller,
        server_id: &str,
        refresh: bool,
    ) -> Result<PowerReading> {
        let rec = self.get_server(caller, server_id)?;
        let mut fresh = false;
        if refresh {
            match self.poll_power(server_id, "refresh").await {
                Some(Ok(_)) => fresh = true,
                Some(Err(source)) => {
                    return Err(EngineError::Bmc {
                        server: rec.id.clone(),
                        bmc: rec.bmc.key(),
                        source,
                    })
                }
                None => return Err(not_found_server(server_id)),
            }
        }
        let rec = self.record(server_id)?;
        Ok(PowerReading {
            server_id: rec.id,
            power: rec.power,
            observed_at: rec.power_observed_at,
            fresh,
            vm_state: rec.vm_state,
            task: rec.task.map(|t| t.1),
        })
    }

    /// Reads a server's power from its BMC (one operation, under the BMC's
    /// lock) and records what it found. `None` when the server is gone.
    pub async fn poll_power(
        &self,
        server_id: &str,
        cause: &str,
    ) -> Option<std::result::Result<Power, BmcError>> {
        let (bmc, op_lock, protocol, checked) = {
            let inner = self.lock();
            let slot = inner.servers.get(server_id)?;
            (
                slot.bmc.clone(),
                inner.bmc_locks.get(&slot.rec.bmc.key())?.clone(),
                slot.rec.bmc.protocol.as_str(),
                slot.checked,
            )
        };
        let result = {
            let _op = op_lock.lock().await;
            if !checked {
                self.check_setup(server_id, &bmc).await;
            }
            let started = tokio::time::Instant::now();
            let r = with_timeout(self.settings.timeouts.bmc_command, bmc.power_state()).await;
            self.settings
                .metrics
                .poll_seconds
                .observe(started.elapsed().as_secs_f64());
            r
        };
        if let Err(e) = &result {
            self.settings.metrics.bmc_error(protocol, e.kind());
        }
        if let Err(e) = self.observe_power(server_id, result.clone(), cause) {
            warn!(server_id, error = %e, "cannot record power state");
        }
        Some(result)
    }

    /// Reads a server's capabilities once, at its first poll, so that a BMC
    /// that cannot power-control it (no Reset action, several systems and no
    /// `system_id`) is reported when the agent starts, not at the first action.
    async fn check_setup(&self, server_id: &str, bmc: &SharedBmc) {
        let found = with_timeout(self.settings.timeouts.bmc_command, bmc.capabilities()).await;
        let problem = match &found {
            Ok(caps) if !caps.supports(PowerOp::On) && !caps.supports(PowerOp::HardReset) => Some(
                "the BMC offers no power command for this server (neither On nor a reset)"
                    .to_string(),
            ),
            Ok(_) => None,
            Err(e @ (BmcError::Unsupported(_) | BmcError::Config(_))) => Some(e.to_string()),
            // Unreachable or refusing now: try again at the next poll.
            Err(_) => return,
        };
        let mut inner = self.lock();
        let Some(slot) = inner.servers.get_mut(server_id) else {
            return;
        };
        slot.checked = true;
        if let Some(p) = &problem {
            warn!(server_id, bmc = %slot.rec.bmc.key(), problem = %p, "this server cannot be power-controlled as configured");
        }
        slot.setup_problem = problem;
    }

    /// Records a power reading (or a failure to read) and publishes a change.
    fn observe_power(
        &self,
        server_id: &str,
        result: std::result::Result<Power, BmcError>,
        cause: &str,
    ) -> Result<()> {
        let mut inner = self.lock();
        let Some(slot) = inner.servers.get_mut(server_id) else {
            return Ok(());
        };
        let before = slot.rec.clone();
        match result {
            Ok(p) => {
                let never_observed = slot.rec.power_observed_at.is_none();
                slot.failures = 0;
                slot.rec.bmc_error = slot.setup_problem.clone();
                slot.rec.power = p.into();
                slot.rec.power_observed_at = Some(now_ms());
                let idle = slot.rec.task.is_none();
                let aligned = matches!(slot.rec.vm_state, VmState::Active | VmState::Shutoff)
                    || (slot.rec.vm_state == VmState::Error && never_observed);
                if idle && aligned {
                    slot.rec.vm_state = vm_state_for(p.into());
                }
            }
            Err(e) => {
                slot.failures += 1;
                slot.rec.bmc_error = Some(e.to_string());
                if slot.failures >= self.settings.sync.unknown_after_failures {
                    slot.rec.power = PowerState::Unknown;
                }
                if slot.failures == 1 {
                    warn!(server_id, bmc = %slot.rec.bmc.key(), error = %e, kind = e.kind(), "cannot read power state");
                }
            }
        }
        let rec = slot.rec.clone();
        let power_changed = before.power != rec.power || before.vm_state != rec.vm_state;
        if before != rec {
            if power_changed || before.bmc_error != rec.bmc_error {
                self.store.put_server(&rec)?;
            } else {
                // Only the observation time moved: keep it in memory, spare the disk.
            }
        }
        if power_changed {
            info!(server_id, power = %rec.power, vm_state = %rec.vm_state, cause, "power state changed");
            self.publish(&rec, EventKind::PowerChanged, cause)?;
        }
        drop(inner);
        Ok(())
    }

    // ---- events ----

    /// Numbers, stores and sends an event. Callers hold the engine lock, which
    /// keeps the stream in the order the changes happened.
    fn publish(&self, rec: &ServerRecord, kind: EventKind, cause: &str) -> Result<()> {
        let ev = ServerEvent {
            seq: 0,
            at: now_ms(),
            server_id: rec.id.clone(),
            kind,
            power: rec.power,
            vm_state: rec.vm_state,
            task: rec.task.as_ref().map(|t| t.1),
            action_id: rec.task.as_ref().map(|t| t.0.clone()),
            cause: cause.to_string(),
        };
        let ev = self.store.append_event(ev, self.settings.event_retain)?;
        let _ = self.events.send(ev);
        Ok(())
    }

    /// Live events. Subscribe before reading history so nothing falls between.
    pub fn subscribe_events(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    /// Retained events after `after`, oldest first.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ServerEvent>> {
        Ok(self.store.events_after(after, limit)?)
    }

    /// Oldest and newest retained sequence numbers.
    pub fn event_bounds(&self) -> Result<(u64, u64)> {
        Ok(self.store.event_bounds()?)
    }

    /// Whether the caller may see this server's events.
    pub fn may_read(&self, caller: &Caller, server_id: &str) -> bool {
        let owner = self
            .lock()
            .servers
            .get(server_id)
            .map(|s| s.rec.project_id.clone());
        caller.is_admin()
            || self
                .settings
                .policy
                .check(caller, Op::Read, owner.as_deref())
                .is_ok()
    }

    // ---- lifecycle ----

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Servers whose BMC did not answer the last read.
    pub fn unreachable(&self) -> usize {
        self.lock()
            .servers
            .values()
            .filter(|s| s.rec.bmc_error.is_some())
            .count()
    }

    /// Updates the gauges, then renders every metric (for a scrape).
    pub fn render_metrics(&self) -> String {
        let m = &self.settings.metrics;
        m.in_flight_actions.set(self.in_flight() as i64);
        m.unreachable_bmcs.set(self.unreachable() as i64);
        m.encode()
    }

    /// The sync loop calls this at each pass, so the watchdog can tell it runs.
    pub fn sync_tick(&self) {
        self.sync_tick.store(now_ms(), Ordering::SeqCst);
    }

    /// Proof of life for the service manager's watchdog: the engine lock can be
    /// taken, the store answers, and the sync loop ran within `limit`.
    pub fn heartbeat(&self, limit: Duration) -> std::result::Result<(), String> {
        let _inner = self.lock();
        self.store
            .ping()
            .map_err(|e| format!("state database does not answer: {e}"))?;
        let age = now_ms() - self.sync_tick.load(Ordering::SeqCst);
        if age > limit.as_millis() as i64 {
            return Err(format!("the sync loop has not run for {age} ms"));
        }
        Ok(())
    }

    /// Arms a kill point (crash tests only).
    #[cfg(any(test, feature = "kill-points"))]
    pub fn arm_kill_point(&self, point: killpoint::KillPoint, mode: killpoint::KillMode) {
        self.kill_points.arm(point, mode);
    }

    /// Resolves once a frozen kill point was reached (engine tests).
    #[cfg(test)]
    pub(crate) async fn kill_point_fired(&self) {
        self.kill_points.fired().await
    }

    /// Drops every running action where it is, writing nothing: what a crash
    /// leaves behind (engine tests).
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        let mut inner = self.lock();
        for slot in inner.servers.values_mut() {
            if let Some((_, handle)) = slot.running.take() {
                handle.abort();
            }
        }
    }

    /// Resolves once a shutdown began (streams end on it).
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Refuses new BMC actions from now on and ends the watch streams.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stopping.send_replace(true);
    }

    /// Refuses new BMC actions, gives in-flight ones `grace` to finish, then
    /// stops them where they are (the next start recovers them from the store),
    /// and closes every BMC session.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight() > 0 {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let (left, bmcs): (Vec<String>, Vec<SharedBmc>) = {
            let mut inner = self.lock();
            let mut left = Vec::new();
            for slot in inner.servers.values_mut() {
                if let Some((id, handle)) = slot.running.take() {
                    handle.abort();
                    left.push(id);
                }
            }
            (
                left,
                inner.servers.values().map(|s| s.bmc.clone()).collect(),
            )
        };
        if !left.is_empty() {
            warn!(actions = ?left, "stopping with actions in flight; the next start recovers them");
        }
        for bmc in bmcs {
            bmc.close().await;
        }
    }
}

/// Puts a server in the map, with the lock of its BMC (shared by every server
/// behind the same BMC endpoint).
fn insert_slot(inner: &mut Inner, rec: ServerRecord, bmc: SharedBmc) {
    inner
        .bmc_locks
        .entry(rec.bmc.key())
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())));
    inner.servers.insert(
        rec.id.clone(),
        Slot {
            rec,
            bmc,
            running: None,
            failures: 0,
            checked: false,
            setup_problem: None,
        },
    );
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

fn new_record(
    id: &str,
    project: &str,
    bmc: BmcRecord,
    source: Source,
    power: Option<Power>,
) -> ServerRecord {
    let power: PowerState = power.map(Into::into).unwrap_or(PowerState::Unknown);
    ServerRecord {
        id: id.to_string(),
        project_id: project.to_string(),
        bmc,
        power,
        power_observed_at: None,
        vm_state: vm_state_for(power),
        task: None,
        locked: false,
        locked_by_admin: false,
        bmc_error: None,
        source,
        created_at: now_ms(),
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

fn validate_enroll(req: &EnrollRequest) -> Result<()> {
    let bad = |m: String| Err(EngineError::InvalidArgument(m));
    if req.project_id.trim().is_empty() {
        return bad(format!("server {}: project_id must not be empty", req.id));
    }
    if req.bmc.address.trim().is_empty() {
        return bad(format!("server {}: BMC address must not be empty", req.id));
    }
    if req.bmc.username.is_empty() {
        return bad(format!("server {}: BMC username must not be empty", req.id));
    }
    match &req.bmc.credential {
        Credential::Inline(s) if s.expose().is_empty() => {
            bad(format!("server {}: BMC password must not be empty", req.id))
        }
        Credential::File(name)
            if name.is_empty() || name.contains('/') || name.starts_with('.') =>
        {
            bad(format!(
                "server {}: password_file must be a plain file name in the credentials directory",
                req.id
            ))
        }
        _ => Ok(()),
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
