//! `bench`: rack-agent's benchmarks next to reference tools, in one run
//! (issue 9 item 3). Use it through the wrapper, which builds the release
//! binaries and stops whatever a run started even if this process is killed:
//!
//! ```text
//! scripts/bench.sh [--smoke | --large] [--json] [--rounds N] [--only ipmi,inventory,redfish,api,scale]
//! ```
//!
//! Sections (each starts what it needs on loopback and stops it after):
//! - `ipmi`: fleet sweeps over N ipmi_sim BMCs — ipmipower (reference),
//!   ipmitool in parallel, the daemon warm and cold; reads and hard resets.
//! - `inventory`: sensors and the SEL over N ipmi_sim BMCs — FreeIPMI's
//!   ipmi-sensors / ipmi-sel (references), ipmitool in parallel, the daemon.
//! - `redfish`: fleet sweep over an instant loopback Redfish server — a plain
//!   parallel reqwest client (reference) and the daemon.
//! - `api`: accept throughput and latency, reads under load, the no-op
//!   floor, WatchPowerState fan-out.
//! - `scale`: the sync loop over many servers, ListServers of all, restart
//!   to READY with a long history.
//!
//! Contenders alternate within each round (the order rotates per round);
//! every figure is a median over the rounds. A contender that fails to run
//! makes the run exit non-zero; a missed target does not.

mod api;
mod daemon;
mod inventory;
mod ipmi;
mod reaper;
mod redfish;
mod report;
mod scale;
mod tools;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::reaper::Reaper;
use crate::report::Report;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "rack-agent benchmarks next to reference tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmarks (normally through scripts/bench.sh).
    Run(RunArgs),
    /// The instant Redfish server a run starts (internal).
    RedfishServer {
        #[arg(long)]
        count: usize,
        /// The run it belongs to (so that its command line names the run).
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Stop everything a run recorded in RUN_DIR/started.
    Cleanup { run_dir: PathBuf },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Section {
    Ipmi,
    Inventory,
    Redfish,
    Api,
    Scale,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Tiny sizes, one or two rounds, well under a minute: checks that every
    /// contender runs (CI).
    #[arg(long, conflicts_with = "large")]
    smoke: bool,
    /// The issue's scale sizes: 10,000 servers, 1,000,000 recorded actions.
    #[arg(long)]
    large: bool,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json_file: Option<PathBuf>,
    /// Rounds (default: 2 smoke, 5 otherwise).
    #[arg(long)]
    rounds: Option<usize>,
    /// Only these sections.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Where the run keeps its files (the wrapper makes it).
    #[arg(long)]
    run_dir: PathBuf,
    /// The daemon binary under test.
    #[arg(long)]
    agent: PathBuf,
    /// The CLI binary.
    #[arg(long)]
    rackctl: PathBuf,
    /// The many-BMC simulator (the scale section's real-protocol polling).
    #[arg(long)]
    bmc_sim: Option<PathBuf>,
    /// The repository (for hil-tests/ipmi).
    #[arg(long)]
    repo: PathBuf,
}

/// How big and how long each part runs.
pub struct Sizes {
    pub mode: &'static str,
    pub rounds: usize,
    pub ipmi_n: Vec<usize>,
    pub inventory_n: Vec<usize>,
    pub redfish_n: Vec<usize>,
    pub api_servers: usize,
    pub api_clients: Vec<usize>,
    pub api_rounds: usize,
    pub floor_secs: f64,
    pub target_rate: f64,
    pub moderate_rate: f64,
    pub probe_rate: f64,
    pub open_secs: f64,
    pub watchers: usize,
    pub watch_rounds: usize,
    pub scale_servers: usize,
    pub scale_actions: usize,
    pub sync_interval: Duration,
    pub poll_window: Duration,
}

impl Sizes {
    fn smoke() -> Sizes {
        Sizes {
            mode: "smoke (tiny sizes: checks that every contender runs; the figures are not measurements)",
            rounds: 2,
            ipmi_n: vec![4],
            inventory_n: vec![4],
            redfish_n: vec![4],
            api_servers: 64,
            api_clients: vec![1, 4],
            api_rounds: 1,
            floor_secs: 0.3,
            target_rate: 200.0,
            moderate_rate: 50.0,
            probe_rate: 50.0,
            open_secs: 1.0,
            watchers: 10,
            watch_rounds: 2,
            scale_servers: 50,
            scale_actions: 2_000,
            sync_interval: Duration::from_secs(1),
            poll_window: Duration::from_secs(2),
        }
    }
    fn default_() -> Sizes {
        Sizes {
            mode:
                "default (IPMI/Redfish N = 32 and 256; scale at 1,000 servers and 100,000 actions)",
            rounds: 5,
            ipmi_n: vec![32, 256],
            inventory_n: vec![32],
            redfish_n: vec![32, 256],
            api_servers: 2048,
            api_clients: vec![1, 16, 64],
            api_rounds: 3,
            floor_secs: 2.0,
            target_rate: 5000.0,
            moderate_rate: 500.0,
            probe_rate: 200.0,
            open_secs: 4.0,
            watchers: 100,
            watch_rounds: 7,
            scale_servers: 1_000,
            scale_actions: 100_000,
            sync_interval: Duration::from_secs(10),
            poll_window: Duration::from_secs(20),
        }
    }
    fn large() -> Sizes {
        Sizes {
            mode: "large (the issue's sizes: 10,000 servers, 1,000,000 recorded actions)",
            api_rounds: 5,
            scale_servers: 10_000,
            scale_actions: 1_000_000,
            poll_window: Duration::from_secs(30),
            ..Sizes::default_()
        }
    }
}

/// Set by Ctrl-C/SIGTERM: what fails after it is the interruption, not a contender.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub struct Ctx {
    pub sizes: Sizes,
    pub agent: PathBuf,
    pub rackctl: PathBuf,
    pub bmc_sim: Option<PathBuf>,
    pub repo: PathBuf,
    pub run_dir: PathBuf,
    pub reaper: Arc<Reaper>,
    failures: Mutex<Vec<String>>,
}

