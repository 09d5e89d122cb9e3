//! The real daemon aborts (like SIGKILL: no destructor, no flush) at every
//! step boundary of every action kind, through its kill-point hook
//! (`RACK_AGENT_KILL_AT`, built with `--features kill-points`), and is started
//! again. Judged from the BMC side: the fake BMCs journal every power command
//! to a file before it takes effect, so the test compares, per server, what
//! reached the BMC after a crash with what reached it in an uninterrupted run
//! of the same action — no reset twice, the same boots, the same power at the
//! end — and checks that every action ended once and says it was resumed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rack_agent::bmc::fake::{read_journal, FakeBmcFactory, FakeSettings};
use rack_agent::bmc::{Power, PowerOp};
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use tonic::transport::Channel;

const TIMINGS: &str = "[sync]\ninterval = \"1s\"\njitter = \"100ms\"\n\n[timeouts]\nconfirm_poll = \"50ms\"\nsoft_reboot = \"1s\"\ngraceful_stop = \"1s\"\npower_confirm = \"3s\"\nshutdown_grace = \"1s\"\n";

#[derive(Clone, Copy, Debug)]
enum Act {
    Hard,
    Soft,
    Start,
    Stop { force: bool },
    Pxe,
    Media,
}

impl Act {
    fn kind(self) -> &'static str {
        match self {
            Act::Hard => "reboot_hard",
            Act::Soft => "reboot_soft",
            Act::Start => "start",
            Act::Stop { .. } => "stop",
            Act::Pxe | Act::Media => "reinstall",
        }
    }

    async fn submit(self, c: &mut RackAgentClient<Channel>, server: &str) -> String {
        self.try_submit(c, server)
            .await
            .unwrap_or_else(|e| panic!("{self:?} on {server} refused: {e}"))
    }

    /// The request a control plane sends, with a request id of its own; a
    /// retry after a lost answer returns the same action.
    async fn try_submit(
        self,
        c: &mut RackAgentClient<Channel>,
        server: &str,
    ) -> Result<String, tonic::Status> {
        let server_id = server.to_string();
        let request_id = format!("{}-{server}", self.kind());
        let r = match self {
            Act::Hard | Act::Soft => {
                c.reboot(admin(pb::RebootRequest {
                    server_id,
                    r#type: if matches!(self, Act::Hard) {
                        pb::RebootType::Hard
                    } else {
                        pb::RebootType::Soft
                    } as i32,
                    request_id,
                }))
                .await
            }
            Act::Start => {
                c.start(admin(pb::StartRequest {
                    server_id,
                    request_id,
                }))
                .await
            }
            Act::Stop { force } => {
                c.stop(admin(pb::StopRequest {
                    server_id,
                    force,
                    request_id,
                }))
                .await
            }
            Act::Pxe | Act::Media => {
                let source = if matches!(self, Act::Pxe) {
                    pb::reinstall_request::BootSource::Pxe(true)
                } else {
                    pb::reinstall_request::BootSource::VirtualMediaUrl(
                        "http://127.0.0.1:8080/installer.iso".into(),
                    )
                };
                c.reinstall(admin(pb::ReinstallRequest {
                    server_id,
                    boot_source: Some(source),
                    request_id,
                }))
                .await
            }
        };
        r.map(|a| a.into_inner().id)
    }
}

struct Scenario {
    name: &'static str,
    act: Act,
    power: Power,
}

/// A world of fake BMCs that all behave alike (`[fake_bmc]` is daemon-wide).
struct World {
    dir: tempfile::TempDir,
    body: String,
    settings: FakeSettings,
    next_port: u16,
}

