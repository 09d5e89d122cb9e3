//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, ValueEnum};

/// One process serving N simulated BMCs: IPMI v2.0 (RMCP+) on UDP ports
/// IPMI_BASE.., Redfish on TCP ports REDFISH_BASE.., all on 127.0.0.1.
/// Prints one JSON line on stdout when every port is bound.
#[derive(Debug, Clone, Parser)]
#[command(name = "bmc-sim", version)]
pub struct Args {
    /// Number of BMCs (servers).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// First IPMI UDP port (BMC i listens on base + i); 0 finds a free run.
    #[arg(long)]
    pub ipmi_base: Option<u16>,
    /// First Redfish TCP port (BMC i listens on base + i); 0 finds a free run.
    #[arg(long)]
    pub redfish_base: Option<u16>,
    /// `ports`: BMC i on port base + i. `shared`: one port, every system
    /// under /redfish/v1/Systems/node{i} (a client picks one with the agent's
    /// `system_id` option); one socket instead of N.
    #[arg(long, value_enum, default_value_t = RedfishLayout::Ports)]
    pub redfish_layout: RedfishLayout,
    /// Serve Redfish over plain HTTP instead of HTTPS.
    #[arg(long)]
    pub http: bool,
    /// Write the Redfish TLS certificate (PEM) here, for clients to trust it.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
    /// The control interface (plain HTTP); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// The one user of every BMC (IPMI: at most 16 bytes).
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Its password (IPMI: at most 20 bytes).
    #[arg(long, default_value = "password")]
    pub password: String,
    /// Power of the hosts at start.
    #[arg(long, value_enum, default_value_t = InitialPower::Off)]
    pub power: InitialPower,
    /// How long a power change takes to show, e.g. "2s" (0: at once).
    #[arg(long, default_value = "0s")]
    pub power_delay: humantime::Duration,
    /// IPMI sessions per BMC, half-open ones included (real BMCs: 4 to 64).
    #[arg(long, default_value_t = 8)]
    pub ipmi_sessions: usize,
    /// IPMI session idle timeout (real BMCs: about 60 s).
    #[arg(long, default_value = "60s")]
    pub session_timeout: humantime::Duration,
    /// Redfish sessions per BMC (with `--redfish-layout shared`: for the whole service).
    #[arg(long, default_value_t = 16)]
    pub redfish_sessions: usize,
    /// Redfish SessionTimeout.
    #[arg(long, default_value = "30m")]
    pub redfish_session_timeout: humantime::Duration,
    /// How IPMI sockets are served.
    #[arg(long, value_enum, default_value_t = IpmiIo::Epoll)]
    pub ipmi_io: IpmiIo,
    /// Threads serving IPMI with `--ipmi-io epoll`.
    #[arg(long, default_value_t = 1)]
    pub ipmi_threads: usize,
    /// Tokio worker threads (Redfish, control, `--ipmi-io tasks`).
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitialPower {
    Off,
    On,
    /// Even-numbered hosts on, odd ones off.
    Alternate,
}

impl InitialPower {
    pub fn initially_on(self, i: usize) -> bool {
        match self {
            InitialPower::Off => false,
            InitialPower::On => true,
            InitialPower::Alternate => i.is_multiple_of(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedfishLayout {
    /// A port per BMC.
    Ports,
    /// One port for all systems.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpmiIo {
    /// A few threads, each with one edge-triggered epoll over its share of sockets.
    Epoll,
    /// One tokio task per socket.
    Tasks,
}

impl Args {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.count == 0 {
            bail!("--count must be at least 1");
        }
        if self.ipmi_base.is_none() && self.redfish_base.is_none() {
            bail!("nothing to serve: give --ipmi-base, --redfish-base or both");
        }
        if self.ipmi_base.is_some() && (self.user.len() > 16 || self.password.len() > 20) {
            bail!("IPMI v2.0 allows user names up to 16 bytes and passwords up to 20");
        }
        if self.ipmi_sessions == 0 || self.redfish_sessions == 0 {
            bail!("session limits must be at least 1");
        }
        if self.http && self.cert_out.is_some() {
            bail!("--cert-out makes no sense with --http");
        }
        Ok(())
    }
}
