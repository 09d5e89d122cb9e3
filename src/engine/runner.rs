//! Runs one accepted action against its BMC, step by step, and resumes one
//! that a previous run of the agent left unfinished.
//!
//! Each BMC command is one step: recorded as started (on disk) right before it
//! is sent, under the BMC's lock, and as finished or failed after, with what
//! it returned. Waits for a power state or for a restart are one step each,
//! whatever number of reads they take. The step log is the program counter
//! (see [`super::replay`]): a resumed action runs its program from the top,
//! replaying recorded steps without BMC traffic, and continues at the first
//! step not recorded as ended:
//!
//! - a read (discover, read_power) is made again;
//! - an idempotent command (on, off, graceful off, boot device, media) is
//!   re-sent only when the power state read now says it is still needed;
//! - a non-idempotent command (hard reset, power cycle, graceful restart) is
//!   never re-sent: the action goes on to its confirmation step, and what the
//!   BMC shows decides how it ends;
//! - a wait continues until its original deadline.
//!
//! The programs themselves (which steps each action takes) are in
//! [`super::programs`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info_span, warn, Instrument};

use super::killpoint::Boundary;
use super::replay::{Cursor, Ending, Entry, RECOVERY_STEP};
use super::{vm_state_for, with_timeout, ActionRequest, BootSource, Engine};
use crate::bmc::{BmcError, Observation, Power, PowerOp, SharedBmc};
use crate::model::{now_ms, Action, ActionKind, Millis, StepPhase, VmState};

/// Why an action failed, phrased for the caller.
pub(super) type Failure = String;

/// What the engine needs to know of an action when it ends.
pub(super) struct Identity {
    pub id: String,
    pub kind: ActionKind,
    pub server_id: String,
    pub created_at: Millis,
}

pub(super) struct Run {
    pub engine: Arc<Engine>,
    pub action_id: String,
    pub kind: ActionKind,
    pub server_id: String,
    pub created_at: Millis,
    pub bmc_key: String,
    pub bmc: SharedBmc,
    pub op_lock: Arc<tokio::sync::Mutex<()>>,
    /// The action was accepted by an earlier run of the agent.
    resumed: bool,
    cursor: Mutex<Cursor>,
    /// The step this run resumed at, once reached.
    resumed_at: Mutex<Option<String>>,
    /// Non-idempotent commands that were in flight when the agent stopped and
    /// were not re-sent: whether the BMC got them is unknown.
    in_doubt: Mutex<Vec<PowerOp>>,
    /// Whether this run wrote anything yet (its first write also marks the
    /// action RUNNING).
    wrote: std::sync::atomic::AtomicBool,
}

