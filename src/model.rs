//! The agent's own vocabulary: servers, actions, steps and events, independent
//! of the wire format (`crate::proto`) and of the database (`crate::store`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bmc::{Power, Protocol, Secret};

/// Milliseconds since the Unix epoch: how every timestamp is kept.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Declares a fieldless enum with a stable lowercase name used in the database,
/// logs and the CLI.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// Power as last observed.
    PowerState { On => "on", Off => "off", Unknown => "unknown" }
);

impl From<Power> for PowerState {
    fn from(p: Power) -> Self {
        match p {
            Power::On => PowerState::On,
            Power::Off => PowerState::Off,
        }
    }
}

named_enum!(
    /// The server's recorded state, as the compute APIs name it.
    VmState { Active => "active", Shutoff => "shutoff", Error => "error", Rebuilding => "rebuilding" }
);

named_enum!(
    ActionKind {
        RebootSoft => "reboot_soft",
        RebootHard => "reboot_hard",
        Start => "start",
        Stop => "stop",
        Reinstall => "reinstall",
        ResetState => "reset_state",
        Lock => "lock",
        Unlock => "unlock",
    }
);

impl ActionKind {
    /// Whether the action talks to the BMC (and so runs as a task).
    pub fn uses_bmc(self) -> bool {
        !matches!(
            self,
            ActionKind::ResetState | ActionKind::Lock | ActionKind::Unlock
        )
    }
}

named_enum!(
    ActionState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Superseded => "superseded",
    }
);

impl ActionState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionState::Succeeded | ActionState::Failed | ActionState::Superseded
        )
    }
}

named_enum!(
    StepPhase {
        /// Written (durably) before the BMC command is sent or the wait begins.
        Started => "started",
        Finished => "finished",
        Failed => "failed",
        /// Something the agent decided or saw (a fallback, a recovery), not a BMC command.
        Note => "note",
        /// The agent stopped while the step was in flight: whether the BMC got
        /// the command is unknown. Written at the next start.
        Interrupted => "interrupted",
    }
);

named_enum!(
    EventKind {
        PowerChanged => "power_changed",
        TaskChanged => "task_changed",
        ServerEnrolled => "server_enrolled",
        ServerRemoved => "server_removed",
        LockChanged => "lock_changed",
    }
);

named_enum!(
    /// Where a server's record comes from.
    Source { Api => "api", Config => "config" }
);

/// Who asks. Roles are plain names; `admin` is the one the defaults know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Caller {
    pub id: String,
    pub project_id: Option<String>,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
    /// The agent itself (recovery after a restart, static inventory).
    pub fn agent() -> Self {
        Caller {
            id: "rack-agent".into(),
            project_id: None,
            roles: vec!["admin".into()],
        }
    }
}

/// How the agent finds a BMC password.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Given inline at enrolment; the engine moves it to a file of its own
    /// (`Stored`) before anything is recorded.
    Inline(Secret),
    /// A file name, relative to the credentials directory unless absolute.
    File(String),
    /// A file the agent wrote in its secrets directory (mode 0600) from an
    /// inline password: the database holds only its name.
    Stored(String),
}

impl Credential {
    /// What answers and logs may show: where the secret comes from, not the secret.
    pub fn describe(&self) -> String {
        match self {
            Credential::Inline(_) | Credential::Stored(_) => "inline".into(),
            Credential::File(name) => format!("file:{name}"),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcRecord {
    pub protocol: Protocol,
    pub address: String,
    pub port: u16,
    pub username: String,
    pub credential: Credential,
    pub options: BTreeMap<String, String>,
}

impl BmcRecord {
    pub fn key(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

/// One server as the agent records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    pub id: String,
    pub project_id: String,
    pub bmc: BmcRecord,
    pub power: PowerState,
    pub power_observed_at: Option<Millis>,
    pub vm_state: VmState,
    /// The running action and its kind, when a task runs.
    pub task: Option<(String, ActionKind)>,
    pub locked: bool,
    pub locked_by_admin: bool,
    pub bmc_error: Option<String>,
    pub source: Source,
    pub created_at: Millis,
}

/// One step of an action, as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    pub at: Millis,
    pub step: String,
    pub phase: StepPhase,
    /// For people: what the BMC said, what was seen, what was decided.
    pub detail: String,
    /// For the agent: what a finished step returned (JSON), so that a resumed
    /// action takes the same path without asking the BMC again.
    pub data: Option<String>,
}

/// An action: the asynchronous answer to every mutating call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub id: String,
    pub server_id: String,
    pub kind: ActionKind,
    pub state: ActionState,
    pub params: BTreeMap<String, String>,
    pub request_id: Option<String>,
    pub caller: Caller,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub message: String,
    pub events: Vec<StepEvent>,
    pub superseded_by: Option<String>,
}

/// A change to a server that watchers see, numbered in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    pub seq: u64,
    pub at: Millis,
    pub server_id: String,
    pub kind: EventKind,
    pub power: PowerState,
    pub vm_state: VmState,
    pub task: Option<ActionKind>,
    pub action_id: Option<String>,
    pub cause: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.as_str()), Some(*k));
        }
        for s in ActionState::ALL {
            assert_eq!(ActionState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(VmState::parse("nope"), None);
    }

    #[test]
    fn credential_debug_shows_no_secret() {
        let c = Credential::Inline(Secret::new("hunter2"));
        assert_eq!(format!("{c:?}"), "inline");
    }
}
