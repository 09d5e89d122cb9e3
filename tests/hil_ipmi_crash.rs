//! Crash recovery on the bench: the real daemon (built with `--features
//! kill-points`) dies at chosen step boundaries while it drives an ipmi_sim
//! BMC whose power is a QEMU VM running the ACPI guest, and is started again.
//! The judge is the guest's own serial console, which announces every boot
//! and every clean shutdown: each request must show exactly the boots and
//! shutdowns of one uninterrupted run — never a second reboot.

mod common;
#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;

use std::time::Duration;

use common::*;
use ipmi_bench::*;
use rack_agent::proto as pb;

const SETTINGS: &str = r#"
[sync]
interval = "1s"
jitter = "100ms"

[timeouts]
bmc_command = "10s"
confirm_poll = "200ms"
power_confirm = "60s"
soft_reboot = "60s"
graceful_stop = "60s"
shutdown_grace = "2s"
"#;

const GUEST_BOOT: Duration = Duration::from_secs(120);

fn server(port: u16) -> String {
    format!(
        "[[servers]]\nid = \"n1\"\nproject = \"p1\"\nprotocol = \"ipmi\"\n\
         address = \"127.0.0.1\"\nport = {port}\nusername = \"admin\"\n\
         password_file = \"bmc.pass\"\noptions = {{ timeout = \"2s\" }}\n\n"
    )
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Soft,
    Hard,
    Stop,
    Start,
}

impl Act {
    fn kind(self) -> &'static str {
        match self {
            Act::Soft => "reboot_soft",
            Act::Hard => "reboot_hard",
            Act::Stop => "stop",
            Act::Start => "start",
        }
    }
}

