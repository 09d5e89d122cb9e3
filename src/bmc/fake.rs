//! An in-memory BMC for engine tests and demos. Never a stand-in for a real
//! protocol: it exists so the engine can be tested fast and deterministically.
//!
//! Fault knobs: latency per command, a hang (never answers), a failure (answers
//! with a chosen error), an OS that ignores ACPI (graceful off does nothing),
//! power changes that show only after a delay (like real firmware), and the
//! firmware features a SOFT reboot depends on: a warm `GracefulRestart` (the
//! power stays on) and a restart marker (like Redfish `LastResetTime`).
//! The newest calls are kept for assertions ([`CALLS_KEPT`] per BMC, so a
//! daemon that runs on fakes for days does not grow), power commands are
//! counted exactly; with a journal file, every command is
//! also appended *before* it takes effect, so a test can count the
//! commands a BMC received across a daemon crash, and the fake's power state
//! survives a restart of the daemon the way a real machine's does.
//!
//! Beyond power, a fake tells who it is (an identity), what its sensors read
//! (made up from its power unless set), and keeps an event log like a SEL:
//! [`FakeBmc::press_power_button`] turns the power off behind the agent's
//! back and logs what a real BMC logs then. Each can be made unsupported.
//!
//! A BMC does one thing at a time: the fake counts the calls in progress, and
//! a call that begins while another is still in progress is an *overlap*,
//! counted ([`FakeBmc::overlaps`]) and written to the journal as a line
//! `SERVER_ID overlap:CALL` (see [`OVERLAP`]) that replay ignores.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    Bmc, BmcError, BmcEvent, BmcFactory, BmcIdentity, BootDevice, Capabilities, Endpoint, Health,
    Observation, Power, PowerOp, RestartMarker, SensorKind, SensorReading, SensorStatus, SharedBmc,
    Thresholds,
};

/// Calls each fake keeps for [`FakeBmc::calls`], the newest; older ones are
/// dropped (power commands stay counted by [`FakeBmc::count`]). Enough for
/// any one test's scenario; small enough that a fleet of fakes in a
/// long-running daemon holds a fixed amount (the journal is the record that
/// lasts).
pub const CALLS_KEPT: usize = 256;

/// How fake BMCs behave (the `[fake_bmc]` config table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeSettings {
    /// Must be `true` to take effect: a reminder in the file that this is not a
    /// production setting.
    pub enabled: bool,
    /// Time each command takes.
    #[serde(default = "default_latency", with = "humantime_serde")]
    pub latency: Duration,
    /// Power of a fake that has no journal history.
    #[serde(default = "default_power")]
    pub initial_power: Power,
    /// Graceful off does nothing (an OS that ignores ACPI, or none at all).
    #[serde(default)]
    pub ignore_acpi: bool,
    /// Offer a graceful restart, done warm as most firmware does it: the
    /// power stays on while the OS restarts.
    #[serde(default)]
    pub graceful_restart: bool,
    /// Show a restart marker that moves at every boot (like `LastResetTime`).
    #[serde(default)]
    pub restart_evidence: bool,
    /// Power changes show this long after the command was accepted.
    #[serde(default, with = "humantime_serde")]
    pub effect_delay: Duration,
    /// Servers whose BMC never answers.
    #[serde(default)]
    pub hang: Vec<String>,
    /// Servers whose BMC answers every command with an error.
    #[serde(default)]
    pub fail: Vec<String>,
    /// Servers whose BMC offers no identity, no sensors and no event log
    /// (each read answers "not supported").
    #[serde(default)]
    pub no_inventory: Vec<String>,
    /// Servers whose power button is pressed once, `press_power_button_after`
    /// after their fake is made: power goes off and the event log says why.
    #[serde(default)]
    pub press_power_button: Vec<String>,
    #[serde(default = "default_press_after", with = "humantime_serde")]
    pub press_power_button_after: Duration,
    /// Append every command here before it takes effect; replayed at start.
    /// Default (in the daemon): `fake-bmc.journal` in the state directory.
    /// A missing directory is created.
    #[serde(default)]
    pub journal: Option<PathBuf>,
}

fn default_latency() -> Duration {
    Duration::from_millis(20)
}
fn default_power() -> Power {
    Power::On
}
fn default_press_after() -> Duration {
    Duration::from_secs(2)
}

