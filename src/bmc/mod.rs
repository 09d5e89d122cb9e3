//! The BMC seam: what the engine may ask of a server's baseboard management
//! controller, whatever protocol it speaks.
//!
//! One trait ([`Bmc`]), one module per protocol, and an in-memory [`fake`] for
//! engine tests and demos. The engine never sees a protocol detail: it asks for a
//! [`PowerOp`] or a one-time [`BootDevice`] and gets a [`BmcError`] that says, in
//! words an operator understands, what went wrong.

pub mod fake;
pub mod inventory;
pub mod ipmi;
pub mod redfish;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use inventory::{
    BmcEvent, BmcIdentity, Health, SensorKind, SensorReading, SensorStatus, Thresholds,
};

/// Power as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    On,
    Off,
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Power::On => "on",
            Power::Off => "off",
        })
    }
}

/// A power command. Which ones a BMC offers is in [`Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerOp {
    /// Power up (IPMI chassis control 1, Redfish `On`).
    On,
    /// Ask the OS to shut down (IPMI soft-off via ACPI, Redfish `GracefulShutdown`).
    GracefulOff,
    /// Cut power now (IPMI chassis control 0, Redfish `ForceOff`).
    ForceOff,
    /// Reset without a power cut (IPMI chassis control 3, Redfish `ForceRestart`).
    /// Not idempotent.
    HardReset,
    /// Off then on (IPMI chassis control 2, Redfish `PowerCycle`). Not idempotent.
    PowerCycle,
    /// Ask the OS to restart (Redfish `GracefulRestart`; IPMI has none).
    GracefulRestart,
}

impl PowerOp {
    /// Every power command, in the order capabilities list them.
    pub const ALL: [PowerOp; 6] = [
        PowerOp::On,
        PowerOp::GracefulOff,
        PowerOp::ForceOff,
        PowerOp::HardReset,
        PowerOp::PowerCycle,
        PowerOp::GracefulRestart,
    ];

    /// The command named `s` (as `as_str` names it).
    pub fn parse(s: &str) -> Option<PowerOp> {
        PowerOp::ALL.into_iter().find(|op| op.as_str() == s)
    }

    /// Whether sending this twice can do something that sending it once did not.
    /// Such a command is never re-sent blindly after a crash or a lost reply.
    pub fn is_idempotent(self) -> bool {
        !matches!(
            self,
            PowerOp::HardReset | PowerOp::PowerCycle | PowerOp::GracefulRestart
        )
    }

    /// The name used in step events, logs and the fake's journal.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerOp::On => "power_on",
            PowerOp::GracefulOff => "graceful_off",
            PowerOp::ForceOff => "force_off",
            PowerOp::HardReset => "hard_reset",
            PowerOp::PowerCycle => "power_cycle",
            PowerOp::GracefulRestart => "graceful_restart",
        }
    }
}

impl fmt::Display for PowerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A one-time boot device (applies to the next boot only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cd,
    Bios,
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cd => "cd",
            BootDevice::Bios => "bios",
        })
    }
}

/// What a BMC can do, found out by asking it (Redfish allowable values) or known
/// from the protocol (IPMI chassis control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub power_ops: Vec<PowerOp>,
    pub boot_devices: Vec<BootDevice>,
    pub virtual_media: bool,
    /// The BMC shows a [`RestartMarker`] that changes at every restart of the
    /// host (Redfish `LastResetTime` or `BootProgress`), so a restart that
    /// keeps the power on (a warm `GracefulRestart`, a hard reset) can be
    /// confirmed. Without it, only an Off→On transition proves a restart.
    #[serde(default)]
    pub restart_evidence: bool,
}

impl Capabilities {
    /// What IPMI chassis control offers (no graceful restart, no virtual
    /// media): the IPMI driver's answer, and the fake's starting point.
    pub fn ipmi_chassis() -> Capabilities {
        Capabilities {
            power_ops: vec![
                PowerOp::On,
                PowerOp::GracefulOff,
                PowerOp::ForceOff,
                PowerOp::HardReset,
                PowerOp::PowerCycle,
            ],
            boot_devices: vec![
                BootDevice::Pxe,
                BootDevice::Disk,
                BootDevice::Cd,
                BootDevice::Bios,
            ],
            virtual_media: false,
            restart_evidence: false,
        }
    }

