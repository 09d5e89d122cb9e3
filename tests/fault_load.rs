//! Issue 11, cases 4–6: the real daemon under load, over gRPC, judged the way
//! a control plane and the BMC side would judge it.
//!
//! - `crash_under_load_on_bench_bmcs` (case 4): 200 actions of every kind at
//!   once on 200 bmc-sim BMCs (IPMI RMCP+ and Redfish), the daemon SIGKILLed
//!   at a random moment, restarted, five rounds (some also killed again while
//!   recovering). Every accepted action has exactly one terminal record; the
//!   BMCs' own counters show no power command sent twice and the boots each
//!   action should cause; `PRAGMA integrity_check` is ok.
//! - `overload_answers_every_call_and_bounds_memory` (case 5): 1,000 action
//!   requests at once for 50 servers and 10 watchers that read slowly: every
//!   call is answered (accepted, conflict, or RESOURCE_EXHAUSTED with a retry
//!   hint), each lagging watcher is ended with OUT_OF_RANGE that says where to
//!   resume, RSS stays bounded, and the fake BMCs (which count calls in
//!   progress) never see two operations at once.
//! - `soak_keeps_resources_flat` (case 6): 20,000 actions, on fake BMCs and
//!   on bmc-sim; file descriptors, threads, RSS and the database's size at
//!   the end stay within 10 % of their level after warm-up.
//!
//! Random choices come from a seeded RNG; the seed is printed at the start of
//! each test (set `RACK_LOAD_SEED` to repeat a run).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rack_agent::bmc::fake::{read_journal, OVERLAP};
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

type Client = RackAgentClient<Channel>;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// The run's seed: `RACK_LOAD_SEED`, else the clock. Printed so a failure can
/// be repeated.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("RACK_LOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (RACK_LOAD_SEED={seed} repeats the random choices)");
    seed
}

/// What the control plane asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Act {
    Hard,
    Soft,
    Start,
    Stop,
    ForceStop,
    Pxe,
    Media,
    Lock,
    Unlock,
    ResetActive,
}

impl Act {
    async fn send(self, c: &mut Client, server: &str, rid: &str) -> Result<pb::Action, Status> {
        let server_id = server.to_string();
        let request_id = rid.to_string();
        let r = match self {
            Act::Hard | Act::Soft => {
                c.reboot(admin(pb::RebootRequest {
                    server_id,
                    r#type: if self == Act::Hard {
                        pb::RebootType::Hard
                    } else {
                        pb::RebootType::Soft
                    } as i32,
                    request_id,
                }))
                .await
            }
            Act::Start => {
                c.start(admin(pb::StartRequest {
                    server_id,
                    request_id,
                }))
                .await
            }
            Act::Stop | Act::ForceStop => {
                c.stop(admin(pb::StopRequest {
                    server_id,
                    force: self == Act::ForceStop,
                    request_id,
                }))
                .await
            }
            Act::Pxe | Act::Media => {
                let source = if self == Act::Pxe {
                    pb::reinstall_request::BootSource::Pxe(true)
                } else {
                    pb::reinstall_request::BootSource::VirtualMediaUrl(
                        "http://127.0.0.1:8080/installer.iso".into(),
                    )
                };
                c.reinstall(admin(pb::ReinstallRequest {
                    server_id,
                    boot_source: Some(source),
                    request_id,
                }))
                .await
            }
            Act::Lock => {
                c.lock(admin(pb::LockRequest {
                    server_id,
                    request_id,
                }))
                .await
            }
            Act::Unlock => {
                c.unlock(admin(pb::UnlockRequest {
                    server_id,
                    request_id,
                }))
                .await
            }
            Act::ResetActive => {
                c.reset_state(admin(pb::ResetStateRequest {
                    server_id,
                    state: pb::ResetStateTarget::Active as i32,
                    request_id,
                }))
                .await
            }
        };
        r.map(|a| a.into_inner())
    }

    /// The host boots this action causes when it succeeds.
    fn boots(self) -> u64 {
        match self {
            Act::Hard | Act::Soft | Act::Start | Act::Pxe | Act::Media => 1,
            _ => 0,
        }
    }

    fn powered_on_after(self) -> bool {
        !matches!(self, Act::Stop | Act::ForceStop)
    }
}

fn terminal(a: &pb::Action) -> bool {
    matches!(
        pb::ActionState::try_from(a.state),
        Ok(pb::ActionState::Succeeded | pb::ActionState::Failed | pb::ActionState::Superseded)
    )
}

fn state_name(a: &pb::Action) -> &'static str {
    match pb::ActionState::try_from(a.state) {
        Ok(pb::ActionState::Succeeded) => "succeeded",
        Ok(pb::ActionState::Failed) => "failed",
        Ok(pb::ActionState::Superseded) => "superseded",
        Ok(pb::ActionState::Running) => "running",
        Ok(pb::ActionState::Pending) => "pending",
        _ => "?",
    }
}