async fn submit(
    c: &mut rack_agent::proto::rack_agent_client::RackAgentClient<tonic::transport::Channel>,
    act: Act,
    request_id: &str,
) -> Result<String, tonic::Status> {
    let server_id = "n1".to_string();
    let request_id = request_id.to_string();
    let r = match act {
        Act::Soft | Act::Hard => {
            c.reboot(admin(pb::RebootRequest {
                server_id,
                r#type: if matches!(act, Act::Hard) {
                    pb::RebootType::Hard
                } else {
                    pb::RebootType::Soft
                } as i32,
                request_id,
            }))
            .await
        }
        Act::Stop => {
            c.stop(admin(pb::StopRequest {
                server_id,
                force: false,
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
    };
    r.map(|a| a.into_inner().id)
}

/// One case: the action, where the agent dies, and what the console must
/// show afterwards (new boots, new clean shutdowns, power on at the end).
struct Case {
    act: Act,
    kill: &'static str,
    boots: usize,
    shutdowns: usize,
    on: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_action_never_reboots_the_guest_twice() {
    let bench = Bench::start_guest(1);
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", PASSWORD);
    let body = format!("{SETTINGS}{}", server(bench.port(0)));

    // The guest up and ready, through the daemon.
    {
        let d = start_daemon(dir.path(), &body);
        let mut c = d.client().await;
        wait_server(&mut c, "n1", Duration::from_secs(15), |s| {
            s.power_state == pb::PowerState::Off as i32
        })
        .await;
        let id = submit(&mut c, Act::Start, "warm-up").await.unwrap();
        let a = wait_action(&mut c, &id, Duration::from_secs(60)).await;
        assert_eq!(a.state, pb::ActionState::Succeeded as i32, "{a:#?}");
        bench.wait_guest_ready(0, 1, GUEST_BOOT);
    }

    // In order: each case starts from where the one before left the machine
    // (the stop leaves it off for the start).
    let cases = [
        // The power button was pressed; the OS is shutting down.
        Case {
            act: Act::Soft,
            kill: "graceful_off:answered",
            boots: 1,
            shutdowns: 1,
            on: true,
        },
        Case {
            act: Act::Soft,
            kill: "wait_off:started",
            boots: 1,
            shutdowns: 1,
            on: true,
        },
        // The machine is off; power on recorded but never sent: sent once now.
        Case {
            act: Act::Soft,
            kill: "power_on:started",
            boots: 1,
            shutdowns: 1,
            on: true,
        },
        // Power on reached the BMC: not sent again.
        Case {
            act: Act::Soft,
            kill: "power_on:answered",
            boots: 1,
            shutdowns: 1,
            on: true,
        },
        // The reset reached the BMC: never sent again.
        Case {
            act: Act::Hard,
            kill: "hard_reset:answered",
            boots: 1,
            shutdowns: 0,
            on: true,
        },
        Case {
            act: Act::Hard,
            kill: "wait_restart:started",
            boots: 1,
            shutdowns: 0,
            on: true,
        },
        Case {
            act: Act::Stop,
            kill: "graceful_off:answered",
            boots: 0,
            shutdowns: 1,
            on: false,
        },
        Case {
            act: Act::Start,
            kill: "power_on:answered",
            boots: 1,
            shutdowns: 0,
            on: true,
        },
        // The reset was recorded as started but never sent: it is not sent
        // after the restart either, and IPMI offers no evidence either way,
        // so the action must say the restart is not confirmed.
        Case {
            act: Act::Hard,
            kill: "hard_reset:started",
            boots: 0,
            shutdowns: 0,
            on: true,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let spec = format!("{}:{}@n1", case.act.kind(), case.kill);
        let rid = format!("case-{i}");
        let (boots, shutdowns) = (bench.guest_boots(0), bench.clean_shutdowns(0));
        let pid_before = bench.qemu_pid(0);

        let mut d = spawn_daemon(
            dir.path(),
            &body,
            &[("RACK_AGENT_KILL_AT", spec.as_str())],
            Until::Ready,
        );
        let mut c = d.client().await;
        let accepted = submit(&mut c, case.act, &rid).await;
        drop(c);
        let status = d.wait_exit(Duration::from_secs(90));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{spec}: the daemon did not die at its kill point (built without \
             --features kill-points?); log:\n{}",
            d.log()
        );

        let d = start_daemon(dir.path(), &body);
        let mut c = d.client().await;
        // The control plane retries with its request id: the same action.
        let id = submit(&mut c, case.act, &rid).await.unwrap();
        if let Ok(first) = &accepted {
            assert_eq!(&id, first, "{spec}: the retry made a second action");
        }
        let a = wait_action(&mut c, &id, Duration::from_secs(180)).await;
        let story = format!("{spec}: {} / {:#?}", a.message, a.events);
        assert_eq!(a.state, pb::ActionState::Succeeded as i32, "{story}");
        assert!(a.message.contains("after an agent restart"), "{story}");
        if case.on {
            bench.wait_guest_ready(0, boots + case.boots, GUEST_BOOT);
        } else {
            wait_until("QEMU gone", Duration::from_secs(60), || {
                bench.qemu_pid(0).is_none()
            });
        }
        // Settle, then count: a second reboot would show by now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let log = bench.serial_log(0);
        assert_eq!(
            bench.guest_boots(0) - boots,
            case.boots,
            "{story}\nconsole:\n{}",
            tail(&log, 30)
        );
        assert_eq!(
            bench.clean_shutdowns(0) - shutdowns,
            case.shutdowns,
            "{story}\nconsole:\n{}",
            tail(&log, 30)
        );
        if matches!(case.act, Act::Hard) && case.boots == 1 {
            // A hard reset restarts the same QEMU process.
            assert_eq!(bench.qemu_pid(0), pid_before, "{story}");
        }
        if case.boots == 0 && case.on {
            assert!(
                a.message.contains("not re-sent") && a.message.contains("not confirmed"),
                "{story}"
            );
        }
        let (ok, out) = bench.ipmitool(0, &["chassis", "power", "status"]);
        let want = if case.on {
            "Chassis Power is on"
        } else {
            "Chassis Power is off"
        };
        assert!(ok && out.contains(want), "{spec}: {out}");
        drop(d);
    }
}
