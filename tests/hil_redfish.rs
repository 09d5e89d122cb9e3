//! Daemon-level HIL tests for Redfish: the real `rack-agent` binary, driven
//! through its gRPC API, power-controls systems of the sushy-tools emulator;
//! every effect is checked as an operator would, with curl against the
//! emulator. Session handling at daemon stop is checked against a loopback
//! Redfish service of our own (the emulator has no SessionService).

mod common;
mod redfish_support;

use std::time::Duration;

use common::*;
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use redfish_support::bench::{Sushy, SYSTEMS};
use redfish_support::mock::{MockReply, MockServer};
use redfish_support::session_bmc;
use tonic::transport::Channel;

const ACTION_LIMIT: Duration = Duration::from_secs(60);

const SETTINGS: &str =
    "[sync]\ninterval = \"1s\"\njitter = \"100ms\"\nunknown_after_failures = 1\n\n\
[timeouts]\nbmc_command = \"15s\"\nconfirm_poll = \"250ms\"\npower_confirm = \"20s\"\n\
soft_reboot = \"20s\"\ngraceful_stop = \"20s\"\n\n";

fn server_entry(id: &str, port: u16, pass_file: &str, options: &str) -> String {
    format!(
        "[[servers]]\nid = \"{id}\"\nproject = \"p1\"\nprotocol = \"redfish\"\naddress = \"127.0.0.1\"\n\
         port = {port}\nusername = \"admin\"\npassword_file = \"{pass_file}\"\noptions = {{ {options} }}\n\n"
    )
}

fn sushy_entry(bench: &Sushy, id: &str, system: &str, pass_file: &str, trusted: bool) -> String {
    let mut options = format!("system_id = \"{system}\"");
    if trusted {
        options.push_str(&format!(", ca_file = \"{}\"", bench.cert().display()));
    }
    server_entry(id, bench.port, pass_file, &options)
}

/// Sends an action request as admin and waits for the action to end.
macro_rules! act {
    ($c:expr, $what:expr, $method:ident, $req:expr) => {{
        let accepted = $c
            .$method(admin($req))
            .await
            .unwrap_or_else(|s| panic!("{}: refused: {s:?}", $what))
            .into_inner();
        wait_action(&mut $c, &accepted.id, ACTION_LIMIT).await
    }};
}

fn state(a: &pb::Action) -> pb::ActionState {
    pb::ActionState::try_from(a.state).unwrap()
}

fn steps(a: &pb::Action) -> Vec<String> {
    a.events.iter().map(|e| e.step.clone()).collect()
}

fn assert_succeeded(what: &str, a: &pb::Action) {
    assert_eq!(
        state(a),
        pb::ActionState::Succeeded,
        "{what}: {} / {:#?}",
        a.message,
        a.events
    );
}

fn everything_said(a: &pb::Action) -> String {
    let mut s = a.message.clone();
    for e in &a.events {
        s.push('\n');
        s.push_str(&e.detail);
    }
    s
}

