//! Typed IPMI commands: request encodings and response decodings, each after
//! the IPMI v2.0 specification table named in its doc comment. Decoders get the
//! response data *after* the completion code and never panic.

use super::message::{DecodeError, Request};

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

/// One IPMI command: how to ask, how to read the answer.
pub trait Command {
    type Output;
    /// For logs and error messages.
    const NAME: &'static str;
    fn request(&self) -> Request;
    fn decode(&self, data: &[u8]) -> Result<Self::Output, DecodeError>;
    /// Whether sending it twice can do more than sending it once.
    fn idempotent(&self) -> bool {
        true
    }
    /// The meaning of a command-specific completion code (0x80..=0xBE).
    fn completion_meaning(&self, _cc: u8) -> Option<&'static str> {
        None
    }
}

fn need(what: &'static str, data: &[u8], n: usize) -> Result<(), DecodeError> {
    if data.len() < n {
        return Err(DecodeError::Short {
            what,
            len: data.len(),
            need: n,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Get Chassis Status — NetFn Chassis, cmd 0x01 (table 28-3)

#[derive(Debug, Clone, Copy)]
pub struct GetChassisStatus;

/// The parts of the chassis status the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// Byte 1 bit 0: system power is on.
    pub power_on: bool,
    /// Byte 1 bit 3: power fault.
    pub power_fault: bool,
    /// Byte 1 bit 4: power control fault (the controller could not change power).
    pub power_control_fault: bool,
    /// Byte 1 bits 6:5: 0 stays off, 1 restores previous, 2 powers up, 3 unknown.
    pub restore_policy: u8,
    /// Byte 2: last power event bits.
    pub last_power_event: u8,
    /// Byte 3: misc chassis state bits.
    pub misc: u8,
}

impl Command for GetChassisStatus {
    type Output = ChassisStatus;
    const NAME: &'static str = "Get Chassis Status";
    fn request(&self) -> Request {
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x01,
            data: vec![],
        }
    }
    fn decode(&self, d: &[u8]) -> Result<ChassisStatus, DecodeError> {
        // Byte 4 (front panel button capabilities) is optional.
        need("Get Chassis Status response", d, 3)?;
        Ok(ChassisStatus {
            power_on: d[0] & 0x01 != 0,
            power_fault: d[0] & 0x08 != 0,
            power_control_fault: d[0] & 0x10 != 0,
            restore_policy: (d[0] >> 5) & 0x03,
            last_power_event: d[1],
            misc: d[2],
        })
    }
}

// ---------------------------------------------------------------------------
// Chassis Control — NetFn Chassis, cmd 0x02 (table 28-4)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChassisAction {
    PowerDown = 0x00,
    PowerUp = 0x01,
    PowerCycle = 0x02,
    HardReset = 0x03,
    /// "Initiate a soft-shutdown of OS via ACPI by emulating a fatal overtemperature".
    SoftShutdown = 0x05,
}

#[derive(Debug, Clone, Copy)]
pub struct ChassisControl(pub ChassisAction);

impl Command for ChassisControl {
    type Output = ();
    const NAME: &'static str = "Chassis Control";
    fn request(&self) -> Request {
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x02,
            data: vec![self.0 as u8],
        }
    }
    fn decode(&self, _d: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
    fn idempotent(&self) -> bool {
        !matches!(self.0, ChassisAction::PowerCycle | ChassisAction::HardReset)
    }
}

// ---------------------------------------------------------------------------
// Get System Restart Cause — NetFn Chassis, cmd 0x07 (table 28-11)

/// Why the system last restarted: response byte 1 (after the completion code)
/// bits 3:0. Names after the specification's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCause {
    /// 0h: a start/restart was detected, its cause is unknown.
    Unknown,
    /// 1h: a Chassis Control command.
    ChassisControl,
    /// 2h: reset via the reset pushbutton.
    ResetButton,
    /// 3h: power-up via the power pushbutton.
    PowerButton,
    /// 4h: watchdog expiration.
    Watchdog,
    /// 5h: OEM.
    Oem,
    /// 6h: automatic power-up on AC applied, "always restore" policy.
    AcRestoreAlways,
    /// 7h: automatic power-up on AC applied, "restore previous power state" policy.
    AcRestorePrevious,
    /// 8h: reset via PEF.
    PefReset,
    /// 9h: power-cycle via PEF.
    PefPowerCycle,
    /// Ah: soft reset (e.g. Ctrl-Alt-Del).
    SoftReset,
    /// Bh: power-up via RTC (real time clock) wakeup.
    RtcWakeup,
    /// Ch..Fh: reserved.
    Reserved(u8),
}

