//! The Redfish driver: [`RedfishBmc`] implements [`Bmc`] over HTTPS with
//! `reqwest` (rustls) and typed models of the DMTF schemas it touches.
//!
//! Nothing is assumed about paths: the first call walks the service root to
//! the system (chosen by the `system_id` option when the BMC has several, else
//! the only one with a Reset action) and caches its Reset target, allowable
//! values, virtual media and whether it shows restart evidence
//! (`LastResetTime`, `BootProgress`), which [`Bmc::observe`] reads. Options are in
//! [`options`]; the HTTP side (auth, retries, timeouts) is in [`client`];
//! identity, sensors and the event log are read in [`inventory`].

pub mod client;
pub mod discovery;
pub mod inventory;
pub mod mapping;
pub mod model;
pub mod options;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use tokio::sync::Mutex;
use tracing::{info, warn};

use self::client::{Client, Reply, Req};
use self::discovery::Discovered;
use self::model::{
    messages_text, BootOverride, BootPatch, BootSourceOverrideEnabled, ComputerSystem, Health,
    InsertMediaRequest, ResetRequest, Task, TaskState, VirtualMedia,
};
use self::options::RedfishOptions;
use super::{
    Bmc, BmcError, BmcEvent, BmcIdentity, BootDevice, Capabilities, Endpoint, Observation, Power,
    PowerOp,
};

/// One Redfish BMC (one system on it).
pub struct RedfishBmc {
    server_id: String,
    bmc: String,
    opts: RedfishOptions,
    client: Client,
    discovered: Mutex<Option<Arc<Discovered>>>,
}

impl std::fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("server_id", &self.server_id)
            .field("bmc", &self.bmc)
            .field("system_id", &self.opts.system_id)
            .finish_non_exhaustive()
    }
}

impl RedfishBmc {
    /// Validates the options and builds the HTTP client. No network traffic:
    /// discovery happens at the first call.
    pub fn connect(server_id: &str, endpoint: &Endpoint) -> Result<Self, BmcError> {
        let opts = RedfishOptions::parse(&endpoint.options)?;
        let client = Client::new(server_id, endpoint, &opts)?;
        Ok(RedfishBmc {
            server_id: server_id.to_string(),
            bmc: endpoint.key(),
            opts,
            client,
            discovered: Mutex::new(None),
        })
    }

