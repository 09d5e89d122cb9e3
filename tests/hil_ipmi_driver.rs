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
use rack_agent::bmc::ipmi::{identity, IpmiBmc};
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

/// Offsets in an RMCP+ packet without integrity or encryption (cipher suite
/// 1): the payload type, then the IPMI message from byte 16.
const PAYLOAD_TYPE: usize = 5;
const NETFN: usize = 16 + 1;
const CMD: usize = 16 + 5;
const COMPLETION: usize = 16 + 6;

/// Whether `p` is an IPMI message (not a session set-up one) with this
/// NetFn (requests: even, responses: odd) and command.
fn is_message(p: &[u8], netfn: u8, cmd: u8) -> bool {
    p.len() > CMD && p[PAYLOAD_TYPE] & 0x3f == 0 && p[NETFN] >> 2 == netfn && p[CMD] == cmd
}

/// A UDP relay between the driver and a BMC on `bmc_port`. It reads IPMI
/// messages in the clear, so the session must use cipher suite 1
/// (authentication only). `inspect` sees each datagram, `true` for one from
/// the driver, may change it, and says whether to forward it. Returns the
/// relay's port.
fn relay(bmc_port: u16, mut inspect: impl FnMut(bool, &mut [u8]) -> bool + Send + 'static) -> u16 {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(("127.0.0.1", bmc_port)).unwrap();
    front
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    back.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = front.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut client = None;
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                client = Some(from);
                if inspect(true, &mut buf[..n]) {
                    let _ = back.send(&buf[..n]);
                }
            }
            if let (Ok(n), Some(c)) = (back.recv(&mut buf), client) {
                if inspect(false, &mut buf[..n]) {
                    let _ = front.send_to(&buf[..n], c);
                }
            }
        }
    });
    port
}

