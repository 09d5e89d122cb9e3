//! Actions in: each request accepted, refused with its reason, or answered
//! with the action a retried request id already made; then the action's
//! state changes as its runner reports them, and the history it leaves.
//!
//! Every change is decided under the engine lock (which orders them) and
//! queued to the store there; it is awaited — durable — outside the lock. An
//! action's answer leaves only once the action is on disk, and its runner
//! starts only then.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use super::replay;
use super::request::{ActionRequest, BootSource};
use super::rules::{decide, Decision};
use super::runner;
use super::{not_found_server, Engine, EngineError, InFlight, Inner, Result};
use crate::metrics::{ActionLabels, KindLabels};
use crate::model::*;
use crate::policy::Op;
use crate::store::Write;

/// The actions recent requests made, by (request scope, request id), so a
/// retried request is answered without reading the database under the lock,
/// and one that arrives while its action is still being written waits for
/// it. Older request ids are found in the database (read before the lock:
/// an id accepted after that read is here, well within the window).
#[derive(Default)]
pub(super) struct RecentRequests {
    by_id: HashMap<(String, String), Made>,
    order: VecDeque<(String, String)>,
}

/// How many recent request ids are kept in memory.
const RECENT_REQUESTS: usize = 20_000;

struct Made {
    action_id: String,
    server_id: String,
    kind: ActionKind,
    /// `Some(true)` once durable, `Some(false)` if the write failed.
    durable: watch::Receiver<Option<bool>>,
}

impl RecentRequests {
    fn insert(&mut self, key: (String, String), made: Made) {
        if self.by_id.insert(key.clone(), made).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_REQUESTS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// Forgets a request whose action could not be written.
    fn forget(&mut self, key: &(String, String)) {
        self.by_id.remove(key);
        self.order.retain(|k| k != key);
    }
}

type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Action>> + Send>>;

/// A new action, queued to the store: the caller awaits the ticket, then
/// tells whoever retried the request meanwhile, and lets the permit go.
struct Accepted {
    action: Action,
    ticket: crate::store::Ticket,
    durable: watch::Sender<Option<bool>>,
    _unwritten: tokio::sync::OwnedSemaphorePermit,
}

/// What a request came to, decided under the lock.
enum Intake {
    /// The action an earlier request with the same id made (awaited outside
    /// the lock: it may not be durable yet).
    Earlier(Answer),
    /// A new action, queued to the store.
    Accepted(Box<Accepted>),
}

impl Engine {
    /// Accepts (or refuses) an action. Returns once the action is on disk;
    /// BMC work runs in a task of its own.
    pub async fn submit(
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
        let scope = caller.request_scope();
        // An older use of the request id, read before taking the lock.
        let stored = match &request_id {
            Some(rid) => self.store.action_by_request_id(&scope, rid)?,
            None => None,
        };
        let accepted = match self.take(caller, server_id, req, request_id.clone(), stored)? {
            Intake::Earlier(answer) => return answer.await,
            Intake::Accepted(accepted) => *accepted,
        };
        let action = accepted.action;
        let durable_tx = accepted.durable;
        let durable = accepted.ticket.durable().await;
        let mut inner = self.lock();
        if let (Some(rid), Err(_)) = (request_id, &durable) {
            inner.requests.forget(&(scope, rid));
        }
        let _ = durable_tx.send(Some(durable.is_ok()));
        durable?;
        // Started only now that it is on disk, and only if nothing (a
        // reset-state) superseded it meanwhile.
        let holds_task = inner
            .servers
            .get(server_id)
            .and_then(|s| s.rec.task.as_ref())
            .is_some_and(|t| t.0 == action.id);
        if kind.uses_bmc() && holds_task {
            let req = ActionRequest::from_action(&action).expect("made from a request");
            self.spawn_runner(&mut inner, &action, req, false);
        }
        drop(inner);
        let _ = self.action_updates.send(action.id.clone());
        info!(server_id, action_id = %action.id, action = %kind, caller = %caller.id, "action accepted");
        Ok(action)
    }

