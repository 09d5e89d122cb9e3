//! Who may do what. Each operation has a rule; the defaults are those of
//! `DESIGN.md` (admin or the server's owner, admin-only for enrolment, removal
//! and reset-state). A refusal names the rule that refused.

use serde::Deserialize;

use crate::model::Caller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Admin,
    Owner,
    AdminOrOwner,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Admin => "admin",
            Rule::Owner => "owner",
            Rule::AdminOrOwner => "admin_or_owner",
        }
    }

    pub fn allows(self, caller: &Caller, owner: Option<&str>) -> bool {
        let is_owner = match (owner, caller.project_id.as_deref()) {
            (Some(o), Some(p)) => o == p,
            _ => false,
        };
        match self {
            Rule::Admin => caller.is_admin(),
            Rule::Owner => is_owner,
            Rule::AdminOrOwner => caller.is_admin() || is_owner,
        }
    }
}

/// The operations the policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Enroll,
    Remove,
    Read,
    Reboot,
    Start,
    Stop,
    Reinstall,
    ResetState,
    Lock,
    Unlock,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Enroll => "enroll",
            Op::Remove => "remove",
            Op::Read => "read",
            Op::Reboot => "reboot",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Reinstall => "reinstall",
            Op::ResetState => "reset_state",
            Op::Lock => "lock",
            Op::Unlock => "unlock",
        }
    }
}

/// One rule per operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub enroll: Rule,
    pub remove: Rule,
    pub read: Rule,
    pub reboot: Rule,
    pub start: Rule,
    pub stop: Rule,
    pub reinstall: Rule,
    pub reset_state: Rule,
    pub lock: Rule,
    pub unlock: Rule,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enroll: Rule::Admin,
            remove: Rule::Admin,
            read: Rule::AdminOrOwner,
            reboot: Rule::AdminOrOwner,
            start: Rule::AdminOrOwner,
            stop: Rule::AdminOrOwner,
            reinstall: Rule::AdminOrOwner,
            reset_state: Rule::Admin,
            lock: Rule::AdminOrOwner,
            unlock: Rule::AdminOrOwner,
        }
    }
}

/// A refusal, naming the operation and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("caller {caller} may not {op}: policy rule `{rule}` refused")]
pub struct Denied {
    pub caller: String,
    pub op: &'static str,
    pub rule: &'static str,
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("policy file {path}: {message}")]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

impl Policy {
    /// Reads a policy file; operations it leaves out keep their default rule.
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let err = |message: String| PolicyError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Policy::parse(&text, path)
    }

    /// Parses policy text; `path` names it in errors. What `load` does after
    /// reading the file, exposed so the fuzz target (`fuzz/`) reaches the
    /// parser without a file.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Policy, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn rule(&self, op: Op) -> Rule {
        match op {
            Op::Enroll => self.enroll,
            Op::Remove => self.remove,
            Op::Read => self.read,
            Op::Reboot => self.reboot,
            Op::Start => self.start,
            Op::Stop => self.stop,
            Op::Reinstall => self.reinstall,
            Op::ResetState => self.reset_state,
            Op::Lock => self.lock,
            Op::Unlock => self.unlock,
        }
    }

    pub fn check(&self, caller: &Caller, op: Op, owner: Option<&str>) -> Result<(), Denied> {
        let rule = self.rule(op);
        if rule.allows(caller, owner) {
            Ok(())
        } else {
            Err(Denied {
                caller: caller.id.clone(),
                op: op.as_str(),
                rule: rule.as_str(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(project: &str, roles: &[&str]) -> Caller {
        Caller {
            id: "c".into(),
            project_id: Some(project.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn the_shipped_policy_file_is_the_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml");
        let p = Policy::load(&path).unwrap();
        for op in [
            Op::Enroll,
            Op::Remove,
            Op::Read,
            Op::Reboot,
            Op::Start,
            Op::Stop,
            Op::Reinstall,
            Op::ResetState,
            Op::Lock,
            Op::Unlock,
        ] {
            assert_eq!(p.rule(op), Policy::default().rule(op), "{}", op.as_str());
        }
    }

    #[test]
    fn a_bad_policy_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "reboot = \"anyone\"\n").unwrap();
        let err = Policy::load(&path).unwrap_err().to_string();
        assert!(err.contains("anyone") && err.contains("p.toml"), "{err}");
        std::fs::write(&path, "rebot = \"admin\"\n").unwrap();
        assert!(Policy::load(&path)
            .unwrap_err()
            .to_string()
            .contains("rebot"));
    }

    #[test]
    fn defaults_follow_the_design() {
        let p = Policy::default();
        let owner = caller("p1", &["member"]);
        let other = caller("p2", &["member"]);
        let admin = caller("ops", &["admin"]);
        assert!(p.check(&owner, Op::Reboot, Some("p1")).is_ok());
        assert!(p.check(&admin, Op::Reboot, Some("p1")).is_ok());
        let denied = p.check(&other, Op::Reboot, Some("p1")).unwrap_err();
        assert_eq!(denied.rule, "admin_or_owner");
        assert_eq!(
            p.check(&owner, Op::ResetState, Some("p1"))
                .unwrap_err()
                .rule,
            "admin"
        );
        assert!(p.check(&owner, Op::Enroll, None).is_err());
    }
}
