//! Issue 11, case 3: a lying or broken Redfish BMC.
//!
//! rfsim (hil-tests/redfish-sim) with its fault knobs: HTTP 500 to
//! everything, an HTML page where JSON should be, JSON cut in half (framed
//! right, or the connection closed early), a 202 task that never ends, a
//! PowerState that never changes, a redirect to another host, a BMC that
//! accepts the connection and says nothing (no TLS handshake, or no answer
//! to a request). The real daemon drives it through gRPC; each fault must end
//! in one specific failure that names it, within the configured timeouts,
//! with no panic, no hang, and no worker held up for another server (a
//! second, healthy rfsim is served meanwhile). rfsim's counters and boots
//! are the judge of what was carried out.

mod common;
mod fault_support;
#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;
mod redfish_sim;

use std::time::{Duration, Instant};

use common::{admin, start_daemon, write_secret, Daemon};
use fault_support::*;
use rack_agent::proto as pb;
use redfish_sim::{Sim, SimOptions};
use serde_json::{json, Value};

const LIAR: &str = "liar";
const HEALTHY: &str = "healthy";
const SYSTEM: &str = "sys1";
/// The driver's budgets in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const TASK_TIMEOUT: Duration = Duration::from_secs(4);
/// `power_confirm` (and `graceful_stop`) in these tests.
const POWER_CONFIRM: Duration = Duration::from_secs(5);
/// `timeouts.bmc_command` in these tests (unless a test says otherwise).
const BMC_COMMAND: Duration = Duration::from_secs(10);
/// What an upper bound on an action's time allows beyond its budget: the
/// machine is shared with compilers and other tests, so the bounds say "no
/// hang, no retry loop", not "fast".
const SLACK: Duration = Duration::from_secs(10);

fn redfish_server(id: &str, sim: &Sim, password_file: &str, task_timeout: Duration) -> String {
    server(
        id,
        "redfish",
        sim.port,
        password_file,
        &format!(
            "system_id = \"{SYSTEM}\", ca_file = \"{}\", request_timeout = \"2s\", \
             task_timeout = \"{}s\", retries = \"1\"",
            sim.cert().display(),
            task_timeout.as_secs()
        ),
    )
}

/// Two rfsims, each one BMC with a powered-on OS-less VM, and a daemon that
/// controls both: `liar` gets the knobs, `healthy` must be served meanwhile.
struct Bench {
    liar: Sim,
    healthy: Sim,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start(system_knobs: Value) -> (Bench, Client) {
        Bench::start_with(system_knobs, TASK_TIMEOUT, BMC_COMMAND).await
    }

    /// As `start`, with the liar's `task_timeout` and the daemon's
    /// `timeouts.bmc_command`.
    async fn start_with(
        system_knobs: Value,
        liar_task_timeout: Duration,
        bmc_command: Duration,
    ) -> (Bench, Client) {
        let liar = Sim::start(SimOptions {
            power_on: true,
            system_knobs,
            ..SimOptions::default()
        });
        let healthy = Sim::start(SimOptions {
            power_on: true,
            ..SimOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), "liar.pass", &liar.password);
        write_secret(dir.path(), "healthy.pass", &healthy.password);
        let config = format!(
            "{}{}{}",
            settings(&format!("{}s", bmc_command.as_secs()), "5s", 3),
            redfish_server(LIAR, &liar, "liar.pass", liar_task_timeout),
            redfish_server(HEALTHY, &healthy, "healthy.pass", TASK_TIMEOUT)
        );
        let daemon = start_daemon(dir.path(), &config);
        let mut c = daemon.client().await;
        wait_power(&mut c, LIAR, pb::PowerState::On, Duration::from_secs(30)).await;
        wait_power(&mut c, HEALTHY, pb::PowerState::On, Duration::from_secs(30)).await;
        let b = Bench {
            liar,
            healthy,
            daemon,
            _dir: dir,
        };
        (b, c)
    }

