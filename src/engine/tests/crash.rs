//! The agent "crashes" at every step boundary of every action kind — the
//! runner is frozen at a kill point, every task dropped where it is, and a new
//! engine started on the same database and the same fake BMCs (rebuilt from
//! their journal, as a real machine keeps its state across an agent crash).
//! Each resumed action must end exactly once, and the BMC side must have seen
//! exactly the commands of an uninterrupted run: nothing that changes power
//! twice, nothing left out — except a non-idempotent command caught between
//! its "started" record and its sending, which is never re-sent and which the
//! action then reports honestly.

use std::collections::HashMap;

use super::*;
use crate::bmc::fake::read_journal;
use crate::engine::killpoint::{Boundary, KillMode, KillPoint};

/// One way to run an action.
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    req: ActionRequest,
    power: Power,
    fake: FakeSettings,
}

fn scenarios() -> Vec<Scenario> {
    let ipmi_like = FakeSettings {
        latency: Duration::from_millis(20),
        ..FakeSettings::default()
    };
    let firmware = FakeSettings {
        graceful_restart: true,
        restart_evidence: true,
        ..ipmi_like.clone()
    };
    let deaf = |f: &FakeSettings| FakeSettings {
        ignore_acpi: true,
        ..f.clone()
    };
    let url = "http://127.0.0.1:8080/installer.iso".to_string();
    let s = |name, req, power, fake: &FakeSettings| Scenario {
        name,
        req,
        power,
        fake: fake.clone(),
    };
    vec![
        s(
            "hard/on/ipmi",
            ActionRequest::Reboot { hard: true },
            Power::On,
            &ipmi_like,
        ),
        s(
            "hard/on/evidence",
            ActionRequest::Reboot { hard: true },
            Power::On,
            &firmware,
        ),
        s(
            "hard/off",
            ActionRequest::Reboot { hard: true },
            Power::Off,
            &ipmi_like,
        ),
        s(
            "soft/off-on",
            ActionRequest::Reboot { hard: false },
            Power::On,
            &ipmi_like,
        ),
        s(
            "soft/off-on/deaf",
            ActionRequest::Reboot { hard: false },
            Power::On,
            &deaf(&ipmi_like),
        ),
        s(
            "soft/warm",
            ActionRequest::Reboot { hard: false },
            Power::On,
            &firmware,
        ),
        s(
            "soft/warm/deaf",
            ActionRequest::Reboot { hard: false },
            Power::On,
            &deaf(&firmware),
        ),
        s("start", ActionRequest::Start, Power::Off, &ipmi_like),
        s(
            "stop/graceful",
            ActionRequest::Stop { force: false },
            Power::On,
            &ipmi_like,
        ),
        s(
            "stop/graceful/deaf",
            ActionRequest::Stop { force: false },
            Power::On,
            &deaf(&ipmi_like),
        ),
        s(
            "stop/force",
            ActionRequest::Stop { force: true },
            Power::On,
            &ipmi_like,
        ),
        s(
            "reinstall/pxe/on",
            ActionRequest::Reinstall(BootSource::Pxe),
            Power::On,
            &ipmi_like,
        ),
        s(
            "reinstall/pxe/off",
            ActionRequest::Reinstall(BootSource::Pxe),
            Power::Off,
            &ipmi_like,
        ),
        s(
            "reinstall/vmedia/on",
            ActionRequest::Reinstall(BootSource::VirtualMedia(url.clone())),
            Power::On,
            &firmware,
        ),
        s(
            "reinstall/vmedia/off",
            ActionRequest::Reinstall(BootSource::VirtualMedia(url)),
            Power::Off,
            &ipmi_like,
        ),
    ]
}

/// A database, a fake-BMC journal and the settings: what survives a crash.
struct World {
    dir: tempfile::TempDir,
    fake: FakeSettings,
}

impl World {
    fn new(sc: &Scenario) -> World {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSettings {
            journal: Some(dir.path().join("bmc-journal")),
            initial_power: sc.power,
            ..sc.fake.clone()
        };
        World { dir, fake }
    }

    /// The agent starting (again): recovery runs inside.
    fn boot(&self) -> Rig {
        rig_with(self.fake.clone(), Store::open(self.dir.path()).unwrap())
    }

