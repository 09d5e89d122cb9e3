//! What each action does at the BMC, step by step, and how it is confirmed.
//!
//! | action | steps | confirmed by |
//! |---|---|---|
//! | HARD reboot, power on | discover, read_power, hard_reset (else power_cycle, else force_off + wait_off + power_on), wait_restart | the restart marker moving (Redfish `LastResetTime`/`BootProgress`) or a power blip; without either, power on and an honest "not confirmed" |
//! | HARD reboot, power off | discover, read_power, power_on, wait_on | off → on |
//! | SOFT reboot, BMC with a restart marker and GracefulRestart | discover, read_power, graceful_restart, wait_restart | the marker moving or a power blip within `soft_reboot`, then power on |
//! | SOFT reboot otherwise | discover, read_power, graceful_off, wait_off, power_on, wait_on | off → on |
//! | SOFT reboot, no sign within `soft_reboot` | … fallback_hard note, then the HARD steps | as HARD |
//! | start | power_on, wait_on | power on |
//! | stop | graceful_off, wait_off (else fallback_force_off note, force_off, wait_off) / force_off, wait_off | power off |
//! | reinstall | discover, set_boot_* (insert_media), read_power, power_cycle (else hard_reset, else off + on) or power_on, wait_restart / wait_on, (eject_media) | as HARD |
//!
//! A GracefulRestart is used only where the BMC shows evidence of restarts:
//! on most firmware it is a warm restart that keeps the power on, so without
//! a marker "not restarted yet" and "already back" look the same, and a
//! fallback reset could hit a server that is restarting. A BMC that offers
//! GracefulRestart but neither a marker nor GracefulShutdown gets the request
//! and an honest "not confirmed", never a second reset.

use std::time::Duration;

use tokio::time::Instant;

use super::runner::{human, Failure, Restart, Run, NO_RESTART_EVIDENCE};
use super::{ActionRequest, BootSource};
use crate::bmc::{BootDevice, Capabilities, Observation, Power, PowerOp};

impl Run {
    pub(super) async fn perform(&self, req: &ActionRequest) -> Result<String, Failure> {
        let t = self.engine.settings.timeouts.clone();
        match req {
            ActionRequest::Reboot { hard: true } => {
                let caps = self.discover().await?;
                let before = self.read_power().await?;
                let read_at = Instant::now();
                if before.power == Power::Off {
                    self.command(PowerOp::On).await?;
                    let seen = self.require(Power::On, t.power_confirm).await?;
                    return Ok(format!(
                        "rebooted (HARD): the server was off, so it was powered on ({seen})"
                    ));
                }
                self.hard_reboot(&caps, &before, read_at, "rebooted (HARD)")
                    .await
            }
            ActionRequest::Reboot { hard: false } => self.soft_reboot().await,
            ActionRequest::Start => {
                self.command(PowerOp::On).await?;
                let seen = self.require(Power::On, t.power_confirm).await?;
                Ok(format!("powered on ({seen})"))
            }
            ActionRequest::Stop { force: true } => {
                self.command(PowerOp::ForceOff).await?;
                let seen = self.require(Power::Off, t.power_confirm).await?;
                Ok(format!("powered off (forced; {seen})"))
            }
            ActionRequest::Stop { force: false } => {
                self.command(PowerOp::GracefulOff).await?;
                if let Some(seen) = self.wait_power(Power::Off, t.graceful_stop).await? {
                    return Ok(format!("powered off (graceful; {seen})"));
                }
                self.note(
                    "fallback_force_off",
                    &format!(
                        "the server was still on {} after a graceful shutdown; forcing it off",
                        human(t.graceful_stop)
                    ),
                )
                .await;
                self.command(PowerOp::ForceOff).await?;
                let seen = self.require(Power::Off, t.power_confirm).await?;
                Ok(format!(
                    "powered off: graceful shutdown did not finish within {}, so the power was forced off ({seen})",
                    human(t.graceful_stop)
                ))
            }
            ActionRequest::Reinstall(source) => {
                let caps = self.discover().await?;
                let what = match source {
                    BootSource::Pxe => {
                        self.effect("set_boot_pxe", || self.bmc.set_boot_once(BootDevice::Pxe))
                            .await?;
                        "boot device set to PXE for the next boot"
                    }
                    BootSource::VirtualMedia(url) => {
                        if !caps.virtual_media {
                            return Err(
                                "this BMC offers no virtual media; reinstall with PXE instead"
                                    .into(),
                            );
                        }
                        self.effect("insert_media", || self.bmc.insert_media(url))
                            .await?;
                        self.effect("set_boot_cd", || self.bmc.set_boot_once(BootDevice::Cd))
                            .await?;
                        "virtual media inserted and set as the next boot device"
                    }
                };
                let before = self.read_power().await?;
                let read_at = Instant::now();
                if before.power == Power::Off {
                    self.command(PowerOp::On).await?;
                    let seen = self.require(Power::On, t.power_confirm).await?;
                    return Ok(format!(
                        "{what}; the server was off, so it was powered on ({seen})"
                    ));
                }
                self.clear_of_last_boot(&caps, &before, read_at).await;
                let sent = self
                    .restart(&caps, &[PowerOp::PowerCycle, PowerOp::HardReset])
                    .await?;
                self.confirm_restart(
                    &caps,
                    &before,
                    sent,
                    &format!("{what}; server restarted"),
                    true,
                )
                .await
            }
            ActionRequest::ResetState(_) | ActionRequest::Lock | ActionRequest::Unlock => {
                Err("internal: this action has no BMC steps".into())
            }
        }
    }

