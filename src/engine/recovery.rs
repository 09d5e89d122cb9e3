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
use crate::model::{StepPhase, VmState};

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
    for mut a in unfinished {
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
        if let Some(open) = replay::in_flight(&a.events) {
            engine.add_step(
                &a.id,
                &open,
                StepPhase::Interrupted,
                "the agent stopped while this step was in flight; whether the BMC received it is unknown",
                None,
            )?;
            // The runner reads the log as it is now.
            a = engine.store.get_action(&a.id)?.unwrap_or(a);
        }
        info!(action_id = %a.id, server_id = %a.server_id, steps = a.events.len(), "resuming action after restart");
        let mut inner = engine.lock();
        if let Some(slot) = inner.servers.get_mut(&a.server_id) {
            slot.rec.task = Some((a.id.clone(), a.kind));
            engine.store.put_server(&slot.rec)?;
        }
        engine.spawn_runner(&mut inner, &a, req, true);
    }
    Ok(())
}

#[cfg(test)]
mod tests {}