    /// Every power command that reached the BMC, in order.
    fn bmc_ops(&self) -> Vec<String> {
        read_journal(self.fake.journal.as_ref().unwrap())
            .unwrap()
            .into_iter()
            .map(|(_, op)| op)
            .collect()
    }

    fn boots(&self) -> u64 {
        // A fresh factory replays the journal, as the next agent run would.
        FakeBmcFactory::new(self.fake.clone())
            .unwrap()
            .fake_for("s1")
            .boots()
    }
}

/// Every boundary an uninterrupted run passes, in order.
fn boundaries(kind: ActionKind, a: &Action) -> Vec<KillPoint> {
    let mut seen: HashMap<(String, Boundary), u32> = HashMap::new();
    let mut out = vec![KillPoint {
        kind,
        step: "-".into(),
        boundary: Boundary::Accepted,
        nth: 1,
        server: None,
    }];
    for e in a.events.iter().filter(|e| e.phase == StepPhase::Started) {
        let phases: &[Boundary] = if e.step.starts_with("wait_") {
            &[Boundary::Started, Boundary::Finished]
        } else {
            &[Boundary::Started, Boundary::Answered, Boundary::Finished]
        };
        for b in phases {
            let n = seen.entry((e.step.clone(), *b)).or_insert(0);
            *n += 1;
            out.push(KillPoint {
                kind,
                step: e.step.clone(),
                boundary: *b,
                nth: *n,
                server: None,
            });
        }
    }
    out
}

/// Runs the action once without a crash: the reference.
async fn clean_run(sc: &Scenario) -> (Action, Reference) {
    let world = World::new(sc);
    let rig = world.boot();
    rig.enroll_as_is("s1").await;
    let a = rig.submit("s1", sc.req.clone()).await.unwrap();
    let a = rig.wait(&a.id).await;
    assert_eq!(a.state, ActionState::Succeeded, "{}: {a:#?}", sc.name);
    let reference = Reference {
        ops: world.bmc_ops(),
        boots: world.boots(),
        power: power_after(&world),
    };
    (a, reference)
}

/// Submits the action with `kills` armed one after the other: each kill
/// freezes the runner, then the agent "crashes" and starts again.
async fn crashed_run(sc: &Scenario, kills: &[KillPoint]) -> (World, Action, usize) {
    let world = World::new(sc);
    let mut rig = world.boot();
    rig.enroll_as_is("s1").await;
    let mut kills = kills.iter();
    if let Some(k) = kills.next() {
        rig.engine.arm_kill_point(k.clone(), KillMode::Freeze);
    }
    let id = rig.submit("s1", sc.req.clone()).await.unwrap().id;
    let mut crashes = 0;
    loop {
        let fired = tokio::select! {
            _ = rig.engine.kill_point_fired() => true,
            _ = rig.wait(&id) => false,
        };
        if !fired {
            break;
        }
        crashes += 1;
        rig.engine.crash();
        drop(rig);
        // The next run of the agent, perhaps with the next kill armed before
        // its recovery gets to run.
        rig = world.boot();
        if let Some(k) = kills.next() {
            rig.engine.arm_kill_point(k.clone(), KillMode::Freeze);
        }
    }
    let a = rig.wait(&id).await;
    (world, a, crashes)
}

fn count(ops: &[String], op: &str) -> usize {
    ops.iter().filter(|o| *o == op).count()
}

/// What a clean run left at the BMC.
struct Reference {
    ops: Vec<String>,
    boots: u64,
    power: Power,
}

fn power_after(world: &World) -> Power {
    FakeBmcFactory::new(world.fake.clone())
        .unwrap()
        .fake_for("s1")
        .power_now()
}

fn resets(ops: &[String]) -> usize {
    ops.iter()
        .filter(|o| PowerOp::parse(o).is_some_and(|op| !op.is_idempotent()))
        .count()
}

