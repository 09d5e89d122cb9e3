//! Power: reads from the BMCs (the sync loop's and fresh ones on request),
//! what they change in the records, and the numbered event stream watchers
//! follow.

use std::sync::Arc;

use tokio::sync::broadcast;
use tracing::{info, warn};

use super::inventory::{EVENT_LOG_ENTRIES, EVENT_LOG_SLACK_SECS, EVENT_LOG_WAIT};
use super::request::PowerReading;
use super::{not_found_server, vm_state_for, with_timeout, Engine, EngineError, Result};
use crate::bmc::{BmcError, BmcEvent, Power, PowerOp, SharedBmc};
use crate::model::*;
use crate::policy::Op;
use crate::store::Write;

/// Most reads a fleet sweep makes at once (each BMC is still read under
/// its own lock, one operation at a time).
const SWEEP_CONCURRENCY: usize = 1024;

impl Engine {
    /// Power states of many servers at once (a fleet sweep). `None`: every
    /// server the caller may read. Each server's answer or failure is its own.
    pub async fn power_states(
        self: &Arc<Self>,
        caller: &Caller,
        server_ids: Option<Vec<String>>,
        refresh: bool,
    ) -> Vec<(String, Result<PowerReading>)> {
        let ids = match server_ids {
            Some(ids) => ids,
            None => {
                let (visible, _) = self.list_servers(caller, None, usize::MAX);
                visible.into_iter().map(|r| r.id).collect()
            }
        };
        if !refresh {
            return ids
                .into_iter()
                .map(|id| {
                    let r = self.cached_power(caller, &id);
                    (id, r)
                })
                .collect();
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(SWEEP_CONCURRENCY));
        let mut reads = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let (engine, caller, id, limit) =
                (self.clone(), caller.clone(), id.clone(), limit.clone());
            reads.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (i, engine.power_state(&caller, &id, true).await)
            });
        }
        let mut out: Vec<Option<Result<PowerReading>>> = ids.iter().map(|_| None).collect();
        while let Some(done) = reads.join_next().await {
            if let Ok((i, r)) = done {
                out[i] = Some(r);
            }
        }
        ids.into_iter()
            .zip(out)
            .map(|(id, r)| {
                let r = r.unwrap_or_else(|| {
                    Err(EngineError::Conflict(format!(
                        "the read of server {id} did not finish"
                    )))
                });
                (id, r)
            })
            .collect()
    }

    /// The cached power state, after the policy check.
    fn cached_power(&self, caller: &Caller, server_id: &str) -> Result<PowerReading> {
        let rec = self.get_server(caller, server_id)?;
        Ok(PowerReading {
            server_id: rec.id,
            power: rec.power,
            observed_at: rec.power_observed_at,
            fresh: false,
            vm_state: rec.vm_state,
            task: rec.task.map(|t| t.1),
        })
    }

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
    ///
    /// A power change no action caused is published with the BMC's event-log
    /// entries logged since the previous observation (read within
    /// [`EVENT_LOG_WAIT`]; without them when the log does not answer in
    /// time). A server whose identity was never read has it read after its
    /// first good poll (a failure is recorded, the poll stands).
    pub async fn poll_power(
        &self,
        server_id: &str,
        cause: &str,
    ) -> Option<std::result::Result<Power, BmcError>> {
        let (bmc, op_lock, protocol, checked, identity_tried) = {
            let inner = self.lock();
            let slot = inner.servers.get(server_id)?;
            (
                slot.bmc.clone(),
                inner.bmc_locks.get(&slot.rec.bmc.key())?.clone(),
                slot.rec.bmc.protocol.as_str(),
                slot.checked,
                slot.rec.identity_tried(),
            )
        };
        let _op = op_lock.lock().await;
        if !checked {
            self.check_setup(server_id, &bmc).await;
        }
        let started = tokio::time::Instant::now();
        let result = with_timeout(self.settings.timeouts.bmc_command, bmc.power_state()).await;
        self.settings
            .metrics
            .poll_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.settings.metrics.bmc_error(protocol, e.kind());
        }
        let log = match &result {
            Ok(p) => match self.unexplained_change(server_id, *p, cause) {
                Some(since) => self.event_log_around(server_id, &bmc, since).await,
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        if let Err(e) = self.observe_power_with(server_id, result.clone(), cause, log) {
            warn!(server_id, error = %e, "cannot record power state");
        }
        if result.is_ok() && !identity_tried {
            let found = with_timeout(self.settings.timeouts.bmc_command, bmc.identity()).await;
            self.record_identity(server_id, found);
        }
        Some(result)
    }

    /// When `power` (just read) changes the recorded power and no action runs
    /// that could explain it: from when (Unix seconds) to read the BMC's log.
    fn unexplained_change(&self, server_id: &str, power: Power, cause: &str) -> Option<i64> {
        if !matches!(cause, "sync" | "refresh") {
            return None;
        }
        let inner = self.lock();
        let rec = &inner.servers.get(server_id)?.rec;
        let was = rec.power;
        let changed = was != PowerState::Unknown && was != PowerState::from(power);
        if !changed || rec.task.is_some() {
            return None;
        }
        let seen = rec.power_observed_at.unwrap_or_else(now_ms);
        Some(seen.div_euclid(1000) - EVENT_LOG_SLACK_SECS)
    }

    /// The BMC's newest log entries since `since`, within [`EVENT_LOG_WAIT`];
    /// nothing (and a log line) when the log cannot be read in time.
    async fn event_log_around(
        &self,
        server_id: &str,
        bmc: &SharedBmc,
        since: i64,
    ) -> Vec<BmcEvent> {
        match with_timeout(EVENT_LOG_WAIT, bmc.events(Some(since), EVENT_LOG_ENTRIES)).await {
            Ok(entries) => entries,
            Err(BmcError::Unsupported(_)) => Vec::new(),
            Err(e) => {
                warn!(server_id, error = %e, kind = e.kind(), "power changed; the BMC's event log could not be read, the change is published without it");
                Vec::new()
            }
        }
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

    /// An action found its BMC unavailable (no answer, unreachable). A read
    /// that failed counts as a failed poll. A power command that got no
    /// answer (`in_doubt`) may have changed the power, so the power last
    /// read is not trusted any more: it becomes UNKNOWN at once, never a
    /// stale ON or OFF.
    pub(super) fn bmc_unavailable(&self, server_id: &str, error: &BmcError, in_doubt: bool) {
        if in_doubt {
            let mut inner = self.lock();
            if let Some(slot) = inner.servers.get_mut(server_id) {
                let threshold = self.settings.sync.unknown_after_failures;
                slot.failures = slot.failures.max(threshold.saturating_sub(1));
            }
        }
        if let Err(e) = self.observe_power(server_id, Err(error.clone()), "action") {
            warn!(server_id, error = %e, "cannot record power state");
        }
    }

    /// Records a power reading (or a failure to read) and publishes a change.
    pub(super) fn observe_power(
        &self,
        server_id: &str,
        result: std::result::Result<Power, BmcError>,
        cause: &str,
    ) -> Result<()> {
        self.observe_power_with(server_id, result, cause, Vec::new())
    }

    /// As [`Engine::observe_power`], attaching `log` (the BMC's event-log
    /// entries) to the event when the power itself changed.
    fn observe_power_with(
        &self,
        server_id: &str,
        result: std::result::Result<Power, BmcError>,
        cause: &str,
        log: Vec<BmcEvent>,
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
        // Only the observation time moved: keep it in memory, spare the disk.
        let mut writes = Vec::new();
        if power_changed || before.bmc_error != rec.bmc_error {
            writes.push(Write::PutServer(rec.clone()));
        }
        if power_changed {
            info!(server_id, power = %rec.power, vm_state = %rec.vm_state, cause, bmc_events = log.len(), "power state changed");
            let mut ev = self.event(&rec, EventKind::PowerChanged, cause);
            if let Write::AppendEvent { event, .. } = &mut ev {
                if before.power != rec.power {
                    event.bmc_events = log;
                }
            }
            writes.push(ev);
        }
        if !writes.is_empty() {
            // Queued under the lock, in the order of the changes; nobody
            // waits for a reading to be on disk.
            self.store.write_later(writes);
        }
        drop(inner);
        Ok(())
    }

    /// The write that appends an event about `rec`; the store numbers it at
    /// commit and sends it to watchers once it is durable. Callers queue it
    /// under the engine lock, which keeps the stream in the order the changes
    /// happened.
    pub(super) fn event(&self, rec: &ServerRecord, kind: EventKind, cause: &str) -> Write {
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
            bmc_events: Vec::new(),
        };
        Write::AppendEvent {
            event: ev,
            retain: self.settings.event_retain,
        }
    }

    /// Live events. Subscribe before reading history so nothing falls between.
    pub fn subscribe_events(&self) -> broadcast::Receiver<ServerEvent> {
        self.store.subscribe_events()
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
}
