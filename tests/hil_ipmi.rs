//! Hardware-in-the-loop, daemon level: the real `rack-agent` binary, driven
//! through gRPC, against ipmi_sim BMCs whose power is a QEMU VM. Every effect
//! is checked on the VM itself (QEMU process, serial console, the BMC's call
//! log) or with `ipmitool`, never through the agent's own answers alone.
//! Most VMs boot no OS and ignore ACPI (soft actions end in their fallbacks);
//! the `acpi_guest` tests boot the bench guest (hil-tests/guest), whose console
//! says when it booted and when it shut down cleanly on the power button.
//!
//! The peers must be installed (`hil-tests/ipmi/setup.sh`); when they are not,
//! these tests fail and say so.

mod common;
#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;

use std::time::{Duration, Instant};

use common::*;
use ipmi_bench::*;
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Fast loops for tests: sync every second, short soft-reboot and graceful-stop
/// windows (the VMs have no OS and ignore ACPI).
const SETTINGS: &str = r#"
[sync]
interval = "1s"
jitter = "100ms"

[timeouts]
bmc_command = "10s"
confirm_poll = "200ms"
power_confirm = "30s"
soft_reboot = "3s"
graceful_stop = "3s"
shutdown_grace = "5s"
"#;

fn server(id: &str, port: u16, password_file: &str) -> String {
    format!(
        "[[servers]]\nid = \"{id}\"\nproject = \"p1\"\nprotocol = \"ipmi\"\n\
         address = \"127.0.0.1\"\nport = {port}\nusername = \"admin\"\n\
         password_file = \"{password_file}\"\noptions = {{ timeout = \"300ms\" }}\n\n"
    )
}

/// Waits for an accepted action to end.
async fn act(
    mut c: RackAgentClient<Channel>,
    started: Result<tonic::Response<pb::Action>, tonic::Status>,
    limit: Duration,
) -> pb::Action {
    let a = started.expect("action accepted").into_inner();
    wait_action(&mut c, &a.id, limit).await
}

fn state(a: &pb::Action) -> pb::ActionState {
    pb::ActionState::try_from(a.state).unwrap()
}

/// Everything an action says about itself, for assertions on reasons.
fn story(a: &pb::Action) -> String {
    let mut s = a.message.clone();
    for e in &a.events {
        s.push_str(&format!("\n{} {:?}: {}", e.step, e.phase, e.detail));
    }
    s
}

