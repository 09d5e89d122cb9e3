//! What the agent does at start with actions a previous run left unfinished.
//!
//! The rule (`DESIGN.md`): a non-idempotent step (hard reset, power cycle,
//! graceful restart) that was recorded as started may have reached the BMC, so
//! it is never sent again. The action is finished by the evidence: the power
//! state the BMC reports. An action that had sent no such step is run again
//! from the start: its other steps are safe to repeat.

use std::sync::Arc;

use tracing::{info, warn};

use super::runner::Mode;
use super::{ActionRequest, Engine, Result};
use crate::model::{Action, StepPhase, VmState};

/// Step names whose BMC command must never be sent twice.
fn is_non_idempotent(step: &str) -> bool {
    matches!(step, "hard_reset" | "power_cycle" | "graceful_restart")
}

/// The last step that was started and neither finished nor failed.
pub(super) fn open_step(a: &Action) -> Option<String> {
    let mut open: Option<&str> = None;
    for e in &a.events {
        match e.phase {
            StepPhase::Started => open = Some(&e.step),
            StepPhase::Finished | StepPhase::Failed if open == Some(e.step.as_str()) => open = None,
            _ => {}
        }
    }
    open.map(str::to_string)
}

/// How to resume an interrupted action.
pub(super) fn resume_mode(a: &Action) -> Mode {
    let sent = a
        .events
        .iter()
        .rfind(|e| e.phase == StepPhase::Started && is_non_idempotent(&e.step));
    match sent {
        Some(s) => Mode::Confirm {
            step: s.step.clone(),
            answered: a
                .events
                .iter()
                .any(|e| e.phase == StepPhase::Finished && e.step == s.step && e.at >= s.at),
        },
        None => Mode::Rerun,
    }
}

pub(super) fn recover(engine: &Arc<Engine>) -> Result<()> {
    let unfinished = engine.store.unfinished_actions()?;
    let mut inner = engine.lock();
    // A task whose action already ended (a crash between two writes) is cleared.
    for slot in inner.servers.values_mut() {
        if let Some((id, _)) = &slot.rec.task {
            if !unfinished.iter().any(|a| &a.id == id) {
                slot.rec.task = None;
                engine.store.put_server(&slot.rec)?;
            }
        }
    }
    drop(inner);
    for a in unfinished {
        let server_known = engine.lock().servers.contains_key(&a.server_id);
        let req = ActionRequest::from_action(&a);
        let (Some(req), true, true) = (req, server_known, a.kind.uses_bmc()) else {
            warn!(action_id = %a.id, server_id = %a.server_id, "cannot resume action after restart");
            engine.finish(
                &a.id,
                Err("the agent restarted and could not resume this action (server removed or action unreadable)".into()),
                VmState::Error,
            )?;
            continue;
        };
        if let Some(open) = open_step(&a) {
            engine.add_step(
                &a.id,
                &open,
                StepPhase::Failed,
                "no answer recorded: the agent stopped while this step was in flight",
            )?;
        }
        let mode = resume_mode(&a);
        info!(action_id = %a.id, server_id = %a.server_id, mode = ?mode, "resuming action after restart");
        let mut inner = engine.lock();
        if let Some(slot) = inner.servers.get_mut(&a.server_id) {
            slot.rec.task = Some((a.id.clone(), a.kind));
            engine.store.put_server(&slot.rec)?;
        }
        engine.spawn_runner(&mut inner, &a, req, mode);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn action(steps: &[(&str, StepPhase)]) -> Action {
        Action {
            id: "a".into(),
            server_id: "s".into(),
            kind: ActionKind::RebootHard,
            state: ActionState::Running,
            params: Default::default(),
            request_id: None,
            caller: Caller::agent(),
            created_at: 0,
            started_at: None,
            finished_at: None,
            message: String::new(),
            events: steps
                .iter()
                .enumerate()
                .map(|(i, (s, p))| StepEvent {
                    at: i as i64,
                    step: s.to_string(),
                    phase: *p,
                    detail: String::new(),
                })
                .collect(),
            superseded_by: None,
        }
    }

    #[test]
    fn a_sent_reset_is_never_rerun() {
        use StepPhase::*;
        let a = action(&[
            ("read_power", Started),
            ("read_power", Finished),
            ("hard_reset", Started),
        ]);
        assert_eq!(open_step(&a).as_deref(), Some("hard_reset"));
        assert_eq!(
            resume_mode(&a),
            Mode::Confirm {
                step: "hard_reset".into(),
                answered: false
            }
        );
        // Even once recovery closed the open step, a second restart must not re-send.
        let a = action(&[("hard_reset", Started), ("hard_reset", Failed)]);
        assert!(matches!(
            resume_mode(&a),
            Mode::Confirm {
                answered: false,
                ..
            }
        ));
    }

    #[test]
    fn only_idempotent_steps_sent_means_rerun() {
        use StepPhase::*;
        let a = action(&[
            ("graceful_off", Started),
            ("graceful_off", Finished),
            ("wait_off", Started),
        ]);
        assert_eq!(resume_mode(&a), Mode::Rerun);
        assert_eq!(open_step(&a).as_deref(), Some("wait_off"));
    }
}