    pub fn supports(&self, op: PowerOp) -> bool {
        self.power_ops.contains(&op)
    }
}

/// What a BMC says about the host's last restart. Read before and after a
/// reset, a change is evidence that the host restarted; every field is what
/// the BMC reported, verbatim, for the action's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartMarker {
    /// Redfish `LastResetTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset_time: Option<String>,
    /// Redfish `BootProgress.LastState` ("OSRunning", "None", ...); a state
    /// "OEM" reads "OEM (<OemLastState>)" when the BMC names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_progress: Option<String>,
    /// Redfish `BootProgress.LastStateTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_progress_time: Option<String>,
    /// IPMI Get System Restart Cause, in words ("chassis control command",
    /// "watchdog expiration", ...; the IPMI v2.0 table 28-11 names).
    /// It names the cause of the last restart but does not change between two
    /// restarts of the same cause, so it describes rather than proves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_cause: Option<String>,
}

impl RestartMarker {
    /// Whether `self` (read later) shows a restart that `before` did not.
    ///
    /// Where the BMC gives `LastResetTime`, only that moving counts. Else a
    /// `BootProgress` that went back to an earlier stage of the boot, or that
    /// entered the same stage again (a newer `LastStateTime`): within one boot
    /// the stages only move forward, so progress alone — hardware init →
    /// OSBootStarted → OSRunning — is not a restart.
    pub fn shows_restart_since(&self, before: &RestartMarker) -> bool {
        if self.last_reset_time.is_some() && before.last_reset_time.is_some() {
            return self.last_reset_time != before.last_reset_time;
        }
        let (Some(now), Some(was)) = (&self.boot_progress, &before.boot_progress) else {
            return false;
        };
        match (boot_stage(now), boot_stage(was)) {
            (Some(n), Some(w)) if n < w => true,
            _ if now == was => {
                self.boot_progress_time.is_some()
                    && before.boot_progress_time.is_some()
                    && self.boot_progress_time != before.boot_progress_time
            }
            _ => false,
        }
    }

    /// Whether the restart time is given in whole seconds (no fraction), so
    /// two restarts within one second look alike.
    pub fn counts_whole_seconds(&self) -> bool {
        self.last_reset_time.as_deref().is_some_and(|t| {
            t.split_once('T')
                .is_some_and(|(_, time)| !time.contains('.'))
        })
    }

    /// Whether the BMC gave anything at all.
    pub fn is_empty(&self) -> bool {
        *self == RestartMarker::default()
    }
}

/// Where a `BootProgress.LastState` stands in one boot (DMTF's
/// `BootProgressTypes`, in boot order); `None` for OEM and unknown states.
fn boot_stage(state: &str) -> Option<u8> {
    const ORDER: [&str; 10] = [
        "None",
        "PrimaryProcessorInitializationStarted",
        "BusInitializationStarted",
        "MemoryInitializationStarted",
        "SecondaryProcessorInitializationStarted",
        "PCIResourceConfigStarted",
        "SystemHardwareInitializationComplete",
        "SetupEntered",
        "OSBootStarted",
        "OSRunning",
    ];
    ORDER.iter().position(|s| *s == state).map(|i| i as u8)
}

impl fmt::Display for RestartMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = &self.last_reset_time {
            parts.push(format!("LastResetTime {t}"));
        }
        if let Some(s) = &self.boot_progress {
            match &self.boot_progress_time {
                Some(t) => parts.push(format!("BootProgress {s} at {t}")),
                None => parts.push(format!("BootProgress {s}")),
            }
        }
        if let Some(c) = &self.restart_cause {
            parts.push(format!("restart cause: {c}"));
        }
        if parts.is_empty() {
            f.write_str("no restart marker")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One read of a BMC: the power and, where the BMC offers one, its restart
/// marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub power: Power,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<RestartMarker>,
}

