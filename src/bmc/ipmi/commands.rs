//! Typed IPMI commands as implementations of `ipmi-rs-core`'s
//! [`IpmiCommand`]: the request is the crate's [`Message`] (`From<Cmd> for
//! Message`), the answer is read by `parse_success_response` from the data
//! *after* the completion code, and never panics. Each layout follows the
//! IPMI v2.0 specification table named in its doc comment.
//!
//! The crate defines no chassis commands and none of the session commands
//! sent inside an RMCP+ session, so those are ours; where the crate has the
//! command (Get Device ID), the crate's is used. [`Command`] adds what the
//! driver needs beyond [`IpmiCommand`]: a name for logs and errors, whether a
//! re-send is harmless, and the meaning of command-specific completion codes.

use std::fmt::Debug;

pub use ipmi_rs_core::app::{DeviceId, GetDeviceId};
pub use ipmi_rs_core::connection::{IpmiCommand, Message, NetFn};

use super::message::DecodeError;

/// What the driver needs to know of an [`IpmiCommand`] to send it: any
/// command, the crate's or ours, runs through the driver once it has this.
pub trait Command: IpmiCommand<Error: Debug + 'static> {
    /// For logs and error messages.
    const NAME: &'static str;
    /// Whether sending it twice can do more than sending it once; the driver
    /// retransmits only commands that say true.
    fn idempotent(&self) -> bool {
        true
    }
    /// The meaning of a command-specific completion code (0x80..=0xBE).
    fn completion_meaning(_cc: u8) -> Option<&'static str> {
        None
    }
}

/// Reads an answer's data (after the completion code) with `C`'s parser. A
/// failure becomes a [`DecodeError`]: ours already are one; the crate's
/// errors are named by their `Debug` (they implement nothing else).
pub fn decode<C: Command>(data: &[u8]) -> Result<C::Output, DecodeError> {
    C::parse_success_response(data).map_err(|e| {
        let text = format!("{e:?}");
        match (Box::new(e) as Box<dyn std::any::Any>).downcast::<DecodeError>() {
            Ok(ours) => *ours,
            Err(_) => DecodeError::Invalid(format!(
                "{}: the answer cannot be read ({text}; {} data bytes)",
                C::NAME,
                data.len()
            )),
        }
    })
}

// ---------------------------------------------------------------------------
// Get Device ID — NetFn App, cmd 0x01 (table 20-2): the crate's command.

impl Command for GetDeviceId {
    const NAME: &'static str = "Get Device ID";
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

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Message {
        Message::new_request(NetFn::Chassis, 0x01, vec![])
    }
}

impl Command for GetChassisStatus {
    const NAME: &'static str = "Get Chassis Status";
}

