//! Issue 11, case 2: the BMC dies while an action runs.
//!
//! The real daemon, through gRPC, drives an `ipmi_sim` BMC (its QEMU VM
//! keeps running when ipmi_sim dies, as a host does when its BMC reboots) or
//! rfsim (whose VMs, and its log, outlive it), and the BMC is killed with
//! SIGKILL at a chosen moment of the action: as the reset reaches it, right
//! after it carried the reset out, between a boot override and the reset.
//! What a control plane checks: the action ends FAILED, saying whether the
//! BMC may have acted; the power reads UNKNOWN, never a stale ON; once the
//! BMC is back the agent reads the power again by itself and a new action
//! works. The BMC side is the judge of what was carried out: ipmi_sim's
//! chassis_control call log and the VM's console, rfsim's log.

mod common;
mod fault_support;
#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;
mod redfish_sim;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start_daemon, write_secret};
use fault_support::relay::{self, Dir, Faults, UdpRelay};
use fault_support::*;
use ipmi_bench::{count, Bench, PASSWORD};
use rack_agent::proto as pb;

const SERVER: &str = "n1";
const BOOT: &str = "SeaBIOS (version";

fn boots(bench: &Bench) -> usize {
    count(&bench.serial_log(0), BOOT)
}

/// SIGKILL to the ipmi_sim whose PID file is in `bmc_dir`, and wait until it
/// is gone (its QEMU lives on).
fn kill_bmc(bmc_dir: &Path) {
    let pid = std::fs::read_to_string(bmc_dir.join("ipmi_sim.pid")).unwrap();
    let pid = pid.trim();
    let _ = Command::new("kill").args(["-KILL", pid]).status();
    for _ in 0..100 {
        // Gone, or a zombie nobody reaped yet: dead either way.
        let dead = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')),
        };
        if dead {
            // start.sh would take a lingering zombie for a running BMC.
            let _ = std::fs::remove_file(bmc_dir.join("ipmi_sim.pid"));
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("ipmi_sim {pid} did not die");
}

/// When, in the exchange of a Chassis Control, the BMC dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// As the request reaches it: the command is never carried out.
    BeforeTheCommand,
    /// Once it carried the command out, before its answer leaves.
    AfterTheCommand,
}

/// The relay's kill switch: [`PASS`], [`ARMED`] (kill the BMC at the next
/// matching Chassis Control), or [`DEAD`] (the BMC was killed: nothing more
/// gets through until the test sets it back to PASS).
const PASS: u8 = 0;
const ARMED: u8 = 1;
const DEAD: u8 = 2;

/// A relay filter that kills the BMC at the first Chassis Control with
/// `action` (3 hard reset, 2 power cycle) once armed.
fn killing_relay_filter(
    bmc_dir: PathBuf,
    action: u8,
    death: Death,
) -> (relay::Filter, Arc<AtomicU8>) {
    let switch = Arc::new(AtomicU8::new(PASS));
    let sw = switch.clone();
    let filter: relay::Filter = Arc::new(move |dir, d| {
        match sw.load(Ordering::SeqCst) {
            DEAD => return false,
            PASS => return true,
            _ => {}
        }
        let hit = match (death, dir) {
            (Death::BeforeTheCommand, Dir::ToBmc) => {
                relay::chassis_control_action(d) == Some(action)
            }
            // The answer to the command (armed: the next Chassis Control answer).
            (Death::AfterTheCommand, Dir::ToDaemon) => {
                relay::ipmi_kind(d).is_some_and(|k| k.is(0x00, 0x02))
            }
            _ => false,
        };
        if hit {
            kill_bmc(&bmc_dir);
            sw.store(DEAD, Ordering::SeqCst);
            return false;
        }
        true
    });
    (filter, switch)
}

struct IpmiCase {
    bench: Bench,
    relay: UdpRelay,
    switch: Arc<AtomicU8>,
    daemon: common::Daemon,
    _dir: tempfile::TempDir,
}

