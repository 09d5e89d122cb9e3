//! Between the wire (`proto`) and the engine's vocabulary (`model`). Requests
//! are checked here: an UNSPECIFIED enum or a missing field is INVALID_ARGUMENT.

use prost_types::Timestamp;

use crate::bmc::{self, Protocol, Secret};
use crate::engine::{ActionRequest, BootSource, EngineError, EnrollRequest, PowerReading};
use crate::model::{self, *};
use crate::proto as pb;

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

pub fn ts(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn opt_ts(ms: Option<Millis>) -> Option<Timestamp> {
    ms.map(ts)
}

pub fn power(p: PowerState) -> pb::PowerState {
    match p {
        PowerState::On => pb::PowerState::On,
        PowerState::Off => pb::PowerState::Off,
        PowerState::Unknown => pb::PowerState::Unknown,
    }
}

pub fn vm_state(v: VmState) -> pb::VmState {
    match v {
        VmState::Active => pb::VmState::Active,
        VmState::Shutoff => pb::VmState::Shutoff,
        VmState::Error => pb::VmState::Error,
        VmState::Rebuilding => pb::VmState::Rebuilding,
    }
}

fn kind(k: ActionKind) -> pb::ActionKind {
    match k {
        ActionKind::RebootSoft => pb::ActionKind::RebootSoft,
        ActionKind::RebootHard => pb::ActionKind::RebootHard,
        ActionKind::Start => pb::ActionKind::Start,
        ActionKind::Stop => pb::ActionKind::Stop,
        ActionKind::Reinstall => pb::ActionKind::Reinstall,
        ActionKind::ResetState => pb::ActionKind::ResetState,
        ActionKind::Lock => pb::ActionKind::Lock,
        ActionKind::Unlock => pb::ActionKind::Unlock,
    }
}

fn action_state(s: ActionState) -> pb::ActionState {
    match s {
        ActionState::Pending => pb::ActionState::Pending,
        ActionState::Running => pb::ActionState::Running,
        ActionState::Succeeded => pb::ActionState::Succeeded,
        ActionState::Failed => pb::ActionState::Failed,
        ActionState::Superseded => pb::ActionState::Superseded,
    }
}

fn phase(p: StepPhase) -> pb::StepPhase {
    match p {
        StepPhase::Started => pb::StepPhase::Started,
        StepPhase::Finished => pb::StepPhase::Finished,
        StepPhase::Failed => pb::StepPhase::Failed,
        StepPhase::Note => pb::StepPhase::Note,
        StepPhase::Interrupted => pb::StepPhase::Interrupted,
    }
}

fn event_kind(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::PowerChanged => pb::EventKind::PowerChanged,
        EventKind::TaskChanged => pb::EventKind::TaskChanged,
        EventKind::ServerEnrolled => pb::EventKind::ServerEnrolled,
        EventKind::ServerRemoved => pb::EventKind::ServerRemoved,
        EventKind::LockChanged => pb::EventKind::LockChanged,
    }
}

fn protocol(p: Protocol) -> pb::BmcProtocol {
    match p {
        Protocol::Ipmi => pb::BmcProtocol::Ipmi,
        Protocol::Redfish => pb::BmcProtocol::Redfish,
    }
}

pub fn server(r: &ServerRecord) -> pb::Server {
    pb::Server {
        id: r.id.clone(),
        project_id: r.project_id.clone(),
        bmc: Some(pb::BmcInfo {
            protocol: protocol(r.bmc.protocol) as i32,
            address: r.bmc.address.clone(),
            port: r.bmc.port as u32,
            username: r.bmc.username.clone(),
            credential_source: r.bmc.credential.describe(),
            options: r.bmc.options.clone().into_iter().collect(),
        }),
        power_state: power(r.power) as i32,
        power_observed_at: opt_ts(r.power_observed_at),
        vm_state: vm_state(r.vm_state) as i32,
        task: r
            .task
            .as_ref()
            .map(|t| t.1.as_str().to_string())
            .unwrap_or_default(),
        current_action_id: r.task.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
        locked: r.locked,
        locked_by_admin: r.locked_by_admin,
        bmc_error: r.bmc_error.clone().unwrap_or_default(),
        source: r.source.as_str().to_string(),
        created_at: Some(ts(r.created_at)),
        identity: identity(r),
    }
}

