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
        .get_server(admin(pb::GetServerRequest {
            id: "a2".into(),
            refresh_identity: false,
        }))
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
        .get_server(admin(pb::GetServerRequest {
            id: "a2".into(),
            refresh_identity: false,
        }))
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
            refresh_identity: false,
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

/// One row of a bad-input table: what was sent, what came back, and what
/// should have come back — the code, a word the message must hold (the
/// field, or the id not found), and values it must never repeat (long
/// inputs, secrets).
struct Row {
    what: String,
    got: Result<(), tonic::Status>,
    code: Code,
    names: String,
    never: Vec<String>,
}

/// The rows of a bad-input test, checked all together so that a failure
/// lists every row that went wrong.
#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn row<T>(
        &mut self,
        what: impl Into<String>,
        got: Result<tonic::Response<T>, tonic::Status>,
        code: Code,
        names: &str,
    ) -> &mut Row {
        self.0.push(Row {
            what: what.into(),
            got: got.map(|_| ()),
            code,
            names: names.into(),
            never: Vec::new(),
        });
        self.0.last_mut().unwrap()
    }

    #[track_caller]
    fn check(&self) {
        let mut wrong = Vec::new();
        for r in &self.0 {
            let st = match &r.got {
                Ok(()) => {
                    wrong.push(format!("{}: accepted", r.what));
                    continue;
                }
                Err(st) => st,
            };
            let msg = st.message();
            let shown: String = msg.chars().take(300).collect();
            if st.code() != r.code {
                wrong.push(format!(
                    "{}: {:?}, not {:?}: {shown}",
                    r.what,
                    st.code(),
                    r.code
                ));
            }
            if !msg.contains(&r.names) {
                wrong.push(format!(
                    "{}: the message does not name {:?}: {shown}",
                    r.what, r.names
                ));
            }
            if msg.len() >= 256 {
                wrong.push(format!("{}: a {}-byte message", r.what, msg.len()));
            }
            if r.never.iter().any(|v| msg.contains(v.as_str())) {
                wrong.push(format!(
                    "{}: the message repeats the input: {shown}",
                    r.what
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} rows wrong:\n{}",
            wrong.len(),
            self.0.len(),
            wrong.join("\n")
        );
    }
}

impl Row {
    /// The message must not hold `value` (a long input, a secret).
    fn never(&mut self, value: &str) -> &mut Row {
        self.never.push(value.to_string());
        self
    }
}

/// A request message whose string fields 1 to 3 go on the wire as raw
/// bytes: what a client that does not check UTF-8 can send.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFields {
    #[prost(bytes = "vec", optional, tag = "1")]
    one: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    two: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    three: Option<Vec<u8>>,
}

