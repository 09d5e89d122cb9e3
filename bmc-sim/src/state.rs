//! One simulated server and its BMC: the host's power, its boot override, the
//! restart evidence a real BMC shows, the IPMI and Redfish sessions, and the
//! counters a benchmark reads. IPMI and Redfish are two faces of the same
//! server: a PXE override set over IPMI shows in Redfish `Boot`, a Redfish
//! `ForceOff` shows in IPMI Get Chassis Status.
//!
//! Everything of one BMC sits behind one mutex, taken once per request;
//! requests to different BMCs never contend.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::ipmi::session::IpmiSessions;
use crate::redfish::session::RedfishSessions;

/// IPMI Get System Restart Cause codes (table 28-11) the simulator produces.
pub mod cause {
    pub const UNKNOWN: u8 = 0x0;
    pub const CHASSIS_CONTROL: u8 = 0x1;
    pub const SOFT_RESET: u8 = 0xA;
}

/// A power change that takes effect at a given time (`--power-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    On {
        cause: u8,
    },
    Off,
    /// The host restarts without its power going off (hard reset, warm restart).
    Restart {
        cause: u8,
    },
}

/// Why a power command was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Reset or power cycle of a host that is off (IPMI cc D5h).
    HostIsOff,
}

/// One-time / persistent boot override: System Boot Options parameter 5 as
/// IPMI stores it (5 data bytes), which Redfish `Boot` shows and changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags(pub [u8; 5]);

impl BootFlags {
    pub fn valid(&self) -> bool {
        self.0[0] & 0x80 != 0
    }
    pub fn persistent(&self) -> bool {
        self.0[0] & 0x40 != 0
    }
    pub fn efi(&self) -> bool {
        self.0[0] & 0x20 != 0
    }
    /// Data 2 bits 5:2.
    pub fn device(&self) -> u8 {
        (self.0[1] >> 2) & 0x0F
    }
    pub fn set(valid: bool, persistent: bool, efi: bool, device: u8) -> BootFlags {
        let mut d1 = 0;
        if valid {
            d1 |= 0x80;
        }
        if persistent {
            d1 |= 0x40;
        }
        if efi {
            d1 |= 0x20;
        }
        BootFlags([d1, (device & 0x0F) << 2, 0, 0, 0])
    }
    /// The device the host boots from now, in words (for counters).
    pub fn device_name(device: u8) -> &'static str {
        match device {
            0x0 => "default",
            0x1 => "pxe",
            0x2 => "disk",
            0x3 => "disk_safe_mode",
            0x4 => "diagnostic",
            0x5 => "cd",
            0x6 => "bios",
            0xF => "floppy",
            _ => "other",
        }
    }
}

/// Everything a benchmark or a test reads to see what the clients did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Datagrams received on the BMC's IPMI port.
    pub ipmi_packets: u64,
    /// IPMI commands answered inside a session.
    pub ipmi_requests: u64,
    /// Pre-session commands answered (channel authentication capabilities, cipher suites).
    pub ipmi_presession: u64,
    /// RMCP/ASF presence pings answered.
    pub ipmi_pings: u64,
    /// Datagrams dropped: malformed, unknown session, bad integrity code, replayed.
    pub ipmi_dropped: u64,
    /// Open Session requests that got a session ID.
    pub ipmi_sessions_opened: u64,
    /// Sessions that completed RAKP 4 (active).
    pub ipmi_sessions_created: u64,
    /// Active sessions ended by Close Session.
    pub ipmi_sessions_closed: u64,
    /// Active sessions ended by the idle timeout.
    pub ipmi_sessions_expired: u64,
    /// Half-open sessions (Open Session or RAKP 1/2 done, never activated)
    /// dropped by the timeout or by the client's RAKP 3 error.
    pub ipmi_handshakes_abandoned: u64,
    /// Open Session requests refused because the session table was full.
    pub ipmi_sessions_refused: u64,
    /// Unknown user names (RAKP 2 status 0Dh) and wrong passwords (RAKP 4 status 0Fh).
    pub ipmi_auth_failures: u64,
    pub chassis_power_on: u64,
    pub chassis_power_off: u64,
    pub chassis_power_cycle: u64,
    pub chassis_hard_reset: u64,
    pub chassis_soft_off: u64,
    pub chassis_diag_interrupt: u64,
    /// Chassis controls refused (reset or cycle of a host that is off).
    pub chassis_refused: u64,
    pub boot_options_set: u64,
    /// HTTP requests on the BMC's Redfish port.
    pub redfish_requests: u64,
    pub redfish_sessions_created: u64,
    pub redfish_sessions_deleted: u64,
    pub redfish_sessions_expired: u64,
    pub redfish_sessions_refused: u64,
    /// Requests refused with 401 (bad or missing credentials, unknown token).
    pub redfish_auth_failures: u64,
    pub redfish_reset_on: u64,
    pub redfish_reset_force_off: u64,
    pub redfish_reset_graceful_shutdown: u64,
    pub redfish_reset_graceful_restart: u64,
    pub redfish_reset_force_restart: u64,
    pub redfish_reset_power_cycle: u64,
    pub redfish_reset_nmi: u64,
    pub redfish_boot_patches: u64,
    /// Host boots (power-on or restart taking effect).
    pub host_boots: u64,
    /// Host boots that used a PXE override.
    pub host_pxe_boots: u64,
}