    fn report(&self) -> String {
        format!(
            "liar's rfsim log:\n{}\ndaemon log:\n{}",
            ipmi_bench::tail(&self.liar.log(), 30),
            ipmi_bench::tail(&self.daemon.log(), 50)
        )
    }

    /// A HARD reboot of the healthy server, while the liar misbehaves:
    /// it succeeds (a fresh read of its power too).
    async fn healthy_still_served(&self, c: &mut Client) {
        let id = hard_reboot(c, HEALTHY).await;
        let (a, took) = run(c, id, Duration::from_secs(60)).await;
        assert_eq!(
            state(&a),
            pb::ActionState::Succeeded,
            "the healthy server, after {took:?}: {}",
            story(&a)
        );
        let read = c
            .get_power_state(admin(pb::GetPowerStateRequest {
                server_id: HEALTHY.into(),
                refresh: true,
            }))
            .await
            .expect("a fresh read of the healthy server")
            .into_inner();
        assert_eq!(read.power_state, pb::PowerState::On as i32, "{read:?}");
    }

    /// Nothing panicked, the daemon still answers, and neither BMC's
    /// password is in its log or in the liar's action history.
    async fn no_panic(&self, c: &mut Client) {
        let log = self.daemon.log();
        assert!(!log.contains("panicked"), "{log}");
        get_server(c, LIAR).await;
        let history = format!(
            "{:?}",
            c.list_actions(admin(pb::ListActionsRequest {
                server_id: LIAR.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
        );
        for pw in [&self.liar.password, &self.healthy.password] {
            assert_no_secret("the daemon's log", &log, pw);
            assert_no_secret("the liar's action history", &history, pw);
        }
    }

    async fn resets(&self, kind: &str) -> u64 {
        self.liar.counters().await["resets"][SYSTEM][kind]
            .as_u64()
            .unwrap_or(0)
    }

    async fn boots(&self) -> usize {
        self.liar.state(SYSTEM).await["boots"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// HTTP 500 to every request: the HARD reboot fails at its first read,
/// naming the status and the BMC's message; nothing is reset; the power
/// becomes UNKNOWN with that error; once the BMC heals, the agent reads ON
/// by itself and a HARD reboot works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_server_errors() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    b.liar.set_knobs(SYSTEM, json!({"status": 500})).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message
            .contains("read_power failed: the BMC refused the command: HTTP 500 on GET")
            && a.message.contains("fault knob 'status'"),
        "{}",
        story(&a)
    );
    assert!(took < REQUEST_TIMEOUT + SLACK, "{took:?}");
    assert_eq!(b.resets("ForceRestart").await, 0);
    wait_power(
        &mut c,
        LIAR,
        pb::PowerState::Unknown,
        Duration::from_secs(15),
    )
    .await;
    let srv = get_server(&mut c, LIAR).await;
    assert!(srv.bmc_error.contains("HTTP 500"), "{srv:?}");
    b.healthy_still_served(&mut c).await;

    b.liar.set_knobs(SYSTEM, json!({"status": null})).await;
    wait_power(&mut c, LIAR, pb::PowerState::On, Duration::from_secs(15)).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert_eq!(b.resets("ForceRestart").await, 1);
    b.no_panic(&mut c).await;
}

/// An HTML page (a login portal, a proxy's error page) with 200 and
/// `text/html` where Redfish JSON should be: the HARD reboot fails naming
/// the content type and what the page begins with. JSON labelled with
/// another content type (`text/plain`) is read as JSON: many BMCs label
/// their answers loosely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    b.liar
        .set_knobs(SYSTEM, json!({"content_type": "text/plain"}))
        .await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert_eq!(b.resets("ForceRestart").await, 1);

    b.liar
        .set_knobs(SYSTEM, json!({"content_type": null, "body": "html"}))
        .await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message.contains("read_power failed")
            && a.message.contains("Content-Type text/html")
            && a.message.contains("<!DOCTYPE html>"),
        "{}",
        story(&a)
    );
    assert!(took < REQUEST_TIMEOUT + SLACK, "{took:?}");
    assert_eq!(b.resets("ForceRestart").await, 1);
    b.healthy_still_served(&mut c).await;
    b.no_panic(&mut c).await;
}

/// JSON cut in half, in a well-framed answer or by a connection that closes
/// before the announced length: the HARD reboot fails at its first read,
/// saying the JSON ends early or the exchange broke off; nothing is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    for (knob, says) in [
        ("truncated", "the JSON ends early"),
        ("short_read", "the exchange broke off"),
    ] {
        b.liar.set_knobs(SYSTEM, json!({"body": knob})).await;
        let id = hard_reboot(&mut c, LIAR).await;
        let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
        assert_eq!(state(&a), pb::ActionState::Failed, "{knob}: {}", story(&a));
        assert!(
            a.message.contains("read_power failed") && a.message.contains(says),
            "{knob}: {}",
            story(&a)
        );
        assert!(took < REQUEST_TIMEOUT * 2 + SLACK, "{knob}: {took:?}");
        assert_eq!(b.resets("ForceRestart").await, 0, "{knob}");
        // The failed HARD reboot leaves the server in ERROR; HARD is allowed.
    }
    b.healthy_still_served(&mut c).await;
    b.liar.set_knobs(SYSTEM, json!({"body": null})).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    b.no_panic(&mut c).await;
}

