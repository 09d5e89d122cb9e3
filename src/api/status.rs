//! The one place errors become gRPC statuses (`DESIGN.md`, error mapping):
//! the engine's (`EngineError`), the API layer's own stream endings and
//! cursor refusals (`ApiError`), and tonic's refusals of an over-size or
//! undecodable request.

use std::error::Error as _;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::bmc::BmcError;
use crate::engine::EngineError;
use crate::model::ActionState;

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
        // The BMC offers no such thing (no sensors, no event log).
        EngineError::Bmc {
            source: BmcError::Unsupported(_),
            ..
        } => Code::Unimplemented,
        // The BMC answered and refused (credentials, unsupported), or its
        // settings need the operator (a system_id to choose): the request
        // cannot succeed as it is.
        EngineError::Bmc {
            source: BmcError::Config(_),
            ..
        } => Code::FailedPrecondition,
        EngineError::Bmc { .. } => Code::FailedPrecondition,
        EngineError::ShuttingDown => Code::Unavailable,
        EngineError::Busy { .. } => Code::ResourceExhausted,
        EngineError::Store(_) => Code::Internal,
    }
}

/// gRPC's retry hint (milliseconds), honoured by gRPC clients' retry policy.
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
/// Trailer naming the `after_seq` a watcher should resume with (decimal).
pub const RESUME_AFTER_SEQ: &str = "x-rackagent-resume-after-seq";
/// Trailer naming the last event seq a watch stream has delivered (decimal).
pub const LAST_SEQ: &str = "x-rackagent-last-seq";
/// Trailer naming the action a WatchAction stream followed.
pub const ACTION_ID: &str = "x-rackagent-action-id";

