//! The gRPC API: tonic service, request conversion, caller identity and the
//! error-to-status mapping.

pub mod auth;
pub mod convert;
pub mod limits;
pub mod service;
pub mod status;

pub use service::Service;