/// A 202 task that never ends, for a HARD reboot (knob task_stuck: the
/// ForceRestart is accepted, nothing happens, its task stays Running): the
/// action fails after `task_timeout` saying the reset was accepted, its task
/// never finished and it was not re-sent; the power reads UNKNOWN, since the
/// BMC may still act; nothing was reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_task_that_never_ends() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    let boots = b.boots().await;
    b.liar.set_knobs(SYSTEM, json!({"task_stuck": true})).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message
            .contains("Reset ForceRestart was accepted (HTTP 202)")
            && a.message.contains("still Running after 4s")
            && a.message.contains("not re-sent"),
        "{}",
        story(&a)
    );
    assert!(
        took >= TASK_TIMEOUT - Duration::from_secs(1) && took < TASK_TIMEOUT + SLACK,
        "{took:?}"
    );
    assert_not_stale(&get_server(&mut c, LIAR).await, &a);
    assert_eq!(b.resets("ForceRestart").await, 1);
    assert_eq!(b.boots().await, boots, "task_stuck does nothing");
    b.healthy_still_served(&mut c).await;

    b.liar.set_knobs(SYSTEM, json!({"task_stuck": false})).await;
    wait_power(&mut c, LIAR, pb::PowerState::On, Duration::from_secs(15)).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert_eq!(b.boots().await, boots + 1);
    b.no_panic(&mut c).await;
}

/// A 202 task that never ends, for a graceful stop: every reset is answered
/// with a task, and the VM has no OS to act on the power button, so the
/// GracefulShutdown's task stays Running, as on a real server. The stop
/// falls back to a forced off after `graceful_stop`, as it does without
/// tasks, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_task_that_never_ends() {
    let (b, mut c) = Bench::start(json!({"reset_response": 202, "task_min_ms": 0})).await;
    let _report = OnFailure(|| b.report());
    let id = stop(&mut c, LIAR, false).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert!(
        a.message.contains("so the power was forced off"),
        "{}",
        story(&a)
    );
    assert!(took < POWER_CONFIRM * 2 + SLACK, "{took:?}");
    assert_eq!(b.liar.power_state(SYSTEM).await, "Off");
    let counted = b.liar.counters().await["resets"][SYSTEM].clone();
    assert_eq!(counted["GracefulShutdown"], 1, "{counted}");
    assert_eq!(counted["ForceOff"], 1, "{counted}");
    b.healthy_still_served(&mut c).await;
    b.no_panic(&mut c).await;
}