/// What went wrong talking to a BMC. Messages never carry a credential.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BmcError {
    #[error("BMC did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the BMC: {0}")]
    Unreachable(String),
    #[error("the BMC refused the credentials: {0}")]
    Auth(String),
    #[error("the BMC refused the command: {0}")]
    Refused(String),
    #[error("the BMC does not support {0}")]
    Unsupported(String),
    /// The BMC works, but this server's settings for it cannot: several
    /// systems and no `system_id`, a `system_id` that names nothing usable.
    /// An operator's question, not the BMC's limit.
    #[error("the BMC configuration needs attention: {0}")]
    Config(String),
    #[error("the BMC answered something we cannot understand: {0}")]
    Protocol(String),
    /// The BMC accepted a command and did not say it was done within the
    /// time allowed (a Redfish task still running): it may or may not be
    /// carried out.
    #[error("the BMC accepted the command but did not finish it: {0}")]
    Unfinished(String),
}

impl BmcError {
    /// Errors that say the BMC is down or unreachable (gRPC `UNAVAILABLE`), as
    /// opposed to a BMC that answered and said no.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BmcError::Timeout(_) | BmcError::Unreachable(_))
    }

    /// Whether a command that failed so may still have been carried out:
    /// no answer, or accepted and never finished. The power read before it
    /// is then no longer to be trusted.
    pub fn leaves_doubt(&self) -> bool {
        self.is_unavailable() || matches!(self, BmcError::Unfinished(_))
    }

    /// A short machine-friendly kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BmcError::Timeout(_) => "timeout",
            BmcError::Unreachable(_) => "unreachable",
            BmcError::Auth(_) => "auth",
            BmcError::Refused(_) => "refused",
            BmcError::Unsupported(_) => "unsupported",
            BmcError::Config(_) => "config",
            BmcError::Protocol(_) => "protocol",
            BmcError::Unfinished(_) => "unfinished",
        }
    }
}

/// One server's BMC. Implementations must be safe to call from several tasks;
/// the engine serialises operations per BMC itself.
#[async_trait]
pub trait Bmc: Send + Sync + fmt::Debug {
    /// What this BMC offers. May talk to the BMC (discovery) and cache the answer.
    async fn capabilities(&self) -> Result<Capabilities, BmcError>;

    /// The power state now, read from the BMC.
    async fn power_state(&self) -> Result<Power, BmcError>;

    /// The power state and the restart marker, in as few requests as the
    /// protocol allows (Redfish: one GET of the system). The default has no
    /// marker.
    async fn observe(&self) -> Result<Observation, BmcError> {
        Ok(Observation {
            power: self.power_state().await?,
            marker: None,
        })
    }

    /// Send one power command. Returns once the BMC accepted it, not once the
    /// power changed: the engine confirms the change by polling `power_state`.
    async fn power(&self, op: PowerOp) -> Result<(), BmcError>;

    /// Boot from `device` on the next boot only.
    async fn set_boot_once(&self, device: BootDevice) -> Result<(), BmcError>;

    /// Insert an image as virtual media (a CD).
    async fn insert_media(&self, _image_url: &str) -> Result<(), BmcError> {
        Err(BmcError::Unsupported("virtual media".into()))
    }

    /// Eject whatever virtual media is inserted.
    async fn eject_media(&self) -> Result<(), BmcError> {
        Err(BmcError::Unsupported("virtual media".into()))
    }

    /// Who the BMC and its system are (IPMI Get Device ID; Redfish Manager
    /// and System). Read at enrolment and on request.
    async fn identity(&self) -> Result<BmcIdentity, BmcError> {
        Err(BmcError::Unsupported("identity".into()))
    }

    /// Every sensor now (IPMI SDR repository + Get Sensor Reading; Redfish
    /// Chassis Sensors, or Thermal/Power). A record that cannot be read is a
    /// line in `Health::problems`, not an error for the whole call.
    async fn health(&self) -> Result<Health, BmcError> {
        Err(BmcError::Unsupported("sensors".into()))
    }

    /// The BMC's event log entries logged at or after `since` (Unix
    /// seconds; `None` = all), oldest first, entries without a valid time
    /// included; at most `limit` of the newest. IPMI SEL; Redfish LogServices.
    async fn events(&self, _since: Option<i64>, _limit: usize) -> Result<Vec<BmcEvent>, BmcError> {
        Err(BmcError::Unsupported("the event log".into()))
    }

    /// Release BMC-side resources (sessions). Called once on shutdown or removal.
    async fn close(&self) {}
}