/// Waits until every action in `ids` has ended; returns them by id.
async fn wait_all(
    c: &mut Client,
    ids: impl IntoIterator<Item = String>,
    limit: Duration,
    ctx: &str,
) -> Result<HashMap<String, pb::Action>, String> {
    let mut pending: Vec<String> = ids.into_iter().collect();
    let mut done = HashMap::new();
    let deadline = Instant::now() + limit;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let a = c
                .get_action(admin(pb::GetActionRequest { id: id.clone() }))
                .await
                .map_err(|e| format!("{ctx}: GetAction {id}: {e}"))?
                .into_inner();
            if terminal(&a) {
                done.insert(id, a);
            } else {
                still.push(id);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let a = c
                .get_action(admin(pb::GetActionRequest {
                    id: pending[0].clone(),
                }))
                .await
                .map_err(|e| format!("{ctx}: GetAction: {e}"))?
                .into_inner();
            return Err(format!(
                "{ctx}: {} actions did not end within {limit:?}, e.g. {a:#?}",
                pending.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(done)
}

/// A channel of its own (its own HTTP/2 connection).
async fn channel(d: &Daemon) -> Client {
    RackAgentClient::connect(d.endpoint()).await.unwrap()
}

/// Whether the daemon still runs, and the end of its log (for a failure).
fn post_mortem(d: &mut Daemon) -> String {
    let status = d.wait_exit(Duration::from_millis(200));
    let log = d.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    format!("exit status {status:?}; the last lines of its log:\n{tail}")
}

/// What the kernel says a process holds.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: u64,
    threads: u64,
    rss_kb: u64,
    /// The database file, once its WAL has been checkpointed into it: what
    /// the history takes on disk.
    db_bytes: u64,
    /// The WAL file as the agent left it, before that checkpoint.
    wal_bytes: u64,
}

fn status_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Copies the WAL into the database file and empties it (as SQLite's own
/// checkpoints do, from a connection of the test's own; a WAL-mode database
/// allows that beside the agent), so the file's size is the history's.
fn checkpoint(state: &Path) {
    let conn = rusqlite::Connection::open(state.join("rack-agent.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

fn usage(d: &Daemon) -> Usage {
    let pid = d.pid().expect("daemon running");
    let state = d.dir.join("state");
    let wal_bytes = file_len(&state.join("rack-agent.db-wal"));
    // Measured first: the checkpoint's connection is the test's, not the agent's.
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count() as u64)
        .unwrap_or(0);
    let threads = status_field(pid, "Threads:");
    let rss_kb = rss_kb(pid);
    checkpoint(&state);
    Usage {
        fds,
        threads,
        rss_kb,
        db_bytes: file_len(&state.join("rack-agent.db")),
        wal_bytes,
    }
}

/// Samples a process's RSS every 50 ms until dropped; keeps the peak.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_kb(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_kb(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `PRAGMA integrity_check` on the daemon's database (read-only; WAL readers
/// do not disturb a running daemon).
fn integrity_check(state: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        state.join("rack-agent.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("; ")
}

// ---------------------------------------------------------------------------
// bmc-sim: the bench BMCs
// ---------------------------------------------------------------------------

/// The `bmc-sim` binary, built once per test process (it is the workspace's
/// other member, so Cargo does not hand its path to this package's tests).
fn bmc_sim_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let agent = Path::new(env!("CARGO_BIN_EXE_rack-agent"));
            let profile_dir = agent.parent().expect("target/<profile>");
            let target_dir = profile_dir.parent().expect("target");
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "--quiet", "-p", "bmc-sim", "--bin", "bmc-sim"])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cannot run cargo to build bmc-sim");
            assert!(status.success(), "cargo build -p bmc-sim failed");
            profile_dir.join("bmc-sim")
        })
        .clone()
}

/// One bmc-sim process: `count` BMCs, IPMI on a port each, Redfish on one
/// shared HTTPS port (system `node{i}`), counters on a control port.
struct BenchSim {
    child: Child,
    dir: tempfile::TempDir,
    ipmi_base: u16,
    redfish_port: u16,
    control: String,
}

const SIM_PASSWORD: &str = "password";

impl BenchSim {
    fn start(count: usize, extra: &[&str]) -> BenchSim {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let mut child = Command::new(bmc_sim_binary())
            .args(["--count", &count.to_string()])
            .args(["--ipmi-base", "0", "--redfish-base", "0"])
            .args(["--redfish-layout", "shared"])
            .arg("--cert-out")
            .arg(&cert)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start bmc-sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bmc-sim did not start ({e}): {line:?}"));
        BenchSim {
            ipmi_base: ready["ipmi_base"].as_u64().expect("ipmi_base") as u16,
            redfish_port: ready["redfish_base"].as_u64().expect("redfish_base") as u16,
            control: ready["control"].as_str().expect("control").to_string(),
            child,
            dir,
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `GET /bmcs`: every BMC's power and counters, in index order.
    fn bmcs(&self) -> Vec<Value> {
        let mut s = std::net::TcpStream::connect(&self.control).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /bmcs HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200"), "GET /bmcs: {head}");
        serde_json::from_str::<Value>(body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `[[servers]]` for BMCs `0..count`: `b-NNN`, IPMI below `redfish_from`,
    /// Redfish (verified TLS, sessions) from it on.
    fn inventory(&self, count: usize, redfish_from: usize) -> String {
        let mut s = String::new();
        for i in 0..count {
            let (protocol, port, options) = if i < redfish_from {
                ("ipmi", self.ipmi_base as usize + i, String::new())
            } else {
                (
                    "redfish",
                    self.redfish_port as usize,
                    format!(
                        "options = {{ system_id = \"node{i}\", ca_file = \"{}\" }}\n",
                        self.cert().display()
                    ),
                )
            };
            s.push_str(&format!(
                "[[servers]]\nid = \"b-{i:03}\"\nproject = \"p1\"\nprotocol = \"{protocol}\"\n\
                 address = \"127.0.0.1\"\nport = {port}\nusername = \"admin\"\n\
                 password_file = \"sim.pass\"\n{options}\n"
            ));
        }
        s
    }
}

impl Drop for BenchSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The BMC-side counter that a power step moves, per protocol.
fn counter_of(step: &str, redfish: bool) -> Option<&'static str> {
    Some(match (step, redfish) {
        ("power_on", false) => "chassis_power_on",
        ("graceful_off", false) => "chassis_soft_off",
        ("force_off", false) => "chassis_power_off",
        ("hard_reset", false) => "chassis_hard_reset",
        ("power_cycle", false) => "chassis_power_cycle",
        ("power_on", true) => "redfish_reset_on",
        ("graceful_off", true) => "redfish_reset_graceful_shutdown",
        ("force_off", true) => "redfish_reset_force_off",
        ("hard_reset", true) => "redfish_reset_force_restart",
        ("power_cycle", true) => "redfish_reset_power_cycle",
        ("graceful_restart", true) => "redfish_reset_graceful_restart",
        _ => return None,
    })
}

const POWER_STEPS: [&str; 6] = [
    "power_on",
    "graceful_off",
    "force_off",
    "hard_reset",
    "power_cycle",
    "graceful_restart",
];

fn non_idempotent(step: &str) -> bool {
    matches!(step, "hard_reset" | "power_cycle" | "graceful_restart")
}

fn counter(v: &Value, name: &str) -> u64 {
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("bmc-sim has no counter {name}"))
}

fn count_steps(a: &pb::Action, step: &str, phase: pb::StepPhase) -> u64 {
    a.events
        .iter()
        .filter(|e| e.step == step && e.phase == phase as i32)
        .count() as u64
}

// ---------------------------------------------------------------------------
// Case 4: SIGKILL under load on the bench BMCs
// ---------------------------------------------------------------------------

const CRASH_SERVERS: usize = 200;
/// BMCs `b-160`..`b-199` are driven over Redfish, the rest over IPMI.
const CRASH_REDFISH_FROM: usize = 160;
const CRASH_ROUNDS: usize = 5;

const CRASH_SETTINGS: &str =
    "[sync]\ninterval = \"1s\"\njitter = \"200ms\"\nmax_concurrent = 32\n\n\
[timeouts]\nbmc_command = \"5s\"\nconfirm_poll = \"50ms\"\nsoft_reboot = \"5s\"\n\
graceful_stop = \"5s\"\npower_confirm = \"10s\"\nshutdown_grace = \"2s\"\n\n";

/// What one round asked of one server, and what came of it.
struct Asked {
    server: usize,
    act: Act,
    rid: String,
    /// The answer before the kill, if one came.
    answered: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_on_bench_bmcs() {
    let seed = seed("crash_under_load_on_bench_bmcs");
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();
    // Every SIGKILL leaves the sessions of that run open at the BMCs (as on
    // real ones, until they time out): room for all of them.
    let sim = BenchSim::start(
        CRASH_SERVERS,
        &[
            "--power",
            "alternate",
            "--ipmi-sessions",
            "32",
            "--redfish-sessions",
            "2000",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "sim.pass", SIM_PASSWORD);
    let config = format!(
        "{CRASH_SETTINGS}{}",
        sim.inventory(CRASH_SERVERS, CRASH_REDFISH_FROM)
    );
    let mut d = start_daemon(dir.path(), &config);
    let mut c = d.client().await;
    let names: Vec<String> = (0..CRASH_SERVERS).map(|i| format!("b-{i:03}")).collect();
    for n in &names {
        wait_server(&mut c, n, Duration::from_secs(30), |s| {
            s.power_state == pb::PowerState::On as i32
                || s.power_state == pb::PowerState::Off as i32
        })
        .await;
    }

    let mut kills = 0;
    let mut recovered = 0;
    let mut in_doubt = 0;
    let mut lost_answers = 0;
    let mut unconfirmed: Vec<String> = Vec::new();
    let mut armed_overrides: Vec<String> = Vec::new();
    let mut withdrawn: Vec<String> = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_ids: HashSet<String> = HashSet::new();
    for round in 0..CRASH_ROUNDS {
        let ctx = format!("seed {seed}, round {round}");
        // No pause between rounds: bmc-sim restarts a host at once and shows
        // restarts with one-second resolution, so a round's reboots may land
        // in the second of the last round's boots — the agent waits for the
        // marker to be able to move (and
        // `soft_reboot_in_the_second_of_the_last_boot_restarts_once` checks
        // that on its own).
        // 1. One action per server, of a kind its state allows.
        let mut asked = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let s = c
                .get_server(admin(pb::GetServerRequest {
                    id: n.clone(),
                    refresh_identity: false,
                }))
                .await
                .unwrap()
                .into_inner();
            assert!(s.task.is_empty(), "{ctx}: {n} still busy: {s:?}");
            // A server whose action a kill left in doubt is in ERROR: from
            // there the API allows what a control plane recovers with (HARD
            // reboot, stop, reinstall), not SOFT reboot or start.
            let choices: &[Act] = if s.vm_state == pb::VmState::Shutoff as i32 {
                &[Act::Hard, Act::Start, Act::Pxe]
            } else if s.vm_state == pb::VmState::Error as i32 {
                &[Act::Hard, Act::Stop, Act::ForceStop, Act::Pxe]
            } else {
                &[Act::Hard, Act::Soft, Act::Stop, Act::ForceStop, Act::Pxe]
            };
            asked.push(Asked {
                server: i,
                act: choices[rng.random_range(0..choices.len())],
                rid: format!("r{round}-{n}"),
                answered: None,
            });
        }
        let before = sim.bmcs();
        // 2. All at once, over a few connections; SIGKILL at a random moment.
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(channel(&d).await);
        }
        let mut calls = Vec::new();
        // Spread over 300 ms, so a kill may come before, during or after
        // the answers, at any step of the actions.
        for (k, a) in asked.iter().enumerate() {
            let mut cl = clients[k % clients.len()].clone();
            let (act, server, rid) = (a.act, names[a.server].clone(), a.rid.clone());
            let wait = Duration::from_millis(rng.random_range(0..300));
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                act.send(&mut cl, &server, &rid).await
            }));
        }
        let kill_after = Duration::from_millis(rng.random_range(0..1500));
        tokio::time::sleep(kill_after).await;
        d.kill();
        kills += 1;
        for (a, call) in asked.iter_mut().zip(calls) {
            match call.await.unwrap() {
                Ok(action) => a.answered = Some(action.id),
                Err(_) => lost_answers += 1,
            }
        }
        drop(clients);
        d = start_daemon(dir.path(), &config);
        // Sometimes the agent dies again while it resumes what it left.
        let again = rng.random_bool(0.5).then(|| rng.random_range(0..400u64));
        if let Some(ms) = again {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            d.kill();
            kills += 1;
            d = start_daemon(dir.path(), &config);
        }
        eprintln!(
            "round {round}: killed {kill_after:?} after the burst{}; {} answers lost",
            again
                .map(|ms| format!(", and {ms} ms into recovery"))
                .unwrap_or_default(),
            asked.iter().filter(|a| a.answered.is_none()).count()
        );
        c = d.client().await;
        // 3. The control plane retries every request with its request id:
        //    an answered one must come back as the same action.
        let mut ids = Vec::new();
        for a in &asked {
            let n = &names[a.server];
            let retried = match a.act.send(&mut c, n, &a.rid).await {
                Ok(r) => r,
                Err(e) => panic!(
                    "{ctx}: retry of {} on {n}: {e}\nthe daemon: {}",
                    a.rid,
                    post_mortem(&mut d)
                ),
            };
            if let Some(id) = &a.answered {
                assert_eq!(
                    &retried.id, id,
                    "{ctx}: the retry of {} made a new action",
                    a.rid
                );
            }
            ids.push(retried.id);
        }
        let ended = match wait_all(&mut c, ids.clone(), Duration::from_secs(90), &ctx).await {
            Ok(e) => e,
            Err(e) => panic!("{e}\nthe daemon: {}", post_mortem(&mut d)),
        };
        let after = sim.bmcs();
        // 4. The judges: one terminal record per request; the BMCs' counters.
        for (a, id) in asked.iter().zip(&ids) {
            let n = &names[a.server];
            let action = &ended[id];
            let ctx = format!("{ctx}, {n} {:?} ({id})", a.act);
            assert!(
                all_ids.insert(id.clone()),
                "{ctx}: an action id came back twice"
            );
            *outcomes
                .entry(format!("{:?} {}", a.act, state_name(action)))
                .or_default() += 1;
            let resumed = action.events.iter().any(|e| e.step == "recovery");
            recovered += usize::from(resumed);
            let doubt = action
                .events
                .iter()
                .any(|e| e.phase == pb::StepPhase::Interrupted as i32 && non_idempotent(&e.step));
            in_doubt += usize::from(doubt);
            let history = c
                .list_actions(admin(pb::ListActionsRequest {
                    server_id: n.clone(),
                    page_size: 100,
                    page_token: String::new(),
                }))
                .await
                .unwrap()
                .into_inner()
                .actions;
            let mine: Vec<&pb::Action> = history.iter().filter(|x| x.request_id == a.rid).collect();
            assert_eq!(mine.len(), 1, "{ctx}: records of the request: {mine:#?}");
            assert_eq!(&mine[0].id, id, "{ctx}");
            assert!(terminal(mine[0]), "{ctx}: {:?}", mine[0]);
            assert_eq!(history.len(), round + 1, "{ctx}: one action per round");

            let redfish = a.server >= CRASH_REDFISH_FROM;
            let (b0, b1) = (&before[a.server], &after[a.server]);
            for step in POWER_STEPS {
                let Some(name) = counter_of(step, redfish) else {
                    continue;
                };
                let sent = counter(b1, name) - counter(b0, name);
                let started = count_steps(action, step, pb::StepPhase::Started);
                let answered = action
                    .events
                    .iter()
                    .filter(|e| {
                        e.step == step
                            && e.phase == pb::StepPhase::Finished as i32
                            && !e.detail.starts_with("not re-sent")
                    })
                    .count() as u64;
                assert!(
                    sent <= started,
                    "{ctx}: {step} reached the BMC {sent} times, recorded as started {started} times: {action:#?}"
                );
                assert!(
                    sent >= answered,
                    "{ctx}: {step} answered {answered} times but the BMC counted {sent}"
                );
                if non_idempotent(step) {
                    assert!(sent <= 1, "{ctx}: {step} reached the BMC {sent} times");
                }
            }
            let boots = counter(b1, "host_boots") - counter(b0, "host_boots");
            let pxe = counter(b1, "host_pxe_boots") - counter(b0, "host_pxe_boots");
            // A one-time PXE override still armed at the BMC (left by a
            // reinstall whose cycle never reached it): the next boot uses it.
            // A one-time PXE override still armed at the BMC when the round
            // began: a reinstall before left it (it never restarted the
            // server), and the next boot would start the installer unasked.
            let armed = b0["boot_flags"]["valid"] == true && b0["boot_flags"]["device"] == "pxe";
            if armed {
                armed_overrides.push(format!("round {round}: {n} {:?}", a.act));
            }
            assert!(
                !armed,
                "{ctx}: a PXE override was left armed by the action before: {}",
                b0["boot_flags"]
            );
            let want_pxe = u64::from(a.act == Act::Pxe);
            let honest_doubt = doubt
                && action.message.contains("not re-sent")
                && action.message.contains("not confirmed");
            if action.state == pb::ActionState::Succeeded as i32 {
                if boots == 0 && a.act.boots() == 1 && honest_doubt {
                    // The reset or cycle in flight at the kill never reached
                    // the BMC; it was not re-sent, and an IPMI BMC shows no
                    // restart marker: the action says it cannot confirm the
                    // restart (README, "Recovery").
                    unconfirmed.push(format!("{n} {:?}", a.act));
                } else {
                    assert_eq!(boots, a.act.boots(), "{ctx}: boots: {action:#?}");
                    assert_eq!(pxe, want_pxe, "{ctx}: PXE boots (override armed: {armed})");
                }
                let on = b1["power"] == "on";
                assert_eq!(on, a.act.powered_on_after(), "{ctx}: power at the BMC");
            } else {
                // Only an action whose reset was in flight at a kill may end
                // otherwise (its evidence could not confirm it), and never
                // with a second one; a reinstall then withdraws its override.
                assert!(doubt, "{ctx}: ended {}: {action:#?}", state_name(action));
                assert!(boots <= 1, "{ctx}: {boots} boots");
                if matches!(a.act, Act::Pxe | Act::Media) {
                    assert!(
                        action.message.contains("set back to disk"),
                        "{ctx}: {}",
                        action.message
                    );
                    withdrawn.push(format!("{n} {:?}", a.act));
                }
            }
        }
        assert_eq!(
            integrity_check(&dir.path().join("state")),
            "ok",
            "{ctx}: integrity_check"
        );
    }
    // The whole history, from the database itself.
    assert!(d
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let state = dir.path().join("state");
    assert_eq!(
        integrity_check(&state),
        "ok",
        "seed {seed}: integrity_check"
    );
    let conn = rusqlite::Connection::open(state.join("rack-agent.db")).unwrap();
    let (rows, open, distinct): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), SUM(state IN ('pending', 'running')), COUNT(DISTINCT request_id) FROM actions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let want = (CRASH_ROUNDS * CRASH_SERVERS) as i64;
    assert_eq!(
        (rows, open, distinct),
        (want, 0, want),
        "seed {seed}: actions in the database (rows, unfinished, request ids)"
    );
    eprintln!(
        "case 4: {kills} SIGKILLs over {CRASH_ROUNDS} rounds of {CRASH_SERVERS} actions \
         ({} IPMI, {} Redfish BMCs); {lost_answers} answers lost and retried; {recovered} actions \
         resumed after a restart, {in_doubt} with a reset in doubt, of which {} never reached \
         the BMC and ended SUCCEEDED as \"not confirmed\" {unconfirmed:?}; reinstalls in \
         doubt that withdrew their PXE override {withdrawn:?}; overrides left armed \
         {armed_overrides:?}; outcomes {outcomes:?}; {:.1} s",
        CRASH_REDFISH_FROM,
        CRASH_SERVERS - CRASH_REDFISH_FROM,
        unconfirmed.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        recovered > 0,
        "seed {seed}: no kill found an action in flight; the test proved nothing"
    );
}

