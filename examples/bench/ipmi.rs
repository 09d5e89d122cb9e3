//! IPMI fleet sweep: N `ipmi_sim` BMCs on loopback, read (and hard-reset) all
//! of them at once with FreeIPMI's `ipmipower` (the reference), with
//! `ipmitool` in parallel, and through the daemon's API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rack_agent::proto as pb;
use tokio::task::JoinSet;

use crate::daemon::{self, Client, BMC_PASSWORD, BMC_USER};
use crate::report::{Cmp, Group, On, Row};
use crate::tools::{first_failure, run_parallel};
use crate::Ctx;

const TOOL_LIMIT: Duration = Duration::from_secs(120);

/// One contender's samples over the rounds (ms), or why it failed.
pub struct Contender {
    pub label: String,
    pub samples: Vec<f64>,
    pub error: Option<String>,
}

impl Contender {
    pub fn new(label: impl Into<String>) -> Contender {
        Contender {
            label: label.into(),
            samples: Vec::new(),
            error: None,
        }
    }
    pub fn record(&mut self, ctx: &Ctx, group: &str, r: Result<Duration, String>) {
        match r {
            Ok(d) => self.samples.push(d.as_secs_f64() * 1000.0),
            Err(e) => {
                crate::progress(&format!("{group}: {} FAILED: {e}", self.label));
                if self.error.is_none() {
                    ctx.fail(format!("{group}: {}: {e}", self.label));
                    self.error = Some(e);
                }
            }
        }
    }
    pub fn row(&self) -> Row {
        let cells = if self.error.is_some() {
            vec![]
        } else {
            vec![self.samples.clone()]
        };
        Row::new(&self.label).cells(cells).error(self.error.clone())
    }
}

/// `count` consecutive free UDP ports on 127.0.0.1, below the ephemeral range
/// (so no client socket of the tools or the daemon can take one meanwhile).
pub fn free_udp_range(count: usize) -> Result<u16, String> {
    let step = count.max(64);
    let mut base = 20000usize;
    while base + count < 32000 {
        let ok = (base..base + count)
            .all(|p| std::net::UdpSocket::bind(("127.0.0.1", p as u16)).is_ok());
        if ok {
            return Ok(base as u16);
        }
        base += step;
    }
    Err(format!(
        "no run of {count} free UDP ports between 20000 and 32000"
    ))
}

