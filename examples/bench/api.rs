//! The API under load: a load generator of the bench's own (tonic clients,
//! each on its own HTTP/2 connection), measuring from the client side.
//!
//! The daemon runs with in-memory fake BMCs (`[fake_bmc]`, no latency) and
//! enough servers that a Reboot rarely finds its server still busy with the
//! previous one (servers are picked round-robin; RESOURCE_EXHAUSTED answers,
//! a daemon shedding load, are counted as shed; FAILED_PRECONDITION answers
//! are counted as refused, not as accepted or as errors).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rack_agent::proto as pb;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::daemon::{self, Client, Daemon};
use crate::report::{Cmp, Group, On, Row};
use crate::Ctx;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// Reboot(HARD): an accepted action is written to the store before the answer.
    Reboot,
    /// GetPowerState(refresh = false): the cached state.
    Power,
    /// grpc.health.v1 Check: the no-op floor.
    Health,
}

#[derive(Clone)]
struct Conn {
    rack: Client,
    health: HealthClient<Channel>,
}

async fn conns(addr: std::net::SocketAddr, n: usize) -> Result<Vec<Conn>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ch = daemon::connect(addr).await?;
        out.push(Conn {
            rack: daemon::client(ch.clone()),
            health: HealthClient::new(ch),
        });
    }
    Ok(out)
}

/// Round-robin over the servers, shared by every run so that consecutive
/// runs do not start on the servers the last one just used.
struct Servers {
    ids: Vec<String>,
    next: AtomicUsize,
}

impl Servers {
    fn pick(&self) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.ids[i % self.ids.len()].clone()
    }
}

enum Answer {
    Ok,
    /// FAILED_PRECONDITION: the server is busy with an action (or locked).
    Refused(String),
    /// RESOURCE_EXHAUSTED: the daemon sheds load (its intake is full).
    Shed(String),
    Error(String),
}

async fn call(c: &mut Conn, op: Op, server: String) -> Answer {
    let r = match op {
        Op::Reboot => c
            .rack
            .reboot(pb::RebootRequest {
                server_id: server,
                r#type: pb::RebootType::Hard as i32,
                request_id: String::new(),
            })
            .await
            .map(|_| ()),
        Op::Power => c
            .rack
            .get_power_state(pb::GetPowerStateRequest {
                server_id: server,
                refresh: false,
            })
            .await
            .map(|_| ()),
        Op::Health => c
            .health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .and_then(|r| {
                if r.into_inner().status == 1 {
                    Ok(())
                } else {
                    Err(tonic::Status::unavailable("health: not SERVING"))
                }
            }),
    };
    match r {
        Ok(()) => Answer::Ok,
        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
            Answer::Shed(s.message().to_string())
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            Answer::Refused(s.message().to_string())
        }
        Err(s) => Answer::Error(format!("{op:?}: {} {}", s.code(), s.message())),
    }
}

#[derive(Default)]
struct Tally {
    /// Latencies of the answers that were not errors, ms.
    ok: Vec<f64>,
    refused: u64,
    first_refusal: Option<String>,
    shed: u64,
    first_shed: Option<String>,
    errors: u64,
    first_error: Option<String>,
    /// How late the generator sent (open loop), ms.
    lag: Vec<f64>,
    /// Not sent: the generator's cap on requests in flight was reached.
    not_sent: u64,
}