// ---------------------------------------------------------------------------
// Case 5: overload
// ---------------------------------------------------------------------------

const OVERLOAD_SERVERS: usize = 50;
const OVERLOAD_REQUESTS: usize = 1_000;
const WATCHERS: usize = 10;

/// How one watcher's stream went.
#[derive(Debug, Default)]
struct Watched {
    received: u64,
    last_seq: u64,
    gaps: Vec<(u64, u64)>,
    end: Option<Status>,
}

/// A watcher on a connection of its own with small HTTP/2 windows (64 KiB),
/// so that what it has not read stays with the agent, not in its own buffers.
async fn slow_watcher(endpoint: String, fast: Arc<AtomicBool>) -> Watched {
    let ch = Endpoint::from_shared(endpoint)
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut c = RackAgentClient::new(ch);
    let mut stream = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![],
            after_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut w = Watched::default();
    loop {
        match stream.message().await {
            Ok(Some(ev)) => {
                if w.received > 0 && ev.seq != w.last_seq + 1 {
                    w.gaps.push((w.last_seq, ev.seq));
                }
                w.received += 1;
                w.last_seq = ev.seq;
                if !fast.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(None) => return w,
            Err(st) => {
                w.end = Some(st);
                return w;
            }
        }
    }
}

fn trailer(st: &Status, key: &str) -> Option<u64> {
    st.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_every_call_and_bounds_memory() {
    let seed = seed("overload_answers_every_call_and_bounds_memory");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let journal = dir.path().join("bmc-journal.log");
    // BMC commands take 5 ms, so two at once on one BMC would overlap in
    // time; the sync loop reads every BMC every ~200 ms meanwhile.
    let config = format!(
        "[fake_bmc]\nenabled = true\nlatency = \"5ms\"\njournal = \"{}\"\n\n\
         [sync]\ninterval = \"200ms\"\njitter = \"50ms\"\n\n\
         [timeouts]\nconfirm_poll = \"20ms\"\nsoft_reboot = \"3s\"\ngraceful_stop = \"3s\"\npower_confirm = \"5s\"\n\n\
         [actions]\nmax_unwritten = 16\n\n[events]\nretain = 300\n\n{}",
        journal.display(),
        inventory("o", OVERLOAD_SERVERS, "p1")
    );
    let d = start_daemon(dir.path(), &config);
    let pid = d.pid().unwrap();
    let mut c = d.client().await;
    let names: Vec<String> = (1..=OVERLOAD_SERVERS)
        .map(|i| format!("o-{i:02}"))
        .collect();
    for n in &names {
        wait_server(&mut c, n, Duration::from_secs(20), |s| {
            s.vm_state == pb::VmState::Active as i32
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kb(pid);
    let sampler = RssSampler::start(pid);

    // Ten watchers that read one event every 100 ms.
    let fast = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| tokio::spawn(slow_watcher(d.endpoint(), fast.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1,000 requests at once, over 8 connections.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(channel(&d).await);
    }
    let kinds = [
        Act::Hard,
        Act::Soft,
        Act::Start,
        Act::Stop,
        Act::ForceStop,
        Act::Pxe,
        Act::Media,
        Act::Lock,
        Act::Unlock,
        Act::ResetActive,
    ];
    let burst_began = Instant::now();
    let mut calls = Vec::new();
    for i in 0..OVERLOAD_REQUESTS {
        let act = kinds[rng.random_range(0..kinds.len())];
        let server = names[rng.random_range(0..names.len())].clone();
        let mut cl = clients[i % clients.len()].clone();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                act.send(&mut cl, &server, &format!("ov-{i}")),
            )
            .await;
            (act, server, r, t.elapsed())
        }));
    }
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut accepted = Vec::new();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (act, server, r, took) = call.await.unwrap();
        slowest = slowest.max(took);
        let r = r.unwrap_or_else(|_| {
            panic!("seed {seed}: {act:?} on {server} not answered within 30 s")
        });
        match r {
            Ok(a) => {
                *by_code.entry("OK".into()).or_default() += 1;
                accepted.push(a.id);
            }
            Err(st) => {
                *by_code.entry(format!("{:?}", st.code())).or_default() += 1;
                match st.code() {
                    Code::FailedPrecondition => {}
                    Code::ResourceExhausted => {
                        let hint = trailer(&st, "grpc-retry-pushback-ms");
                        assert!(
                            hint.is_some_and(|ms| ms > 0),
                            "seed {seed}: RESOURCE_EXHAUSTED without a retry hint: {st:?}"
                        );
                        assert!(
                            st.message().contains("retry") || st.message().contains("again"),
                            "seed {seed}: {}",
                            st.message()
                        );
                    }
                    other => panic!("seed {seed}: {act:?} on {server}: {other:?}: {st:?}"),
                }
            }
        }
    }
    let burst = burst_began.elapsed();
    eprintln!(
        "case 5: {OVERLOAD_REQUESTS} requests answered in {burst:?} (slowest {slowest:?}): {by_code:?}"
    );
    assert!(
        by_code.contains_key("ResourceExhausted"),
        "seed {seed}: no request met the bound of unwritten actions; the test proved nothing: {by_code:?}"
    );

    // The watchers are behind; more changes push their next event out of
    // the retained window (and out of the agent's in-memory fan-out).
    let pumped = Arc::new(AtomicUsize::new(0));
    let pump_until = Instant::now() + Duration::from_secs(60);
    let watchers_done = || watchers.iter().all(|w| w.is_finished());
    let mut pumps = Vec::new();
    for p in 0..16 {
        let mut cl = clients[p % clients.len()].clone();
        let names = names.clone();
        let pumped = pumped.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        pumps.push((
            stop,
            tokio::spawn(async move {
                let mut k = 0usize;
                while !s2.load(Ordering::Relaxed) && Instant::now() < pump_until {
                    let server = &names[(p * 7 + k) % names.len()];
                    let act = if k.is_multiple_of(2) {
                        Act::Lock
                    } else {
                        Act::Unlock
                    };
                    match act.send(&mut cl, server, "").await {
                        Ok(_) => {
                            pumped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(st) if st.code() == Code::ResourceExhausted => {
                            let ms = trailer(&st, "grpc-retry-pushback-ms").unwrap_or(100);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Err(st) => panic!("pump: {st:?}"),
                    }
                    k += 1;
                }
            }),
        ));
    }
    // Pump until every watcher has been ended (it still holds up to its
    // buffers' worth of events, read at its slow pace) — or give up.
    let mut drained = false;
    while !watchers_done() && Instant::now() < pump_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Once far enough ahead, the watchers may read at full speed: what
        // they then receive is what was already queued for them.
        if !drained && pumped.load(Ordering::Relaxed) > 8_000 {
            fast.store(true, Ordering::Relaxed);
            drained = true;
        }
    }
    for (stop, task) in pumps {
        stop.store(true, Ordering::Relaxed);
        task.await.unwrap();
    }
    let peak = sampler.peak_kb();
    drop(sampler);
    let (lo, hi) = {
        let conn = rusqlite::Connection::open_with_flags(
            dir.path().join("state/rack-agent.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
    };
    let mut ends: Vec<Watched> = Vec::new();
    for w in watchers {
        ends.push(
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("a watcher neither ended nor read on")
                .unwrap(),
        );
    }
    let pumped = pumped.load(Ordering::Relaxed);
    for (i, w) in ends.iter().enumerate() {
        let ctx = format!("seed {seed}, watcher {i}");
        assert!(w.gaps.is_empty(), "{ctx}: skipped events: {:?}", w.gaps);
        let st = w
            .end
            .as_ref()
            .unwrap_or_else(|| panic!("{ctx}: the stream ended OK after {w:?}"));
        assert_eq!(st.code(), Code::OutOfRange, "{ctx}: {st:?}");
        // Where it stopped, and where to resume: in the message and trailers.
        assert_eq!(
            trailer(st, "x-rackagent-last-seq"),
            Some(w.last_seq),
            "{ctx}: {st:?}"
        );
        let resume = trailer(st, "x-rackagent-resume-after-seq").expect("resume trailer");
        assert!(
            resume > w.last_seq && resume <= hi,
            "{ctx}: resume {resume}, newest {hi}"
        );
        assert!(
            st.message()
                .contains(&format!("every event up to seq {}", w.last_seq))
                && st.message().contains(&format!("after_seq = {resume}")),
            "{ctx}: {}",
            st.message()
        );
        assert!(
            w.last_seq + 1 < lo,
            "{ctx}: it ended while its next event was retained"
        );
        // It received far less than was published: what it missed was not
        // kept for it.
        assert!(
            w.received < hi / 2,
            "{ctx}: received {} of {hi}",
            w.received
        );
    }
    // Resuming where the trailer says works, and goes on from there. The
    // first watcher ended a while ago (the changes went on until the last
    // one ended), so its cursor may have left the window meanwhile: the
    // refusal must then name a newer one, which works now that the changes
    // have stopped.
    let mut resume = trailer(
        ends[0].end.as_ref().unwrap(),
        "x-rackagent-resume-after-seq",
    )
    .unwrap();
    let mut hops = 0;
    let mut again = loop {
        match c
            .watch_power_state(admin(pb::WatchPowerStateRequest {
                server_ids: vec![],
                after_seq: resume,
            }))
            .await
        {
            Ok(s) => break s.into_inner(),
            Err(st) if st.code() == Code::OutOfRange && hops == 0 => {
                let newer = trailer(&st, "x-rackagent-resume-after-seq")
                    .unwrap_or_else(|| panic!("seed {seed}: no cursor in {st:?}"));
                assert!(newer > resume, "seed {seed}: {st:?}");
                resume = newer;
                hops += 1;
            }
            Err(st) => panic!("seed {seed}: resuming after seq {resume}: {st:?}"),
        }
    };
    Act::Lock.send(&mut c, &names[0], "").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), again.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.seq, resume + 1);
    drop(again);

    // Every accepted action ends, once.
    let ended = wait_all(
        &mut c,
        accepted.iter().cloned(),
        Duration::from_secs(60),
        &format!("seed {seed}"),
    )
    .await
    .unwrap();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for a in ended.values() {
        *outcomes.entry(state_name(a)).or_default() += 1;
    }
    // The BMC side: never two operations at once on one BMC.
    let journal_lines = read_journal(&journal).unwrap();
    let overlaps: Vec<_> = journal_lines
        .iter()
        .filter(|(_, op)| op.starts_with(OVERLAP))
        .collect();
    assert!(overlaps.is_empty(), "seed {seed}: {overlaps:?}");
    let rss_after = rss_kb(pid);
    eprintln!(
        "case 5: watchers received {:?} events each, then OUT_OF_RANGE (retained {lo}..={hi}); \
         {pumped} lock/unlock changes pumped; accepted actions ended {outcomes:?}; \
         {} BMC commands, no overlap; RSS {} KiB before, peak {} KiB, {} KiB after",
        ends.iter().map(|w| w.received).collect::<Vec<_>>(),
        journal_lines.len(),
        rss_before,
        peak,
        rss_after
    );
    // Bounded: lagging watchers cost their fixed buffers, not the backlog.
    assert!(
        peak < rss_before + 64 * 1024,
        "seed {seed}: RSS grew from {rss_before} KiB to {peak} KiB"
    );
}

// ---------------------------------------------------------------------------
// Case 6: soak
// ---------------------------------------------------------------------------

/// Each server goes through this cycle, one action at a time (it ends where
/// it began: powered on, unlocked).
const CYCLE: [Act; 11] = [
    Act::Hard,
    Act::Soft,
    Act::Pxe,
    Act::Stop,
    Act::Hard,
    Act::ForceStop,
    Act::Pxe,
    Act::ForceStop,
    Act::Start,
    Act::Lock,
    Act::Unlock,
];

#[derive(Default)]
struct SoakCount {
    done: AtomicUsize,
    failed: AtomicUsize,
    exhausted: AtomicUsize,
    conflicts: AtomicUsize,
}

/// Runs `n` actions spread over `servers` (each server one at a time, its
/// next action once the last ended, followed with WatchAction); returns once
/// all of them ended.
async fn soak_batch(
    d: &Daemon,
    servers: &[String],
    next: &Arc<Mutex<HashMap<String, usize>>>,
    n: usize,
    count: &Arc<SoakCount>,
) {
    let tickets = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(channel(d).await);
    }
    let mut tasks = Vec::new();
    for (k, server) in servers.iter().enumerate() {
        let mut c = clients[k % clients.len()].clone();
        let (server, next, tickets, count) =
            (server.clone(), next.clone(), tickets.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while tickets.fetch_add(1, Ordering::Relaxed) < n {
                let mut step = *next.lock().unwrap().get(&server).unwrap_or(&0);
                let (act, a) = loop {
                    let act = CYCLE[step % CYCLE.len()];
                    match act.send(&mut c, &server, "").await {
                        Ok(a) => break (act, a),
                        Err(st) if st.code() == Code::ResourceExhausted => {
                            count.exhausted.fetch_add(1, Ordering::Relaxed);
                            let ms = trailer(&st, "grpc-retry-pushback-ms").unwrap_or(100);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        // Not from this state (an earlier action failed):
                        // the next one of the cycle.
                        Err(st) if st.code() == Code::FailedPrecondition => {
                            count.conflicts.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{server} {act:?} refused: {}", st.message());
                            step += 1;
                        }
                        Err(st) => panic!("{server} {act:?}: {st:?}"),
                    }
                };
                let mut last = a.clone();
                if !terminal(&last) {
                    let mut s = c
                        .watch_action(admin(pb::WatchActionRequest { id: a.id.clone() }))
                        .await
                        .unwrap()
                        .into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(x)) => last = x,
                            Ok(None) => break,
                            Err(st) => {
                                let now = c
                                    .get_action(admin(pb::GetActionRequest { id: a.id.clone() }))
                                    .await;
                                panic!(
                                    "{server} {act:?}: WatchAction ended with {st:?} after \
                                     {last:?}; GetAction now answers {now:?}"
                                );
                            }
                        }
                    }
                }
                assert!(terminal(&last), "{server}: {last:?}");
                if last.state != pb::ActionState::Succeeded as i32 {
                    count.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "{server} {act:?} ended {}: {}",
                        state_name(&last),
                        last.message
                    );
                }
                count.done.fetch_add(1, Ordering::Relaxed);
                next.lock().unwrap().insert(server.clone(), step + 1);
            }
        }));
    }
    let mut failed = None;
    for t in tasks {
        if let Err(e) = t.await {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        let log = d.log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        panic!(
            "{e}\nthe daemon's warnings and errors (the last 40):\n{}",
            warnings[warnings.len().saturating_sub(40)..].join("\n")
        );
    }
}