/// Calls `method` of the RackAgent service with `msg`, as an admin.
async fn raw_call(
    d: &Daemon,
    method: &str,
    streaming: bool,
    msg: RawFields,
) -> Result<tonic::Response<()>, tonic::Status> {
    let ch = tonic::transport::Channel::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/rackagent.v1.RackAgent/{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<RawFields, RawFields>::default();
    if streaming {
        g.server_streaming(admin(msg), path, codec)
            .await
            .map(|r| r.map(|_| ()))
    } else {
        g.unary(admin(msg), path, codec)
            .await
            .map(|r| r.map(|_| ()))
    }
}

/// Not UTF-8: a lone continuation byte and an over-long encoding of '/'.
const NOT_UTF8: &[u8] = b"node-\x80\xc0\xaf";

/// Defect 8: only enrolment checked an id's length, and every refusal echoed
/// the input whole: a 64 KB id came back in a 65 KB error. Every way a
/// request can be wrong, each with the code the design maps it to and a
/// short message naming the field (issue 11, case 8).
#[tokio::test]
async fn bad_and_oversize_input_is_refused_briefly_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_daemon(
        dir.path(),
        &format!("{FAKE}{}", inventory("node", 2, "tenant-a")),
    );
    let mut c = d.client().await;
    let mut t = Table::default();
    let big = "x".repeat(64 * 1024);

    // Empty ids.
    t.row(
        "GetServer id \"\"",
        c.get_server(admin(pb::GetServerRequest {
            id: String::new(),
            refresh_identity: false,
        }))
        .await,
        Code::InvalidArgument,
        "id is required",
    );
    t.row(
        "Reboot server_id \"\"",
        c.reboot(admin(hard_reboot(""))).await,
        Code::InvalidArgument,
        "server_id",
    );
    t.row(
        "Lock server_id \"\"",
        c.lock(admin(pb::LockRequest::default())).await,
        Code::InvalidArgument,
        "server_id",
    );
    t.row(
        "GetAction id \"\"",
        c.get_action(admin(pb::GetActionRequest { id: String::new() }))
            .await,
        Code::InvalidArgument,
        "id is required",
    );
    t.row(
        "ListActions server_id \"\"",
        c.list_actions(admin(pb::ListActionsRequest::default()))
            .await,
        Code::InvalidArgument,
        "server_id",
    );
    t.row(
        "GetPowerState server_id \"\"",
        c.get_power_state(admin(pb::GetPowerStateRequest::default()))
            .await,
        Code::InvalidArgument,
        "server_id",
    );
    t.row(
        "WatchPowerState server_ids [\"\"]",
        c.watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![String::new()],
            after_seq: 0,
        }))
        .await,
        Code::InvalidArgument,
        "server_ids",
    );

    // Over-long ids (64 KiB): the message repeats at most 64 characters.
    t.row(
        "Reboot 64 KiB server_id",
        c.reboot(admin(hard_reboot(&big))).await,
        Code::InvalidArgument,
        "server_id",
    )
    .never(&big[..65]);
    t.row(
        "GetServer 64 KiB id",
        c.get_server(admin(pb::GetServerRequest {
            id: big.clone(),
            refresh_identity: false,
        }))
        .await,
        Code::InvalidArgument,
        "id",
    )
    .never(&big[..65]);
    t.row(
        "RemoveServer 64 KiB id",
        c.remove_server(admin(pb::RemoveServerRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    )
    .never(&big[..65]);
    t.row(
        "GetAction 64 KiB id",
        c.get_action(admin(pb::GetActionRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    )
    .never(&big[..65]);
    t.row(
        "WatchAction 64 KiB id",
        c.watch_action(admin(pb::WatchActionRequest { id: big.clone() }))
            .await,
        Code::InvalidArgument,
        "id",
    )
    .never(&big[..65]);
    t.row(
        "ListActions 64 KiB server_id",
        c.list_actions(admin(pb::ListActionsRequest {
            server_id: big.clone(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "server_id",
    )
    .never(&big[..65]);
    t.row(
        "ListActions 64 KiB page_token",
        c.list_actions(admin(pb::ListActionsRequest {
            server_id: "node-01".into(),
            page_token: big.clone(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "page_token",
    )
    .never(&big[..65]);
    t.row(
        "ListServers 64 KiB page_token",
        c.list_servers(admin(pb::ListServersRequest {
            page_size: 0,
            page_token: big.clone(),
        }))
        .await,
        Code::InvalidArgument,
        "page_token",
    )
    .never(&big[..65]);
    t.row(
        "GetPowerState 64 KiB server_id",
        c.get_power_state(admin(pb::GetPowerStateRequest {
            server_id: big.clone(),
            refresh: false,
        }))
        .await,
        Code::InvalidArgument,
        "server_id",
    )
    .never(&big[..65]);
    t.row(
        "WatchPowerState 64 KiB server_ids",
        c.watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["node-01".into(), big.clone()],
            after_seq: 0,
        }))
        .await,
        Code::InvalidArgument,
        "server_ids",
    )
    .never(&big[..65]);
    t.row(
        "Reboot 64 KiB request_id",
        c.reboot(admin(pb::RebootRequest {
            request_id: big.clone(),
            ..hard_reboot("node-01")
        }))
        .await,
        Code::InvalidArgument,
        "request_id",
    )
    .never(&big[..65]);
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
    t.row(
        "EnrollServer 64 KiB id",
        c.enroll_server(admin(enroll(&big, "p1"))).await,
        Code::InvalidArgument,
        "id",
    )
    .never(&big[..65]);
    t.row(
        "EnrollServer 64 KiB project_id",
        c.enroll_server(admin(enroll("n9", &big))).await,
        Code::InvalidArgument,
        "project_id",
    )
    .never(&big[..65]);
    t.row(
        "EnrollServer id \"\"",
        c.enroll_server(admin(enroll("", "p1"))).await,
        Code::InvalidArgument,
        "id is required",
    );
    t.row(
        "EnrollServer project_id \"\"",
        c.enroll_server(admin(enroll("n9", ""))).await,
        Code::InvalidArgument,
        "project_id",
    );
    // One rule for every id: characters too, not only length.
    t.row(
        "Reboot server_id with a newline",
        c.reboot(admin(hard_reboot("node-01\n"))).await,
        Code::InvalidArgument,
        "server_id",
    );
    t.row(
        "Reboot request_id with a space",
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
    let get01 = || pb::GetServerRequest {
        id: "node-01".into(),
        refresh_identity: false,
    };
    t.row(
        "4000-byte x-rackagent-caller",
        c.get_server(as_caller(get01(), &long, "admin", "ops"))
            .await,
        Code::Unauthenticated,
        "x-rackagent-caller",
    )
    .never(&long[..65]);
    t.row(
        "4000-byte x-rackagent-project",
        c.get_server(as_caller(get01(), "u", "admin", &long)).await,
        Code::Unauthenticated,
        "x-rackagent-project",
    )
    .never(&long[..65]);

    // Not UTF-8 in a string field: prost refuses to decode the message.
    let raw = |one: Option<&[u8]>, two: Option<&[u8]>, three: Option<&[u8]>| RawFields {
        one: one.map(<[u8]>::to_vec),
        two: two.map(<[u8]>::to_vec),
        three: three.map(<[u8]>::to_vec),
    };
    t.row(
        "GetServer id not UTF-8",
        raw_call(&d, "GetServer", false, raw(Some(NOT_UTF8), None, None)).await,
        Code::InvalidArgument,
        "GetServerRequest.id",
    );
    t.row(
        "Reboot server_id not UTF-8",
        raw_call(&d, "Reboot", false, raw(Some(NOT_UTF8), None, None)).await,
        Code::InvalidArgument,
        "RebootRequest.server_id",
    );
    t.row(
        "Reboot request_id not UTF-8",
        raw_call(
            &d,
            "Reboot",
            false,
            raw(Some(b"node-01"), None, Some(NOT_UTF8)),
        )
        .await,
        Code::InvalidArgument,
        "RebootRequest.request_id",
    );
    t.row(
        "EnrollServer project_id not UTF-8",
        raw_call(
            &d,
            "EnrollServer",
            false,
            raw(Some(b"n9"), Some(NOT_UTF8), None),
        )
        .await,
        Code::InvalidArgument,
        "EnrollServerRequest.project_id",
    );
    t.row(
        "Reinstall virtual_media_url not UTF-8",
        raw_call(
            &d,
            "Reinstall",
            false,
            raw(Some(b"node-01"), None, Some(NOT_UTF8)),
        )
        .await,
        Code::InvalidArgument,
        // prost names the oneof that holds virtual_media_url.
        "ReinstallRequest.boot_source",
    );
    t.row(
        "WatchPowerState server_ids not UTF-8",
        raw_call(&d, "WatchPowerState", true, raw(Some(NOT_UTF8), None, None)).await,
        Code::InvalidArgument,
        "WatchPowerStateRequest.server_ids",
    );
    t.row(
        "WatchAction id not UTF-8",
        raw_call(&d, "WatchAction", true, raw(Some(NOT_UTF8), None, None)).await,
        Code::InvalidArgument,
        "WatchActionRequest.id",
    );

    // Enum values: UNSPECIFIED and values this build does not know.
    for (what, ty) in [("UNSPECIFIED", 0), ("99", 99), ("-1", -1)] {
        t.row(
            format!("Reboot type {what}"),
            c.reboot(admin(pb::RebootRequest {
                r#type: ty,
                ..hard_reboot("node-01")
            }))
            .await,
            Code::InvalidArgument,
            "type",
        );
    }
    for (what, state) in [("UNSPECIFIED", 0), ("7", 7)] {
        t.row(
            format!("ResetState state {what}"),
            c.reset_state(admin(pb::ResetStateRequest {
                server_id: "node-01".into(),
                state,
                request_id: String::new(),
            }))
            .await,
            Code::InvalidArgument,
            "state",
        );
    }
    for (what, protocol) in [("UNSPECIFIED", 0), ("9", 9)] {
        let mut req = enroll("n9", "p1");
        req.bmc.as_mut().unwrap().protocol = protocol;
        t.row(
            format!("EnrollServer bmc.protocol {what}"),
            c.enroll_server(admin(req)).await,
            Code::InvalidArgument,
            "bmc.protocol",
        );
    }

    // Unknown servers and actions: NOT_FOUND naming the id.
    t.row(
        "GetServer unknown",
        c.get_server(admin(pb::GetServerRequest {
            id: "nope".into(),
            refresh_identity: false,
        }))
        .await,
        Code::NotFound,
        "\"nope\"",
    );
    t.row(
        "Reboot unknown",
        c.reboot(admin(hard_reboot("nope"))).await,
        Code::NotFound,
        "\"nope\"",
    );
    t.row(
        "GetPowerState unknown",
        c.get_power_state(admin(pb::GetPowerStateRequest {
            server_id: "nope".into(),
            refresh: true,
        }))
        .await,
        Code::NotFound,
        "\"nope\"",
    );
    t.row(
        "ListActions unknown",
        c.list_actions(admin(pb::ListActionsRequest {
            server_id: "nope".into(),
            ..Default::default()
        }))
        .await,
        Code::NotFound,
        "\"nope\"",
    );
    t.row(
        "WatchPowerState unknown",
        c.watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["node-01".into(), "nope".into()],
            after_seq: 0,
        }))
        .await,
        Code::NotFound,
        "\"nope\"",
    );
    t.row(
        "RemoveServer unknown",
        c.remove_server(admin(pb::RemoveServerRequest { id: "nope".into() }))
            .await,
        Code::NotFound,
        "\"nope\"",
    );
    t.row(
        "GetAction unknown",
        c.get_action(admin(pb::GetActionRequest {
            id: "no-such-action".into(),
        }))
        .await,
        Code::NotFound,
        "\"no-such-action\"",
    );
    t.row(
        "WatchAction unknown",
        c.watch_action(admin(pb::WatchActionRequest {
            id: "no-such-action".into(),
        }))
        .await,
        Code::NotFound,
        "\"no-such-action\"",
    );

    // A removed server is gone for every call, as if never enrolled.
    c.enroll_server(admin(enroll("gone-1", "tenant-a")))
        .await
        .expect("enrol gone-1");
    c.lock(admin(pb::LockRequest {
        server_id: "gone-1".into(),
        request_id: String::new(),
    }))
    .await
    .expect("lock gone-1");
    c.remove_server(admin(pb::RemoveServerRequest {
        id: "gone-1".into(),
    }))
    .await
    .expect("remove gone-1");
    t.row(
        "GetServer removed",
        c.get_server(admin(pb::GetServerRequest {
            id: "gone-1".into(),
            refresh_identity: false,
        }))
        .await,
        Code::NotFound,
        "\"gone-1\"",
    );
    t.row(
        "Reboot removed",
        c.reboot(admin(hard_reboot("gone-1"))).await,
        Code::NotFound,
        "\"gone-1\"",
    );
    t.row(
        "Unlock removed",
        c.unlock(admin(pb::UnlockRequest {
            server_id: "gone-1".into(),
            request_id: String::new(),
        }))
        .await,
        Code::NotFound,
        "\"gone-1\"",
    );
    t.row(
        "GetPowerState removed",
        c.get_power_state(admin(pb::GetPowerStateRequest {
            server_id: "gone-1".into(),
            refresh: true,
        }))
        .await,
        Code::NotFound,
        "\"gone-1\"",
    );
    t.row(
        "ListActions removed",
        c.list_actions(admin(pb::ListActionsRequest {
            server_id: "gone-1".into(),
            ..Default::default()
        }))
        .await,
        Code::NotFound,
        "\"gone-1\"",
    );
    t.row(
        "WatchPowerState removed",
        c.watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["gone-1".into()],
            after_seq: 0,
        }))
        .await,
        Code::NotFound,
        "\"gone-1\"",
    );
    t.row(
        "RemoveServer removed",
        c.remove_server(admin(pb::RemoveServerRequest {
            id: "gone-1".into(),
        }))
        .await,
        Code::NotFound,
        "\"gone-1\"",
    );

    // Virtual media URLs go through a URL parser; a URL is never repeated
    // (it may hold a secret).
    let reinstall = |url: &str| pb::ReinstallRequest {
        server_id: "node-01".into(),
        boot_source: Some(pb::reinstall_request::BootSource::VirtualMediaUrl(
            url.into(),
        )),
        request_id: String::new(),
    };
    let long_url = format!("https://images.example/{}.iso", "a".repeat(3000));
    for url in [
        "http://images.example/a b.iso",
        "http:///x.iso",
        "https://",
        "http://h/x\u{7}.iso",
        "ftp://images.example/x.iso",
        "images.example/x.iso",
        "http://[::1/x.iso",
        "http://admin:s3cret-pw@images.example/x.iso",
        long_url.as_str(),
    ] {
        let shown: String = url.chars().take(40).collect();
        let row = t.row(
            format!("Reinstall virtual_media_url {shown:?}"),
            c.reinstall(admin(reinstall(url))).await,
            Code::InvalidArgument,
            "virtual_media_url",
        );
        row.never("s3cret-pw");
        // (A URL as short as "https://" is part of the advice itself.)
        if url.len() > 16 {
            row.never(url);
        }
    }
    t.row(
        "Reinstall virtual_media_url \"\"",
        c.reinstall(admin(reinstall(""))).await,
        Code::InvalidArgument,
        "virtual_media_url",
    );
    t.row(
        "Reinstall pxe = false",
        c.reinstall(admin(pb::ReinstallRequest {
            server_id: "node-01".into(),
            boot_source: Some(pb::reinstall_request::BootSource::Pxe(false)),
            request_id: String::new(),
        }))
        .await,
        Code::InvalidArgument,
        "boot source",
    );

    // Over the request size limit: RESOURCE_EXHAUSTED (OUT_OF_RANGE is for cursors).
    for size in [1_000_000, 2 << 20] {
        t.row(
            format!("Reboot with a {size}-byte server_id"),
            c.reboot(admin(hard_reboot(&"x".repeat(size)))).await,
            Code::ResourceExhausted,
            "262144",
        )
        .never(&big[..65]);
    }
    let mut req = enroll("n9", "p1");
    req.bmc.as_mut().unwrap().options = (0..300)
        .map(|i| (format!("k{i}"), "v".repeat(1024)))
        .collect();
    t.row(
        "EnrollServer with 300 KiB of bmc.options",
        c.enroll_server(admin(req)).await,
        Code::ResourceExhausted,
        "too large",
    );
    t.row(
        "WatchPowerState with 320 KiB of server_ids",
        c.watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: (0..5000).map(|i| format!("{i:064}")).collect(),
            after_seq: 0,
        }))
        .await,
        Code::ResourceExhausted,
        "too large",
    );
    // Just under it: decoded, then refused as an id.
    t.row(
        "Reboot with a 200 KiB server_id",
        c.reboot(admin(hard_reboot(&"x".repeat(200 * 1024)))).await,
        Code::InvalidArgument,
        "server_id",
    )
    .never(&big[..65]);
    let mut req = enroll("n9", "p1");
    req.bmc.as_mut().unwrap().options = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    t.row(
        "EnrollServer with 33 bmc.options",
        c.enroll_server(admin(req)).await,
        Code::InvalidArgument,
        "bmc.options",
    );

    // GetPowerStates (a fleet sweep): a bad id refuses the whole call naming
    // server_ids; an unknown or removed server is that server's own result
    // (the others are still answered), checked here as if it were the call's.
    let sweep = |ids: Vec<String>| {
        admin(pb::GetPowerStatesRequest {
            server_ids: ids,
            refresh: false,
        })
    };
    t.row(
        "GetPowerStates server_ids [\"\"]",
        c.get_power_states(sweep(vec!["node-01".into(), String::new()]))
            .await,
        Code::InvalidArgument,
        "server_ids",
    );
    t.row(
        "GetPowerStates 64 KiB server_ids",
        c.get_power_states(sweep(vec![big.clone()])).await,
        Code::InvalidArgument,
        "server_ids",
    )
    .never(&big[..65]);
    t.row(
        "GetPowerStates server_ids with a newline",
        c.get_power_states(sweep(vec!["node-01\n".into()])).await,
        Code::InvalidArgument,
        "server_ids",
    );
    t.row(
        "GetPowerStates server_ids not UTF-8",
        raw_call(&d, "GetPowerStates", false, raw(Some(NOT_UTF8), None, None)).await,
        Code::InvalidArgument,
        "GetPowerStatesRequest.server_ids",
    );
    t.row(
        "GetPowerStates 10,001 server_ids",
        c.get_power_states(sweep((0..10_001).map(|i| format!("s{i}")).collect()))
            .await,
        Code::InvalidArgument,
        "server_ids",
    );
    for (what, id) in [("unknown", "nope"), ("removed", "gone-1")] {
        let got = c
            .get_power_states(sweep(vec!["node-01".into(), id.into()]))
            .await
            .map(|r| {
                let r = r.into_inner().results;
                assert!(r[0].status.is_some(), "node-01 unanswered: {:?}", r[0]);
                r
            });
        let got = match got {
            Ok(r) if r[1].error_code != 0 => Err(tonic::Status::new(
                Code::from_i32(r[1].error_code),
                r[1].error.clone(),
            )),
            Ok(_) => Ok(tonic::Response::new(())),
            Err(st) => Err(st),
        };
        t.row(
            format!("GetPowerStates {what} (its result)"),
            got,
            Code::NotFound,
            &format!("\"{id}\""),
        );
    }
    // 10,000 ids of the longest allowed length fit (660 KB, over the 256 KiB
    // that bounds every other request); 11,000 of them are over the size limit.
    let long_ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i:064}")).collect() };
    let r = c
        .get_power_states(sweep(long_ids(10_000)))
        .await
        .expect("10,000 ids of 64 bytes are a valid sweep")
        .into_inner()
        .results;
    assert_eq!(r.len(), 10_000);
    assert!(r.iter().all(|x| x.error_code == Code::NotFound as i32));
    t.row(
        "GetPowerStates with 11,000 server_ids of 64 bytes (726 KB)",
        c.get_power_states(sweep(long_ids(11_000))).await,
        Code::ResourceExhausted,
        "too large",
    );

    c.reinstall(admin(reinstall("HTTPS://Images.Example:8443/rhel9.iso")))
        .await
        .expect("an upper-case scheme is a valid URL");
    t.check();
}