impl Ctx {
    /// A contender failed to run: the run will exit non-zero.
    pub fn fail(&self, what: String) {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

/// A progress line on stderr, with the time since the run began.
pub fn progress(msg: &str) {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = T0
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64();
    eprintln!("bench [{t:6.1}s]: {msg}");
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn host_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = sh("free -m | awk '/^Mem:/ {print $2}'");
    format!(
        "{} ({cores} cores, {cpu}, {mem} MiB), kernel {}, load before the run: {}",
        sh("hostname"),
        sh("uname -r"),
        sh("cut -d' ' -f1-3 /proc/loadavg")
    )
}

async fn run(args: RunArgs) -> i32 {
    let mut sizes = if args.smoke {
        Sizes::smoke()
    } else if args.large {
        Sizes::large()
    } else {
        Sizes::default_()
    };
    if let Some(r) = args.rounds {
        sizes.rounds = r.max(1);
        sizes.api_rounds = r.max(1);
    }
    progress(&format!("run directory {}", args.run_dir.display()));
    let reaper = Arc::new(Reaper::new(&args.run_dir, &args.repo));
    let ctx = Arc::new(Ctx {
        sizes,
        agent: args.agent.clone(),
        rackctl: args.rackctl.clone(),
        bmc_sim: args.bmc_sim.clone().filter(|p| p.exists()),
        repo: args.repo.clone(),
        run_dir: args.run_dir.clone(),
        reaper: reaper.clone(),
        failures: Mutex::new(Vec::new()),
    });

    // Ctrl-C / SIGTERM: stop everything started, then exit.
    {
        let reaper = reaper.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            progress("interrupted: stopping everything this run started");
            tokio::task::block_in_place(|| reaper.cleanup());
            std::process::exit(130);
        });
    }

