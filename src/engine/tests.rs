//! Engine tests against the fake BMC, on paused tokio time: timeouts of
//! minutes pass in microseconds, deterministically.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bmc::fake::{FakeBmc, FakeBmcFactory, FakeCall, FakeSettings};
use crate::bmc::{BootDevice, Power, PowerOp, Protocol, Secret};
use crate::config::{SyncSettings, Timeouts};
use crate::policy::Policy;

struct Rig {
    engine: Arc<Engine>,
    fakes: Arc<FakeBmcFactory>,
}

fn settings() -> EngineSettings {
    EngineSettings {
        timeouts: Timeouts::default(),
        sync: SyncSettings::default(),
        event_retain: 1000,
        actions: Default::default(),
        credentials_dir: "/nonexistent".into(),
        // Every test's servers use the password "pw", so they may share it.
        secrets_dir: std::env::temp_dir().join("rack-agent-engine-tests"),
        policy: Policy::default(),
        metrics: crate::metrics::Metrics::new(),
    }
}

fn rig_with(fake: FakeSettings, store: Store) -> Rig {
    let fakes = Arc::new(FakeBmcFactory::new(fake).unwrap());
    let engine = Engine::start(store, fakes.clone(), settings(), &[]).unwrap();
    Rig { engine, fakes }
}

fn rig() -> Rig {
    rig_with(FakeSettings::default(), Store::open_in_memory().unwrap())
}

fn admin() -> Caller {
    Caller {
        id: "ops".into(),
        project_id: Some("ops".into()),
        roles: vec!["admin".into()],
    }
}

fn member(project: &str) -> Caller {
    Caller {
        id: format!("user-{project}"),
        project_id: Some(project.into()),
        roles: vec!["member".into()],
    }
}

fn bmc_record(n: u16) -> BmcRecord {
    BmcRecord {
        protocol: Protocol::Ipmi,
        address: "192.0.2.1".into(),
        port: 9000 + n,
        username: "admin".into(),
        credential: Credential::Inline(Secret::new("pw")),
        options: Default::default(),
    }
}

impl Rig {
    async fn enroll(&self, id: &str, power: Power) -> Arc<FakeBmc> {
        let n = self.engine.server_ids().len() as u16;
        // Made first so the fake starts in the wanted state.
        let fake = self.fakes.fake_for(id);
        fake.set_power(power);
        self.engine
            .enroll(
                &admin(),
                EnrollRequest {
                    id: id.into(),
                    project_id: "p1".into(),
                    bmc: bmc_record(n),
                    skip_verify: false,
                },
            )
            .await
            .unwrap();
        fake
    }

    async fn submit(&self, server: &str, req: ActionRequest) -> Result<Action> {
        self.engine.submit(&admin(), server, req, None).await
    }

    async fn wait(&self, action_id: &str) -> Action {
        for _ in 0..100_000 {
            let a = self.engine.load_action(action_id).unwrap().unwrap();
            if a.state.is_terminal() {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("action {action_id} never ended");
    }

    fn server(&self, id: &str) -> ServerRecord {
        self.engine.record(id).unwrap()
    }
}

fn steps(a: &Action) -> Vec<String> {
    a.events
        .iter()
        .map(|e| format!("{}:{}", e.step, e.phase))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn hard_reboot_resets_a_running_server() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    assert_eq!(a.state, ActionState::Pending);
    assert_eq!(
        rig.server("s1").task,
        Some((a.id.clone(), ActionKind::RebootHard))
    );
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:?}");
    assert_eq!(fake.power_ops(), vec![PowerOp::HardReset]);
    assert_eq!(
        steps(&a),
        [
            "discover:started",
            "discover:finished",
            "read_power:started",
            "read_power:finished",
            "hard_reset:started",
            "hard_reset:finished",
            "wait_restart:started",
            "wait_restart:finished"
        ]
    );
    // An IPMI-like BMC shows no restart marker: the message says so.
    assert!(
        a.message.contains("hard_reset acknowledged")
            && a.message.contains("restart itself is not confirmed"),
        "{}",
        a.message
    );
    let s = rig.server("s1");
    assert_eq!(s.task, None);
    assert_eq!(s.vm_state, VmState::Active);
}

#[tokio::test(start_paused = true)]
async fn hard_reboot_of_a_server_that_is_off_powers_it_on() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::Off).await;
    assert_eq!(rig.server("s1").vm_state, VmState::Shutoff);
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded);
    assert_eq!(fake.power_ops(), vec![PowerOp::On]);
    assert_eq!(rig.server("s1").vm_state, VmState::Active);
}

