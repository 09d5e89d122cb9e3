//! How large a request the API takes. tonic refuses a request message over
//! its decoding limit before any handler runs, with OUT_OF_RANGE; the gRPC
//! convention for "too large" is RESOURCE_EXHAUSTED, and here OUT_OF_RANGE
//! means a watch cursor. `Limited` sets the limit and rewrites that answer
//! (through `status::oversize_request`), and tonic's INTERNAL for a request
//! that does not decode (a string field that is not UTF-8) into
//! INVALID_ARGUMENT (`status::undecodable_request`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};
use tonic::server::NamedService;

use super::status;

/// The largest request message the API decodes. Every request is small
/// (EnrollServer, the largest but one, is well under a kilobyte); this leaves
/// room for any honest one and bounds what a peer can make the agent allocate.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Most servers one GetPowerStates call may name.
pub const MAX_SWEEP: usize = 10_000;

/// GetPowerStates alone may be larger: `MAX_SWEEP` ids of up to
/// `ID_MAX_LEN` bytes, each with its tag and length byte, and `refresh`
/// (660,064 bytes). Under `MAX_REQUEST_BYTES` a sweep of 10,000 long ids,
/// which the contract allows, came back RESOURCE_EXHAUSTED: the answer that
/// tells a client to retry later.
pub const MAX_SWEEP_REQUEST_BYTES: usize = MAX_SWEEP * (crate::model::ID_MAX_LEN + 2) + 64;

const SWEEP_PATH: &str = "/rackagent.v1.RackAgent/GetPowerStates";

/// A gRPC service whose answers to over-size requests are RESOURCE_EXHAUSTED,
/// and to undecodable ones INVALID_ARGUMENT: the same service twice, with the
/// sweep's decoding limit for GetPowerStates and the common one for the rest.
#[derive(Debug, Clone)]
pub struct Limited<S> {
    any: S,
    sweep: S,
}

/// The RackAgent service with the request size limits.
pub fn rack_agent(
    svc: super::Service,
) -> Limited<crate::proto::rack_agent_server::RackAgentServer<super::Service>> {
    let server = crate::proto::rack_agent_server::RackAgentServer::new(svc);
    Limited {
        any: server.clone().max_decoding_message_size(MAX_REQUEST_BYTES),
        sweep: server.max_decoding_message_size(MAX_SWEEP_REQUEST_BYTES),
    }
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for Limited<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.any.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.sweep.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let answer = if req.uri().path() == SWEEP_PATH {
            self.sweep.call(req)
        } else {
            self.any.call(req)
        };
        Box::pin(async move {
            let mut resp = answer.await?;
            // A refusal before any message is "trailers-only": the status
            // is in the headers.
            status::oversize_request(resp.headers_mut());
            status::undecodable_request(resp.headers_mut());
            Ok(resp)
        })
    }
}