/// A BMC that carries a ForceRestart out and never answers the POST (knob
/// reset_unanswered): the HARD reboot fails after `request_timeout` saying
/// the reset got no answer and was not re-sent because the BMC may have
/// carried it out; the power is not the stale ON; the BMC reset exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_carried_out_and_never_answered() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    let boots = b.boots().await;
    b.liar
        .set_knobs(SYSTEM, json!({"reset_unanswered": true}))
        .await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message.contains("hard_reset failed")
            && a.message.contains("within 2s")
            && a.message
                .contains("not re-sent because the BMC may have executed it"),
        "{}",
        story(&a)
    );
    assert!(took < REQUEST_TIMEOUT + SLACK, "{took:?}");
    assert_not_stale(&get_server(&mut c, LIAR).await, &a);
    assert_eq!(b.resets("ForceRestart").await, 1);
    assert_eq!(b.boots().await, boots + 1, "the reset was carried out once");
    b.healthy_still_served(&mut c).await;
    b.liar
        .set_knobs(SYSTEM, json!({"reset_unanswered": false}))
        .await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    assert_eq!(b.resets("ForceRestart").await, 2);
    b.no_panic(&mut c).await;
}

/// A PowerState that never changes (knob power_state "On"): a forced stop
/// is accepted and the VM goes off, but the BMC keeps saying On; the stop
/// fails after `power_confirm` saying the BMC did not report power off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_state_that_never_changes() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    b.liar.set_knobs(SYSTEM, json!({"power_state": "On"})).await;
    let id = stop(&mut c, LIAR, true).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message
            .contains("the BMC did not report power off within 5s"),
        "{}",
        story(&a)
    );
    assert!(
        took >= POWER_CONFIRM - Duration::from_secs(1) && took < POWER_CONFIRM + SLACK,
        "{took:?}"
    );
    assert!(
        b.liar.state(SYSTEM).await["qemu_pid"].is_null(),
        "the VM is off"
    );
    assert_eq!(b.liar.counters().await["resets"][SYSTEM]["ForceOff"], 1);
    b.healthy_still_served(&mut c).await;
    b.no_panic(&mut c).await;
}

/// A redirect (307) of every request to another host: the HARD reboot fails
/// naming the redirect and where it pointed; redirects are not followed, so
/// nothing ever connects to the other host — the credentials stay home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    // "Another host": a listener on another loopback address that counts
    // whoever connects.
    let elsewhere = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!(
        "https://127.0.0.2:{}",
        elsewhere.local_addr().unwrap().port()
    );
    b.liar.set_knobs(SYSTEM, json!({"redirect": target})).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message.contains("HTTP 307")
            && a.message
                .contains(&format!("{target}/redfish/v1/Systems/{SYSTEM}"))
            && a.message.contains("not followed"),
        "{}",
        story(&a)
    );
    assert!(took < REQUEST_TIMEOUT + SLACK, "{took:?}");
    assert_eq!(b.resets("ForceRestart").await, 0);
    b.healthy_still_served(&mut c).await;
    assert!(
        elsewhere.accept().is_err(),
        "something connected to the host the BMC redirected to"
    );
    b.no_panic(&mut c).await;
}