async fn wait_known(client: &mut RackAgentClient<Channel>, id: &str) {
    wait_server(client, id, Duration::from_secs(20), |s| {
        s.power_state != pb::PowerState::Unknown as i32
            && s.power_state != pb::PowerState::Unspecified as i32
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemon_actions_change_the_emulated_systems() {
    let bench = Sushy::start();
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "rf.pass", &bench.password);
    let wrong = "wrong-Redfish-password-77";
    write_secret(dir.path(), "wrong.pass", wrong);
    let [s1, s2, s3, s4] = SYSTEMS;
    let mut config = SETTINGS.to_string();
    for (id, sys) in [("rf-1", s1), ("rf-2", s2), ("rf-3", s3), ("rf-4", s4)] {
        config.push_str(&sushy_entry(&bench, id, sys, "rf.pass", true));
    }
    config.push_str(&sushy_entry(&bench, "rf-badpass", s1, "wrong.pass", true));
    config.push_str(&sushy_entry(&bench, "rf-untrusted", s1, "rf.pass", false));
    let daemon = start_daemon(dir.path(), &config);
    let mut client = daemon.client().await;
    for id in ["rf-1", "rf-2", "rf-3", "rf-4"] {
        wait_known(&mut client, id).await;
    }

    // The image the emulator downloads for virtual media.
    let image = MockServer::start(|_| MockReply::bytes(200, b"installer".to_vec())).await;
    let image_url = format!("http://127.0.0.1:{}/installer.iso", image.port());

    let b = &bench;
    let endpoint = daemon.endpoint();
    let client_for = || {
        let e = endpoint.clone();
        async move { RackAgentClient::connect(e).await.unwrap() }
    };

    // rf-1 (Off): start, then reinstall via PXE.
    let start_then_pxe = async {
        let mut c = client_for().await;
        let a = act!(
            c,
            "start rf-1",
            start,
            pb::StartRequest {
                server_id: "rf-1".into(),
                request_id: String::new(),
            }
        );
        assert_succeeded("start rf-1", &a);
        assert_eq!(b.power_state(s1), "On");
        let a = act!(
            c,
            "reinstall rf-1 pxe",
            reinstall,
            pb::ReinstallRequest {
                server_id: "rf-1".into(),
                boot_source: Some(pb::reinstall_request::BootSource::Pxe(true)),
                request_id: String::new(),
            }
        );
        assert_succeeded("reinstall rf-1", &a);
        let sys = b.system(s1);
        assert_eq!(
            sys["Boot"]["BootSourceOverrideTarget"], "Pxe",
            "{}",
            sys["Boot"]
        );
        assert_eq!(sys["PowerState"], "On");
        // No PowerCycle at this BMC: the cycle was a ForceRestart.
        assert!(
            steps(&a).iter().any(|s| s == "hard_reset"),
            "{:?}",
            steps(&a)
        );
    };
    // rf-2 (Off): reinstall from virtual media; ejected at the end.
    let reinstall_media = async {
        let mut c = client_for().await;
        let a = act!(
            c,
            "reinstall rf-2 media",
            reinstall,
            pb::ReinstallRequest {
                server_id: "rf-2".into(),
                boot_source: Some(pb::reinstall_request::BootSource::VirtualMediaUrl(
                    image_url.clone(),
                )),
                request_id: String::new(),
            }
        );
        assert_succeeded("reinstall rf-2", &a);
        let sys = b.system(s2);
        assert_eq!(
            sys["Boot"]["BootSourceOverrideTarget"], "Cd",
            "{}",
            sys["Boot"]
        );
        assert_eq!(sys["PowerState"], "On");
        let st = steps(&a);
        for step in ["insert_media", "set_boot_cd", "eject_media"] {
            assert!(st.iter().any(|s| s == step), "{step} missing: {st:?}");
        }
        assert!(image.requests().iter().any(|r| r.path == "/installer.iso"));
        let cd = b.curl(&format!("/redfish/v1/Systems/{s2}/VirtualMedia/Cd"));
        assert_eq!(cd["Inserted"], false, "ejected when the action ended: {cd}");
    };
    // rf-3 (On): HARD reboot.
    let hard = async {
        let mut c = client_for().await;
        let a = act!(
            c,
            "hard reboot rf-3",
            reboot,
            pb::RebootRequest {
                server_id: "rf-3".into(),
                r#type: pb::RebootType::Hard as i32,
                request_id: String::new(),
            }
        );
        assert_succeeded("hard reboot rf-3", &a);
        assert!(
            steps(&a).iter().any(|s| s == "hard_reset"),
            "{:?}",
            steps(&a)
        );
        assert_eq!(b.power_state(s3), "On");
    };
    // rf-4 (On): SOFT reboot, then graceful stop. The emulator offers
    // GracefulRestart but shows no restart marker (no LastResetTime, no
    // BootProgress), so the SOFT reboot takes the observable path.
    let soft_then_stop = async {
        let mut c = client_for().await;
        let a = act!(
            c,
            "soft reboot rf-4",
            reboot,
            pb::RebootRequest {
                server_id: "rf-4".into(),
                r#type: pb::RebootType::Soft as i32,
                request_id: String::new(),
            }
        );
        assert_succeeded("soft reboot rf-4", &a);
        let taken = steps(&a);
        assert!(
            taken.iter().any(|s| s == "graceful_off")
                && taken.iter().any(|s| s == "power_on")
                && !taken
                    .iter()
                    .any(|s| s == "graceful_restart" || s == "fallback_hard"),
            "{taken:?}"
        );
        assert_eq!(b.power_state(s4), "On");
        let a = act!(
            c,
            "stop rf-4",
            stop,
            pb::StopRequest {
                server_id: "rf-4".into(),
                force: false,
                request_id: String::new(),
            }
        );
        assert_succeeded("stop rf-4", &a);
        assert!(
            steps(&a).iter().any(|s| s == "graceful_off"),
            "{:?}",
            steps(&a)
        );
        assert_eq!(b.power_state(s4), "Off");
    };
    // Wrong password: FAILED with the BMC's reason, no secret anywhere.
    let bad_password = async {
        let mut c = client_for().await;
        let a = act!(
            c,
            "hard reboot rf-badpass",
            reboot,
            pb::RebootRequest {
                server_id: "rf-badpass".into(),
                r#type: pb::RebootType::Hard as i32,
                request_id: String::new(),
            }
        );
        assert_eq!(state(&a), pb::ActionState::Failed, "{a:?}");
        let said = everything_said(&a);
        // The emulator's own words, through the driver and the engine.
        assert!(said.contains("Incorrect username or password"), "{said}");
        assert!(
            !said.contains(wrong) && !said.contains(&b.password),
            "secret leaked: {said}"
        );
    };
    // Self-signed certificate without ca_file: FAILED, saying why.
    let untrusted = async {
        let mut c = client_for().await;
        let a = act!(
            c,
            "hard reboot rf-untrusted",
            reboot,
            pb::RebootRequest {
                server_id: "rf-untrusted".into(),
                r#type: pb::RebootType::Hard as i32,
                request_id: String::new(),
            }
        );
        assert_eq!(state(&a), pb::ActionState::Failed, "{a:?}");
        let said = everything_said(&a);
        assert!(said.contains("TLS"), "{said}");
    };
    tokio::join!(
        start_then_pxe,
        reinstall_media,
        hard,
        soft_then_stop,
        bad_password,
        untrusted
    );

    // The fresh power read through the API agrees with curl.
    let p = client
        .get_power_state(admin(pb::GetPowerStateRequest {
            server_id: "rf-4".into(),
            refresh: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.power_state, pb::PowerState::Off as i32);
    let log = daemon.log();
    assert!(
        !log.contains(wrong) && !log.contains(&bench.password),
        "secret in the daemon log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_deletes_its_redfish_sessions_when_it_stops() {
    let (bmc, sessions) = session_bmc::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "s.pass", session_bmc::PASSWORD);
    let config = format!(
        "{SETTINGS}{}",
        server_entry("rf-session", bmc.port(), "s.pass", "scheme = \"http\"")
    );
    let mut daemon = start_daemon(dir.path(), &config);
    let mut client = daemon.client().await;
    wait_known(&mut client, "rf-session").await;
    let a = act!(
        client,
        "start",
        start,
        pb::StartRequest {
            server_id: "rf-session".into(),
            request_id: String::new(),
        }
    );
    assert_succeeded("start rf-session", &a);
    {
        let st = sessions.lock().unwrap();
        assert!(
            st.logins >= 1 && !st.open.is_empty(),
            "no session was opened"
        );
        assert!(st.power_on);
    }
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "daemon exit: {status:?}\n{}",
        daemon.log()
    );
    assert_eq!(
        sessions.lock().unwrap().open.len(),
        0,
        "sessions left open at the BMC after the daemon stopped"
    );
    assert!(bmc.requests().iter().any(|r| r.method == "DELETE"));
}

/// Defect: a static-inventory server whose system has no Reset action was
/// found out only at its first action. It is reported at start: a warning in
/// the log and the reason as the server's BMC error, while its power is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_without_reset_is_reported_at_start_not_at_the_first_action() {
    let (bmc, _sessions) = session_bmc::start_with(|b| {
        b.systems = vec![session_bmc::SystemSpec::new("Self", false)];
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "s.pass", session_bmc::PASSWORD);
    let config = format!(
        "{SETTINGS}{}",
        server_entry("rf-noreset", bmc.port(), "s.pass", "scheme = \"http\"")
    );
    let daemon = start_daemon(dir.path(), &config);
    let mut client = daemon.client().await;
    let s = wait_server(&mut client, "rf-noreset", Duration::from_secs(10), |s| {
        !s.bmc_error.is_empty()
    })
    .await;
    assert!(s.bmc_error.contains("Reset"), "{}", s.bmc_error);
    // Power reads work and do not clear the reason.
    let s = wait_server(&mut client, "rf-noreset", Duration::from_secs(10), |s| {
        s.power_state == pb::PowerState::Off as i32
    })
    .await;
    assert!(s.bmc_error.contains("Reset"), "{}", s.bmc_error);
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("rf-noreset")
            && l.contains("cannot be power-controlled")),
        "{log}"
    );
}

/// Defect: an enrolment refused after the driver logged in left its session
/// open at the BMC. The refusal answers only once the session is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enrolment_leaves_no_session_open() {
    let (bmc, sessions) = session_bmc::start_with(|b| {
        // Two systems that both have a Reset action, and no system_id: a
        // configuration question the operator must answer.
        b.systems = vec![
            session_bmc::SystemSpec::new("a", true),
            session_bmc::SystemSpec::new("b", true),
        ];
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "s.pass", session_bmc::PASSWORD);
    let daemon = start_daemon(dir.path(), SETTINGS);
    let mut client = daemon.client().await;
    let err = client
        .enroll_server(admin(pb::EnrollServerRequest {
            id: "rf-two".into(),
            project_id: "p1".into(),
            bmc: Some(pb::BmcEndpoint {
                protocol: pb::BmcProtocol::Redfish as i32,
                address: "127.0.0.1".into(),
                port: bmc.port() as u32,
                username: "admin".into(),
                secret: Some(pb::bmc_endpoint::Secret::PasswordFile("s.pass".into())),
                options: [("scheme".to_string(), "http".to_string())].into(),
            }),
            skip_verify: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("system_id"), "{}", err.message());
    let st = sessions.lock().unwrap();
    assert!(st.logins >= 1, "the driver never logged in");
    assert!(
        st.open.is_empty(),
        "{} session(s) created, {} deleted, {} left open",
        st.logins,
        st.deleted,
        st.open.len()
    );
}
