//! The IPMI v2.0 (RMCP+ over UDP) driver: one session per BMC, reused,
//! re-established when the BMC drops it, kept alive while idle, closed in
//! [`Bmc::close`].
//!
//! Layers: [`lan`] is the session layer (our own, see its docs for why not
//! `ipmi-rs`), [`commands`] the typed commands (implementations of
//! `ipmi-rs-core`'s `IpmiCommand`, beside the crate's own), [`message`] the
//! IPMI LAN message framing around the crate's `Message`, [`identity`] what
//! Get Device ID says, [`options`] the per-endpoint settings.
//!
//! Every command goes through `Inner::run_idempotent` (retransmitted, the
//! session re-established once) unless it is a non-idempotent chassis control.
//!
//! [`Bmc::observe`] reads the chassis status and, in the same session, the
//! system restart cause (Get System Restart Cause) for the action's record; a
//! BMC that lacks that command is remembered and not asked again.
//!
//! Retransmission: idempotent commands (status, power on/off, soft-off, boot
//! options) are re-sent up to `retries` times; if a reused session stops
//! answering, it is re-established once and the command re-sent. Hard reset
//! and power cycle are sent exactly once: when no answer comes, the driver
//! reads the chassis status and fails with a reason that says the command may
//! or may not have been executed, so the engine decides, not a blind re-send.

pub mod commands;
mod health;
pub mod identity;
pub mod lan;
pub mod message;
pub mod options;
pub mod sdr;
pub mod sel;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use ipmi_rs_core::app::GetDeviceId;
use ipmi_rs_core::connection::{CompletionErrorCode, Message};

use self::commands::{
    BootFlags, BootSelector, ChassisAction, ChassisControl, Command, GetBootFlags,
    GetChassisStatus, GetSystemRestartCause, SetBootFlags,
};
use self::lan::{LanError, Retry, Session};
use self::options::Options;
use super::inventory::{BmcEvent, Health};
use super::{
    Bmc, BmcError, BmcIdentity, BootDevice, Capabilities, Endpoint, Observation, Power, PowerOp,
    RestartMarker, Secret,
};

/// A BMC spoken to over IPMI v2.0 / RMCP+.
pub struct IpmiBmc {
    inner: Arc<Inner>,
}

struct Inner {
    server_id: String,
    /// `address:port`, for logs and messages.
    bmc: String,
    address: String,
    port: u16,
    username: String,
    password: Secret,
    opts: Options,
    session: Mutex<Option<Session>>,
    keepalive_started: AtomicBool,
    closed: AtomicBool,
    /// Whether the BMC answers Get System Restart Cause (`CAUSE_*`), learnt
    /// at the first [`Bmc::observe`] and kept for the driver's life.
    cause_support: AtomicU8,
    /// Get System Restart Cause requests left unanswered in a row.
    cause_silences: AtomicU8,
    /// The decoded SDR repository and SEL (see `health`).
    caches: health::Caches,
}

/// Get System Restart Cause not asked yet, or only left unanswered so far.
const CAUSE_UNTRIED: u8 = 0;
/// The BMC answered it.
const CAUSE_ANSWERS: u8 = 1;
/// The BMC lacks it (invalid command, an answer we cannot read, or silence):
/// not asked again.
const CAUSE_LACKING: u8 = 2;
/// Unanswered requests in a row after which the BMC is taken to lack it.
const CAUSE_MAX_SILENCES: u8 = 3;

impl Drop for Inner {
    /// A driver dropped without [`Bmc::close`] still frees its BMC session slot
    /// when a tokio runtime is there to send Close Session (best effort).
    fn drop(&mut self) {
        let Some(session) = self.session.get_mut().take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let once = Retry {
            attempts: 1,
            per_attempt: self.opts.timeout,
        };
        let bmc = self.bmc.clone();
        rt.spawn(async move {
            if let Err(e) = session.close(once).await {
                tracing::debug!(bmc = %bmc, error = %e, "closing a dropped driver's session");
            }
        });
    }
}

