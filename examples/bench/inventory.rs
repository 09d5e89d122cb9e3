//! Sensors and the event log over N ipmi_sim BMCs (each with the bench's five
//! threshold sensors and SEL_ENTRIES SEL entries): FreeIPMI's `ipmi-sensors`
//! and `ipmi-sel` over all hosts in one process (the references), `ipmitool`
//! in parallel, and the daemon's GetServerHealth / ListBmcEvents for every
//! server at once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rack_agent::proto as pb;
use tokio::task::JoinSet;

use crate::daemon::{self, Client, BMC_PASSWORD, BMC_USER};
use crate::ipmi::{free_udp_range, hosts, ipmitool, start_bmcs, Contender};
use crate::report::{Group, Row};
use crate::tools::{first_failure, run_parallel};
use crate::Ctx;

const TOOL_LIMIT: Duration = Duration::from_secs(120);
/// SEL entries written into every BMC before the measurements.
const SEL_ENTRIES: usize = 16;
/// The bench BMC's sensors (hil-tests/ipmi/sensors.sh).
const SENSORS: usize = 5;

/// A FreeIPMI tool over the whole range in one process; every host's output
/// must name `expect` `per_host` times. Its SDR cache (FreeIPMI keeps one per
/// host, by default under ~/.freeipmi, keyed by address and port) lives in
/// `cache`: this run's BMCs are not those an earlier run had on the same
/// ports, and it is recreated if it does not match. Kept between rounds, as
/// an operator's would be: the daemon's SDR is cached too.
fn freeipmi(
    tool: &str,
    cache: &Path,
    base: u16,
    n: usize,
    expect: &str,
    per_host: usize,
) -> Result<Duration, String> {
    let mut c = Command::new(tool);
    c.args(["-D", "LAN_2_0", "-h"])
        .arg(hosts(base, n))
        .args(["-u", BMC_USER, "-p", BMC_PASSWORD])
        .args(["-W", "opensesspriv", "-I", "3", "--sdr-cache-recreate"])
        .arg(format!("--sdr-cache-directory={}", cache.display()));
    let (took, outs) = run_parallel(vec![c], TOOL_LIMIT)?;
    if let Some(f) = first_failure(&outs) {
        return Err(f);
    }
    let text = String::from_utf8_lossy(&outs[0].stdout);
    let seen = text.matches(expect).count();
    if seen != n * per_host {
        return Err(format!(
            "{tool}: {seen} lines name {expect:?}, expected {} ({per_host} per host)",
            n * per_host
        ));
    }
    Ok(took)
}

/// One `ipmitool` per BMC, all at once; each must print `expect` `per_host` times.
fn ipmitool_parallel(
    base: u16,
    n: usize,
    args: &[&str],
    expect: &str,
    per_host: usize,
) -> Result<Duration, String> {
    let cmds = (0..n).map(|i| ipmitool(base + i as u16, args)).collect();
    let (took, outs) = run_parallel(cmds, TOOL_LIMIT)?;
    if let Some(f) = first_failure(&outs) {
        return Err(f);
    }
    for o in &outs {
        let seen = String::from_utf8_lossy(&o.stdout).matches(expect).count();
        if seen != per_host {
            return Err(format!(
                "ipmitool {args:?}: {seen} lines name {expect:?}, expected {per_host}"
            ));
        }
    }
    Ok(took)
}

/// `call` for every server at once (the clients round-robin); the wall time
/// until the last answer, or the first failure.
async fn sweep<F, Fut>(clients: &[Client], ids: &[String], call: F) -> Result<Duration, String>
where
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        set.spawn(call(clients[i % clients.len()].clone(), id.clone()));
    }
    join(set, t).await
}

/// Every server's sensors at once; each answer must carry all sensors and
/// no problem.
async fn health_sweep(clients: &[Client], ids: &[String]) -> Result<Duration, String> {
    sweep(clients, ids, |mut c, id| async move {
        let h = c
            .get_server_health(pb::GetServerHealthRequest {
                server_id: id.clone(),
            })
            .await
            .map_err(|e| format!("{id}: {} {}", e.code(), e.message()))?
            .into_inner();
        if h.sensors.len() != SENSORS || !h.problems.is_empty() {
            return Err(format!(
                "{id}: {} sensors, problems {:?}",
                h.sensors.len(),
                h.problems
            ));
        }
        Ok(())
    })
    .await
}