/// What the API layer answers by itself, beside the engine's errors: how
/// watch streams refuse a cursor or end. Each tells the client where to
/// resume, in the message and in machine-readable trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// WatchPowerState from a cursor beyond the newest event (a database
    /// that was replaced, say).
    CursorAhead { cursor: u64, newest: u64 },
    /// WatchPowerState from a cursor whose next events are no longer retained.
    CursorExpired {
        cursor: u64,
        oldest: u64,
        newest: u64,
    },
    /// A watch fell so far behind that the events after the last one it
    /// delivered were dropped from the retained history. Ends the stream
    /// rather than skip them.
    WatchFellBehind { last: u64, oldest: u64, newest: u64 },
    /// The agent is stopping: a WatchPowerState stream ends after the last
    /// event it delivered, from which the client resumes once the agent is back.
    WatchStopped { last: u64 },
    /// The agent is stopping while the watched action has not ended: it is
    /// recorded, and carries on (or is recovered) after the restart.
    ActionWatchStopped {
        action_id: String,
        state: ActionState,
    },
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::CursorAhead { .. }
            | ApiError::CursorExpired { .. }
            | ApiError::WatchFellBehind { .. } => Code::OutOfRange,
            ApiError::WatchStopped { .. } | ApiError::ActionWatchStopped { .. } => {
                Code::Unavailable
            }
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::CursorAhead { cursor, newest } => format!(
                "after_seq {cursor} is ahead of the newest event ({newest}); re-read the servers, then watch with after_seq = {newest}"
            ),
            ApiError::CursorExpired { cursor, oldest, newest } => format!(
                "the events after seq {cursor} are no longer retained (the oldest kept is {oldest}); re-read the servers, then watch with after_seq = {newest}"
            ),
            ApiError::WatchFellBehind { last, oldest, newest } => format!(
                "this watch fell behind: it delivered every event up to seq {last}, and the ones after it are no longer retained (the oldest kept is {oldest}); re-read the servers, then watch again with after_seq = {newest}"
            ),
            ApiError::WatchStopped { last } => format!(
                "rack-agent is stopping; this watch delivered every event up to seq {last}: once the agent is back, watch again with after_seq = {last}"
            ),
            ApiError::ActionWatchStopped { action_id, state } => format!(
                "rack-agent is stopping while action {action_id} is {state}; the action is recorded and goes on (or is recovered) when the agent is back: then GetAction or WatchAction {action_id} again"
            ),
        }
    }

    /// Machine-readable trailers: where to resume, and what was delivered.
    fn trailers(&self) -> Vec<(&'static str, String)> {
        match self {
            ApiError::CursorAhead { newest, .. } | ApiError::CursorExpired { newest, .. } => {
                vec![(RESUME_AFTER_SEQ, newest.to_string())]
            }
            ApiError::WatchFellBehind { last, newest, .. } => vec![
                (RESUME_AFTER_SEQ, newest.to_string()),
                (LAST_SEQ, last.to_string()),
            ],
            ApiError::WatchStopped { last } => vec![
                (RESUME_AFTER_SEQ, last.to_string()),
                (LAST_SEQ, last.to_string()),
            ],
            ApiError::ActionWatchStopped { action_id, .. } => {
                vec![(ACTION_ID, action_id.clone())]
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let mut md = MetadataMap::new();
        for (key, value) in err.trailers() {
            if let Ok(v) = value.parse() {
                md.insert(key, v);
            }
        }
        Status::with_metadata(err.code(), err.message(), md)
    }
}

/// tonic's refusal of a request over the decoding limit is OUT_OF_RANGE;
/// it becomes RESOURCE_EXHAUSTED, the gRPC convention for "too large" (here,
/// OUT_OF_RANGE means a watch cursor). Other answers are left as they are.
pub fn oversize_request(headers: &mut tonic::codegen::http::HeaderMap) {
    let Some(st) = Status::from_header_map(headers) else {
        return;
    };
    let Some(detail) = st
        .message()
        .strip_prefix("Error, decoded message length too large: ")
    else {
        return;
    };
    if st.code() != Code::OutOfRange {
        return;
    }
    let exhausted = Status::resource_exhausted(format!(
        "request message too large ({detail}); split it or send less"
    ));
    headers.remove("grpc-message");
    let _ = exhausted.add_header(headers);
}

/// tonic answers a request message that does not decode (a string field
/// that is not UTF-8, a truncated or malformed message) with INTERNAL, the
/// gRPC library's code for a parse error. Here INTERNAL means a bug in the
/// agent (`DESIGN.md`, error mapping): bytes that are not a valid request are
/// the client's error, INVALID_ARGUMENT, with prost's description, which
/// names the message and field (`GetServerRequest.id: invalid string value:
/// data is not UTF-8 encoded`) and never repeats the bytes. Other answers are
/// left as they are.
pub fn undecodable_request(headers: &mut tonic::codegen::http::HeaderMap) {
    let Some(st) = Status::from_header_map(headers) else {
        return;
    };
    if st.code() != Code::Internal {
        return;
    }
    let Some(detail) = st
        .message()
        .strip_prefix("failed to decode Protobuf message: ")
    else {
        return;
    };
    let invalid = Status::invalid_argument(format!("request message cannot be decoded: {detail}"));
    headers.remove("grpc-message");
    let _ = invalid.add_header(headers);
}

impl From<EngineError> for Status {
    fn from(err: EngineError) -> Status {
        if let EngineError::Store(e) = &err {
            tracing::error!(error = %e, source = ?e, "internal error");
        }
        if let EngineError::Busy { retry_after, .. } = &err {
            let mut md = MetadataMap::new();
            if let Ok(v) = retry_after.as_millis().to_string().parse() {
                md.insert(RETRY_PUSHBACK_MS, v);
            }
            return Status::with_metadata(code_of(&err), chain(&err), md);
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
    fn busy_is_resource_exhausted_with_a_retry_hint() {
        let s = status(EngineError::Busy {
            waiting: 1024,
            retry_after: Duration::from_millis(50),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("retry in 50 ms"), "{}", s.message());
        assert_eq!(
            s.metadata()
                .get(RETRY_PUSHBACK_MS)
                .and_then(|v| v.to_str().ok()),
            Some("50")
        );
    }

    #[test]
    fn invalid_argument_is_invalid_argument() {
        let s = status(EngineError::InvalidArgument("server_id is required".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "server_id is required");
    }

    #[test]
    fn unauthenticated_is_unauthenticated() {
        let s = status(EngineError::Unauthenticated("who".into()));
        assert_eq!(s.code(), Code::Unauthenticated);
    }

    #[test]
    fn a_policy_refusal_is_permission_denied_naming_the_rule() {
        let s = status(EngineError::PermissionDenied(Denied {
            caller: "u".into(),
            op: "reboot",
            rule: "admin_or_owner",
        }));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().contains("admin_or_owner"));
    }

    #[test]
    fn not_found_names_the_id_briefly() {
        let s = status(EngineError::NotFound {
            what: "server",
            id: "s9".into(),
        });
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "server \"s9\" not found");
        let s = status(EngineError::NotFound {
            what: "action",
            id: "a".repeat(100_000),
        });
        assert!(s.message().len() < 100, "{}", s.message());
    }

    #[test]
    fn already_exists_is_already_exists() {
        let s = status(EngineError::AlreadyExists {
            what: "server",
            id: "s9".into(),
        });
        assert_eq!(s.code(), Code::AlreadyExists);
        assert!(s.message().contains("s9"));
    }

    #[test]
    fn a_conflict_is_failed_precondition() {
        let s = status(EngineError::Conflict("server s1 is locked".into()));
        assert_eq!(s.code(), Code::FailedPrecondition);
    }

    #[test]
    fn a_bmc_configuration_question_is_a_failed_precondition() {
        let s = status(EngineError::Bmc {
            server: "s1".into(),
            bmc: "b".into(),
            source: BmcError::Config("set the `system_id` option".into()),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("system_id"), "{}", s.message());
    }

    #[test]
    fn what_the_bmc_does_not_offer_is_unimplemented_and_a_refusal_a_failed_precondition() {
        let s = status(EngineError::Bmc {
            server: "s1".into(),
            bmc: "b".into(),
            source: BmcError::Unsupported("sensors".into()),
        });
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(
            s.message().contains("does not support sensors"),
            "{}",
            s.message()
        );
        let s = status(EngineError::Bmc {
            server: "s1".into(),
            bmc: "b".into(),
            source: BmcError::Refused("no".into()),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
    }

    #[test]
    fn shutting_down_is_unavailable() {
        assert_eq!(status(EngineError::ShuttingDown).code(), Code::Unavailable);
    }

    #[test]
    fn a_store_failure_is_internal() {
        let s = status(EngineError::Store(StoreError::Corrupt("x".into())));
        assert_eq!(s.code(), Code::Internal);
    }

    fn trailer(s: &Status, key: &str) -> Option<String> {
        s.metadata()
            .get(key)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn a_cursor_ahead_of_the_newest_event_is_out_of_range() {
        let s = Status::from(ApiError::CursorAhead {
            cursor: 900,
            newest: 42,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(s.message().contains("900") && s.message().contains("after_seq = 42"));
        assert_eq!(trailer(&s, RESUME_AFTER_SEQ).as_deref(), Some("42"));
    }

    #[test]
    fn an_expired_cursor_is_out_of_range_with_where_to_resume() {
        let s = Status::from(ApiError::CursorExpired {
            cursor: 3,
            oldest: 100,
            newest: 160,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(s.message().contains("after seq 3"), "{}", s.message());
        assert!(s.message().contains("after_seq = 160"), "{}", s.message());
        assert_eq!(trailer(&s, RESUME_AFTER_SEQ).as_deref(), Some("160"));
    }

    #[test]
    fn a_watch_that_fell_behind_ends_out_of_range_naming_its_last_seq() {
        let s = Status::from(ApiError::WatchFellBehind {
            last: 1834,
            oldest: 7817,
            newest: 8001,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(s.message().contains("seq 1834"), "{}", s.message());
        assert!(s.message().contains("after_seq = 8001"), "{}", s.message());
        assert_eq!(trailer(&s, RESUME_AFTER_SEQ).as_deref(), Some("8001"));
        assert_eq!(trailer(&s, LAST_SEQ).as_deref(), Some("1834"));
    }

    #[test]
    fn a_watch_ended_by_a_stop_is_unavailable_naming_where_to_resume() {
        let s = Status::from(ApiError::WatchStopped { last: 77 });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("after_seq = 77"), "{}", s.message());
        assert_eq!(trailer(&s, RESUME_AFTER_SEQ).as_deref(), Some("77"));
        assert_eq!(trailer(&s, LAST_SEQ).as_deref(), Some("77"));
    }

    #[test]
    fn an_action_watch_ended_by_a_stop_is_unavailable_naming_the_action() {
        let s = Status::from(ApiError::ActionWatchStopped {
            action_id: "a-1".into(),
            state: ActionState::Running,
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().contains("a-1")
                && s.message().contains("running")
                && s.message().contains("GetAction"),
            "{}",
            s.message()
        );
        assert_eq!(trailer(&s, ACTION_ID).as_deref(), Some("a-1"));
    }

    #[test]
    fn an_over_size_request_is_resource_exhausted_not_out_of_range() {
        let mut h = tonic::codegen::http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 2097159 bytes, the limit is: 262144 bytes",
        )
        .add_header(&mut h)
        .unwrap();
        oversize_request(&mut h);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().contains("2097159") && s.message().contains("262144"),
            "{}",
            s.message()
        );
        // A cursor's OUT_OF_RANGE, and other answers, are left alone.
        let mut h = tonic::codegen::http::HeaderMap::new();
        Status::from(ApiError::CursorAhead {
            cursor: 9,
            newest: 1,
        })
        .add_header(&mut h)
        .unwrap();
        oversize_request(&mut h);
        assert_eq!(
            Status::from_header_map(&h).unwrap().code(),
            Code::OutOfRange
        );
        let mut h = tonic::codegen::http::HeaderMap::new();
        oversize_request(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn an_undecodable_request_is_invalid_argument_naming_the_field() {
        let mut h = tonic::codegen::http::HeaderMap::new();
        Status::internal(
            "failed to decode Protobuf message: GetServerRequest.id: invalid string value: data is not UTF-8 encoded",
        )
        .add_header(&mut h)
        .unwrap();
        undecodable_request(&mut h);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "request message cannot be decoded: GetServerRequest.id: invalid string value: data is not UTF-8 encoded"
        );
        // The agent's own INTERNAL answers, and other codes, are left alone.
        for st in [
            Status::internal("store: disk I/O error"),
            Status::out_of_range("failed to decode Protobuf message: x"),
        ] {
            let mut h = tonic::codegen::http::HeaderMap::new();
            st.add_header(&mut h).unwrap();
            undecodable_request(&mut h);
            let back = Status::from_header_map(&h).unwrap();
            assert_eq!((back.code(), back.message()), (st.code(), st.message()));
        }
        let mut h = tonic::codegen::http::HeaderMap::new();
        undecodable_request(&mut h);
        assert!(h.is_empty());
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