/// The identity as last read, with the last read's error; unset when no
/// read was tried yet.
fn identity(r: &ServerRecord) -> Option<pb::BmcIdentity> {
    if !r.identity_tried() {
        return None;
    }
    let id = r.identity.clone().unwrap_or_default();
    let s = |v: Option<String>| v.unwrap_or_default();
    Some(pb::BmcIdentity {
        bmc_manufacturer: s(id.bmc_manufacturer),
        bmc_model: s(id.bmc_model),
        firmware_version: s(id.firmware_version),
        ipmi_version: s(id.ipmi_version),
        system_manufacturer: s(id.system_manufacturer),
        system_model: s(id.system_model),
        serial_number: s(id.serial_number),
        bios_version: s(id.bios_version),
        read_at: opt_ts(r.identity_read_at),
        error: r.identity_error.clone().unwrap_or_default(),
    })
}

fn sensor_kind(k: bmc::SensorKind) -> pb::SensorKind {
    match k {
        bmc::SensorKind::Temperature => pb::SensorKind::Temperature,
        bmc::SensorKind::Fan => pb::SensorKind::Fan,
        bmc::SensorKind::Voltage => pb::SensorKind::Voltage,
        bmc::SensorKind::Current => pb::SensorKind::Current,
        bmc::SensorKind::Power => pb::SensorKind::Power,
        bmc::SensorKind::Other => pb::SensorKind::Other,
    }
}

fn sensor_status(s: bmc::SensorStatus) -> pb::SensorStatus {
    match s {
        bmc::SensorStatus::Ok => pb::SensorStatus::Ok,
        bmc::SensorStatus::Warning => pb::SensorStatus::Warning,
        bmc::SensorStatus::Critical => pb::SensorStatus::Critical,
        bmc::SensorStatus::Unavailable => pb::SensorStatus::Unavailable,
    }
}

pub fn health(server_id: &str, h: &bmc::Health, at: Millis) -> pb::ServerHealth {
    pb::ServerHealth {
        server_id: server_id.to_string(),
        read_at: Some(ts(at)),
        sensors: h
            .sensors
            .iter()
            .map(|s| pb::Sensor {
                name: s.name.clone(),
                kind: sensor_kind(s.kind) as i32,
                value: s.value,
                unit: s.unit.clone(),
                status: sensor_status(s.status) as i32,
                lower_critical: s.thresholds.lower_critical,
                lower_warning: s.thresholds.lower_warning,
                upper_warning: s.thresholds.upper_warning,
                upper_critical: s.thresholds.upper_critical,
                context: s.context.clone().unwrap_or_default(),
            })
            .collect(),
        problems: h.problems.clone(),
        power_watts: h.power_watts(),
        inlet_celsius: h.inlet_celsius(),
    }
}

pub fn bmc_event(e: &bmc::BmcEvent) -> pb::BmcEvent {
    pb::BmcEvent {
        id: e.id.clone(),
        at: e.at.map(|s| Timestamp {
            seconds: s,
            nanos: 0,
        }),
        sensor_type: e.sensor_type.clone(),
        sensor: e.sensor.clone(),
        event: e.event.clone(),
        direction: e.direction.clone(),
        severity: e.severity.clone(),
        message: e.message.clone(),
        raw: e.raw.clone(),
    }
}

pub fn action(a: &model::Action) -> pb::Action {
    pb::Action {
        id: a.id.clone(),
        server_id: a.server_id.clone(),
        kind: kind(a.kind) as i32,
        state: action_state(a.state) as i32,
        params: a.params.clone().into_iter().collect(),
        request_id: a.request_id.clone().unwrap_or_default(),
        caller: Some(pb::Caller {
            id: a.caller.id.clone(),
            project_id: a.caller.project_id.clone().unwrap_or_default(),
            roles: a.caller.roles.clone(),
        }),
        created_at: Some(ts(a.created_at)),
        started_at: opt_ts(a.started_at),
        finished_at: opt_ts(a.finished_at),
        message: a.message.clone(),
        events: a
            .events
            .iter()
            .map(|e| pb::StepEvent {
                at: Some(ts(e.at)),
                step: e.step.clone(),
                phase: phase(e.phase) as i32,
                detail: e.detail.clone(),
            })
            .collect(),
        superseded_by: a.superseded_by.clone().unwrap_or_default(),
    }
}