    let want = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut missing_tools = Vec::new();
    for t in ["ipmi_sim", "ipmipower", "ipmitool"] {
        if want(Section::Ipmi) && !tools::have(t) {
            missing_tools.push(t);
        }
    }
    let mut missing_inventory_tools = Vec::new();
    for t in ["ipmi_sim", "ipmi-sensors", "ipmi-sel", "ipmitool"] {
        if want(Section::Inventory) && !tools::have(t) {
            missing_inventory_tools.push(t);
        }
    }
    let daemon_line = format!(
        "{} (git {}{})",
        args.agent.display(),
        sh(&format!(
            "git -C '{}' rev-parse --short HEAD",
            args.repo.display()
        )),
        if sh(&format!(
            "git -C '{}' status --porcelain -- src Cargo.toml Cargo.lock",
            args.repo.display()
        ))
        .is_empty()
        {
            ""
        } else {
            ", src modified"
        }
    );
    let mut report = Report {
        mode: ctx.sizes.mode.to_string(),
        rounds: ctx.sizes.rounds,
        date: sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        host: host_line(),
        daemon: daemon_line,
        groups: Vec::new(),
        missing: Vec::new(),
        failures: Vec::new(),
    };

    if want(Section::Ipmi) {
        if missing_tools.is_empty() {
            for &n in &ctx.sizes.ipmi_n.clone() {
                report.groups.extend(ipmi::run(&ctx, n).await);
                tokio::task::block_in_place(|| stop_ipmi(&ctx, n));
            }
        } else {
            ctx.fail(format!(
                "ipmi: {} not installed (hil-tests/ipmi/setup.sh installs them)",
                missing_tools.join(", ")
            ));
        }
    }
    if want(Section::Inventory) {
        if missing_inventory_tools.is_empty() {
            for &n in &ctx.sizes.inventory_n.clone() {
                report.groups.extend(inventory::run(&ctx, n).await);
                tokio::task::block_in_place(|| stop_bmcs(&ctx, &format!("inventory-{n}/bmc")));
            }
        } else {
            ctx.fail(format!(
                "inventory: {} not installed (hil-tests/ipmi/setup.sh installs them)",
                missing_inventory_tools.join(", ")
            ));
        }
    }
    if want(Section::Redfish) {
        for &n in &ctx.sizes.redfish_n.clone() {
            report.groups.extend(redfish::run(&ctx, n).await);
        }
    }
    if want(Section::Api) {
        report.groups.extend(api::run(&ctx).await);
    }
    if want(Section::Scale) {
        let (g, m) = scale::run(&ctx).await;
        report.groups.extend(g);
        report.missing.extend(m);
    }

    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        // The signal handler stops everything and exits.
        std::future::pending::<()>().await;
    }
    progress("stopping everything this run started");
    tokio::task::block_in_place(|| reaper.cleanup());
    report.failures = ctx
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    if let Some(f) = &args.json_file {
        if let Err(e) = std::fs::write(f, &json) {
            progress(&format!("cannot write {}: {e}", f.display()));
        }
    }
    if args.json {
        println!("{json}");
    } else {
        report.print_table();
    }
    if report.failures.is_empty() {
        0
    } else {
        1
    }
}

/// The BMCs of one IPMI size, stopped as soon as that size is done.
fn stop_ipmi(ctx: &Ctx, n: usize) {
    for sub in ["bmc-none", "bmc-stub"] {
        stop_bmcs(ctx, &format!("ipmi-{n}/{sub}"));
    }
}

/// Stops the ipmi_sim BMCs under RUN_DIR/SUB (if any were started there).
fn stop_bmcs(ctx: &Ctx, sub: &str) {
    let dir = ctx.run_dir.join(sub);
    if dir.exists() {
        let _ = std::process::Command::new("bash")
            .arg(ctx.repo.join("hil-tests/ipmi/stop.sh"))
            .arg(&dir)
            .status();
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::RedfishServer { count, .. } => match redfish::serve(count) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("redfish-server: {e}");
                1
            }
        },
        Cmd::Cleanup { run_dir } => {
            let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            Reaper::new(&run_dir, &repo).cleanup();
            0
        }
        Cmd::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let reaper = Reaper::new(&args.run_dir, &args.repo);
            // A panic unwinds through here: stop what was started, then fail.
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(run(args))));
            match code {
                Ok(c) => c,
                Err(_) => {
                    reaper.cleanup();
                    2
                }
            }
        }
    };
    std::process::exit(code);
}
