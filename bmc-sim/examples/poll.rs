//! Load generator for the scale measurement: the agent's own IPMI driver
//! (`rack_agent::bmc::ipmi::IpmiBmc`) — or with `--redfish CERT` its Redfish
//! driver against the shared Redfish port, a session per system —
//! one per simulated BMC, each reading the
//! power state once per interval, the reads spread evenly over the interval —
//! the way the agent's sync loop polls a rack. Prints, per interval, the reads
//! done, the errors, latency percentiles, and the simulator's CPU and RSS read
//! from /proc (when its PID is given), then closes every session.
//!
//! ```sh
//! bmc-sim --count 10000 --ipmi-base 30000 --power alternate &
//! cargo run -p bmc-sim --example poll -- --base 30000 --count 10000 \
//!     --interval 10s --rounds 6 --sim-pid $!
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rack_agent::bmc::ipmi::IpmiBmc;
use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Endpoint, Protocol, Secret, SharedBmc};
use tokio::sync::mpsc;

struct Args {
    base: u16,
    count: usize,
    interval: Duration,
    rounds: usize,
    sim_pid: Option<u32>,
    /// Redfish on a shared port, trusting this certificate.
    redfish_cert: Option<String>,
    user: String,
    password: String,
}

fn args() -> Args {
    let mut a = Args {
        base: 0,
        count: 0,
        interval: Duration::from_secs(10),
        rounds: 6,
        sim_pid: None,
        redfish_cert: None,
        user: "admin".into(),
        password: "password".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let (k, val) = (pair[0].as_str(), pair.get(1).cloned().unwrap_or_default());
        match k {
            "--base" => a.base = val.parse().expect("--base PORT"),
            "--count" => a.count = val.parse().expect("--count N"),
            "--interval" => a.interval = humantime::parse_duration(&val).expect("--interval"),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--sim-pid" => a.sim_pid = Some(val.parse().expect("--sim-pid PID")),
            "--redfish" => a.redfish_cert = Some(val),
            "--user" => a.user = val,
            "--password" => a.password = val,
            _ => panic!("unknown flag {k}"),
        }
    }
    assert!(
        a.base != 0 && a.count > 0,
        "--base PORT --count N are required"
    );
    a
}

/// utime + stime in clock ticks, and VmRSS / VmHWM in kB.
fn proc_stats(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(") ").next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((ticks, kb("VmRSS:"), kb("VmHWM:")))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a = args();
    let ticks_per_s = 100.0; // Linux USER_HZ
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<Duration, String>)>();
    let started = Instant::now();
    let mut drivers: Vec<SharedBmc> = Vec::with_capacity(a.count);
    for i in 0..a.count {
        let mut ep = Endpoint {
            protocol: Protocol::Ipmi,
            address: "127.0.0.1".into(),
            port: a.base + i as u16,
            username: a.user.clone(),
            password: Secret::new(a.password.clone()),
            // No keep-alive: the polls keep the session alive, and the load
            // is then exactly one Get Chassis Status per BMC per interval.
            options: BTreeMap::from([("keepalive".to_string(), "0s".to_string())]),
        };
        let id = format!("node{i}");
        drivers.push(match &a.redfish_cert {
            None => Arc::new(IpmiBmc::new(&id, &ep).expect("driver")),
            Some(cert) => {
                ep.protocol = Protocol::Redfish;
                ep.port = a.base;
                ep.options = BTreeMap::from([
                    ("ca_file".to_string(), cert.clone()),
                    ("system_id".to_string(), id.clone()),
                    ("auth".to_string(), "session".to_string()),
                    ("max_connections".to_string(), "1".to_string()),
                ]);
                Arc::new(RedfishBmc::connect(&id, &ep).expect("driver"))
            }
        });
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, d) in drivers.iter().enumerate() {
        let (d, tx, stop) = (d.clone(), tx.clone(), stop.clone());
        // BMC i reads at offset i * interval / count of every interval.
        let offset = a.interval.mul_f64(i as f64 / a.count as f64);
        let interval = a.interval;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let t = Instant::now();
                let r = d.power_state().await;
                let _ = tx.send((i, r.map(|_| t.elapsed()).map_err(|e| e.to_string())));
            }
        });
    }
    drop(tx);

    println!(
        "polling {} {} BMCs from 127.0.0.1:{}, one power read each per {:?}, {} rounds",
        a.count,
        if a.redfish_cert.is_some() {
            "Redfish"
        } else {
            "IPMI"
        },
        a.base,
        a.interval,
        a.rounds
    );
    println!("round  reads  errors  p50_ms  p99_ms  max_ms  sim_cpu_%  sim_rss_MB  sim_hwm_MB");
    let mut last = a.sim_pid.and_then(proc_stats);
    let mut last_t = Instant::now();
    for round in 1..=a.rounds {
        let deadline = started + a.interval * round as u32;
        let mut lat = Vec::new();
        let mut errors = BTreeMap::<String, usize>::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((_, Ok(d)))) => lat.push(d),
                Ok(Some((i, Err(e)))) => {
                    *errors.entry(e.clone()).or_default() += 1;
                    if errors.len() == 1 && errors[&e] == 1 {
                        eprintln!("first error (BMC {i}): {e}");
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        lat.sort();
        let now = a.sim_pid.and_then(proc_stats);
        let (cpu, rss, hwm) = match (last, now) {
            (Some((t0, _, _)), Some((t1, rss, hwm))) => {
                let secs = last_t.elapsed().as_secs_f64();
                (
                    format!("{:.1}", (t1 - t0) as f64 / ticks_per_s / secs * 100.0),
                    format!("{:.1}", rss as f64 / 1024.0),
                    format!("{:.1}", hwm as f64 / 1024.0),
                )
            }
            _ => ("-".into(), "-".into(), "-".into()),
        };
        last = now;
        last_t = Instant::now();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{round:>5}  {:>5}  {:>6}  {:>6.2}  {:>6.2}  {:>6.1}  {cpu:>9}  {rss:>10}  {hwm:>10}",
            lat.len(),
            errors.values().sum::<usize>(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
        );
        for (e, n) in &errors {
            println!("       {n} x {e}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tasks.abort_all();
    let t = Instant::now();
    for d in &drivers {
        d.close().await;
    }
    println!("closed {} sessions in {:?}", drivers.len(), t.elapsed());
}