/// Every server's event log at once; each must have every entry.
async fn events_sweep(clients: &[Client], ids: &[String]) -> Result<Duration, String> {
    sweep(clients, ids, |mut c, id| async move {
        let r = c
            .list_bmc_events(pb::ListBmcEventsRequest {
                server_id: id.clone(),
                since: None,
                limit: 1000,
            })
            .await
            .map_err(|e| format!("{id}: {} {}", e.code(), e.message()))?
            .into_inner();
        if r.events.len() != SEL_ENTRIES {
            return Err(format!(
                "{id}: {} entries, expected {SEL_ENTRIES}",
                r.events.len()
            ));
        }
        Ok(())
    })
    .await
}

async fn join(mut set: JoinSet<Result<(), String>>, t: Instant) -> Result<Duration, String> {
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(|e| e.to_string()).and_then(|x| x) {
            first_err.get_or_insert(e);
        }
    }
    let took = t.elapsed();
    first_err.map_or(Ok(took), Err)
}

/// Writes SEL_ENTRIES Power Unit "Power Off / Power Down" entries into every
/// BMC (Add SEL Entry, Storage 0x44), one ipmitool session per BMC.
fn fill_sels(dir: &Path, base: u16, n: usize) -> Result<(), String> {
    let script = dir.join("sel-add.txt");
    let line = "raw 0x0a 0x44 0x00 0x00 0x02 0x00 0x00 0x00 0x00 0x20 0x00 0x04 0x09 0x40 0x6f 0x00 0xff 0xff\n";
    std::fs::write(&script, line.repeat(SEL_ENTRIES)).map_err(|e| e.to_string())?;
    let script = script.to_string_lossy();
    let cmds = (0..n)
        .map(|i| ipmitool(base + i as u16, &["exec", &script]))
        .collect();
    let (_, outs) = run_parallel(cmds, TOOL_LIMIT)?;
    first_failure(&outs).map_or(Ok(()), |f| Err(format!("adding SEL entries: {f}")))
}

pub async fn run(ctx: &Ctx, n: usize) -> Vec<Group> {
    let rounds = ctx.sizes.rounds;
    let gid = format!("inventory.n{n}");
    let mut sensors = [
        Contender::new("ipmi-sensors (one process, all hosts)"),
        Contender::new(format!("ipmitool ×{n} in parallel (sensor list)")),
        Contender::new("rack-agent: GetServerHealth for every server at once"),
    ];
    let mut sel = [
        Contender::new("ipmi-sel (one process, all hosts)"),
        Contender::new(format!("ipmitool ×{n} in parallel (sel elist)")),
        Contender::new("rack-agent: ListBmcEvents for every server at once"),
    ];
    match setup(ctx, n).await {
        Err(e) => {
            ctx.fail(format!("{gid}: setup: {e}"));
            for c in sensors.iter_mut().chain(sel.iter_mut()) {
                c.error = Some(format!("setup failed: {e}"));
            }
        }
        Ok(s) => {
            for r in 0..rounds {
                crate::progress(&format!("inventory N={n}: round {}/{rounds}", r + 1));
                for k in 0..sensors.len() {
                    let which = (k + r) % sensors.len();
                    let res = match which {
                        0 => tokio::task::block_in_place(|| {
                            freeipmi("ipmi-sensors", &s.cache, s.base, n, "Inlet Temp", 1)
                        }),
                        1 => tokio::task::block_in_place(|| {
                            ipmitool_parallel(s.base, n, &["sensor", "list"], "Inlet Temp", 1)
                        }),
                        _ => health_sweep(&s.clients, &s.ids).await,
                    };
                    sensors[which].record(ctx, &gid, res);
                }
                for k in 0..sel.len() {
                    let which = (k + r) % sel.len();
                    let res = match which {
                        0 => tokio::task::block_in_place(|| {
                            freeipmi("ipmi-sel", &s.cache, s.base, n, "Power Unit", SEL_ENTRIES)
                        }),
                        1 => tokio::task::block_in_place(|| {
                            ipmitool_parallel(
                                s.base,
                                n,
                                &["sel", "elist"],
                                "Power Unit",
                                SEL_ENTRIES,
                            )
                        }),
                        _ => events_sweep(&s.clients, &s.ids).await,
                    };
                    sel[which].record(ctx, &gid, res);
                }
            }
        }
    }
    let group = |id: &str, title: String, rows: &[Contender], notes: &[&str]| {
        let mut g = Group::new(format!("{gid}.{id}"), title, &[("sweep", "ms")]);
        for n in notes {
            g = g.note(*n);
        }
        let mut rows: Vec<Row> = rows.iter().map(Contender::row).collect();
        rows[0] = rows[0].clone().reference();
        g.rows = rows;
        g.finish();
        g
    };
    vec![
        group(
            "sensors",
            format!("IPMI sensors, N = {n} ipmi_sim BMCs with 5 threshold sensors each"),
            &sensors,
            &[
                "one sample = wall time until every BMC's sensors are read; the CLI tools open a session, read the SDR repository and every sensor, and close",
                "rack-agent: concurrent GetServerHealth(server) over one HTTP/2 connection; sessions open and the SDR repository cached (Get SDR Repository Info says it is unchanged), then one Get Sensor Reading per sensor. No target in the issue: the ratio is for information",
            ],
        ),
        group(
            "sel",
            format!("IPMI event log, N = {n} ipmi_sim BMCs with {SEL_ENTRIES} SEL entries each"),
            &sel,
            &[
                "one sample = wall time until every BMC's SEL is listed; the CLI tools read every entry (and ipmi-sel and ipmitool elist the SDR for sensor names)",
                "rack-agent: concurrent ListBmcEvents(server, limit 1000); entries read before are cached while Get SEL Info says the log is unchanged, so a repeated read is one round trip. No target in the issue: the ratio is for information",
            ],
        ),
    ]
}