pub type SharedBmc = Arc<dyn Bmc>;

/// The protocol a BMC speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Ipmi,
    Redfish,
}

impl Protocol {
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Ipmi => 623,
            Protocol::Redfish => 443,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish => "redfish",
        }
    }
}

/// A secret that never prints: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it to a BMC.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything a driver needs to reach one BMC.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub address: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    /// Protocol-specific settings (a Redfish system id, a CA bundle, an IPMI
    /// cipher suite...), passed through to the driver, which validates them.
    pub options: BTreeMap<String, String>,
}

impl Endpoint {
    /// `address:port`, the key for "one operation at a time per BMC".
    pub fn key(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

/// Builds a driver for an endpoint. The daemon has one, chosen from the config:
/// real protocols, or the fake for tests and demos.
pub trait BmcFactory: Send + Sync {
    fn connect(&self, server_id: &str, endpoint: &Endpoint) -> Result<SharedBmc, BmcError>;
}

/// The factory for real BMCs: one driver module per protocol.
#[derive(Debug, Default)]
pub struct RealBmcFactory;

impl BmcFactory for RealBmcFactory {
    fn connect(&self, server_id: &str, endpoint: &Endpoint) -> Result<SharedBmc, BmcError> {
        match endpoint.protocol {
            Protocol::Ipmi => Ok(Arc::new(ipmi::IpmiBmc::new(server_id, endpoint)?)),
            Protocol::Redfish => Ok(Arc::new(redfish::RedfishBmc::connect(server_id, endpoint)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(state: &str, at: &str) -> RestartMarker {
        RestartMarker {
            boot_progress: Some(state.into()),
            boot_progress_time: Some(at.into()),
            ..RestartMarker::default()
        }
    }

    #[test]
    fn last_reset_time_alone_decides_where_the_bmc_gives_it() {
        let before = RestartMarker {
            last_reset_time: Some("t1".into()),
            ..progress("SystemHardwareInitializationComplete", "a")
        };
        // One boot progressing, same LastResetTime: no restart (seen on the
        // firmware-like simulator: a SOFT reboot lost before the OS was up).
        let later = RestartMarker {
            last_reset_time: Some("t1".into()),
            ..progress("OSRunning", "b")
        };
        assert!(!later.shows_restart_since(&before));
        let restarted = RestartMarker {
            last_reset_time: Some("t2".into()),
            ..progress("OSRunning", "c")
        };
        assert!(restarted.shows_restart_since(&before));
    }

    #[test]
    fn a_restart_time_without_a_fraction_counts_whole_seconds() {
        let at = |t: &str| RestartMarker {
            last_reset_time: Some(t.into()),
            ..RestartMarker::default()
        };
        assert!(at("2026-11-26T01:02:03Z").counts_whole_seconds());
        assert!(at("2026-11-26T01:02:03+00:00").counts_whole_seconds());
        assert!(!at("2026-11-26T01:02:03.250Z").counts_whole_seconds());
        // Not a time (the fake's boot counter): nothing to wait for.
        assert!(!at("boot-3").counts_whole_seconds());
        assert!(!RestartMarker::default().counts_whole_seconds());
    }

    #[test]
    fn boot_progress_counts_when_it_goes_back_or_enters_a_stage_again() {
        let running = progress("OSRunning", "10:00");
        assert!(!progress("OSRunning", "10:00").shows_restart_since(&running));
        assert!(progress("OSRunning", "10:05").shows_restart_since(&running));
        assert!(progress("PrimaryProcessorInitializationStarted", "10:01")
            .shows_restart_since(&running));
        let booting = progress("SystemHardwareInitializationComplete", "09:59");
        assert!(!progress("OSBootStarted", "10:00").shows_restart_since(&booting));
        assert!(!progress("OSRunning", "10:01").shows_restart_since(&booting));
        // OEM stages have no place in the order: only re-entry counts.
        let oem = progress("OEM (PostCode 0x42)", "1");
        assert!(!progress("OEM (PostCode 0x43)", "2").shows_restart_since(&oem));
        assert!(progress("OEM (PostCode 0x42)", "3").shows_restart_since(&oem));
        assert!(!RestartMarker::default().shows_restart_since(&running));
    }
}
