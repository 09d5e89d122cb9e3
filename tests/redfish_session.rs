//! Session authentication against a loopback Redfish server of our own (the
//! emulator has no SessionService): login, X-Auth-Token on every request,
//! one re-login on 401, DELETE of the session at close, no session left open.

mod redfish_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Bmc, BmcError, Endpoint, Power, PowerOp, Protocol, Secret};
use redfish_support::session_bmc::{start, PASSWORD, SESSIONS};

fn endpoint(port: u16, password: &str) -> Endpoint {
    let mut options = BTreeMap::new();
    options.insert("scheme".to_string(), "http".to_string());
    Endpoint {
        protocol: Protocol::Redfish,
        address: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: Secret::new(password),
        options,
    }
}

#[tokio::test]
async fn session_login_token_relogin_and_delete_on_close() {
    let (server, state) = start().await;
    let bmc = RedfishBmc::connect("s1", &endpoint(server.port(), PASSWORD)).unwrap();

    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    assert_eq!(state.lock().unwrap().logins, 1);
    assert_eq!(state.lock().unwrap().open.len(), 1);

    // Every request after the login carried the token and no password.
    let reqs = server.requests();
    let login = reqs.iter().position(|r| r.method == "POST").unwrap();
    for r in &reqs[login + 1..] {
        assert!(
            r.header("x-auth-token").is_some(),
            "{} {} without token",
            r.method,
            r.path
        );
        assert!(
            r.header("authorization").is_none(),
            "{} {} sent basic auth",
            r.method,
            r.path
        );
    }
    // The service root was read without credentials.
    assert!(reqs[0].header("authorization").is_none() && reqs[0].header("x-auth-token").is_none());

    // The BMC forgets the session (timeout, reboot): one re-login, then success.
    state.lock().unwrap().open.clear();
    bmc.power(PowerOp::On).await.unwrap();
    assert_eq!(state.lock().unwrap().logins, 2);
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    assert_eq!(state.lock().unwrap().logins, 2, "the new session is reused");
    // The Reset was sent once more only because the first was rejected unprocessed.
    let resets = server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("ComputerSystem.Reset"))
        .count();
    assert_eq!(resets, 2);

    bmc.close().await;
    assert_eq!(
        state.lock().unwrap().open.len(),
        0,
        "open sessions after close"
    );
    let deletes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, format!("{SESSIONS}/2"));
    // Closing twice sends nothing more.
    bmc.close().await;
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .count(),
        1
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_session() {
    let (server, state) = start().await;
    let bmc = Arc::new(RedfishBmc::connect("s1", &endpoint(server.port(), PASSWORD)).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = bmc.clone();
        tasks.push(tokio::spawn(async move { b.power_state().await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(state.lock().unwrap().logins, 1);
    bmc.close().await;
    assert_eq!(state.lock().unwrap().open.len(), 0);
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_secret() {
    let (server, state) = start().await;
    let wrong = "not-the-Password-42";
    let bmc = RedfishBmc::connect("s1", &endpoint(server.port(), wrong)).unwrap();
    let e = bmc.power_state().await.unwrap_err();
    assert!(matches!(e, BmcError::Auth(_)), "{e:?}");
    assert!(
        e.to_string().contains("Invalid user name or password"),
        "{e}"
    );
    for text in [e.to_string(), format!("{e:?}"), format!("{bmc:?}")] {
        assert!(
            !text.contains(wrong) && !text.contains(PASSWORD),
            "secret in: {text}"
        );
    }
    assert_eq!(state.lock().unwrap().open.len(), 0);
    bmc.close().await;
}

#[tokio::test]
async fn a_bmc_that_will_not_create_sessions_is_used_with_basic_auth() {
    use redfish_support::mock::{MockReply, MockServer};
    let server = MockServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/redfish/v1/") => MockReply::json(
            200,
            r#"{"Systems":{"@odata.id":"/redfish/v1/Systems"},
               "SessionService":{"@odata.id":"/redfish/v1/SessionService"},
               "Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}"#,
        ),
        ("POST", SESSIONS) => {
            MockReply::json(405, r#"{"error":{"message":"Sessions are disabled"}}"#)
        }
        (_, _) if r.header("authorization").is_none() => MockReply::json(401, "{}"),
        ("GET", "/redfish/v1/Systems") => MockReply::json(
            200,
            r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1"}]}"#,
        ),
        ("GET", "/redfish/v1/Systems/1") => MockReply::json(
            200,
            r##"{"Id":"1","PowerState":"On","Actions":{"#ComputerSystem.Reset":{"target":"/r"}}}"##,
        ),
        _ => MockReply::json(404, "{}"),
    })
    .await;
    let bmc = RedfishBmc::connect("s1", &endpoint(server.port(), PASSWORD)).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    let last = server.requests().pop().unwrap();
    assert!(last.header("authorization").unwrap().starts_with("Basic "));

    // Asked for sessions explicitly: no fallback, the refusal is reported.
    let mut ep = endpoint(server.port(), PASSWORD);
    ep.options.insert("auth".into(), "session".into());
    let bmc = RedfishBmc::connect("s1", &ep).unwrap();
    let e = bmc.power_state().await.unwrap_err();
    assert!(e.to_string().contains("Sessions are disabled"), "{e}");
}