impl World {
    fn new(fake: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), "bmc.pass", "pw");
        let journal = dir.path().join("bmc-journal.log");
        let body = format!(
            "[fake_bmc]\nenabled = true\nlatency = \"10ms\"\njournal = \"{}\"\n{fake}\n{TIMINGS}",
            journal.display()
        );
        let settings: FakeSettings = toml::from_str(&format!(
            "enabled = true\njournal = \"{}\"\n{fake}",
            journal.display()
        ))
        .unwrap();
        World {
            dir,
            body,
            settings,
            next_port: 1,
        }
    }

    fn start(&self, kill: Option<&str>) -> Daemon {
        let env: Vec<(&str, &str)> = kill
            .map(|k| ("RACK_AGENT_KILL_AT", k))
            .into_iter()
            .collect();
        spawn_daemon(self.dir.path(), &self.body, &env, Until::Ready)
    }

    /// Enrols a server and brings it to `power` (a forced stop if need be).
    async fn add(&mut self, c: &mut RackAgentClient<Channel>, id: &str, power: Power) {
        self.next_port += 1;
        c.enroll_server(admin(pb::EnrollServerRequest {
            id: id.into(),
            project_id: "p1".into(),
            bmc: Some(pb::BmcEndpoint {
                protocol: pb::BmcProtocol::Ipmi as i32,
                address: "127.0.0.1".into(),
                port: 20000 + self.next_port as u32,
                username: "admin".into(),
                secret: Some(pb::bmc_endpoint::Secret::PasswordFile("bmc.pass".into())),
                options: Default::default(),
            }),
            skip_verify: false,
        }))
        .await
        .unwrap();
        if power == Power::Off {
            let id = Act::Stop { force: true }.submit(c, id).await;
            let a = wait_action(c, &id, Duration::from_secs(20)).await;
            assert_eq!(a.state, pb::ActionState::Succeeded as i32, "{a:?}");
        }
    }

    fn ops(&self, server: &str) -> Vec<String> {
        read_journal(self.settings.journal.as_ref().unwrap())
            .unwrap()
            .into_iter()
            .filter(|(s, _)| s == server)
            .map(|(_, op)| op)
            .collect()
    }

    /// Boots and power of a server, as its BMC would report them now.
    fn machine(&self, server: &str) -> (u64, Power) {
        let f = FakeBmcFactory::new(self.settings.clone())
            .unwrap()
            .fake_for(server);
        (f.boots(), f.power_now())
    }
}

/// The boundaries an uninterrupted run passed, as kill-point specs.
fn boundaries(kind: &str, a: &pb::Action, server: &str) -> Vec<String> {
    let mut seen: HashMap<(String, &str), u32> = HashMap::new();
    let mut out = vec![format!("{kind}:-:accepted@{server}")];
    for e in a
        .events
        .iter()
        .filter(|e| e.phase == pb::StepPhase::Started as i32)
    {
        let phases: &[&str] = if e.step.starts_with("wait_") {
            &["started", "finished"]
        } else {
            &["started", "answered", "finished"]
        };
        for b in phases {
            let n = seen.entry((e.step.clone(), b)).or_insert(0);
            *n += 1;
            out.push(format!("{kind}:{}:{b}#{n}@{server}", e.step));
        }
    }
    out
}

fn count(ops: &[String], op: &str) -> usize {
    ops.iter().filter(|o| *o == op).count()
}