impl FakeSettings {
    /// Where the journal goes: the configured path, else
    /// `fake-bmc.journal` in `state_dir`.
    pub fn journal_path(&self, state_dir: &Path) -> PathBuf {
        self.journal
            .clone()
            .unwrap_or_else(|| state_dir.join("fake-bmc.journal"))
    }
}

impl Default for FakeSettings {
    fn default() -> Self {
        FakeSettings {
            enabled: true,
            latency: default_latency(),
            initial_power: default_power(),
            ignore_acpi: false,
            graceful_restart: false,
            restart_evidence: false,
            effect_delay: Duration::ZERO,
            hang: Vec::new(),
            fail: Vec::new(),
            no_inventory: Vec::new(),
            press_power_button: Vec::new(),
            press_power_button_after: default_press_after(),
            journal: None,
        }
    }
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Capabilities,
    PowerState,
    Power(PowerOp),
    SetBootOnce(BootDevice),
    InsertMedia(String),
    EjectMedia,
    Identity,
    Health,
    Events { since: Option<i64>, limit: usize },
    Close,
}

#[derive(Debug)]
struct FakeState {
    power: Power,
    /// Boots so far: the restart marker.
    boots: u64,
    graceful_restart: bool,
    restart_evidence: bool,
    effect_delay: Duration,
    /// Power commands offered, when not the default set.
    offered: Option<Vec<PowerOp>>,
    boot_once: Option<BootDevice>,
    media: Option<String>,
    hang: bool,
    fail: Option<BmcError>,
    ignore_acpi: bool,
    latency: Duration,
    /// The newest [`CALLS_KEPT`] calls.
    calls: VecDeque<FakeCall>,
    /// Power commands received, by command, since the fake was made.
    power_counts: Vec<(PowerOp, usize)>,
    /// Calls in progress now.
    busy: u32,
    /// Calls that began while another was in progress.
    overlaps: u64,
    /// What `identity()` answers; `None`: not supported.
    identity: Option<BmcIdentity>,
    /// Whether the BMC offers sensors.
    sensors: bool,
    /// Sensors as set by a test; `None`: made up from the power.
    health: Option<Health>,
    /// Whether the BMC offers an event log.
    log_offered: bool,
    /// The event log, oldest first.
    log: Vec<BmcEvent>,
    /// Record ids given so far.
    log_ids: u32,
    /// Event-log reads never answer (the rest does).
    log_hang: bool,
}

/// One fake BMC.
#[derive(Debug)]
pub struct FakeBmc {
    server_id: String,
    state: Arc<Mutex<FakeState>>,
    journal: Option<Arc<Journal>>,
}

impl FakeState {
    fn record(&mut self, call: FakeCall) {
        if let FakeCall::Power(op) = call {
            match self.power_counts.iter_mut().find(|(o, _)| *o == op) {
                Some((_, n)) => *n += 1,
                None => self.power_counts.push((op, 1)),
            }
        }
        if self.calls.len() == CALLS_KEPT {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }
}

impl FakeBmc {
    pub fn new(server_id: &str, settings: &FakeSettings, power: Power) -> Self {
        Self::with_boots(server_id, settings, power, 0)
    }

