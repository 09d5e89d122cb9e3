//! `bmc-sim`: one process serving N simulated BMCs on N loopback ports each
//! for IPMI v2.0 (RMCP+, UDP) and Redfish (HTTPS), so that rack-agent can be
//! measured polling thousands of servers over the real protocols, crypto
//! included. Each BMC is one server: IPMI and Redfish show and change the
//! same power state and boot override. Counters per BMC are read through a
//! small control interface on loopback HTTP ([`control`]).
//!
//! The IPMI server side ([`ipmi`]) is written from the IPMI v2.0
//! specification, independently of the agent's client, so that each checks
//! the other.

pub mod cli;
pub mod control;
pub mod ipmi;
pub mod ports;
pub mod redfish;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

pub use cli::Args;
use state::Bmc;

/// Session limits and timeouts of every BMC.
#[derive(Debug, Clone)]
pub struct Limits {
    pub ipmi_sessions: usize,
    pub ipmi_timeout: Duration,
    pub redfish_sessions: usize,
    pub redfish_timeout: Duration,
}

/// The simulator: its BMCs and what they share.
#[derive(Debug)]
pub struct Sim {
    pub bmcs: Vec<Bmc>,
    pub limits: Limits,
    pub user: String,
    pub password: String,
    /// Kuid: the password zero-padded to 20 bytes.
    pub kuid: [u8; 20],
    /// How long a power change takes to show (0: at once).
    pub power_delay: Duration,
    pub started: Instant,
    pub ipmi_base: Option<u16>,
    pub redfish_base: Option<u16>,
    /// One Redfish port for every system (`--redfish-layout shared`).
    pub redfish_shared: bool,
}

impl Sim {
    /// The Redfish port of BMC `i`.
    pub fn redfish_port(&self, i: usize) -> Option<u16> {
        let base = self.redfish_base?;
        Some(if self.redfish_shared {
            base
        } else {
            base + i as u16
        })
    }
}

/// Raises the open-files limit to what `need` descriptors require (as root,
/// the hard limit too).
fn raise_nofile(need: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= need {
            return Ok(());
        }
        let want = libc::rlimit {
            rlim_cur: need.max(lim.rlim_cur),
            rlim_max: need.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            bail!(
                "{need} file descriptors are needed and the limit is {} (hard {}): {} \
                 (raise it with `ulimit -n` or run fewer BMCs)",
                lim.rlim_cur,
                lim.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Binds everything, prints one JSON "ready" line on stdout, and serves
/// until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    args.validate()?;
    let n = args.count;
    let redfish_ports = match (args.redfish_base, args.redfish_layout) {
        (None, _) => 0,
        (Some(_), cli::RedfishLayout::Shared) => 1,
        (Some(_), cli::RedfishLayout::Ports) => n as u64,
    };
    // One socket per port, and room for connections and the rest.
    let need = args.ipmi_base.is_some() as u64 * n as u64 + redfish_ports + 1024;
    raise_nofile(need)?;

    let started_wall = SystemTime::now();
    let limits = Limits {
        ipmi_sessions: args.ipmi_sessions,
        ipmi_timeout: args.session_timeout.into(),
        redfish_sessions: args.redfish_sessions,
        redfish_timeout: args.redfish_session_timeout.into(),
    };
    let bmcs = (0..n)
        .map(|i| Bmc::new(i, args.power.initially_on(i), started_wall, &limits))
        .collect();

    let ipmi = match args.ipmi_base {
        Some(base) => Some(ipmi::io::bind(base, n).context("IPMI ports")?),
        None => None,
    };
    let redfish = match args.redfish_base {
        Some(base) => {
            let ports = if args.redfish_layout == cli::RedfishLayout::Shared {
                1
            } else {
                n
            };
            Some(redfish::bind(base, ports).context("Redfish ports")?)
        }
        None => None,
    };
    let mut kuid = [0u8; 20];
    kuid[..args.password.len()].copy_from_slice(args.password.as_bytes());
    let sim = Arc::new(Sim {
        bmcs,
        limits,
        user: args.user.clone(),
        password: args.password.clone(),
        kuid,
        power_delay: args.power_delay.into(),
        started: t0,
        ipmi_base: ipmi.as_ref().map(|(b, _)| *b),
        redfish_base: redfish.as_ref().map(|(b, _)| *b),
        redfish_shared: args.redfish_layout == cli::RedfishLayout::Shared,
    });

    if let Some((_, sockets)) = ipmi {
        match args.ipmi_io {
            cli::IpmiIo::Epoll => ipmi::io::serve_epoll(sim.clone(), sockets, args.ipmi_threads)?,
            cli::IpmiIo::Tasks => ipmi::io::serve_tasks(sim.clone(), sockets)?,
        }
    }
    let mut cert_sha256 = None;
    if let Some((_, listeners)) = redfish {
        let acceptor = if args.http {
            None
        } else {
            let tls = redfish::make_tls()?;
            if let Some(path) = &args.cert_out {
                std::fs::write(path, &tls.cert_pem)
                    .with_context(|| format!("writing the certificate to {}", path.display()))?;
            }
            cert_sha256 = Some(tls.sha256.clone());
            Some(tls.acceptor)
        };
        redfish::serve(sim.clone(), listeners, acceptor, sim.redfish_shared)?;
    }
    let control = control::bind(args.control).await.context("control port")?;
    let control_addr = control.local_addr()?;
    control::serve(sim.clone(), control);

    let ready = serde_json::json!({
        "ready": true,
        "count": n,
        "ipmi_base": sim.ipmi_base,
        "redfish_base": sim.redfish_base,
        "redfish_scheme": if args.http { "http" } else { "https" },
        "redfish_layout": if sim.redfish_shared { "shared" } else { "ports" },
        "control": control_addr.to_string(),
        "cert_sha256": cert_sha256,
        "startup_ms": t0.elapsed().as_secs_f64() * 1000.0,
    });
    println!("{ready}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(
        count = n,
        ipmi_base = ?sim.ipmi_base,
        redfish_base = ?sim.redfish_base,
        control = %control_addr,
        startup_ms = t0.elapsed().as_millis() as u64,
        "bmc-sim ready"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("{}", control::summary(&sim));
    Ok(())
}
