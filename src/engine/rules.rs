//! Whether an action may start, decided from the server's recorded state alone.
//! Every request gets one explicit answer: accept, accept and supersede the
//! running action, or refuse with the reason (`409` in the compute APIs).

use crate::model::{ActionKind, ServerRecord, VmState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it.
    Accept,
    /// Start it; the running action (this id) ends as SUPERSEDED.
    Supersede(String),
}

/// A refusal and its reason, phrased for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The vm-states an action may start from (the compute APIs' rules).
pub fn allowed_from(kind: ActionKind) -> &'static [VmState] {
    use VmState::*;
    match kind {
        ActionKind::RebootSoft => &[Active],
        ActionKind::RebootHard => &[Active, Shutoff, Error],
        ActionKind::Start => &[Shutoff],
        ActionKind::Stop => &[Active, Error],
        ActionKind::Reinstall => &[Active, Shutoff, Error],
        ActionKind::ResetState | ActionKind::Lock | ActionKind::Unlock => {
            &[Active, Shutoff, Error, Rebuilding]
        }
    }
}

pub fn decide(
    server: &ServerRecord,
    kind: ActionKind,
    caller_is_admin: bool,
) -> Result<Decision, Refusal> {
    if server.locked && !caller_is_admin && !matches!(kind, ActionKind::Lock | ActionKind::Unlock) {
        return Err(Refusal(format!(
            "server {} is locked; only an admin may act on it until it is unlocked",
            server.id
        )));
    }
    match kind {
        ActionKind::Lock | ActionKind::Unlock => return Ok(Decision::Accept),
        ActionKind::ResetState => {
            return Ok(match &server.task {
                Some((running, _)) => Decision::Supersede(running.clone()),
                None => Decision::Accept,
            })
        }
        _ => {}
    }
    let mut decision = Decision::Accept;
    if let Some((running, running_kind)) = &server.task {
        if kind == ActionKind::RebootHard && *running_kind == ActionKind::RebootSoft {
            // The way a user escalates a stuck soft reboot.
            decision = Decision::Supersede(running.clone());
        } else {
            return Err(Refusal(format!(
                "server {} has action {running} ({running_kind}) in progress",
                server.id
            )));
        }
    }
    // A HARD reboot that supersedes a SOFT one starts from the state the SOFT one
    // left (ACTIVE), so the vm-state check applies to both paths.
    if !allowed_from(kind).contains(&server.vm_state) {
        return Err(Refusal(format!(
            "server {} is {}; {kind} is allowed only from {}",
            server.id,
            server.vm_state,
            allowed_from(kind)
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::{Protocol, Secret};
    use crate::model::*;

    fn server(vm: VmState, task: Option<ActionKind>, locked: bool) -> ServerRecord {
        ServerRecord {
            id: "s1".into(),
            project_id: "p".into(),
            bmc: BmcRecord {
                protocol: Protocol::Ipmi,
                address: "a".into(),
                port: 1,
                username: "u".into(),
                credential: Credential::Inline(Secret::new("x")),
                options: Default::default(),
            },
            power: PowerState::On,
            power_observed_at: None,
            vm_state: vm,
            task: task.map(|k| ("run-1".to_string(), k)),
            locked,
            locked_by_admin: false,
            bmc_error: None,
            source: Source::Api,
            created_at: 0,
            identity: None,
            identity_read_at: None,
            identity_error: None,
        }
    }

    #[test]
    fn vm_state_rules() {
        use ActionKind::*;
        use VmState::*;
        let cases = [
            (RebootSoft, Active, true),
            (RebootSoft, Shutoff, false),
            (RebootSoft, Error, false),
            (RebootHard, Shutoff, true),
            (RebootHard, Error, true),
            (Start, Shutoff, true),
            (Start, Active, false),
            (Stop, Active, true),
            (Stop, Error, true),
            (Stop, Shutoff, false),
            (Reinstall, Error, true),
            (Reinstall, Rebuilding, false),
        ];
        for (kind, vm, ok) in cases {
            let got = decide(&server(vm, None, false), kind, false);
            assert_eq!(got.is_ok(), ok, "{kind} from {vm}: {got:?}");
        }
    }

    #[test]
    fn running_task_refuses_naming_it_except_hard_over_soft() {
        let s = server(VmState::Active, Some(ActionKind::RebootSoft), false);
        let err = decide(&s, ActionKind::Stop, false).unwrap_err();
        assert!(
            err.0.contains("run-1") && err.0.contains("reboot_soft"),
            "{err:?}"
        );
        assert_eq!(
            decide(&s, ActionKind::RebootHard, false),
            Ok(Decision::Supersede("run-1".into()))
        );
        let hard = server(VmState::Active, Some(ActionKind::RebootHard), false);
        assert!(decide(&hard, ActionKind::RebootHard, false).is_err());
    }

    #[test]
    fn reset_state_supersedes_anything() {
        let s = server(VmState::Rebuilding, Some(ActionKind::Reinstall), false);
        assert_eq!(
            decide(&s, ActionKind::ResetState, true),
            Ok(Decision::Supersede("run-1".into()))
        );
    }

    #[test]
    fn lock_refuses_non_admin_only() {
        let s = server(VmState::Active, None, true);
        let err = decide(&s, ActionKind::RebootHard, false).unwrap_err();
        assert!(err.0.contains("locked"));
        assert_eq!(
            decide(&s, ActionKind::RebootHard, true),
            Ok(Decision::Accept)
        );
        assert_eq!(decide(&s, ActionKind::Unlock, false), Ok(Decision::Accept));
    }
}