    /// Discovery, once; a failed discovery is retried at the next call.
    ///
    /// A failed discovery deletes the session it may have created: the
    /// server may never be enrolled (nobody would `close` this driver), and a
    /// server that stays enrolled logs in again at the next attempt rather
    /// than holding one of the BMC's few session slots in between.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, BmcError> {
        let mut slot = self.discovered.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        match discovery::discover(&self.client, &self.opts).await {
            Ok(d) => {
                let d = Arc::new(d);
                *slot = Some(d.clone());
                Ok(d)
            }
            Err(e) => {
                self.client.close().await;
                Err(e)
            }
        }
    }

    /// Follows a 202 answer's task monitor until the task ends or
    /// `task_timeout` passes.
    ///
    /// What was accepted is never sent again from here: a task still running
    /// at `task_timeout` is [`BmcError::Unfinished`], and a BMC that stops
    /// answering while the agent follows the task is [`BmcError::Unreachable`]
    /// — both say the command was accepted and may still be carried out.
    async fn follow_task(&self, what: &str, accepted: &Reply) -> Result<(), BmcError> {
        let task: Option<Task> = serde_json::from_slice(&accepted.body).ok();
        let monitor = accepted
            .location()
            .map(str::to_string)
            .or_else(|| task.as_ref().and_then(|t| t.task_monitor.clone()))
            .or_else(|| task.as_ref().and_then(|t| t.odata_id.clone()));
        let Some(monitor) = monitor else {
            info!(server_id = %self.server_id, bmc = %self.bmc, what,
                "BMC accepted (202) without a task monitor");
            return Ok(());
        };
        info!(server_id = %self.server_id, bmc = %self.bmc, what, monitor = %monitor,
            "BMC accepted (202); following its task");
        let task_uri = task.as_ref().and_then(|t| t.odata_id.clone());
        let mut wait = accepted.retry_after();
        let last_state = std::sync::Mutex::new(
            task.as_ref()
                .and_then(|t| t.task_state.clone())
                .map_or_else(|| "running".to_string(), |s| s.to_string()),
        );
        let poll = async {
            let mut url = monitor.clone();
            loop {
                tokio::time::sleep(
                    wait.unwrap_or(Duration::from_secs(1))
                        .clamp(Duration::from_millis(100), Duration::from_secs(5)),
                )
                .await;
                let reply = self
                    .client
                    .send_allowing(Req::get(&url), &[StatusCode::NOT_FOUND])
                    .await
                    .map_err(|e| self.lost_task(what, &monitor, e))?;
                if reply.status == StatusCode::NOT_FOUND {
                    // Monitors may vanish once their task is done: ask the task
                    // resource itself when we know it, else take it as done.
                    match &task_uri {
                        Some(t) if *t != url => {
                            url = t.clone();
                            wait = Some(Duration::ZERO);
                            continue;
                        }
                        _ => {
                            warn!(server_id = %self.server_id, bmc = %self.bmc, what, monitor = %url,
                                "the task monitor is gone (404); taking the task as finished");
                            return Ok(());
                        }
                    }
                }
                wait = reply.retry_after();
                let task: Option<Task> = serde_json::from_slice(&reply.body).ok();
                let state = task.as_ref().and_then(|t| t.task_state.clone());
                if let Some(s) = &state {
                    *last_state.lock().unwrap_or_else(|e| e.into_inner()) = s.to_string();
                }
                match (reply.status, state, task) {
                    (_, Some(s), Some(task)) if s.is_final() => return task_outcome(what, task),
                    (StatusCode::ACCEPTED, _, _) | (_, Some(_), _) => continue,
                    // The monitor answers the action's own result once done.
                    _ => return Ok(()),
                }
            }
        };
        match tokio::time::timeout(self.opts.task_timeout, poll).await {
            Ok(r) => r,
            Err(_) => {
                let state = last_state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                warn!(server_id = %self.server_id, bmc = %self.bmc, what, monitor = %monitor,
                    state = %state, "the BMC's task did not end in time");
                Err(BmcError::Unfinished(format!(
                    "{}: {what} was accepted (HTTP 202), but its task {monitor} was still \
                     {state} after {} (task_timeout); not re-sent: the BMC may still carry it out",
                    self.bmc,
                    humantime::format_duration(self.opts.task_timeout)
                )))
            }
        }
    }

    /// An error met while following the task of an accepted command, told
    /// as such: the command is not failed, its outcome is unknown.
    fn lost_task(&self, what: &str, monitor: &str, e: BmcError) -> BmcError {
        let why = match &e {
            BmcError::Timeout(d) => format!("the BMC did not answer within {d:?}"),
            BmcError::Unreachable(m) => m
                .strip_prefix(&format!("{}: ", self.bmc))
                .unwrap_or(m)
                .to_string(),
            other => other.to_string(),
        };
        warn!(server_id = %self.server_id, bmc = %self.bmc, what, monitor, error = %e,
            "lost the task of an accepted command");
        let text = format!(
            "{}: {what} was accepted (HTTP 202, task {monitor}), then following its task failed: \
             {why}; not re-sent: it may have been carried out",
            self.bmc
        );
        match e {
            BmcError::Timeout(_) | BmcError::Unreachable(_) => BmcError::Unreachable(text),
            _ => BmcError::Unfinished(text),
        }
    }

    /// The system's current ETag, for `If-Match`.
    async fn system_etag(&self, system: &str) -> Result<Option<String>, BmcError> {
        let reply = self.client.send(Req::get(system)).await?;
        if let Some(tag) = reply.header(reqwest::header::ETAG) {
            return Ok(Some(tag.to_string()));
        }
        Ok(reply
            .json::<ComputerSystem>(system)
            .ok()
            .and_then(|s| s.odata_etag))
    }

    async fn accept(&self, what: &str, reply: Reply) -> Result<(), BmcError> {
        if reply.status == StatusCode::ACCEPTED {
            self.follow_task(what, &reply).await
        } else {
            Ok(())
        }
    }
}

fn task_outcome(what: &str, task: Task) -> Result<(), BmcError> {
    let state = task.task_state.clone().unwrap_or(TaskState::Completed);
    let said = messages_text(&task.messages).unwrap_or_else(|| "no message".into());
    match (&state, &task.task_status) {
        (TaskState::Completed, Some(Health::Critical))
        | (TaskState::Killed, _)
        | (TaskState::Exception, _)
        | (TaskState::Cancelled, _) => Err(BmcError::Refused(format!(
            "{what}: task {} ended {state}: {said}",
            task.id.as_deref().unwrap_or("?")
        ))),
        _ => Ok(()),
    }
}