impl Tally {
    fn add(&mut self, a: Answer, ms: f64) {
        match a {
            Answer::Ok => self.ok.push(ms),
            Answer::Refused(why) => {
                self.refused += 1;
                self.first_refusal.get_or_insert(why);
            }
            Answer::Shed(why) => {
                self.shed += 1;
                self.first_shed.get_or_insert(why);
            }
            Answer::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
    fn merge(&mut self, o: Tally) {
        self.ok.extend(o.ok);
        self.refused += o.refused;
        if self.first_refusal.is_none() {
            self.first_refusal = o.first_refusal;
        }
        self.shed += o.shed;
        if self.first_shed.is_none() {
            self.first_shed = o.first_shed;
        }
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.lag.extend(o.lag);
        self.not_sent += o.not_sent;
    }
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn own_cpu() -> f64 {
    daemon::cpu_seconds(std::process::id())
}

/// One run's figures.
struct Figures {
    ok: f64,
    ok_per_s: f64,
    refused_per_s: f64,
    shed_per_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    cpu_pct: f64,
    /// The bench's own CPU over the run, % of a core.
    bench_pct: f64,
    lag_p99: f64,
    not_sent: u64,
    first_refusal: Option<String>,
    first_shed: Option<String>,
}

fn figures(mut t: Tally, secs: f64, cpu: f64, bench_cpu: f64) -> Result<Figures, String> {
    if t.errors > 0 {
        return Err(format!(
            "{} error answer(s), the first: {}",
            t.errors,
            t.first_error.unwrap_or_default()
        ));
    }
    if t.ok.is_empty() {
        return Err("no answer at all".into());
    }
    let n = t.ok.len() as f64;
    Ok(Figures {
        ok: n,
        ok_per_s: n / secs,
        refused_per_s: t.refused as f64 / secs,
        shed_per_s: t.shed as f64 / secs,
        p50: percentile(&mut t.ok, 0.50),
        p99: percentile(&mut t.ok, 0.99),
        max: percentile(&mut t.ok, 1.0),
        cpu_pct: cpu / secs * 100.0,
        bench_pct: bench_cpu / secs * 100.0,
        lag_p99: percentile(&mut t.lag, 0.99),
        not_sent: t.not_sent,
        first_refusal: t.first_refusal,
        first_shed: t.first_shed,
    })
}

/// One Reboot(HARD) per idle server, `clients` at a time (each client takes
/// the next server as soon as its previous answer arrived): the accept path
/// without conflicts, until every server has its action.
async fn burst(d: &Daemon, ids: &[String], clients: usize) -> Result<Figures, String> {
    let cs = conns(d.addr, clients).await?;
    for c in &cs {
        let mut c = c.clone();
        if let Answer::Error(e) = call(&mut c, Op::Health, String::new()).await {
            return Err(e);
        }
    }
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = d.cpu_seconds();
    let me0 = own_cpu();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in cs {
        let (ids, next) = (ids.clone(), next.clone());
        set.spawn(async move {
            let mut c = c;
            let mut t = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = ids.get(i) else { break };
                let t0 = Instant::now();
                let a = call(&mut c, Op::Reboot, s.clone()).await;
                t.add(a, t0.elapsed().as_secs_f64() * 1000.0);
            }
            t
        });
    }
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        all.merge(t.map_err(|e| e.to_string())?);
    }
    let secs = start.elapsed().as_secs_f64();
    figures(all, secs, d.cpu_seconds() - cpu0, own_cpu() - me0)
}

/// `clients` clients, each on its own connection, each sending `op` as soon
/// as its previous answer arrived, for `secs`.
async fn closed_loop(
    d: &Daemon,
    servers: &Arc<Servers>,
    op: Op,
    clients: usize,
    secs: f64,
) -> Result<Figures, String> {
    let cs = conns(d.addr, clients).await?;
    // One call each first: the connections are up and warm.
    for c in &cs {
        let mut c = c.clone();
        if let Answer::Error(e) = call(&mut c, Op::Health, String::new()).await {
            return Err(e);
        }
    }
    let cpu0 = d.cpu_seconds();
    let me0 = own_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut set = tokio::task::JoinSet::new();
    for c in cs {
        let servers = servers.clone();
        set.spawn(async move {
            let mut c = c;
            let mut t = Tally::default();
            while Instant::now() < end {
                let s = servers.pick();
                let t0 = Instant::now();
                let a = call(&mut c, op, s).await;
                t.add(a, t0.elapsed().as_secs_f64() * 1000.0);
            }
            t
        });
    }
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        all.merge(t.map_err(|e| e.to_string())?);
    }
    let secs = start.elapsed().as_secs_f64();
    figures(all, secs, d.cpu_seconds() - cpu0, own_cpu() - me0)
}

