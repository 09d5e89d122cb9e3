//! Session accounting, the thing a scale test relies on: a full session table
//! refuses the next client the way a real BMC does, closed sessions free their
//! slot at once, idle ones time out. Sessions are held open with the agent's
//! own RMCP+ session layer (it exposes the session, ipmitool does not) and the
//! refusals are judged by ipmitool and ipmipower.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use rack_agent::bmc::ipmi::commands::GetChassisStatus;
use rack_agent::bmc::ipmi::lan::rakp::CipherSuite;
use rack_agent::bmc::ipmi::lan::{LanError, Retry, Session};

fn retry() -> Retry {
    Retry {
        attempts: 2,
        per_attempt: Duration::from_millis(500),
    }
}

async fn open(sim: &Sim, i: usize) -> Result<Session, LanError> {
    let peer: SocketAddr = ([127, 0, 0, 1], sim.ipmi_port(i)).into();
    Session::open(
        peer,
        USER,
        PASSWORD.as_bytes(),
        CipherSuite::by_id(3).unwrap(),
        retry(),
    )
    .await
}

#[tokio::test]
async fn a_full_session_table_refuses_and_a_closed_session_frees_its_slot() {
    require("ipmitool");
    let sim = Sim::start(1, &["--ipmi-sessions", "2"]);
    let mut a = open(&sim, 0).await.expect("session 1");
    let b = open(&sim, 0).await.expect("session 2");
    let v = sim.bmc(0);
    assert_eq!(v["ipmi_sessions_open"], 2);
    assert_eq!(
        v["ipmi_session_privileges"],
        serde_json::json!([4, 4]),
        "raised to admin"
    );

    // The agent's layer sees Open Session status 01h...
    match open(&sim, 0).await {
        Err(LanError::Rejected { status: 0x01, .. }) => {}
        other => panic!("a third session: {other:?}"),
    }
    // ...and so does ipmitool.
    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(!ok);
    assert!(out.contains("insufficient resources for session"), "{out}");
    assert_eq!(sim.counter(0, "ipmi_sessions_refused"), 2);

    // The open sessions still work; closing one lets ipmitool in.
    a.run(GetChassisStatus, retry())
        .await
        .expect("status in session 1");
    b.close(retry()).await.expect("close session 2");
    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok, "{out}");
    let v = sim.bmc(0);
    assert_eq!(v["ipmi_sessions_open"], 1);
    assert_eq!(
        v["counters"]["ipmi_sessions_closed"], 2,
        "ours and ipmitool's"
    );
    a.close(retry()).await.expect("close session 1");
    let v = sim.bmc(0);
    assert_eq!(v["ipmi_sessions_open"], 0);
    assert_eq!(
        v["counters"]["ipmi_sessions_created"],
        v["counters"]["ipmi_sessions_closed"]
    );
}

#[tokio::test]
async fn idle_sessions_time_out_and_are_forgotten() {
    let sim = Sim::start(1, &["--session-timeout", "1s"]);
    let mut s = open(&sim, 0).await.expect("session");
    s.run(GetChassisStatus, retry()).await.expect("status");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = sim.bmc(0);
    assert_eq!(v["ipmi_sessions_open"], 0, "{v}");
    assert_eq!(v["counters"]["ipmi_sessions_expired"], 1);
    // A BMC that forgot a session drops its packets: the client times out.
    match s.run(GetChassisStatus, retry()).await {
        Err(LanError::Timeout { .. }) => {}
        other => panic!("a request in an expired session: {other:?}"),
    }
    assert!(sim.counter(0, "ipmi_dropped") >= 2);
}

#[tokio::test]
async fn a_wrong_password_through_the_agents_layer_leaves_no_half_open_session() {
    let sim = Sim::start(1, &[]);
    let peer: SocketAddr = ([127, 0, 0, 1], sim.ipmi_port(0)).into();
    let err = Session::open(
        peer,
        USER,
        b"wrong",
        CipherSuite::by_id(3).unwrap(),
        retry(),
    )
    .await
    .expect_err("wrong password");
    assert!(matches!(err, LanError::BadPassword), "{err:?}");
    // The agent sends a RAKP 3 with an error status, and the slot is freed.
    wait_until(
        "the half-open session freed",
        Duration::from_secs(2),
        || sim.bmc(0)["ipmi_handshakes_pending"] == 0,
    );
    assert_eq!(sim.counter(0, "ipmi_handshakes_abandoned"), 1);
}

#[test]
fn ipmipower_reads_and_sets_a_range_of_bmcs() {
    require("ipmipower");
    let n = 16;
    let sim = Sim::start(n, &["--power", "alternate"]);
    let hosts = format!("127.0.0.1:[{}-{}]", sim.ipmi_port(0), sim.ipmi_port(n - 1));
    let ipmipower = |args: &[&str]| {
        let out = Command::new("ipmipower")
            .args(["-D", "LAN_2_0", "-h", &hosts, "-u", USER, "-p", PASSWORD])
            .args(["-W", "opensesspriv"])
            .args(args)
            .output()
            .expect("run ipmipower");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // ipmipower labels every line "127.0.0.1:" without the port: count them.
    let out = ipmipower(&["--stat"]);
    assert_eq!(out.matches(": on").count(), n / 2, "{out}");
    assert_eq!(out.matches(": off").count(), n / 2, "{out}");

    let out = ipmipower(&["--on"]);
    assert_eq!(out.matches(": ok").count(), n, "{out}");
    let s = sim.summary();
    assert_eq!(s["power_on"], n as u64, "{s}");
    let out = ipmipower(&["--stat"]);
    assert_eq!(out.matches(": on").count(), n, "{out}");

    let s = sim.summary();
    let t = &s["totals"];
    assert_eq!(t["ipmi_sessions_created"], 2 * n as u64 + n as u64, "{s}");
    assert_eq!(t["ipmi_sessions_closed"], t["ipmi_sessions_created"]);
    assert_eq!(s["ipmi_sessions_open"], 0);
    assert_eq!(s["ipmi_handshakes_pending"], 0);
}
