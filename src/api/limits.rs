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
/// (the largest, EnrollServer, is well under a kilobyte); this leaves room
/// for any honest one and bounds what a peer can make the agent allocate.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// A gRPC service whose answers to over-size requests are RESOURCE_EXHAUSTED,
/// and to undecodable ones INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Limited<S>(S);

/// The RackAgent service with the request size limit.
pub fn rack_agent(
    svc: super::Service,
) -> Limited<crate::proto::rack_agent_server::RackAgentServer<super::Service>> {
    Limited(
        crate::proto::rack_agent_server::RackAgentServer::new(svc)
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
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
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let answer = self.0.call(req);
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