/// Sessions open at all of bmc-sim's BMCs: (IPMI, Redfish).
fn sessions_open(sim: &BenchSim) -> (u64, u64) {
    sim.bmcs().iter().fold((0, 0), |(i, r), b| {
        (
            i + b["ipmi_sessions_open"].as_u64().unwrap_or(0),
            r + b["redfish_sessions_open"].as_u64().unwrap_or(0),
        )
    })
}

/// One soak: `warmup` actions, a measurement, `rest` actions, a measurement.
async fn soak(
    label: &str,
    d: &Daemon,
    sim: Option<&BenchSim>,
    servers: &[String],
    warmup: usize,
    rest: usize,
) {
    let next = Arc::new(Mutex::new(HashMap::new()));
    let count = Arc::new(SoakCount::default());
    let t0 = Instant::now();
    soak_batch(d, servers, &next, warmup, &count).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warm = usage(d);
    let warm_sessions = sim.map(sessions_open);
    let t1 = Instant::now();
    let chunks = rest.div_ceil(2_000);
    for k in 0..chunks {
        let (from, to) = (k * rest / chunks, (k + 1) * rest / chunks);
        soak_batch(d, servers, &next, to - from, &count).await;
        eprintln!("{label}: after {to} more: {:?}", usage(d));
    }
    let t2 = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = usage(d);
    let end_sessions = sim.map(sessions_open);
    let rate = rest as f64 / (t2 - t1).as_secs_f64();
    eprintln!(
        "case 6 ({label}): {} actions on {} servers in {:.1} s ({rate:.0}/s after warm-up); \
         {} not succeeded, {} RESOURCE_EXHAUSTED, {} conflicts; \
         after warm-up ({warmup}): {warm:?}; at the end: {end:?}; \
         sessions open at the BMCs (IPMI, Redfish) after warm-up {warm_sessions:?}, \
         at the end {end_sessions:?}",
        count.done.load(Ordering::Relaxed),
        servers.len(),
        (t2 - t0).as_secs_f64(),
        count.failed.load(Ordering::Relaxed),
        count.exhausted.load(Ordering::Relaxed),
        count.conflicts.load(Ordering::Relaxed),
    );
    assert_eq!(count.done.load(Ordering::Relaxed), warmup + rest, "{label}");
    assert_eq!(
        count.failed.load(Ordering::Relaxed),
        0,
        "{label}: see above"
    );
    let within = |what: &str, w: u64, e: u64| {
        assert!(
            e as f64 <= w as f64 * 1.10,
            "{label}: {what} grew from {w} after warm-up to {e} at the end (> 10 %)"
        );
    };
    within("open file descriptors", warm.fds, end.fds);
    within("threads", warm.threads, end.threads);
    within("RSS (KiB)", warm.rss_kb, end.rss_kb);
    within("database bytes", warm.db_bytes, end.db_bytes);
    // The BMC side: the agent reuses its sessions rather than leaving them
    // open (a BMC admits a few dozen at most).
    if let (Some(w), Some(e)) = (warm_sessions, end_sessions) {
        within("IPMI sessions open at the BMCs", w.0, e.0);
        within("Redfish sessions open at the BMCs", w.1, e.1);
    }
    // The WAL is emptied by every checkpoint that finds no reader behind it,
    // and cut back to `journal_size_limit` (4 MiB) then; between two such
    // checkpoints it may hold more. A fixed bound, not a relative one: it is
    // whatever was written since the last checkpoint.
    assert!(
        end.wal_bytes < 16 << 20,
        "{label}: the WAL holds {} bytes at the end",
        end.wal_bytes
    );
}

