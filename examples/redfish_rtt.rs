//! Round-trip time per Redfish driver action against a running BMC or
//! emulator: prints n / mean / p50 / p95 / max per action. A benchmark, not a
//! test. Power commands are sent as-is, so point it at a bench system only.
//!
//! ```text
//! hil-tests/redfish/start.sh /tmp/rfb 18443
//! cargo run --release --example redfish_rtt -- 127.0.0.1 18443 /tmp/rfb SYSTEM_ID [ROUNDS]
//! ```
//! DIR is a `start.sh` directory (password, cert.pem); user `admin`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Bmc, BootDevice, Endpoint, PowerOp, Protocol, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    let pct = |p: f64| ms(v[((v.len() - 1) as f64 * p).round() as usize]);
    println!(
        "{name:<28} n={:<3} mean={mean:>7.1} ms  p50={:>7.1} ms  p95={:>7.1} ms  max={:>7.1} ms",
        v.len(),
        pct(0.5),
        pct(0.95),
        ms(*v.last().unwrap())
    );
}

/// Serves a small file for InsertMedia on 127.0.0.1; returns its URL.
async fn image_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = b"rtt image";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/rtt.iso")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: redfish_rtt ADDRESS PORT BENCH_DIR SYSTEM_ID [ROUNDS]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[3]);
    let rounds: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mut options = BTreeMap::new();
    options.insert("system_id".to_string(), args[4].clone());
    options.insert(
        "ca_file".to_string(),
        dir.join("cert.pem").display().to_string(),
    );
    let ep = Endpoint {
        protocol: Protocol::Redfish,
        address: args[1].clone(),
        port: args[2].parse()?,
        username: "admin".into(),
        password: Secret::new(std::fs::read_to_string(dir.join("password"))?.trim()),
        options,
    };

    let mut discovery = Vec::new();
    for _ in 0..rounds.min(5) {
        let bmc = RedfishBmc::connect("rtt", &ep)?;
        let t = Instant::now();
        bmc.capabilities().await?;
        discovery.push(t.elapsed());
    }
    stats("discovery (first call)", discovery);

    let bmc = RedfishBmc::connect("rtt", &ep)?;
    bmc.capabilities().await?;
    let url = image_server().await;
    let mut results: Vec<(&str, Vec<Duration>)> = Vec::new();
    macro_rules! measure {
        ($name:expr, $call:expr) => {{
            let mut v = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                $call.await?;
                v.push(t.elapsed());
            }
            results.push(($name, v));
        }};
    }
    measure!("power_state (GET)", bmc.power_state());
    measure!("power On", bmc.power(PowerOp::On));
    measure!("power ForceOff", bmc.power(PowerOp::ForceOff));
    measure!("power GracefulShutdown", bmc.power(PowerOp::GracefulOff));
    measure!("power ForceRestart", bmc.power(PowerOp::HardReset));
    measure!("power GracefulRestart", bmc.power(PowerOp::GracefulRestart));
    measure!(
        "set_boot_once Pxe (GET+PATCH)",
        bmc.set_boot_once(BootDevice::Pxe)
    );
    let mut ins = Vec::new();
    let mut ej = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        bmc.insert_media(&url).await?;
        ins.push(t.elapsed());
        let t = Instant::now();
        bmc.eject_media().await?;
        ej.push(t.elapsed());
    }
    results.push(("insert_media", ins));
    results.push(("eject_media (GET+POST)", ej));
    for (name, v) in results {
        stats(name, v);
    }
    bmc.close().await;
    Ok(())
}