    fn with_boots(server_id: &str, settings: &FakeSettings, power: Power, boots: u64) -> Self {
        FakeBmc {
            server_id: server_id.to_string(),
            state: Arc::new(Mutex::new(FakeState {
                power,
                boots,
                graceful_restart: settings.graceful_restart,
                restart_evidence: settings.restart_evidence,
                effect_delay: settings.effect_delay,
                offered: None,
                boot_once: None,
                media: None,
                hang: settings.hang.iter().any(|s| s == server_id),
                fail: settings
                    .fail
                    .iter()
                    .any(|s| s == server_id)
                    .then(|| BmcError::Refused("simulated failure (fake BMC)".into())),
                ignore_acpi: settings.ignore_acpi,
                latency: settings.latency,
                calls: VecDeque::new(),
                power_counts: Vec::new(),
                busy: 0,
                overlaps: 0,
                identity: (!settings.no_inventory.iter().any(|s| s == server_id))
                    .then(|| default_identity(server_id)),
                sensors: !settings.no_inventory.iter().any(|s| s == server_id),
                health: None,
                log_offered: !settings.no_inventory.iter().any(|s| s == server_id),
                log: Vec::new(),
                log_ids: 0,
                log_hang: false,
            })),
            journal: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls received, in order: the newest [`CALLS_KEPT`].
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.iter().cloned().collect()
    }
    /// How many times `op` was sent (all of them, however many calls since).
    pub fn count(&self, op: PowerOp) -> usize {
        self.lock()
            .power_counts
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |(_, n)| *n)
    }
    /// The power commands among the calls kept, in order.
    pub fn power_ops(&self) -> Vec<PowerOp> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::Power(op) => Some(*op),
                _ => None,
            })
            .collect()
    }
    pub fn boot_once(&self) -> Option<BootDevice> {
        self.lock().boot_once
    }
    pub fn media(&self) -> Option<String> {
        self.lock().media.clone()
    }
    /// Someone pressed the power button: change power behind the agent's back.
    pub fn set_power(&self, power: Power) {
        self.lock().power = power;
    }
    pub fn power_now(&self) -> Power {
        self.lock().power
    }
    pub fn set_hang(&self, hang: bool) {
        self.lock().hang = hang;
    }
    pub fn set_fail(&self, fail: Option<BmcError>) {
        self.lock().fail = fail;
    }
    pub fn set_ignore_acpi(&self, ignore: bool) {
        self.lock().ignore_acpi = ignore;
    }
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }
    pub fn set_graceful_restart(&self, offered: bool) {
        self.lock().graceful_restart = offered;
    }
    pub fn set_restart_evidence(&self, shown: bool) {
        self.lock().restart_evidence = shown;
    }
    /// Offer exactly these power commands (others are refused as unsupported).
    pub fn set_offered(&self, ops: Option<Vec<PowerOp>>) {
        self.lock().offered = ops;
    }
    pub fn set_effect_delay(&self, delay: Duration) {
        self.lock().effect_delay = delay;
    }
    /// How many times the machine booted (power on from off, reset, cycle,
    /// warm restart) since the fake was made or its journal began.
    pub fn boots(&self) -> u64 {
        self.lock().boots
    }

    /// Set the identity; `None`: the BMC offers none.
    pub fn set_identity(&self, identity: Option<BmcIdentity>) {
        self.lock().identity = identity;
    }
    /// Set what the sensors read (else made up from the power).
    pub fn set_health(&self, health: Health) {
        let mut st = self.lock();
        st.health = Some(health);
        st.sensors = true;
    }
    /// Whether the BMC offers sensors at all.
    pub fn set_sensors_offered(&self, offered: bool) {
        self.lock().sensors = offered;
    }
    /// Whether the BMC offers an event log at all.
    pub fn set_event_log_offered(&self, offered: bool) {
        self.lock().log_offered = offered;
    }
    /// Event-log reads never answer (every other call still does).
    pub fn set_event_log_hang(&self, hang: bool) {
        self.lock().log_hang = hang;
    }
    /// Appends an entry to the event log; its `id` is replaced by the next
    /// record id ("0x0001", ...), which is returned.
    pub fn log_event(&self, mut event: BmcEvent) -> String {
        let mut st = self.lock();
        st.log_ids += 1;
        event.id = format!("0x{:04x}", st.log_ids);
        st.log.push(event);
        format!("0x{:04x}", st.log_ids)
    }
    /// The event log, oldest first.
    pub fn event_log(&self) -> Vec<BmcEvent> {
        self.lock().log.clone()
    }
    /// Someone pressed the power button: the power goes off behind the
    /// agent's back, and the BMC logs it the way a SEL does (the button
    /// press, then the power unit's power down), stamped now.
    pub fn press_power_button(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.lock().power = Power::Off;
        for (sensor_type, sensor, event) in [
            ("Button / Switch", "Power Button", "Power Button pressed"),
            ("Power Unit", "Power Unit", "Power Off / Power Down"),
        ] {
            self.log_event(BmcEvent {
                id: String::new(),
                at: Some(now),
                sensor_type: sensor_type.into(),
                sensor: sensor.into(),
                event: event.into(),
                direction: "asserted".into(),
                severity: "ok".into(),
                message: format!("{sensor_type} {sensor}: {event} (asserted)"),
                raw: String::new(),
            });
        }
    }

    /// Calls that began while another call to this BMC was in progress.
    pub fn overlaps(&self) -> u64 {
        self.lock().overlaps
    }

    /// Records the call, then waits, hangs or fails as configured. The call
    /// is in progress until the returned guard is dropped (at the end of the
    /// trait method, or when the caller gives up on it).
    async fn enter(&self, call: FakeCall) -> Result<InProgress<'_>, BmcError> {
        let (hang, fail, latency, overlap) = {
            let mut st = self.lock();
            st.record(call.clone());
            st.busy += 1;
            let overlap = st.busy > 1;
            if overlap {
                st.overlaps += 1;
            }
            (st.hang, st.fail.clone(), st.latency, overlap)
        };
        let busy = InProgress(self);
        if overlap {
            tracing::error!(server_id = %self.server_id, call = ?call, "fake BMC: a call began while another was in progress");
            if let Some(j) = &self.journal {
                j.append(&self.server_id, &format!("{OVERLAP}:{call:?}"))
                    .map_err(|e| BmcError::Protocol(format!("fake journal: {e}")))?;
            }
        }
        if hang {
            std::future::pending::<()>().await;
        }
        if let Some(err) = fail {
            tokio::time::sleep(latency).await;
            return Err(err);
        }
        if let (Some(j), FakeCall::Power(op)) = (&self.journal, &call) {
            j.append(&self.server_id, op.as_str())
                .map_err(|e| BmcError::Protocol(format!("fake journal: {e}")))?;
        }
        tokio::time::sleep(latency).await;
        Ok(busy)
    }
}