pub fn event(e: &ServerEvent) -> pb::ServerEvent {
    pb::ServerEvent {
        seq: e.seq,
        at: Some(ts(e.at)),
        server_id: e.server_id.clone(),
        kind: event_kind(e.kind) as i32,
        power_state: power(e.power) as i32,
        vm_state: vm_state(e.vm_state) as i32,
        task: e.task.map(|t| t.as_str().to_string()).unwrap_or_default(),
        action_id: e.action_id.clone().unwrap_or_default(),
        cause: e.cause.clone(),
        bmc_events: e.bmc_events.iter().map(bmc_event).collect(),
    }
}

pub fn power_status(r: &PowerReading) -> pb::PowerStatus {
    pb::PowerStatus {
        server_id: r.server_id.clone(),
        power_state: power(r.power) as i32,
        observed_at: opt_ts(r.observed_at),
        source: if r.fresh { "bmc" } else { "cache" }.into(),
        vm_state: vm_state(r.vm_state) as i32,
        task: r.task.map(|t| t.as_str().to_string()).unwrap_or_default(),
    }
}

// ---- requests ----

/// An id from a request (server, action, project, page token), checked by
/// the one rule for ids (`model::validate_id`); the refusal names `field`.
pub fn id<'a>(field: &str, v: &'a str) -> Result<&'a str, EngineError> {
    model::validate_id(field, v).map_err(invalid)?;
    Ok(v)
}

fn text(field: &str, v: &str, max: usize) -> Result<(), EngineError> {
    model::validate_text(field, v, max).map_err(invalid)
}

/// Bounds of the enrolment fields that are not ids.
const ADDRESS_MAX: usize = 255;
const USERNAME_MAX: usize = 64;
const PASSWORD_MAX: usize = 256;
const OPTIONS_MAX: usize = 32;
const OPTION_VALUE_MAX: usize = 1024;

