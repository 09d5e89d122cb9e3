//! The daemon is killed with SIGKILL while 20 actions are in flight. After a
//! restart every accepted action has exactly one terminal state, none is lost,
//! and no non-idempotent command (reset, power cycle) reached a BMC twice: the
//! fake BMCs journal every command to a file before it takes effect.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rack_agent::bmc::fake::read_journal;
use rack_agent::proto as pb;

fn config(journal: &std::path::Path) -> String {
    format!(
        "[fake_bmc]\nenabled = true\nlatency = \"250ms\"\njournal = \"{}\"\n\n[sync]\ninterval = \"1s\"\njitter = \"100ms\"\n\n[timeouts]\nconfirm_poll = \"100ms\"\nsoft_reboot = \"5s\"\ngraceful_stop = \"5s\"\npower_confirm = \"10s\"\n\n{}",
        journal.display(),
        inventory("n", 20, "p1")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_20_actions_in_flight_loses_nothing_and_resends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let journal = dir.path().join("bmc-journal.log");
    let mut d = start_daemon(dir.path(), &config(&journal));
    let mut c = d.client().await;
    for i in 1..=20 {
        wait_server(&mut c, &format!("n-{i:02}"), Duration::from_secs(20), |s| {
            s.vm_state == pb::VmState::Active as i32
        })
        .await;
    }

    // 20 actions, staggered so the kill finds them at different steps.
    let mut accepted: HashMap<String, (String, &str)> = HashMap::new();
    for i in 1..=20usize {
        let server = format!("n-{i:02}");
        let rid = format!("crash-{i}");
        let (a, kind) = match i % 4 {
            0 => (
                c.reboot(admin(pb::RebootRequest {
                    server_id: server.clone(),
                    r#type: pb::RebootType::Hard as i32,
                    request_id: rid,
                }))
                .await,
                "hard",
            ),
            1 => (
                c.reinstall(admin(pb::ReinstallRequest {
                    server_id: server.clone(),
                    boot_source: Some(pb::reinstall_request::BootSource::Pxe(true)),
                    request_id: rid,
                }))
                .await,
                "reinstall",
            ),
            2 => (
                c.reboot(admin(pb::RebootRequest {
                    server_id: server.clone(),
                    r#type: pb::RebootType::Soft as i32,
                    request_id: rid,
                }))
                .await,
                "soft",
            ),
            _ => (
                c.stop(admin(pb::StopRequest {
                    server_id: server.clone(),
                    force: false,
                    request_id: rid,
                }))
                .await,
                "stop",
            ),
        };
        let a = a.expect("action accepted").into_inner();
        accepted.insert(server, (a.id, kind));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.kill();
    drop(c);

    let mut d = start_daemon(dir.path(), &config(&journal));
    let mut c = d.client().await;
    let mut recovered = 0;
    let mut confirmed_without_resend = 0;
    let mut withdrawn_reinstalls: Vec<String> = Vec::new();
    for (server, (id, kind)) in &accepted {
        let a = wait_action(&mut c, id, Duration::from_secs(60)).await;
        // A reinstall caught with its cycle in flight, on a BMC without
        // restart evidence (the fake's default), cannot know whether the
        // server booted the installer: it withdraws the boot override and
        // fails, asking for the reinstall again (README, "Recovery").
        let withdrawn = *kind == "reinstall"
            && a.state == pb::ActionState::Failed as i32
            && a.message.contains("not re-sent")
            && a.message.contains("set back to disk");
        if withdrawn {
            withdrawn_reinstalls.push(server.clone());
        } else {
            assert_eq!(
                a.state,
                pb::ActionState::Succeeded as i32,
                "{server} {kind}: {a:#?}"
            );
        }
        if a.events.iter().any(|e| e.step == "recovery") {
            recovered += 1;
        }
        // Caught with its reset or cycle already started when the agent died:
        // the resumed run must not send it again (the journal check below).
        let resumed_at = a.events.iter().position(|e| e.step == "recovery");
        let reset_started = a.events.iter().position(|e| {
            e.phase == pb::StepPhase::Started as i32
                && matches!(e.step.as_str(), "hard_reset" | "power_cycle")
        });
        if let (Some(r), Some(s)) = (resumed_at, reset_started) {
            if s < r {
                confirmed_without_resend += 1;
            }
        }
        // Exactly one record of it, terminal, in the server's history.
        let list = c
            .list_actions(admin(pb::ListActionsRequest {
                server_id: server.clone(),
                page_size: 100,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = list.actions.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, [id.as_str()], "{server}");
        // A retry of the same request after the restart is the same action.
        let retry = c
            .get_action(admin(pb::GetActionRequest { id: id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&retry.id, id);
    }
    assert!(
        recovered > 0,
        "the kill found no action in flight; the test proved nothing"
    );
    assert!(
        confirmed_without_resend > 0,
        "no action was caught with its reset/cycle in flight; the test proved nothing"
    );

    // The BMCs' own record: each non-idempotent command reached its BMC once.
    let mut resets: HashMap<String, usize> = HashMap::new();
    for (server, op) in read_journal(&journal).unwrap() {
        if op == "hard_reset" || op == "power_cycle" {
            *resets.entry(server).or_default() += 1;
        }
    }
    for (server, (_, kind)) in &accepted {
        let n = resets.get(server).copied().unwrap_or(0);
        let want = match *kind {
            "hard" | "reinstall" => 1,
            _ => 0,
        };
        if withdrawn_reinstalls.contains(server) {
            // In doubt: it may or may not have reached the BMC, never twice.
            assert!(n <= 1, "{server} ({kind}) got {n} resets/cycles");
        } else {
            assert_eq!(n, want, "{server} ({kind}) got {n} resets/cycles");
        }
    }
    assert!(d
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
}