impl std::fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiBmc")
            .field("server_id", &self.inner.server_id)
            .field("bmc", &self.inner.bmc)
            .field("username", &self.inner.username)
            .field("cipher_suite", &self.inner.opts.cipher_suite.id)
            .finish_non_exhaustive()
    }
}

impl IpmiBmc {
    /// Validates the endpoint; no traffic until the first command.
    pub fn new(server_id: &str, endpoint: &Endpoint) -> Result<IpmiBmc, BmcError> {
        let opts = Options::parse(&endpoint.options)?;
        if endpoint.password.expose().len() > 20 {
            return Err(BmcError::Auth(
                "the password is longer than IPMI v2.0's 20 bytes".into(),
            ));
        }
        if endpoint.username.len() > 16 {
            return Err(BmcError::Auth(
                "the user name is longer than IPMI v2.0's 16 bytes".into(),
            ));
        }
        Ok(IpmiBmc {
            inner: Arc::new(Inner {
                server_id: server_id.to_string(),
                bmc: endpoint.key(),
                address: endpoint.address.clone(),
                port: endpoint.port,
                username: endpoint.username.clone(),
                password: endpoint.password.clone(),
                opts,
                session: Mutex::new(None),
                keepalive_started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                cause_support: AtomicU8::new(CAUSE_UNTRIED),
                cause_silences: AtomicU8::new(0),
                caches: health::Caches::default(),
            }),
        })
    }

    /// Reads the boot flags (System Boot Options parameter 5).
    pub async fn boot_flags(&self) -> Result<BootFlags, BmcError> {
        self.inner.run_idempotent(GetBootFlags).await
    }

    /// Runs one idempotent command — any [`Command`], ours or one of
    /// `ipmi-rs-core`'s — in the BMC's session, as every read of the driver
    /// runs (see `Inner::run_idempotent`). A command that says it is not
    /// idempotent is refused without traffic: those go through the driver's
    /// own methods, which never re-send them.
    pub async fn run<C: Command>(&self, cmd: C) -> Result<C::Output, BmcError> {
        if !cmd.idempotent() {
            return Err(BmcError::Unsupported(format!(
                "{}: {} is not idempotent and is sent only by the driver's own methods",
                self.inner.bmc,
                C::NAME
            )));
        }
        self.inner.run_idempotent(cmd).await
    }
}