    /// Under the lock: the earlier action a request id names, or a new
    /// action decided and queued to the store.
    fn take(
        &self,
        caller: &Caller,
        server_id: &str,
        req: ActionRequest,
        request_id: Option<String>,
        stored: Option<Action>,
    ) -> Result<Intake> {
        let mut inner = self.lock();
        let slot = inner
            .servers
            .get(server_id)
            .ok_or_else(|| not_found_server(server_id))?;
        self.settings
            .policy
            .check(caller, req.op(), Some(&slot.rec.project_id))?;
        if let Some(rid) = &request_id {
            let scope = caller.request_scope();
            if let Some(answer) =
                self.earlier_request(&inner, &scope, rid, stored, server_id, req.kind())?
            {
                return Ok(Intake::Earlier(answer));
            }
        }
        let accepted = self.accept(&mut inner, caller, server_id, req, request_id)?;
        Ok(Intake::Accepted(Box::new(accepted)))
    }

    /// A request id this caller's project used before: the same request gets
    /// the same action (once it is durable); another request is refused,
    /// naming only this project's action.
    fn earlier_request(
        &self,
        inner: &Inner,
        scope: &str,
        rid: &str,
        stored: Option<Action>,
        server_id: &str,
        kind: ActionKind,
    ) -> Result<Option<Answer>> {
        let key = (scope.to_string(), rid.to_string());
        let (id, on, what, durable) = match (inner.requests.by_id.get(&key), &stored) {
            (Some(m), _) => (
                m.action_id.clone(),
                m.server_id.clone(),
                m.kind,
                Some(m.durable.clone()),
            ),
            (None, Some(a)) => (a.id.clone(), a.server_id.clone(), a.kind, None),
            (None, None) => return Ok(None),
        };
        if on != server_id || what != kind {
            return Err(EngineError::InvalidArgument(format!(
                "request_id {rid:?} was already used for action {id} ({what} on server {on}); request ids are unique per project"
            )));
        }
        info!(server_id, action_id = %id, request_id = %rid, "retried request; returning the existing action");
        let rid = rid.to_string();
        let store = self.store.clone();
        Ok(Some(Box::pin(async move {
            if let Some(mut durable) = durable {
                let ok = durable
                    .wait_for(|d| d.is_some())
                    .await
                    .map(|d| *d == Some(true))
                    .unwrap_or(false);
                if !ok {
                    return Err(EngineError::Conflict(format!(
                        "the action {id} that request_id {rid:?} made could not be recorded; retry with a new request id"
                    )));
                }
            }
            match stored.filter(|a| a.id == id) {
                Some(a) => Ok(a),
                None => store
                    .get_action(&id)?
                    .ok_or(EngineError::NotFound { what: "action", id }),
            }
        })))
    }