/// What a fake says it is, unless told otherwise.
fn default_identity(server_id: &str) -> BmcIdentity {
    BmcIdentity {
        bmc_manufacturer: Some("rack-agent".into()),
        bmc_model: Some("fake BMC".into()),
        firmware_version: Some("1.0.0".into()),
        ipmi_version: Some("2.0".into()),
        system_manufacturer: Some("Fake Systems".into()),
        system_model: Some("FS-1".into()),
        serial_number: Some(format!("FAKE-{server_id}")),
        bios_version: Some("1.0".into()),
    }
}

/// Sensors made up from the power: a server that is on draws 180 W and
/// spins its fan; one that is off draws standby power.
fn made_up_health(power: Power) -> Health {
    let on = power == Power::On;
    let sensor =
        |name: &str, kind, value, unit: &str, context: Option<&str>, t: Thresholds| SensorReading {
            name: name.into(),
            kind,
            value: Some(value),
            unit: unit.into(),
            status: SensorStatus::Ok,
            thresholds: t,
            context: context.map(Into::into),
        };
    let upper = |w, c| Thresholds {
        upper_warning: Some(w),
        upper_critical: Some(c),
        ..Thresholds::default()
    };
    Health {
        sensors: vec![
            sensor(
                "Inlet Temp",
                SensorKind::Temperature,
                23.0,
                "degrees C",
                Some("Intake"),
                upper(40.0, 45.0),
            ),
            sensor(
                "CPU Temp",
                SensorKind::Temperature,
                if on { 48.0 } else { 24.0 },
                "degrees C",
                Some("CPU"),
                upper(85.0, 95.0),
            ),
            sensor(
                "Fan1",
                SensorKind::Fan,
                if on { 5400.0 } else { 0.0 },
                "RPM",
                None,
                Thresholds::default(),
            ),
            sensor(
                "Pwr Consumption",
                SensorKind::Power,
                if on { 180.0 } else { 8.0 },
                "Watts",
                Some("PowerSupply"),
                Thresholds::default(),
            ),
        ],
        problems: Vec::new(),
    }
}

/// The journal's word for two calls at once: `SERVER_ID overlap:CALL`.
pub const OVERLAP: &str = "overlap";

/// A call in progress on a fake; ends when dropped.
struct InProgress<'a>(&'a FakeBmc);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.lock().busy -= 1;
    }
}