impl IpmiCommand for GetChassisStatus {
    type Output = ChassisStatus;
    type Error = DecodeError;
    fn parse_success_response(d: &[u8]) -> Result<ChassisStatus, DecodeError> {
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

impl From<ChassisControl> for Message {
    fn from(c: ChassisControl) -> Message {
        Message::new_request(NetFn::Chassis, 0x02, vec![c.0 as u8])
    }
}

impl IpmiCommand for ChassisControl {
    type Output = ();
    type Error = DecodeError;
    fn parse_success_response(_d: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Command for ChassisControl {
    const NAME: &'static str = "Chassis Control";
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

impl From<GetSystemRestartCause> for Message {
    fn from(_: GetSystemRestartCause) -> Message {
        Message::new_request(NetFn::Chassis, 0x07, vec![])
    }
}

impl Command for GetSystemRestartCause {
    const NAME: &'static str = "Get System Restart Cause";
}

impl IpmiCommand for GetSystemRestartCause {
    type Output = SystemRestartCause;
    type Error = DecodeError;
    fn parse_success_response(d: &[u8]) -> Result<SystemRestartCause, DecodeError> {
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

impl From<SetBootFlags> for Message {
    fn from(c: SetBootFlags) -> Message {
        // Byte 1: bit 7 = 0 (parameter valid/unlocked), bits 6:0 = selector.
        let mut data = vec![BOOT_FLAGS_PARAM];
        data.extend_from_slice(&c.0.encode());
        Message::new_request(NetFn::Chassis, 0x08, data)
    }
}

impl IpmiCommand for SetBootFlags {
    type Output = ();
    type Error = DecodeError;
    fn parse_success_response(_d: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Command for SetBootFlags {
    const NAME: &'static str = "Set System Boot Options";
    fn completion_meaning(cc: u8) -> Option<&'static str> {
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

impl From<GetBootFlags> for Message {
    fn from(_: GetBootFlags) -> Message {
        // Parameter selector, set selector, block selector.
        Message::new_request(NetFn::Chassis, 0x09, vec![BOOT_FLAGS_PARAM, 0x00, 0x00])
    }
}

impl IpmiCommand for GetBootFlags {
    type Output = BootFlags;
    type Error = DecodeError;
    fn parse_success_response(d: &[u8]) -> Result<BootFlags, DecodeError> {
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
}

impl Command for GetBootFlags {
    const NAME: &'static str = "Get System Boot Options";
    fn completion_meaning(cc: u8) -> Option<&'static str> {
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

impl From<SetSessionPrivilege> for Message {
    fn from(c: SetSessionPrivilege) -> Message {
        Message::new_request(NetFn::App, 0x3B, vec![c.0 as u8])
    }
}

impl IpmiCommand for SetSessionPrivilege {
    /// The new privilege level.
    type Output = u8;
    type Error = DecodeError;
    fn parse_success_response(d: &[u8]) -> Result<u8, DecodeError> {
        need("Set Session Privilege Level response", d, 1)?;
        Ok(d[0] & 0x0f)
    }
}

impl Command for SetSessionPrivilege {
    const NAME: &'static str = "Set Session Privilege Level";
    fn completion_meaning(cc: u8) -> Option<&'static str> {
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

impl From<CloseSession> for Message {
    fn from(c: CloseSession) -> Message {
        Message::new_request(NetFn::App, 0x3C, c.session_id.to_le_bytes().to_vec())
    }
}

impl IpmiCommand for CloseSession {
    type Output = ();
    type Error = DecodeError;
    fn parse_success_response(_d: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Command for CloseSession {
    const NAME: &'static str = "Close Session";
    fn completion_meaning(cc: u8) -> Option<&'static str> {
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

    /// The request as (NetFn, command, data).
    fn req<C: Command>(c: C) -> (u8, u8, Vec<u8>) {
        let m: Message = c.into();
        (m.netfn_raw(), m.cmd(), m.data().to_vec())
    }

    #[test]
    fn get_chassis_status_layout() {
        assert_eq!(req(GetChassisStatus), (0x00, 0x01, vec![]));
        // Power on, restore policy "previous" (01b in bits 6:5), no events.
        let s = decode::<GetChassisStatus>(&[0x21, 0x00, 0x40, 0x00]).unwrap();
        assert!(s.power_on);
        assert_eq!(s.restore_policy, 1);
        assert_eq!(s.misc, 0x40);
        // Optional byte 4 absent; power fault + control fault, power off.
        let s = decode::<GetChassisStatus>(&[0x18, 0x00, 0x00]).unwrap();
        assert!(!s.power_on && s.power_fault && s.power_control_fault);
    }

    #[test]
    fn get_chassis_status_truncated_is_an_error() {
        for n in 0..3 {
            assert!(decode::<GetChassisStatus>(&[0x01; 3][..n]).is_err());
        }
    }

    #[test]
    fn get_system_restart_cause_layout() {
        assert_eq!(req(GetSystemRestartCause), (0x00, 0x07, vec![]));
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
            let got = decode::<GetSystemRestartCause>(&[byte, 0x01]).unwrap();
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
        let got = decode::<GetSystemRestartCause>(&[0x04, 0x0F, 0xAA]).unwrap();
        assert_eq!((got.cause, got.channel), (RestartCause::Watchdog, 0x0F));
        assert!(decode::<GetSystemRestartCause>(&[]).is_err());
        assert!(decode::<GetSystemRestartCause>(&[0x01]).is_err());
    }

    #[test]
    fn get_system_restart_cause_on_the_wire() {
        use super::super::message::{decode_response, encode_request};
        // rsAddr BMC, NetFn Chassis/LUN 0, chk1, rqAddr 81h, rqSeq 5, cmd 07h, chk2.
        assert_eq!(
            encode_request(&GetSystemRestartCause.into(), 5),
            [0x20, 0x00, 0xE0, 0x81, 0x14, 0x07, 0x64]
        );
        // The answer: NetFn Chassis response (01h), cc 00h, cause 1h, channel 1.
        let rsp =
            decode_response(&[0x81, 0x04, 0x7B, 0x20, 0x14, 0x07, 0x00, 0x01, 0x01, 0xC3]).unwrap();
        assert_eq!(
            (rsp.netfn_raw(), rsp.cmd(), rsp.seq(), rsp.cc()),
            (0x01, 0x07, 5, 0x00)
        );
        assert_eq!(
            decode::<GetSystemRestartCause>(rsp.data()).unwrap().cause,
            RestartCause::ChassisControl
        );
        // What ipmi_sim 2.0.33 answers: invalid command, no data.
        let rsp = decode_response(&[0x81, 0x04, 0x7B, 0x20, 0x14, 0x07, 0xC1, 0x04]).unwrap();
        assert_eq!((rsp.cc(), rsp.data().len()), (0xC1, 0));
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
            assert_eq!(c.idempotent(), idem, "{action:?}");
            assert_eq!(req(c), (0x00, 0x02, vec![byte]));
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
            assert_eq!(
                req(SetBootFlags(f)),
                (0x00, 0x08, vec![0x05, d1, d2, 0x00, 0x00, 0x00]),
                "{f:?}"
            );
        }
    }

    #[test]
    fn get_boot_flags_layouts() {
        assert_eq!(req(GetBootFlags), (0x00, 0x09, vec![0x05, 0x00, 0x00]));
        // What ipmi_sim answers after "chassis bootdev pxe" from ipmitool.
        let f = decode::<GetBootFlags>(&[0x01, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(
            f,
            BootFlags {
                valid: false,
                persistent: false,
                efi: false,
                device: BootSelector::Pxe
            }
        );
        let f = decode::<GetBootFlags>(&[0x01, 0x05, 0xE0, 0x18, 0x00, 0x00, 0x00]).unwrap();
        assert!(f.valid && f.persistent && f.efi);
        assert_eq!(f.device, BootSelector::Bios);
        let f = decode::<GetBootFlags>(&[0x01, 0x05, 0x80, 0x3C, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(f.device, BootSelector::Other(0x0F));
    }

    #[test]
    fn get_boot_flags_truncated_or_wrong_parameter_is_an_error() {
        let good = [0x01, 0x05, 0x80, 0x04, 0x00, 0x00, 0x00];
        for n in 0..good.len() {
            assert!(decode::<GetBootFlags>(&good[..n]).is_err(), "{n} bytes");
        }
        let mut other = good;
        other[1] = 0x04;
        assert!(decode::<GetBootFlags>(&other).is_err());
    }

    #[test]
    fn session_privilege_and_close_layouts() {
        assert_eq!(
            req(SetSessionPrivilege(Privilege::Administrator)),
            (0x06, 0x3B, vec![0x04])
        );
        assert_eq!(decode::<SetSessionPrivilege>(&[0x04]), Ok(4));
        assert!(decode::<SetSessionPrivilege>(&[]).is_err());

        assert_eq!(
            req(CloseSession {
                session_id: 0x1234_5678
            }),
            (0x06, 0x3C, vec![0x78, 0x56, 0x34, 0x12])
        );
        assert_eq!(
            CloseSession::completion_meaning(0x87),
            Some("invalid session ID")
        );
        assert_eq!(GetChassisStatus::completion_meaning(0x87), None);
    }
}