#[tokio::test(start_paused = true)]
async fn soft_reboot_is_graceful_off_then_on() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded);
    assert!(
        a.message.starts_with("rebooted (SOFT): the OS shut down"),
        "{}",
        a.message
    );
    assert_eq!(fake.power_ops(), vec![PowerOp::GracefulOff, PowerOp::On]);
}

#[tokio::test(start_paused = true)]
async fn soft_reboot_falls_back_to_hard_after_its_timeout_and_says_so() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    fake.set_ignore_acpi(true);
    let started = tokio::time::Instant::now();
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:?}");
    assert!(started.elapsed() >= Timeouts::default().soft_reboot);
    assert_eq!(
        fake.power_ops(),
        vec![PowerOp::GracefulOff, PowerOp::HardReset]
    );
    assert!(a.message.contains("fell back to HARD"), "{}", a.message);
    let note = a
        .events
        .iter()
        .find(|e| e.step == "fallback_hard")
        .expect("fallback recorded as a step event");
    assert_eq!(note.phase, StepPhase::Note);
    assert!(note.detail.contains("2m"), "{}", note.detail);
}

#[tokio::test(start_paused = true)]
async fn start_powers_on_a_shutoff_server() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::Off).await;
    let a = rig.submit("s1", ActionRequest::Start).await.unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded);
    assert_eq!(fake.power_ops(), vec![PowerOp::On]);
    assert_eq!(rig.server("s1").vm_state, VmState::Active);
    assert_eq!(rig.server("s1").power, PowerState::On);
}

#[tokio::test(start_paused = true)]
async fn stop_is_graceful_and_forced_when_asked_or_when_the_os_ignores_it() {
    let rig = rig();
    let f1 = rig.enroll("s1", Power::On).await;
    let f2 = rig.enroll("s2", Power::On).await;
    let f3 = rig.enroll("s3", Power::On).await;
    f3.set_ignore_acpi(true);
    let a1 = rig
        .submit("s1", ActionRequest::Stop { force: false })
        .await
        .unwrap();
    let a2 = rig
        .submit("s2", ActionRequest::Stop { force: true })
        .await
        .unwrap();
    let a3 = rig
        .submit("s3", ActionRequest::Stop { force: false })
        .await
        .unwrap();
    for a in [&a1, &a2, &a3] {
        let a = rig.wait(&a.id).await;
        assert_eq!(a.state, ActionState::Succeeded, "{a:?}");
        assert_eq!(rig.server(&a.server_id).vm_state, VmState::Shutoff);
    }
    assert_eq!(f1.power_ops(), vec![PowerOp::GracefulOff]);
    assert_eq!(f2.power_ops(), vec![PowerOp::ForceOff]);
    assert_eq!(
        f3.power_ops(),
        vec![PowerOp::GracefulOff, PowerOp::ForceOff]
    );
    let a3 = rig.wait(&a3.id).await;
    assert!(a3.events.iter().any(|e| e.step == "fallback_force_off"));
}

#[tokio::test(start_paused = true)]
async fn reinstall_sets_pxe_once_then_power_cycles() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let a = rig
        .submit("s1", ActionRequest::Reinstall(BootSource::Pxe))
        .await
        .unwrap();
    assert_eq!(rig.server("s1").vm_state, VmState::Rebuilding);
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:?}");
    let bmc_calls: Vec<FakeCall> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, FakeCall::SetBootOnce(_) | FakeCall::Power(_)))
        .collect();
    assert_eq!(
        bmc_calls,
        vec![
            FakeCall::SetBootOnce(BootDevice::Pxe),
            FakeCall::Power(PowerOp::PowerCycle)
        ]
    );
    assert_eq!(rig.server("s1").vm_state, VmState::Active);
}

#[tokio::test(start_paused = true)]
async fn reinstall_from_virtual_media_inserts_boots_and_ejects() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::Off).await;
    let url = "http://127.0.0.1:8080/installer.iso".to_string();
    let a = rig
        .submit(
            "s1",
            ActionRequest::Reinstall(BootSource::VirtualMedia(url.clone())),
        )
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:?}");
    let calls: Vec<FakeCall> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            !matches!(
                c,
                FakeCall::PowerState | FakeCall::Capabilities | FakeCall::Identity
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            FakeCall::InsertMedia(url),
            FakeCall::SetBootOnce(BootDevice::Cd),
            FakeCall::Power(PowerOp::On),
            FakeCall::EjectMedia
        ]
    );
    assert_eq!(fake.media(), None);
}

