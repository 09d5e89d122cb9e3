//! What callers ask the engine for, and what it answers, independent of the
//! wire format.

use std::collections::BTreeMap;

use super::{EngineError, Result};
use crate::model::*;
use crate::policy::Op;

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRequest {
    Reboot { hard: bool },
    Start,
    Stop { force: bool },
    Reinstall(BootSource),
    ResetState(VmState),
    Lock,
    Unlock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    Pxe,
    VirtualMedia(String),
}

impl ActionRequest {
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionRequest::Reboot { hard: false } => ActionKind::RebootSoft,
            ActionRequest::Reboot { hard: true } => ActionKind::RebootHard,
            ActionRequest::Start => ActionKind::Start,
            ActionRequest::Stop { .. } => ActionKind::Stop,
            ActionRequest::Reinstall(_) => ActionKind::Reinstall,
            ActionRequest::ResetState(_) => ActionKind::ResetState,
            ActionRequest::Lock => ActionKind::Lock,
            ActionRequest::Unlock => ActionKind::Unlock,
        }
    }

    pub(super) fn op(&self) -> Op {
        match self {
            ActionRequest::Reboot { .. } => Op::Reboot,
            ActionRequest::Start => Op::Start,
            ActionRequest::Stop { .. } => Op::Stop,
            ActionRequest::Reinstall(_) => Op::Reinstall,
            ActionRequest::ResetState(_) => Op::ResetState,
            ActionRequest::Lock => Op::Lock,
            ActionRequest::Unlock => Op::Unlock,
        }
    }

    /// The request's arguments, kept on the action.
    pub(super) fn params(&self) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        match self {
            ActionRequest::Stop { force } => {
                p.insert("force".into(), force.to_string());
            }
            ActionRequest::Reinstall(BootSource::Pxe) => {
                p.insert("boot_source".into(), "pxe".into());
            }
            ActionRequest::Reinstall(BootSource::VirtualMedia(url)) => {
                p.insert("boot_source".into(), "virtual_media".into());
                p.insert("image_url".into(), url.clone());
            }
            ActionRequest::ResetState(state) => {
                p.insert("state".into(), state.as_str().into());
            }
            _ => {}
        }
        p
    }

    /// Rebuilds a request from a stored action (for recovery).
    pub(super) fn from_action(a: &Action) -> Option<ActionRequest> {
        Some(match a.kind {
            ActionKind::RebootSoft => ActionRequest::Reboot { hard: false },
            ActionKind::RebootHard => ActionRequest::Reboot { hard: true },
            ActionKind::Start => ActionRequest::Start,
            ActionKind::Stop => ActionRequest::Stop {
                force: a.params.get("force").map(|f| f == "true").unwrap_or(false),
            },
            ActionKind::Reinstall => match a.params.get("image_url") {
                Some(url) => ActionRequest::Reinstall(BootSource::VirtualMedia(url.clone())),
                None => ActionRequest::Reinstall(BootSource::Pxe),
            },
            ActionKind::ResetState => {
                ActionRequest::ResetState(VmState::parse(a.params.get("state")?)?)
            }
            ActionKind::Lock => ActionRequest::Lock,
            ActionKind::Unlock => ActionRequest::Unlock,
        })
    }
}

/// What an operator enrols.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub id: String,
    pub project_id: String,
    pub bmc: BmcRecord,
    pub skip_verify: bool,
}

/// Answer to a power-state read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerReading {
    pub server_id: String,
    pub power: PowerState,
    pub observed_at: Option<Millis>,
    pub fresh: bool,
    pub vm_state: VmState,
    pub task: Option<ActionKind>,
}

pub(super) fn validate_enroll(req: &EnrollRequest) -> Result<()> {
    let bad = |m: String| Err(EngineError::InvalidArgument(m));
    if req.project_id.trim().is_empty() {
        return bad(format!("server {}: project_id must not be empty", req.id));
    }
    if req.bmc.address.trim().is_empty() {
        return bad(format!("server {}: BMC address must not be empty", req.id));
    }
    if req.bmc.username.is_empty() {
        return bad(format!("server {}: BMC username must not be empty", req.id));
    }
    match &req.bmc.credential {
        Credential::Inline(s) if s.expose().is_empty() => {
            bad(format!("server {}: BMC password must not be empty", req.id))
        }
        Credential::File(name)
            if name.is_empty() || name.contains('/') || name.starts_with('.') =>
        {
            bad(format!(
                "server {}: password_file must be a plain file name in the credentials directory",
                req.id
            ))
        }
        _ => Ok(()),
    }
}
