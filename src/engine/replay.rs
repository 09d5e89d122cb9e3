//! The step log as the program counter.
//!
//! An action's steps are written as they happen: *started* (durably, before
//! the BMC command is sent or the wait begins), then *finished* or *failed*.
//! After a restart the runner runs the action's program again from the top,
//! but every step the log shows as ended is not executed: its recorded result
//! is handed back, so the program takes the same path without touching the
//! BMC. The first step that is not recorded as ended is where the action
//! resumes; what happens there depends on the step (see `runner`): a read is
//! made again, an idempotent command is re-sent only if the power state read
//! now says it is still needed, and a non-idempotent one (reset, cycle,
//! graceful restart) is never sent again.

use crate::model::{Millis, StepEvent, StepPhase};

/// Steps written by recovery itself, never part of an action's program.
pub(super) const RECOVERY_STEP: &str = "recovery";

/// How a recorded step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    Finished,
    Failed,
    /// Started and never ended: the agent stopped while it was in flight
    /// (recovery marks it `Interrupted`; both mean the same here).
    InFlight,
}

/// One step of the program as the log recorded it. A step that was started
/// again right after an interrupted attempt (an idempotent command re-sent)
/// is the same step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    pub step: String,
    /// When its (last) attempt started.
    pub started_at: Millis,
    pub ending: Ending,
    pub detail: String,
    pub data: Option<String>,
    /// Notes written while it ran or after it ended (before the next step).
    pub notes: Vec<String>,
}

/// Reads a step log into the program's steps, in order.
pub(super) fn recorded_steps(events: &[StepEvent]) -> Vec<Recorded> {
    let mut out: Vec<Recorded> = Vec::new();
    for e in events {
        if e.step == RECOVERY_STEP {
            continue;
        }
        match e.phase {
            StepPhase::Started => {
                let retry = out
                    .last()
                    .is_some_and(|r| r.step == e.step && r.ending == Ending::InFlight);
                if !retry {
                    out.push(Recorded {
                        step: e.step.clone(),
                        started_at: e.at,
                        ending: Ending::InFlight,
                        detail: String::new(),
                        data: None,
                        notes: Vec::new(),
                    });
                }
                let r = out.last_mut().expect("just pushed");
                r.started_at = e.at;
                r.ending = Ending::InFlight;
            }
            StepPhase::Finished | StepPhase::Failed => {
                if let Some(r) = out
                    .last_mut()
                    .filter(|r| r.step == e.step && r.ending == Ending::InFlight)
                {
                    r.ending = if e.phase == StepPhase::Finished {
                        Ending::Finished
                    } else {
                        Ending::Failed
                    };
                    r.detail = e.detail.clone();
                    r.data = e.data.clone();
                }
            }
            StepPhase::Interrupted => {}
            StepPhase::Note => {
                if let Some(r) = out.last_mut() {
                    r.notes.push(e.step.clone());
                }
            }
        }
    }
    out
}

/// The last step that was started and has not ended, if any.
pub(super) fn in_flight(events: &[StepEvent]) -> Option<String> {
    recorded_steps(events)
        .into_iter()
        .last()
        .filter(|r| r.ending == Ending::InFlight)
        .map(|r| r.step)
}

/// Where a run is in the log: steps before the cursor were replayed.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    steps: Vec<Recorded>,
    next: usize,
}

/// What to do with the step the program asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// Recorded as ended: hand back its result, touch nothing.
    Replay(Recorded),
    /// Recorded as started, never ended: the resume point.
    InFlight(Recorded),
    /// Not in the log: run it.
    Live,
}

impl Cursor {
    pub fn new(events: &[StepEvent]) -> Cursor {
        Cursor {
            steps: recorded_steps(events),
            next: 0,
        }
    }

    /// Whether every recorded step has been replayed: from here on, the run
    /// writes to the log.
    pub fn at_end(&self) -> bool {
        self.next >= self.steps.len()
    }

