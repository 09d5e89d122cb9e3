//! Redfish fleet sweep: N BMCs served by an instant loopback server of the
//! bench's own (a child process: `bench redfish-server`), read all at once by
//! a plain parallel reqwest client (the reference) and through the daemon.
//!
//! The server answers the service root, the Systems collection and one
//! system at once from constant bodies, so the comparison measures the
//! clients, not an emulator (sushy-tools takes 1–11 s to change a state and
//! ~20 ms per read). Plain HTTP for both contenders: the driver's `scheme =
//! "http"` option; TLS would add the same per-request cost to both once the
//! connections are open.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use rack_agent::proto as pb;
use tokio::task::JoinSet;

use crate::daemon::{self, BMC_PASSWORD, BMC_USER};
use crate::ipmi::{batch_sweep, sweep, Contender};
use crate::report::{Cmp, Group, On};
use crate::Ctx;

const ROOT: &str = r##"{"@odata.id":"/redfish/v1/","@odata.type":"#ServiceRoot.v1_5_0.ServiceRoot","Id":"RootService","Name":"Bench Root Service","RedfishVersion":"1.6.0","Systems":{"@odata.id":"/redfish/v1/Systems"}}"##;
const SYSTEMS: &str = r##"{"@odata.id":"/redfish/v1/Systems","@odata.type":"#ComputerSystemCollection.ComputerSystemCollection","Name":"Computer System Collection","Members@odata.count":1,"Members":[{"@odata.id":"/redfish/v1/Systems/1"}]}"##;
const SYSTEM: &str = r##"{"@odata.id":"/redfish/v1/Systems/1","@odata.type":"#ComputerSystem.v1_10_0.ComputerSystem","Id":"1","Name":"Bench System","PowerState":"On","Actions":{"#ComputerSystem.Reset":{"target":"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset","ResetType@Redfish.AllowableValues":["On","ForceOff","GracefulShutdown","ForceRestart"]}}}"##;
pub const SYSTEM_PATH: &str = "/redfish/v1/Systems/1";

async fn answer(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let body = match req.uri().path() {
        "/redfish/v1" | "/redfish/v1/" => Some(ROOT),
        "/redfish/v1/Systems" => Some(SYSTEMS),
        SYSTEM_PATH => Some(SYSTEM),
        _ => None,
    };
    let resp = match body {
        Some(b) => Response::builder()
            .header("content-type", "application/json")
            .header("odata-version", "4.0")
            .body(Full::new(Bytes::from_static(b.as_bytes()))),
        None => Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"code":"Base.1.0.ResourceMissingAtURI","message":"not here"}}"#,
            ))),
    };
    Ok(resp.expect("static response"))
}

