//! Hardware-in-the-loop tests of the IPMI driver against ipmi_sim BMCs whose
//! power is a QEMU VM (hil-tests/ipmi). Each test starts its own bench on free
//! UDP ports in a temp dir (tests run in parallel), drives `IpmiBmc` directly,
//! and checks the effect independently of the driver: the QEMU process, QMP
//! `query-status`, the VM's serial log, and `ipmitool -C 3`.
//!
//! The peers must be installed (`hil-tests/ipmi/setup.sh`); when they are not,
//! these tests fail and say so. They never skip.

#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ipmi_bench::*;

use rack_agent::bmc::ipmi::commands::BootSelector;
use rack_agent::bmc::ipmi::IpmiBmc;
use rack_agent::bmc::{Bmc, BmcError, BootDevice, Endpoint, Power, PowerOp, Protocol, Secret};

async fn wait_power(bmc: &IpmiBmc, want: Power) {
    let start = Instant::now();
    loop {
        if bmc.power_state().await.expect("power state") == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "power never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Power on through the driver and wait for a running VM.
async fn power_on(bench: &Bench, bmc: &IpmiBmc) -> u32 {
    bmc.power(PowerOp::On).await.expect("power on");
    wait_until("QEMU to run", Duration::from_secs(15), || {
        bench.qemu_pid(0).is_some() && bench.qmp_status(0).as_deref() == Some("running")
    });
    bench.qemu_pid(0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_and_off_drive_the_vm() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    assert!(bench.qemu_pid(0).is_none());

    power_on(&bench, &bmc).await;
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    let (_, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is on"), "{out}");

    bmc.power(PowerOp::ForceOff).await.expect("power off");
    wait_until("QEMU to exit", Duration::from_secs(10), || {
        bench.qemu_pid(0).is_none()
    });
    wait_power(&bmc, Power::Off).await;
    // Off then at once on must not be lost (the bench waits for QEMU to exit).
    power_on(&bench, &bmc).await;
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_reset_resets_the_running_vm() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    let pid = power_on(&bench, &bmc).await;
    wait_until("SeaBIOS banner", Duration::from_secs(15), || {
        count(&bench.serial_log(0), "SeaBIOS (version") == 1
    });
    bmc.power(PowerOp::HardReset).await.expect("hard reset");
    wait_until("a second boot", Duration::from_secs(15), || {
        count(&bench.serial_log(0), "SeaBIOS (version") == 2
    });
    assert_eq!(
        bench.qemu_pid(0),
        Some(pid),
        "reset keeps the same VM process"
    );
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cycle_restarts_the_vm() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    let pid = power_on(&bench, &bmc).await;
    bmc.power(PowerOp::PowerCycle).await.expect("power cycle");
    wait_until("a new QEMU process", Duration::from_secs(20), || {
        bench.qemu_pid(0).is_some_and(|p| p != pid)
    });
    wait_power(&bmc, Power::On).await;
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_off_without_an_os_changes_nothing() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    let pid = power_on(&bench, &bmc).await;
    bmc.power(PowerOp::GracefulOff)
        .await
        .expect("soft-off accepted");
    // The ACPI power button reached QEMU...
    wait_until("the ACPI request at QEMU", Duration::from_secs(5), || {
        std::fs::read_to_string(bench.bmc_dir(0).join("calls.log"))
            .unwrap_or_default()
            .contains("set shutdown")
    });
    // ...and with no OS nobody acts on it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bench.qemu_pid(0), Some(pid));
    assert_eq!(bench.qmp_status(0).as_deref(), Some("running"));
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_once_is_reported_by_ipmitool_and_the_vm_tries_a_network_boot() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    bmc.set_boot_once(BootDevice::Pxe)
        .await
        .expect("boot once pxe");

    let flags = bmc.boot_flags().await.expect("read boot flags");
    assert_eq!(flags.device, BootSelector::Pxe);
    assert!(!flags.persistent);
    let (ok, out) = bench.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
    assert!(ok, "{out}");
    assert!(out.contains("Force PXE"), "{out}");
    assert!(out.contains("Options apply to only next boot"), "{out}");

    power_on(&bench, &bmc).await;
    wait_until(
        "iPXE on the serial console",
        Duration::from_secs(60),
        || bench.serial_log(0).contains("iPXE"),
    );
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let bench = Bench::start(1);
    let wrong = "not-the-Pa55word";
    let bmc = IpmiBmc::new("n0", &bench.endpoint(0, wrong, &[])).unwrap();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    // The BMC still serves the right password.
    let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unreachable_at_once() {
    require_peers();
    let port = free_ports(1);
    let mut ep = Endpoint {
        protocol: Protocol::Ipmi,
        address: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: Secret::new(PASSWORD),
        options: BTreeMap::new(),
    };
    ep.options.insert("timeout".into(), "300ms".into());
    ep.options.insert("retries".into(), "1".into());
    let bmc = IpmiBmc::new("n0", &ep).unwrap();
    let start = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        start.elapsed() <= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_port_times_out_within_the_configured_budget() {
    // Something holds the port and never answers (a BMC that hangs).
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let mut options = BTreeMap::new();
    options.insert("timeout".to_string(), "200ms".to_string());
    options.insert("retries".to_string(), "2".to_string());
    let ep = Endpoint {
        protocol: Protocol::Ipmi,
        address: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: Secret::new(PASSWORD),
        options,
    };
    let bmc = IpmiBmc::new("n0", &ep).unwrap();
    let start = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, BmcError::Timeout(_)), "{err:?}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // Three attempts, retransmitted.
    sink.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut got = 0;
    while sink.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 3, "one open-session request plus two retransmissions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_killed_mid_session_gives_a_clear_error() {
    let bench = Bench::start(1);
    let mut options = BTreeMap::new();
    options.insert("timeout".to_string(), "300ms".to_string());
    let ep = Endpoint {
        options,
        ..bench.endpoint(0, PASSWORD, &[])
    };
    let bmc = IpmiBmc::new("n0", &ep).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bench.kill_ipmi_sim(0);
    let start = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let text = err.to_string();
    assert!(text.contains(&bench.port(0).to_string()), "{text}");
    // A hard reset is never blindly retried: it fails with the reason.
    let err = bmc.power(PowerOp::HardReset).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_bmc_forgot_is_re_established() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    // Restart the BMC: our session ID means nothing to the new one.
    bench.kill_ipmi_sim(0);
    bench.run_start().expect("restart ipmi_sim");
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    power_on(&bench, &bmc).await;
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sessions_free_the_bmc_for_a_burst_of_70_ipmitool_calls() {
    let bench = Bench::start(1);
    // 40 sessions open at once (ipmi_sim admits ~62), then closed.
    let drivers: Vec<IpmiBmc> = (0..40).map(|_| bench.driver(0)).collect();
    for d in &drivers {
        assert_eq!(d.power_state().await.unwrap(), Power::Off);
    }
    for d in &drivers {
        d.close().await;
    }
    // Twice over, to show nothing leaked.
    for d in &drivers {
        assert_eq!(d.power_state().await.unwrap(), Power::Off);
        d.close().await;
    }
    for i in 0..70 {
        let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
        assert!(
            ok && out.contains("Chassis Power is off"),
            "call {i}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipher_suites_1_2_and_3_work() {
    let bench = Bench::start(1);
    for suite in ["1", "2", "3"] {
        let ep = bench.endpoint(0, PASSWORD, &[("cipher_suite", suite)]);
        let bmc = IpmiBmc::new("n0", &ep).unwrap();
        assert_eq!(
            bmc.power_state().await.unwrap(),
            Power::Off,
            "cipher suite {suite}"
        );
        bmc.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_kept_alive() {
    let bench = Bench::start(1);
    let ep = bench.endpoint(0, PASSWORD, &[("keepalive", "500ms")]);
    let bmc = IpmiBmc::new("n0", &ep).unwrap();
    // ipmi_sim asks chassis_control for the power on every Get Chassis Status.
    let polls = || {
        std::fs::read_to_string(bench.bmc_dir(0).join("calls.log"))
            .unwrap_or_default()
            .matches("get power")
            .count()
    };
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    let before = polls();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let kept = polls() - before;
    assert!((2..=6).contains(&kept), "{kept} keep-alive polls in 2.6 s");
    // Closed: the keep-alive stops.
    bmc.close().await;
    let after_close = polls();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(polls(), after_close);
}

/// A UDP relay between the driver and a BMC that drops the BMC's answers to
/// Chassis Control and counts the Chassis Control requests it forwarded. It
/// reads IPMI messages in the clear, so the session must use cipher suite 1
/// (authentication only). Returns the relay's port and the request counter.
fn lossy_relay(bmc_port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Offsets in an RMCP+ packet without integrity or encryption.
    const PAYLOAD_TYPE: usize = 5;
    const NETFN: usize = 16 + 1;
    const CMD: usize = 16 + 5;
    let is_chassis_control = |p: &[u8], netfn: u8| {
        p.len() > CMD && p[PAYLOAD_TYPE] & 0x3f == 0 && p[NETFN] >> 2 == netfn && p[CMD] == 0x02
    };
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(("127.0.0.1", bmc_port)).unwrap();
    front
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    back.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = front.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        let mut client = None;
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                client = Some(from);
                if is_chassis_control(&buf[..n], 0x00) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let _ = back.send(&buf[..n]);
            }
            if let (Ok(n), Some(c)) = (back.recv(&mut buf), client) {
                if !is_chassis_control(&buf[..n], 0x01) {
                    let _ = front.send_to(&buf[..n], c);
                }
            }
        }
    });
    (port, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_reset_whose_answer_is_lost_is_not_sent_again() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    power_on(&bench, &bmc).await;
    wait_until("SeaBIOS banner", Duration::from_secs(15), || {
        count(&bench.serial_log(0), "SeaBIOS (version") == 1
    });
    bmc.close().await;

    let (relay, forwarded) = lossy_relay(bench.port(0));
    let ep = Endpoint {
        port: relay,
        ..bench.endpoint(
            0,
            PASSWORD,
            &[
                ("cipher_suite", "1"),
                ("timeout", "300ms"),
                ("retries", "2"),
            ],
        )
    };
    let lossy = IpmiBmc::new("n0", &ep).unwrap();
    let start = Instant::now();
    let err = lossy.power(PowerOp::HardReset).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(text.contains("not re-sent"), "{text}");
    assert!(text.contains("power now reads on"), "{text}");
    // One attempt, waited on for the whole budget (3 x 300 ms), then a status read.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(forwarded.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The BMC executed it exactly once: one reset, one more boot.
    let resets = std::fs::read_to_string(bench.bmc_dir(0).join("calls.log"))
        .unwrap()
        .matches("set reset")
        .count();
    assert_eq!(resets, 1);
    wait_until("the second boot", Duration::from_secs(15), || {
        count(&bench.serial_log(0), "SeaBIOS (version") == 2
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&bench.serial_log(0), "SeaBIOS (version"), 2);

    // Power on (idempotent) through the same relay is retransmitted: 3 tries.
    let before = forwarded.load(std::sync::atomic::Ordering::SeqCst);
    let err = lossy.power(PowerOp::On).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let tries = forwarded.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(tries >= 3, "power on sent {tries} times");
    lossy.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_drivers_close_their_sessions_too() {
    let bench = Bench::start(1);
    // 2 x 40 sessions > the ~62 ipmi_sim admits: leaking them would lock out.
    for round in 0..2 {
        let drivers: Vec<IpmiBmc> = (0..40).map(|_| bench.driver(0)).collect();
        for d in &drivers {
            let state = d.power_state().await;
            assert_eq!(state, Ok(Power::Off), "round {round}");
        }
        drop(drivers);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_names_the_completion_code() {
    // No power program: ipmi_sim answers power on with 0xCC.
    let bench = Bench::start_with(1, "none");
    let bmc = bench.driver(0);
    let err = bmc.power(PowerOp::On).await.unwrap_err();
    assert_eq!(
        err,
        BmcError::Refused(format!(
            "127.0.0.1:{}: Chassis Control: invalid data field in request \
             (completion code 0xcc)",
            bench.port(0)
        ))
    );
    // A refusal is an answer: the session stays and still works.
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_bmc_is_reached_over_ipv6() {
    let bench = Bench::start_at(1, "qemu", "::1");
    let bmc = bench.driver(0);
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    power_on(&bench, &bmc).await;
    let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is on"), "{out}");
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_once_then_a_cycle_of_a_running_vm_boots_from_the_network_once() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    let pid = power_on(&bench, &bmc).await;
    bmc.set_boot_once(BootDevice::Pxe)
        .await
        .expect("boot once pxe");
    bmc.power(PowerOp::PowerCycle).await.expect("power cycle");
    wait_until("a new QEMU process", Duration::from_secs(20), || {
        bench.qemu_pid(0).is_some_and(|p| p != pid)
    });
    wait_until(
        "iPXE on the serial console",
        Duration::from_secs(60),
        || bench.serial_log(0).contains("iPXE"),
    );
    // The next boot after that is a normal one again.
    let pid = bench.qemu_pid(0).unwrap();
    bmc.power(PowerOp::PowerCycle).await.expect("second cycle");
    wait_until("another QEMU process", Duration::from_secs(20), || {
        bench.qemu_pid(0).is_some_and(|p| p != pid)
    });
    let boots = std::fs::read_to_string(bench.bmc_dir(0).join("boots.log")).unwrap();
    assert_eq!(
        boots.lines().collect::<Vec<_>>(),
        ["default", "pxe", "default"],
        "boot devices of the three boots"
    );
    bmc.close().await;
}
