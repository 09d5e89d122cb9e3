//! Runs one accepted action against its BMC, step by step.
//!
//! Each BMC command is one step: it is recorded as started (on disk) right
//! before it is sent, under the BMC's lock, and as finished or failed after.
//! Waits for a power state are one step each, whatever number of reads they
//! take.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info_span, warn, Instrument};

use super::{vm_state_for, with_timeout, ActionRequest, BootSource, Engine};
use crate::bmc::{BmcError, BootDevice, Capabilities, Power, PowerOp, SharedBmc};
use crate::model::{ActionKind, StepPhase, VmState};
use std::sync::Arc;

/// How the runner starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// A newly accepted action.
    Fresh,
    /// After a restart, when no non-idempotent step had been sent: run it again.
    Rerun,
    /// After a restart, when the non-idempotent `step` had been sent (and
    /// `answered` says whether the BMC acknowledged it): never re-send it; read
    /// the power state and finish by the evidence.
    Confirm { step: String, answered: bool },
}

/// Why an action failed, phrased for the caller.
type Failure = String;

pub(super) struct Run {
    pub engine: Arc<Engine>,
    pub action_id: String,
    pub server_id: String,
    pub bmc_key: String,
    pub bmc: SharedBmc,
    pub op_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Run {
    pub async fn execute(self, req: ActionRequest, mode: Mode) {
        let span = info_span!("action", server_id = %self.server_id, action_id = %self.action_id, bmc = %self.bmc_key, action = %req.kind());
        async move {
            match self.engine.mark_running(&self.action_id) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    warn!(error = %e, "cannot mark action running");
                    return;
                }
            }
            let result = match mode {
                Mode::Fresh => self.perform(&req).await,
                Mode::Rerun => {
                    self.note(
                        "recovery",
                        "the agent restarted before any non-idempotent step was sent; running the action again",
                    );
                    self.perform(&req).await
                }
                Mode::Confirm { step, answered } => self.confirm(&req, &step, answered).await,
            };
            if let ActionRequest::Reinstall(BootSource::VirtualMedia(_)) = &req {
                // The image is ejected when the action ends, however it ends.
                if let Err(e) = self.call("eject_media", self.bmc.eject_media()).await {
                    warn!(error = %e, "virtual media eject failed");
                }
            }
            let vm_state = match (&result, req.kind()) {
                (Ok(_), ActionKind::Stop) => VmState::Shutoff,
                (Ok(_), _) => VmState::Active,
                // A failed start or stop leaves the server as its power says.
                (Err(_), ActionKind::Start | ActionKind::Stop) => self
                    .engine
                    .record(&self.server_id)
                    .map(|r| vm_state_for(r.power))
                    .unwrap_or(VmState::Error),
                (Err(_), _) => VmState::Error,
            };
            if let Err(e) = self.engine.finish(&self.action_id, result, vm_state) {
                warn!(error = %e, "cannot record the end of the action");
            }
        }
        .instrument(span)
        .await
    }

    async fn perform(&self, req: &ActionRequest) -> Result<String, Failure> {
        let t = &self.engine.settings.timeouts;
        match req {
            ActionRequest::Reboot { hard: true } => {
                let caps = self.capabilities().await?;
                if self.read_power().await? == Power::On {
                    self.hard_reboot(&caps).await?;
                } else {
                    self.send(PowerOp::On).await?;
                }
                self.require(Power::On, t.power_confirm).await?;
                Ok("rebooted (HARD)".into())
            }
            ActionRequest::Reboot { hard: false } => self.soft_reboot().await,
            ActionRequest::Start => {
                self.send(PowerOp::On).await?;
                self.require(Power::On, t.power_confirm).await?;
                Ok("powered on".into())
            }
            ActionRequest::Stop { force: true } => {
                self.send(PowerOp::ForceOff).await?;
                self.require(Power::Off, t.power_confirm).await?;
                Ok("powered off (forced)".into())
            }
            ActionRequest::Stop { force: false } => {
                self.send(PowerOp::GracefulOff).await?;
                if self.wait_for(Power::Off, t.graceful_stop).await? {
                    return Ok("powered off (graceful)".into());
                }
                self.note(
                    "fallback_force_off",
                    &format!(
                        "the server was still on {} after a graceful shutdown; forcing it off",
                        human(t.graceful_stop)
                    ),
                );
                self.send(PowerOp::ForceOff).await?;
                self.require(Power::Off, t.power_confirm).await?;
                Ok(format!(
                    "powered off: graceful shutdown did not finish within {}, so the power was forced off",
                    human(t.graceful_stop)
                ))
            }
            ActionRequest::Reinstall(source) => {
                let caps = self.capabilities().await?;
                match source {
                    BootSource::Pxe => {
                        self.call("set_boot_pxe", self.bmc.set_boot_once(BootDevice::Pxe))
                            .await?;
                    }
                    BootSource::VirtualMedia(url) => {
                        if !caps.virtual_media {
                            return Err(
                                "this BMC offers no virtual media; reinstall with PXE instead"
                                    .into(),
                            );
                        }
                        self.call("insert_media", self.bmc.insert_media(url))
                            .await?;
                        self.call("set_boot_cd", self.bmc.set_boot_once(BootDevice::Cd))
                            .await?;
                    }
                }
                if self.read_power().await? == Power::On {
                    self.power_cycle(&caps).await?;
                } else {
                    self.send(PowerOp::On).await?;
                }
                self.require(Power::On, t.power_confirm).await?;
                Ok(match source {
                    BootSource::Pxe => "boot device set to PXE for the next boot; server power-cycled and on".into(),
                    BootSource::VirtualMedia(_) => "virtual media inserted and set as the next boot device; server power-cycled and on".into(),
                })
            }
            ActionRequest::ResetState(_) | ActionRequest::Lock | ActionRequest::Unlock => {
                Err("internal: this action has no BMC steps".into())
            }
        }
    }

    async fn soft_reboot(&self) -> Result<String, Failure> {
        let t = &self.engine.settings.timeouts;
        let caps = self.capabilities().await?;
        let graceful_restart = caps.supports(PowerOp::GracefulRestart);
        if graceful_restart {
            self.send(PowerOp::GracefulRestart).await?;
        } else {
            self.send(PowerOp::GracefulOff).await?;
        }
        if self.wait_for(Power::Off, t.soft_reboot).await? {
            if !graceful_restart {
                self.send(PowerOp::On).await?;
            }
            self.require(Power::On, t.power_confirm).await?;
            return Ok("rebooted (SOFT)".into());
        }
        self.note(
            "fallback_hard",
            &format!(
                "the server did not power off within {} of the soft reboot; falling back to a HARD reboot",
                human(t.soft_reboot)
            ),
        );
        self.hard_reboot(&caps).await?;
        self.require(Power::On, t.power_confirm).await?;
        Ok(format!(
            "rebooted: the SOFT reboot did not power the server off within {}, so it fell back to HARD",
            human(t.soft_reboot)
        ))
    }

    /// Reset a running server: hard reset, else power cycle, else off then on.
    async fn hard_reboot(&self, caps: &Capabilities) -> Result<(), Failure> {
        for op in [PowerOp::HardReset, PowerOp::PowerCycle] {
            if caps.supports(op) {
                return self.send(op).await;
            }
        }
        self.off_then_on().await
    }

    /// Cycle a running server so it boots again: power cycle, else hard
    /// reset, else off then on.
    async fn power_cycle(&self, caps: &Capabilities) -> Result<(), Failure> {
        for op in [PowerOp::PowerCycle, PowerOp::HardReset] {
            if caps.supports(op) {
                return self.send(op).await;
            }
        }
        self.off_then_on().await
    }

    async fn off_then_on(&self) -> Result<(), Failure> {
        self.send(PowerOp::ForceOff).await?;
        self.require(Power::Off, self.engine.settings.timeouts.power_confirm)
            .await?;
        self.send(PowerOp::On).await
    }

    /// After a restart: never re-send `step`; finish by what the BMC reports.
    async fn confirm(
        &self,
        req: &ActionRequest,
        step: &str,
        answered: bool,
    ) -> Result<String, Failure> {
        let want = if req.kind() == ActionKind::Stop {
            Power::Off
        } else {
            Power::On
        };
        let what = if answered {
            format!("{step} had been acknowledged by the BMC before the agent restarted")
        } else {
            format!("the agent restarted while {step} was in flight; it is not re-sent")
        };
        self.note("recovery", &format!("{what}; reading the power state"));
        let limit = self.engine.settings.timeouts.power_confirm;
        if self.wait_for(want, limit).await? {
            Ok(format!(
                "recovered after an agent restart: {what}; the BMC reports power {want}"
            ))
        } else {
            Err(format!(
                "recovered after an agent restart: {what}; the BMC did not report power {want} within {}",
                human(limit)
            ))
        }
    }

    // ---- steps ----

    fn step(&self, step: &str, phase: StepPhase, detail: &str) -> Result<(), Failure> {
        self.engine
            .add_step(&self.action_id, step, phase, detail)
            .map_err(|e| format!("cannot record step {step}: {e}"))
    }

    fn note(&self, step: &str, detail: &str) {
        if let Err(e) = self.step(step, StepPhase::Note, detail) {
            warn!(error = %e, "cannot record note");
        }
    }

    /// One BMC command as one step, written ahead, under the BMC's lock.
    async fn call<T>(
        &self,
        step: &str,
        fut: impl std::future::Future<Output = Result<T, BmcError>>,
    ) -> Result<T, Failure> {
        let result = {
            let _op = self.op_lock.lock().await;
            self.step(step, StepPhase::Started, "")?;
            with_timeout(self.engine.settings.timeouts.bmc_command, fut).await
        };
        match result {
            Ok(v) => {
                self.step(step, StepPhase::Finished, "")?;
                Ok(v)
            }
            Err(e) => {
                let protocol = self
                    .engine
                    .record(&self.server_id)
                    .map(|r| r.bmc.protocol.as_str())
                    .unwrap_or("unknown");
                self.engine.settings.metrics.bmc_error(protocol, e.kind());
                self.step(step, StepPhase::Failed, &e.to_string())?;
                Err(format!("{step} failed: {e} (BMC {})", self.bmc_key))
            }
        }
    }

    async fn send(&self, op: PowerOp) -> Result<(), Failure> {
        self.call(op.as_str(), self.bmc.power(op)).await
    }

    async fn capabilities(&self) -> Result<Capabilities, Failure> {
        self.call("discover", self.bmc.capabilities()).await
    }

    async fn read_power(&self) -> Result<Power, Failure> {
        let p = self.call("read_power", self.bmc.power_state()).await?;
        let _ = self.engine.observe_power(&self.server_id, Ok(p), "action");
        Ok(p)
    }

    /// One read outside the step log (waits make many).
    async fn poll_once(&self) -> Result<Power, BmcError> {
        let r = {
            let _op = self.op_lock.lock().await;
            with_timeout(
                self.engine.settings.timeouts.bmc_command,
                self.bmc.power_state(),
            )
            .await
        };
        if let Ok(p) = r {
            let _ = self.engine.observe_power(&self.server_id, Ok(p), "action");
        }
        r
    }

    /// Waits up to `limit` for power `want`, as one step. `Ok(false)` on timeout.
    async fn wait_for(&self, want: Power, limit: Duration) -> Result<bool, Failure> {
        let step = format!("wait_{want}");
        self.step(
            &step,
            StepPhase::Started,
            &format!("up to {}", human(limit)),
        )?;
        let started = Instant::now();
        let deadline = started + limit;
        let poll = self.engine.settings.timeouts.confirm_poll;
        loop {
            let last = match self.poll_once().await {
                Ok(p) if p == want => {
                    self.step(
                        &step,
                        StepPhase::Finished,
                        &format!("{want} after {}", human(started.elapsed())),
                    )?;
                    return Ok(true);
                }
                Ok(p) => format!("still {p}"),
                Err(e) => format!("last read failed: {e}"),
            };
            let now = Instant::now();
            if now >= deadline {
                self.step(
                    &step,
                    StepPhase::Failed,
                    &format!("not {want} after {}: {}", human(limit), last),
                )?;
                return Ok(false);
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }

    /// Like `wait_for`, but not reaching `want` fails the action.
    async fn require(&self, want: Power, limit: Duration) -> Result<(), Failure> {
        if self.wait_for(want, limit).await? {
            Ok(())
        } else {
            Err(format!(
                "the BMC did not report power {want} within {} (BMC {})",
                human(limit),
                self.bmc_key
            ))
        }
    }
}

fn human(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
        .to_string()
}