    /// Decides and records (queues) a new action; the caller awaits the
    /// ticket. `Err` is a refusal.
    #[allow(clippy::type_complexity)]
    fn accept(
        &self,
        inner: &mut Inner,
        caller: &Caller,
        server_id: &str,
        req: ActionRequest,
        request_id: Option<String>,
    ) -> Result<Accepted> {
        let kind = req.kind();
        let slot = inner.servers.get(server_id).expect("checked by the caller");
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
        // A bounded number of accepted actions wait for their write; beyond
        // it the caller is told to come back, rather than queued without end.
        let unwritten =
            self.unwritten
                .clone()
                .try_acquire_owned()
                .map_err(|_| EngineError::Busy {
                    waiting: self.settings.actions.max_unwritten,
                    retry_after: std::time::Duration::from_millis(100),
                })?;
        let now = now_ms();
        let mut action = Action {
            id: uuid::Uuid::new_v4().to_string(),
            server_id: server_id.to_string(),
            kind,
            state: ActionState::Pending,
            params: req.params(),
            request_id: request_id.clone(),
            caller: caller.clone(),
            created_at: now,
            started_at: None,
            finished_at: None,
            message: String::new(),
            events: Vec::new(),
            superseded_by: None,
        };
        let mut writes = Vec::new();
        if let Decision::Supersede(old) = &decision {
            writes.extend(self.supersede(inner, server_id, old, &action.id)?);
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
        if !kind.uses_bmc() {
            // No BMC traffic: the action is done the moment it is recorded.
            action.state = ActionState::Succeeded;
            action.started_at = Some(now);
            action.finished_at = Some(now);
        }
        let rec = slot.rec.clone();
        writes.push(Write::InsertAction(action.clone()));
        writes.push(Write::PutServer(rec.clone()));
        writes.push(self.event(&rec, event_kind, cause));
        // Every so often the oldest ended actions go (`actions.retain`).
        if self.accepted.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            writes.push(Write::PruneActions {
                keep: self.settings.actions.retain,
            });
        }
        let ticket = self.store.write(writes);
        let (durable_tx, durable_rx) = watch::channel(None);
        if let Some(rid) = request_id {
            inner.requests.insert(
                (caller.request_scope(), rid),
                Made {
                    action_id: action.id.clone(),
                    server_id: server_id.to_string(),
                    kind,
                    durable: durable_rx,
                },
            );
        }
        Ok(Accepted {
            action,
            ticket,
            durable: durable_tx,
            _unwritten: unwritten,
        })
    }

    /// Ends the running action as SUPERSEDED by `by` (caller holds the lock):
    /// stops its runner and returns the writes that record it.
    fn supersede(
        &self,
        inner: &mut Inner,
        server_id: &str,
        old: &str,
        by: &str,
    ) -> Result<Vec<Write>> {
        let slot = inner.servers.get_mut(server_id).expect("present");
        if let Some((running, handle)) = slot.running.take() {
            if running == old {
                handle.abort();
            } else {
                slot.running = Some((running, handle));
            }
        }
        let mut writes = Vec::new();
        if let Some(prev) = self.store.get_action(old)? {
            // A step that was sent but never answered stays visible as such.
            if let Some(open) = replay::in_flight(&prev.events) {
                writes.push(Write::AddStep {
                    action_id: old.to_string(),
                    step: StepEvent {
                        at: now_ms(),
                        step: open,
                        phase: StepPhase::Interrupted,
                        detail: format!("superseded by action {by} while in flight"),
                        data: None,
                    },
                });
            }
        }
        writes.push(Write::EndAction {
            id: old.to_string(),
            state: ActionState::Superseded,
            message: format!("superseded by action {by}"),
            at: now_ms(),
            superseded_by: Some(by.to_string()),
        });
        let _ = self.action_updates.send(old.to_string());
        info!(server_id, action_id = %old, superseded_by = %by, "action superseded");
        Ok(writes)
    }