async fn ipmi_case(seed: u64, action: u8, death: Death) -> IpmiCase {
    let bench = Bench::start(1);
    let (filter, switch) = killing_relay_filter(bench.bmc_dir(0), action, death);
    let relay = UdpRelay::start(
        format!("127.0.0.1:{}", bench.port(0)).parse().unwrap(),
        seed,
        Faults::none(),
        filter,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", PASSWORD);
    // Cipher suite 2: the relay reads the commands. Power UNKNOWN after
    // three failed reads, as by default.
    let config = format!(
        "{}{}",
        settings("20s", "20s", 3),
        server(
            SERVER,
            "ipmi",
            relay.port,
            "bmc.pass",
            "cipher_suite = \"2\", timeout = \"500ms\", retries = \"2\""
        )
    );
    let daemon = start_daemon(dir.path(), &config);
    IpmiCase {
        bench,
        relay,
        switch,
        daemon,
        _dir: dir,
    }
}

/// ipmi_sim dies as a hard reset reaches it, or right after it carried it
/// out. Either way the HARD reboot fails within its budget saying the reset
/// may have been carried out and was not re-sent, the power reads UNKNOWN
/// (not the ON it was), the console shows the reset at most once — exactly
/// once when the BMC got it. ipmi_sim restarted: the agent reads ON by itself
/// and a new HARD reboot succeeds with one more reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_bmc_killed_during_a_hard_reset() {
    let seed = Seed::new("fault_bmc_death", "ipmi_bmc_killed_during_a_hard_reset");
    for death in [Death::BeforeTheCommand, Death::AfterTheCommand] {
        let case = ipmi_case(seed.value, 3, death).await;
        let (bench, daemon) = (&case.bench, &case.daemon);
        let report = || {
            format!(
                "{death:?}; relay: {}\n{}\nchassis_control calls:\n{}\ndaemon log:\n{}",
                case.relay.stats.summary(),
                case.relay.stats.history(),
                bench.calls(0),
                ipmi_bench::tail(&daemon.log(), 50)
            )
        };
        let _report = OnFailure(report);
        let mut c = daemon.client().await;
        wait_known(&mut c, SERVER, Duration::from_secs(30)).await;
        let id = start(&mut c, SERVER).await;
        let (a, _) = run(&mut c, id, Duration::from_secs(60)).await;
        assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
        eventually("the first boot", Duration::from_secs(20), || {
            boots(bench) == 1
        })
        .await;
        wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(10)).await;

        case.switch.store(ARMED, Ordering::SeqCst);
        let id = hard_reboot(&mut c, SERVER).await;
        let (a, took) = run(&mut c, id, Duration::from_secs(60)).await;
        assert_eq!(
            state(&a),
            pb::ActionState::Failed,
            "{death:?}: {}",
            story(&a)
        );
        assert!(
            a.message
                .contains("not re-sent because the BMC may have executed it"),
            "{death:?}: {}",
            story(&a)
        );
        assert!(took < Duration::from_secs(20), "{death:?}: {took:?}");
        assert_not_stale(&get_server(&mut c, SERVER).await, &a);
        wait_power(
            &mut c,
            SERVER,
            pb::PowerState::Unknown,
            Duration::from_secs(15),
        )
        .await;
        let resets = bench.calls(0).matches("set reset").count();
        let want = usize::from(death == Death::AfterTheCommand);
        assert_eq!(resets, want, "{death:?}: resets carried out");
        eventually("the reset's boot", Duration::from_secs(20), || {
            boots(bench) == 1 + want
        })
        .await;

        // The BMC comes back (its VM never stopped).
        bench.run_start().expect("restart ipmi_sim");
        case.switch.store(PASS, Ordering::SeqCst);
        wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(30)).await;
        let id = hard_reboot(&mut c, SERVER).await;
        let (a, _) = run(&mut c, id, Duration::from_secs(60)).await;
        assert_eq!(
            state(&a),
            pb::ActionState::Succeeded,
            "{death:?}: {}",
            story(&a)
        );
        eventually("the new reset's boot", Duration::from_secs(20), || {
            boots(bench) == 2 + want
        })
        .await;
        assert_eq!(bench.calls(0).matches("set reset").count(), want + 1);
        assert_no_secret("the daemon's log", &daemon.log(), PASSWORD);
    }
    drop(seed);
}