    async fn discover(&self) -> Result<Capabilities, Failure> {
        self.read("discover", || self.bmc.capabilities(), describe_caps)
            .await
    }

    async fn read_power(&self) -> Result<Observation, Failure> {
        let obs = self
            .read("read_power", || self.bmc.observe(), describe_observation)
            .await?;
        let _ = self
            .engine
            .observe_power(&self.server_id, Ok(obs.power), "action");
        Ok(obs)
    }

    async fn soft_reboot(&self) -> Result<String, Failure> {
        let t = self.engine.settings.timeouts.clone();
        let caps = self.discover().await?;
        let before = self.read_power().await?;
        let read_at = Instant::now();
        if before.power == Power::Off {
            self.command(PowerOp::On).await?;
            let seen = self.require(Power::On, t.power_confirm).await?;
            return Ok(format!(
                "the server was off, so the SOFT reboot powered it on ({seen})"
            ));
        }
        let restart = caps.supports(PowerOp::GracefulRestart);
        let fallback_reason = if restart && caps.restart_evidence {
            self.clear_of_last_boot(&caps, &before, read_at).await;
            self.command(PowerOp::GracefulRestart).await?;
            match self
                .wait_restart(&before, true, t.soft_reboot, t.power_confirm)
                .await?
            {
                Restart::Confirmed(seen) => {
                    return Ok(format!("rebooted (SOFT): graceful restart; {seen}"))
                }
                Restart::NotOn(why) => return Err(format!("SOFT reboot: {why}")),
                Restart::NoSign(why) => why,
            }
        } else if caps.supports(PowerOp::GracefulOff) {
            self.command(PowerOp::GracefulOff).await?;
            match self.wait_power(Power::Off, t.soft_reboot).await? {
                Some(off) => {
                    self.command(PowerOp::On).await?;
                    let on = self.require(Power::On, t.power_confirm).await?;
                    return Ok(format!(
                        "rebooted (SOFT): the OS shut down ({off}) and the server was powered on again ({on})"
                    ));
                }
                None => format!(
                    "the server did not power off within {} of the graceful shutdown",
                    human(t.soft_reboot)
                ),
            }
        } else if restart {
            // No marker and no graceful shutdown: request the restart and say
            // what can be known; never a fallback reset onto a server that may
            // be restarting.
            self.command(PowerOp::GracefulRestart).await?;
            return match self
                .wait_restart(&before, false, t.soft_reboot, t.power_confirm)
                .await?
            {
                Restart::Confirmed(seen) => Ok(format!(
                    "SOFT reboot requested (GracefulRestart) and acknowledged by the BMC; {seen}; no fallback reset is sent to a server that may be restarting"
                )),
                Restart::NotOn(why) | Restart::NoSign(why) => {
                    Err(format!("SOFT reboot: {why}"))
                }
            };
        } else {
            "the BMC offers neither GracefulShutdown nor GracefulRestart".to_string()
        };
        self.note(
            "fallback_hard",
            &format!("{fallback_reason}; falling back to a HARD reboot"),
        )
        .await;
        let message = format!("rebooted: the SOFT reboot fell back to HARD ({fallback_reason})");
        self.hard_reboot(&caps, &before, read_at, &message).await
    }

    /// Resets a running server and confirms it: hard reset, else power
    /// cycle, else force off then on.
    async fn hard_reboot(
        &self,
        caps: &Capabilities,
        before: &Observation,
        read_at: Instant,
        done: &str,
    ) -> Result<String, Failure> {
        self.clear_of_last_boot(caps, before, read_at).await;
        let sent = self
            .restart(caps, &[PowerOp::HardReset, PowerOp::PowerCycle])
            .await?;
        self.confirm_restart(caps, before, sent, done, false).await
    }

