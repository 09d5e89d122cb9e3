//! How the trait's commands map onto Redfish values, and back.

use super::model::{BootSource, ComputerSystem, PowerState, ResetType};
use crate::bmc::{BootDevice, Power, PowerOp, RestartMarker};

/// Every power command, in the order capabilities list them.
pub const ALL_OPS: [PowerOp; 6] = PowerOp::ALL;

/// The reset types that carry out `op`, preferred first.
pub fn candidates(op: PowerOp) -> &'static [ResetType] {
    match op {
        PowerOp::On => &[ResetType::On, ResetType::ForceOn],
        PowerOp::GracefulOff => &[ResetType::GracefulShutdown],
        PowerOp::ForceOff => &[ResetType::ForceOff],
        PowerOp::HardReset => &[ResetType::ForceRestart],
        PowerOp::PowerCycle => &[ResetType::PowerCycle],
        PowerOp::GracefulRestart => &[ResetType::GracefulRestart],
    }
}

/// The reset type to send for `op`: the first candidate the system allows, or
/// the standard one when the BMC lists no allowable values (`None`).
pub fn reset_type_for(op: PowerOp, allowed: Option<&[ResetType]>) -> Option<ResetType> {
    let c = candidates(op);
    match allowed {
        None => c.first().cloned(),
        Some(list) => c.iter().find(|t| list.contains(t)).cloned(),
    }
}

/// The power commands a system offers.
pub fn power_ops(allowed: Option<&[ResetType]>) -> Vec<PowerOp> {
    ALL_OPS
        .into_iter()
        .filter(|op| reset_type_for(*op, allowed).is_some())
        .collect()
}

/// `BootSourceOverrideTarget` for a one-time boot device.
pub fn boot_source(device: BootDevice) -> BootSource {
    match device {
        BootDevice::Pxe => BootSource::Pxe,
        BootDevice::Disk => BootSource::Hdd,
        BootDevice::Cd => BootSource::Cd,
        BootDevice::Bios => BootSource::BiosSetup,
    }
}

/// The boot devices a system offers (all of them when it lists none).
pub fn boot_devices(allowed: Option<&[BootSource]>) -> Vec<BootDevice> {
    [
        BootDevice::Pxe,
        BootDevice::Disk,
        BootDevice::Cd,
        BootDevice::Bios,
    ]
    .into_iter()
    .filter(|d| allowed.is_none_or(|list| list.contains(&boot_source(*d))))
    .collect()
}

/// `PowerState` as the trait sees it: a machine powering off still has power,
/// one powering on does not have it yet.
pub fn power(state: &PowerState) -> Option<Power> {
    match state {
        PowerState::On | PowerState::PoweringOff | PowerState::Paused => Some(Power::On),
        PowerState::Off | PowerState::PoweringOn => Some(Power::Off),
        PowerState::Other(_) => None,
    }
}

/// Parses allowable values given as strings (an ActionInfo's parameters).
pub fn reset_types(values: &[String]) -> Vec<ResetType> {
    values.iter().map(|v| ResetType::from(v.as_str())).collect()
}

/// A timestamp worth keeping: some firmware fills a never-set time with zeros
/// ("0000-00-00T00:00:00+00:00") or an empty string, which would read as a
/// change the first time a real value appears.
fn real_time(t: &Option<String>) -> Option<String> {
    t.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with("0000-00-00"))
        .map(str::to_string)
}

/// What the system says about its last restart (`LastResetTime`,
/// `BootProgress`), or `None` when it says nothing. `BootProgress.LastState`
/// "OEM" is shown with the vendor's `OemLastState` as "OEM (name)", so that
/// two OEM states are not taken for the same one.
pub fn restart_marker(sys: &ComputerSystem) -> Option<RestartMarker> {
    let progress = sys.boot_progress.as_ref();
    let state = progress
        .and_then(|p| p.last_state.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            match progress
                .and_then(|p| p.oem_last_state.as_deref())
                .filter(|o| s == "OEM" && !o.trim().is_empty())
            {
                Some(oem) => format!("OEM ({})", oem.trim()),
                None => s.to_string(),
            }
        });
    let marker = RestartMarker {
        last_reset_time: real_time(&sys.last_reset_time),
        boot_progress: state,
        boot_progress_time: progress.and_then(|p| real_time(&p.last_state_time)),
        restart_cause: None,
    };
    (!marker.is_empty()).then_some(marker)
}

/// Whether the system shows restart evidence at all: a real `LastResetTime`
/// or a `BootProgress` state (even "None", which moves at the next boot). A
/// property that is there but never set (zeros) does not count: a BMC that
/// does not track restarts would leave every restart unconfirmed.
pub fn has_restart_evidence(sys: &ComputerSystem) -> bool {
    restart_marker(sys).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_falls_back_to_force_on() {
        let allowed = [ResetType::ForceOn, ResetType::ForceOff];
        assert_eq!(
            reset_type_for(PowerOp::On, Some(&allowed)),
            Some(ResetType::ForceOn)
        );
        assert_eq!(
            reset_type_for(PowerOp::GracefulRestart, Some(&allowed)),
            None
        );
        assert_eq!(
            power_ops(Some(&allowed)),
            vec![PowerOp::On, PowerOp::ForceOff]
        );
    }

    #[test]
    fn no_allowable_values_means_the_standard_set() {
        assert_eq!(power_ops(None), ALL_OPS.to_vec());
        assert_eq!(
            reset_type_for(PowerOp::HardReset, None),
            Some(ResetType::ForceRestart)
        );
    }

    #[test]
    fn boot_devices_follow_allowable_values() {
        let allowed = [
            BootSource::Pxe,
            BootSource::Cd,
            BootSource::Hdd,
            BootSource::UefiHttp,
        ];
        assert_eq!(
            boot_devices(Some(&allowed)),
            vec![BootDevice::Pxe, BootDevice::Disk, BootDevice::Cd]
        );
    }
}