impl Inner {
    fn retry(&self) -> Retry {
        Retry {
            attempts: self.opts.retries + 1,
            per_attempt: self.opts.timeout,
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, BmcError> {
        let mut addrs = tokio::net::lookup_host((self.address.as_str(), self.port))
            .await
            .map_err(|e| {
                BmcError::Unreachable(format!("{}: cannot resolve the address: {e}", self.bmc))
            })?;
        addrs.next().ok_or_else(|| {
            BmcError::Unreachable(format!("{}: the address resolves to nothing", self.bmc))
        })
    }

    /// Opens a session if there is none.
    async fn ensure<'a>(
        self: &Arc<Self>,
        slot: &'a mut Option<Session>,
    ) -> Result<&'a mut Session, BmcError> {
        if slot.is_none() {
            let peer = self.resolve().await?;
            let started = std::time::Instant::now();
            let s = Session::open(
                peer,
                &self.username,
                self.password.expose().as_bytes(),
                self.opts.cipher_suite,
                self.retry(),
            )
            .await
            .map_err(|e| self.map_err("session activation", e))?;
            tracing::info!(
                server_id = %self.server_id,
                bmc = %self.bmc,
                cipher_suite = self.opts.cipher_suite.id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "IPMI session opened"
            );
            *slot = Some(s);
            self.start_keepalive();
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// THE way to run a command (ours or the crate's) that may be sent more
    /// than once: it waits its turn behind the BMC's other commands (one
    /// session per BMC, one exchange at a time), opens the session if needed,
    /// is retransmitted by the session layer (`retries`, `timeout`), and if a
    /// reused session never answers, the session is re-established once and
    /// the command sent again. Errors name the BMC and the command.
    async fn run_idempotent<C: Command>(self: &Arc<Self>, cmd: C) -> Result<C::Output, BmcError> {
        let mut slot = self.session.lock().await;
        self.run_locked(&mut slot, cmd).await
    }

    /// [`Inner::run_idempotent`] with the session already locked.
    async fn run_locked<C: Command>(
        self: &Arc<Self>,
        slot: &mut Option<Session>,
        cmd: C,
    ) -> Result<C::Output, BmcError> {
        debug_assert!(cmd.idempotent());
        let msg: Message = cmd.into();
        let reused = slot.is_some();
        let s = self.ensure(slot).await?;
        match s.run_message::<C>(&msg, self.retry()).await {
            Ok(out) => Ok(out),
            Err(LanError::Timeout { .. }) if reused => {
                tracing::warn!(
                    server_id = %self.server_id,
                    bmc = %self.bmc,
                    command = C::NAME,
                    "no answer in the current session; re-establishing it"
                );
                self.discard(slot);
                let s = self.ensure(slot).await?;
                s.run_message::<C>(&msg, self.retry())
                    .await
                    .map_err(|e| self.fail(slot, C::NAME, e))
            }
            Err(e) => Err(self.fail(slot, C::NAME, e)),
        }
    }

    /// Forgets the session; a Close Session is sent in the background in case
    /// the BMC still holds it (only an answer was lost), so no slot leaks.
    fn discard(&self, slot: &mut Option<Session>) {
        let Some(old) = slot.take() else { return };
        let once = Retry {
            attempts: 1,
            per_attempt: self.opts.timeout,
        };
        let bmc = self.bmc.clone();
        tokio::spawn(async move {
            if let Err(e) = old.close(once).await {
                tracing::debug!(bmc = %bmc, error = %e, "closing a discarded session");
            }
        });
    }

    /// Maps an error and forgets the session when it can no longer be trusted.
    fn fail(&self, slot: &mut Option<Session>, what: &'static str, e: LanError) -> BmcError {
        if !matches!(e, LanError::Completion { .. }) {
            self.discard(slot);
        }
        self.map_err(what, e)
    }

    /// The restart cause in words, asked in the session the chassis status was
    /// just read in. Secondary to the power: any failure gives `None`, never an
    /// error, and a BMC that lacks the command is not asked again (ipmi_sim
    /// 2.0.33 answers "invalid command", 0xC1). One attempt only, so a BMC that
    /// drops unknown commands costs one timeout per poll, three times at most.
    async fn restart_cause(&self, slot: &mut Option<Session>) -> Option<String> {
        if self.cause_support.load(Ordering::SeqCst) == CAUSE_LACKING {
            return None;
        }
        let s = slot.as_mut()?;
        let once = Retry {
            attempts: 1,
            per_attempt: self.opts.timeout,
        };
        let lacking = |why: &str| {
            self.cause_support.store(CAUSE_LACKING, Ordering::SeqCst);
            tracing::info!(
                server_id = %self.server_id,
                bmc = %self.bmc,
                reason = why,
                "the BMC does not give its system restart cause; not asking again"
            );
        };
        match s.run(GetSystemRestartCause, once).await {
            Ok(rc) => {
                self.cause_silences.store(0, Ordering::SeqCst);
                if self.cause_support.swap(CAUSE_ANSWERS, Ordering::SeqCst) != CAUSE_ANSWERS {
                    tracing::debug!(
                        server_id = %self.server_id,
                        bmc = %self.bmc,
                        cause = %rc.cause.describe(),
                        channel = rc.channel,
                        "the BMC gives its system restart cause"
                    );
                }
                Some(rc.cause.describe())
            }
            Err(e)
                if matches!(
                    e.completion(),
                    Some(
                        CompletionErrorCode::InvalidCommand
                            | CompletionErrorCode::InvalidCommandForLun
                    )
                ) || matches!(e, LanError::Decode(_)) =>
            {
                lacking(&e.to_string());
                None
            }
            Err(LanError::Timeout { .. }) => {
                let n = self.cause_silences.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= CAUSE_MAX_SILENCES
                    && self.cause_support.load(Ordering::SeqCst) != CAUSE_ANSWERS
                {
                    lacking(&format!(
                        "{n} requests in a row without an answer (Get System Restart Cause)"
                    ));
                }
                None
            }
            Err(e) => {
                tracing::debug!(
                    server_id = %self.server_id,
                    bmc = %self.bmc,
                    error = %e,
                    "no restart cause this time"
                );
                None
            }
        }
    }

    /// Sends a chassis control. Non-idempotent ones go out exactly once.
    async fn chassis_control(self: &Arc<Self>, action: ChassisAction) -> Result<(), BmcError> {
        let cmd = ChassisControl(action);
        if cmd.idempotent() {
            return self.run_idempotent(cmd).await;
        }
        let mut slot = self.session.lock().await;
        // Prove the session alive first (re-establishing it if the BMC dropped
        // it), so that a silence below means the command itself was lost.
        if slot
            .as_ref()
            .is_none_or(|s| s.idle() > Duration::from_secs(1))
        {
            self.run_locked(&mut slot, GetChassisStatus).await?;
        }
        let budget = self.opts.budget();
        let s = self.ensure(&mut slot).await?;
        let once = Retry {
            attempts: 1,
            per_attempt: budget,
        };
        match s.run(cmd, once).await {
            Ok(()) => Ok(()),
            Err(LanError::Timeout { .. }) => {
                self.discard(&mut slot);
                let now = match self.run_locked(&mut slot, GetChassisStatus).await {
                    Ok(st) => format!(
                        "chassis power now reads {}",
                        if st.power_on { "on" } else { "off" }
                    ),
                    Err(e) => format!("the chassis status cannot be read either: {e}"),
                };
                tracing::warn!(
                    server_id = %self.server_id,
                    bmc = %self.bmc,
                    command = ?action,
                    "no answer to a non-idempotent chassis control; not re-sent"
                );
                Err(BmcError::Unreachable(format!(
                    "{}: no answer to chassis control {action:?} within {budget:?}; \
                     not re-sent because the BMC may have executed it; {now}",
                    self.bmc
                )))
            }
            Err(e) => Err(self.fail(&mut slot, ChassisControl::NAME, e)),
        }
    }

    /// One place that turns session-layer errors into `BmcError`s, naming the
    /// BMC and the step, never a credential.
    fn map_err(&self, what: &str, e: LanError) -> BmcError {
        let bmc = &self.bmc;
        match e {
            LanError::Timeout { waited, .. } => {
                tracing::debug!(bmc = %bmc, step = what, "timeout");
                BmcError::Timeout(waited)
            }
            LanError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                BmcError::Unreachable(format!(
                    "{bmc}: {what}: nothing answers on this UDP port (ICMP port unreachable)"
                ))
            }
            LanError::Io(io) => BmcError::Unreachable(format!("{bmc}: {what}: {io}")),
            LanError::BadPassword => BmcError::Auth(format!(
                "{bmc}: user {:?}: wrong password ({e})",
                self.username
            )),
            LanError::Rejected { status, .. } => match status {
                0x09 | 0x0A | 0x0C | 0x0D | 0x0E | 0x0F => {
                    BmcError::Auth(format!("{bmc}: user {:?}: {e}", self.username))
                }
                0x04..=0x07 | 0x10 | 0x11 => BmcError::Unsupported(format!(
                    "{bmc}: cipher suite {}: {e}",
                    self.opts.cipher_suite.id
                )),
                _ => BmcError::Refused(format!("{bmc}: {e}")),
            },
            LanError::Completion {
                command: "Set Session Privilege Level",
                ..
            } => BmcError::Auth(format!(
                "{bmc}: user {:?} may not act as administrator: {e}",
                self.username
            )),
            LanError::Completion { .. } => BmcError::Refused(format!("{bmc}: {e}")),
            LanError::Decode(_) | LanError::Invalid(_) => {
                BmcError::Protocol(format!("{bmc}: {what}: {e}"))
            }
        }
    }

    /// Keeps the session alive while idle, from a task that holds only a weak
    /// reference: it ends when the driver is dropped or closed.
    fn start_keepalive(self: &Arc<Self>) {
        let every = self.opts.keepalive;
        if every.is_zero() || self.keepalive_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(self);
        tokio::spawn(async move {
            let tick = (every / 2).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                // Never wait behind a real command: it keeps the session alive.
                let Ok(mut slot) = inner.session.try_lock() else {
                    continue;
                };
                let Some(s) = slot.as_mut() else { continue };
                if s.idle() < every {
                    continue;
                }
                let one = Retry {
                    attempts: 1,
                    per_attempt: inner.opts.timeout,
                };
                if let Err(e) = s.run(GetChassisStatus, one).await {
                    tracing::info!(
                        server_id = %inner.server_id,
                        bmc = %inner.bmc,
                        error = %e,
                        "keep-alive failed; the session will be re-established on next use"
                    );
                    inner.discard(&mut slot);
                }
            }
        });
    }
}

