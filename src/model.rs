//! The agent's own vocabulary: servers, actions, steps and events, independent
//! of the wire format (`crate::proto`) and of the database (`crate::store`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bmc::{BmcEvent, BmcIdentity, Power, Protocol, Secret};

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
    /// The namespace of the caller's `request_id`s: its project, so one
    /// tenant's ids never meet another's. A caller without a project (an
    /// operator's admin tool, the agent itself) has a namespace of its own,
    /// named by its id.
    pub fn request_scope(&self) -> String {
        match self.project_id.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => format!("project:{p}"),
            None => format!("caller:{}", self.id),
        }
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

// ---- input rules ----
//
// One rule for every id the agent is given (server, action, request, caller,
// project), one cap, and one way to repeat a refused value: never whole.

/// The longest id the agent accepts, in bytes.
pub const ID_MAX_LEN: usize = 64;
/// How much of a refused value a message repeats, in characters: every
/// valid id appears whole, anything longer is cut.
pub const ECHO_MAX_CHARS: usize = ID_MAX_LEN;
/// The longest virtual-media image URL the agent accepts, in bytes.
pub const URL_MAX_LEN: usize = 2048;

/// A value as an error message may show it: quoted, escaped, and cut to
/// `ECHO_MAX_CHARS` characters with "…" when longer.
pub fn echo(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(ECHO_MAX_CHARS).collect();
    let more = if chars.next().is_some() { "…" } else { "" };
    format!("{head:?}{more}")
}

/// The rule for every id: 1 to `ID_MAX_LEN` bytes of ASCII letters, digits,
/// '-', '_', '.' and '@'. `field` names the id in the refusal.
pub fn validate_id(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is required"));
    }
    if value.len() > ID_MAX_LEN {
        return Err(format!(
            "{field} {} is {} bytes long; an id is at most {ID_MAX_LEN}",
            echo(value),
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
    {
        return Err(format!(
            "{field} {} holds {c:?}; an id may hold only letters, digits, '-', '_', '.' and '@'",
            echo(value)
        ));
    }
    Ok(())
}

/// Server ids: what an operator types and filters logs on (the id rule).
pub fn validate_server_id(id: &str) -> Result<(), String> {
    validate_id("server id", id)
}

/// Free text the agent keeps or passes on (a BMC address, a user name, an
/// option): at most `max` bytes, no control characters.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field} {} is {} bytes long; at most {max}",
            echo(value),
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} {} holds a control character", echo(value)));
    }
    Ok(())
}

/// A virtual-media image URL: http or https (in any case), a host, no
/// whitespace or control characters, no user:password (it would show in
/// every answer that carries the action), at most `URL_MAX_LEN` bytes.
pub fn validate_media_url(field: &str, value: &str) -> Result<(), String> {
    // The URL is not repeated: it may hold a secret (user:password@).
    let refuse = |why: &str| Err(format!("{field} {why}"));
    if value.len() > URL_MAX_LEN {
        return refuse(&format!(
            "is {} bytes long; at most {URL_MAX_LEN}",
            value.len()
        ));
    }
    // The parser would quietly drop some of these (tabs, newlines, leading
    // and trailing spaces); a URL that holds them is a mistake.
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("holds whitespace or a control character");
    }
    // "http:/x" and "http:///x" parse (as host "x"); say what is meant instead.
    match value.split_once("://") {
        Some((_, rest)) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => return refuse("must be http://HOST/... or https://HOST/..."),
    }
    let url = match url::Url::parse(value) {
        Ok(u) => u,
        Err(e) => return refuse(&format!("is not a URL: {e}")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return refuse("must be http:// or https://");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return refuse("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse(
            "holds a user name or password; the BMC must reach the image without one in the URL",
        );
    }
    Ok(())
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
    /// Who the BMC and its system are, as last read successfully (kept when
    /// a later read fails). `None` until read.
    pub identity: Option<BmcIdentity>,
    /// When `identity` was read.
    pub identity_read_at: Option<Millis>,
    /// Why the last identity read failed; `None` when it succeeded (or none
    /// was tried yet).
    pub identity_error: Option<String>,
}