/// Every scenario, killed at every boundary of its uninterrupted run.
async fn every_boundary(fake: &str, scenarios: &[Scenario]) {
    let mut world = World::new(fake);
    // 1. Reference runs, and a server for every boundary of each.
    let mut cases: Vec<(usize, String, String)> = Vec::new();
    {
        let d = world.start(None);
        let mut c = d.client().await;
        for (i, sc) in scenarios.iter().enumerate() {
            let reference = format!("ref-{i}");
            world.add(&mut c, &reference, sc.power).await;
            let id = sc.act.submit(&mut c, &reference).await;
            let a = wait_action(&mut c, &id, Duration::from_secs(30)).await;
            assert_eq!(
                a.state,
                pb::ActionState::Succeeded as i32,
                "{}: {a:#?}",
                sc.name
            );
            for (j, spec) in boundaries(sc.act.kind(), &a, "SERVER")
                .into_iter()
                .enumerate()
            {
                let server = format!("k{i}-{j}");
                world.add(&mut c, &server, sc.power).await;
                cases.push((i, server.clone(), spec.replace("SERVER", &server)));
            }
        }
    }
    // 2. One run of the agent per kill point: it resumes the action the
    //    previous run left, takes the next one, and dies at its kill point.
    let mut actions: Vec<(usize, String, String, Option<String>)> = Vec::new();
    for (i, server, spec) in &cases {
        let mut d = world.start(Some(spec));
        let mut c = d.client().await;
        // Each action is killed once: the one the last run left is finished
        // (found again by its request id, as a control plane would) first.
        if let Some((j, prev, _, _)) = actions.last() {
            let id = scenarios[*j].act.submit(&mut c, prev).await;
            wait_action(&mut c, &id, Duration::from_secs(30)).await;
        }
        // The answer may be lost when the kill comes first (`accepted`).
        let id = scenarios[*i].act.try_submit(&mut c, server).await.ok();
        drop(c);
        let status = d.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| !s.success()),
            "the daemon did not die at kill point {spec} (status {status:?}); a build without \
             `--features kill-points` ignores RACK_AGENT_KILL_AT. Its log:\n{}",
            d.log()
        );
        assert!(
            d.log().contains("kill point reached"),
            "{spec}: {}",
            d.log()
        );
        actions.push((*i, server.clone(), spec.clone(), id));
    }
    // 3. A last run finishes what the last kill left; then the BMC side.
    let mut d = world.start(None);
    let mut c = d.client().await;
    for (i, server, spec, id) in &actions {
        let sc = &scenarios[*i];
        let ctx = format!("{} killed at {spec}", sc.name);
        // The control plane retries a request whose answer it lost: the same
        // request id returns the action accepted before the crash.
        let retried = sc.act.submit(&mut c, server).await;
        if let Some(id) = id {
            assert_eq!(&retried, id, "{ctx}: the retry made a new action");
        }
        let a = wait_action(&mut c, &retried, Duration::from_secs(30)).await;
        let list = c
            .list_actions(admin(pb::ListActionsRequest {
                server_id: server.clone(),
                page_size: 10,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        let mine: Vec<_> = list
            .actions
            .iter()
            .filter(|x| x.request_id == format!("{}-{server}", sc.act.kind()))
            .collect();
        assert_eq!(mine.len(), 1, "{ctx}: one record of the request");
        let reference = format!("ref-{i}");
        let (want, got) = (world.ops(&reference), world.ops(server));
        let (want_boots, want_power) = world.machine(&reference);
        let (boots, power) = world.machine(server);
        let step = spec.split(':').nth(1).unwrap();
        let lost =
            spec.contains(":started") && PowerOp::parse(step).is_some_and(|op| !op.is_idempotent());
        for op in PowerOp::ALL {
            let (w, g) = (count(&want, op.as_str()), count(&got, op.as_str()));
            if op.is_idempotent() {
                let slack = usize::from(step == op.as_str());
                assert!(g <= w + slack, "{ctx}: {op} {g} times vs {w}: {got:?}");
            } else {
                assert!(g <= 1, "{ctx}: {op} sent {g} times: {got:?}");
            }
        }
        if lost && boots + 1 == want_boots {
            assert!(a.message.contains("not re-sent"), "{ctx}: {}", a.message);
        } else {
            assert_eq!(
                boots, want_boots,
                "{ctx}: boots; BMC saw {got:?}, clean run {want:?}"
            );
            assert_eq!(power, want_power, "{ctx}: power at the end");
            // A reinstall whose cycle was in doubt, on a BMC without restart
            // evidence, cannot know whether the installer booted: it sets
            // the boot override back and fails, asking for it again.
            let withdrawn = a.kind == pb::ActionKind::Reinstall as i32
                && a.state == pb::ActionState::Failed as i32
                && a.message.contains("was in flight when the agent stopped")
                && a.message.contains("set back to disk");
            if !withdrawn {
                assert_eq!(a.state, pb::ActionState::Succeeded as i32, "{ctx}: {a:#?}");
            }
        }
        assert!(
            a.message.contains("after an agent restart"),
            "{ctx}: {}",
            a.message
        );
    }
    assert!(d
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    eprintln!(
        "{} kill points, each a real abort and restart",
        actions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_boundary_ipmi_like() {
    every_boundary(
        "",
        &[
            Scenario {
                name: "hard/on",
                act: Act::Hard,
                power: Power::On,
            },
            Scenario {
                name: "hard/off",
                act: Act::Hard,
                power: Power::Off,
            },
            Scenario {
                name: "soft",
                act: Act::Soft,
                power: Power::On,
            },
            Scenario {
                name: "start",
                act: Act::Start,
                power: Power::Off,
            },
            Scenario {
                name: "stop",
                act: Act::Stop { force: false },
                power: Power::On,
            },
            Scenario {
                name: "stop/force",
                act: Act::Stop { force: true },
                power: Power::On,
            },
            Scenario {
                name: "pxe/on",
                act: Act::Pxe,
                power: Power::On,
            },
            Scenario {
                name: "pxe/off",
                act: Act::Pxe,
                power: Power::Off,
            },
            Scenario {
                name: "media/on",
                act: Act::Media,
                power: Power::On,
            },
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_boundary_firmware_like() {
    every_boundary(
        "graceful_restart = true\nrestart_evidence = true",
        &[
            Scenario {
                name: "hard/on/evidence",
                act: Act::Hard,
                power: Power::On,
            },
            Scenario {
                name: "soft/warm",
                act: Act::Soft,
                power: Power::On,
            },
            Scenario {
                name: "media/off",
                act: Act::Media,
                power: Power::Off,
            },
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_boundary_os_ignores_acpi() {
    every_boundary(
        "ignore_acpi = true",
        &[
            Scenario {
                name: "soft/fallback",
                act: Act::Soft,
                power: Power::On,
            },
            Scenario {
                name: "stop/fallback",
                act: Act::Stop { force: false },
                power: Power::On,
            },
        ],
    )
    .await;
    every_boundary(
        "ignore_acpi = true\ngraceful_restart = true\nrestart_evidence = true",
        &[Scenario {
            name: "soft/warm/fallback",
            act: Act::Soft,
            power: Power::On,
        }],
    )
    .await;
}