/// The effect of a power command on a fake machine: its power after, and
/// whether it booted.
fn apply(power: Power, op: PowerOp, ignore_acpi: bool) -> (Power, bool) {
    match op {
        PowerOp::On => (Power::On, power == Power::Off),
        PowerOp::HardReset | PowerOp::PowerCycle => (Power::On, true),
        PowerOp::ForceOff => (Power::Off, false),
        PowerOp::GracefulOff if !ignore_acpi => (Power::Off, false),
        // A warm restart: the OS restarts, the power stays on.
        PowerOp::GracefulRestart if !ignore_acpi && power == Power::On => (Power::On, true),
        PowerOp::GracefulOff | PowerOp::GracefulRestart => (power, false),
    }
}

impl FakeState {
    fn apply(&mut self, op: PowerOp) {
        let (power, booted) = apply(self.power, op, self.ignore_acpi);
        self.power = power;
        if booted {
            self.boots += 1;
        }
        if matches!(op, PowerOp::HardReset | PowerOp::PowerCycle | PowerOp::On) {
            // The one-time boot device is consumed by the boot that follows.
            self.boot_once = None;
        }
    }
}

#[async_trait]
impl Bmc for FakeBmc {
    async fn capabilities(&self) -> Result<Capabilities, BmcError> {
        let _busy = self.enter(FakeCall::Capabilities).await?;
        // An IPMI-like BMC that also offers virtual media, and what its knobs add.
        let st = self.lock();
        let mut caps = Capabilities {
            virtual_media: true,
            restart_evidence: st.restart_evidence,
            ..Capabilities::ipmi_chassis()
        };
        if st.graceful_restart {
            caps.power_ops.push(PowerOp::GracefulRestart);
        }
        if let Some(ops) = &st.offered {
            caps.power_ops = ops.clone();
        }
        Ok(caps)
    }

    async fn observe(&self) -> Result<Observation, BmcError> {
        let _busy = self.enter(FakeCall::PowerState).await?;
        let st = self.lock();
        Ok(Observation {
            power: st.power,
            marker: st.restart_evidence.then(|| RestartMarker {
                last_reset_time: Some(format!("boot-{}", st.boots)),
                ..RestartMarker::default()
            }),
        })
    }

    async fn power_state(&self) -> Result<Power, BmcError> {
        let _busy = self.enter(FakeCall::PowerState).await?;
        let power = self.lock().power;
        Ok(power)
    }

    async fn power(&self, op: PowerOp) -> Result<(), BmcError> {
        let _busy = self.enter(FakeCall::Power(op)).await?;
        let offered = {
            let st = self.lock();
            match &st.offered {
                Some(ops) => ops.contains(&op),
                None => op != PowerOp::GracefulRestart || st.graceful_restart,
            }
        };
        if !offered {
            return Err(BmcError::Unsupported(format!("{op} (fake BMC)")));
        }
        let delay = self.lock().effect_delay;
        if delay.is_zero() {
            self.lock().apply(op);
        } else {
            let state = self.state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                state.lock().unwrap_or_else(|e| e.into_inner()).apply(op);
            });
        }
        Ok(())
    }

    async fn set_boot_once(&self, device: BootDevice) -> Result<(), BmcError> {
        let _busy = self.enter(FakeCall::SetBootOnce(device)).await?;
        self.lock().boot_once = Some(device);
        Ok(())
    }

    async fn insert_media(&self, image_url: &str) -> Result<(), BmcError> {
        let _busy = self
            .enter(FakeCall::InsertMedia(image_url.to_string()))
            .await?;
        self.lock().media = Some(image_url.to_string());
        Ok(())
    }

    async fn eject_media(&self) -> Result<(), BmcError> {
        let _busy = self.enter(FakeCall::EjectMedia).await?;
        self.lock().media = None;
        Ok(())
    }

    async fn identity(&self) -> Result<BmcIdentity, BmcError> {
        let _busy = self.enter(FakeCall::Identity).await?;
        // Bound first: a guard in the tail expression would outlive `_busy`,
        // whose drop takes the same lock.
        let identity = self.lock().identity.clone();
        identity.ok_or_else(|| BmcError::Unsupported("identity (fake BMC)".into()))
    }

    async fn health(&self) -> Result<Health, BmcError> {
        let _busy = self.enter(FakeCall::Health).await?;
        let st = self.lock();
        if !st.sensors {
            return Err(BmcError::Unsupported("sensors (fake BMC)".into()));
        }
        Ok(st
            .health
            .clone()
            .unwrap_or_else(|| made_up_health(st.power)))
    }

    async fn events(&self, since: Option<i64>, limit: usize) -> Result<Vec<BmcEvent>, BmcError> {
        let _busy = self.enter(FakeCall::Events { since, limit }).await?;
        let hang = self.lock().log_hang;
        if hang {
            std::future::pending::<()>().await;
        }
        let st = self.lock();
        if !st.log_offered {
            return Err(BmcError::Unsupported("the event log (fake BMC)".into()));
        }
        let found: Vec<&BmcEvent> = st
            .log
            .iter()
            .filter(|e| match (since, e.at) {
                (Some(since), Some(at)) => at >= since,
                _ => true,
            })
            .collect();
        let skip = found.len().saturating_sub(limit);
        Ok(found.into_iter().skip(skip).cloned().collect())
    }

    async fn close(&self) {
        self.lock().record(FakeCall::Close);
    }
}