/// Sends `op` at `rate` per second for `secs` whatever the answers do (open
/// loop), spread over the connections; latency from the send. Requests
/// beyond `cap` in flight are not sent and counted.
async fn open_loop(
    cs: Vec<Conn>,
    servers: Arc<Servers>,
    op: Op,
    rate: f64,
    secs: f64,
    cap: usize,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let total = (rate * secs).round() as usize;
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if in_flight.load(Ordering::Relaxed) >= cap {
            tally.lock().unwrap().not_sent += 1;
            continue;
        }
        let mut c = cs[i % cs.len()].clone();
        let s = if op == Op::Health {
            String::new()
        } else {
            servers.pick()
        };
        let tally = tally.clone();
        let in_flight = in_flight.clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let lag = sent.saturating_duration_since(due).as_secs_f64() * 1000.0;
            let a = call(&mut c, op, s).await;
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            let mut t = tally.lock().unwrap();
            t.add(a, ms);
            t.lag.push(lag);
            drop(t);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let wait_until = Instant::now() + Duration::from_secs(60);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut t = std::mem::take(&mut *tally.lock().unwrap());
    let left = in_flight.load(Ordering::Relaxed);
    if left > 0 {
        t.errors += left as u64;
        t.first_error.get_or_insert(format!(
            "{left} request(s) unanswered 60 s after the load ended"
        ));
    }
    t
}

struct OpenFigures {
    accept: Result<Figures, String>,
    power: Result<Figures, String>,
    health: Result<Figures, String>,
}

/// Reboots at `rate` over 64 connections, while GetPowerState (cached) and
/// health are probed at `probe` per second each on connections of their own.
async fn open_round(
    d: &Daemon,
    servers: &Arc<Servers>,
    rate: f64,
    probe: f64,
    secs: f64,
) -> Result<OpenFigures, String> {
    let accept_conns = conns(d.addr, 64).await?;
    let power_conns = conns(d.addr, 4).await?;
    let health_conns = conns(d.addr, 4).await?;
    let cap = (rate as usize).max(1000) * 2;
    let cpu0 = d.cpu_seconds();
    let me0 = own_cpu();
    let t0 = Instant::now();
    let (a, p, h) = tokio::join!(
        open_loop(accept_conns, servers.clone(), Op::Reboot, rate, secs, cap),
        open_loop(power_conns, servers.clone(), Op::Power, probe, secs, cap),
        open_loop(health_conns, servers.clone(), Op::Health, probe, secs, cap),
    );
    let wall = t0.elapsed().as_secs_f64();
    let cpu = d.cpu_seconds() - cpu0;
    let me = own_cpu() - me0;
    // Rates over the intended duration: the answers of requests sent in it.
    Ok(OpenFigures {
        accept: figures(a, secs, cpu * secs / wall, me * secs / wall),
        power: figures(p, secs, f64::NAN, f64::NAN),
        health: figures(h, secs, f64::NAN, f64::NAN),
    })
}

/// Samples of one row over the rounds, or its first failure.
#[derive(Default)]
struct Series {
    cols: Vec<Vec<f64>>,
    error: Option<String>,
}

impl Series {
    fn push(&mut self, ctx: &Ctx, what: &str, r: Result<Vec<f64>, String>) {
        match r {
            Ok(v) => {
                if self.cols.is_empty() {
                    self.cols = vec![Vec::new(); v.len()];
                }
                for (c, x) in self.cols.iter_mut().zip(v) {
                    c.push(x);
                }
            }
            Err(e) => {
                crate::progress(&format!("{what} FAILED: {e}"));
                if self.error.is_none() {
                    ctx.fail(format!("{what}: {e}"));
                    self.error = Some(e);
                }
            }
        }
    }
    fn row(&self, label: impl Into<String>) -> Row {
        Row::new(label)
            .cells(if self.error.is_some() {
                vec![]
            } else {
                self.cols.clone()
            })
            .error(self.error.clone())
    }
}

/// The watchers' view of one power change.
struct Fanout {
    first: f64,
    all: f64,
}

