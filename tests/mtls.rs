//! mTLS and policy over real sockets, with certificates made by the test:
//! the caller is the client certificate (CN id, O project, OU roles).

mod common;

use std::time::Duration;

use common::pki::{client, write, Pki};
use common::*;
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn get(id: &str) -> Request<pb::GetServerRequest> {
    Request::new(pb::GetServerRequest {
        id: id.into(),
        refresh_identity: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_the_caller_and_the_policy_decides() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("rack-agent test CA");
    let (scert, skey) = pki.issue("rack-agent", None, None, true);
    write(dir.path(), "server.pem", &scert);
    write(dir.path(), "server.key", &skey);
    write(dir.path(), "clients-ca.pem", &pki.ca_pem());
    write_secret(dir.path(), "bmc.pass", "pw");
    let body = format!(
        "[api.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\n\n[fake_bmc]\nenabled = true\nlatency = \"10ms\"\n\n[sync]\ninterval = \"300ms\"\n\n[timeouts]\nconfirm_poll = \"50ms\"\n\n{}",
        inventory("n", 1, "p1")
    );
    let d = start_daemon(dir.path(), &body);
    let ca = pki.ca_pem();

    // No client certificate: refused.
    let refused = match client(&d, &ca, None).await {
        Err(_) => true,
        Ok(mut c) => c.get_server(get("n-01")).await.is_err(),
    };
    assert!(refused, "a call without a client certificate went through");

    // A certificate from a CA the agent does not trust: refused.
    let rogue = Pki::new("rogue CA");
    let rogue_admin = rogue.issue("intruder", Some("ops"), Some("admin"), false);
    let refused = match client(&d, &ca, Some(&rogue_admin)).await {
        Err(_) => true,
        Ok(mut c) => c.get_server(get("n-01")).await.is_err(),
    };
    assert!(refused, "a certificate of an unknown CA was accepted");

    // The owner of another project: PERMISSION_DENIED naming the rule.
    let other = pki.issue("bob", Some("p2"), Some("member"), false);
    let mut c = client(&d, &ca, Some(&other)).await.unwrap();
    let err = c
        .reboot(Request::new(hard_reboot("n-01")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("admin_or_owner"),
        "{}",
        err.message()
    );

    // The owner may reboot, but not reset-state (admin only).
    let owner = pki.issue("alice", Some("p1"), Some("member"), false);
    let mut c = client(&d, &ca, Some(&owner)).await.unwrap();
    let a = c
        .reboot(Request::new(hard_reboot("n-01")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.caller.unwrap().id, "alice");
    let err = c
        .reset_state(Request::new(pb::ResetStateRequest {
            server_id: "n-01".into(),
            state: pb::ResetStateTarget::Active as i32,
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("`admin`"), "{}", err.message());
    // A tenant certificate may not speak for someone else.
    let mut r = get("n-01");
    r.metadata_mut()
        .insert("x-rackagent-caller", "ops".parse().unwrap());
    r.metadata_mut()
        .insert("x-rackagent-roles", "admin".parse().unwrap());
    let err = c.get_server(r).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // An admin is allowed, reset-state included.
    let admin_cert = pki.issue("ops-1", Some("ops"), Some("admin"), false);
    let mut c = client(&d, &ca, Some(&admin_cert)).await.unwrap();
    wait_action_tls(&mut c, &a.id).await;
    let r = c
        .reset_state(Request::new(pb::ResetStateRequest {
            server_id: "n-01".into(),
            state: pb::ResetStateTarget::Active as i32,
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::ActionState::Succeeded as i32);

    // The control plane acting for a tenant of p1.
    let cp = pki.issue("control-plane-1", None, Some("control-plane"), false);
    let mut c = client(&d, &ca, Some(&cp)).await.unwrap();
    let mut r = get("n-01");
    r.metadata_mut()
        .insert("x-rackagent-caller", "tenant-user".parse().unwrap());
    r.metadata_mut()
        .insert("x-rackagent-project", "p1".parse().unwrap());
    let s = c.get_server(r).await.unwrap().into_inner();
    assert_eq!(s.id, "n-01");
    let mut r = get("n-01");
    r.metadata_mut()
        .insert("x-rackagent-caller", "tenant-user".parse().unwrap());
    r.metadata_mut()
        .insert("x-rackagent-project", "p9".parse().unwrap());
    assert_eq!(
        c.get_server(r).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

async fn wait_action_tls(c: &mut RackAgentClient<Channel>, id: &str) {
    for _ in 0..400 {
        let a = c
            .get_action(Request::new(pb::GetActionRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner();
        if a.state == pb::ActionState::Succeeded as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("action {id} did not succeed");
}
