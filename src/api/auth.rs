//! Who is calling.
//!
//! With mTLS (the default) the caller is the client certificate: its subject
//! CN is the caller id, O the project it acts for, and the OUs its roles
//! (`admin`, `control-plane`, ...; several OUs, or one comma-separated). Only a certificate with the
//! `control-plane` role may name another caller in request metadata — the
//! control plane acting for a tenant. With `insecure_plaintext` (loopback only,
//! for tests and demos) the metadata alone names the caller.

use tonic::metadata::MetadataMap;
use tonic::Request;
use x509_parser::prelude::*;

use crate::engine::EngineError;
use crate::model::Caller;
use crate::policy::Denied;

pub const CALLER: &str = "x-rackagent-caller";
pub const ROLES: &str = "x-rackagent-roles";
pub const PROJECT: &str = "x-rackagent-project";

/// The role that may act on behalf of others.
pub const CONTROL_PLANE: &str = "control-plane";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticator {
    /// Client certificates (mTLS).
    Certificates,
    /// Request metadata, trusted as given (loopback plaintext only).
    Metadata,
}

impl Authenticator {
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, EngineError> {
        match self {
            Authenticator::Metadata => from_metadata(req.metadata())?.ok_or_else(|| {
                EngineError::Unauthenticated(format!(
                    "no caller identity: set the {CALLER} metadata"
                ))
            }),
            Authenticator::Certificates => {
                let certs = req
                    .peer_certs()
                    .ok_or_else(|| EngineError::Unauthenticated("no client certificate".into()))?;
                let leaf = certs
                    .first()
                    .ok_or_else(|| EngineError::Unauthenticated("no client certificate".into()))?;
                let cert_caller = from_certificate(leaf.as_ref())?;
                on_behalf(req.metadata(), cert_caller)
            }
        }
    }
}

/// The identity in a client certificate (DER).
pub fn from_certificate(der: &[u8]) -> Result<Caller, EngineError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
        EngineError::Unauthenticated(format!("client certificate cannot be read: {e}"))
    })?;
    let subject = cert.subject();
    let text = |attr: &AttributeTypeAndValue| attr.as_str().ok().map(str::to_string);
    let id = subject
        .iter_common_name()
        .find_map(text)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            EngineError::Unauthenticated("client certificate has no subject CN".into())
        })?;
    check_id("client certificate CN", &id)?;
    let project_id = subject
        .iter_organization()
        .find_map(text)
        .filter(|o| !o.is_empty());
    if let Some(p) = &project_id {
        check_id("client certificate O", p)?;
    }
    // Roles: every OU, each possibly a comma-separated list.
    let roles: Vec<String> = subject
        .iter_organizational_unit()
        .filter_map(text)
        .flat_map(|ou| {
            ou.split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Caller {
        id,
        project_id,
        roles,
    })
}

/// Whether the metadata sets `key` (to anything but blanks, which count as
/// unset, as in `from_metadata`).
fn asserts(md: &MetadataMap, key: &str) -> bool {
    md.get(key)
        .is_some_and(|v| !v.to_str().is_ok_and(|s| s.trim().is_empty()))
}

/// Applies identity metadata: honoured only from the control plane. Any
/// other certificate that sets one of the three keys is refused with
/// PERMISSION_DENIED naming the key, before its value is looked at: the
/// certificate is known, it just may not assert an identity.
fn on_behalf(md: &MetadataMap, cert_caller: Caller) -> Result<Caller, EngineError> {
    let op = [
        (CALLER, "name another caller in x-rackagent-caller metadata"),
        (ROLES, "assert roles in x-rackagent-roles metadata"),
        (PROJECT, "assert a project in x-rackagent-project metadata"),
    ]
    .into_iter()
    .find(|(key, _)| asserts(md, key))
    .map(|(_, op)| op);
    let Some(op) = op else {
        return Ok(cert_caller);
    };
    if !cert_caller.roles.iter().any(|r| r == CONTROL_PLANE) {
        return Err(EngineError::PermissionDenied(Denied {
            caller: cert_caller.id,
            op,
            rule: "control-plane certificate",
        }));
    }
    let Some(asserted) = from_metadata(md)? else {
        return Ok(cert_caller);
    };
    Ok(Caller {
        id: format!("{} (via {})", asserted.id, cert_caller.id),
        ..asserted
    })
}

