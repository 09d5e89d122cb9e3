//! The control interface: plain HTTP on a loopback port, for benchmarks and
//! tests to read what the clients did and to act as someone at the rack.
//!
//! - `GET /summary`: totals over all BMCs (every counter summed), sessions
//!   open now, hosts on/off;
//! - `GET /bmcs/{i}`: one BMC (power, boot override, restart cause, sessions
//!   open, counters); `GET /bmcs`: all of them, as an array;
//! - `POST /bmcs/{i}/power/on|off`, `POST /all/power/on|off`: out-of-band
//!   power, at once (no delay, not counted as a client command).
//!
//! Sessions past their timeout are expired before anything is read, so a
//! count of open sessions is exact without traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

use crate::ipmi::session::Stage;
use crate::state::Bmc;
use crate::Sim;

pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::bind(addr).await?)
}

pub fn serve(sim: Arc<Sim>, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let sim = sim.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let sim = sim.clone();
                    async move {
                        let (status, body) = route(&sim, req.method(), req.uri().path());
                        let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("Content-Type", "application/json")
                                .body(Full::new(Bytes::from(bytes)))
                                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn route(sim: &Sim, method: &Method, path: &str) -> (StatusCode, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let bmc = |s: &str| s.parse::<usize>().ok().filter(|i| *i < sim.bmcs.len());
    match (method, parts.as_slice()) {
        (&Method::GET, ["summary"]) => (StatusCode::OK, summary(sim)),
        (&Method::GET, ["bmcs"]) => (
            StatusCode::OK,
            Value::Array(sim.bmcs.iter().map(|b| view(sim, b)).collect()),
        ),
        (&Method::GET, ["bmcs", i]) => match bmc(i) {
            Some(i) => (StatusCode::OK, view(sim, &sim.bmcs[i])),
            None => not_found(path),
        },
        (&Method::POST, ["bmcs", i, "power", state @ ("on" | "off")]) => match bmc(i) {
            Some(i) => {
                force(&sim.bmcs[i], *state == "on");
                (StatusCode::OK, view(sim, &sim.bmcs[i]))
            }
            None => not_found(path),
        },
        (&Method::POST, ["all", "power", state @ ("on" | "off")]) => {
            for b in &sim.bmcs {
                force(b, *state == "on");
            }
            (StatusCode::OK, summary(sim))
        }
        _ => not_found(path),
    }
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({ "error": format!("no such thing: {path}") }),
    )
}

fn force(b: &Bmc, on: bool) {
    let mut st = b.lock();
    let st = &mut *st;
    st.host.force(on, &mut st.c);
}

/// One BMC as the control interface shows it.
pub fn view(sim: &Sim, b: &Bmc) -> Value {
    let now = Instant::now();
    let mut st = b.lock();
    let st = &mut *st;
    st.expire(now, &sim.limits);
    let on = st.host.settle(now, &mut st.c);
    let active = st.ipmi.active();
    let boot = st.host.boot;
    json!({
        "index": b.index,
        "ipmi_port": sim.ipmi_base.map(|p| p as usize + b.index),
        "redfish_port": sim.redfish_port(b.index),
        "power": if on { "on" } else { "off" },
        "restart_cause": st.host.restart_cause,
        "last_reset_time": humantime::format_rfc3339_seconds(st.host.last_reset).to_string(),
        "last_boot_device": st.host.last_boot_device,
        "boot_flags": {
            "valid": boot.valid(),
            "persistent": boot.persistent(),
            "efi": boot.efi(),
            "device": crate::state::BootFlags::device_name(boot.device()),
        },
        "ipmi_sessions_open": active,
        "ipmi_handshakes_pending": st.ipmi.list.iter().filter(|s| s.stage != Stage::Active).count(),
        "ipmi_session_privileges": st.ipmi.list.iter().filter(|s| s.stage == Stage::Active).map(|s| s.priv_level).collect::<Vec<_>>(),
        "redfish_sessions_open": st.redfish.list.len(),
        "counters": serde_json::to_value(&st.c).unwrap_or(Value::Null),
    })
}

/// Every counter summed over all BMCs, and what is open now.
pub fn summary(sim: &Sim) -> Value {
    let now = Instant::now();
    let mut totals: Map<String, Value> = Map::new();
    let (mut on, mut ipmi_open, mut pending, mut rf_open) = (0u64, 0u64, 0u64, 0u64);
    for b in &sim.bmcs {
        let mut st = b.lock();
        let st = &mut *st;
        st.expire(now, &sim.limits);
        if st.host.settle(now, &mut st.c) {
            on += 1;
        }
        let active = st.ipmi.active() as u64;
        ipmi_open += active;
        pending += st.ipmi.list.len() as u64 - active;
        rf_open += st.redfish.list.len() as u64;
        if let Ok(Value::Object(m)) = serde_json::to_value(&st.c) {
            for (k, v) in m {
                let add = v.as_u64().unwrap_or(0);
                let e = totals.entry(k).or_insert(Value::from(0u64));
                *e = Value::from(e.as_u64().unwrap_or(0) + add);
            }
        }
    }
    json!({
        "count": sim.bmcs.len(),
        "uptime_ms": sim.started.elapsed().as_millis() as u64,
        "ipmi_base": sim.ipmi_base,
        "redfish_base": sim.redfish_base,
        "power_on": on,
        "power_off": sim.bmcs.len() as u64 - on,
        "ipmi_sessions_open": ipmi_open,
        "ipmi_handshakes_pending": pending,
        "redfish_sessions_open": rf_open,
        "totals": totals,
    })
}