/// Starts `n` BMCs with hil-tests/ipmi/start.sh (`power`: none | stub).
pub fn start_bmcs(ctx: &Ctx, dir: &Path, n: usize, base: u16, power: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    ctx.reaper.ipmi_dir(dir);
    let child = Command::new("bash")
        .arg(ctx.repo.join("hil-tests/ipmi/start.sh"))
        .arg(dir)
        .arg(n.to_string())
        .arg(base.to_string())
        .env("BMC_POWER", power)
        // The benchmark reads power only: no emulator console (one TCP
        // listener per BMC, on a port number this bench checked for UDP only).
        .env("BMC_CONSOLE", "none")
        .env("BMC_USER", BMC_USER)
        .env("BMC_PASSWORD", BMC_PASSWORD)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group: a cleanup stops it before it starts more BMCs.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run start.sh: {e}"))?;
    ctx.reaper.process(child.id(), &dir.display().to_string());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("start.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "start.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// FreeIPMI's host range for N BMCs from `base`.
pub fn hosts(base: u16, n: usize) -> String {
    if n == 1 {
        format!("127.0.0.1:{base}")
    } else {
        format!("127.0.0.1:[{base}-{}]", base as usize + n - 1)
    }
}

/// `ipmipower` over the whole range in one process, as an operator runs it.
fn ipmipower(base: u16, n: usize, op: &str) -> Result<Duration, String> {
    let mut c = Command::new("ipmipower");
    c.args(["-D", "LAN_2_0", "-h"])
        .arg(hosts(base, n))
        .args([
            "-u",
            BMC_USER,
            "-p",
            BMC_PASSWORD,
            "-W",
            "opensesspriv",
            "-I",
            "3",
        ])
        .arg(op);
    let (took, outs) = run_parallel(vec![c], TOOL_LIMIT)?;
    if let Some(f) = first_failure(&outs) {
        return Err(f);
    }
    let text = String::from_utf8_lossy(&outs[0].stdout);
    let want: &[&str] = if op == "--stat" {
        &[": on", ": off"]
    } else {
        &[": ok"]
    };
    let good = text
        .lines()
        .filter(|l| want.iter().any(|w| l.trim_end().ends_with(w)))
        .count();
    if good != n {
        return Err(format!(
            "ipmipower {op}: {good} of {n} hosts answered as expected; output: {}",
            text.lines()
                .filter(|l| !want.iter().any(|w| l.trim_end().ends_with(w)))
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    Ok(took)
}

/// `ipmitool ARGS` against the bench BMC on `port` (RMCP+, cipher suite 3).
pub fn ipmitool(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new("ipmitool");
    c.args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", BMC_USER, "-P", BMC_PASSWORD])
        .args(args);
    c
}

/// One `ipmitool` per BMC, all started at once.
fn ipmitool_parallel(base: u16, n: usize, args: &[&str], expect: &str) -> Result<Duration, String> {
    let cmds = (0..n).map(|i| ipmitool(base + i as u16, args)).collect();
    let (took, outs) = run_parallel(cmds, TOOL_LIMIT)?;
    if let Some(f) = first_failure(&outs) {
        return Err(f);
    }
    if let Some(o) = outs
        .iter()
        .find(|o| !String::from_utf8_lossy(&o.stdout).contains(expect))
    {
        return Err(format!(
            "ipmitool answered {:?}, not {expect:?}",
            String::from_utf8_lossy(&o.stdout).trim()
        ));
    }
    Ok(took)
}

/// `GetPowerState(refresh = true)` for every id at once, spread over the
/// clients; the wall time until the last answer. Every answer must come from
/// the BMC (source "bmc") with the expected power.
pub async fn sweep(
    clients: &[Client],
    ids: &[String],
    expect: pb::PowerState,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let id = id.clone();
        set.spawn(async move {
            let r = c
                .get_power_state(pb::GetPowerStateRequest {
                    server_id: id.clone(),
                    refresh: true,
                })
                .await
                .map_err(|e| format!("{id}: {} {}", e.code(), e.message()))?
                .into_inner();
            if r.source != "bmc" || r.power_state != expect as i32 {
                return Err(format!(
                    "{id}: answered source {:?} power {:?}, expected a fresh read of {expect:?}",
                    r.source,
                    pb::PowerState::try_from(r.power_state)
                ));
            }
            Ok(())
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(|e| e.to_string()).and_then(|x| x) {
            first_err.get_or_insert(e);
        }
    }
    let took = t.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok(took),
    }
}

/// One `GetPowerStates(refresh=true)` call for every id (the API's fleet
/// sweep); the wall time until its answer. Every result must be a fresh read
/// of `expect`.
pub async fn batch_sweep(
    client: &Client,
    ids: &[String],
    expect: pb::PowerState,
) -> Result<Duration, String> {
    let t = Instant::now();
    let results = client
        .clone()
        .get_power_states(pb::GetPowerStatesRequest {
            server_ids: ids.to_vec(),
            refresh: true,
        })
        .await
        .map_err(|e| format!("GetPowerStates: {} {}", e.code(), e.message()))?
        .into_inner()
        .results;
    let took = t.elapsed();
    if results.len() != ids.len() {
        return Err(format!(
            "{} results for {} servers",
            results.len(),
            ids.len()
        ));
    }
    for r in &results {
        match &r.status {
            Some(s) if s.source == "bmc" && s.power_state == expect as i32 => {}
            _ => {
                return Err(format!(
                    "{}: not a fresh read of {expect:?}: {:?} {}",
                    r.server_id, r.status, r.error
                ))
            }
        }
    }
    Ok(took)
}

/// `Reboot(HARD)` for every id at once, each followed by `WatchAction` until
/// the action ends; the wall time until the last one ended. Each must end
/// SUCCEEDED.
pub async fn reboot_all(clients: &[Client], ids: &[String]) -> Result<Duration, String> {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let id = id.clone();
        set.spawn(async move {
            let a = c
                .reboot(pb::RebootRequest {
                    server_id: id.clone(),
                    r#type: pb::RebootType::Hard as i32,
                    request_id: String::new(),
                })
                .await
                .map_err(|e| format!("{id}: Reboot: {} {}", e.code(), e.message()))?
                .into_inner();
            let mut stream = c
                .watch_action(pb::WatchActionRequest { id: a.id.clone() })
                .await
                .map_err(|e| format!("{id}: WatchAction: {e}"))?
                .into_inner();
            let mut last = a;
            while let Some(m) = stream
                .message()
                .await
                .map_err(|e| format!("{id}: WatchAction: {e}"))?
            {
                last = m;
            }
            if last.state != pb::ActionState::Succeeded as i32 {
                return Err(format!(
                    "{id}: action {} ended {:?}: {}",
                    last.id,
                    pb::ActionState::try_from(last.state),
                    last.message
                ));
            }
            Ok(())
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(|e| e.to_string()).and_then(|x| x) {
            first_err.get_or_insert(e);
        }
    }
    let took = t.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok(took),
    }
}

fn enroll_req(id: &str, port: u16) -> pb::EnrollServerRequest {
    pb::EnrollServerRequest {
        id: id.to_string(),
        project_id: "ops".into(),
        bmc: Some(pb::BmcEndpoint {
            protocol: pb::BmcProtocol::Ipmi as i32,
            address: "127.0.0.1".into(),
            port: port as u32,
            username: BMC_USER.into(),
            secret: Some(pb::bmc_endpoint::Secret::PasswordFile("bmc.pass".into())),
            options: Default::default(),
        }),
        // No BMC contact at enrolment: the timed sweep is the first.
        skip_verify: true,
    }
}

/// Cold: servers enrolled just before (untimed, no BMC contact), so each read
/// of the timed sweep opens its RMCP+ session; removed after (untimed; the
/// removal closes their sessions).
async fn cold_sweep(clients: &[Client], base: u16, n: usize) -> Result<Duration, String> {
    let ids: Vec<String> = (0..n).map(|i| format!("c-{i:04}")).collect();
    let mut set = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let req = enroll_req(id, base + i as u16);
        set.spawn(async move {
            c.enroll_server(req)
                .await
                .map(|_| ())
                .map_err(|e| format!("EnrollServer: {e}"))
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let took = sweep(clients, &ids, pb::PowerState::Off).await;
    let mut set = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let id = id.clone();
        set.spawn(async move {
            c.remove_server(pb::RemoveServerRequest { id })
                .await
                .map(|_| ())
                .map_err(|e| format!("RemoveServer: {e}"))
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    took
}

fn resets(dir: &Path, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("bmc{i}/stub.log")))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("reset"))
                .count()
        })
        .collect()
}

/// Runs a reset contender and checks that every stub BMC logged one more reset.
async fn checked_reset<F: std::future::Future<Output = Result<Duration, String>>>(
    dir: &Path,
    n: usize,
    f: F,
) -> Result<Duration, String> {
    let before = resets(dir, n);
    let took = f.await?;
    let after = resets(dir, n);
    if let Some(i) = (0..n).find(|&i| after[i] <= before[i]) {
        return Err(format!("BMC {i} logged no reset"));
    }
    Ok(took)
}

pub async fn run(ctx: &Ctx, n: usize) -> Vec<Group> {
    let rounds = ctx.sizes.rounds;
    let gid = format!("ipmi.n{n}");
    let mut read = [
        Contender::new("ipmipower --stat (one process, all hosts)"),
        Contender::new(format!("ipmitool ×{n} in parallel (chassis power status)")),
        Contender::new("rack-agent warm: GetPowerState(refresh), sessions open"),
        Contender::new("rack-agent cold: GetPowerState(refresh), new sessions"),
        Contender::new("rack-agent warm: one GetPowerStates(refresh) call"),
    ];
    let mut reset = [
        Contender::new("ipmipower --reset (one process, all hosts)"),
        Contender::new(format!("ipmitool ×{n} in parallel (chassis power reset)")),
        Contender::new("rack-agent: Reboot(HARD) + WatchAction until SUCCEEDED"),
    ];
    let setup = setup(ctx, n).await;
    match setup {
        Err(e) => {
            ctx.fail(format!("{gid}: setup: {e}"));
            for c in read.iter_mut().chain(reset.iter_mut()) {
                c.error = Some(format!("setup failed: {e}"));
            }
        }
        Ok(s) => {
            for r in 0..rounds {
                crate::progress(&format!("IPMI N={n}: round {}/{rounds}", r + 1));
                for k in 0..read.len() {
                    let which = (k + r) % read.len();
                    let res = match which {
                        0 => tokio::task::block_in_place(|| ipmipower(s.none_base, n, "--stat")),
                        1 => tokio::task::block_in_place(|| {
                            ipmitool_parallel(
                                s.none_base,
                                n,
                                &["chassis", "power", "status"],
                                "Chassis Power is off",
                            )
                        }),
                        2 => sweep(&s.clients, &s.read_ids, pb::PowerState::Off).await,
                        3 => cold_sweep(&s.clients, s.none_base, n).await,
                        _ => batch_sweep(&s.clients[0], &s.read_ids, pb::PowerState::Off).await,
                    };
                    read[which].record(ctx, &gid, res);
                }
                for k in 0..reset.len() {
                    let which = (k + r) % reset.len();
                    let res = match which {
                        0 => {
                            checked_reset(&s.stub_dir, n, async {
                                tokio::task::block_in_place(|| ipmipower(s.stub_base, n, "--reset"))
                            })
                            .await
                        }
                        1 => {
                            checked_reset(&s.stub_dir, n, async {
                                tokio::task::block_in_place(|| {
                                    ipmitool_parallel(
                                        s.stub_base,
                                        n,
                                        &["chassis", "power", "reset"],
                                        "Reset",
                                    )
                                })
                            })
                            .await
                        }
                        _ => {
                            checked_reset(&s.stub_dir, n, reboot_all(&s.clients, &s.reset_ids))
                                .await
                        }
                    };
                    reset[which].record(ctx, &gid, res);
                }
            }
            drop(s);
        }
    }

    let mut g = Group::new(
        format!("{gid}.read"),
        format!("IPMI read sweep, N = {n} ipmi_sim BMCs without a power program (protocol only)"),
        &[("sweep", "ms")],
    )
    .note("one sample = wall time until all N power states are read; BMCs: ipmi_sim 2.0.33 (BMC_POWER=none), cipher suite 3, admin privilege")
    .note("ipmipower: FreeIPMI, -D LAN_2_0 -W opensesspriv -I 3, default fanout, one process opening, using and closing a session per host")
    .note(format!("rack-agent: N concurrent GetPowerState(refresh=true) over {} HTTP/2 connection(s) from the bench; warm = static-inventory servers whose sessions the first sweep opened; cold = servers enrolled just before (skip_verify, untimed), so every read opens an RMCP+ session (open, RAKP 1-4, set privilege, status); their sessions are closed by RemoveServer after the sweep, untimed; one GetPowerStates(refresh=true) names all N in one call (the API's fleet sweep)", connections(n)));
    let mut rows = read.iter().map(Contender::row).collect::<Vec<_>>();
    rows[0] = rows[0].clone().reference();
    rows[2] = rows[2]
        .clone()
        .target(On::Ratio, Cmp::AtMost, 0.2, "≤ 0.2× ipmipower");
    rows[3] = rows[3]
        .clone()
        .target(On::Ratio, Cmp::AtMost, 1.0, "≤ 1.0× ipmipower");
    rows[4] = rows[4]
        .clone()
        .target(On::Ratio, Cmp::AtMost, 0.2, "≤ 0.2× ipmipower");
    g.rows = rows;
    g.finish();

    let mut h = Group::new(
        format!("{gid}.reset"),
        format!("IPMI hard-reset sweep, N = {n} ipmi_sim BMCs whose power is a stub program"),
        &[("sweep", "ms")],
    )
    .note("BMC power: hil-tests/ipmi/chassis_stub (BMC_POWER=stub: a file, always on; ipmi_sim forks it for every status read and power command); every contender must leave one more reset in every BMC's log")
    .note("rack-agent: N concurrent Reboot(HARD), each watched (WatchAction) until it ends SUCCEEDED: read power + restart cause, chassis hard reset, one status read to confirm, every step written to its database; the CLI tools send the reset only. No target in the issue: the ratio is for information");
    let mut rows = reset.iter().map(Contender::row).collect::<Vec<_>>();
    rows[0] = rows[0].clone().reference();
    h.rows = rows;
    h.finish();
    vec![g, h]
}

fn connections(n: usize) -> usize {
    n.div_ceil(64).max(1)
}

struct Setup {
    none_base: u16,
    stub_base: u16,
    stub_dir: PathBuf,
    clients: Vec<Client>,
    read_ids: Vec<String>,
    reset_ids: Vec<String>,
    _daemon: daemon::Daemon,
}

async fn setup(ctx: &Ctx, n: usize) -> Result<Setup, String> {
    let dir = ctx.run_dir.join(format!("ipmi-{n}"));
    let none_dir = dir.join("bmc-none");
    let stub_dir = dir.join("bmc-stub");
    let base = free_udp_range(2 * n)?;
    let (none_base, stub_base) = (base, base + n as u16);
    crate::progress(&format!(
        "IPMI N={n}: starting {n} + {n} ipmi_sim BMCs on UDP {base}..{}",
        base as usize + 2 * n - 1
    ));
    tokio::task::block_in_place(|| {
        start_bmcs(ctx, &none_dir, n, none_base, "none")?;
        start_bmcs(ctx, &stub_dir, n, stub_base, "stub")
    })?;
    let read_ids: Vec<String> = (0..n).map(|i| format!("r-{i:04}")).collect();
    let reset_ids: Vec<String> = (0..n).map(|i| format!("x-{i:04}")).collect();
    let mut servers = String::new();
    for i in 0..n {
        servers.push_str(&daemon::server_entry(
            &read_ids[i],
            "ipmi",
            none_base + i as u16,
            "",
        ));
        servers.push_str(&daemon::server_entry(
            &reset_ids[i],
            "ipmi",
            stub_base + i as u16,
            "",
        ));
    }
    // The sync loop polls once at start (a warm-up) and then not again
    // during the measurements.
    let tables = "[timeouts]\nbmc_command = \"10s\"\npower_confirm = \"10s\"\nconfirm_poll = \"100ms\"\n\n[sync]\ninterval = \"1h\"\njitter = \"0s\"\n";
    daemon::write_config(&dir, tables, &servers)?;
    let d = tokio::task::block_in_place(|| daemon::start(ctx, &dir, Duration::from_secs(60)))?;
    let clients = daemon::clients(d.addr, connections(n)).await?;
    // Warm-up: sessions open for every server.
    sweep(&clients, &read_ids, pb::PowerState::Off)
        .await
        .map_err(|e| format!("warm-up: {e}"))?;
    sweep(&clients, &reset_ids, pb::PowerState::On)
        .await
        .map_err(|e| format!("warm-up: {e}"))?;
    // The tools' binaries in the page cache; a tool that fails here fails
    // again as a contender, where it is reported.
    let _ = tokio::task::block_in_place(|| ipmipower(none_base, n, "--stat"));
    let _ = tokio::task::block_in_place(|| {
        ipmitool_parallel(
            none_base,
            n.min(4),
            &["chassis", "power", "status"],
            "Chassis Power",
        )
    });
    Ok(Setup {
        none_base,
        stub_base,
        stub_dir,
        clients,
        read_ids,
        reset_ids,
        _daemon: d,
    })
}