#[async_trait]
impl Bmc for RedfishBmc {
    async fn capabilities(&self) -> Result<Capabilities, BmcError> {
        let d = self.discovered().await?;
        let reset = d.reset.as_ref().map_err(Clone::clone)?;
        Ok(Capabilities {
            power_ops: mapping::power_ops(reset.allowed.as_deref()),
            boot_devices: mapping::boot_devices(d.boot_allowed.as_deref()),
            virtual_media: d.virtual_media.is_some(),
            restart_evidence: d.restart_evidence,
        })
    }

    async fn power_state(&self) -> Result<Power, BmcError> {
        Ok(self.observe().await?.power)
    }

    /// One GET of the system: its `PowerState`, and its `LastResetTime` and
    /// `BootProgress` when it shows them.
    async fn observe(&self) -> Result<Observation, BmcError> {
        let d = self.discovered().await?;
        let reply = self
            .client
            .send_allowing(Req::get(&d.system), &[StatusCode::NOT_FOUND])
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            // The BMC renamed its resources (a firmware update, a reset to
            // defaults): forget what discovery found and walk again next time.
            *self.discovered.lock().await = None;
            warn!(server_id = %self.server_id, bmc = %self.bmc, system = %d.system,
                "the system resource is gone (404); discovery will run again");
            return Err(BmcError::Refused(format!(
                "HTTP 404 on GET {}: the system is gone; it will be looked up again at the next call",
                d.system
            )));
        }
        let sys: ComputerSystem = reply.json(&d.system)?;
        let state = sys.power_state.as_ref().ok_or_else(|| {
            BmcError::Protocol(format!("system {:?} reports no PowerState", d.system_id))
        })?;
        let power = mapping::power(state).ok_or_else(|| {
            BmcError::Protocol(format!(
                "system {:?} reports PowerState {state:?}, which is neither on nor off",
                d.system_id
            ))
        })?;
        Ok(Observation {
            power,
            marker: mapping::restart_marker(&sys),
        })
    }

    async fn power(&self, op: PowerOp) -> Result<(), BmcError> {
        let d = self.discovered().await?;
        let reset = d.reset.as_ref().map_err(Clone::clone)?;
        let reset_type =
            mapping::reset_type_for(op, reset.allowed.as_deref()).ok_or_else(|| {
                let allowed: Vec<&str> =
                    reset.allowed.iter().flatten().map(|t| t.as_str()).collect();
                BmcError::Unsupported(format!(
                    "{op} (system {:?} allows the reset types: {})",
                    d.system_id,
                    allowed.join(", ")
                ))
            })?;
        info!(server_id = %self.server_id, bmc = %self.bmc, op = %op, reset_type = %reset_type,
            "sending Redfish Reset");
        let what = format!("Reset {reset_type}");
        let body = serde_json::to_value(ResetRequest { reset_type })
            .map_err(|e| BmcError::Protocol(e.to_string()))?;
        // Never re-sent once it may have reached the BMC.
        let reply = self
            .client
            .send(Req::post(&reset.target, body, false))
            .await?;
        if matches!(op, PowerOp::GracefulOff | PowerOp::GracefulRestart)
            && reply.status == StatusCode::ACCEPTED
        {
            // The task of a graceful request ends when the OS has acted — or
            // never, when it ignores the button. The engine waits for that
            // itself (soft_reboot, graceful_stop, then its fallback), so the
            // request is done once accepted, unless its task already failed.
            return match serde_json::from_slice::<Task>(&reply.body) {
                Ok(task) if task.task_state.as_ref().is_some_and(|s| s.is_final()) => {
                    task_outcome(&what, task)
                }
                _ => {
                    info!(server_id = %self.server_id, bmc = %self.bmc, what = %what,
                        "graceful request accepted (202); its effect is confirmed by the power state");
                    Ok(())
                }
            };
        }
        self.accept(&what, reply).await
    }

    async fn set_boot_once(&self, device: BootDevice) -> Result<(), BmcError> {
        let d = self.discovered().await?;
        let target = mapping::boot_source(device);
        if let Some(list) = &d.boot_allowed {
            if !list.contains(&target) {
                let allowed: Vec<&str> = list.iter().map(|t| t.as_str()).collect();
                return Err(BmcError::Unsupported(format!(
                    "boot override to {target} (system {:?} allows: {})",
                    d.system_id,
                    allowed.join(", ")
                )));
            }
        }
        let body = serde_json::to_value(BootPatch {
            boot: BootOverride {
                target: target.clone(),
                enabled: BootSourceOverrideEnabled::Once,
            },
        })
        .map_err(|e| BmcError::Protocol(e.to_string()))?;
        info!(server_id = %self.server_id, bmc = %self.bmc, device = %device, target = %target,
            "setting one-time boot override");
        let mut etag = self.system_etag(&d.system).await?;
        for attempt in 0..2 {
            let req = Req::patch(&d.system, body.clone(), etag.clone());
            let reply = self
                .client
                .send_allowing(req, &[StatusCode::PRECONDITION_FAILED])
                .await?;
            if reply.status != StatusCode::PRECONDITION_FAILED {
                return self.accept("boot override", reply).await;
            }
            // 412: the system changed since we read its ETag; read it again once.
            warn!(server_id = %self.server_id, bmc = %self.bmc, attempt,
                "the system's ETag changed (412)");
            etag = self.system_etag(&d.system).await?;
        }
        Err(BmcError::Refused(
            "boot override: the system's ETag kept changing (HTTP 412 twice)".into(),
        ))
    }

    async fn insert_media(&self, image_url: &str) -> Result<(), BmcError> {
        let d = self.discovered().await?;
        let vm = d.virtual_media.as_ref().ok_or_else(|| {
            BmcError::Unsupported(
                "virtual media (no CD/DVD VirtualMedia under the system or its managers)".into(),
            )
        })?;
        info!(server_id = %self.server_id, bmc = %self.bmc, media = %vm.path,
            image = %client::redact_url(image_url),
            "inserting virtual media");
        let reply = match &vm.insert_target {
            Some(target) => {
                let body = serde_json::to_value(InsertMediaRequest {
                    image: image_url,
                    inserted: true,
                    write_protected: true,
                })
                .map_err(|e| BmcError::Protocol(e.to_string()))?;
                self.client.send(Req::post(target, body, false)).await?
            }
            None => {
                let body = serde_json::json!({ "Image": image_url, "Inserted": true });
                self.client.send(Req::patch(&vm.path, body, None)).await?
            }
        };
        self.accept("insert media", reply).await
    }

    async fn eject_media(&self) -> Result<(), BmcError> {
        let d = self.discovered().await?;
        let vm = d.virtual_media.as_ref().ok_or_else(|| {
            BmcError::Unsupported(
                "virtual media (no CD/DVD VirtualMedia under the system or its managers)".into(),
            )
        })?;
        let now: VirtualMedia = self.client.get_json(&vm.path).await?;
        let empty = now.image.as_deref().is_none_or(str::is_empty);
        if now.inserted != Some(true) && empty {
            return Ok(()); // nothing inserted: ejecting is already done
        }
        info!(server_id = %self.server_id, bmc = %self.bmc, media = %vm.path, "ejecting virtual media");
        let reply = match &vm.eject_target {
            Some(target) => {
                self.client
                    .send(Req::post(target, serde_json::json!({}), true))
                    .await?
            }
            None => {
                let body = serde_json::json!({ "Image": null, "Inserted": false });
                self.client.send(Req::patch(&vm.path, body, None)).await?
            }
        };
        self.accept("eject media", reply).await
    }

    /// The Manager of the system (model, firmware) and the System
    /// (manufacturer, model, serial, BIOS); see [`inventory`].
    async fn identity(&self) -> Result<BmcIdentity, BmcError> {
        let d = self.discovered().await?;
        inventory::identity(&self.client, &d).await
    }

    /// The system's chassis: its `Sensors`, else `Thermal` and `Power`.
    async fn health(&self) -> Result<super::Health, BmcError> {
        let d = self.discovered().await?;
        inventory::health(&self.client, &d).await
    }

    /// The SEL (else Event) log service of the system or its manager.
    async fn events(&self, since: Option<i64>, limit: usize) -> Result<Vec<BmcEvent>, BmcError> {
        let d = self.discovered().await?;
        inventory::events(&self.client, &d, since, limit).await
    }

    async fn close(&self) {
        self.client.close().await;
    }
}