fn boot_selector(device: BootDevice) -> BootSelector {
    match device {
        BootDevice::Pxe => BootSelector::Pxe,
        BootDevice::Disk => BootSelector::Disk,
        BootDevice::Cd => BootSelector::Cd,
        BootDevice::Bios => BootSelector::Bios,
    }
}

#[async_trait]
impl Bmc for IpmiBmc {
    async fn capabilities(&self) -> Result<Capabilities, BmcError> {
        // Known from the protocol: chassis control and boot flags.
        Ok(Capabilities::ipmi_chassis())
    }

    async fn power_state(&self) -> Result<Power, BmcError> {
        let st = self.inner.run_idempotent(GetChassisStatus).await?;
        Ok(if st.power_on { Power::On } else { Power::Off })
    }

    /// Get Chassis Status, then (while the BMC answers it) Get System Restart
    /// Cause in the same session. `restart_evidence` stays false: the cause
    /// names why the host last restarted but reads the same after two
    /// restarts of the same cause, so it describes rather than proves.
    async fn observe(&self) -> Result<Observation, BmcError> {
        let mut slot = self.inner.session.lock().await;
        let st = self.inner.run_locked(&mut slot, GetChassisStatus).await?;
        let marker = self
            .inner
            .restart_cause(&mut slot)
            .await
            .map(|cause| RestartMarker {
                restart_cause: Some(cause),
                ..RestartMarker::default()
            });
        Ok(Observation {
            power: if st.power_on { Power::On } else { Power::Off },
            marker,
        })
    }

