//! Session authentication against a loopback Redfish server of our own (the
//! emulator has no SessionService): login, X-Auth-Token on every request,
//! one re-login on 401, DELETE of the session at close, no session left open.

mod redfish_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Bmc, BmcError, Endpoint, Power, PowerOp, Protocol, Secret};
use redfish_support::session_bmc::{start, start_with, SessionBmc, SystemSpec, PASSWORD, SESSIONS};

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

// ---- no session left behind when an enrolment is refused ---------------------

/// Waits (up to 2 s) until the BMC holds no session of ours; returns
/// (created, deleted, still open).
async fn settle(state: &std::sync::Mutex<SessionBmc>) -> (u32, u32, usize) {
    let started = std::time::Instant::now();
    loop {
        let (created, deleted, open) = {
            let st = state.lock().unwrap();
            (st.logins, st.deleted, st.open.len())
        };
        if open == 0 || started.elapsed() > std::time::Duration::from_secs(2) {
            return (created, deleted, open);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn with_options(port: u16, options: &[(&str, &str)]) -> Endpoint {
    let mut ep = endpoint(port, PASSWORD);
    for (k, v) in options {
        ep.options.insert(k.to_string(), v.to_string());
    }
    ep
}

/// Every way discovery can refuse a server after the driver logged in, as the
/// engine meets it at enrolment: `capabilities()` fails and the driver is
/// dropped (the caller never holds it, so nobody calls `close`).
#[tokio::test]
async fn an_enrolment_refused_after_login_deletes_its_session() {
    type Setup = fn(&mut SessionBmc);
    type Case<'a> = (&'a str, Setup, &'a [(&'a str, &'a str)]);
    let cases: [Case; 5] = [
        (
            "several systems with a Reset action and no system_id",
            |b| {
                b.systems = vec![
                    SystemSpec::new("Node1", true),
                    SystemSpec::new("Node2", true),
                ]
            },
            &[],
        ),
        (
            "the system has no Reset action",
            |b| b.systems = vec![SystemSpec::new("Baseboard", false)],
            &[],
        ),
        (
            "system_id names no system",
            |_| {},
            &[("system_id", "Node9")],
        ),
        (
            "HTTP 500 on the Systems collection",
            |b| b.fail_collection = Some(500),
            &[],
        ),
        ("HTTP 500 on the system", |b| b.fail_system = Some(500), &[]),
    ];
    let mut failures = Vec::new();
    for (case, setup, options) in cases {
        let (server, state) = start_with(setup).await;
        let bmc = RedfishBmc::connect("s1", &with_options(server.port(), options)).unwrap();
        let e = bmc.capabilities().await;
        assert!(e.is_err(), "{case}: discovery should refuse, got {e:?}");
        drop(bmc);
        let (created, deleted, open) = settle(&state).await;
        assert!(created >= 1, "{case}: the driver never logged in");
        if open != 0 || deleted != created {
            failures.push(format!(
                "{case}: {created} session(s) created, {deleted} deleted, {open} left open"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Discovery fails on a server the engine keeps (the static inventory): the
/// session is not held between attempts, and none is left at stop.
#[tokio::test]
async fn a_failed_discovery_holds_no_session_and_stop_leaves_none() {
    let (server, state) = start_with(|b| b.fail_collection = Some(500)).await;
    let bmc = RedfishBmc::connect("s1", &endpoint(server.port(), PASSWORD)).unwrap();
    for _ in 0..3 {
        assert!(bmc.power_state().await.is_err());
        let st = state.lock().unwrap();
        assert_eq!(st.open.len(), 0, "session held after a failed discovery");
    }
    // The BMC recovers: the next call logs in again and works.
    state.lock().unwrap().fail_collection = None;
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    bmc.close().await;
    let st = state.lock().unwrap();
    assert_eq!(st.open.len(), 0);
    assert_eq!(st.deleted, st.logins);
}

/// Discovery succeeded but a later step of the enrolment failed (the power
/// read answers 500): the engine drops the driver, the session goes with it.
#[tokio::test]
async fn a_driver_dropped_after_a_later_failure_deletes_its_session() {
    let (server, state) = start().await;
    let bmc = RedfishBmc::connect("s1", &endpoint(server.port(), PASSWORD)).unwrap();
    bmc.capabilities().await.unwrap();
    state.lock().unwrap().fail_system = Some(500);
    assert!(bmc.power_state().await.is_err());
    drop(bmc);
    let (created, deleted, open) = settle(&state).await;
    assert_eq!((created, deleted, open), (1, 1, 0));
}