struct Setup {
    base: u16,
    cache: std::path::PathBuf,
    clients: Vec<Client>,
    ids: Vec<String>,
    _daemon: daemon::Daemon,
}

async fn setup(ctx: &Ctx, n: usize) -> Result<Setup, String> {
    let dir = ctx.run_dir.join(format!("inventory-{n}"));
    let bmc_dir = dir.join("bmc");
    let base = free_udp_range(n)?;
    crate::progress(&format!(
        "inventory N={n}: starting {n} ipmi_sim BMCs on UDP {base}..{}",
        base as usize + n - 1
    ));
    tokio::task::block_in_place(|| {
        start_bmcs(ctx, &bmc_dir, n, base, "none")?;
        fill_sels(&dir, base, n)
    })?;
    let ids: Vec<String> = (0..n).map(|i| format!("s-{i:04}")).collect();
    let servers: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| daemon::server_entry(id, "ipmi", base + i as u16, ""))
        .collect();
    // No periodic polls during the measurements.
    let tables = "[timeouts]\nbmc_command = \"10s\"\n\n[sync]\ninterval = \"1h\"\njitter = \"0s\"\nhealth_interval = \"0s\"\n";
    daemon::write_config(&dir, tables, &servers)?;
    let d = tokio::task::block_in_place(|| daemon::start(ctx, &dir, Duration::from_secs(60)))?;
    let clients = daemon::clients(d.addr, 1).await?;
    // Warm-up: sessions open, SDR and SEL read once; the tools' binaries in
    // the page cache.
    health_sweep(&clients, &ids)
        .await
        .map_err(|e| format!("warm-up: {e}"))?;
    events_sweep(&clients, &ids)
        .await
        .map_err(|e| format!("warm-up: {e}"))?;
    // FreeIPMI's SDR caches, made here for every host.
    let cache = dir.join("freeipmi-sdr-cache");
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let _ =
        tokio::task::block_in_place(|| freeipmi("ipmi-sensors", &cache, base, n, "Inlet Temp", 1));
    let _ = tokio::task::block_in_place(|| {
        freeipmi("ipmi-sel", &cache, base, n, "Power Unit", SEL_ENTRIES)
    });
    Ok(Setup {
        base,
        cache,
        clients,
        ids,
        _daemon: d,
    })
}