    /// Waits, where the BMC's restart marker counts whole seconds, until a
    /// second has passed since `before` was read at `read_at`. The host's
    /// last boot came before that reading; a restart in the same wall-clock
    /// second would leave `LastResetTime` unchanged, and the agent would see
    /// "no sign of a restart" of a server that did restart — and a SOFT
    /// reboot would then fall back to a second, HARD, reset. A real host
    /// takes longer than a second to boot, a simulator need not.
    async fn clear_of_last_boot(
        &self,
        caps: &Capabilities,
        before: &Observation,
        read_at: Instant,
    ) {
        let whole_seconds = caps.restart_evidence
            && before
                .marker
                .as_ref()
                .is_some_and(|m| m.counts_whole_seconds());
        if whole_seconds {
            tokio::time::sleep_until(read_at + Duration::from_secs(1)).await;
        }
    }

    /// Sends the first of `prefer` the BMC offers, else force off → wait off
    /// → on. Returns the command sent (`None` for off then on).
    async fn restart(
        &self,
        caps: &Capabilities,
        prefer: &[PowerOp],
    ) -> Result<Option<PowerOp>, Failure> {
        if let Some(op) = prefer.iter().copied().find(|op| caps.supports(*op)) {
            self.command(op).await?;
            return Ok(Some(op));
        }
        self.command(PowerOp::ForceOff).await?;
        self.require(Power::Off, self.engine.settings.timeouts.power_confirm)
            .await?;
        self.command(PowerOp::On).await?;
        Ok(None)
    }

    /// Waits for the evidence of the restart that `sent` asked for, and words
    /// the outcome by what was seen.
    ///
    /// For a reinstall (`reinstall`) whose reset or cycle was in flight at a
    /// crash and not re-sent, and of which the BMC shows no restart, the
    /// one-time boot override it set may still be armed: the next reboot,
    /// whoever asks for it, would start the installer. The override is set
    /// back to disk and the action fails, asking for the reinstall again.
    async fn confirm_restart(
        &self,
        caps: &Capabilities,
        before: &Observation,
        sent: Option<PowerOp>,
        done: &str,
        reinstall: bool,
    ) -> Result<String, Failure> {
        let t = &self.engine.settings.timeouts;
        let Some(op) = sent else {
            let on = self.require(Power::On, t.power_confirm).await?;
            return Ok(format!("{done}: powered off, then on ({on})"));
        };
        let in_doubt = self.in_doubt(op);
        let sent_text = if in_doubt {
            format!("{op} was in flight when the agent stopped and was not re-sent")
        } else {
            format!("{op} acknowledged by the BMC")
        };
        match self
            .wait_restart(before, caps.restart_evidence, t.power_confirm, t.power_confirm)
            .await?
        {
            Restart::Confirmed(seen)
                if in_doubt && reinstall && seen.starts_with(NO_RESTART_EVIDENCE) =>
            {
                self.withdraw_boot_override().await?;
                Err(format!(
                    "{sent_text}, and this BMC shows no restart evidence ({seen}): whether the server restarted into the installer is unknown. {WITHDRAWN}"
                ))
            }
            Restart::NoSign(why) if in_doubt && reinstall => {
                self.withdraw_boot_override().await?;
                Err(format!(
                    "{sent_text}, and the BMC shows no restart since: {why}. It most likely never reached the BMC. {WITHDRAWN}"
                ))
            }
            Restart::Confirmed(seen) => Ok(format!("{done}: {sent_text}; {seen}")),
            Restart::NoSign(why) if in_doubt => Err(format!(
                "{sent_text}, and the BMC shows no restart since: {why}. It most likely never reached the BMC; nothing was re-sent, so retry the action to restart the server"
            )),
            Restart::NoSign(why) => Ok(format!(
                "{done}: {sent_text}, but the restart is not confirmed: {why}"
            )),
            Restart::NotOn(why) => Err(format!("{sent_text}; {why}")),
        }
    }
}

/// How a reinstall in doubt ends (see `confirm_restart`).
const WITHDRAWN: &str = "The one-time boot override was set back to disk, so that a later reboot does not start the installer unasked; retry the reinstall";

impl Run {
    /// Sets the one-time boot device back to disk (idempotent).
    async fn withdraw_boot_override(&self) -> Result<(), Failure> {
        self.effect("clear_boot_override", || {
            self.bmc.set_boot_once(BootDevice::Disk)
        })
        .await
    }
}

fn describe_caps(c: &Capabilities) -> String {
    let ops: Vec<&str> = c.power_ops.iter().map(|o| o.as_str()).collect();
    let boot: Vec<String> = c.boot_devices.iter().map(|b| b.to_string()).collect();
    format!(
        "power: {}; boot: {}; virtual media: {}; restart evidence: {}",
        ops.join(", "),
        boot.join(", "),
        if c.virtual_media { "yes" } else { "no" },
        if c.restart_evidence { "yes" } else { "no" },
    )
}

fn describe_observation(o: &Observation) -> String {
    match &o.marker {
        Some(m) if !m.is_empty() => format!("{}; {m}", o.power),
        _ => o.power.to_string(),
    }
}