/// `bench redfish-server --count N`: N listeners on 127.0.0.1, one line of
/// JSON with their ports on stdout, then serves until killed. One thread.
pub fn serve(count: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut ports = Vec::with_capacity(count);
        let mut listeners = Vec::with_capacity(count);
        for _ in 0..count {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            ports.push(l.local_addr().map_err(|e| e.to_string())?.port());
            listeners.push(l);
        }
        println!("{}", serde_json::json!({ "ports": ports }));
        use std::io::Write;
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        for l in listeners {
            tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(
                                hyper_util::rt::TokioIo::new(s),
                                hyper::service::service_fn(answer),
                            )
                            .await;
                    });
                }
            });
        }
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// The reference: one reqwest client (a connection pool per host), N GETs
/// of the system resource at once with basic auth, each body parsed for
/// `PowerState`.
async fn plain_sweep(client: &reqwest::Client, ports: &[u16]) -> Result<Duration, String> {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for &p in ports {
        let c = client.clone();
        set.spawn(async move {
            let v: serde_json::Value = c
                .get(format!("http://127.0.0.1:{p}{SYSTEM_PATH}"))
                .basic_auth(BMC_USER, Some(BMC_PASSWORD))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("port {p}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("port {p}: {e}"))?;
            if v["PowerState"] != "On" {
                return Err(format!("port {p}: PowerState {:?}", v["PowerState"]));
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

/// Starts the server as a child process in its own group; its ports.
fn start_server(ctx: &Ctx, n: usize) -> Result<(std::process::Child, Vec<u16>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["redfish-server", "--count", &n.to_string(), "--run-dir"])
        .arg(&ctx.run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the Redfish server: {e}"))?;
    ctx.reaper
        .process(child.id(), &ctx.run_dir.display().to_string());
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| format!("the Redfish server said {line:?}: {e}"))?;
    let ports: Vec<u16> = v["ports"]
        .as_array()
        .ok_or("no ports from the Redfish server")?
        .iter()
        .filter_map(|p| p.as_u64().map(|p| p as u16))
        .collect();
    if ports.len() != n {
        return Err(format!(
            "the Redfish server bound {} of {n} ports",
            ports.len()
        ));
    }
    Ok((child, ports))
}

pub async fn run(ctx: &Ctx, n: usize) -> Vec<Group> {
    let gid = format!("redfish.n{n}");
    let mut rows = [
        Contender::new("plain parallel reqwest client (GET system)"),
        Contender::new("rack-agent: GetPowerState(refresh) per server"),
        Contender::new("rack-agent: one GetPowerStates(refresh) call"),
    ];
    let dir = ctx.run_dir.join(format!("redfish-{n}"));
    let result: Result<(), String> = async {
        let (server, ports) = tokio::task::block_in_place(|| start_server(ctx, n))?;
        let _server = KillOnDrop(server);
        let mut servers = String::new();
        let ids: Vec<String> = (0..n).map(|i| format!("rf-{i:04}")).collect();
        for (id, p) in ids.iter().zip(&ports) {
            servers.push_str(&daemon::server_entry(
                id,
                "redfish",
                *p,
                "scheme = \"http\", auth = \"basic\"",
            ));
        }
        let tables = "[sync]\ninterval = \"1h\"\njitter = \"0s\"\n";
        daemon::write_config(&dir, tables, &servers)?;
        let _d = tokio::task::block_in_place(|| daemon::start(ctx, &dir, Duration::from_secs(60)))?;
        let clients = daemon::clients(_d.addr, n.div_ceil(64).max(1)).await?;
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        // Warm-up: discovery done and connections open on both sides.
        sweep(&clients, &ids, pb::PowerState::On)
            .await
            .map_err(|e| format!("warm-up: {e}"))?;
        plain_sweep(&plain, &ports)
            .await
            .map_err(|e| format!("warm-up: {e}"))?;
        let rounds = ctx.sizes.rounds;
        for r in 0..rounds {
            crate::progress(&format!("Redfish N={n}: round {}/{rounds}", r + 1));
            for k in 0..3 {
                let which = (k + r) % 3;
                let res = match which {
                    0 => plain_sweep(&plain, &ports).await,
                    1 => sweep(&clients, &ids, pb::PowerState::On).await,
                    _ => batch_sweep(&clients[0], &ids, pb::PowerState::On).await,
                };
                rows[which].record(ctx, &gid, res);
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        ctx.fail(format!("{gid}: setup: {e}"));
        for c in rows.iter_mut() {
            c.error.get_or_insert(format!("setup failed: {e}"));
        }
    }
    let mut g = Group::new(
        gid,
        format!("Redfish read sweep, N = {n} BMCs on the bench's instant loopback server"),
        &[("sweep", "ms")],
    )
    .note("one sample = wall time until all N power states are read; server: `bench redfish-server`, one thread, N ports, constant JSON bodies, plain HTTP/1.1 keep-alive")
    .note("plain client: reqwest (pooled connections), N concurrent GET /redfish/v1/Systems/1 with basic auth, JSON parsed, PowerState checked")
    .note("rack-agent: N concurrent GetPowerState(refresh=true) from the bench, or one GetPowerStates(refresh=true) naming all N (the API's fleet sweep: one gRPC call, the daemon reads every BMC at once); the driver (scheme=http, auth=basic) GETs the same resource per read, after discovery in the warm-up");
    let mut out = rows.iter().map(Contender::row).collect::<Vec<_>>();
    out[0] = out[0].clone().reference();
    for row in &mut out[1..] {
        *row = row
            .clone()
            .target(On::Ratio, Cmp::AtMost, 1.2, "≤ 1.2× plain client");
    }
    g.rows = out;
    g.finish();
    vec![g]
}

/// Kills a child's process group when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        crate::reaper::signal_group(self.0.id(), "KILL");
        let _ = self.0.wait();
    }
}