/// ipmi_sim dies right after carrying out the power cycle of a PXE
/// reinstall. The reinstall fails saying the cycle may have been carried out
/// and was not re-sent; the power reads UNKNOWN; the BMC got the boot device
/// and exactly one power cycle. ipmi_sim restarted: the agent reads the power
/// by itself, and a HARD reboot (allowed from ERROR) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_bmc_killed_during_a_reinstall() {
    let seed = Seed::new("fault_bmc_death", "ipmi_bmc_killed_during_a_reinstall");
    let case = ipmi_case(seed.value, 2, Death::AfterTheCommand).await;
    let (bench, daemon) = (&case.bench, &case.daemon);
    let report = || {
        format!(
            "relay: {}\n{}\nchassis_control calls:\n{}\ndaemon log:\n{}",
            case.relay.stats.summary(),
            case.relay.stats.history(),
            bench.calls(0),
            ipmi_bench::tail(&daemon.log(), 50)
        )
    };
    let _report = OnFailure(report);
    let calls = |what: &str| bench.calls(0).matches(what).count();
    let mut c = daemon.client().await;
    wait_known(&mut c, SERVER, Duration::from_secs(30)).await;
    let id = start(&mut c, SERVER).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(10)).await;

    case.switch.store(ARMED, Ordering::SeqCst);
    let id = reinstall_pxe(&mut c, SERVER).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message.contains("PowerCycle")
            && a.message
                .contains("not re-sent because the BMC may have executed it"),
        "{}",
        story(&a)
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_not_stale(&get_server(&mut c, SERVER).await, &a);
    wait_power(
        &mut c,
        SERVER,
        pb::PowerState::Unknown,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(calls("set boot"), 1, "boot device set once");
    assert_eq!(calls("set power 0"), 1, "one power cycle (its off half)");

    bench.run_start().expect("restart ipmi_sim");
    case.switch.store(PASS, Ordering::SeqCst);
    wait_known(&mut c, SERVER, Duration::from_secs(30)).await;
    let id = hard_reboot(&mut c, SERVER).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(10)).await;
    assert_eq!(calls("set power 0"), 1, "no second power cycle");
    assert_no_secret("the daemon's log", &daemon.log(), PASSWORD);
    drop(seed);
}

// ---------------------------------------------------------------------------
// Redfish: rfsim killed mid-action.

const SYSTEM: &str = "sys1";

/// Times rfsim's log says it accepted a Reset of `kind` (the log outlives
/// restarts; its counters do not).
fn rf_resets_logged(sim: &redfish_sim::Sim, kind: &str) -> usize {
    sim.log()
        .matches(&format!("Reset {kind} requested"))
        .count()
}