/// `n` WatchPowerState streams (all servers), each on its own connection;
/// then `rounds` power changes of one server (forced stop / start, toggled),
/// each timed from the submit to the first and to the last watcher holding
/// its POWER_CHANGED event.
async fn watch_fanout(
    d: &Daemon,
    server: &str,
    n: usize,
    rounds: usize,
) -> Result<Vec<Fanout>, String> {
    use tokio::sync::mpsc;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, i32, Instant)>();
    let mut streams = Vec::new();
    for w in 0..n {
        let mut c = daemon::client(daemon::connect(d.addr).await?);
        let mut s = c
            .watch_power_state(pb::WatchPowerStateRequest {
                server_ids: vec![],
                after_seq: 0,
            })
            .await
            .map_err(|e| format!("WatchPowerState: {e}"))?
            .into_inner();
        let tx = tx.clone();
        let server = server.to_string();
        streams.push(tokio::spawn(async move {
            while let Ok(Some(ev)) = s.message().await {
                if ev.kind == pb::EventKind::PowerChanged as i32 && ev.server_id == server {
                    let _ = tx.send((w, ev.power_state, Instant::now()));
                }
            }
        }));
    }
    // The streams are subscribed once their headers arrived; give the
    // daemon a moment to settle all of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = daemon::client(daemon::connect(d.addr).await?);
    let now = c
        .get_power_state(pb::GetPowerStateRequest {
            server_id: server.into(),
            refresh: true,
        })
        .await
        .map_err(|e| format!("GetPowerState: {e}"))?
        .into_inner();
    let mut on = now.power_state == pb::PowerState::On as i32;
    let mut out = Vec::new();
    for _ in 0..rounds {
        let want = if on {
            pb::PowerState::Off
        } else {
            pb::PowerState::On
        } as i32;
        let t0 = Instant::now();
        let a = if on {
            c.stop(pb::StopRequest {
                server_id: server.into(),
                force: true,
                request_id: String::new(),
            })
            .await
        } else {
            c.start(pb::StartRequest {
                server_id: server.into(),
                request_id: String::new(),
            })
            .await
        }
        .map_err(|e| format!("power change of {server}: {e}"))?;
        let _ = a;
        let mut seen = vec![false; n];
        let mut got = 0;
        let mut first = None;
        let mut last = t0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((w, p, at))) if p == want && !seen[w] => {
                    seen[w] = true;
                    got += 1;
                    first.get_or_insert(at);
                    last = at;
                }
                Ok(Some(_)) => {}
                _ => {
                    return Err(format!(
                        "{got} of {n} watchers saw the power change within 30 s"
                    ))
                }
            }
        }
        out.push(Fanout {
            first: (first.unwrap_or(last) - t0).as_secs_f64() * 1000.0,
            all: (last - t0).as_secs_f64() * 1000.0,
        });
        on = !on;
        // The action ends after the event; let it finish before the next.
        d.drain(Duration::from_secs(30)).await?;
    }
    for s in streams {
        s.abort();
    }
    Ok(out)
}

fn accept_cols(f: &Figures) -> Vec<f64> {
    vec![
        f.ok_per_s,
        f.refused_per_s,
        f.shed_per_s,
        f.p50,
        f.p99,
        f.max,
        f.cpu_pct,
        f.bench_pct,
    ]
}

/// What the open-loop rounds at one rate gathered.
#[derive(Default)]
struct OpenSeries {
    accept: Series,
    power: Series,
    health: Series,
    lag_p99: f64,
    not_sent: u64,
    refusal: Option<String>,
    shed: Option<String>,
}

impl OpenSeries {
    fn push(&mut self, ctx: &Ctx, what: &str, o: Result<OpenFigures, String>) {
        match o {
            Ok(o) => {
                if let Ok(f) = &o.accept {
                    self.lag_p99 = self.lag_p99.max(f.lag_p99);
                    self.not_sent += f.not_sent;
                    if self.refusal.is_none() {
                        self.refusal = f.first_refusal.clone();
                    }
                    if self.shed.is_none() {
                        self.shed = f.first_shed.clone();
                    }
                }
                self.accept.push(
                    ctx,
                    &format!("{what} accept"),
                    o.accept.map(|f| accept_cols(&f)),
                );
                self.power.push(
                    ctx,
                    &format!("{what} GetPowerState"),
                    o.power
                        .map(|f| vec![f.ok_per_s, f64::NAN, f64::NAN, f.p50, f.p99, f.max]),
                );
                self.health.push(
                    ctx,
                    &format!("{what} health"),
                    o.health
                        .map(|f| vec![f.ok_per_s, f64::NAN, f64::NAN, f.p50, f.p99, f.max]),
                );
            }
            Err(e) => self.accept.push(ctx, what, Err(e)),
        }
    }