    async fn power(&self, op: PowerOp) -> Result<(), BmcError> {
        let action = match op {
            PowerOp::On => ChassisAction::PowerUp,
            PowerOp::ForceOff => ChassisAction::PowerDown,
            PowerOp::GracefulOff => ChassisAction::SoftShutdown,
            PowerOp::HardReset => ChassisAction::HardReset,
            PowerOp::PowerCycle => ChassisAction::PowerCycle,
            PowerOp::GracefulRestart => {
                return Err(BmcError::Unsupported(
                    "graceful restart over IPMI (chassis control has none; \
                     use graceful off then on)"
                        .into(),
                ))
            }
        };
        tracing::info!(
            server_id = %self.inner.server_id,
            bmc = %self.inner.bmc,
            op = %op,
            "IPMI chassis control"
        );
        self.inner.chassis_control(action).await
    }

    async fn set_boot_once(&self, device: BootDevice) -> Result<(), BmcError> {
        let flags = BootFlags {
            valid: true,
            persistent: false,
            efi: self.inner.opts.efi,
            device: boot_selector(device),
        };
        tracing::info!(
            server_id = %self.inner.server_id,
            bmc = %self.inner.bmc,
            device = %device,
            "IPMI boot override for the next boot"
        );
        self.inner.run_idempotent(SetBootFlags(flags)).await
    }