impl RestartCause {
    pub fn from_bits(b: u8) -> RestartCause {
        match b & 0x0f {
            0x0 => RestartCause::Unknown,
            0x1 => RestartCause::ChassisControl,
            0x2 => RestartCause::ResetButton,
            0x3 => RestartCause::PowerButton,
            0x4 => RestartCause::Watchdog,
            0x5 => RestartCause::Oem,
            0x6 => RestartCause::AcRestoreAlways,
            0x7 => RestartCause::AcRestorePrevious,
            0x8 => RestartCause::PefReset,
            0x9 => RestartCause::PefPowerCycle,
            0xA => RestartCause::SoftReset,
            0xB => RestartCause::RtcWakeup,
            other => RestartCause::Reserved(other),
        }
    }

    /// In words, for the restart marker and logs.
    pub fn describe(self) -> String {
        match self {
            RestartCause::Unknown => "unknown".into(),
            RestartCause::ChassisControl => "chassis control command".into(),
            RestartCause::ResetButton => "reset via pushbutton".into(),
            RestartCause::PowerButton => "power-up via power pushbutton".into(),
            RestartCause::Watchdog => "watchdog expiration".into(),
            RestartCause::Oem => "OEM".into(),
            RestartCause::AcRestoreAlways => {
                "power-up on AC being applied (power restore policy: always on)".into()
            }
            RestartCause::AcRestorePrevious => {
                "power-up on AC being applied (power restore policy: previous state)".into()
            }
            RestartCause::PefReset => "reset via PEF".into(),
            RestartCause::PefPowerCycle => "power-cycle via PEF".into(),
            RestartCause::SoftReset => "soft reset (e.g. Ctrl-Alt-Del)".into(),
            RestartCause::RtcWakeup => "power-up via RTC wakeup".into(),
            RestartCause::Reserved(b) => format!("reserved cause {b:#03x}"),
        }
    }
}

/// The answer to Get System Restart Cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemRestartCause {
    /// Byte 1 bits 3:0 (bits 7:4 reserved).
    pub cause: RestartCause,
    /// Byte 2: the channel that delivered the command that caused the restart
    /// (meaningful when the cause is a command).
    pub channel: u8,
}

#[derive(Debug, Clone, Copy)]
pub struct GetSystemRestartCause;

impl Command for GetSystemRestartCause {
    type Output = SystemRestartCause;
    const NAME: &'static str = "Get System Restart Cause";
    fn request(&self) -> Request {
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x07,
            data: vec![],
        }
    }
    fn decode(&self, d: &[u8]) -> Result<SystemRestartCause, DecodeError> {
        need("Get System Restart Cause response", d, 2)?;
        Ok(SystemRestartCause {
            cause: RestartCause::from_bits(d[0]),
            channel: d[1],
        })
    }
}

// ---------------------------------------------------------------------------
// System Boot Options, parameter 5 "boot flags" (table 28-14)

const BOOT_FLAGS_PARAM: u8 = 0x05;

/// Boot device selector, parameter 5 data 2 bits 5:2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootSelector {
    NoOverride,
    Pxe,
    Disk,
    Cd,
    Bios,
    Other(u8),
}

impl BootSelector {
    fn bits(self) -> u8 {
        match self {
            BootSelector::NoOverride => 0x0,
            BootSelector::Pxe => 0x1,
            BootSelector::Disk => 0x2,
            BootSelector::Cd => 0x5,
            BootSelector::Bios => 0x6,
            BootSelector::Other(b) => b & 0x0f,
        }
    }
    fn from_bits(b: u8) -> Self {
        match b & 0x0f {
            0x0 => BootSelector::NoOverride,
            0x1 => BootSelector::Pxe,
            0x2 => BootSelector::Disk,
            0x5 => BootSelector::Cd,
            0x6 => BootSelector::Bios,
            other => BootSelector::Other(other),
        }
    }
}

/// Boot flags as set and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// Data 1 bit 7: the flags are valid (the override applies).
    pub valid: bool,
    /// Data 1 bit 6: persistent (1) or next boot only (0).
    pub persistent: bool,
    /// Data 1 bit 5: EFI (1) or PC-compatible legacy (0) boot.
    pub efi: bool,
    /// Data 2 bits 5:2.
    pub device: BootSelector,
}