/// The host and its boot state.
#[derive(Debug, Clone)]
pub struct Host {
    on: bool,
    pending: VecDeque<(Instant, Change)>,
    pub restart_cause: u8,
    /// Wall-clock time of the last power-on or restart (Redfish `LastResetTime`).
    pub last_reset: SystemTime,
    /// Wall-clock time of the last power change (BootProgress.LastStateTime).
    pub last_change: SystemTime,
    /// Get Chassis Status byte 2: last power event (bit 4: power on by IPMI command).
    pub last_power_event: u8,
    pub boot: BootFlags,
    /// Parameter 0: set-in-progress (0 complete, 1 in progress, 2 commit write).
    pub boot_set_in_progress: u8,
    /// Parameter 4: boot info acknowledge (mask applied, data).
    pub boot_info_ack: [u8; 2],
    /// What the host booted from last ("default", "pxe", ...).
    pub last_boot_device: &'static str,
}

/// One simulated BMC.
#[derive(Debug)]
pub struct Bmc {
    pub index: usize,
    /// The BMC GUID sent in RAKP 2, also the system UUID in Redfish.
    pub guid: [u8; 16],
    pub st: Mutex<BmcState>,
}

#[derive(Debug)]
pub struct BmcState {
    pub host: Host,
    pub ipmi: IpmiSessions,
    pub redfish: RedfishSessions,
    pub c: Counters,
}

fn wall_at(now: Instant, at: Instant) -> SystemTime {
    SystemTime::now() - now.saturating_duration_since(at)
}

impl Host {
    pub fn new(on: bool, started: SystemTime) -> Host {
        Host {
            on,
            pending: VecDeque::new(),
            restart_cause: cause::UNKNOWN,
            last_reset: started,
            last_change: started,
            last_power_event: 0,
            boot: BootFlags([0; 5]),
            boot_set_in_progress: 0,
            boot_info_ack: [0; 2],
            last_boot_device: "default",
        }
    }

    /// Applies every change whose time has come; returns whether power is on.
    pub fn settle(&mut self, now: Instant, c: &mut Counters) -> bool {
        while let Some(&(at, change)) = self.pending.front() {
            if at > now {
                break;
            }
            self.pending.pop_front();
            let wall = wall_at(now, at);
            match change {
                Change::On { cause } => {
                    if !self.on {
                        self.on = true;
                        self.boot_host(wall, cause, c);
                    }
                }
                Change::Off => {
                    if self.on {
                        self.on = false;
                        self.last_change = wall;
                    }
                }
                Change::Restart { cause } => {
                    if self.on {
                        self.boot_host(wall, cause, c);
                    }
                }
            }
        }
        self.on
    }

    /// The host starts: restart evidence moves, a one-time override is used up.
    fn boot_host(&mut self, wall: SystemTime, cause: u8, c: &mut Counters) {
        self.restart_cause = cause;
        self.last_reset = wall;
        self.last_change = wall;
        c.host_boots += 1;
        let device = if self.boot.valid() {
            self.boot.device()
        } else {
            0
        };
        if device == 0x1 {
            c.host_pxe_boots += 1;
        }
        self.last_boot_device = BootFlags::device_name(device);
        if self.boot.valid() && !self.boot.persistent() {
            // "Options apply to next boot only": the BMC clears the valid bit.
            self.boot.0[0] &= !0x80;
        }
    }

    fn schedule(&mut self, now: Instant, delay: Duration, change: Change, c: &mut Counters) {
        self.pending.push_back((now + delay, change));
        self.settle(now, c);
    }

    /// Power is on now or will be once pending changes apply.
    fn will_be_on(&self) -> bool {
        self.pending
            .iter()
            .rev()
            .find_map(|(_, ch)| match ch {
                Change::On { .. } => Some(true),
                Change::Off => Some(false),
                Change::Restart { .. } => None,
            })
            .unwrap_or(self.on)
    }

    pub fn power_on(&mut self, now: Instant, delay: Duration, c: &mut Counters) {
        if !self.will_be_on() {
            self.last_power_event = 0x10;
            self.schedule(
                now,
                delay,
                Change::On {
                    cause: cause::CHASSIS_CONTROL,
                },
                c,
            );
        }
    }

    pub fn power_off(&mut self, now: Instant, delay: Duration, c: &mut Counters) {
        if self.will_be_on() {
            self.schedule(now, delay, Change::Off, c);
        }
    }