/// History kept small, so that retention runs many times during the soak.
const SOAK_SETTINGS: &str = "[sync]\ninterval = \"1s\"\njitter = \"200ms\"\n\n\
[timeouts]\nconfirm_poll = \"20ms\"\nsoft_reboot = \"5s\"\ngraceful_stop = \"5s\"\npower_confirm = \"10s\"\n\n\
[actions]\nretain = 500\n\n[events]\nretain = 1000\n\n";

const SOAK_FAKE: usize = 12_000;
/// On bmc-sim, `b-160`..`b-199` over Redfish, the rest over IPMI.
const SOAK_REDFISH_FROM: usize = 160;
const SOAK_BENCH: usize = 8_000;

/// `RACK_SOAK_FAKE` / `RACK_SOAK_BENCH` (actions) for a longer run by hand.
fn soak_size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_keeps_resources_flat() {
    let began = Instant::now();
    // On fake BMCs (no latency): the agent's own costs.
    let fake = soak_size("RACK_SOAK_FAKE", SOAK_FAKE);
    if fake > 0 {
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), "bmc.pass", "pw");
        let config = format!(
            "[fake_bmc]\nenabled = true\nlatency = \"0s\"\n\n{SOAK_SETTINGS}{}",
            inventory("f", 100, "p1")
        );
        let mut d = start_daemon(dir.path(), &config);
        let mut c = d.client().await;
        let servers: Vec<String> = (1..=100).map(|i| format!("f-{i:02}")).collect();
        for s in &servers {
            wait_server(&mut c, s, Duration::from_secs(20), |x| {
                x.vm_state == pb::VmState::Active as i32
            })
            .await;
        }
        soak("fake BMCs", &d, None, &servers, fake / 2, fake - fake / 2).await;
        assert_eq!(integrity_check(&dir.path().join("state")), "ok");
        assert!(d
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()));
    }
    // On bmc-sim over IPMI and Redfish: the drivers' sessions, sockets and
    // HTTP connections too.
    let bench = soak_size("RACK_SOAK_BENCH", SOAK_BENCH);
    eprintln!(
        "case 6: {:.1} s: fake BMCs done",
        began.elapsed().as_secs_f64()
    );
    if bench > 0 {
        let sim = BenchSim::start(200, &["--power", "on", "--redfish-sessions", "64"]);
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), "sim.pass", SIM_PASSWORD);
        let config = format!("{SOAK_SETTINGS}{}", sim.inventory(200, SOAK_REDFISH_FROM));
        let mut d = start_daemon(dir.path(), &config);
        let mut c = d.client().await;
        let servers: Vec<String> = (0..200).map(|i| format!("b-{i:03}")).collect();
        for s in &servers {
            wait_server(&mut c, s, Duration::from_secs(30), |x| {
                x.vm_state == pb::VmState::Active as i32
            })
            .await;
        }
        eprintln!(
            "case 6: {:.1} s: bmc-sim's BMCs read",
            began.elapsed().as_secs_f64()
        );
        soak(
            "bmc-sim, IPMI and Redfish",
            &d,
            Some(&sim),
            &servers,
            bench / 2,
            bench - bench / 2,
        )
        .await;
        assert_eq!(integrity_check(&dir.path().join("state")), "ok");
        eprintln!(
            "case 6: {:.1} s: bmc-sim soak done",
            began.elapsed().as_secs_f64()
        );
        assert!(d
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()));
    }
    eprintln!(
        "case 6: {} actions in {:.1} s",
        fake + bench,
        began.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Defects case 4 found, each kept as a test of its own (the second needs a
// build with `--features kill-points`)
// ---------------------------------------------------------------------------

/// One bmc-sim BMC as server `b-000` (Redfish when `redfish`), and a daemon
/// (with `env`) that has read its power.
async fn one_bench_server(
    redfish: bool,
    power: &str,
    env: &[(&str, &str)],
) -> (BenchSim, tempfile::TempDir, Daemon, Client) {
    let sim = BenchSim::start(1, &["--power", power]);
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "sim.pass", SIM_PASSWORD);
    let config = format!(
        "{CRASH_SETTINGS}{}",
        sim.inventory(1, if redfish { 0 } else { 1 })
    );
    let d = spawn_daemon(dir.path(), &config, env, Until::Ready);
    let mut c = d.client().await;
    wait_server(&mut c, "b-000", Duration::from_secs(30), |x| {
        x.power_state == pb::PowerState::On as i32 || x.power_state == pb::PowerState::Off as i32
    })
    .await;
    (sim, dir, d, c)
}

/// Redfish shows a restart by `LastResetTime` (and `BootProgress`), with
/// one-second resolution on bmc-sim as on much firmware. A warm
/// GracefulRestart that lands in the same second as the host's last boot
/// leaves both unchanged: the agent sees "no sign of a restart", falls back
/// to HARD after `soft_reboot`, and the host restarts a second time — the
/// double reset DESIGN.md rules out ("never a second reset to a server that
/// may be restarting"). The agent now lets a second pass after reading a
/// whole-second marker before it sends a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_reboot_in_the_second_of_the_last_boot_restarts_once() {
    let (sim, _dir, _d, mut c) = one_bench_server(true, "off", &[]).await;
    // Start at the beginning of a wall-clock second, and SOFT reboot at once.
    let frac = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
    };
    while frac() > 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b0 = sim.bmcs();
    let start = Act::Start.send(&mut c, "b-000", "").await.unwrap();
    let start = wait_action(&mut c, &start.id, Duration::from_secs(30)).await;
    let soft = Act::Soft.send(&mut c, "b-000", "").await.unwrap();
    let soft = wait_action(&mut c, &soft.id, Duration::from_secs(30)).await;
    let b1 = sim.bmcs();
    let delta = |name: &str| counter(&b1[0], name) - counter(&b0[0], name);
    assert_eq!(start.state, pb::ActionState::Succeeded as i32, "{start:#?}");
    assert_eq!(soft.state, pb::ActionState::Succeeded as i32, "{soft:#?}");
    assert_eq!(
        (
            delta("redfish_reset_graceful_restart"),
            delta("redfish_reset_force_restart"),
            delta("host_boots")
        ),
        (1, 0, 2),
        "(GracefulRestart, ForceRestart, boots) for a start and a SOFT reboot; the SOFT reboot said: {}",
        soft.message
    );
}