impl BootFlags {
    fn encode(&self) -> [u8; 5] {
        let mut d1 = 0u8;
        if self.valid {
            d1 |= 0x80;
        }
        if self.persistent {
            d1 |= 0x40;
        }
        if self.efi {
            d1 |= 0x20;
        }
        [d1, self.device.bits() << 2, 0x00, 0x00, 0x00]
    }
}

/// Set System Boot Options (NetFn Chassis, cmd 0x08), parameter 5.
#[derive(Debug, Clone, Copy)]
pub struct SetBootFlags(pub BootFlags);

impl Command for SetBootFlags {
    type Output = ();
    const NAME: &'static str = "Set System Boot Options";
    fn request(&self) -> Request {
        // Byte 1: bit 7 = 0 (parameter valid/unlocked), bits 6:0 = selector.
        let mut data = vec![BOOT_FLAGS_PARAM];
        data.extend_from_slice(&self.0.encode());
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x08,
            data,
        }
    }
    fn decode(&self, _d: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
    fn completion_meaning(&self, cc: u8) -> Option<&'static str> {
        match cc {
            0x80 => Some("boot option parameter not supported"),
            0x81 => Some("boot options are being set by someone else (set in progress)"),
            0x82 => Some("boot option parameter is read-only"),
            _ => None,
        }
    }
}

/// Get System Boot Options (NetFn Chassis, cmd 0x09), parameter 5.
#[derive(Debug, Clone, Copy)]
pub struct GetBootFlags;

impl Command for GetBootFlags {
    type Output = BootFlags;
    const NAME: &'static str = "Get System Boot Options";
    fn request(&self) -> Request {
        // Parameter selector, set selector, block selector.
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x09,
            data: vec![BOOT_FLAGS_PARAM, 0x00, 0x00],
        }
    }
    fn decode(&self, d: &[u8]) -> Result<BootFlags, DecodeError> {
        // Parameter version, valid bit + selector, then 5 bytes of flags.
        need("Get System Boot Options response", d, 7)?;
        if d[1] & 0x7f != BOOT_FLAGS_PARAM {
            return Err(DecodeError::Invalid(format!(
                "asked for boot option parameter 5, got parameter {}",
                d[1] & 0x7f
            )));
        }
        Ok(BootFlags {
            valid: d[2] & 0x80 != 0,
            persistent: d[2] & 0x40 != 0,
            efi: d[2] & 0x20 != 0,
            device: BootSelector::from_bits(d[3] >> 2),
        })
    }
    fn completion_meaning(&self, cc: u8) -> Option<&'static str> {
        (cc == 0x80).then_some("boot option parameter not supported")
    }
}

// ---------------------------------------------------------------------------
// Set Session Privilege Level — NetFn App, cmd 0x3B (table 22-24)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Privilege {
    User = 0x02,
    Operator = 0x03,
    Administrator = 0x04,
}

#[derive(Debug, Clone, Copy)]
pub struct SetSessionPrivilege(pub Privilege);