fn boots(bench: &Bench, i: u16) -> usize {
    count(&bench.serial_log(i), "SeaBIOS (version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_powers_real_vms_through_ipmi() {
    let bench = Bench::start(2);
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", PASSWORD);
    let body = format!(
        "{SETTINGS}{}{}",
        server("n1", bench.port(0), "bmc.pass"),
        server("n2", bench.port(1), "bmc.pass")
    );
    let mut d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    for id in ["n1", "n2"] {
        wait_server(&mut c, id, Duration::from_secs(15), |s| {
            s.power_state == pb::PowerState::Off as i32
        })
        .await;
    }

    // start powers the VM on.
    let a = act(
        c.clone(),
        c.clone()
            .start(admin(pb::StartRequest {
                server_id: "n1".into(),
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    let pid = bench.qemu_pid(0).expect("QEMU runs after start");
    wait_until("the first boot", Duration::from_secs(15), || {
        boots(&bench, 0) == 1
    });

    // HARD reboot resets the running VM: same process, one more boot.
    let reboot = |kind: pb::RebootType| pb::RebootRequest {
        server_id: "n1".into(),
        r#type: kind as i32,
        request_id: String::new(),
    };
    let a = act(
        c.clone(),
        c.clone().reboot(admin(reboot(pb::RebootType::Hard))).await,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    wait_until(
        "a boot after the HARD reboot",
        Duration::from_secs(15),
        || boots(&bench, 0) == 2,
    );
    assert_eq!(bench.qemu_pid(0), Some(pid));

    // SOFT reboot: the ACPI request reaches the VM, nothing powers it off, the
    // agent falls back to HARD and records it.
    let a = act(
        c.clone(),
        c.clone().reboot(admin(reboot(pb::RebootType::Soft))).await,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert!(
        a.events.iter().any(|e| e.step == "fallback_hard"),
        "{}",
        story(&a)
    );
    let calls = std::fs::read_to_string(bench.bmc_dir(0).join("calls.log")).unwrap();
    assert!(calls.contains("set shutdown"), "{calls}");
    wait_until("a boot after the fallback", Duration::from_secs(15), || {
        boots(&bench, 0) == 3
    });

    // stop: graceful, ignored, then forced: the VM is gone.
    let a = act(
        c.clone(),
        c.clone()
            .stop(admin(pb::StopRequest {
                server_id: "n1".into(),
                force: false,
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert!(bench.qemu_pid(0).is_none(), "QEMU still runs after stop");

    // reinstall (PXE) on a server that is off: boot device PXE as ipmitool
    // reports it, VM on, and iPXE on its console.
    let a = act(
        c.clone(),
        c.clone()
            .reinstall(admin(pb::ReinstallRequest {
                server_id: "n2".into(),
                boot_source: Some(pb::reinstall_request::BootSource::Pxe(true)),
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    let (ok, out) = bench.ipmitool(1, &["chassis", "bootparam", "get", "5"]);
    assert!(ok && out.contains("Force PXE"), "{out}");
    assert!(bench.qemu_pid(1).is_some(), "n2 is not running");
    wait_until("iPXE on n2's console", Duration::from_secs(60), || {
        bench.serial_log(1).contains("iPXE")
    });

    // Power changed behind the agent's back: the watch reports it within two
    // poll intervals.
    let mut watch = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["n2".into()],
            after_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let (ok, out) = bench.ipmitool(1, &["chassis", "power", "off"]);
    assert!(ok, "{out}");
    // The clock starts when the VM is really off (the BMC may answer first).
    wait_until("n2's QEMU to exit", Duration::from_secs(10), || {
        bench.qemu_pid(1).is_none()
    });
    let off_at = Instant::now();
    let limit = Duration::from_millis(2 * 1100 + 800);
    loop {
        let next = tokio::time::timeout(limit.saturating_sub(off_at.elapsed()), watch.next()).await;
        let Ok(next) = next else {
            let log = d.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "no power change reported within {limit:?} (two poll intervals) of the VM \
                 going off; daemon log, newest first:\n{}",
                tail.join("\n")
            );
        };
        let ev = next.expect("watch ended").expect("watch error");
        if ev.kind == pb::EventKind::PowerChanged as i32
            && ev.power_state == pb::PowerState::Off as i32
        {
            assert_eq!(ev.cause, "sync");
            break;
        }
    }

    // After the daemon stops, no BMC session is left open.
    drop(watch);
    drop(c);
    let code = d.terminate(Duration::from_secs(15));
    assert!(
        code.is_some_and(|c| c.success()),
        "daemon exit: {code:?}; log:\n{}",
        d.log()
    );
    for i in 0..70 {
        let (ok, out) = bench.ipmitool(i % 2, &["chassis", "power", "status"]);
        assert!(ok, "ipmitool call {i} after the daemon stopped: {out}");
    }
    assert!(
        !d.log().contains(PASSWORD),
        "the password is in the daemon log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bmcs_fail_their_actions_with_reasons_and_the_rest_is_served() {
    let bench = Bench::start(2);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wr0ng-secret-9";
    write_secret(dir.path(), "bmc.pass", PASSWORD);
    write_secret(dir.path(), "wrong.pass", wrong);
    let closed_port = free_ports(1);
    let body = format!(
        "{SETTINGS}{}{}{}{}",
        server("good", bench.port(0), "bmc.pass"),
        server("badpw", bench.port(0), "wrong.pass"),
        server("nobmc", closed_port, "bmc.pass"),
        server("dies", bench.port(1), "bmc.pass"),
    );
    let d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    for id in ["good", "dies"] {
        wait_server(&mut c, id, Duration::from_secs(15), |s| {
            s.power_state == pb::PowerState::Off as i32
        })
        .await;
    }
    // The BMC of "dies" stops answering in the middle of its session.
    bench.kill_ipmi_sim(1);

    let hard = |id: &str| pb::RebootRequest {
        server_id: id.into(),
        r#type: pb::RebootType::Hard as i32,
        request_id: String::new(),
    };
    let mut results = Vec::new();
    for id in ["badpw", "nobmc", "dies"] {
        let started = Instant::now();
        let a = act(
            c.clone(),
            c.clone().reboot(admin(hard(id))).await,
            Duration::from_secs(60),
        )
        .await;
        results.push((id, a, started.elapsed()));
    }
    for (id, a, took) in &results {
        assert_eq!(state(a), pb::ActionState::Failed, "{id}: {}", story(a));
        assert!(*took < Duration::from_secs(20), "{id} took {took:?}");
        let text = story(a);
        assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
        match *id {
            "badpw" => assert!(text.contains("wrong password"), "{id}: {text}"),
            "nobmc" => assert!(
                text.contains(&closed_port.to_string()) && text.contains("nothing answers"),
                "{id}: {text}"
            ),
            "dies" => assert!(
                text.contains(&bench.port(1).to_string()) && text.contains("nothing answers"),
                "{id}: {text}"
            ),
            _ => unreachable!(),
        }
    }
    // The daemon kept serving: the good server starts for real.
    let a = act(
        c.clone(),
        c.clone()
            .start(admin(pb::StartRequest {
                server_id: "good".into(),
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert!(bench.qemu_pid(0).is_some());
    assert!(!d.log().contains(wrong), "the wrong password is in the log");
}

/// For VMs that boot the ACPI guest: windows long enough for a slow (TCG)
/// guest under load to act on the power button, so a fallback would be a bug.
const GUEST_SETTINGS: &str = r#"
[sync]
interval = "1s"
jitter = "100ms"

[timeouts]
bmc_command = "10s"
confirm_poll = "200ms"
power_confirm = "60s"
soft_reboot = "60s"
graceful_stop = "60s"
shutdown_grace = "5s"
"#;

/// A TCG boot to `rack-guest: ready` takes ~5 s alone; tests run in
/// parallel on two cores.
const GUEST_BOOT: Duration = Duration::from_secs(120);

/// A daemon serving one server, "n1", on the bench's first BMC, started
/// through the daemon and booted to `rack-guest: ready`.
async fn daemon_with_a_ready_guest(bench: &Bench, dir: &std::path::Path) -> Daemon {
    write_secret(dir, "bmc.pass", PASSWORD);
    let body = format!(
        "{GUEST_SETTINGS}{}",
        server("n1", bench.port(0), "bmc.pass")
    );
    let d = start_daemon(dir, &body);
    let mut c = d.client().await;
    wait_server(&mut c, "n1", Duration::from_secs(15), |s| {
        s.power_state == pb::PowerState::Off as i32
    })
    .await;
    let a = act(
        c.clone(),
        c.clone()
            .start(admin(pb::StartRequest {
                server_id: "n1".into(),
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    bench.wait_guest_ready(0, 1, GUEST_BOOT);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acpi_guest_graceful_stop_is_a_clean_shutdown_without_forcing() {
    let bench = Bench::start_guest(1);
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_a_ready_guest(&bench, dir.path()).await;
    let c = d.client().await;

    let a = act(
        c.clone(),
        c.clone()
            .stop(admin(pb::StopRequest {
                server_id: "n1".into(),
                force: false,
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    // The evidence: the power seen off, recorded on the wait step.
    assert!(
        a.message.starts_with("powered off (graceful; off after "),
        "{}",
        story(&a)
    );
    assert!(
        a.events
            .iter()
            .any(|e| e.step == "wait_off" && e.detail.starts_with("off after ")),
        "{}",
        story(&a)
    );
    assert!(
        !a.events.iter().any(|e| e.step == "fallback_force_off"),
        "{}",
        story(&a)
    );
    // The guest shut itself down, once; nobody forced the power off.
    assert_eq!(
        bench.clean_shutdowns(0),
        1,
        "one clean shutdown on the console:\n{}",
        bench.serial_log(0)
    );
    assert!(bench.qemu_pid(0).is_none(), "QEMU still runs after stop");
    // (A late answer to the soft-off may make the driver re-send it: the
    // console, not the call count, says how often the guest shut down.)
    let calls = bench.calls(0);
    assert!(count(&calls, "set shutdown") >= 1, "{calls}");
    assert_eq!(count(&calls, "set power 0"), 0, "forced off:\n{calls}");
    let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is off"), "{out}");
    assert_eq!(bench.guest_boots(0), 1, "{}", bench.serial_log(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acpi_guest_soft_reboot_is_one_clean_shutdown_and_one_boot_without_fallback() {
    let bench = Bench::start_guest(1);
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_a_ready_guest(&bench, dir.path()).await;
    let c = d.client().await;
    let before = bench.qemu_pid(0).expect("QEMU runs after start");

    let a = act(
        c.clone(),
        c.clone()
            .reboot(admin(pb::RebootRequest {
                server_id: "n1".into(),
                r#type: pb::RebootType::Soft as i32,
                request_id: String::new(),
            }))
            .await,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    // The evidence: off, then on, each recorded on its wait step.
    assert!(
        a.message
            .starts_with("rebooted (SOFT): the OS shut down (off after "),
        "{}",
        story(&a)
    );
    for (step, seen) in [("wait_off", "off after "), ("wait_on", "on after ")] {
        assert!(
            a.events
                .iter()
                .any(|e| e.step == step && e.detail.starts_with(seen)),
            "{}",
            story(&a)
        );
    }
    assert!(
        !a.events.iter().any(|e| e.step == "fallback_hard"),
        "{}",
        story(&a)
    );
    // On the console: the guest shut down cleanly once, then booted once more.
    bench.wait_guest_ready(0, 2, GUEST_BOOT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let console = bench.serial_log(0);
    assert_eq!(bench.clean_shutdowns(0), 1, "{console}");
    assert_eq!(bench.guest_boots(0), 2, "{console}");
    // Off by the guest, on by the BMC: a new VM process, never a reset.
    let after = bench.qemu_pid(0).expect("QEMU runs after the reboot");
    assert_ne!(after, before, "the VM was not powered off and on");
    // The console is the count that matters: the driver re-sends a soft-off
    // whose answer is late (it is idempotent), and ipmi_sim presses the
    // button again; the guest ignores a press while it shuts down.
    let calls = bench.calls(0);
    assert!(count(&calls, "set shutdown") >= 1, "{calls}");
    assert_eq!(count(&calls, "set reset"), 0, "{calls}");
    assert_eq!(count(&calls, "set power 0"), 0, "forced off:\n{calls}");
}