impl ServerRecord {
    /// Whether an identity read was ever tried (successfully or not).
    pub fn identity_tried(&self) -> bool {
        self.identity.is_some() || self.identity_error.is_some()
    }
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
    /// For a power change no action caused: the BMC's event-log entries
    /// logged around it (oldest first), where the BMC gave any in time.
    pub bmc_events: Vec<BmcEvent>,
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
    fn every_id_follows_one_rule() {
        let long = "a".repeat(ID_MAX_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("node-01", true),
            ("r12_node.01", true),
            ("alice@example.com", true),
            ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", true),
            (&long[..ID_MAX_LEN], true),
            ("", false),
            (&long, false),
            ("node 01", false),
            ("node-01\n", false),
            ("../etc", false),
            ("a/b", false),
            ("nöde", false),
            ("x (via cp)", false),
        ];
        for (value, ok) in cases {
            let got = validate_id("server_id", value);
            assert_eq!(got.is_ok(), *ok, "{value:?}: {got:?}");
            if let Err(msg) = got {
                assert!(msg.starts_with("server_id"), "{msg}");
                assert!(msg.len() < 200, "{msg}");
            }
        }
    }

    #[test]
    fn echo_keeps_a_short_escaped_prefix() {
        assert_eq!(echo("node-01"), "\"node-01\"");
        let long = "x".repeat(70_000);
        let e = echo(&long);
        assert!(e.ends_with('…') && e.len() < 80, "{e}");
        assert_eq!(echo("a\nb"), "\"a\\nb\"");
        let valid = "v".repeat(ID_MAX_LEN);
        assert_eq!(echo(&valid), format!("{valid:?}"));
    }

    #[test]
    fn virtual_media_urls_are_parsed() {
        let long = format!("http://h/{}", "a".repeat(URL_MAX_LEN));
        let cases: &[(&str, bool)] = &[
            ("http://images.example/rhel9.iso", true),
            ("https://10.0.0.5:8443/img/rhel9.iso?sig=abc", true),
            ("HTTP://Images.Example/x.iso", true),
            ("hTtPs://[2001:db8::1]/x.iso", true),
            ("ftp://images.example/x.iso", false),
            ("file:///srv/x.iso", false),
            ("images.example/x.iso", false),
            ("http://", false),
            ("http:///x.iso", false),
            ("http:/x.iso", false),
            ("http:x.iso", false),
            ("http://images.example/a b.iso", false),
            (" http://images.example/x.iso", false),
            ("http://images.example/x.iso\n", false),
            ("http://images.example/x\t.iso", false),
            ("http://images.example/x\u{7}.iso", false),
            ("http://user:pw@images.example/x.iso", false),
            ("http://exa mple/x.iso", false),
            ("http://[::1/x.iso", false),
            (&long, false),
        ];
        for (url, ok) in cases {
            let got = validate_media_url("virtual_media_url", url);
            assert_eq!(got.is_ok(), *ok, "{url:?}: {got:?}");
            if let Err(msg) = got {
                assert!(msg.starts_with("virtual_media_url"), "{msg}");
                assert!(msg.len() < 300, "{msg}");
                assert!(!msg.contains("pw@"), "the password is echoed: {msg}");
            }
        }
    }

    #[test]
    fn text_is_bounded_and_printable() {
        assert!(validate_text("bmc.address", "10.0.0.1", 255).is_ok());
        assert!(validate_text("bmc.address", &"a".repeat(256), 255).is_err());
        assert!(validate_text("bmc.username", "ad\u{0}min", 64).is_err());
    }

    #[test]
    fn credential_debug_shows_no_secret() {
        let c = Credential::Inline(Secret::new("hunter2"));
        assert_eq!(format!("{c:?}"), "inline");
    }
}