/// Append-only record of power commands, one line each: `SERVER_ID OP`
/// (and of overlapping calls: `SERVER_ID overlap:CALL`).
#[derive(Debug)]
struct Journal {
    file: Mutex<File>,
}

impl Journal {
    fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal {
            file: Mutex::new(file),
        })
    }
    /// One line per command, handed to the kernel before the command takes
    /// effect. Not fsynced: what the journal must survive is the daemon
    /// being killed (the page cache keeps it), not the host losing power —
    /// and an fsync here would block an async worker for every command.
    fn append(&self, server_id: &str, what: &str) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write(2) per line: `File` is unbuffered.
        f.write_all(format!("{server_id} {what}\n").as_bytes())
    }
}

/// Reads a journal into `(server_id, op)` pairs, in order. Used at start to
/// restore the fakes' power, and by tests to count commands.
pub fn read_journal(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if let Some((server, op)) = line.split_once(' ') {
            out.push((server.to_string(), op.to_string()));
        }
    }
    Ok(out)
}

/// Hands out one fake per server and keeps them, so a test can reach the fake
/// behind any server.
pub struct FakeBmcFactory {
    settings: FakeSettings,
    journal: Option<Arc<Journal>>,
    /// Power and boot count per server, replayed from the journal.
    restored: HashMap<String, (Power, u64)>,
    fakes: Mutex<HashMap<String, Arc<FakeBmc>>>,
}

impl FakeBmcFactory {
    pub fn new(settings: FakeSettings) -> std::io::Result<Self> {
        let mut restored = HashMap::new();
        let journal = match &settings.journal {
            Some(path) => {
                for (server, op) in read_journal(path)? {
                    if let Some(op) = PowerOp::parse(&op) {
                        let (p, boots) = restored
                            .get(&server)
                            .copied()
                            .unwrap_or((settings.initial_power, 0));
                        let (p, booted) = apply(p, op, settings.ignore_acpi);
                        restored.insert(server, (p, boots + u64::from(booted)));
                    }
                }
                Some(Arc::new(Journal::open(path)?))
            }
            None => None,
        };
        Ok(FakeBmcFactory {
            settings,
            journal,
            restored,
            fakes: Mutex::new(HashMap::new()),
        })
    }

    /// The fake that `server_id` will get (or has), made now if need be, so a
    /// test can set it up before the engine connects.
    pub fn fake_for(&self, server_id: &str) -> Arc<FakeBmc> {
        let endpoint = Endpoint {
            protocol: super::Protocol::Ipmi,
            address: "fake".into(),
            port: 0,
            username: "fake".into(),
            password: super::Secret::new("fake"),
            options: Default::default(),
        };
        // Connecting to a fake cannot fail.
        let _ = self.connect(server_id, &endpoint);
        self.get(server_id).expect("just made")
    }

    /// The fake behind `server_id`, once the engine has connected to it.
    pub fn get(&self, server_id: &str) -> Option<Arc<FakeBmc>> {
        self.fakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server_id)
            .cloned()
    }
}