    fn group(&self, id: &str, title: String, rate: f64, accept_target: Option<f64>) -> Group {
        let mut g = Group::new(id, title, &[("answered", "/s"), ("refused", "/s"), ("shed", "/s"), ("p50", "ms"), ("p99", "ms"), ("max", "ms"), ("daemon CPU", "% of a core"), ("bench CPU", "% of a core")])
            .note("open loop: each request sent at its scheduled time whatever earlier answers do; latency from the actual send; answered/s = answers to the requests sent during the run, per second of the run")
            .note(format!(
                "generator (on the same 2 cores): worst round's p99 send lateness {:.2} ms; {} request(s) not sent because 2× the rate per second were already in flight",
                self.lag_p99, self.not_sent
            ));
        if let Some(r) = &self.refusal {
            g = g.note(format!("a refusal (FAILED_PRECONDITION) said: {r}"));
        }
        if let Some(r) = &self.shed {
            g = g.note(format!("a shed request (RESOURCE_EXHAUSTED) said: {r}"));
        }
        let mut a = self
            .accept
            .row(format!("Reboot(HARD) at {rate:.0}/s, 64 connections"));
        if let Some(t) = accept_target {
            a = a.target(On::Column(0), Cmp::AtLeast, t, format!("≥ {t:.0}/s"));
        }
        g.rows
            .push(a.target(On::Column(4), Cmp::AtMost, 2.0, "p99 ≤ 2 ms"));
        g.rows
            .push(self.power.row("GetPowerState(refresh=false) probe").target(
                On::Column(4),
                Cmp::AtMost,
                2.0,
                "p99 ≤ 2 ms",
            ));
        g.rows.push(self.health.row("health Check probe").target(
            On::Column(4),
            Cmp::AtMost,
            2.0,
            "p99 ≤ 2 ms",
        ));
        g.finish();
        g
    }
}

