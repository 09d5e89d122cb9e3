//! What the fault tests (`tests/fault_*.rs`) share: the seed that makes a
//! failure replay, the daemon's small budgets, the requests a control plane
//! sends and the checks it makes. The relays are in [`relay`].
#![allow(dead_code)]

pub mod relay;

use std::time::{Duration, Instant};

use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use tonic::transport::Channel;

use super::common::{admin, wait_action, wait_server};

pub type Client = RackAgentClient<Channel>;

/// The seed of a test's randomness: `FAULT_SEED` when set (to replay a
/// failure), else a fresh one. Printed at the start, and again with the
/// command that replays it when the test fails.
pub struct Seed {
    pub value: u64,
    test: &'static str,
    file: &'static str,
}

impl Seed {
    pub fn new(file: &'static str, test: &'static str) -> Seed {
        let value = match std::env::var("FAULT_SEED") {
            Ok(s) => {
                let s = s.trim();
                s.strip_prefix("0x")
                    .map(|h| u64::from_str_radix(h, 16))
                    .unwrap_or_else(|| s.parse())
                    .unwrap_or_else(|_| panic!("FAULT_SEED={s:?} is not a number"))
            }
            Err(_) => rand::random::<u64>(),
        };
        eprintln!("{test}: FAULT_SEED={value}");
        Seed { value, test, file }
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n{} failed with FAULT_SEED={}; replay it with\n  FAULT_SEED={} cargo nextest run \
                 --features kill-points --test {} {}\n",
                self.test, self.value, self.value, self.file, self.test
            );
        }
    }
}

/// The daemon's budgets, small so that a case ends in seconds: polls every
/// second, power UNKNOWN after `unknown_after` failed reads.
pub fn settings(bmc_command: &str, power_confirm: &str, unknown_after: u32) -> String {
    format!(
        "[sync]\ninterval = \"1s\"\njitter = \"100ms\"\nunknown_after_failures = {unknown_after}\n\n\
         [timeouts]\nbmc_command = \"{bmc_command}\"\nconfirm_poll = \"250ms\"\n\
         power_confirm = \"{power_confirm}\"\nsoft_reboot = \"{power_confirm}\"\n\
         graceful_stop = \"{power_confirm}\"\nshutdown_grace = \"1s\"\n\n"
    )
}

/// A `[[servers]]` entry; `options` is the inside of an inline table.
pub fn server(id: &str, protocol: &str, port: u16, password_file: &str, options: &str) -> String {
    format!(
        "[[servers]]\nid = \"{id}\"\nproject = \"p1\"\nprotocol = \"{protocol}\"\n\
         address = \"127.0.0.1\"\nport = {port}\nusername = \"admin\"\n\
         password_file = \"{password_file}\"\noptions = {{ {options} }}\n\n"
    )
}

pub fn state(a: &pb::Action) -> pb::ActionState {
    pb::ActionState::try_from(a.state).unwrap()
}

pub fn power(s: &pb::Server) -> pb::PowerState {
    pb::PowerState::try_from(s.power_state).unwrap()
}

/// The action's steps, one line each ("hard_reset failed: ..."), for
/// assertion messages and step checks.
pub fn story(a: &pb::Action) -> String {
    let mut s = format!(
        "{:?} {:?}: {}\n",
        pb::ActionKind::try_from(a.kind).unwrap(),
        state(a),
        a.message
    );
    for e in &a.events {
        let phase = pb::StepPhase::try_from(e.phase).unwrap();
        s.push_str(&format!("  {} {:?} {}\n", e.step, phase, e.detail));
    }
    s
}

/// Whether the action recorded `step` as started (it went to the BMC).
pub fn sent(a: &pb::Action, step: &str) -> bool {
    a.events
        .iter()
        .any(|e| e.step == step && e.phase == pb::StepPhase::Started as i32)
}