pub fn request_id(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

pub fn enroll(req: pb::EnrollServerRequest) -> Result<EnrollRequest, EngineError> {
    id("id", &req.id)?;
    id("project_id", &req.project_id)?;
    let bmc = req.bmc.ok_or_else(|| invalid("bmc is required"))?;
    text("bmc.address", &bmc.address, ADDRESS_MAX)?;
    text("bmc.username", &bmc.username, USERNAME_MAX)?;
    if bmc.options.len() > OPTIONS_MAX {
        return Err(invalid(format!(
            "bmc.options has {} entries; at most {OPTIONS_MAX}",
            bmc.options.len()
        )));
    }
    for (k, v) in &bmc.options {
        id("bmc.options key", k)?;
        text(&format!("bmc.options.{k}"), v, OPTION_VALUE_MAX)?;
    }
    let protocol = match pb::BmcProtocol::try_from(bmc.protocol) {
        Ok(pb::BmcProtocol::Ipmi) => Protocol::Ipmi,
        Ok(pb::BmcProtocol::Redfish) => Protocol::Redfish,
        Ok(pb::BmcProtocol::Unspecified) => {
            return Err(invalid(
                "bmc.protocol must be IPMI or REDFISH, not UNSPECIFIED",
            ))
        }
        Err(_) => {
            return Err(invalid(format!(
                "bmc.protocol {} is unknown; it must be IPMI or REDFISH",
                bmc.protocol
            )))
        }
    };
    let port = match bmc.port {
        0 => protocol.default_port(),
        p => u16::try_from(p).map_err(|_| invalid(format!("bmc.port {p} is not a port number")))?,
    };
    let credential = match bmc.secret {
        // Never repeated, not even in part.
        Some(pb::bmc_endpoint::Secret::Password(p)) if p.len() > PASSWORD_MAX => {
            return Err(invalid(format!(
                "bmc.password is longer than {PASSWORD_MAX} bytes"
            )))
        }
        Some(pb::bmc_endpoint::Secret::Password(p)) => Credential::Inline(Secret::new(p)),
        Some(pb::bmc_endpoint::Secret::PasswordFile(f)) => {
            text("bmc.password_file", &f, ADDRESS_MAX)?;
            Credential::File(f)
        }
        None => return Err(invalid("bmc.password or bmc.password_file is required")),
    };
    Ok(EnrollRequest {
        id: req.id,
        project_id: req.project_id,
        bmc: BmcRecord {
            protocol,
            address: bmc.address,
            port,
            username: bmc.username,
            credential,
            options: bmc.options.into_iter().collect(),
        },
        skip_verify: req.skip_verify,
    })
}

pub fn reboot(t: i32) -> Result<ActionRequest, EngineError> {
    match pb::RebootType::try_from(t) {
        Ok(pb::RebootType::Soft) => Ok(ActionRequest::Reboot { hard: false }),
        Ok(pb::RebootType::Hard) => Ok(ActionRequest::Reboot { hard: true }),
        Ok(pb::RebootType::Unspecified) => {
            Err(invalid("reboot type must be SOFT or HARD, not UNSPECIFIED"))
        }
        Err(_) => Err(invalid(format!(
            "reboot type {t} is unknown; it must be SOFT or HARD"
        ))),
    }
}

pub fn reinstall(
    src: Option<pb::reinstall_request::BootSource>,
) -> Result<ActionRequest, EngineError> {
    match src {
        Some(pb::reinstall_request::BootSource::Pxe(true)) => {
            Ok(ActionRequest::Reinstall(BootSource::Pxe))
        }
        Some(pb::reinstall_request::BootSource::VirtualMediaUrl(url)) if !url.is_empty() => {
            Ok(ActionRequest::Reinstall(BootSource::VirtualMedia(url)))
        }
        _ => Err(invalid(
            "reinstall needs a boot source: pxe = true or a virtual_media_url",
        )),
    }
}

pub fn reset_state(s: i32) -> Result<ActionRequest, EngineError> {
    match pb::ResetStateTarget::try_from(s) {
        Ok(pb::ResetStateTarget::Active) => Ok(ActionRequest::ResetState(VmState::Active)),
        Ok(pb::ResetStateTarget::Error) => Ok(ActionRequest::ResetState(VmState::Error)),
        Ok(pb::ResetStateTarget::Unspecified) => Err(invalid(
            "state (the reset-state target) must be ACTIVE or ERROR, not UNSPECIFIED",
        )),
        Err(_) => Err(invalid(format!(
            "state {s} is unknown; the reset-state target must be ACTIVE or ERROR"
        ))),
    }
}

/// Page size: 0 means the default (50); more than 500 is capped.
pub fn page_size(n: u32) -> usize {
    match n {
        0 => 50,
        n => n.min(500) as usize,
    }
}

/// ListBmcEvents' limit: 0 means 100; more than 1,000 is refused.
pub fn bmc_event_limit(n: u32) -> Result<usize, EngineError> {
    match n {
        0 => Ok(100),
        n if n > 1000 => Err(invalid(format!(
            "limit {n} is too large; at most 1000 entries per call"
        ))),
        n => Ok(n as usize),
    }
}

pub fn action_page_token(t: &str) -> Result<Option<i64>, EngineError> {
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<i64>().map(Some).map_err(|_| {
        invalid(format!(
            "page_token {} is not one this service issued",
            model::echo(t)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_enums_are_refused() {
        assert!(matches!(reboot(0), Err(EngineError::InvalidArgument(_))));
        assert!(matches!(reboot(99), Err(EngineError::InvalidArgument(_))));
        assert!(matches!(
            reset_state(0),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(matches!(
            reinstall(None),
            Err(EngineError::InvalidArgument(_))
        ));
        let req = pb::EnrollServerRequest {
            id: "s1".into(),
            project_id: "p".into(),
            bmc: Some(pb::BmcEndpoint {
                protocol: 0,
                address: "a".into(),
                port: 0,
                username: "u".into(),
                secret: Some(pb::bmc_endpoint::Secret::Password("pw".into())),
                options: Default::default(),
            }),
            skip_verify: false,
        };
        let err = enroll(req).unwrap_err().to_string();
        assert!(err.contains("UNSPECIFIED"), "{err}");
    }

    fn enroll_req(id: &str, project: &str) -> pb::EnrollServerRequest {
        pb::EnrollServerRequest {
            id: id.into(),
            project_id: project.into(),
            bmc: Some(pb::BmcEndpoint {
                protocol: pb::BmcProtocol::Ipmi as i32,
                address: "10.0.0.1".into(),
                port: 0,
                username: "u".into(),
                secret: Some(pb::bmc_endpoint::Secret::Password("pw".into())),
                options: Default::default(),
            }),
            skip_verify: true,
        }
    }

    #[test]
    fn every_enrolment_field_is_bounded_and_named() {
        let big = "x".repeat(70_000);
        let err = |r: pb::EnrollServerRequest| match enroll(r) {
            Err(EngineError::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = err(enroll_req(&big, "p1"));
        assert!(m.starts_with("id ") && m.len() < 200, "{m}");
        let m = err(enroll_req("s1", &big));
        assert!(m.starts_with("project_id ") && m.len() < 200, "{m}");
        let mut r = enroll_req("s1", "p1");
        r.bmc.as_mut().unwrap().address = big.clone();
        assert!(err(r).starts_with("bmc.address"));
        let mut r = enroll_req("s1", "p1");
        r.bmc.as_mut().unwrap().username = big.clone();
        assert!(err(r).starts_with("bmc.username"));
        let mut r = enroll_req("s1", "p1");
        r.bmc.as_mut().unwrap().secret = Some(pb::bmc_endpoint::Secret::Password(big.clone()));
        let m = err(r);
        assert!(m.starts_with("bmc.password") && !m.contains("xxx"), "{m}");
        let mut r = enroll_req("s1", "p1");
        r.bmc
            .as_mut()
            .unwrap()
            .options
            .insert("system_id".into(), big.clone());
        assert!(err(r).starts_with("bmc.options.system_id"));
        assert!(enroll(enroll_req("s1", "p1")).is_ok());
    }

    #[test]
    fn a_page_token_is_echoed_briefly() {
        let m = action_page_token(&"z".repeat(70_000))
            .unwrap_err()
            .to_string();
        assert!(m.contains("page_token") && m.len() < 200, "{m}");
    }

    #[test]
    fn the_event_limit_defaults_and_is_bounded() {
        assert_eq!(bmc_event_limit(0).unwrap(), 100);
        assert_eq!(bmc_event_limit(1000).unwrap(), 1000);
        let m = bmc_event_limit(1001).unwrap_err().to_string();
        assert!(m.contains("limit 1001") && m.contains("1000"), "{m}");
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        assert_eq!(
            ts(1_500),
            Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn answers_never_carry_the_password() {
        let req = pb::EnrollServerRequest {
            id: "s1".into(),
            project_id: "p".into(),
            bmc: Some(pb::BmcEndpoint {
                protocol: pb::BmcProtocol::Ipmi as i32,
                address: "a".into(),
                port: 0,
                username: "u".into(),
                secret: Some(pb::bmc_endpoint::Secret::Password("hunter2".into())),
                options: Default::default(),
            }),
            skip_verify: true,
        };
        let e = enroll(req).unwrap();
        assert_eq!(e.bmc.port, 623);
        let rec = ServerRecord {
            id: e.id,
            project_id: e.project_id,
            bmc: e.bmc,
            power: PowerState::Unknown,
            power_observed_at: None,
            vm_state: VmState::Error,
            task: None,
            locked: false,
            locked_by_admin: false,
            bmc_error: None,
            source: Source::Api,
            created_at: 0,
            identity: None,
            identity_read_at: None,
            identity_error: None,
        };
        let wire = format!("{:?}", server(&rec));
        assert!(!wire.contains("hunter2"));
        assert!(wire.contains("inline"));
    }
}