#[tokio::test(start_paused = true)]
async fn a_second_action_while_a_task_runs_is_refused_naming_it() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    fake.set_latency(Duration::from_secs(5));
    let first = rig
        .submit("s1", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    let err = rig
        .submit("s1", ActionRequest::Stop { force: true })
        .await
        .unwrap_err();
    match &err {
        EngineError::Conflict(m) => assert!(m.contains(&first.id), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A second HARD reboot conflicts too: only SOFT is superseded by HARD.
    assert!(matches!(
        rig.submit("s1", ActionRequest::Reboot { hard: true }).await,
        Err(EngineError::Conflict(_))
    ));
    assert_eq!(rig.wait(&first.id).await.state, ActionState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn hard_reboot_supersedes_a_running_soft_reboot() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    fake.set_ignore_acpi(true);
    let soft = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let hard = rig
        .submit("s1", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    let hard = rig.wait(&hard.id).await;
    let soft = rig.wait(&soft.id).await;
    assert_eq!(soft.state, ActionState::Superseded);
    assert_eq!(soft.superseded_by.as_deref(), Some(hard.id.as_str()));
    assert_eq!(hard.state, ActionState::Succeeded);
    // Well past the soft timeout: the superseded action never fell back.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(fake.count(PowerOp::HardReset), 1);
    assert_eq!(rig.server("s1").task, None);
}

#[tokio::test(start_paused = true)]
async fn reset_state_supersedes_a_stuck_action_without_bmc_traffic() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    fake.set_latency(Duration::from_secs(1000));
    let stuck = rig
        .submit("s1", ActionRequest::Reinstall(BootSource::Pxe))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let calls_before = fake.calls().len();
    let reset = rig
        .submit("s1", ActionRequest::ResetState(VmState::Active))
        .await
        .unwrap();
    assert_eq!(reset.state, ActionState::Succeeded);
    assert_eq!(reset.kind, ActionKind::ResetState);
    let stuck = rig.engine.load_action(&stuck.id).unwrap().unwrap();
    assert_eq!(stuck.state, ActionState::Superseded);
    assert_eq!(stuck.superseded_by.as_deref(), Some(reset.id.as_str()));
    let s = rig.server("s1");
    assert_eq!((s.vm_state, s.task), (VmState::Active, None));
    tokio::time::sleep(Duration::from_secs(2000)).await;
    assert_eq!(
        fake.calls().len(),
        calls_before,
        "reset-state sent BMC traffic"
    );
    // The superseded runner must not overwrite the state later.
    assert_eq!(rig.server("s1").vm_state, VmState::Active);
}

#[tokio::test(start_paused = true)]
async fn a_locked_server_refuses_non_admins() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let owner = member("p1");
    rig.engine
        .submit(&owner, "s1", ActionRequest::Lock, None)
        .await
        .unwrap();
    let err = rig
        .engine
        .submit(&owner, "s1", ActionRequest::Reboot { hard: true }, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Conflict(m) if m.contains("locked")),
        "{err:?}"
    );
    // An admin may still act.
    let a = rig
        .engine
        .submit(&admin(), "s1", ActionRequest::Reboot { hard: true }, None)
        .await
        .unwrap();
    rig.wait(&a.id).await;
    assert_eq!(fake.count(PowerOp::HardReset), 1);
    // The owner unlocks their own lock; an admin's lock they may not lift.
    rig.engine
        .submit(&owner, "s1", ActionRequest::Unlock, None)
        .await
        .unwrap();
    rig.engine
        .submit(&admin(), "s1", ActionRequest::Lock, None)
        .await
        .unwrap();
    let err = rig
        .engine
        .submit(&owner, "s1", ActionRequest::Unlock, None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(_)), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn the_same_request_id_returns_the_same_action_and_resets_once() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let req = ActionRequest::Reboot { hard: true };
    let a1 = rig
        .engine
        .submit(&admin(), "s1", req.clone(), Some("req-42".into()))
        .await
        .unwrap();
    let a2 = rig
        .engine
        .submit(&admin(), "s1", req.clone(), Some("req-42".into()))
        .await
        .unwrap();
    assert_eq!(a1.id, a2.id);
    rig.wait(&a1.id).await;
    let a3 = rig
        .engine
        .submit(&admin(), "s1", req, Some("req-42".into()))
        .await
        .unwrap();
    assert_eq!(a3.id, a1.id);
    assert_eq!(a3.state, ActionState::Succeeded);
    assert_eq!(fake.count(PowerOp::HardReset), 1);
    let (all, _) = rig.engine.list_actions(&admin(), "s1", None, 100).unwrap();
    assert_eq!(all.len(), 1);
    // Reusing the id for something else is a clear error.
    let err = rig
        .engine
        .submit(
            &admin(),
            "s1",
            ActionRequest::Stop { force: true },
            Some("req-42".into()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(m) if m.contains(&a1.id)),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_server_is_not_found() {
    let rig = rig();
    let err = rig.submit("nope", ActionRequest::Start).await.unwrap_err();
    assert!(
        matches!(err, EngineError::NotFound { what: "server", .. }),
        "{err:?}"
    );
    assert!(matches!(
        rig.engine.get_action(&admin(), "missing"),
        Err(EngineError::NotFound { what: "action", .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_hung_bmc_fails_its_action_after_the_timeout_and_others_go_on() {
    let rig = rig();
    let hung = rig.enroll("s1", Power::On).await;
    let fine = rig.enroll("s2", Power::On).await;
    hung.set_hang(true);
    let started = tokio::time::Instant::now();
    let a1 = rig
        .submit("s1", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    let a2 = rig
        .submit("s2", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    let a2 = rig.wait(&a2.id).await;
    assert_eq!(a2.state, ActionState::Succeeded);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "s2 waited for s1"
    );
    assert_eq!(fine.count(PowerOp::HardReset), 1);
    let a1 = rig.wait(&a1.id).await;
    assert_eq!(a1.state, ActionState::Failed);
    assert!(
        a1.message.contains("did not answer within 15s"),
        "{}",
        a1.message
    );
    assert!(a1.message.contains("192.0.2.1"), "{}", a1.message);
    assert_eq!(rig.server("s1").vm_state, VmState::Error);
    // The engine still answers for the hung server too.
    assert!(rig.engine.get_server(&admin(), "s1").is_ok());
}

#[tokio::test(start_paused = true)]
async fn another_project_is_denied_and_states_are_enforced() {
    let rig = rig();
    rig.enroll("s1", Power::On).await;
    let err = rig
        .engine
        .submit(
            &member("p2"),
            "s1",
            ActionRequest::Reboot { hard: true },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(ref d) if d.rule == "admin_or_owner"));
    let err = rig
        .engine
        .submit(
            &member("p1"),
            "s1",
            ActionRequest::ResetState(VmState::Error),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(ref d) if d.rule == "admin"));
    let err = rig.submit("s1", ActionRequest::Start).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Conflict(m) if m.contains("active")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_external_power_change_is_published() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let mut events = rig.engine.subscribe_events();
    fake.set_power(Power::Off);
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.kind, EventKind::PowerChanged);
    assert_eq!((ev.power, ev.vm_state), (PowerState::Off, VmState::Shutoff));
    assert_eq!(ev.cause, "sync");
    let (lo, hi) = rig.engine.event_bounds().unwrap();
    assert!(lo <= ev.seq && ev.seq == hi);
}

#[tokio::test(start_paused = true)]
async fn a_reset_in_flight_at_a_crash_is_not_resent_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let fake = FakeSettings {
        journal: Some(journal.clone()),
        latency: Duration::from_secs(3),
        ..FakeSettings::default()
    };
    let action_id = {
        let rig = rig_with(fake.clone(), Store::open(dir.path()).unwrap());
        rig.enroll("s1", Power::On).await;
        let a = rig
            .submit("s1", ActionRequest::Reboot { hard: true })
            .await
            .unwrap();
        // discover + read_power take 6 s; the reset is then in flight.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let a = rig.engine.load_action(&a.id).unwrap().unwrap();
        assert_eq!(open_step_name(&a).as_deref(), Some("hard_reset"));
        // "Crash": drop everything without a shutdown.
        rig.engine.shutdown(Duration::ZERO).await;
        a.id
    };
    let rig = rig_with(fake, Store::open(dir.path()).unwrap());
    let a = rig.wait(&action_id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:?}");
    assert!(a.message.contains("not re-sent"), "{}", a.message);
    let resets = crate::bmc::fake::read_journal(&journal)
        .unwrap()
        .into_iter()
        .filter(|(_, op)| op == "hard_reset")
        .count();
    assert_eq!(resets, 1);
    assert_eq!(rig.server("s1").task, None);
}

fn open_step_name(a: &Action) -> Option<String> {
    super::replay::in_flight(&a.events)
}

fn firmware_like() -> FakeSettings {
    FakeSettings {
        graceful_restart: true,
        restart_evidence: true,
        ..FakeSettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn hard_reboot_records_the_restart_marker_it_saw_move() {
    let rig = rig_with(firmware_like(), Store::open_in_memory().unwrap());
    let fake = rig.enroll("s1", Power::On).await;
    // Like sushy and slow firmware: the reset shows only after a while, and
    // until then "on" is what the BMC says before and after.
    fake.set_effect_delay(Duration::from_secs(4));
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: true })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:#?}");
    assert_eq!(fake.power_ops(), vec![PowerOp::HardReset]);
    assert_eq!(fake.boots(), 1);
    let read = a
        .events
        .iter()
        .find(|e| e.step == "read_power" && e.phase == StepPhase::Finished)
        .unwrap();
    assert_eq!(read.detail, "on; LastResetTime boot-0");
    let wait = a
        .events
        .iter()
        .find(|e| e.step == "wait_restart" && e.phase == StepPhase::Finished)
        .unwrap();
    assert!(
        wait.detail
            .contains("LastResetTime boot-0 → LastResetTime boot-1"),
        "{}",
        wait.detail
    );
    assert!(a.message.contains("restart seen"), "{}", a.message);
}

#[tokio::test(start_paused = true)]
async fn soft_reboot_uses_a_warm_graceful_restart_only_with_evidence_and_resets_once() {
    // Defect: GracefulRestart keeps the power on; waiting for "off" timed out
    // and a ForceRestart followed — two resets for one SOFT reboot.
    let rig = rig_with(firmware_like(), Store::open_in_memory().unwrap());
    let fake = rig.enroll("s1", Power::On).await;
    fake.set_effect_delay(Duration::from_secs(20));
    let started = tokio::time::Instant::now();
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:#?}");
    assert_eq!(fake.power_ops(), vec![PowerOp::GracefulRestart]);
    assert_eq!(fake.boots(), 1);
    assert!(started.elapsed() < Timeouts::default().soft_reboot);
    assert!(
        a.message
            .starts_with("rebooted (SOFT): graceful restart; restart seen"),
        "{}",
        a.message
    );
    assert!(!a.events.iter().any(|e| e.step == "fallback_hard"));
}

#[tokio::test(start_paused = true)]
async fn without_restart_evidence_a_soft_reboot_takes_the_observable_path() {
    let fake_settings = FakeSettings {
        graceful_restart: true,
        ..FakeSettings::default()
    };
    let rig = rig_with(fake_settings, Store::open_in_memory().unwrap());
    let fake = rig.enroll("s1", Power::On).await;
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:#?}");
    assert_eq!(fake.power_ops(), vec![PowerOp::GracefulOff, PowerOp::On]);
    assert_eq!(fake.boots(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_restart_the_os_ignores_falls_back_to_one_reset() {
    let rig = rig_with(
        FakeSettings {
            ignore_acpi: true,
            ..firmware_like()
        },
        Store::open_in_memory().unwrap(),
    );
    let fake = rig.enroll("s1", Power::On).await;
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{a:#?}");
    assert_eq!(
        fake.power_ops(),
        vec![PowerOp::GracefulRestart, PowerOp::HardReset]
    );
    assert_eq!(fake.boots(), 1);
    assert!(a.message.contains("fell back to HARD"), "{}", a.message);
    let note = a.events.iter().find(|e| e.step == "fallback_hard").unwrap();
    assert!(
        note.detail.contains("no sign of a restart"),
        "{}",
        note.detail
    );
}

#[tokio::test(start_paused = true)]
async fn graceful_restart_without_evidence_or_shutdown_is_never_followed_by_a_reset() {
    let rig = rig_with(
        FakeSettings {
            graceful_restart: true,
            ignore_acpi: true,
            ..FakeSettings::default()
        },
        Store::open_in_memory().unwrap(),
    );
    let fake = rig.enroll("s1", Power::On).await;
    // Offers GracefulRestart, but no GracefulShutdown and no restart marker.
    fake.set_offered(Some(vec![
        PowerOp::On,
        PowerOp::ForceOff,
        PowerOp::HardReset,
        PowerOp::GracefulRestart,
    ]));
    let a = rig
        .submit("s1", ActionRequest::Reboot { hard: false })
        .await
        .unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(fake.power_ops(), vec![PowerOp::GracefulRestart]);
    assert_eq!(a.state, ActionState::Succeeded, "{a:#?}");
    assert!(
        a.message.contains("not confirmed") && a.message.contains("no fallback reset"),
        "{}",
        a.message
    );
}

#[tokio::test(start_paused = true)]
async fn an_owners_lock_does_not_replace_an_admins_lock() {
    let rig = rig();
    rig.enroll("s1", Power::On).await;
    let owner = member("p1");
    rig.engine
        .submit(&admin(), "s1", ActionRequest::Lock, None)
        .await
        .unwrap();
    let err = rig
        .engine
        .submit(&owner, "s1", ActionRequest::Lock, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::PermissionDenied(d) if d.op == "lock" && d.rule.contains("admin")),
        "{err:?}"
    );
    let s = rig.server("s1");
    assert!(s.locked && s.locked_by_admin, "{s:?}");
    let err = rig
        .engine
        .submit(&owner, "s1", ActionRequest::Unlock, None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(_)), "{err:?}");
    // An admin may re-lock or unlock it.
    rig.engine
        .submit(&admin(), "s1", ActionRequest::Lock, None)
        .await
        .unwrap();
    rig.engine
        .submit(&admin(), "s1", ActionRequest::Unlock, None)
        .await
        .unwrap();
    assert!(!rig.server("s1").locked);
}

#[tokio::test(start_paused = true)]
async fn a_request_id_belongs_to_the_callers_project() {
    let rig = rig();
    rig.enroll("s1", Power::On).await;
    // s2 belongs to p2 (enroll() puts servers in p1).
    let fake = rig.fakes.fake_for("s2");
    fake.set_power(Power::On);
    rig.engine
        .enroll(
            &admin(),
            EnrollRequest {
                id: "s2".into(),
                project_id: "p2".into(),
                bmc: bmc_record(7),
                skip_verify: false,
            },
        )
        .await
        .unwrap();
    let rid = || Some("shared".to_string());
    let a = rig
        .engine
        .submit(&member("p1"), "s1", ActionRequest::Lock, rid())
        .await
        .unwrap();
    let b = rig
        .engine
        .submit(&member("p2"), "s2", ActionRequest::Lock, rid())
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    let err = rig
        .engine
        .submit(&member("p2"), "s2", ActionRequest::Unlock, rid())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::InvalidArgument(_)), "{err:?}");
    assert!(msg.contains(&b.id) && !msg.contains(&a.id), "{msg}");
    // Callers without a project (an operator's admin tool): their own scope.
    let ops = |id: &str| Caller {
        id: id.into(),
        project_id: None,
        roles: vec!["admin".into()],
    };
    let o1 = rig
        .engine
        .submit(&ops("ops-1"), "s1", ActionRequest::Unlock, rid())
        .await
        .unwrap();
    let o2 = rig
        .engine
        .submit(&ops("ops-2"), "s1", ActionRequest::Lock, rid())
        .await
        .unwrap();
    assert_ne!(o1.id, o2.id);
    let again = rig
        .engine
        .submit(&ops("ops-1"), "s1", ActionRequest::Unlock, rid())
        .await
        .unwrap();
    assert_eq!(again.id, o1.id);
}

mod crash;
mod inventory;

#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_write_queue_is_answered_busy_with_a_retry_hint() {
    let mut s = settings();
    s.actions.max_unwritten = 1;
    let fakes = Arc::new(FakeBmcFactory::new(FakeSettings::default()).unwrap());
    let engine = Engine::start(Store::open_in_memory().unwrap(), fakes.clone(), s, &[]).unwrap();
    let rig = Rig { engine, fakes };
    for i in 0..20 {
        rig.enroll(&format!("s{i}"), Power::On).await;
    }
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let engine = rig.engine.clone();
            tokio::spawn(async move {
                engine
                    .submit(&admin(), &format!("s{i}"), ActionRequest::Lock, None)
                    .await
            })
        })
        .collect();
    let (mut accepted, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(EngineError::Busy { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO);
                busy += 1;
            }
            Err(e) => panic!("every request gets an answer, not {e:?}"),
        }
    }
    assert!(
        accepted >= 1 && busy >= 1,
        "accepted {accepted}, busy {busy}"
    );
    // The queue drains: the same requests go through now.
    let a = rig
        .engine
        .submit(&admin(), "s19", ActionRequest::Unlock, None)
        .await;
    assert!(a.is_ok(), "{a:?}");
}