/// Identity metadata on a client certificate that may not assert it: only a
/// `control-plane` certificate speaks for someone else (issue 11, case 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_metadata_is_refused_from_a_certificate_that_may_not_assert_it() {
    use common::pki::{client, start_tls_daemon, Pki};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("rack-agent test CA");
    write_secret(dir.path(), "bmc.pass", "pw");
    let d = start_tls_daemon(
        dir.path(),
        &pki,
        &format!("{FAKE}{}", inventory("n", 1, "p1")),
    );
    let ca = pki.ca_pem();
    let get = |md: &[(&'static str, &str)]| {
        let mut r = tonic::Request::new(pb::GetServerRequest {
            id: "n-01".into(),
            refresh_identity: false,
        });
        for (k, v) in md {
            r.metadata_mut().insert(*k, v.parse().unwrap());
        }
        r
    };
    let long = "u".repeat(4000);
    let mut t = Table::default();

    let tenant = pki.issue("alice", Some("p1"), Some("member"), false);
    let admin_cert = pki.issue("ops-1", Some("ops"), Some("admin"), false);
    let cp = pki.issue("cp-1", None, Some("control-plane"), false);
    let mut tc = client(&d, &ca, Some(&tenant)).await.unwrap();
    let mut ac = client(&d, &ca, Some(&admin_cert)).await.unwrap();
    let mut cc = client(&d, &ca, Some(&cp)).await.unwrap();
    tc.get_server(get(&[])).await.expect("the owner reads n-01");

    for (who, c) in [("tenant", &mut tc), ("admin", &mut ac)] {
        t.row(
            format!("{who} certificate + x-rackagent-caller"),
            c.get_server(get(&[("x-rackagent-caller", "ops")])).await,
            Code::PermissionDenied,
            "x-rackagent-caller",
        );
        t.row(
            format!("{who} certificate + x-rackagent-roles only"),
            c.get_server(get(&[("x-rackagent-roles", "admin")])).await,
            Code::PermissionDenied,
            "x-rackagent-roles",
        );
        // A sweep without ids reads every server the caller may read: the
        // same refusal there.
        let mut sweep = tonic::Request::new(pb::GetPowerStatesRequest::default());
        sweep
            .metadata_mut()
            .insert("x-rackagent-roles", "admin".parse().unwrap());
        t.row(
            format!("{who} certificate + x-rackagent-roles on GetPowerStates"),
            c.get_power_states(sweep).await,
            Code::PermissionDenied,
            "x-rackagent-roles",
        );
        t.row(
            format!("{who} certificate + x-rackagent-project only"),
            c.get_server(get(&[("x-rackagent-project", "p2")])).await,
            Code::PermissionDenied,
            "x-rackagent-project",
        );
        t.row(
            format!("{who} certificate + a 4000-byte x-rackagent-caller"),
            c.get_server(get(&[("x-rackagent-caller", &long)])).await,
            Code::PermissionDenied,
            "x-rackagent-caller",
        )
        .never(&long[..65]);
    }
    // The control plane may assert, but only a well-formed caller.
    t.row(
        "control-plane certificate + a 4000-byte x-rackagent-caller",
        cc.get_server(get(&[("x-rackagent-caller", &long)])).await,
        Code::Unauthenticated,
        "x-rackagent-caller",
    )
    .never(&long[..65]);
    t.row(
        "control-plane certificate + x-rackagent-roles without a caller",
        cc.get_server(get(&[("x-rackagent-roles", "admin")])).await,
        Code::Unauthenticated,
        "x-rackagent-caller",
    );
    // The certificate's own names follow the id rule.
    let bad_cn = pki.issue("alice smith", Some("p1"), Some("member"), false);
    let mut bc = client(&d, &ca, Some(&bad_cn)).await.unwrap();
    t.row(
        "certificate CN with a space",
        bc.get_server(get(&[])).await,
        Code::Unauthenticated,
        "CN",
    );
    let long_o = pki.issue("bob", Some(&"o".repeat(100)), Some("member"), false);
    let mut lc = client(&d, &ca, Some(&long_o)).await.unwrap();
    t.row(
        "certificate O of 100 bytes",
        lc.get_server(get(&[])).await,
        Code::Unauthenticated,
        "certificate O",
    )
    .never(&"o".repeat(65));
    t.check();
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

/// `GET path` on the metrics listener: the body.
/// Issue 10 over real sockets: the BMC identity on Server (read at the
/// static servers' first poll, refreshed on request), GetServerHealth,
/// ListBmcEvents, who may read them, a power-button press whose power
/// change carries the BMC's log to watchers, the gauges on /metrics, and
/// rackctl's show, health and events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_health_and_the_bmc_log_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "rack-secret-0451");
    let config = format!(
        "[fake_bmc]\nenabled = true\nlatency = \"20ms\"\nno_inventory = [\"node-03\"]\npress_power_button = [\"node-02\"]\npress_power_button_after = \"3s\"\n\n\
         [sync]\ninterval = \"300ms\"\njitter = \"50ms\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n{}{}",
        inventory("node", 3, "tenant-a"),
        inventory("b", 1, "tenant-b")
    );
    let d = start_daemon(dir.path(), &config);
    let mut c = d.client().await;
    let get = |id: &str, refresh_identity: bool| pb::GetServerRequest {
        id: id.into(),
        refresh_identity,
    };

    // Identity: read at the first good poll of a static server.
    let s = wait_server(&mut c, "node-01", Duration::from_secs(10), |s| {
        s.identity.is_some()
    })
    .await;
    let id = s.identity.unwrap();
    assert_eq!(id.serial_number, "FAKE-node-01");
    assert_eq!(id.ipmi_version, "2.0");
    assert!(id.read_at.is_some() && id.error.is_empty(), "{id:?}");
    let s = wait_server(&mut c, "node-03", Duration::from_secs(10), |s| {
        s.identity.is_some()
    })
    .await;
    assert_eq!(
        s.identity.unwrap().error,
        "the BMC offers no identity",
        "a failed read is recorded"
    );
    let again = c
        .get_server(admin(get("node-01", true)))
        .await
        .unwrap()
        .into_inner()
        .identity
        .unwrap();
    assert!(again.read_at.unwrap().seconds >= id.read_at.unwrap().seconds);
    assert!(again.error.is_empty());

    // Health, read now.
    let h = c
        .get_server_health(admin(pb::GetServerHealthRequest {
            server_id: "node-01".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.server_id, "node-01");
    assert_eq!((h.power_watts, h.inlet_celsius), (Some(180.0), Some(23.0)));
    let inlet = h.sensors.iter().find(|s| s.name == "Inlet Temp").unwrap();
    assert_eq!(inlet.kind, pb::SensorKind::Temperature as i32);
    assert_eq!(inlet.status, pb::SensorStatus::Ok as i32);
    assert_eq!(inlet.upper_critical, Some(45.0));
    assert!(h.read_at.is_some() && h.problems.is_empty());
    let err = c
        .get_server_health(admin(pb::GetServerHealthRequest {
            server_id: "node-03".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("node-03"), "{err:?}");

    // Who may read them: the owner, not another project; the same answer
    // as GetServer gives.
    fn as_b<T>(m: T) -> tonic::Request<T> {
        as_caller(m, "bob", "member", "tenant-b")
    }
    fn as_a<T>(m: T) -> tonic::Request<T> {
        as_caller(m, "alice", "member", "tenant-a")
    }
    let denied = c.get_server(as_b(get("node-01", false))).await.unwrap_err();
    let err = c
        .get_server_health(as_b(pb::GetServerHealthRequest {
            server_id: "node-01".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), denied.code());
    let events = |id: &str, limit: u32| pb::ListBmcEventsRequest {
        server_id: id.into(),
        since: None,
        limit,
    };
    let err = c
        .list_bmc_events(as_b(events("node-02", 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), denied.code());
    let err = c
        .list_bmc_events(as_b(events("nope", 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.get_server_health(as_a(pb::GetServerHealthRequest {
        server_id: "node-01".into(),
    }))
    .await
    .unwrap();
    c.get_server_health(as_b(pb::GetServerHealthRequest {
        server_id: "b-01".into(),
    }))
    .await
    .unwrap();
    // A limit beyond 1,000 is refused, naming it.
    let err = c
        .list_bmc_events(admin(events("node-02", 1001)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit"), "{err:?}");

    // The power button of node-02 is pressed 3 s after start: watchers get
    // the change with what the BMC logged. Seq 1 was node-01's first
    // reading (above): from there, whenever the press came.
    let mut stream = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["node-02".into()],
            after_seq: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    let off = next_power_event(&mut stream, pb::PowerState::Off, Duration::from_secs(20)).await;
    let words: Vec<&str> = off.bmc_events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(words, ["Power Button pressed", "Power Off / Power Down"]);
    assert_eq!(off.bmc_events[0].sensor_type, "Button / Switch");
    assert!(off.bmc_events[1].at.is_some());
    assert_eq!(off.cause, "sync");
    let mut resumed = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["node-02".into()],
            after_seq: off.seq - 1,
        }))
        .await
        .unwrap()
        .into_inner();
    let first = resumed.next().await.unwrap().unwrap();
    assert_eq!(first, off, "a resumed watcher gets the same entries");
    let log = c
        .list_bmc_events(admin(events("node-02", 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.events.len(), 2);
    let newest = c
        .list_bmc_events(admin(events("node-02", 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newest.events[0].event, "Power Off / Power Down");
    let later = c
        .list_bmc_events(admin(pb::ListBmcEventsRequest {
            server_id: "node-02".into(),
            since: Some(prost_types::Timestamp {
                seconds: off.bmc_events[1].at.unwrap().seconds + 3600,
                nanos: 0,
            }),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(later.events.is_empty());

    // The gauges: one series per server whose BMC gives a value.
    let maddr = d.logged_addr("metrics at /metrics", Duration::from_secs(5));
    let text = http_body(maddr, "/metrics");
    assert!(
        text.contains("rack_agent_server_power_watts{server_id=\"node-01\"} 180.0"),
        "{text}"
    );
    assert!(
        text.contains("rack_agent_server_inlet_celsius{server_id=\"node-01\"} 23.0"),
        "{text}"
    );
    assert!(!text.contains("server_id=\"node-03\""), "{text}");
    assert!(text.matches("rack_agent_server_power_watts{").count() <= 4);

    // rackctl.
    let out = d.rackctl(&["show", "node-01", "--refresh-identity"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("identity   read"),
        "{text}"
    );
    assert!(text.contains("serial   FAKE-node-01"), "{text}");
    let out = d.rackctl(&["show", "node-03"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("error    the BMC offers no identity"),
        "{text}"
    );
    let out = d.rackctl(&["health", "node-01"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("Inlet Temp") && l.contains("23 degrees C")),
        "{text}"
    );
    let h = json(&d.rackctl(&["-o", "json", "health", "node-01"]));
    assert_eq!(h["power_watts"], 180.0);
    let ev = json(&d.rackctl(&["-o", "json", "events", "node-02", "--since", "1h"]));
    assert_eq!(ev.as_array().unwrap().len(), 2, "{ev}");
    assert_eq!(ev[0]["event"], "Power Button pressed");
    let out = d.rackctl(&["events", "node-02", "--limit", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Power Unit"),
        "{text}"
    );
    assert!(!text.contains("Power Button pressed"), "{text}");
    let out = d.rackctl(&["events", "node-02", "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = d.rackctl(&["events", "node-02", "--limit", "5000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidArgument"));
    let out = d.rackctl(&["health", "node-03"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unimplemented"));
    // No credential anywhere in what was said.
    assert!(!d.log().contains("rack-secret-0451"));
}
