//! What the agent does at start with actions a previous run left unfinished.
//!
//! The rule (`DESIGN.md`): the step log is the program counter. Each
//! unfinished action is resumed by running its program again over its log
//! (see `replay` and `runner`): steps recorded as ended are not repeated, and
//! the action continues at the first step that is not. A step that was in
//! flight is first marked `interrupted`; a non-idempotent one (hard reset,
//! power cycle, graceful restart) is never sent again, and the action is
//! finished by the evidence the BMC shows.

use std::sync::Arc;

use tracing::{info, warn};

use super::replay;
use super::{ActionRequest, Engine, Result};
use crate::model::{now_ms, ActionState, StepEvent, StepPhase, VmState};
use crate::store::Write;

pub(super) fn recover(engine: &Arc<Engine>) -> Result<()> {
    let unfinished = engine.store.unfinished_actions()?;
    let mut inner = engine.lock();
    // A task whose action already ended (a crash between two writes) is cleared.
    let mut cleared = Vec::new();
    for slot in inner.servers.values_mut() {
        if let Some((id, _)) = &slot.rec.task {
            if !unfinished.iter().any(|a| &a.id == id) {
                slot.rec.task = None;
                cleared.push(Write::PutServer(slot.rec.clone()));
            }
        }
    }
    drop(inner);
    engine.store.write_now(cleared)?;
    for mut a in unfinished {
        let server_known = engine.lock().servers.contains_key(&a.server_id);
        let req = ActionRequest::from_action(&a);
        let (Some(req), true, true) = (req, server_known, a.kind.uses_bmc()) else {
            warn!(action_id = %a.id, server_id = %a.server_id, "cannot resume action after restart");
            let mut writes = vec![Write::EndAction {
                id: a.id.clone(),
                state: ActionState::Failed,
                message: "the agent restarted and could not resume this action (server removed or action unreadable)".into(),
                at: now_ms(),
                superseded_by: None,
            }];
            if let Some(slot) = engine.lock().servers.get_mut(&a.server_id) {
                if slot.rec.task.as_ref().is_some_and(|t| t.0 == a.id) {
                    slot.rec.task = None;
                    slot.rec.vm_state = VmState::Error;
                    writes.push(Write::PutServer(slot.rec.clone()));
                }
            }
            engine.store.write_now(writes)?;
            continue;
        };
        if let Some(open) = replay::in_flight(&a.events) {
            engine.store.write_now(vec![Write::AddStep {
                action_id: a.id.clone(),
                step: StepEvent {
                    at: now_ms(),
                    step: open,
                    phase: StepPhase::Interrupted,
                    detail: "the agent stopped while this step was in flight; whether the BMC received it is unknown".into(),
                    data: None,
                },
            }])?;
            // The runner reads the log as it is now.
            a = engine.store.get_action(&a.id)?.unwrap_or(a);
        }
        info!(action_id = %a.id, server_id = %a.server_id, steps = a.events.len(), "resuming action after restart");
        let mut inner = engine.lock();
        if let Some(slot) = inner.servers.get_mut(&a.server_id) {
            slot.rec.task = Some((a.id.clone(), a.kind));
            engine
                .store
                .write_now(vec![Write::PutServer(slot.rec.clone())])?;
        }
        engine.spawn_runner(&mut inner, &a, req, true);
    }
    Ok(())
}

#[cfg(test)]
mod tests {}