/// A BMC that accepts the connection and says nothing. On a connection it
/// already has (knob hang: the request is read, never answered): the HARD
/// reboot fails after `request_timeout` saying the BMC did not answer. On
/// new connections (knob silent_ms: not even the TLS handshake): a fresh
/// power read is refused as UNAVAILABLE within the timeout, a HARD reboot
/// fails the same way, and the healthy server is served meanwhile. When the
/// silence ends, the agent reads the power by itself and a HARD reboot works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_that_accepts_and_says_nothing() {
    let (b, mut c) = Bench::start(json!({})).await;
    let _report = OnFailure(|| b.report());
    b.liar.set_knobs(SYSTEM, json!({"hang": true})).await;
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message
            .contains("read_power failed: BMC did not answer within 2s"),
        "{}",
        story(&a)
    );
    assert!(took < REQUEST_TIMEOUT * 2 + SLACK, "{took:?}");
    b.healthy_still_served(&mut c).await;
    b.liar.set_knobs(SYSTEM, json!({"hang": false})).await;
    wait_power(&mut c, LIAR, pb::PowerState::On, Duration::from_secs(15)).await;

    // Silent for 25 s from now (room for the checks below on a busy
    // machine); the control endpoint is silent too.
    let silence = Duration::from_secs(25);
    b.liar
        .set_bmc_knobs(json!({"silent_ms": silence.as_millis() as u64}))
        .await;
    let silent_since = Instant::now();
    let started = Instant::now();
    let refreshed = c
        .get_power_state(admin(pb::GetPowerStateRequest {
            server_id: LIAR.into(),
            refresh: true,
        }))
        .await;
    let took = started.elapsed();
    let status = refreshed.expect_err("a fresh read of a silent BMC");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("did not answer"), "{status:?}");
    assert!(took < REQUEST_TIMEOUT * 2 + SLACK, "{took:?}");
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, took) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(a.message.contains("did not answer within"), "{}", story(&a));
    assert!(took < REQUEST_TIMEOUT * 2 + SLACK, "{took:?}");
    b.healthy_still_served(&mut c).await;
    wait_power(
        &mut c,
        LIAR,
        pb::PowerState::Unknown,
        Duration::from_secs(15),
    )
    .await;

    let left = silence.saturating_sub(silent_since.elapsed());
    tokio::time::sleep(left).await;
    wait_power(&mut c, LIAR, pb::PowerState::On, Duration::from_secs(20)).await;
    assert!(
        b.liar.counters().await["faults"]["silent"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let id = hard_reboot(&mut c, LIAR).await;
    let (a, _) = run(&mut c, id, Duration::from_secs(30)).await;
    assert_eq!(state(&a), pb::ActionState::Succeeded, "{}", story(&a));
    b.no_panic(&mut c).await;
}

/// No worker held up for another server, and the agent's own deadline
/// told apart from a silent BMC. The liar's ForceRestart is accepted with a
/// task that never ends; its driver would follow the task for 60 s, longer
/// than the daemon's `timeouts.bmc_command` (20 s here). Meanwhile a HARD
/// reboot and a fresh power read of the healthy server succeed, and the
/// liar's action is still running when they are done. The liar's action
/// then fails when `bmc_command` cuts it, saying so — not "did not answer":
/// the BMC answered, and may be carrying the reset out — and that the reset
/// was not re-sent; the power is not the stale ON; the liar reset once.
/// (Found: the message was a bare "BMC did not answer within 20s".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_bmc_holds_up_no_other_server() {
    let bmc_command = Duration::from_secs(20);
    let (b, mut c) = Bench::start_with(json!({}), Duration::from_secs(60), bmc_command).await;
    let _report = OnFailure(|| b.report());
    b.liar.set_knobs(SYSTEM, json!({"task_stuck": true})).await;
    let stuck = hard_reboot(&mut c, LIAR).await;
    let started = Instant::now();
    while b.resets("ForceRestart").await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the liar never got its ForceRestart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    b.healthy_still_served(&mut c).await;
    let a = c
        .get_action(admin(pb::GetActionRequest { id: stuck.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&a),
        pb::ActionState::Running,
        "the liar's action after {:?} (bmc_command {bmc_command:?}): {}",
        started.elapsed(),
        story(&a)
    );

    let (a, _) = run(&mut c, stuck, bmc_command + SLACK * 2).await;
    assert_eq!(state(&a), pb::ActionState::Failed, "{}", story(&a));
    assert!(
        a.message
            .contains("hard_reset failed: no complete answer within 20s (timeouts.bmc_command)")
            && a.message
                .contains("not re-sent because the BMC may have executed it"),
        "{}",
        story(&a)
    );
    assert!(started.elapsed() >= bmc_command, "{:?}", started.elapsed());
    assert_not_stale(&get_server(&mut c, LIAR).await, &a);
    assert_eq!(b.resets("ForceRestart").await, 1);
    b.no_panic(&mut c).await;
}