    /// Runs an action in a task of its own. `resumed`: an earlier run of the
    /// agent accepted it (its step log, in `action.events`, says how far it got).
    pub(super) fn spawn_runner(
        self: &Arc<Self>,
        inner: &mut Inner,
        action: &Action,
        req: ActionRequest,
        resumed: bool,
    ) {
        let slot = inner.servers.get(&action.server_id).expect("present");
        let op_lock = inner
            .bmc_locks
            .get(&slot.rec.bmc.key())
            .cloned()
            .expect("every server has a BMC lock");
        let slot = inner.servers.get_mut(&action.server_id).expect("present");
        let run = runner::Run::new(
            self.clone(),
            action,
            slot.rec.bmc.key(),
            slot.bmc.clone(),
            op_lock,
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

    /// Records a step event on an action, durably, and tells its watchers.
    /// The first step of a run also moves the action to RUNNING (one commit
    /// for both).
    pub(super) async fn add_step(
        &self,
        action_id: &str,
        first: bool,
        step: &str,
        phase: StepPhase,
        detail: &str,
        data: Option<String>,
    ) -> Result<()> {
        let mut writes = Vec::with_capacity(2);
        if first {
            writes.push(Write::StartAction {
                id: action_id.to_string(),
                at: now_ms(),
            });
        }
        writes.push(Write::AddStep {
            action_id: action_id.to_string(),
            step: StepEvent {
                at: now_ms(),
                step: step.to_string(),
                phase,
                detail: detail.to_string(),
                data,
            },
        });
        self.store.write(writes).durable().await?;
        let _ = self.action_updates.send(action_id.to_string());
        Ok(())
    }

    /// Whether an action may run: it still holds its server's task (it was
    /// not superseded before its runner started). It becomes RUNNING with its
    /// first step.
    pub(super) fn may_run(&self, action_id: &str, server_id: &str) -> bool {
        self.lock()
            .servers
            .get(server_id)
            .and_then(|s| s.rec.task.as_ref())
            .is_some_and(|t| t.0 == action_id)
    }

    /// Ends an action and, when it still holds the server's task, the task.
    /// An action that no longer holds it (superseded meanwhile) is left as
    /// its successor recorded it.
    pub(super) async fn finish(
        &self,
        action: &runner::Identity,
        outcome: std::result::Result<String, String>,
        vm_state: VmState,
    ) -> Result<()> {
        let ok = outcome.is_ok();
        let state = if ok {
            ActionState::Succeeded
        } else {
            ActionState::Failed
        };
        let message = match outcome {
            Ok(m) | Err(m) => m,
        };
        let now = now_ms();
        let Some((ticket, protocol)) = self.end(action, state, &message, now, vm_state) else {
            return Ok(());
        };
        ticket.durable().await?;
        let metrics = &self.settings.metrics;
        metrics
            .actions
            .get_or_create(&ActionLabels {
                protocol: protocol.into(),
                kind: action.kind.as_str().into(),
                outcome: state.as_str().into(),
            })
            .inc();
        metrics
            .action_seconds
            .get_or_create(&KindLabels {
                protocol: protocol.into(),
                kind: action.kind.as_str().into(),
            })
            .observe((now - action.created_at).max(0) as f64 / 1000.0);
        let _ = self.action_updates.send(action.id.clone());
        if ok {
            info!(server_id = %action.server_id, action_id = %action.id, action = %action.kind, message = %message, "action succeeded");
        } else {
            warn!(server_id = %action.server_id, action_id = %action.id, action = %action.kind, message = %message, "action failed");
        }
        Ok(())
    }

    /// Under the lock: queues the end of an action that still holds its
    /// server's task (`None` when it no longer does), and frees the task.
    fn end(
        &self,
        action: &runner::Identity,
        state: ActionState,
        message: &str,
        now: Millis,
        vm_state: VmState,
    ) -> Option<(crate::store::Ticket, &'static str)> {
        let end = Write::EndAction {
            id: action.id.clone(),
            state,
            message: message.to_string(),
            at: now,
            superseded_by: None,
        };
        let mut inner = self.lock();
        let Some(slot) = inner.servers.get_mut(&action.server_id) else {
            // The server is gone: end the action all the same.
            return Some((self.store.write(vec![end]), "unknown"));
        };
        if slot.rec.task.as_ref().map(|t| t.0.as_str()) != Some(action.id.as_str()) {
            return None;
        }
        slot.rec.task = None;
        slot.rec.vm_state = vm_state;
        if slot.running.as_ref().map(|r| r.0.as_str()) == Some(action.id.as_str()) {
            slot.running = None;
        }
        let rec = slot.rec.clone();
        let ticket = self.store.write(vec![
            end,
            Write::PutServer(rec.clone()),
            self.event(&rec, EventKind::TaskChanged, "action"),
        ]);
        Some((ticket, rec.bmc.protocol.as_str()))
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
}
