use crate::bmc::BmcError;
use crate::policy::Denied;
use crate::store::StoreError;

/// What the engine answers when it refuses or fails a request. The API layer
/// maps each variant to one gRPC status (see `api::status`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    PermissionDenied(#[from] Denied),
    #[error("{what} {} not found", crate::model::echo(id))]
    NotFound { what: &'static str, id: String },
    #[error("{what} {} already exists", crate::model::echo(id))]
    AlreadyExists { what: &'static str, id: String },
    /// A conflicting task, a lock, or a state the action cannot start from.
    #[error("{0}")]
    Conflict(String),
    #[error("server {server} (BMC {bmc})")]
    Bmc {
        server: String,
        bmc: String,
        #[source]
        source: BmcError,
    },
    #[error("the agent is shutting down and accepts no new actions")]
    ShuttingDown,
    /// Too many accepted actions are waiting for their write.
    #[error("rack-agent is busy: {waiting} accepted actions are waiting to be written; retry in {} ms", retry_after.as_millis())]
    Busy {
        waiting: usize,
        retry_after: std::time::Duration,
    },
    #[error("state database failure")]
    Store(#[from] StoreError),
}