/// A reinstall sets a one-time PXE override, then power-cycles. When the
/// agent dies with the cycle recorded as started but not sent, the resumed
/// action does not re-send it (right), and an IPMI BMC shows no restart
/// marker, so the action ends SUCCEEDED "not confirmed" — while the BMC never
/// cycled and still holds the override. The next, unrelated reboot then
/// boots the installer: the server is reinstalled by a HARD reboot. Judged at
/// the BMC: a reinstall that succeeded booted from PXE once, and a later
/// HARD reboot does not. The agent now sets the override back to disk and
/// fails such a reinstall, asking for it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstall_left_in_doubt_does_not_reinstall_at_the_next_reboot() {
    let (sim, dir, mut d, mut c) = one_bench_server(
        false,
        "on",
        &[("RACK_AGENT_KILL_AT", "reinstall:power_cycle:started@b-000")],
    )
    .await;
    let b0 = sim.bmcs();
    let _ = Act::Pxe.send(&mut c, "b-000", "reinstall-1").await;
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the daemon did not die at its kill point (a build without --features kill-points \
         ignores RACK_AGENT_KILL_AT): {status:?}"
    );
    let d2 = spawn_daemon(
        dir.path(),
        &format!("{CRASH_SETTINGS}{}", sim.inventory(1, 1)),
        &[],
        Until::Ready,
    );
    let mut c = d2.client().await;
    let reinstall = Act::Pxe.send(&mut c, "b-000", "reinstall-1").await.unwrap();
    let reinstall = wait_action(&mut c, &reinstall.id, Duration::from_secs(30)).await;
    let b1 = sim.bmcs();
    let pxe = |b: &Value| counter(b, "host_pxe_boots");
    if reinstall.state != pb::ActionState::Succeeded as i32 {
        assert!(
            reinstall.message.contains("set back to disk"),
            "{reinstall:#?}"
        );
    } else {
        assert_eq!(
            pxe(&b1[0]) - pxe(&b0[0]),
            1,
            "the reinstall SUCCEEDED but the server never booted the installer; the BMC still \
             holds the override {}; the action said: {}",
            b1[0]["boot_flags"],
            reinstall.message
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hard = Act::Hard.send(&mut c, "b-000", "").await.unwrap();
    let hard = wait_action(&mut c, &hard.id, Duration::from_secs(30)).await;
    let b2 = sim.bmcs();
    assert_eq!(
        pxe(&b2[0]) - pxe(&b1[0]),
        0,
        "a HARD reboot after the reinstall booted the installer; it said: {}",
        hard.message
    );
}
