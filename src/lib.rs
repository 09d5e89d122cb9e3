//! rack-agent: a per-rack daemon that power-controls bare-metal servers through
//! their BMCs for a cloud control plane. See `DESIGN` in the README for the pieces.

pub mod api;
pub mod bmc;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod store;
pub mod sync;

/// Generated gRPC types and service traits (`proto/rackagent/v1`).
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("rackagent.v1");

    /// The encoded descriptors of the contract, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/rackagent_descriptor.bin"));
}