    /// Off, then on again one delay later (at once with no delay).
    pub fn power_cycle(
        &mut self,
        now: Instant,
        delay: Duration,
        c: &mut Counters,
    ) -> Result<(), Refusal> {
        if !self.will_be_on() {
            return Err(Refusal::HostIsOff);
        }
        self.last_power_event = 0x10;
        self.pending.push_back((now + delay, Change::Off));
        self.pending.push_back((
            now + delay * 2,
            Change::On {
                cause: cause::CHASSIS_CONTROL,
            },
        ));
        self.settle(now, c);
        Ok(())
    }

    /// A restart that keeps the power on.
    pub fn restart(
        &mut self,
        now: Instant,
        delay: Duration,
        cause: u8,
        c: &mut Counters,
    ) -> Result<(), Refusal> {
        if !self.will_be_on() {
            return Err(Refusal::HostIsOff);
        }
        self.schedule(now, delay, Change::Restart { cause }, c);
        Ok(())
    }

    /// Out-of-band power (the control interface: someone at the rack).
    pub fn force(&mut self, on: bool, c: &mut Counters) {
        self.pending.clear();
        if on != self.on {
            if on {
                self.on = true;
                self.boot_host(SystemTime::now(), cause::UNKNOWN, c);
            } else {
                self.on = false;
                self.last_change = SystemTime::now();
            }
        }
    }
}

impl Bmc {
    pub fn new(index: usize, on: bool, started: SystemTime, limits: &crate::Limits) -> Bmc {
        // A recognisable, unique GUID per BMC: "bmcsim" + index.
        let mut guid = [0u8; 16];
        guid[..6].copy_from_slice(b"bmcsim");
        guid[8..16].copy_from_slice(&(index as u64).to_be_bytes());
        Bmc {
            index,
            guid,
            st: Mutex::new(BmcState {
                host: Host::new(on, started),
                ipmi: IpmiSessions::new(limits.ipmi_sessions),
                redfish: RedfishSessions::new(limits.redfish_sessions),
                c: Counters::default(),
            }),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, BmcState> {
        // A panic while holding the lock leaves a consistent enough state for a
        // simulator: keep serving.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The UUID in its textual form (8-4-4-4-12).
    pub fn uuid(&self) -> String {
        let h: String = self.guid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl BmcState {
    /// Drops expired sessions of both protocols.
    pub fn expire(&mut self, now: Instant, limits: &crate::Limits) {
        self.ipmi.expire(now, limits.ipmi_timeout, &mut self.c);
        self.redfish
            .expire(now, limits.redfish_timeout, &mut self.c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_changes() {
        let mut c = Counters::default();
        let now = Instant::now();
        let mut h = Host::new(false, SystemTime::now());
        assert_eq!(
            h.restart(now, Duration::ZERO, cause::CHASSIS_CONTROL, &mut c),
            Err(Refusal::HostIsOff)
        );
        h.power_on(now, Duration::ZERO, &mut c);
        assert!(h.settle(now, &mut c));
        assert_eq!(h.restart_cause, cause::CHASSIS_CONTROL);
        assert_eq!(c.host_boots, 1);
        h.power_cycle(now, Duration::ZERO, &mut c).unwrap();
        assert!(h.settle(now, &mut c));
        assert_eq!(c.host_boots, 2);
        h.power_off(now, Duration::ZERO, &mut c);
        assert!(!h.settle(now, &mut c));
    }

    #[test]
    fn delayed_changes_apply_in_order() {
        let mut c = Counters::default();
        let t0 = Instant::now();
        let d = Duration::from_secs(2);
        let mut h = Host::new(true, SystemTime::now());
        h.power_cycle(t0, d, &mut c).unwrap();
        assert!(h.settle(t0 + Duration::from_secs(1), &mut c));
        assert!(!h.settle(t0 + Duration::from_secs(3), &mut c));
        assert!(h.settle(t0 + Duration::from_secs(5), &mut c));
        // An "on" while an "off" is pending is not lost.
        h.power_off(t0 + Duration::from_secs(5), d, &mut c);
        h.power_on(t0 + Duration::from_secs(6), d, &mut c);
        assert!(!h.settle(t0 + Duration::from_secs(7), &mut c));
        assert!(h.settle(t0 + Duration::from_secs(8), &mut c));
    }

    #[test]
    fn one_time_override_is_used_by_the_next_boot_only() {
        let mut c = Counters::default();
        let now = Instant::now();
        let mut h = Host::new(true, SystemTime::now());
        h.boot = BootFlags::set(true, false, false, 0x1);
        h.restart(now, Duration::ZERO, cause::CHASSIS_CONTROL, &mut c)
            .unwrap();
        assert_eq!((c.host_boots, c.host_pxe_boots), (1, 1));
        assert!(!h.boot.valid());
        assert_eq!(
            h.boot.device(),
            0x1,
            "the selector stays, only valid clears"
        );
        h.restart(now, Duration::ZERO, cause::CHASSIS_CONTROL, &mut c)
            .unwrap();
        assert_eq!((c.host_boots, c.host_pxe_boots), (2, 1));
        assert_eq!(h.last_boot_device, "default");
    }
}