/// A relay that drops the BMC's answers to Chassis Control and counts the
/// Chassis Control requests it forwarded. Returns its port and the counter.
fn lossy_relay(bmc_port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let port = relay(bmc_port, move |from_driver, p| {
        if from_driver {
            if is_message(p, 0x00, 0x02) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            true
        } else {
            !is_message(p, 0x01, 0x02)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_gives_power_without_a_marker_and_asks_the_restart_cause_once() {
    use std::sync::{Arc, Mutex};
    let bench = Bench::start(1);
    // Requests for Get System Restart Cause (NetFn Chassis, cmd 07h) and the
    // completion codes of the BMC's answers to it.
    let asked = Arc::new(Mutex::new(0usize));
    let answers: Arc<Mutex<Vec<u8>>> = Arc::default();
    let (a, r) = (asked.clone(), answers.clone());
    let port = relay(bench.port(0), move |from_driver, p| {
        if from_driver && is_message(p, 0x00, 0x07) {
            *a.lock().unwrap() += 1;
        }
        if !from_driver && is_message(p, 0x01, 0x07) && p.len() > COMPLETION {
            r.lock().unwrap().push(p[COMPLETION]);
        }
        true
    });
    let ep = Endpoint {
        port,
        ..bench.endpoint(0, PASSWORD, &[("cipher_suite", "1")])
    };
    let bmc = IpmiBmc::new("n0", &ep).unwrap();
    assert!(!bmc.capabilities().await.unwrap().restart_evidence);

    for i in 0..10 {
        let o = bmc.observe().await.expect("observe");
        assert_eq!(o.power, Power::Off, "observe {i}");
        assert_eq!(o.marker, None, "observe {i}");
    }
    // The power it reports follows the VM, through the same session.
    power_on(&bench, &bmc).await;
    let start = Instant::now();
    loop {
        let o = bmc.observe().await.expect("observe");
        assert_eq!(o.marker, None);
        if o.power == Power::On {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never on");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        *asked.lock().unwrap(),
        1,
        "Get System Restart Cause asked once"
    );
    assert_eq!(
        *answers.lock().unwrap(),
        [0xC1],
        "ipmi_sim answers it with invalid command"
    );
    let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is on"), "{out}");
    bmc.close().await;
}

/// Rewrites the completion code of a cleartext IPMI response in place (and
/// its checksum): a BMC that refuses the command.
fn refuse(p: &mut [u8], cc: u8) {
    let len = u16::from_le_bytes([p[14], p[15]]) as usize;
    let end = 16 + len;
    if end > p.len() || len < 8 {
        return;
    }
    p[COMPLETION] = cc;
    let sum = p[16 + 3..end - 1]
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b));
    p[end - 1] = sum.wrapping_neg();
}

/// An enrolment that fails after the driver opened its session (the engine
/// reads the power once, then drops a driver it refused): whatever the
/// failure, every session the driver opened is closed at the BMC. Counted
/// through a relay: sessions opened = accepted Set Session Privilege Level,
/// closed = accepted Close Session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_refused_after_the_session_opened_closes_it() {
    use std::sync::{Arc, Mutex};
    let bench = Bench::start(1);
    // What the relay does to the BMC's answers to Get Chassis Status: drop
    // them (a timeout), or turn them into "not supported in present state".
    for refuse_status in [false, true] {
        let counts = Arc::new(Mutex::new((0usize, 0usize)));
        let c = counts.clone();
        let port = relay(bench.port(0), move |from_driver, p| {
            if from_driver {
                return true;
            }
            let accepted = p.len() > COMPLETION && p[COMPLETION] == 0;
            if accepted && is_message(p, 0x07, 0x3B) {
                c.lock().unwrap().0 += 1;
            }
            if accepted && is_message(p, 0x07, 0x3C) {
                c.lock().unwrap().1 += 1;
            }
            if is_message(p, 0x01, 0x01) {
                if !refuse_status {
                    return false;
                }
                refuse(p, 0xD5);
            }
            true
        });
        let ep = Endpoint {
            port,
            ..bench.endpoint(
                0,
                PASSWORD,
                &[
                    ("cipher_suite", "1"),
                    ("timeout", "200ms"),
                    ("retries", "1"),
                ],
            )
        };
        let bmc = IpmiBmc::new("n0", &ep).unwrap();
        bmc.capabilities().await.unwrap();
        let err = bmc.power_state().await.unwrap_err();
        if refuse_status {
            assert!(matches!(err, BmcError::Refused(_)), "{err:?}");
            assert!(err.to_string().contains("0xd5"), "{err}");
        } else {
            assert!(matches!(err, BmcError::Timeout(_)), "{err:?}");
        }
        drop(bmc);
        let start = Instant::now();
        loop {
            let (opened, closed) = *counts.lock().unwrap();
            if opened >= 1 && opened == closed {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "refused status {refuse_status}: {opened} session(s) opened, {closed} closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok, "{out}");
}

/// `identity()` (Get Device ID through the driver's session) says what
/// `ipmitool mc info` says of the same BMC: manufacturer, product, firmware
/// revision and IPMI version, read from ipmitool's output, not written here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_says_what_ipmitool_mc_info_says() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);
    // In the session that power reads use, before and after.
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    let got = bmc.identity().await.expect("identity");
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.close().await;

    let (ok, out) = bench.ipmitool(0, &["mc", "info"]);
    assert!(ok, "{out}");
    let mfr: u32 = ipmitool_field(&out, "Manufacturer ID")
        .parse()
        .expect("a decimal manufacturer ID");
    assert_eq!(
        got.bmc_manufacturer.as_deref(),
        Some(identity::manufacturer(mfr).as_str())
    );
    if identity::manufacturer_name(mfr).is_some() {
        // Both name it from the IANA registry.
        assert_eq!(
            got.bmc_manufacturer.as_deref(),
            Some(ipmitool_field(&out, "Manufacturer Name").as_str())
        );
    }
    // "3842 (0x0f02)"
    let product = ipmitool_field(&out, "Product ID");
    let product: u16 = product
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Product ID {product:?}"));
    assert_eq!(got.bmc_model, Some(format!("product {product:#06x}")));
    assert_eq!(
        got.firmware_version,
        Some(ipmitool_field(&out, "Firmware Revision"))
    );
    assert_eq!(got.ipmi_version, Some(ipmitool_field(&out, "IPMI Version")));
    assert_eq!(
        (
            &got.system_manufacturer,
            &got.system_model,
            &got.serial_number,
            &got.bios_version
        ),
        (&None, &None, &None, &None)
    );
}