async fn rf_case(
    system_knobs: serde_json::Value,
) -> (redfish_sim::Sim, common::Daemon, tempfile::TempDir) {
    use redfish_sim::{Sim, SimOptions};
    let sim = Sim::start(SimOptions {
        power_on: true,
        system_knobs,
        ..SimOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "rf.pass", &sim.password);
    let config = format!(
        "{}{}",
        settings("20s", "10s", 3),
        server(
            SERVER,
            "redfish",
            sim.port,
            "rf.pass",
            &format!(
                "system_id = \"{SYSTEM}\", ca_file = \"{}\", request_timeout = \"2s\", \
                 task_timeout = \"15s\", retries = \"2\"",
                sim.cert().display()
            )
        )
    );
    let daemon = start_daemon(dir.path(), &config);
    (sim, daemon, dir)
}

async fn until_counted(
    sim: &redfish_sim::Sim,
    what: &str,
    get: impl Fn(&serde_json::Value) -> u64,
) {
    let started = std::time::Instant::now();
    while get(&sim.counters().await) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rfsim never counted {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// rfsim accepts a ForceRestart with a task (202) and is killed while the
/// agent follows the task. The HARD reboot fails saying the BMC accepted the
/// reset and then stopped answering, and that it was not re-sent; the power
/// reads UNKNOWN; rfsim's log shows one ForceRestart. rfsim back: the agent
/// reads ON by itself and a new HARD reboot succeeds, confirmed by
/// LastResetTime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_bmc_killed_while_its_reset_task_runs() {
    let seed = Seed::new(
        "fault_bmc_death",
        "redfish_bmc_killed_while_its_reset_task_runs",
    );
    let (sim, daemon, _dir) =
        rf_case(serde_json::json!({"reset_response": 202, "task_min_ms": 4000})).await;
    let report = || {
        format!(
            "rfsim log:\n{}\ndaemon log:\n{}",
            ipmi_bench::tail(&sim.log(), 40),
            ipmi_bench::tail(&daemon.log(), 50)
        )
    };
    let _report = OnFailure(report);
    let mut c = daemon.client().await;
    wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(30)).await;

    let id = hard_reboot(&mut c, SERVER).await;
    until_counted(&sim, "the ForceRestart", |c| {
        c["resets"][SYSTEM]["ForceRestart"].as_u64().unwrap_or(0)
    })
    .await;
    sim.kill();
    let (a, took) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message.contains("accepted") && a.message.contains("not re-sent"),
        "the message must say the BMC accepted the reset and it was not sent again:\n{}",
        story(&a)
    );
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert_not_stale(&get_server(&mut c, SERVER).await, &a);
    wait_power(
        &mut c,
        SERVER,
        pb::PowerState::Unknown,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(rf_resets_logged(&sim, "ForceRestart"), 1);

    // The BMC comes back; the host reads on.
    sim.stop_orphan_vms();
    sim.restart(true);
    wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(30)).await;
    let id = hard_reboot(&mut c, SERVER).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert!(a.message.contains("restart seen"), "{}", story(&a));
    assert_eq!(rf_resets_logged(&sim, "ForceRestart"), 2);
    assert_no_secret("the daemon's log", &daemon.log(), &sim.password);
    drop(seed);
}

/// rfsim is killed after a PXE reinstall set the boot override and before
/// the reset: the reinstall fails at the step the BMC stopped answering,
/// nothing is reset, and the power reads UNKNOWN once the failed reads
/// reach `unknown_after_failures`. rfsim back: the agent recovers by itself
/// and a new reinstall succeeds with one ForceRestart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_bmc_killed_between_the_boot_override_and_the_reset() {
    let seed = Seed::new(
        "fault_bmc_death",
        "redfish_bmc_killed_between_the_boot_override_and_the_reset",
    );
    // Every request to the system takes 1.5 s: time to kill the BMC between
    // the PATCH and what follows it.
    let (sim, daemon, _dir) = rf_case(serde_json::json!({"latency_ms": 1500})).await;
    let report = || {
        format!(
            "rfsim log:\n{}\ndaemon log:\n{}",
            ipmi_bench::tail(&sim.log(), 40),
            ipmi_bench::tail(&daemon.log(), 50)
        )
    };
    let _report = OnFailure(report);
    let mut c = daemon.client().await;
    wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(30)).await;

    let id = reinstall_pxe(&mut c, SERVER).await;
    until_counted(&sim, "the boot override", |c| {
        c["patches_applied"].as_u64().unwrap_or(0)
    })
    .await;
    sim.kill();
    let (a, took) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(sent(&a, "set_boot_pxe"), "{}", story(&a));
    assert!(
        !sent(&a, "hard_reset") && !sent(&a, "power_cycle"),
        "{}",
        story(&a)
    );
    assert!(a.message.contains("cannot reach the BMC"), "{}", story(&a));
    assert!(took < Duration::from_secs(25), "{took:?}");
    wait_power(
        &mut c,
        SERVER,
        pb::PowerState::Unknown,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(rf_resets_logged(&sim, "ForceRestart"), 0);

    sim.stop_orphan_vms();
    sim.restart(true);
    wait_power(&mut c, SERVER, pb::PowerState::On, Duration::from_secs(30)).await;
    let id = reinstall_pxe(&mut c, SERVER).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(60)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert_eq!(rf_resets_logged(&sim, "ForceRestart"), 1);
    assert_no_secret("the daemon's log", &daemon.log(), &sim.password);
    drop(seed);
}