pub async fn run(ctx: &Ctx) -> Vec<Group> {
    let z = &ctx.sizes;
    let dir = ctx.run_dir.join("api");
    let n = z.api_servers;
    let ids: Vec<String> = (0..n).map(|i| format!("s-{i:05}")).collect();
    let watch_server = "watch-0".to_string();
    let mut servers_toml = String::new();
    // Each server its own BMC, as in a rack: the agent runs one operation at
    // a time per BMC address, so servers sharing one would queue behind each
    // other (fake BMCs: nothing listens on these ports).
    for (i, id) in ids.iter().chain(std::iter::once(&watch_server)).enumerate() {
        let port = 10_000 + i as u16;
        servers_toml.push_str(&daemon::server_entry(id, "ipmi", port, ""));
    }
    let tables = "[timeouts]\npower_confirm = \"10s\"\nconfirm_poll = \"50ms\"\n\n[sync]\ninterval = \"10s\"\njitter = \"1s\"\n\n[fake_bmc]\nenabled = true\nlatency = \"0s\"\n";
    let servers = Arc::new(Servers {
        ids: ids.clone(),
        next: AtomicUsize::new(0),
    });
    let rounds = z.api_rounds;
    let k = z.api_clients.len();
    let mut bursts: Vec<Series> = (0..k).map(|_| Series::default()).collect();
    let mut floor_h: Vec<Series> = (0..k).map(|_| Series::default()).collect();
    let mut floor_p: Vec<Series> = (0..k).map(|_| Series::default()).collect();
    let mut open_t = OpenSeries::default();
    let mut open_s = OpenSeries::default();
    let moderate = z.moderate_rate;
    let mut fan = Series::default();
    let drain = Duration::from_secs(300);
    let setup: Result<Daemon, String> =
        daemon::write_config(&dir, tables, &servers_toml).and_then(|_| {
            tokio::task::block_in_place(|| daemon::start(ctx, &dir, Duration::from_secs(120)))
        });
    match setup {
        Err(e) => {
            ctx.fail(format!("api: setup: {e}"));
            for s in bursts
                .iter_mut()
                .chain(floor_h.iter_mut())
                .chain(floor_p.iter_mut())
            {
                s.error = Some(format!("setup failed: {e}"));
            }
            for s in [&mut open_t.accept, &mut open_s.accept, &mut fan] {
                s.error = Some(format!("setup failed: {e}"));
            }
        }
        Ok(d) => {
            // The sync loop's first pass over every server runs at start.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for r in 0..rounds {
                crate::progress(&format!("API: round {}/{rounds}: accept bursts", r + 1));
                for j in 0..k {
                    let i = (j + r) % k;
                    let c = z.api_clients[i];
                    let t0 = Instant::now();
                    let f = burst(&d, &ids, c).await;
                    let f = match (f, d.drain(drain).await) {
                        (Ok(f), Ok(())) => Ok(f),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                    // The accepted ones, run to their end.
                    let all_done = t0.elapsed().as_secs_f64();
                    bursts[i].push(
                        ctx,
                        &format!("api burst {c} clients"),
                        f.map(|f| {
                            let mut v = accept_cols(&f);
                            v.push(f.ok / all_done);
                            v
                        }),
                    );
                }
                crate::progress(&format!("API: round {}/{rounds}: read floor", r + 1));
                for j in 0..k {
                    let i = (j + r) % k;
                    let c = z.api_clients[i];
                    let f = closed_loop(&d, &servers, Op::Health, c, z.floor_secs).await;
                    floor_h[i].push(
                        ctx,
                        &format!("api health {c} clients"),
                        f.map(|f| vec![f.ok_per_s, f.p50, f.p99, f.max, f.cpu_pct, f.bench_pct]),
                    );
                    let f = closed_loop(&d, &servers, Op::Power, c, z.floor_secs).await;
                    floor_p[i].push(
                        ctx,
                        &format!("api GetPowerState {c} clients"),
                        f.map(|f| vec![f.ok_per_s, f.p50, f.p99, f.max, f.cpu_pct, f.bench_pct]),
                    );
                }
                crate::progress(&format!(
                    "API: round {}/{rounds}: open loop at {:.0}/s",
                    r + 1,
                    z.target_rate
                ));
                let o = open_round(&d, &servers, z.target_rate, z.probe_rate, z.open_secs).await;
                let o = match (o, d.drain(drain).await) {
                    (Ok(o), Ok(())) => Ok(o),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                open_t.push(ctx, "api open loop (target rate)", o);
                crate::progress(&format!(
                    "API: round {}/{rounds}: open loop at {moderate:.0}/s",
                    r + 1
                ));
                let o = open_round(&d, &servers, moderate, z.probe_rate, z.open_secs).await;
                let o = match (o, d.drain(drain).await) {
                    (Ok(o), Ok(())) => Ok(o),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                open_s.push(ctx, "api open loop (moderate rate)", o);
            }
            crate::progress(&format!(
                "API: WatchPowerState fan-out to {} watchers",
                z.watchers
            ));
            match watch_fanout(&d, &watch_server, z.watchers, z.watch_rounds).await {
                Ok(v) => {
                    for f in v {
                        fan.push(
                            ctx,
                            "watch fan-out",
                            Ok(vec![f.all, f.first, f.all - f.first]),
                        );
                    }
                }
                Err(e) => fan.push(ctx, "watch fan-out", Err(e)),
            }
            let mut d = d;
            if let Err(e) = tokio::task::block_in_place(|| d.stop(Duration::from_secs(60))) {
                ctx.fail(format!("api: {e}"));
            }
        }
    }

    let daemon_note = format!("daemon: [fake_bmc] latency 0s, {n} servers, sync every 10 s; an accepted action is durable (SQLite WAL, synchronous=FULL) before its answer, then runs on the fake BMC; each client on its own HTTP/2 connection; latency measured by the client, send to answer");
    let cols = [
        ("accepted", "/s"),
        ("refused", "/s"),
        ("shed", "/s"),
        ("p50", "ms"),
        ("p99", "ms"),
        ("max", "ms"),
        ("daemon CPU", "% of a core"),
        ("bench CPU", "% of a core"),
    ];
    let mut burst_cols = cols.to_vec();
    burst_cols.push(("finished", "/s"));
    let mut g0 = Group::new(
        "api.accept",
        format!("API accept throughput: one Reboot(HARD) per idle server ({n} actions), closed loop"),
        &burst_cols,
    )
    .note("each client sends its next Reboot as soon as the previous one was answered, to the next server not yet used, until all have one (accepted/s, latencies, CPU: this phase); finished/s = the actions over the time until every one had also ended (the bench polls the in-flight gauge at /metrics every 50 ms)")
    .note(daemon_note.clone());
    for (i, c) in z.api_clients.iter().enumerate() {
        let mut row = bursts[i].row(format!("{c} client(s)"));
        if *c == 64 {
            row = row
                .target(On::Column(0), Cmp::AtLeast, 5000.0, "≥ 5,000/s")
                .target(On::Column(4), Cmp::AtMost, 2.0, "p99 ≤ 2 ms");
        }
        g0.rows.push(row);
    }
    g0.finish();

    let g2 = open_t.group(
        "api.open",
        format!(
            "API at the target rate: Reboot(HARD) sent at {:.0}/s (open loop) for {} s, GetPowerState (cached) and health probed at {:.0}/s each meanwhile",
            z.target_rate, z.open_secs, z.probe_rate
        ),
        z.target_rate,
        Some(5000.0_f64.min(z.target_rate)),
    )
    .note(format!(
        "the {n} servers are picked round-robin: a server whose previous action still runs refuses (FAILED_PRECONDITION, counted as refused); when actions take longer than the run, at most {n} are accepted per run, so accepted/s ≤ {n} / {} s",
        z.open_secs
    ));
    let g = open_s.group(
        "api.open.moderate",
        format!(
            "API at a moderate rate: Reboot(HARD) sent at {moderate:.0}/s (open loop) for {} s, GetPowerState and health probed at {:.0}/s each meanwhile",
            z.open_secs, z.probe_rate
        ),
        moderate,
        None,
    );
    let mut groups = vec![g0, g2, g.note("a fixed tenth of the target rate, the same in every run so that runs compare: how reads fare under a load a daemon can keep up with")];

    let mut g3 = Group::new(
        "api.floor",
        format!("API read floor on the same daemon, closed loop, {} s per run", z.floor_secs),
        &[("calls", "/s"), ("p50", "ms"), ("p99", "ms"), ("max", "ms"), ("daemon CPU", "% of a core"), ("bench CPU", "% of a core")],
    )
    .note("health Check (grpc.health.v1, no engine work: the no-op floor of the gRPC stack) and GetPowerState(refresh=false) (the engine's cached state), no actions running")
    .note("each client on its own HTTP/2 connection; the bench's clients share the machine's 2 cores with the daemon");
    for (i, c) in z.api_clients.iter().enumerate() {
        g3.rows
            .push(floor_h[i].row(format!("health Check, {c} client(s)")));
    }
    for (i, c) in z.api_clients.iter().enumerate() {
        g3.rows
            .push(floor_p[i].row(format!("GetPowerState cached, {c} client(s)")));
    }
    g3.finish();

    let mut g4 = Group::new(
        "api.watch",
        format!("WatchPowerState fan-out to {} watchers", z.watchers),
        &[("submit → all", "ms"), ("submit → first", "ms"), ("first → last", "ms")],
    )
    .note(format!("{} watchers, each on its own connection, watching every server; one server's power toggled by Stop(force)/Start ({} times, idle daemon); time from submitting the action to the first and to the last watcher holding the POWER_CHANGED event (includes running the action on the fake BMC)", z.watchers, z.watch_rounds))
    .note("no target in the issue");
    g4.rows.push(fan.row(format!("{} watchers", z.watchers)));
    g4.finish();
    groups.push(g3);
    groups.push(g4);
    groups
}