impl BmcFactory for FakeBmcFactory {
    fn connect(&self, server_id: &str, _endpoint: &Endpoint) -> Result<SharedBmc, BmcError> {
        let mut fakes = self.fakes.lock().unwrap_or_else(|e| e.into_inner());
        let fake = fakes
            .entry(server_id.to_string())
            .or_insert_with(|| {
                let (power, boots) = self
                    .restored
                    .get(server_id)
                    .copied()
                    .unwrap_or((self.settings.initial_power, 0));
                let mut fake = FakeBmc::with_boots(server_id, &self.settings, power, boots);
                fake.journal = self.journal.clone();
                let fake = Arc::new(fake);
                if self
                    .settings
                    .press_power_button
                    .iter()
                    .any(|s| s == server_id)
                {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let (fake, after) = (fake.clone(), self.settings.press_power_button_after);
                        rt.spawn(async move {
                            tokio::time::sleep(after).await;
                            fake.press_power_button();
                        });
                    }
                }
                fake
            })
            .clone();
        Ok(fake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn power_commands_change_power_and_are_recorded() {
        let fake = FakeBmc::new("s1", &FakeSettings::default(), Power::Off);
        fake.power(PowerOp::On).await.unwrap();
        assert_eq!(fake.power_state().await.unwrap(), Power::On);
        fake.power(PowerOp::GracefulOff).await.unwrap();
        assert_eq!(fake.power_state().await.unwrap(), Power::Off);
        assert_eq!(fake.power_ops(), vec![PowerOp::On, PowerOp::GracefulOff]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_calls_are_kept_and_power_commands_all_counted() {
        let fake = FakeBmc::new("s1", &FakeSettings::default(), Power::Off);
        for _ in 0..CALLS_KEPT {
            fake.power(PowerOp::HardReset).await.unwrap();
            fake.power_state().await.unwrap();
        }
        fake.power(PowerOp::ForceOff).await.unwrap();
        let calls = fake.calls();
        assert_eq!(calls.len(), CALLS_KEPT);
        assert_eq!(calls.last(), Some(&FakeCall::Power(PowerOp::ForceOff)));
        assert_eq!(fake.count(PowerOp::HardReset), CALLS_KEPT);
        assert_eq!(fake.count(PowerOp::ForceOff), 1);
        assert_eq!(fake.count(PowerOp::On), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn inventory_reads_are_recorded_and_can_be_unsupported() {
        let fake = FakeBmc::new("s1", &FakeSettings::default(), Power::On);
        let id = fake.identity().await.unwrap();
        assert_eq!(id.serial_number.as_deref(), Some("FAKE-s1"));
        let h = fake.health().await.unwrap();
        assert_eq!(
            (h.power_watts(), h.inlet_celsius()),
            (Some(180.0), Some(23.0))
        );
        assert!(fake.events(None, 10).await.unwrap().is_empty());
        assert_eq!(
            fake.calls(),
            vec![
                FakeCall::Identity,
                FakeCall::Health,
                FakeCall::Events {
                    since: None,
                    limit: 10
                }
            ]
        );
        fake.set_identity(None);
        fake.set_sensors_offered(false);
        fake.set_event_log_offered(false);
        assert!(matches!(
            fake.identity().await,
            Err(BmcError::Unsupported(_))
        ));
        assert!(matches!(fake.health().await, Err(BmcError::Unsupported(_))));
        assert!(matches!(
            fake.events(None, 1).await,
            Err(BmcError::Unsupported(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_power_button_logs_like_a_sel_and_the_log_filters_by_time_and_count() {
        let fake = FakeBmc::new("s1", &FakeSettings::default(), Power::On);
        let old = |id: i64| BmcEvent {
            id: String::new(),
            at: Some(id),
            sensor_type: "Temperature".into(),
            sensor: "CPU Temp".into(),
            event: "Upper Non-critical going high".into(),
            direction: "asserted".into(),
            severity: "warning".into(),
            message: String::new(),
            raw: String::new(),
        };
        fake.log_event(old(1_000));
        fake.log_event(BmcEvent { at: None, ..old(0) });
        fake.press_power_button();
        assert_eq!(fake.power_now(), Power::Off);
        let recent = fake.events(Some(2_000), 10).await.unwrap();
        let words: Vec<&str> = recent.iter().map(|e| e.event.as_str()).collect();
        // The entry without a time is always included.
        assert_eq!(
            words,
            [
                "Upper Non-critical going high",
                "Power Button pressed",
                "Power Off / Power Down"
            ]
        );
        assert_eq!(recent[2].id, "0x0004");
        assert_eq!(recent[1].sensor_type, "Button / Switch");
        let newest = fake.events(None, 1).await.unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].sensor_type, "Power Unit");
        assert_eq!(fake.events(None, 100).await.unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn ignoring_acpi_keeps_power_on() {
        let fake = FakeBmc::new("s1", &FakeSettings::default(), Power::On);
        fake.set_ignore_acpi(true);
        fake.power(PowerOp::GracefulOff).await.unwrap();
        assert_eq!(fake.power_state().await.unwrap(), Power::On);
    }

    #[tokio::test(start_paused = true)]
    async fn a_journal_in_a_missing_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not/yet/there/j.log");
        let settings = FakeSettings {
            journal: Some(path.clone()),
            ..FakeSettings::default()
        };
        let f = FakeBmcFactory::new(settings).expect("the journal's directory is made");
        f.fake_for("s1").power(PowerOp::HardReset).await.unwrap();
        assert_eq!(
            read_journal(&path).unwrap(),
            vec![("s1".to_string(), "hard_reset".to_string())]
        );
    }

    #[test]
    fn the_journal_defaults_to_the_state_directory() {
        let state = Path::new("/var/lib/rack-agent");
        assert_eq!(
            FakeSettings::default().journal_path(state),
            state.join("fake-bmc.journal")
        );
        let set = FakeSettings {
            journal: Some("/tmp/j.log".into()),
            ..FakeSettings::default()
        };
        assert_eq!(set.journal_path(state), Path::new("/tmp/j.log"));
    }

    #[tokio::test(start_paused = true)]
    async fn two_calls_at_once_are_an_overlap_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let settings = FakeSettings {
            journal: Some(path.clone()),
            latency: Duration::from_millis(50),
            ..FakeSettings::default()
        };
        let f = FakeBmcFactory::new(settings.clone()).unwrap();
        let (a, b) = (f.fake_for("s1"), f.fake_for("s2"));
        // One after the other, and two BMCs at once: no overlap.
        a.power_state().await.unwrap();
        a.power(PowerOp::HardReset).await.unwrap();
        let (r1, r2) = tokio::join!(a.power_state(), b.power_state());
        r1.unwrap();
        r2.unwrap();
        assert_eq!((a.overlaps(), b.overlaps()), (0, 0));
        // A read while a reset is in progress on the same BMC: one overlap.
        let (r1, r2) = tokio::join!(a.power(PowerOp::HardReset), a.power_state());
        r1.unwrap();
        r2.unwrap();
        assert_eq!((a.overlaps(), b.overlaps()), (1, 0));
        let overlaps: Vec<_> = read_journal(&path)
            .unwrap()
            .into_iter()
            .filter(|(_, op)| op.starts_with(OVERLAP))
            .collect();
        assert_eq!(
            overlaps,
            vec![("s1".to_string(), "overlap:PowerState".to_string())]
        );
        // Replay ignores the overlap line: two resets, two boots.
        let again = FakeBmcFactory::new(settings).unwrap().fake_for("s1");
        assert_eq!((again.boots(), again.power_now()), (2, Power::On));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_on_is_no_longer_in_progress() {
        let fake = FakeBmc::new("s1", &FakeSettings::default(), Power::On);
        fake.set_hang(true);
        let gave_up = tokio::time::timeout(Duration::from_secs(1), fake.power_state()).await;
        assert!(gave_up.is_err());
        fake.set_hang(false);
        fake.power_state().await.unwrap();
        assert_eq!(fake.overlaps(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn journal_is_replayed_by_a_new_factory() {
        let dir = tempfile::tempdir().unwrap();
        let settings = FakeSettings {
            journal: Some(dir.path().join("j.log")),
            ..FakeSettings::default()
        };
        let f1 = FakeBmcFactory::new(settings.clone()).unwrap();
        let b = f1.fake_for("s1");
        b.power(PowerOp::ForceOff).await.unwrap();
        let f2 = FakeBmcFactory::new(settings.clone()).unwrap();
        let b2 = f2.fake_for("s1");
        assert_eq!(b2.power_state().await.unwrap(), Power::Off);
        let j = read_journal(settings.journal.as_ref().unwrap()).unwrap();
        assert_eq!(j, vec![("s1".to_string(), "force_off".to_string())]);
    }
}
