//! The one place engine errors become gRPC statuses (`DESIGN.md`, error mapping).

use std::error::Error as _;

use tonic::{Code, Status};

use crate::engine::EngineError;

/// The error and its causes, each once: "server s1 (BMC 10.0.0.1:623): cannot
/// reach the BMC: connection refused".
fn chain(err: &EngineError) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

pub fn code_of(err: &EngineError) -> Code {
    match err {
        EngineError::InvalidArgument(_) => Code::InvalidArgument,
        EngineError::Unauthenticated(_) => Code::Unauthenticated,
        EngineError::PermissionDenied(_) => Code::PermissionDenied,
        EngineError::NotFound { .. } => Code::NotFound,
        EngineError::AlreadyExists { .. } => Code::AlreadyExists,
        EngineError::Conflict(_) => Code::FailedPrecondition,
        EngineError::Bmc { source, .. } if source.is_unavailable() => Code::Unavailable,
        // The BMC answered and refused (credentials, unsupported): the request
        // cannot succeed as it is.
        EngineError::Bmc { .. } => Code::FailedPrecondition,
        EngineError::ShuttingDown => Code::Unavailable,
        EngineError::Store(_) => Code::Internal,
    }
}

impl From<EngineError> for Status {
    fn from(err: EngineError) -> Status {
        if let EngineError::Store(e) = &err {
            tracing::error!(error = %e, source = ?e, "internal error");
        }
        Status::new(code_of(&err), chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::BmcError;
    use crate::policy::Denied;
    use crate::store::StoreError;
    use std::time::Duration;

    fn status(e: EngineError) -> Status {
        e.into()
    }

    #[test]
    fn each_error_maps_to_its_code() {
        let s = status(EngineError::InvalidArgument("bad".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = status(EngineError::Unauthenticated("who".into()));
        assert_eq!(s.code(), Code::Unauthenticated);
        let s = status(EngineError::PermissionDenied(Denied {
            caller: "u".into(),
            op: "reboot",
            rule: "admin_or_owner",
        }));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().contains("admin_or_owner"));
        let s = status(EngineError::NotFound {
            what: "server",
            id: "s9".into(),
        });
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("s9"));
        let s = status(EngineError::AlreadyExists {
            what: "server",
            id: "s9".into(),
        });
        assert_eq!(s.code(), Code::AlreadyExists);
        let s = status(EngineError::Conflict("server s1 is locked".into()));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(status(EngineError::ShuttingDown).code(), Code::Unavailable);
        let s = status(EngineError::Store(StoreError::Corrupt("x".into())));
        assert_eq!(s.code(), Code::Internal);
    }

    #[test]
    fn bmc_errors_name_server_and_bmc_once() {
        let s = status(EngineError::Bmc {
            server: "s1".into(),
            bmc: "10.0.0.1:623".into(),
            source: BmcError::Timeout(Duration::from_secs(15)),
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.message(),
            "server s1 (BMC 10.0.0.1:623): BMC did not answer within 15s"
        );
        let s = status(EngineError::Bmc {
            server: "s1".into(),
            bmc: "b".into(),
            source: BmcError::Auth("RAKP 2 rejected".into()),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
    }
}