impl Command for SetSessionPrivilege {
    /// The new privilege level.
    type Output = u8;
    const NAME: &'static str = "Set Session Privilege Level";
    fn request(&self) -> Request {
        Request {
            netfn: NETFN_APP,
            cmd: 0x3B,
            data: vec![self.0 as u8],
        }
    }
    fn decode(&self, d: &[u8]) -> Result<u8, DecodeError> {
        need("Set Session Privilege Level response", d, 1)?;
        Ok(d[0] & 0x0f)
    }
    fn completion_meaning(&self, cc: u8) -> Option<&'static str> {
        match cc {
            0x80 => Some("requested privilege level not available for this user"),
            0x81 => Some("requested privilege level exceeds the user's or channel's limit"),
            0x82 => Some("cannot disable user level authentication"),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Close Session — NetFn App, cmd 0x3C (table 22-25)

#[derive(Debug, Clone, Copy)]
pub struct CloseSession {
    /// The BMC's (managed system's) session ID.
    pub session_id: u32,
}

impl Command for CloseSession {
    type Output = ();
    const NAME: &'static str = "Close Session";
    fn request(&self) -> Request {
        Request {
            netfn: NETFN_APP,
            cmd: 0x3C,
            data: self.session_id.to_le_bytes().to_vec(),
        }
    }
    fn decode(&self, _d: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
    fn completion_meaning(&self, cc: u8) -> Option<&'static str> {
        match cc {
            0x87 => Some("invalid session ID"),
            0x88 => Some("invalid session handle"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_chassis_status_layout() {
        let r = GetChassisStatus.request();
        assert_eq!((r.netfn, r.cmd, r.data.as_slice()), (0x00, 0x01, &[][..]));
        // Power on, restore policy "previous" (01b in bits 6:5), no events.
        let s = GetChassisStatus.decode(&[0x21, 0x00, 0x40, 0x00]).unwrap();
        assert!(s.power_on);
        assert_eq!(s.restore_policy, 1);
        assert_eq!(s.misc, 0x40);
        // Optional byte 4 absent; power fault + control fault, power off.
        let s = GetChassisStatus.decode(&[0x18, 0x00, 0x00]).unwrap();
        assert!(!s.power_on && s.power_fault && s.power_control_fault);
    }

    #[test]
    fn get_chassis_status_truncated_is_an_error() {
        for n in 0..3 {
            assert!(GetChassisStatus.decode(&[0x01; 3][..n]).is_err());
        }
    }

    #[test]
    fn get_system_restart_cause_layout() {
        let r = GetSystemRestartCause.request();
        assert_eq!((r.netfn, r.cmd, r.data.as_slice()), (0x00, 0x07, &[][..]));
        // Every cause of table 28-11, on channel 1 (LAN); bits 7:4 are reserved
        // and ignored.
        let cases = [
            (0x00, RestartCause::Unknown, "unknown"),
            (
                0x01,
                RestartCause::ChassisControl,
                "chassis control command",
            ),
            (0x02, RestartCause::ResetButton, "reset via pushbutton"),
            (
                0x03,
                RestartCause::PowerButton,
                "power-up via power pushbutton",
            ),
            (0x04, RestartCause::Watchdog, "watchdog expiration"),
            (0x05, RestartCause::Oem, "OEM"),
            (
                0x06,
                RestartCause::AcRestoreAlways,
                "power-up on AC being applied (power restore policy: always on)",
            ),
            (
                0x07,
                RestartCause::AcRestorePrevious,
                "power-up on AC being applied (power restore policy: previous state)",
            ),
            (0x08, RestartCause::PefReset, "reset via PEF"),
            (0x09, RestartCause::PefPowerCycle, "power-cycle via PEF"),
            (
                0x0A,
                RestartCause::SoftReset,
                "soft reset (e.g. Ctrl-Alt-Del)",
            ),
            (0x0B, RestartCause::RtcWakeup, "power-up via RTC wakeup"),
            (0x0C, RestartCause::Reserved(0x0C), "reserved cause 0xc"),
            (
                0xF1,
                RestartCause::ChassisControl,
                "chassis control command",
            ),
        ];
        for (byte, cause, words) in cases {
            let got = GetSystemRestartCause.decode(&[byte, 0x01]).unwrap();
            assert_eq!(
                got,
                SystemRestartCause {
                    cause,
                    channel: 0x01
                },
                "{byte:#04x}"
            );
            assert_eq!(got.cause.describe(), words);
        }
        // A longer answer keeps its first two bytes; a short one is an error.
        let got = GetSystemRestartCause.decode(&[0x04, 0x0F, 0xAA]).unwrap();
        assert_eq!((got.cause, got.channel), (RestartCause::Watchdog, 0x0F));
        assert!(GetSystemRestartCause.decode(&[]).is_err());
        assert!(GetSystemRestartCause.decode(&[0x01]).is_err());
    }

    #[test]
    fn get_system_restart_cause_on_the_wire() {
        use super::super::message::{decode_response, encode_request};
        // rsAddr BMC, NetFn Chassis/LUN 0, chk1, rqAddr 81h, rqSeq 5, cmd 07h, chk2.
        assert_eq!(
            encode_request(&GetSystemRestartCause.request(), 5),
            [0x20, 0x00, 0xE0, 0x81, 0x14, 0x07, 0x64]
        );
        // The answer: NetFn Chassis response (01h), cc 00h, cause 1h, channel 1.
        let rsp =
            decode_response(&[0x81, 0x04, 0x7B, 0x20, 0x14, 0x07, 0x00, 0x01, 0x01, 0xC3]).unwrap();
        assert_eq!(
            (rsp.netfn, rsp.cmd, rsp.rq_seq, rsp.completion),
            (0x01, 0x07, 5, 0x00)
        );
        assert_eq!(
            GetSystemRestartCause.decode(&rsp.data).unwrap().cause,
            RestartCause::ChassisControl
        );
        // What ipmi_sim 2.0.33 answers: invalid command, no data.
        let rsp = decode_response(&[0x81, 0x04, 0x7B, 0x20, 0x14, 0x07, 0xC1, 0x04]).unwrap();
        assert_eq!((rsp.completion, rsp.data.len()), (0xC1, 0));
    }

    #[test]
    fn chassis_control_layouts() {
        let cases = [
            (ChassisAction::PowerDown, 0x00, true),
            (ChassisAction::PowerUp, 0x01, true),
            (ChassisAction::PowerCycle, 0x02, false),
            (ChassisAction::HardReset, 0x03, false),
            (ChassisAction::SoftShutdown, 0x05, true),
        ];
        for (action, byte, idem) in cases {
            let c = ChassisControl(action);
            let r = c.request();
            assert_eq!((r.netfn, r.cmd, r.data), (0x00, 0x02, vec![byte]));
            assert_eq!(c.idempotent(), idem, "{action:?}");
        }
    }

    #[test]
    fn set_boot_flags_layouts() {
        let flags = |device, persistent, efi| BootFlags {
            valid: true,
            persistent,
            efi,
            device,
        };
        let cases = [
            // PXE, next boot only, legacy.
            (flags(BootSelector::Pxe, false, false), [0x80, 0x04]),
            // Disk, persistent, legacy.
            (flags(BootSelector::Disk, true, false), [0xC0, 0x08]),
            // CD/DVD, once, EFI.
            (flags(BootSelector::Cd, false, true), [0xA0, 0x14]),
            // BIOS setup, persistent, EFI.
            (flags(BootSelector::Bios, true, true), [0xE0, 0x18]),
        ];
        for (f, [d1, d2]) in cases {
            let r = SetBootFlags(f).request();
            assert_eq!((r.netfn, r.cmd), (0x00, 0x08));
            assert_eq!(r.data, vec![0x05, d1, d2, 0x00, 0x00, 0x00], "{f:?}");
        }
    }

    #[test]
    fn get_boot_flags_layouts() {
        let r = GetBootFlags.request();
        assert_eq!(
            (r.netfn, r.cmd, r.data),
            (0x00, 0x09, vec![0x05, 0x00, 0x00])
        );
        // What ipmi_sim answers after "chassis bootdev pxe" from ipmitool.
        let f = GetBootFlags
            .decode(&[0x01, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00])
            .unwrap();
        assert_eq!(
            f,
            BootFlags {
                valid: false,
                persistent: false,
                efi: false,
                device: BootSelector::Pxe
            }
        );
        let f = GetBootFlags
            .decode(&[0x01, 0x05, 0xE0, 0x18, 0x00, 0x00, 0x00])
            .unwrap();
        assert!(f.valid && f.persistent && f.efi);
        assert_eq!(f.device, BootSelector::Bios);
        let f = GetBootFlags
            .decode(&[0x01, 0x05, 0x80, 0x3C, 0x00, 0x00, 0x00])
            .unwrap();
        assert_eq!(f.device, BootSelector::Other(0x0F));
    }

    #[test]
    fn get_boot_flags_truncated_or_wrong_parameter_is_an_error() {
        let good = [0x01, 0x05, 0x80, 0x04, 0x00, 0x00, 0x00];
        for n in 0..good.len() {
            assert!(GetBootFlags.decode(&good[..n]).is_err(), "{n} bytes");
        }
        let mut other = good;
        other[1] = 0x04;
        assert!(GetBootFlags.decode(&other).is_err());
    }

    #[test]
    fn session_privilege_and_close_layouts() {
        let r = SetSessionPrivilege(Privilege::Administrator).request();
        assert_eq!((r.netfn, r.cmd, r.data), (0x06, 0x3B, vec![0x04]));
        assert_eq!(
            SetSessionPrivilege(Privilege::Administrator).decode(&[0x04]),
            Ok(4)
        );
        assert!(SetSessionPrivilege(Privilege::User).decode(&[]).is_err());

        let r = CloseSession {
            session_id: 0x1234_5678,
        }
        .request();
        assert_eq!(
            (r.netfn, r.cmd, r.data),
            (0x06, 0x3C, vec![0x78, 0x56, 0x34, 0x12])
        );
        assert_eq!(
            CloseSession { session_id: 1 }.completion_meaning(0x87),
            Some("invalid session ID")
        );
    }
}