pub async fn get_server(c: &mut Client, id: &str) -> pb::Server {
    c.get_server(admin(pb::GetServerRequest {
        id: id.into(),
        refresh_identity: false,
    }))
    .await
    .unwrap()
    .into_inner()
}

/// Waits until the daemon has read the server's power (actions are refused
/// before), and returns what it read.
pub async fn wait_known(c: &mut Client, id: &str, limit: Duration) -> pb::Server {
    wait_server(c, id, limit, |s| {
        matches!(power(s), pb::PowerState::On | pb::PowerState::Off)
    })
    .await
}

pub async fn wait_power(c: &mut Client, id: &str, want: pb::PowerState, limit: Duration) {
    wait_server(c, id, limit, |s| power(s) == want).await;
}

pub async fn hard_reboot(c: &mut Client, id: &str) -> String {
    c.reboot(admin(pb::RebootRequest {
        server_id: id.into(),
        r#type: pb::RebootType::Hard as i32,
        request_id: String::new(),
    }))
    .await
    .unwrap_or_else(|e| panic!("HARD reboot of {id} refused: {e}"))
    .into_inner()
    .id
}

pub async fn start(c: &mut Client, id: &str) -> String {
    c.start(admin(pb::StartRequest {
        server_id: id.into(),
        request_id: String::new(),
    }))
    .await
    .unwrap_or_else(|e| panic!("start of {id} refused: {e}"))
    .into_inner()
    .id
}

pub async fn stop(c: &mut Client, id: &str, force: bool) -> String {
    c.stop(admin(pb::StopRequest {
        server_id: id.into(),
        force,
        request_id: String::new(),
    }))
    .await
    .unwrap_or_else(|e| panic!("stop of {id} refused: {e}"))
    .into_inner()
    .id
}

pub async fn reinstall_pxe(c: &mut Client, id: &str) -> String {
    c.reinstall(admin(pb::ReinstallRequest {
        server_id: id.into(),
        boot_source: Some(pb::reinstall_request::BootSource::Pxe(true)),
        request_id: String::new(),
    }))
    .await
    .unwrap_or_else(|e| panic!("reinstall of {id} refused: {e}"))
    .into_inner()
    .id
}

/// Runs an action to its end; also returns how long it took.
pub async fn run(c: &mut Client, id: String, limit: Duration) -> (pb::Action, Duration) {
    let started = Instant::now();
    let a = wait_action(c, &id, limit).await;
    (a, started.elapsed())
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints `report()` (logs, relay history, BMC call logs) when the test
/// fails while it is alive — whichever assertion fails.
pub struct OnFailure<F: Fn() -> String>(pub F);

impl<F: Fn() -> String> Drop for OnFailure<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n---- what the test saw ----\n{}", (self.0)());
        }
    }
}

fn millis(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// What a control plane checks right after an action failed because its
/// last BMC step got no answer or never finished: the power the agent
/// reports is UNKNOWN, or a reading taken after that step failed — never
/// the ON (or OFF) it read before.
pub fn assert_not_stale(srv: &pb::Server, a: &pb::Action) {
    let failed_at = a
        .events
        .iter()
        .rev()
        .find(|e| e.phase == pb::StepPhase::Failed as i32)
        .map(|e| millis(&e.at))
        .unwrap_or_else(|| panic!("no failed step:\n{}", story(a)));
    let p = power(srv);
    assert!(
        p == pb::PowerState::Unknown || millis(&srv.power_observed_at) >= failed_at,
        "the agent reports power {p:?} read at {} ms, before the step that failed at {failed_at} \
         ms: a stale reading\n{}",
        millis(&srv.power_observed_at),
        story(a)
    );
}

/// A BMC password never shows in what the daemon writes or answers. The
/// text is not printed when it does: that would put the secret in the test
/// output.
pub fn assert_no_secret(what: &str, text: &str, secret: &str) {
    assert!(secret.len() >= 6, "a test password too short to look for");
    assert!(
        !text.contains(secret),
        "{what} holds a BMC password ({} bytes searched)",
        text.len()
    );
}