/// The caller named in metadata, if any.
fn from_metadata(md: &MetadataMap) -> Result<Option<Caller>, EngineError> {
    let get = |k: &str| -> Result<Option<String>, EngineError> {
        match md.get(k) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
                .map_err(|_| EngineError::Unauthenticated(format!("metadata {k} is not ASCII"))),
        }
    };
    let Some(id) = get(CALLER)? else {
        if get(ROLES)?.is_some() || get(PROJECT)?.is_some() {
            return Err(EngineError::Unauthenticated(format!(
                "{ROLES}/{PROJECT} given without {CALLER}"
            )));
        }
        return Ok(None);
    };
    check_id(CALLER, &id)?;
    let project_id = get(PROJECT)?;
    if let Some(p) = &project_id {
        check_id(PROJECT, p)?;
    }
    let roles = get(ROLES)?
        .map(|r| {
            r.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Caller {
        id,
        project_id,
        roles,
    }))
}

/// Caller and project ids follow the one rule for ids; a bad one means the
/// caller cannot be named.
fn check_id(field: &str, value: &str) -> Result<(), EngineError> {
    crate::model::validate_id(field, value).map_err(EngineError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, org: Option<&str>, ous: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        if let Some(o) = org {
            dn.push(rcgen::DnType::OrganizationName, o);
        }
        for ou in ous {
            dn.push(rcgen::DnType::OrganizationalUnitName, *ou);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn metadata_names_the_caller_in_plaintext_mode() {
        let mut md = MetadataMap::new();
        assert_eq!(from_metadata(&md).unwrap(), None);
        md.insert(CALLER, "alice".parse().unwrap());
        md.insert(ROLES, "member, admin".parse().unwrap());
        md.insert(PROJECT, "p1".parse().unwrap());
        let c = from_metadata(&md).unwrap().unwrap();
        assert_eq!(c.id, "alice");
        assert_eq!(c.roles, vec!["member", "admin"]);
        assert_eq!(c.project_id.as_deref(), Some("p1"));
    }

    #[test]
    fn caller_and_project_ids_follow_the_id_rule_and_are_echoed_briefly() {
        let long = "u".repeat(5000);
        for (caller, project, field) in [
            (long.as_str(), "p1", CALLER),
            ("alice", long.as_str(), PROJECT),
            ("al ice", "p1", CALLER),
            ("alice", "p/1", PROJECT),
        ] {
            let mut md = MetadataMap::new();
            md.insert(CALLER, caller.parse().unwrap());
            md.insert(PROJECT, project.parse().unwrap());
            let err = from_metadata(&md).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, EngineError::Unauthenticated(_)), "{err:?}");
            assert!(msg.starts_with(field) && msg.len() < 200, "{msg}");
        }
        let err = from_certificate(&cert(&"c".repeat(100), None, &[])).unwrap_err();
        assert!(err.to_string().contains("CN"), "{err}");
    }

    #[test]
    fn a_certificate_names_id_project_and_roles() {
        let c = from_certificate(&cert("ops-1", Some("ops"), &["admin, oncall"])).unwrap();
        assert_eq!(c.id, "ops-1");
        assert_eq!(c.project_id.as_deref(), Some("ops"));
        assert_eq!(c.roles, vec!["admin", "oncall"]);
        assert!(from_certificate(b"not a certificate").is_err());
    }

    #[test]
    fn only_the_control_plane_may_speak_for_a_tenant() {
        let mut md = MetadataMap::new();
        md.insert(CALLER, "tenant-user".parse().unwrap());
        md.insert(PROJECT, "p7".parse().unwrap());
        let cp = from_certificate(&cert("cp", None, &[CONTROL_PLANE])).unwrap();
        let c = on_behalf(&md, cp).unwrap();
        assert_eq!(c.id, "tenant-user (via cp)");
        assert_eq!(c.project_id.as_deref(), Some("p7"));
        let tenant = from_certificate(&cert("mallory", Some("p1"), &["member"])).unwrap();
        assert!(matches!(
            on_behalf(&md, tenant),
            Err(EngineError::PermissionDenied(_))
        ));
    }

    /// Any identity key from a certificate that may not assert one is
    /// PERMISSION_DENIED naming the key, whatever its value; blanks are unset.
    #[test]
    fn a_tenant_certificate_asserting_any_identity_key_is_refused_naming_it() {
        let long = "u".repeat(5000);
        for (key, value) in [
            (CALLER, "ops"),
            (CALLER, long.as_str()),
            (ROLES, "admin"),
            (PROJECT, "p2"),
        ] {
            let mut md = MetadataMap::new();
            md.insert(key, value.parse().unwrap());
            let tenant = from_certificate(&cert("mallory", Some("p1"), &["admin"])).unwrap();
            let err = on_behalf(&md, tenant).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, EngineError::PermissionDenied(_)),
                "{key}: {err:?}"
            );
            assert!(msg.contains(key) && msg.len() < 200, "{msg}");
        }
        let mut md = MetadataMap::new();
        md.insert(CALLER, "  ".parse().unwrap());
        let tenant = from_certificate(&cert("mallory", Some("p1"), &[])).unwrap();
        assert_eq!(on_behalf(&md, tenant).unwrap().id, "mallory");
    }
}
