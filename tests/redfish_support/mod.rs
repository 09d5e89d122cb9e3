//! Test support for the Redfish driver: a loopback HTTP server of our own
//! (`mock`) and the sushy-tools emulator bench (`bench`).
#![allow(dead_code)]

pub mod bench;
pub mod mock;
pub mod session_bmc;
