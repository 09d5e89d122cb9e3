//! Who is calling. Until mTLS lands, the caller names itself in request
//! metadata, which is why the daemon refuses a plaintext listener off loopback.

use tonic::metadata::MetadataMap;

use crate::engine::EngineError;
use crate::model::Caller;

pub const CALLER: &str = "x-rackagent-caller";
pub const ROLES: &str = "x-rackagent-roles";
pub const PROJECT: &str = "x-rackagent-project";

pub fn caller(md: &MetadataMap) -> Result<Caller, EngineError> {
    let get = |k: &str| -> Result<Option<String>, EngineError> {
        match md.get(k) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| EngineError::Unauthenticated(format!("metadata {k} is not ASCII"))),
        }
    };
    let id = get(CALLER)?.filter(|s| !s.is_empty()).ok_or_else(|| {
        EngineError::Unauthenticated(format!("no caller identity: set the {CALLER} metadata"))
    })?;
    let roles = get(ROLES)?
        .map(|r| {
            r.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let project_id = get(PROJECT)?.filter(|s| !s.is_empty());
    Ok(Caller {
        id,
        project_id,
        roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_identity_and_refuses_anonymous() {
        let mut md = MetadataMap::new();
        assert!(matches!(caller(&md), Err(EngineError::Unauthenticated(_))));
        md.insert(CALLER, "alice".parse().unwrap());
        md.insert(ROLES, "member, admin".parse().unwrap());
        md.insert(PROJECT, "p1".parse().unwrap());
        let c = caller(&md).unwrap();
        assert_eq!(c.id, "alice");
        assert_eq!(c.roles, vec!["member", "admin"]);
        assert_eq!(c.project_id.as_deref(), Some("p1"));
        assert!(c.is_admin());
    }
}
