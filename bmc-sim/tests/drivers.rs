//! The agent's own drivers against the simulator: `IpmiBmc` over RMCP+ with
//! cipher suite 3, `RedfishBmc` over HTTPS verifying the simulator's
//! certificate, each command checked on the simulator's side (control port,
//! ipmitool), and every session accounted for at the end.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use rack_agent::bmc::ipmi::commands::BootSelector;
use rack_agent::bmc::ipmi::IpmiBmc;
use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Bmc, BmcError, BootDevice, Endpoint, Power, PowerOp, Protocol, Secret};

fn endpoint(protocol: Protocol, port: u16, password: &str, options: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        protocol,
        address: "127.0.0.1".into(),
        port,
        username: USER.into(),
        password: Secret::new(password),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn ipmi(sim: &Sim, i: usize) -> IpmiBmc {
    let ep = endpoint(Protocol::Ipmi, sim.ipmi_port(i), PASSWORD, &[]);
    IpmiBmc::new(&format!("n{i}"), &ep).expect("driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_driver_commands_reach_the_simulated_chassis() {
    require("ipmitool");
    let sim = Sim::start(1, &[]);
    let bmc = ipmi(&sim, 0);
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.power(PowerOp::On).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    assert_eq!(sim.bmc(0)["power"], "on");

    bmc.set_boot_once(BootDevice::Pxe).await.unwrap();
    let flags = bmc.boot_flags().await.unwrap();
    assert!(flags.valid && !flags.persistent);
    assert_eq!(flags.device, BootSelector::Pxe);
    let (_, out) = sim.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
    assert!(out.contains("Force PXE"), "{out}");

    bmc.power(PowerOp::HardReset).await.unwrap();
    bmc.power(PowerOp::PowerCycle).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    bmc.power(PowerOp::GracefulOff).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.power(PowerOp::On).await.unwrap();
    bmc.power(PowerOp::ForceOff).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.close().await;

    let b = sim.bmc(0);
    let c = &b["counters"];
    // Non-idempotent commands went out exactly once.
    assert_eq!(c["chassis_hard_reset"], 1, "{b}");
    assert_eq!(c["chassis_power_cycle"], 1);
    assert_eq!(c["chassis_power_on"], 2);
    assert_eq!(c["chassis_soft_off"], 1);
    assert_eq!(c["chassis_power_off"], 1);
    assert_eq!(
        c["host_pxe_boots"], 1,
        "the override was used by the reset only"
    );
    // One session for the driver's whole conversation (and ipmitool's one),
    // each closed.
    assert_eq!(c["ipmi_sessions_created"], 2, "{b}");
    assert_eq!(c["ipmi_sessions_closed"], 2);
    assert_eq!(c["ipmi_dropped"], 0);
    assert_eq!(b["ipmi_sessions_open"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_driver_with_a_wrong_password_is_refused_and_leaks_nothing() {
    let sim = Sim::start(1, &[]);
    let ep = endpoint(Protocol::Ipmi, sim.ipmi_port(0), "wrong", &[]);
    let bmc = IpmiBmc::new("n0", &ep).unwrap();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth(_)), "{err}");
    bmc.close().await;
    wait_until(
        "no half-open session",
        std::time::Duration::from_secs(2),
        || sim.bmc(0)["ipmi_handshakes_pending"] == 0,
    );
    assert_eq!(sim.bmc(0)["ipmi_sessions_open"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_ipmi_drivers_polling_leave_no_session_behind() {
    let n = 200;
    let sim = Sim::start(n, &["--power", "alternate"]);
    let drivers: Vec<Arc<IpmiBmc>> = (0..n).map(|i| Arc::new(ipmi(&sim, i))).collect();
    for _round in 0..3 {
        let mut reads = tokio::task::JoinSet::new();
        for (i, d) in drivers.iter().enumerate() {
            let d = d.clone();
            reads.spawn(async move { (i, d.power_state().await) });
        }
        while let Some(r) = reads.join_next().await {
            let (i, r) = r.expect("task");
            let want = if i % 2 == 0 { Power::On } else { Power::Off };
            assert_eq!(r.expect("power state"), want, "BMC {i}");
        }
    }
    let s = sim.summary();
    assert_eq!(
        s["ipmi_sessions_open"], n as u64,
        "one reused session per BMC: {s}"
    );
    for d in &drivers {
        d.close().await;
    }
    let s = sim.summary();
    let t = &s["totals"];
    assert_eq!(t["ipmi_sessions_created"], n as u64, "{s}");
    assert_eq!(t["ipmi_sessions_closed"], n as u64);
    assert_eq!(s["ipmi_sessions_open"], 0);
    assert_eq!(s["ipmi_handshakes_pending"], 0);
    assert_eq!(t["ipmi_dropped"], 0);
}

fn redfish(sim: &Sim, i: usize, password: &str, auth: &str) -> RedfishBmc {
    let cert = sim.cert().display().to_string();
    let ep = endpoint(
        Protocol::Redfish,
        sim.redfish_port(i),
        password,
        &[("ca_file", &cert), ("auth", auth)],
    );
    RedfishBmc::connect(&format!("n{i}"), &ep).expect("driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_driver_with_sessions_over_verified_tls() {
    require("ipmitool");
    let sim = Sim::start(1, &[]);
    let bmc = redfish(&sim, 0, PASSWORD, "session");
    let caps = bmc.capabilities().await.unwrap();
    for op in PowerOp::ALL {
        assert!(caps.supports(op), "{op} in {caps:?}");
    }
    assert_eq!(
        caps.boot_devices,
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cd,
            BootDevice::Bios
        ]
    );
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.power(PowerOp::On).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    let (_, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is on"), "{out}");

    bmc.set_boot_once(BootDevice::Pxe).await.unwrap();
    let (_, out) = sim.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
    assert!(out.contains("Force PXE"), "{out}");
    bmc.power(PowerOp::HardReset).await.unwrap();
    bmc.power(PowerOp::GracefulRestart).await.unwrap();
    bmc.power(PowerOp::PowerCycle).await.unwrap();
    bmc.power(PowerOp::GracefulOff).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.close().await;

    let b = sim.bmc(0);
    let c = &b["counters"];
    assert_eq!(c["redfish_reset_force_restart"], 1, "{b}");
    assert_eq!(c["redfish_reset_graceful_restart"], 1);
    assert_eq!(c["redfish_reset_power_cycle"], 1);
    assert_eq!(c["redfish_reset_graceful_shutdown"], 1);
    assert_eq!(c["redfish_boot_patches"], 1);
    assert_eq!(c["host_pxe_boots"], 1);
    assert_eq!(
        c["redfish_sessions_created"], 1,
        "one session for everything"
    );
    assert_eq!(c["redfish_sessions_deleted"], 1, "deleted at close");
    assert_eq!(b["redfish_sessions_open"], 0);
    assert_eq!(c["redfish_auth_failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_driver_with_basic_auth_and_a_wrong_password() {
    let sim = Sim::start(1, &["--power", "on"]);
    let bmc = redfish(&sim, 0, PASSWORD, "basic");
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    bmc.power(PowerOp::ForceOff).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.close().await;
    assert_eq!(sim.counter(0, "redfish_sessions_created"), 0);

    let bad = redfish(&sim, 0, "wrong", "session");
    let err = bad.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth(_)), "{err}");
    assert_eq!(sim.bmc(0)["redfish_sessions_open"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_drivers_share_one_port_with_system_id() {
    require("curl");
    let n = 20;
    // On the shared port the session limit is the whole service's.
    let sim = Sim::start(
        n,
        &[
            "--redfish-layout",
            "shared",
            "--power",
            "alternate",
            "--redfish-sessions",
            "64",
        ],
    );
    assert_eq!(sim.ready["redfish_layout"], "shared");
    let cert = sim.cert().display().to_string();
    let drivers: Vec<RedfishBmc> = (0..n)
        .map(|i| {
            let id = format!("node{i}");
            let ep = endpoint(
                Protocol::Redfish,
                sim.redfish_base,
                PASSWORD,
                &[("ca_file", &cert), ("auth", "session"), ("system_id", &id)],
            );
            RedfishBmc::connect(&id, &ep).expect("driver")
        })
        .collect();
    for (i, d) in drivers.iter().enumerate() {
        let want = if i % 2 == 0 { Power::On } else { Power::Off };
        assert_eq!(d.power_state().await.unwrap(), want, "system {i}");
    }
    drivers[3].power(PowerOp::On).await.unwrap();
    assert_eq!(sim.bmc(3)["power"], "on");
    assert_eq!(sim.bmc(2)["power"], "on");
    assert_eq!(sim.counter(3, "redfish_reset_on"), 1);
    // curl sees the same system on the same port.
    let (code, _, body) = sim.curl(0, &["-u", "admin:password"], "/redfish/v1/Systems/node3");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"PowerState\":\"On\""), "{body}");
    let (code, _, _) = sim.curl(0, &["-u", "admin:password"], "/redfish/v1/Systems/node20");
    assert_eq!(code, 404);

    // The service keeps the sessions (on BMC 0): one per driver, all deleted.
    assert_eq!(sim.bmc(0)["redfish_sessions_open"], n as u64);
    for d in &drivers {
        d.close().await;
    }
    let b = sim.bmc(0);
    assert_eq!(b["counters"]["redfish_sessions_created"], n as u64, "{b}");
    assert_eq!(b["counters"]["redfish_sessions_deleted"], n as u64);
    assert_eq!(b["redfish_sessions_open"], 0);
}