/// What the BMC saw after crashes at `kills` is what it saw without them:
/// no reset twice and never more resets than a clean run, the same number of
/// boots, the same power at the end; an idempotent command at most once more
/// (the one in flight, re-sent because the power said it was still needed).
/// The one exception: a reset caught between its "started" record and its
/// sending is never re-sent; then the action says so, and a boot may be
/// missing. A reinstall whose cycle was so caught on a BMC without restart
/// evidence fails, having set its boot override back.
fn check(sc: &Scenario, kills: &[KillPoint], clean: &Reference, world: &World, a: &Action) {
    let ctx = format!(
        "{} killed at {}",
        sc.name,
        kills
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", then ")
    );
    let ops = world.bmc_ops();
    assert!(a.state.is_terminal(), "{ctx}: {a:#?}");
    let lost = kills.iter().any(|k| {
        k.boundary == Boundary::Started
            && PowerOp::parse(&k.step).is_some_and(|op| !op.is_idempotent())
    });
    for op in PowerOp::ALL {
        let (want, got) = (count(&clean.ops, op.as_str()), count(&ops, op.as_str()));
        if op.is_idempotent() {
            let slack = kills.iter().filter(|k| k.step == op.as_str()).count();
            assert!(
                got <= want + slack,
                "{ctx}: {op} sent {got} times, {want} without a crash: {ops:?}"
            );
        } else {
            assert!(got <= 1, "{ctx}: {op} sent {got} times: {ops:?}");
        }
    }
    assert!(
        resets(&ops) <= resets(&clean.ops),
        "{ctx}: more resets than without a crash: {ops:?} vs {:?}",
        clean.ops
    );
    let boots = world.boots();
    if lost && boots + 1 == clean.boots {
        // The reset never reached the BMC: the action must not claim it did.
        assert!(a.message.contains("not re-sent"), "{ctx}: {}", a.message);
        assert!(
            a.state == ActionState::Failed || a.message.contains("not confirmed"),
            "{ctx}: {a:#?}"
        );
    } else if matches!(sc.req, ActionRequest::Reinstall(_))
        && a.state == ActionState::Failed
        && a.message.contains("was in flight when the agent stopped")
    {
        // A reinstall whose cycle was in doubt, on a BMC without restart
        // evidence: it cannot know whether the installer booted, so it sets
        // the boot override back and fails, asking for the reinstall again.
        assert!(a.message.contains("set back to disk"), "{ctx}: {a:#?}");
        assert_eq!(boots, clean.boots, "{ctx}: boots ({ops:?})");
        assert_eq!(power_after(world), clean.power, "{ctx}: power at the end");
    } else {
        assert_eq!(boots, clean.boots, "{ctx}: boots ({ops:?})");
        assert_eq!(a.state, ActionState::Succeeded, "{ctx}: {a:#?}");
        assert_eq!(power_after(world), clean.power, "{ctx}: power at the end");
    }
    assert!(
        a.message.contains("after an agent restart"),
        "{ctx}: the message must say the action was resumed: {}",
        a.message
    );
}

impl Rig {
    /// Enrols s1 with the fake as its settings made it.
    async fn enroll_as_is(&self, id: &str) {
        self.engine
            .enroll(
                &admin(),
                EnrollRequest {
                    id: id.into(),
                    project_id: "p1".into(),
                    bmc: bmc_record(0),
                    skip_verify: false,
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_every_step_boundary_of_every_action_repeats_nothing() {
    let mut covered = 0;
    for sc in scenarios() {
        let (clean, reference) = clean_run(&sc).await;
        let points = boundaries(sc.req.kind(), &clean);
        assert!(points.len() >= 5, "{}: {points:?}", sc.name);
        for k in &points {
            let kills = std::slice::from_ref(k);
            let (world, a, crashes) = crashed_run(&sc, kills).await;
            assert_eq!(
                crashes, 1,
                "{} at {k}: the kill point was not reached",
                sc.name
            );
            check(&sc, kills, &reference, &world, &a);
            // Exactly one record of it.
            let rig = world.boot();
            let (list, _) = rig.engine.list_actions(&admin(), "s1", None, 10).unwrap();
            assert_eq!(list.len(), 1, "{} at {k}", sc.name);
            covered += 1;
        }
    }
    assert!(covered > 150, "only {covered} kill points covered");
}

#[tokio::test(start_paused = true)]
async fn two_crashes_in_one_burst_still_repeat_nothing() {
    for sc in scenarios() {
        let (clean, reference) = clean_run(&sc).await;
        let points = boundaries(sc.req.kind(), &clean);
        // Killed at one boundary, then again at the next one the resumed run
        // reaches (if it reaches it live).
        for pair in points.windows(2) {
            let (world, a, crashes) = crashed_run(&sc, pair).await;
            assert!(crashes >= 1, "{}: {pair:?}", sc.name);
            check(&sc, &pair[..crashes], &reference, &world, &a);
        }
    }
}