    /// The names of the steps replayed so far.
    pub fn replayed(&self) -> Vec<&str> {
        self.steps[..self.next.min(self.steps.len())]
            .iter()
            .map(|r| r.step.as_str())
            .collect()
    }

    /// Takes the next step of the program. A step that differs from what the
    /// log recorded at this point is an error: the action took another path
    /// before the restart, and guessing could repeat a reset.
    pub fn enter(&mut self, step: &str) -> Result<Entry, String> {
        let Some(r) = self.steps.get(self.next) else {
            return Ok(Entry::Live);
        };
        if r.step != step {
            return Err(format!(
                "the step log records {} as step {}, but the action would now run {step}",
                r.step,
                self.next + 1
            ));
        }
        self.next += 1;
        Ok(match r.ending {
            Ending::Finished | Ending::Failed => Entry::Replay(r.clone()),
            Ending::InFlight => Entry::InFlight(r.clone()),
        })
    }

    /// Notes recorded after the step just entered (a replayed decision, or
    /// something seen during an interrupted wait).
    pub fn notes_of_last(&self) -> &[String] {
        match self.next.checked_sub(1).and_then(|i| self.steps.get(i)) {
            Some(r) => &r.notes,
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepPhase::*;

    fn log(steps: &[(&str, StepPhase)]) -> Vec<StepEvent> {
        steps
            .iter()
            .enumerate()
            .map(|(i, (s, p))| StepEvent {
                at: i as i64,
                step: s.to_string(),
                phase: *p,
                detail: format!("{s} {p}"),
                data: None,
            })
            .collect()
    }

    #[test]
    fn ended_steps_replay_and_the_first_open_one_is_the_resume_point() {
        let events = log(&[
            ("discover", Started),
            ("discover", Finished),
            ("read_power", Started),
            ("read_power", Finished),
            ("graceful_off", Started),
            ("graceful_off", Finished),
            ("wait_off", Started),
            ("wait_off", Failed),
            ("fallback_hard", Note),
            ("hard_reset", Started),
            ("hard_reset", Interrupted),
            (RECOVERY_STEP, Note),
        ]);
        let mut c = Cursor::new(&events);
        for s in ["discover", "read_power", "graceful_off"] {
            assert!(matches!(c.enter(s), Ok(Entry::Replay(r)) if r.ending == Ending::Finished));
        }
        match c.enter("wait_off").unwrap() {
            Entry::Replay(r) => assert_eq!(r.ending, Ending::Failed),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.notes_of_last(), ["fallback_hard".to_string()]);
        assert!(!c.at_end());
        assert!(matches!(c.enter("hard_reset"), Ok(Entry::InFlight(_))));
        assert!(c.at_end());
        assert_eq!(c.enter("wait_restart"), Ok(Entry::Live));
        assert_eq!(in_flight(&events).as_deref(), Some("hard_reset"));
    }

    #[test]
    fn a_resent_step_is_one_step() {
        // power_on was in flight at a crash, re-sent after it, and finished.
        let events = log(&[
            ("power_on", Started),
            ("power_on", Interrupted),
            ("power_on", Started),
            ("power_on", Finished),
            ("wait_on", Started),
        ]);
        let steps = recorded_steps(&events);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].ending, Ending::Finished);
        assert_eq!(steps[1].ending, Ending::InFlight);
        assert_eq!(steps[1].started_at, 4);
    }

    #[test]
    fn a_different_path_is_refused_not_guessed() {
        let events = log(&[("hard_reset", Started), ("hard_reset", Finished)]);
        let mut c = Cursor::new(&events);
        let err = c.enter("power_cycle").unwrap_err();
        assert!(
            err.contains("hard_reset") && err.contains("power_cycle"),
            "{err}"
        );
    }

    #[test]
    fn a_fresh_action_is_live_from_the_start() {
        let mut c = Cursor::new(&[]);
        assert!(c.at_end());
        assert_eq!(c.enter("discover"), Ok(Entry::Live));
        assert_eq!(in_flight(&[]), None);
    }
}