/// How a wait for a restart ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Restart {
    /// Power on, and the restart seen as the BMC allows (detail says how).
    Confirmed(String),
    /// No sign of a restart (no marker change, no power off) in time.
    NoSign(String),
    /// A restart began but the power did not come back in time.
    NotOn(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Run {
    /// `action.events`: the step log so far (empty for a new action);
    /// `resumed`: whether an earlier run of the agent accepted it.
    pub fn new(
        engine: Arc<Engine>,
        action: &Action,
        bmc_key: String,
        bmc: SharedBmc,
        op_lock: Arc<tokio::sync::Mutex<()>>,
        resumed: bool,
    ) -> Run {
        Run {
            engine,
            action_id: action.id.clone(),
            kind: action.kind,
            server_id: action.server_id.clone(),
            created_at: action.created_at,
            bmc_key,
            bmc,
            op_lock,
            resumed,
            cursor: Mutex::new(Cursor::new(&action.events)),
            resumed_at: Mutex::new(None),
            in_doubt: Mutex::new(Vec::new()),
            wrote: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub async fn execute(self, req: ActionRequest) {
        let span = info_span!("action", server_id = %self.server_id, action_id = %self.action_id, bmc = %self.bmc_key, action = %req.kind());
        async move {
            self.kill(RECOVERY_STEP, Boundary::Accepted).await;
            if !self.engine.may_run(&self.action_id, &self.server_id) {
                return;
            }
            let mut result = self.perform(&req).await;
            if let ActionRequest::Reinstall(BootSource::VirtualMedia(_)) = &req {
                // The image is ejected when the action ends, however it ends.
                if let Err(e) = self.effect("eject_media", || self.bmc.eject_media()).await {
                    warn!(error = %e, "virtual media eject failed");
                }
            }
            match &mut result {
                Ok(m) | Err(m) => {
                    if let Some(tail) = self.resume_story(m) {
                        m.push_str("; ");
                        m.push_str(&tail);
                    }
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
            let who = Identity {
                id: self.action_id.clone(),
                kind: self.kind,
                server_id: self.server_id.clone(),
                created_at: self.created_at,
            };
            if let Err(e) = self.engine.finish(&who, result, vm_state).await {
                warn!(error = %e, "cannot record the end of the action");
            }
        }
        .instrument(span)
        .await
    }

    /// How a resumed action says so in its message (`said`: the message so
    /// far, which may already tell of a command left in doubt).
    fn resume_story(&self, said: &str) -> Option<String> {
        if !self.resumed {
            return None;
        }
        let mut story = match lock(&self.resumed_at).as_deref() {
            Some(step) => format!("resumed after an agent restart at step {step}"),
            None => "finished after an agent restart without repeating a step".into(),
        };
        let doubt: Vec<&str> = lock(&self.in_doubt).iter().map(|op| op.as_str()).collect();
        if !doubt.is_empty() && !said.contains("not re-sent") {
            story.push_str(&format!(
                " ({} was in flight when the agent stopped and was not re-sent)",
                doubt.join(", ")
            ));
        }
        Some(story)
    }

    /// Whether `op` was in flight at a crash and not re-sent.
    pub(super) fn in_doubt(&self, op: PowerOp) -> bool {
        lock(&self.in_doubt).contains(&op)
    }

    // ---- the log ----

    async fn kill(&self, step: &str, boundary: Boundary) {
        self.engine
            .kill_points
            .hit(self.kind, &self.server_id, step, boundary)
            .await;
    }

    /// Writes a step event; returns once it is on disk.
    async fn record(
        &self,
        step: &str,
        phase: StepPhase,
        detail: &str,
        data: Option<String>,
    ) -> Result<(), Failure> {
        let first = !self.wrote.swap(true, std::sync::atomic::Ordering::SeqCst);
        self.engine
            .add_step(&self.action_id, first, step, phase, detail, data)
            .await
            .map_err(|e| format!("cannot record step {step}: {e}"))
    }

    /// A note, written once: a replayed run does not write again what the
    /// log already holds (notes come before the steps that follow them).
    pub(super) async fn note(&self, step: &str, detail: &str) {
        if !lock(&self.cursor).at_end() {
            return;
        }
        if let Err(e) = self.record(step, StepPhase::Note, detail, None).await {
            warn!(error = %e, "cannot record note");
        }
    }

    /// Takes the program's next step from the log; at the resume point,
    /// says where the action resumes.
    async fn enter(&self, step: &str) -> Result<Entry, Failure> {
        let (entry, replayed) = {
            let mut c = lock(&self.cursor);
            let entry = c.enter(step).map_err(|e| {
                format!("cannot resume after the agent restarted: {e}; nothing more was sent")
            })?;
            let replayed: Vec<String> = c.replayed().iter().map(|s| s.to_string()).collect();
            (entry, replayed)
        };
        if self.resumed && !matches!(entry, Entry::Replay(_)) {
            let first = {
                let mut at = lock(&self.resumed_at);
                let first = at.is_none();
                if first {
                    *at = Some(step.to_string());
                }
                first
            };
            if first {
                let done: Vec<&str> = replayed
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != step)
                    .collect();
                let detail = if done.is_empty() {
                    format!("the agent restarted; resuming at step {step}")
                } else {
                    format!(
                        "the agent restarted; resuming at step {step}; done before and not repeated: {}",
                        done.join(", ")
                    )
                };
                self.record(RECOVERY_STEP, StepPhase::Note, &detail, None)
                    .await?;
            }
        }
        Ok(entry)
    }

    fn replayed_failure(&self, step: &str, detail: &str) -> Failure {
        format!("{step} failed: {detail} (BMC {})", self.bmc_key)
    }

    // ---- steps ----

    /// One BMC call as one step, written ahead, under the BMC's lock.
    async fn live<T, F>(
        &self,
        step: &str,
        fut: F,
        describe: impl FnOnce(&T) -> (String, Option<String>),
    ) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, BmcError>>,
    {
        let limit = self.engine.settings.timeouts.bmc_command;
        let (result, cut) = {
            let _op = self.op_lock.lock().await;
            self.record(step, StepPhase::Started, "", None).await?;
            self.kill(step, Boundary::Started).await;
            let r = tokio::time::timeout(limit, fut).await;
            self.kill(step, Boundary::Answered).await;
            let cut = r.is_err();
            (r.unwrap_or(Err(BmcError::Timeout(limit))), cut)
        };
        let out = match result {
            Ok(v) => {
                let (detail, data) = describe(&v);
                self.record(step, StepPhase::Finished, &detail, data)
                    .await?;
                Ok(v)
            }
            Err(e) => {
                let protocol = self
                    .engine
                    .record(&self.server_id)
                    .map(|r| r.bmc.protocol.as_str())
                    .unwrap_or("unknown");
                self.engine.settings.metrics.bmc_error(protocol, e.kind());
                let power_command = PowerOp::parse(step).is_some();
                if e.leaves_doubt() {
                    self.engine
                        .bmc_unavailable(&self.server_id, &e, power_command);
                }
                // The agent's own deadline cut a power command short (a
                // driver still following a task, a BMC that answers slowly):
                // "did not answer" would not be the truth — it may have
                // answered and be carrying the command out.
                let text = if cut && power_command {
                    format!(
                        "no complete answer within {} (timeouts.bmc_command): the BMC may be \
                         carrying it out; not re-sent because the BMC may have executed it",
                        humantime::format_duration(limit)
                    )
                } else {
                    e.to_string()
                };
                self.record(step, StepPhase::Failed, &text, None).await?;
                Err(format!("{step} failed: {text} (BMC {})", self.bmc_key))
            }
        };
        self.kill(step, Boundary::Finished).await;
        out
    }

    /// A read that changes nothing at the BMC; its answer is kept in the log
    /// so a resumed run takes the same path.
    pub(super) async fn read<T, F, Fut>(
        &self,
        step: &str,
        call: F,
        describe: impl FnOnce(&T) -> String,
    ) -> Result<T, Failure>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, BmcError>>,
    {
        match self.enter(step).await? {
            Entry::Replay(r) if r.ending == Ending::Finished => {
                match r.data.as_deref().map(serde_json::from_str::<T>) {
                    Some(Ok(v)) => return Ok(v),
                    _ => {
                        return Err(format!(
                            "cannot resume after the agent restarted: the log has no readable answer for {step}; nothing more was sent"
                        ))
                    }
                }
            }
            Entry::Replay(r) => return Err(self.replayed_failure(step, &r.detail)),
            Entry::InFlight(_) | Entry::Live => {}
        }
        self.live(step, call(), |v| {
            (describe(v), serde_json::to_string(v).ok())
        })
        .await
    }

    /// An idempotent command with no power effect (boot device, media).
    pub(super) async fn effect<F, Fut>(&self, step: &str, call: F) -> Result<(), Failure>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), BmcError>>,
    {
        match self.enter(step).await? {
            Entry::Replay(r) if r.ending == Ending::Finished => Ok(()),
            Entry::Replay(r) => Err(self.replayed_failure(step, &r.detail)),
            // Safe to send again: the same setting twice is the setting once.
            Entry::InFlight(_) | Entry::Live => {
                self.live(step, call(), |_| (String::new(), None)).await
            }
        }
    }

    /// A power command.
    pub(super) async fn command(&self, op: PowerOp) -> Result<(), Failure> {
        let step = op.as_str();
        match self.enter(step).await? {
            Entry::Replay(r) if r.ending == Ending::Finished => Ok(()),
            Entry::Replay(r) => Err(self.replayed_failure(step, &r.detail)),
            Entry::InFlight(_) if !op.is_idempotent() => {
                lock(&self.in_doubt).push(op);
                self.record(
                    RECOVERY_STEP,
                    StepPhase::Note,
                    &format!(
                        "{step} was in flight when the agent stopped; it is not re-sent (it may have reached the BMC); what the BMC shows decides the outcome"
                    ),
                    None,
                )
                .await?;
                Ok(())
            }
            Entry::InFlight(_) => {
                let target = match op {
                    PowerOp::On => Some(Power::On),
                    PowerOp::ForceOff | PowerOp::GracefulOff => Some(Power::Off),
                    _ => None,
                };
                if let Some(target) = target {
                    if let Ok(obs) = self.poll_once().await {
                        if obs.power == target {
                            self.record(
                                step,
                                StepPhase::Finished,
                                &format!(
                                    "not re-sent after the agent restarted: the BMC already reports power {target}"
                                ),
                                None,
                            )
                            .await?;
                            return Ok(());
                        }
                    }
                }
                self.live(step, self.bmc.power(op), |_| (String::new(), None))
                    .await
            }
            Entry::Live => {
                self.live(step, self.bmc.power(op), |_| (String::new(), None))
                    .await
            }
        }
    }

    /// One read outside the step log (waits make many).
    async fn poll_once(&self) -> Result<Observation, BmcError> {
        let r = {
            let _op = self.op_lock.lock().await;
            with_timeout(
                self.engine.settings.timeouts.bmc_command,
                self.bmc.observe(),
            )
            .await
        };
        match &r {
            Ok(obs) => {
                let _ = self
                    .engine
                    .observe_power(&self.server_id, Ok(obs.power), "action");
            }
            Err(e) if e.is_unavailable() => self.engine.bmc_unavailable(&self.server_id, e, false),
            Err(_) => {}
        }
        r
    }

    /// Starts (or, after a restart, continues) a wait step; returns its
    /// deadline.
    async fn begin_wait(
        &self,
        step: &str,
        limit: Duration,
        detail: &str,
    ) -> Result<Result<Instant, Entry>, Failure> {
        match self.enter(step).await? {
            Entry::Live => {
                self.record(step, StepPhase::Started, detail, None).await?;
                Ok(Ok(Instant::now() + limit))
            }
            Entry::InFlight(r) => {
                // The original deadline; at least one read is still made.
                let left = (r.started_at + limit.as_millis() as i64 - now_ms()).max(0);
                Ok(Ok(Instant::now() + Duration::from_millis(left as u64)))
            }
            replay @ Entry::Replay(_) => Ok(Err(replay)),
        }
    }

    /// Waits up to `limit` for power `want`, as one step: `Ok(Some(detail))`
    /// once reached, `Ok(None)` on timeout.
    pub(super) async fn wait_power(
        &self,
        want: Power,
        limit: Duration,
    ) -> Result<Option<String>, Failure> {
        let step = format!("wait_{want}");
        let deadline = match self
            .begin_wait(&step, limit, &format!("up to {}", human(limit)))
            .await?
        {
            Ok(d) => d,
            Err(Entry::Replay(r)) => {
                return Ok((r.ending == Ending::Finished).then_some(r.detail));
            }
            Err(_) => unreachable!("begin_wait hands back only replays"),
        };
        self.kill(&step, Boundary::Started).await;
        let started = Instant::now();
        let poll = self.engine.settings.timeouts.confirm_poll;
        let out = loop {
            let last = match self.poll_once().await {
                Ok(o) if o.power == want => {
                    let detail = format!("{want} after {}", human(started.elapsed()));
                    self.record(&step, StepPhase::Finished, &detail, None)
                        .await?;
                    break Some(detail);
                }
                Ok(o) => format!("still {}", o.power),
                Err(e) => format!("last read failed: {e}"),
            };
            let now = Instant::now();
            if now >= deadline {
                self.record(
                    &step,
                    StepPhase::Failed,
                    &format!("not {want} after {}: {last}", human(limit)),
                    None,
                )
                .await?;
                break None;
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        };
        self.kill(&step, Boundary::Finished).await;
        Ok(out)
    }

    /// Like `wait_power`, but not reaching `want` fails the action.
    pub(super) async fn require(&self, want: Power, limit: Duration) -> Result<String, Failure> {
        match self.wait_power(want, limit).await? {
            Some(detail) => Ok(detail),
            None => Err(format!(
                "the BMC did not report power {want} within {} (BMC {})",
                human(limit),
                self.bmc_key
            )),
        }
    }

    /// After a reset or restart request: waits up to `sign_limit` for a sign
    /// that the host restarted — the BMC's restart marker moved since
    /// `before`, or the power was seen off — then up to `on_limit` for power
    /// on. A BMC that offers no marker (`evidence` false) gives no sign but a
    /// power blip: the wait then ends at the first reading of power on, and
    /// says that the restart itself is not confirmed.
    pub(super) async fn wait_restart(
        &self,
        before: &Observation,
        evidence: bool,
        sign_limit: Duration,
        on_limit: Duration,
    ) -> Result<Restart, Failure> {
        const STEP: &str = "wait_restart";
        const OFF_SEEN: &str = "power_off_seen";
        let plan = if evidence {
            format!(
                "up to {} for a sign of restart ({}), then up to {} for power on",
                human(sign_limit),
                before.marker.clone().unwrap_or_default(),
                human(on_limit)
            )
        } else {
            format!("up to {} for power on", human(on_limit))
        };
        let limit = if evidence { sign_limit } else { on_limit };
        let sign_deadline = match self.begin_wait(STEP, limit, &plan).await? {
            Ok(d) => d,
            Err(Entry::Replay(r)) => {
                return Ok(match r.ending {
                    Ending::Finished => Restart::Confirmed(r.detail),
                    _ if r.data.as_deref() == Some("no_sign") => Restart::NoSign(r.detail),
                    _ => Restart::NotOn(r.detail),
                });
            }
            Err(_) => unreachable!("begin_wait hands back only replays"),
        };
        self.kill(STEP, Boundary::Started).await;
        let mut off_seen = lock(&self.cursor)
            .notes_of_last()
            .iter()
            .any(|n| n == OFF_SEEN);
        let started = Instant::now();
        let poll = self.engine.settings.timeouts.confirm_poll;
        let mut sign: Option<(Instant, String)> = None;
        let out = loop {
            let obs = self.poll_once().await;
            let last = match &obs {
                Ok(o) => format!("power {}", o.power),
                Err(e) => format!("last read failed: {e}"),
            };
            if let Ok(o) = &obs {
                if o.power == Power::Off && !off_seen {
                    off_seen = true;
                    self.note(
                        OFF_SEEN,
                        &format!("power off seen after {}", human(started.elapsed())),
                    )
                    .await;
                }
                if sign.is_none() {
                    let moved = match (&o.marker, &before.marker) {
                        (Some(now), Some(was)) if evidence && now.shows_restart_since(was) => {
                            Some(format!("restart seen: {was} → {now}"))
                        }
                        _ => None,
                    };
                    sign = match (moved, off_seen) {
                        (Some(m), _) => Some((Instant::now(), m)),
                        (None, true) => Some((
                            Instant::now(),
                            "restart seen: the power went off and came back".to_string(),
                        )),
                        (None, false) if !evidence => {
                            Some((Instant::now(), NO_RESTART_EVIDENCE.to_string()))
                        }
                        (None, false) => None,
                    };
                }
                if let (Some((_, how)), Power::On) = (&sign, o.power) {
                    let detail = format!("{how}; power on after {}", human(started.elapsed()));
                    self.record(STEP, StepPhase::Finished, &detail, None)
                        .await?;
                    break Restart::Confirmed(detail);
                }
            }
            let now = Instant::now();
            let deadline = match &sign {
                Some((at, _)) => (*at + on_limit).max(sign_deadline),
                None => sign_deadline,
            };
            if now >= deadline {
                let (detail, data, out): (String, _, fn(String) -> Restart) = match &sign {
                    None => (
                        format!(
                            "no sign of a restart within {}: {} and the power never went off; {last}",
                            human(sign_limit),
                            match (&obs, &before.marker) {
                                (Ok(Observation { marker: Some(m), .. }), _) => format!("the BMC still shows {m}"),
                                (_, Some(m)) => format!("the BMC showed {m} before"),
                                _ => "no restart marker".to_string(),
                            }
                        ),
                        Some("no_sign".to_string()),
                        Restart::NoSign,
                    ),
                    Some((_, how)) => (
                        format!("{how}, but the power was not on within {}; {last}", human(on_limit)),
                        None,
                        Restart::NotOn,
                    ),
                };
                self.record(STEP, StepPhase::Failed, &detail, data).await?;
                break out(detail);
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        };
        self.kill(STEP, Boundary::Finished).await;
        Ok(out)
    }
}

/// How a restart on a BMC without restart evidence is reported once the
/// power is on (the start of the `wait_restart` detail).
pub(super) const NO_RESTART_EVIDENCE: &str = "the BMC offers no restart evidence (no restart marker, no power blip seen), so the restart itself is not confirmed";

pub(super) fn human(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
        .to_string()
}
