//! End to end: the real daemon on a loopback port with a fake-BMC inventory
//! (`[fake_bmc]`), driven with rackctl and with a tonic client.

mod common;

use std::time::Duration;

use common::*;
use rack_agent::proto as pb;
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::Code;

type Client = rack_agent::proto::rack_agent_client::RackAgentClient<tonic::transport::Channel>;

const FAKE: &str = "[fake_bmc]\nenabled = true\nlatency = \"20ms\"\n\n[sync]\ninterval = \"300ms\"\njitter = \"50ms\"\n\n[timeouts]\nconfirm_poll = \"50ms\"\nsoft_reboot = \"2s\"\ngraceful_stop = \"2s\"\n\n";

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "rackctl failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn rackctl_drives_a_fake_rack() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "rack-secret-0451");
    let d = start_daemon(
        dir.path(),
        &format!("{FAKE}{}", inventory("node", 3, "tenant-a")),
    );
    let mut client = d.client().await;
    wait_server(&mut client, "node-01", Duration::from_secs(10), |s| {
        s.power_state == pb::PowerState::On as i32
    })
    .await;

    let servers = json(&d.rackctl(&["--output", "json", "servers"]));
    let ids: Vec<&str> = servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-01", "node-02", "node-03"]);
    assert_eq!(servers[0]["bmc"]["credential_source"], "file:bmc.pass");

    // HARD reboot, waited for: exit 0 and the action says SUCCEEDED.
    let a = json(&d.rackctl(&["-o", "json", "reboot", "node-01", "--hard", "--wait"]));
    assert_eq!(a["state"], "succeeded");
    assert_eq!(a["kind"], "reboot_hard");
    let steps: Vec<&str> = a["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"hard_reset"), "{steps:?}");

    // Stop, then start, each visible in the power report.
    json(&d.rackctl(&["-o", "json", "stop", "node-02", "--force", "--wait"]));
    let p = json(&d.rackctl(&["-o", "json", "power", "node-02", "--refresh"]));
    assert_eq!(p["power_state"], "off");
    assert_eq!(p["vm_state"], "shutoff");
    assert_eq!(p["source"], "bmc");
    json(&d.rackctl(&["-o", "json", "start", "node-02", "--wait"]));

    // The history, newest first.
    let acts = json(&d.rackctl(&["-o", "json", "actions", "node-02"]));
    let kinds: Vec<&str> = acts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "stop"]);

    // Human output by default.
    let out = d.rackctl(&["show", "node-03"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server     node-03"), "{text}");

    // Failures: non-zero exit, gRPC code and message on stderr.
    let out = d.rackctl(&["show", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound") && err.contains("nope"), "{err}");

    let out = d.rackctl(&[
        "--roles",
        "member",
        "--project",
        "tenant-b",
        "reboot",
        "node-01",
        "--hard",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PermissionDenied") && err.contains("admin_or_owner"),
        "{err}"
    );

    let out = d.rackctl(&["start", "node-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FailedPrecondition"));

    // A usage error is exit 2; an unreachable agent exit 3.
    assert_eq!(d.rackctl(&["reinstall", "node-01"]).status.code(), Some(2));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rackctl"))
        .args(["--endpoint", "http://127.0.0.1:1", "servers"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));

    // A failed action: exit 4 with --wait.
    let out = d.rackctl(&["reinstall", "node-03", "--virtual-media", "ftp://x/y.iso"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a non-http URL is refused up front"
    );

    assert!(
        !d.log().contains("rack-secret-0451"),
        "secret in the daemon log"
    );
}

#[tokio::test]
async fn tonic_client_gets_exact_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), FAKE);
    let mut c = d.client().await;
    let secret = "inline-secret-7781";

    // Enrol with an inline password: no answer ever carries it.
    let enroll = |id: &str, project: &str| pb::EnrollServerRequest {
        id: id.into(),
        project_id: project.into(),
        bmc: Some(pb::BmcEndpoint {
            protocol: pb::BmcProtocol::Redfish as i32,
            address: "127.0.0.1".into(),
            port: 0,
            username: "root".into(),
            secret: Some(pb::bmc_endpoint::Secret::Password(secret.into())),
            options: Default::default(),
        }),
        skip_verify: false,
    };
    let s = c
        .enroll_server(admin(enroll("a1", "p1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.bmc.as_ref().unwrap().port, 443);
    assert_eq!(s.power_state, pb::PowerState::On as i32);
    assert_eq!(s.vm_state, pb::VmState::Active as i32);
    c.enroll_server(admin(enroll("a2", "p2"))).await.unwrap();
    let err = c
        .enroll_server(admin(enroll("a1", "p1")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Only an admin enrols.
    let err = c
        .enroll_server(as_caller(enroll("a3", "p1"), "u", "member", "p1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Paging.
    let page = c
        .list_servers(admin(pb::ListServersRequest {
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.servers.len(), 1);
    assert_eq!(page.next_page_token, "a1");
    let page2 = c
        .list_servers(admin(pb::ListServersRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.servers[0].id, "a2");
    assert!(!format!("{page:?}{page2:?}").contains(secret));
    // A member sees only their project.
    let mine = c
        .list_servers(as_caller(
            pb::ListServersRequest::default(),
            "u",
            "member",
            "p2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mine.servers
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["a2"]
    );

    // Bad input.
    let err = c
        .reboot(admin(pb::RebootRequest {
            server_id: "a1".into(),
            r#type: 0,
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("UNSPECIFIED"));
    let err = c
        .reboot(admin(pb::RebootRequest {
            server_id: "zz".into(),
            r#type: 2,
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .reboot(tonic::Request::new(pb::RebootRequest {
            server_id: "a1".into(),
            r#type: 2,
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A watch of all events, opened before the actions.
    let mut watch = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![],
            after_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner();

    // An action, retried with its request_id: one action. A conflicting one: 409.
    let req = pb::RebootRequest {
        server_id: "a1".into(),
        r#type: pb::RebootType::Soft as i32,
        request_id: "cp-1".into(),
    };
    let a = c.reboot(admin(req.clone())).await.unwrap().into_inner();
    let again = c.reboot(admin(req)).await.unwrap().into_inner();
    assert_eq!(a.id, again.id);
    let err = c
        .stop(admin(pb::StopRequest {
            server_id: "a1".into(),
            force: false,
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&a.id), "{}", err.message());

    // WatchAction streams until the action ends.
    let mut stream = c
        .watch_action(admin(pb::WatchActionRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(x) = stream.next().await {
        last = Some(x.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.state, pb::ActionState::Succeeded as i32, "{last:?}");
    assert!(last.finished_at.is_some());

    // The watch saw the task start and end, in order, numbered without gaps.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        if ev.kind == pb::EventKind::TaskChanged as i32 {
            seen.push(ev);
        }
    }
    assert_eq!(seen[0].task, "reboot_soft");
    assert_eq!(seen[1].task, "");
    assert!(seen[0].seq < seen[1].seq);

    // Resume from a cursor: the stream replays what came after it.
    let cursor = seen[0].seq - 1;
    let mut resumed = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["a1".into()],
            after_seq: cursor,
        }))
        .await
        .unwrap()
        .into_inner();
    let first = resumed.next().await.unwrap().unwrap();
    assert_eq!(first.seq, seen[0].seq);
    let err = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![],
            after_seq: 1_000_000,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);

    // Reset-state and locks through the API.
    let r = c
        .reset_state(admin(pb::ResetStateRequest {
            server_id: "a2".into(),
            state: pb::ResetStateTarget::Error as i32,
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::ActionState::Succeeded as i32);
    let s = c
        .get_server(admin(pb::GetServerRequest { id: "a2".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.vm_state, pb::VmState::Error as i32);
    c.lock(as_caller(
        pb::LockRequest {
            server_id: "a2".into(),
            request_id: String::new(),
        },
        "u",
        "member",
        "p2",
    ))
    .await
    .unwrap();
    let err = c
        .reboot(as_caller(
            pb::RebootRequest {
                server_id: "a2".into(),
                r#type: 2,
                request_id: String::new(),
            },
            "u",
            "member",
            "p2",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("locked"));

    // Removal.
    c.remove_server(admin(pb::RemoveServerRequest { id: "a2".into() }))
        .await
        .unwrap();
    let err = c
        .get_server(admin(pb::GetServerRequest { id: "a2".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    assert!(!d.log().contains(secret), "secret in the daemon log");
}

fn lock(server: &str) -> pb::LockRequest {
    pb::LockRequest {
        server_id: server.into(),
        request_id: String::new(),
    }
}

fn unlock(server: &str) -> pb::UnlockRequest {
    pb::UnlockRequest {
        server_id: server.into(),
        request_id: String::new(),
    }
}

/// Defect 4: the owner could re-lock an admin's lock, which cleared
/// `locked_by_admin`, and then unlock it.
#[tokio::test]
async fn only_an_admin_changes_an_admins_lock() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_daemon(
        dir.path(),
        &format!("{FAKE}{}", inventory("node", 1, "tenant-a")),
    );
    let mut c = d.client().await;
    fn owner<T>(m: T) -> tonic::Request<T> {
        as_caller(m, "u-a", "member", "tenant-a")
    }
    let locked_by_admin = |s: &pb::Server| (s.locked, s.locked_by_admin);
    async fn server(c: &mut Client) -> pb::Server {
        c.get_server(admin(pb::GetServerRequest {
            id: "node-01".into(),
        }))
        .await
        .unwrap()
        .into_inner()
    }

    c.lock(admin(lock("node-01"))).await.unwrap();
    assert_eq!(locked_by_admin(&server(&mut c).await), (true, true));

    // The owner's Lock would replace the admin's lock with their own: refused.
    let err = c.lock(owner(lock("node-01"))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("the lock was set by an admin"),
        "{}",
        err.message()
    );
    assert_eq!(locked_by_admin(&server(&mut c).await), (true, true));
    // And so is their Unlock, before and after the refused Lock.
    let err = c.unlock(owner(unlock("node-01"))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(locked_by_admin(&server(&mut c).await), (true, true));

    // An admin lifts it; then the owner's own lock is theirs to lift.
    c.unlock(admin(unlock("node-01"))).await.unwrap();
    c.lock(owner(lock("node-01"))).await.unwrap();
    assert_eq!(locked_by_admin(&server(&mut c).await), (true, false));
    c.lock(owner(lock("node-01"))).await.unwrap();
    c.unlock(owner(unlock("node-01"))).await.unwrap();
    assert_eq!(locked_by_admin(&server(&mut c).await), (false, false));
}

/// Defect 5: a request_id another project had used was refused with that
/// project's action id, kind and server in the message.
#[tokio::test]
async fn request_ids_are_scoped_to_the_callers_project() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_daemon(
        dir.path(),
        &format!(
            "{FAKE}{}{}",
            inventory("a", 1, "tenant-a"),
            inventory("b", 1, "tenant-b")
        ),
    );
    let mut c = d.client().await;
    let as_a = |m| as_caller(m, "alice", "member", "tenant-a");
    let as_b = |m| as_caller(m, "bob", "member", "tenant-b");
    let lock_with = |server: &str, rid: &str| pb::LockRequest {
        server_id: server.into(),
        request_id: rid.into(),
    };

    let a1 = c
        .lock(as_a(lock_with("a-01", "rid-1")))
        .await
        .unwrap()
        .into_inner();
    // Project B's own request with the same id: a new action of its own, and
    // nothing about project A's.
    let b1 = c
        .lock(as_b(lock_with("b-01", "rid-1")))
        .await
        .unwrap_or_else(|e| panic!("project B's request was refused: {e:?}"))
        .into_inner();
    assert_ne!(b1.id, a1.id);
    assert_eq!(b1.server_id, "b-01");
    // Retries within each project return that project's action.
    let again = c
        .lock(as_b(lock_with("b-01", "rid-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, b1.id);
    let again = c
        .lock(as_a(lock_with("a-01", "rid-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, a1.id);
    // The same id for another request of the same project: refused, naming
    // only that project's action.
    let err = c
        .unlock(as_caller(
            pb::UnlockRequest {
                server_id: "b-01".into(),
                request_id: "rid-1".into(),
            },
            "bob",
            "member",
            "tenant-b",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&b1.id), "{}", err.message());
    assert!(
        !err.message().contains(&a1.id) && !err.message().contains("a-01"),
        "another project's action leaked: {}",
        err.message()
    );
}

/// Lock/Unlock `server` `n` times as an admin: one event each, no BMC traffic.
async fn flip_locks(mut c: Client, server: String, n: usize) {
    for i in 0..n {
        if i % 2 == 0 {
            c.lock(admin(lock(&server))).await.unwrap();
        } else {
            c.unlock(admin(unlock(&server))).await.unwrap();
        }
    }
}

/// The `x-rackagent-resume-after-seq` trailer of a status, if any.
fn resume_after(st: &tonic::Status) -> Option<u64> {
    st.metadata()
        .get("x-rackagent-resume-after-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Defect 6: with `events.retain = 60`, a watcher that stopped reading while
/// thousands of events were written jumped from one seq to a far later one,
/// with no error: the catch-up from the store did not check for the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_ends_out_of_range_and_never_skips() {
    const EVENTS: usize = 8_000;
    // Thousands of synced writes: on tmpfs where there is one, since the
    // disk's fsync latency is not what this test is about.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_daemon(
        dir.path(),
        &format!(
            "{FAKE}[events]\nretain = 60\n\n{}",
            inventory("node", 2, "tenant-a")
        ),
    );
    let c = d.client().await;
    let watch_all = || {
        admin(pb::WatchPowerStateRequest {
            server_ids: vec![],
            after_seq: 0,
        })
    };
    // A watcher that keeps up, reading in a task of its own.
    let mut fast = c
        .clone()
        .watch_power_state(watch_all())
        .await
        .unwrap()
        .into_inner();
    let fast = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(3), fast.next()).await {
                Ok(Some(Ok(ev))) => seqs.push(ev.seq),
                Ok(Some(Err(e))) => panic!("the watcher that keeps up got {e:?}"),
                Ok(None) => panic!("the watcher that keeps up ended"),
                Err(_) => return seqs, // quiet for 3 s: the storm is over
            }
        }
    });
    // A watcher on a connection of its own with a small HTTP/2 stream window,
    // so the agent's buffers fill once it stops reading. (The connection
    // window stays large: h2 sizes its budget of buffered small DATA frames
    // by it, and ends a connection that exceeds it.)
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(1 << 20)
        .connect()
        .await
        .unwrap();
    let mut slow = rack_agent::proto::rack_agent_client::RackAgentClient::new(channel)
        .watch_power_state(watch_all())
        .await
        .unwrap()
        .into_inner();
    flip_locks(c.clone(), "node-01".into(), 1).await;
    let first = slow.next().await.unwrap().unwrap();

    // The storm, while the slow watcher reads nothing.
    let started = std::time::Instant::now();
    let a = tokio::spawn(flip_locks(c.clone(), "node-01".into(), EVENTS / 2));
    let b = tokio::spawn(flip_locks(c.clone(), "node-02".into(), EVENTS / 2));
    a.await.unwrap();
    b.await.unwrap();
    eprintln!("{EVENTS} events in {:?}", started.elapsed());

    // The slow watcher: an unbroken run of events, then OUT_OF_RANGE naming
    // where it stands and where to resume.
    let mut last = first.seq;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("the slow watcher stalled")
        {
            Some(Ok(ev)) => {
                assert_eq!(
                    ev.seq,
                    last + 1,
                    "the watch skipped from {last} to {}",
                    ev.seq
                );
                last = ev.seq;
            }
            Some(Err(st)) => break st,
            None => panic!("the watch ended OK after seq {last} without the rest"),
        }
    };
    assert_eq!(end.code(), Code::OutOfRange, "{end:?}");
    assert!(
        end.message().contains(&format!("seq {last}")),
        "the message names the last seq delivered ({last}): {}",
        end.message()
    );
    let resume = resume_after(&end).expect("x-rackagent-resume-after-seq trailer");
    assert!(
        end.message().contains(&format!("after_seq = {resume}")),
        "{}",
        end.message()
    );
    // Resuming from there is accepted.
    let mut again = c
        .clone()
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![],
            after_seq: resume,
        }))
        .await
        .unwrap()
        .into_inner();
    flip_locks(c.clone(), "node-01".into(), 1).await;
    let next = again.next().await.unwrap().unwrap();
    assert!(next.seq > resume, "{next:?}");

    // The watcher that kept up saw every event, in order.
    let seqs = fast.await.unwrap();
    assert!(seqs.len() > EVENTS, "{} events", seqs.len());
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the watcher that kept up skipped");
    }
}

/// Defect 7: on SIGTERM, WatchAction ended with status OK while its action
/// was still RUNNING (and WatchPowerState ended OK too), so a client could
/// not tell "done" from "the agent went away".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_unavailable_saying_how_to_resume_when_the_agent_stops() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    // The OS ignores ACPI: a SOFT reboot waits (a minute) for the power to go.
    let body = format!(
        "[fake_bmc]\nenabled = true\nlatency = \"20ms\"\nignore_acpi = true\n\n[sync]\ninterval = \"300ms\"\njitter = \"50ms\"\n\n[timeouts]\nconfirm_poll = \"50ms\"\nsoft_reboot = \"60s\"\nshutdown_grace = \"1s\"\n\n{}",
        inventory("node", 1, "tenant-a")
    );
    let mut d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    wait_server(&mut c, "node-01", Duration::from_secs(10), |s| {
        s.power_state == pb::PowerState::On as i32
    })
    .await;
    let mut events = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![],
            after_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let a = c
        .reboot(admin(pb::RebootRequest {
            server_id: "node-01".into(),
            r#type: pb::RebootType::Soft as i32,
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut action = c
        .watch_action(admin(pb::WatchActionRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    // Running: the graceful off was sent and the agent waits for the power.
    loop {
        let now = action.next().await.unwrap().unwrap();
        if now.events.iter().any(|e| e.step.contains("graceful")) {
            assert_eq!(now.state, pb::ActionState::Running as i32, "{now:?}");
            break;
        }
    }
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.task, "reboot_soft", "{first:?}");

    let pid = d.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();

    // WatchAction: UNAVAILABLE, naming the action and how to follow it on.
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), action.next())
            .await
            .expect("WatchAction did not end after SIGTERM")
        {
            Some(Ok(now)) => assert_eq!(now.state, pb::ActionState::Running as i32),
            Some(Err(st)) => break st,
            None => panic!("WatchAction ended OK while action {} still runs", a.id),
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains(&a.id), "{}", end.message());
    assert!(end.message().contains("GetAction"), "{}", end.message());
    assert_eq!(
        end.metadata()
            .get("x-rackagent-action-id")
            .and_then(|v| v.to_str().ok()),
        Some(a.id.as_str())
    );

    // WatchPowerState: UNAVAILABLE, naming the last seq it delivered.
    let mut last = first.seq;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("WatchPowerState did not end after SIGTERM")
        {
            Some(Ok(ev)) => last = ev.seq,
            Some(Err(st)) => break st,
            None => panic!("WatchPowerState ended OK after seq {last}"),
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(
        end.message().contains(&format!("after_seq = {last}")),
        "{}",
        end.message()
    );
    assert_eq!(resume_after(&end), Some(last));

    let exit = d
        .wait_exit(Duration::from_secs(20))
        .expect("the agent did not stop");
    assert!(exit.success(), "{exit}");
}

/// Asserts a refusal: its code, that it names `field`, and that it is short.
#[track_caller]
fn refused<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let st = r.expect_err("accepted");
    assert_eq!(
        st.code(),
        code,
        "{}: {}",
        field,
        &st.message()[..st.message().len().min(300)]
    );
    assert!(
        st.message().contains(field),
        "the message does not name {field}: {}",
        &st.message()[..st.message().len().min(300)]
    );
    assert!(
        st.message().len() < 256,
        "{field}: a {}-byte message echoes the input",
        st.message().len()
    );
}

/// Defect 8: only enrolment checked an id's length, and every refusal echoed
/// the input whole: a 64 KB id came back in a 65 KB error.
#[tokio::test]
async fn bad_and_oversize_input_is_refused_briefly_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_daemon(
        dir.path(),
        &format!("{FAKE}{}", inventory("node", 2, "tenant-a")),
    );
    let mut c = d.client().await;
    let big = "x".repeat(64 * 1024);

    refused(
        c.reboot(admin(hard_reboot(&big))).await,
        Code::InvalidArgument,
        "server_id",
    );
    refused(
        c.get_server(admin(pb::GetServerRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    );
    refused(
        c.remove_server(admin(pb::RemoveServerRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    );
    refused(
        c.get_action(admin(pb::GetActionRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    );
    refused(
        c.watch_action(admin(pb::WatchActionRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    );
    refused(
        c.list_actions(admin(pb::ListActionsRequest {
            server_id: big.clone(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "server_id",
    );
    refused(
        c.list_actions(admin(pb::ListActionsRequest {
            server_id: "node-01".into(),
            page_token: big.clone(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "page_token",
    );
    refused(
        c.get_power_state(admin(pb::GetPowerStateRequest {
            server_id: big.clone(),
            refresh: false,
        }))
        .await,
        Code::InvalidArgument,
        "server_id",
    );
    refused(
        c.watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["node-01".into(), big.clone()],
            after_seq: 0,
        }))
        .await,
        Code::InvalidArgument,
        "server_ids",
    );
    refused(
        c.reboot(admin(pb::RebootRequest {
            request_id: big.clone(),
            ..hard_reboot("node-01")
        }))
        .await,
        Code::InvalidArgument,
        "request_id",
    );
    let enroll = |id: &str, project: &str| pb::EnrollServerRequest {
        id: id.into(),
        project_id: project.into(),
        bmc: Some(pb::BmcEndpoint {
            protocol: pb::BmcProtocol::Ipmi as i32,
            address: "127.0.0.1".into(),
            port: 0,
            username: "u".into(),
            secret: Some(pb::bmc_endpoint::Secret::PasswordFile("bmc.pass".into())),
            options: Default::default(),
        }),
        skip_verify: true,
    };
    refused(
        c.enroll_server(admin(enroll(&big, "p1"))).await,
        Code::InvalidArgument,
        "id",
    );
    refused(
        c.enroll_server(admin(enroll("n9", &big))).await,
        Code::InvalidArgument,
        "project_id",
    );
    // One rule for every id: characters too, not only length.
    refused(
        c.reboot(admin(hard_reboot("node-01\n"))).await,
        Code::InvalidArgument,
        "server_id",
    );
    refused(
        c.reboot(admin(pb::RebootRequest {
            request_id: "retry 1".into(),
            ..hard_reboot("node-01")
        }))
        .await,
        Code::InvalidArgument,
        "request_id",
    );
    // The caller's identity follows the same rule.
    let long = "u".repeat(4000);
    refused(
        c.get_server(as_caller(
            pb::GetServerRequest {
                id: "node-01".into(),
            },
            &long,
            "admin",
            "ops",
        ))
        .await,
        Code::Unauthenticated,
        "x-rackagent-caller",
    );
    refused(
        c.get_server(as_caller(
            pb::GetServerRequest {
                id: "node-01".into(),
            },
            "u",
            "admin",
            &long,
        ))
        .await,
        Code::Unauthenticated,
        "x-rackagent-project",
    );

    // Virtual media URLs go through a URL parser.
    let reinstall = |url: &str| pb::ReinstallRequest {
        server_id: "node-01".into(),
        boot_source: Some(pb::reinstall_request::BootSource::VirtualMediaUrl(
            url.into(),
        )),
        request_id: String::new(),
    };
    for url in [
        "http://images.example/a b.iso",
        "http:///x.iso",
        "https://",
        "http://h/x\u{7}.iso",
    ] {
        refused(
            c.reinstall(admin(reinstall(url))).await,
            Code::InvalidArgument,
            "virtual_media_url",
        );
    }
    c.reinstall(admin(reinstall("HTTPS://Images.Example:8443/rhel9.iso")))
        .await
        .expect("an upper-case scheme is a valid URL");

    // Over the request size limit: RESOURCE_EXHAUSTED (OUT_OF_RANGE is for cursors).
    for size in [1_000_000, 2 << 20] {
        let st = c
            .reboot(admin(hard_reboot(&"x".repeat(size))))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::ResourceExhausted, "{size}: {st:?}");
        assert!(
            st.message().contains("too large") && st.message().contains("262144"),
            "{}",
            st.message()
        );
    }
    // Just under it: decoded, then refused as an id.
    refused(
        c.reboot(admin(hard_reboot(&"x".repeat(200 * 1024)))).await,
        Code::InvalidArgument,
        "server_id",
    );
}

/// Defect 11: the fake BMC journal had no default location, and a journal
/// path in a directory that did not exist stopped the daemon at start.
#[tokio::test]
async fn the_fake_bmc_journal_defaults_to_the_state_directory_and_makes_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_daemon(
        dir.path(),
        &format!("{FAKE}{}", inventory("node", 1, "tenant-a")),
    );
    let mut c = d.client().await;
    let a = c
        .reboot(admin(hard_reboot("node-01")))
        .await
        .unwrap()
        .into_inner();
    wait_action(&mut c, &a.id, Duration::from_secs(10)).await;
    let journal = dir.path().join("state/fake-bmc.journal");
    let text = std::fs::read_to_string(&journal)
        .unwrap_or_else(|e| panic!("no journal at {}: {e}", journal.display()));
    assert!(text.contains("node-01 hard_reset"), "{text}");
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let journal = dir.path().join("not/yet/there/bmc.journal");
    let fake = FAKE.replace(
        "[fake_bmc]\n",
        &format!("[fake_bmc]\njournal = \"{}\"\n", journal.display()),
    );
    let d = start_daemon(
        dir.path(),
        &format!("{fake}{}", inventory("node", 1, "tenant-a")),
    );
    let mut c = d.client().await;
    let a = c
        .reboot(admin(hard_reboot("node-01")))
        .await
        .unwrap()
        .into_inner();
    wait_action(&mut c, &a.id, Duration::from_secs(10)).await;
    assert!(std::fs::read_to_string(&journal)
        .unwrap()
        .contains("node-01 hard_reset"));
}

/// A fleet sweep in one call: each server's fresh reading or its own
/// failure (a hung BMC, an unknown id, another project's server), in the
/// order asked; no ids means every server the caller may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sweep_answers_each_server_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let body = format!(
        "[fake_bmc]\nenabled = true\nlatency = \"20ms\"\nhang = [\"n-03\"]\n\n\
         [timeouts]\nbmc_command = \"1s\"\n\n{}{}",
        inventory("n", 3, "p1"),
        inventory("q", 1, "p2")
    );
    let d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    let sweep = |ids: &[&str], refresh| pb::GetPowerStatesRequest {
        server_ids: ids.iter().map(|s| s.to_string()).collect(),
        refresh,
    };
    let r = c
        .get_power_states(as_caller(
            sweep(&["n-01", "n-02", "n-03", "nope", "q-01"], true),
            "u1",
            "member",
            "p1",
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    let ids: Vec<&str> = r.iter().map(|x| x.server_id.as_str()).collect();
    assert_eq!(ids, ["n-01", "n-02", "n-03", "nope", "q-01"]);
    for ok in &r[..2] {
        let st = ok.status.as_ref().expect("a reading");
        assert_eq!(st.source, "bmc", "{ok:?}");
        assert_eq!(st.power_state, pb::PowerState::On as i32);
    }
    assert_eq!(r[2].error_code, Code::Unavailable as i32, "{:?}", r[2]);
    assert!(
        r[2].error.contains("n-03") && r[2].status.is_none(),
        "{:?}",
        r[2]
    );
    assert_eq!(r[3].error_code, Code::NotFound as i32, "{:?}", r[3]);
    assert_eq!(r[4].error_code, Code::PermissionDenied as i32, "{:?}", r[4]);
    // No ids: every server the caller may read, from the cache.
    let all = c
        .get_power_states(as_caller(sweep(&[], false), "u1", "member", "p1"))
        .await
        .unwrap()
        .into_inner()
        .results;
    let ids: Vec<&str> = all.iter().map(|x| x.server_id.as_str()).collect();
    assert_eq!(ids, ["n-01", "n-02", "n-03"]);
    assert!(all
        .iter()
        .all(|x| x.status.as_ref().is_some_and(|s| s.source == "cache")));
    // Too many ids, or a bad one: the call itself is refused, naming the field.
    let many: Vec<String> = (0..10_001).map(|i| format!("s{i}")).collect();
    let err = c
        .get_power_states(admin(pb::GetPowerStatesRequest {
            server_ids: many,
            refresh: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("server_ids"), "{}", err.message());
    // rackctl: a table, and exit 1 naming how many could not be read.
    let out = d.rackctl(&["sweep", "--refresh", "n-01", "n-03"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("n-01") && text.contains(" on ") && text.contains("bmc"),
        "{text}"
    );
    assert!(text.contains("Unavailable"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 2 server(s) could not be read"),
        "{out:?}"
    );
}