    /// Get Device ID (the crate's command), read as `identity::from_device_id`
    /// says; the system fields stay empty (IPMI has them only in FRU data).
    async fn identity(&self) -> Result<BmcIdentity, BmcError> {
        let id = self.inner.run_idempotent(GetDeviceId).await?;
        Ok(identity::from_device_id(&id))
    }

    /// The SDR repository (cached while its timestamps hold) and a Get
    /// Sensor Reading per sensor; see `health`.
    async fn health(&self) -> Result<Health, BmcError> {
        health::health(&self.inner).await
    }

    /// The SEL (read incrementally, see `health`), sensor names from the SDR.
    async fn events(&self, since: Option<i64>, limit: usize) -> Result<Vec<BmcEvent>, BmcError> {
        health::events(&self.inner, since, limit).await
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let mut slot = self.inner.session.lock().await;
        if let Some(s) = slot.take() {
            let id = s.bmc_session_id();
            match s.close(self.inner.retry()).await {
                Ok(()) => tracing::info!(
                    server_id = %self.inner.server_id,
                    bmc = %self.inner.bmc,
                    session_id = id,
                    "IPMI session closed"
                ),
                Err(e) => tracing::warn!(
                    server_id = %self.inner.server_id,
                    bmc = %self.inner.bmc,
                    error = %e,
                    "could not close the IPMI session; the BMC will time it out"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bmc::Protocol;

    fn endpoint(options: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            protocol: Protocol::Ipmi,
            address: "127.0.0.1".into(),
            port: 9,
            username: "admin".into(),
            password: Secret::new("hunter2"),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let b = IpmiBmc::new("n1", &endpoint(&[])).unwrap();
        let s = format!("{b:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("127.0.0.1:9"));
    }

    #[test]
    fn bad_options_are_refused_at_connect() {
        assert!(IpmiBmc::new("n1", &endpoint(&[("cipher_suite", "17")])).is_err());
    }

    #[test]
    fn errors_are_mapped_without_secrets() {
        let b = IpmiBmc::new("n1", &endpoint(&[])).unwrap();
        let e = b.inner.map_err("x", LanError::BadPassword);
        assert!(matches!(e, BmcError::Auth(_)));
        assert!(!e.to_string().contains("hunter2"));
        let e = b.inner.map_err(
            "x",
            LanError::Rejected {
                stage: "RAKP 2",
                status: 0x0D,
            },
        );
        assert!(matches!(e, BmcError::Auth(_)), "{e}");
        let e = b.inner.map_err(
            "x",
            LanError::Completion {
                command: "Chassis Control",
                code: 0xCC,
                meaning: "invalid data field in request",
            },
        );
        assert_eq!(
            e,
            BmcError::Refused(
                "127.0.0.1:9: Chassis Control: invalid data field in request \
                 (completion code 0xcc)"
                    .into()
            )
        );
        let e = b.inner.map_err(
            "x",
            LanError::Io(std::io::ErrorKind::ConnectionRefused.into()),
        );
        assert!(e.is_unavailable());
    }

    #[tokio::test]
    async fn run_refuses_a_command_that_is_not_idempotent_without_traffic() {
        let b = IpmiBmc::new("n1", &endpoint(&[])).unwrap();
        for action in [ChassisAction::HardReset, ChassisAction::PowerCycle] {
            let e = b.run(ChassisControl(action)).await.unwrap_err();
            assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
            assert!(e.to_string().contains("Chassis Control"), "{e}");
        }
        assert!(b.inner.session.lock().await.is_none(), "no session opened");
    }

    #[tokio::test]
    async fn graceful_restart_is_unsupported_without_traffic() {
        let b = IpmiBmc::new("n1", &endpoint(&[])).unwrap();
        let e = b.power(PowerOp::GracefulRestart).await.unwrap_err();
        assert!(matches!(e, BmcError::Unsupported(_)));
        let caps = b.capabilities().await.unwrap();
        assert!(!caps.virtual_media);
        assert!(!caps.supports(PowerOp::GracefulRestart));
    }
}
