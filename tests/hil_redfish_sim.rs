//! HIL tests against rfsim, our Redfish BMC simulator whose systems are QEMU
//! VMs (hil-tests/redfish-sim). First the simulator itself, checked with
//! plain HTTPS as an independent client (does it behave like firmware?), then
//! our Redfish driver against it.
//!
//! Needs: qemu-system-x86_64, python3, openssl, curl
//! (`hil-tests/redfish-sim/setup.sh`). A peer that cannot run fails the test
//! with the reason.

mod redfish_sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rack_agent::bmc::{Bmc, BmcError, BootDevice, Power, PowerOp};
use redfish_sim::{count, message_id, Guest, Sim, SimOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Long enough for a VM to start or reset on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(60);
/// SeaBIOS prints this once per boot on the OS-less VM's console.
const BIOS_BANNER: &str = "SeaBIOS (version";

fn sim(systems: u16) -> Sim {
    Sim::start(SimOptions {
        systems,
        ..SimOptions::default()
    })
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Powers `id` on through Redfish and waits until SeaBIOS printed its banner.
async fn power_on_bios(s: &Sim, id: &str) {
    s.reset_expect(id, "On", 204).await;
    s.wait_power(id, "On", LIMIT).await;
    s.wait_console(id, BIOS_BANNER, 1, LIMIT).await;
}

// ---------------------------------------------------------------------------
// The simulator, as an independent client sees it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_root_is_public_and_the_rest_needs_credentials() {
    let s = sim(2);
    let root: Value = s
        .http()
        .get(s.url("/redfish/v1/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["Systems"]["@odata.id"], "/redfish/v1/Systems");
    assert_eq!(
        root["Links"]["Sessions"]["@odata.id"],
        "/redfish/v1/SessionService/Sessions"
    );

    // No credentials, wrong ones: 401 with a Redfish error body.
    let (status, body) = json_of(
        s.http()
            .get(s.url("/redfish/v1/Systems"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message_id(&body).ends_with(".NoValidSession"), "{body}");
    let resp = s
        .http()
        .get(s.url("/redfish/v1/Systems"))
        .basic_auth("admin", Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.counters().await["auth_failures"], 2);

    // Basic auth: the systems, their manager and chassis.
    let systems = s.get_json("/redfish/v1/Systems").await;
    let members: Vec<String> = systems["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| str_of(&m["@odata.id"]))
        .collect();
    assert_eq!(
        members,
        vec!["/redfish/v1/Systems/sys1", "/redfish/v1/Systems/sys2"]
    );
    let sys = s.system("sys1").await;
    assert_eq!(sys["PowerState"], "Off");
    assert_eq!(sys["BootProgress"]["LastState"], "None");
    let manager = str_of(&sys["Links"]["ManagedBy"][0]["@odata.id"]);
    assert_eq!(s.get_json(&manager).await["ManagerType"], "BMC");
    let chassis = str_of(&sys["Links"]["Chassis"][0]["@odata.id"]);
    assert_eq!(
        s.get_json(&chassis).await["Links"]["ComputerSystems"][1]["@odata.id"],
        "/redfish/v1/Systems/sys2"
    );
    let (status, body) = json_of(s.get("/redfish/v1/Systems/sys9").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message_id(&body).ends_with(".ResourceNotFound"), "{body}");

    // The restart evidence a system shows is a knob: both, one, or none.
    s.reset_expect("sys2", "On", 204).await;
    s.wait_power("sys2", "On", LIMIT).await;
    let sys = s.system("sys2").await;
    assert!(
        sys["LastResetTime"].is_string() && sys["BootProgress"].is_object(),
        "{sys}"
    );
    s.set_knobs("sys2", json!({"evidence": ["LastResetTime"]}))
        .await;
    let sys = s.system("sys2").await;
    assert!(
        sys["LastResetTime"].is_string() && sys.get("BootProgress").is_none(),
        "{sys}"
    );
    s.set_knobs("sys2", json!({"evidence": []})).await;
    let sys = s.system("sys2").await;
    assert!(
        sys.get("LastResetTime").is_none() && sys.get("BootProgress").is_none(),
        "{sys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_restart_keeps_power_on_and_moves_the_evidence() {
    let s = sim(1);
    let id = "sys1";
    power_on_bios(&s, id).await;
    let before = s.system(id).await;
    let pid = s.state(id).await["qemu_pid"].clone();
    assert!(pid.is_u64(), "no QEMU running: {}", s.state(id).await);
    assert_eq!(
        before["BootProgress"]["LastState"],
        "SystemHardwareInitializationComplete"
    );

    let t = Instant::now();
    s.reset_expect(id, "ForceRestart", 204).await;
    eprintln!("ForceRestart answered in {:?}", t.elapsed());
    // PowerState stays On the whole time while the VM restarts.
    let (after, took) = s
        .wait_system(id, "a new LastResetTime", LIMIT, |sys| {
            assert_eq!(sys["PowerState"], "On", "a reset must not show Off: {sys}");
            sys["LastResetTime"] != before["LastResetTime"]
        })
        .await;
    eprintln!("LastResetTime moved {took:?} after the answer");
    assert!(
        str_of(&after["LastResetTime"]) > str_of(&before["LastResetTime"]),
        "{} then {}",
        before["LastResetTime"],
        after["LastResetTime"]
    );
    assert_ne!(
        after["BootProgress"]["LastStateTime"],
        before["BootProgress"]["LastStateTime"]
    );
    assert_ne!(after["@odata.etag"], before["@odata.etag"]);
    // One more boot on the console, by the same QEMU process (a reset, not a cycle).
    s.wait_console(id, BIOS_BANNER, 2, LIMIT).await;
    for _ in 0..10 {
        assert_eq!(s.system(id).await["PowerState"], "On");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&s.console(id), BIOS_BANNER), 2, "{}", s.console(id));
    let state = s.state(id).await;
    assert_eq!(state["qemu_pid"], pid, "ForceRestart started a new QEMU");
    let causes: Vec<String> = state["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| str_of(&b["cause"]))
        .collect();
    assert_eq!(causes, vec!["power_on", "force_restart"], "{state}");
    let c = s.counters().await;
    assert_eq!(c["resets"][id], json!({"On": 1, "ForceRestart": 1}), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_requests_to_a_vm_without_an_os_never_complete() {
    let s = sim(1);
    let id = "sys1";
    power_on_bios(&s, id).await;
    let before = s.system(id).await;

    // GracefulShutdown: the power button is pressed, nothing listens.
    s.reset_expect(id, "GracefulShutdown", 204).await;
    // GracefulRestart, answered with a task this time.
    s.set_knobs(id, json!({"reset_response": 202, "task_min_ms": 0}))
        .await;
    let resp = s.reset_expect(id, "GracefulRestart", 202).await;
    let monitor = resp
        .headers()
        .get("location")
        .expect("202 without Location")
        .to_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let (status, task) = json_of(s.get(&monitor).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        assert_eq!(task["TaskState"], "Running", "{task}");
        let sys = s.system(id).await;
        assert_eq!(sys["PowerState"], "On");
        assert_eq!(sys["LastResetTime"], before["LastResetTime"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(count(&s.console(id), BIOS_BANNER), 1, "{}", s.console(id));
    let state = s.state(id).await;
    assert_eq!(state["pending"]["kind"], "restart", "{state}");
    assert_eq!(state["boots"].as_array().unwrap().len(), 1, "{state}");

    // A ForceOff ends it: the restart's task is cancelled, the power goes.
    s.reset_expect(id, "ForceOff", 202).await;
    s.wait_power(id, "Off", LIMIT).await;
    let (_, task) = json_of(s.get(&monitor).await).await;
    assert_eq!(task["TaskState"], "Cancelled", "{task}");
    assert!(s.state(id).await["qemu_pid"].is_null());
    let c = s.counters().await;
    assert_eq!(
        c["resets"][id],
        json!({"On": 1, "GracefulShutdown": 1, "GracefulRestart": 1, "ForceOff": 1}),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_needs_the_current_etag_and_a_once_override_is_used_up() {
    let s = sim(1);
    let id = "sys1";
    let path = s.system_path(id);
    let resp = s.get(&path).await;
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["@odata.etag"], etag.as_str(), "header and body agree");
    let pxe_once =
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}});

    // Without If-Match, with a made-up one: 412, nothing changes.
    let (status, err) = json_of(
        s.authed(Method::PATCH, &path)
            .json(&pxe_once)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert!(message_id(&err).ends_with(".PreconditionRequired"), "{err}");
    let (status, err) = json_of(
        s.authed(Method::PATCH, &path)
            .header("If-Match", "\"0123456789abcdef\"")
            .json(&pxe_once)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert!(message_id(&err).ends_with(".PreconditionFailed"), "{err}");
    assert_eq!(
        s.system(id).await["Boot"]["BootSourceOverrideEnabled"],
        "Disabled"
    );

    // With the current ETag: applied, and the ETag moves.
    let resp = s
        .authed(Method::PATCH, &path)
        .header("If-Match", &etag)
        .json(&pxe_once)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let new_etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    let boot = &s.system(id).await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe", "{boot}");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Once", "{boot}");
    // The old ETag is stale now; a value outside the allowable ones is a 400.
    let resp = s
        .authed(Method::PATCH, &path)
        .header("If-Match", &etag)
        .json(&pxe_once)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let (status, err) = json_of(
        s.authed(Method::PATCH, &path)
            .header("If-Match", &new_etag)
            .json(&json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        message_id(&err).ends_with(".PropertyValueNotInList"),
        "{err}"
    );
    let c = s.counters().await;
    assert_eq!(c["patches"][id], 5, "{c}");
    assert_eq!(c["patches_applied"], 1, "{c}");
    assert_eq!(c["precondition_failed"], 3, "{c}");

    // The next boot uses the override, which then reads Disabled; the VM
    // network-boots (iPXE on its console); the boot after that is a default one.
    s.reset_expect(id, "On", 204).await;
    s.wait_power(id, "On", LIMIT).await;
    let boot = &s.system(id).await["Boot"];
    assert_eq!(boot["BootSourceOverrideEnabled"], "Disabled", "{boot}");
    s.wait_console(id, "iPXE", 1, LIMIT).await;
    s.reset_expect(id, "ForceRestart", 204).await;
    let state = s.wait_boots(id, 2, LIMIT).await;
    let devices: Vec<String> = state["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| str_of(&b["device"]))
        .collect();
    assert_eq!(devices, vec!["Pxe", "Default"], "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_limited_and_can_be_deleted() {
    let s = sim(1);
    let sessions = "/redfish/v1/SessionService/Sessions";
    let login = |password: String| {
        let req = s
            .http()
            .post(s.url(sessions))
            .json(&json!({"UserName": "admin", "Password": password}));
        async move { req.send().await.unwrap() }
    };
    // The default limit is 4.
    let mut open = Vec::new();
    for _ in 0..4 {
        let resp = login(s.password.clone()).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let token = resp.headers()["x-auth-token"].to_str().unwrap().to_string();
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(sessions), "{location}");
        open.push((token, location));
    }
    let (status, err) = json_of(login(s.password.clone()).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert!(message_id(&err).ends_with(".SessionLimitExceeded"), "{err}");
    // A token works; basic auth works while the sessions are used up.
    let (token, location) = open.pop().unwrap();
    let resp = s
        .http()
        .get(s.url("/redfish/v1/Systems"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.get("/redfish/v1/Systems").await.status(), StatusCode::OK);
    let listed = s.get_json(sessions).await;
    assert_eq!(listed["Members@odata.count"], 4, "{listed}");

    // Logout frees a slot; the deleted token is refused.
    let resp = s
        .http()
        .delete(s.url(&location))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s
        .http()
        .get(s.url("/redfish/v1/Systems"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(s.password.clone()).await.status(),
        StatusCode::CREATED
    );
    // Wrong password: 401, no session.
    let (status, err) = json_of(login("wrong".into()).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    // The limit is a knob.
    s.set_bmc_knobs(json!({"session_limit": 5})).await;
    assert_eq!(
        login(s.password.clone()).await.status(),
        StatusCode::CREATED
    );

    let c = s.counters().await["sessions"].clone();
    assert_eq!(
        c,
        json!({"created": 6, "deleted": 1, "expired": 0, "open": 5, "refused_limit": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_answered_202_is_followed_by_its_task() {
    let s = Sim::start(SimOptions {
        system_knobs: json!({"reset_response": 202, "task_min_ms": 1500}),
        ..SimOptions::default()
    });
    let id = "sys1";
    let t = Instant::now();
    let resp = s.reset_expect(id, "On", 202).await;
    let monitor = resp.headers()["location"].to_str().unwrap().to_string();
    let (_, task) = json_of(resp).await;
    assert_eq!(task["TaskState"], "Running", "{task}");
    assert_eq!(task["TaskMonitor"], monitor.as_str());
    let task_uri = str_of(&task["@odata.id"]);

    let mut running = 0;
    let done = loop {
        let (status, body) = json_of(s.get(&monitor).await).await;
        match status {
            StatusCode::ACCEPTED => {
                assert_eq!(body["TaskState"], "Running", "{body}");
                running += 1;
            }
            StatusCode::OK => break body,
            other => panic!("task monitor answered {other}: {body}"),
        }
        assert!(t.elapsed() < LIMIT, "the task never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(running >= 1, "the task was never seen running");
    assert!(t.elapsed() >= Duration::from_millis(1500));
    assert_eq!(done["TaskState"], "Completed", "{done}");
    assert_eq!(done["TaskStatus"], "OK", "{done}");
    let task = s.get_json(&task_uri).await;
    assert_eq!(task["TaskState"], "Completed");
    assert_eq!(s.power_state(id).await, "On");
    let tasks = s.get_json("/redfish/v1/TaskService/Tasks").await;
    assert_eq!(tasks["Members"][0]["@odata.id"], task_uri.as_str());
    assert_eq!(s.counters().await["tasks"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_types_through_action_info_and_the_optional_ones() {
    let s = Sim::start(SimOptions {
        system_knobs: json!({"reset_allowable": "action_info", "extra_resets": ["PowerCycle"]}),
        ..SimOptions::default()
    });
    let id = "sys1";
    let sys = s.system(id).await;
    let reset = &sys["Actions"]["#ComputerSystem.Reset"];
    assert!(
        reset.get("ResetType@Redfish.AllowableValues").is_none(),
        "{reset}"
    );
    let info = s.get_json(&str_of(&reset["@Redfish.ActionInfo"])).await;
    let allowed = &info["Parameters"][0];
    assert_eq!(allowed["Name"], "ResetType");
    assert_eq!(
        allowed["AllowableValues"],
        json!([
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "PowerCycle"
        ])
    );

    // Not offered: 400 (or 501, per knob); nothing happens.
    let (status, err) = json_of(s.reset(id, "Nmi").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        message_id(&err).ends_with(".ActionParameterValueNotInList"),
        "{err}"
    );
    s.set_knobs(id, json!({"unsupported_status": 501})).await;
    assert_eq!(
        s.reset(id, "Nmi").await.status(),
        StatusCode::NOT_IMPLEMENTED
    );
    // A restart of a system that is off: 409.
    let (status, err) = json_of(s.reset(id, "ForceRestart").await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    // PowerCycle: a new QEMU process, Off in between.
    power_on_bios(&s, id).await;
    let pid = s.state(id).await["qemu_pid"].clone();
    s.set_knobs(id, json!({"cold_off_ms": 1500})).await;
    s.reset_expect(id, "PowerCycle", 204).await;
    s.wait_power(id, "Off", LIMIT).await;
    s.wait_power(id, "On", LIMIT).await;
    let state = s.state(id).await;
    assert!(
        state["qemu_pid"].is_u64() && state["qemu_pid"] != pid,
        "{state}"
    );
    assert_eq!(state["boots"][1]["cause"], "power_cycle", "{state}");
    let c = s.counters().await;
    assert_eq!(
        c["resets_refused"][id],
        json!({"Nmi": 2, "ForceRestart": 1}),
        "{c}"
    );
    assert_eq!(c["resets"][id], json!({"On": 1, "PowerCycle": 1}), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_knobs_answer_a_status_slow_down_or_hang() {
    let s = sim(2);
    // Two 503s, then normal service.
    s.set_bmc_knobs(json!({"status": 503, "status_times": 2}))
        .await;
    for _ in 0..2 {
        let resp = s.get("/redfish/v1/Systems").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key("retry-after"));
    }
    assert_eq!(s.get("/redfish/v1/Systems").await.status(), StatusCode::OK);

    // Latency on one system only.
    s.set_knobs("sys1", json!({"latency_ms": 800})).await;
    let t = Instant::now();
    s.system("sys1").await;
    let slow = t.elapsed();
    let t = Instant::now();
    s.system("sys2").await;
    let fast = t.elapsed();
    assert!(slow >= Duration::from_millis(800), "{slow:?}");
    assert!(fast < Duration::from_millis(800), "{fast:?}");

    // Hang: the request is accepted and never answered; control still works.
    s.set_bmc_knobs(json!({"hang": true})).await;
    let hung = s
        .authed(Method::GET, "/redfish/v1/")
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        hung.is_err_and(|e| e.is_timeout()),
        "answered while hanging"
    );
    s.set_bmc_knobs(json!({"hang": false})).await;
    assert_eq!(s.get("/redfish/v1/").await.status(), StatusCode::OK);
    let c = s.counters().await["faults"].clone();
    assert_eq!(c["status"], 2, "{c}");
    assert_eq!(c["hang"], 1, "{c}");
    // A bad knob is refused with the reason.
    let resp = s
        .http()
        .post(s.url("/control/systems/sys1/knobs"))
        .json(&json!({"graceful_restart": "lukewarm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("graceful_restart"));
}

/// The knobs of a lying or broken BMC (used by tests/fault_lying_bmc.rs),
/// checked with a plain HTTPS client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_knobs_answer_as_documented() {
    let s = sim(1);
    let sys = s.system_path("sys1");
    // A content type on JSON.
    s.set_knobs("sys1", json!({"content_type": "text/plain"}))
        .await;
    let resp = s.get(&sys).await;
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert!(resp.json::<Value>().await.is_ok());
    // An HTML page instead of JSON.
    s.set_knobs("sys1", json!({"content_type": null, "body": "html"}))
        .await;
    let resp = s.get(&sys).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().starts_with("<!DOCTYPE html>"));
    // JSON cut in half, well framed; then a connection closed early.
    s.set_knobs("sys1", json!({"body": "truncated"})).await;
    let text = s.get(&sys).await.text().await.unwrap();
    assert!(text.starts_with('{') && serde_json::from_str::<Value>(&text).is_err());
    s.set_knobs("sys1", json!({"body": "short_read"})).await;
    assert!(s.get(&sys).await.bytes().await.is_err(), "a short read");
    s.set_knobs("sys1", json!({"body": null})).await;
    // PowerState stuck.
    s.set_knobs("sys1", json!({"power_state": "On"})).await;
    assert_eq!(s.power_state("sys1").await, "On");
    assert_eq!(s.state("sys1").await["power"], "Off");
    s.set_knobs("sys1", json!({"power_state": null})).await;
    // A task that never ends, and nothing done.
    s.set_knobs("sys1", json!({"task_stuck": true})).await;
    let resp = s.reset_expect("sys1", "On", 202).await;
    let monitor = resp.headers()["location"].to_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.get(&monitor).await.status(), StatusCode::ACCEPTED);
    assert_eq!(s.state("sys1").await["power"], "Off");
    s.set_knobs("sys1", json!({"task_stuck": false})).await;
    // A Reset carried out and never answered.
    s.set_knobs("sys1", json!({"reset_unanswered": true})).await;
    let path = format!("{sys}/Actions/ComputerSystem.Reset");
    let unanswered = s
        .authed(Method::POST, &path)
        .json(&json!({"ResetType": "On"}))
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(unanswered.is_err_and(|e| e.is_timeout()), "answered");
    s.wait_power("sys1", "On", LIMIT).await;
    s.set_knobs("sys1", json!({"reset_unanswered": false}))
        .await;
    // A redirect to another origin, same path.
    s.set_knobs("sys1", json!({"redirect": "https://127.0.0.2:1"}))
        .await;
    let cert = reqwest::Certificate::from_pem(&std::fs::read(s.cert()).unwrap()).unwrap();
    let no_redirects = reqwest::Client::builder()
        .add_root_certificate(cert.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(s.url(&sys))
        .basic_auth("admin", Some(&s.password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers()["location"],
        format!("https://127.0.0.2:1{sys}").as_str()
    );
    s.set_knobs("sys1", json!({"redirect": null})).await;
    // Silent: a new connection gets no TLS handshake until the time is up.
    s.set_bmc_knobs(json!({"silent_ms": 1500})).await;
    let fresh = reqwest::Client::builder()
        .add_root_certificate(cert)
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let err = fresh.get(s.url("/redfish/v1/")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        fresh
            .get(s.url("/redfish/v1/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let c = s.counters().await["faults"].clone();
    assert!(c["silent"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["redirect"], 1, "{c}");
}

// ---------------------------------------------------------------------------
// Our driver against the simulator.

/// The driver's TLS errors say what is wrong with the certificate; a
/// connection the BMC closes halfway through an answer is not one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_tells_a_certificate_problem_from_a_broken_answer() {
    let s = sim(1);
    // No trust configured for a self-signed certificate.
    let e = s
        .driver("sys1", &[("ca_file", "")])
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(e, BmcError::Unreachable(_)), "{e:?}");
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    // A pinned fingerprint that is not the BMC's.
    let other = "00".repeat(32);
    let e = s
        .driver("sys1", &[("ca_file", ""), ("cert_sha256", &other)])
        .power_state()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pinned"), "{e}");
    // Trusted, but the answer is cut short by the BMC closing the
    // connection (knob body short_read).
    let d = s.driver("sys1", &[("retries", "0")]);
    d.power_state().await.unwrap();
    s.set_knobs("sys1", json!({"body": "short_read"})).await;
    let e = d.power_state().await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("the exchange broke off"), "{text}");
    assert!(
        !text.contains("TLS handshake") && !text.contains("ca_file"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_discovers_reset_types_inline_and_through_action_info() {
    let s = sim(3);
    s.set_knobs(
        "sys2",
        json!({"reset_allowable": "action_info", "extra_resets": ["PowerCycle", "Nmi"]}),
    )
    .await;
    s.set_knobs("sys3", json!({"reset_allowable": "none"}))
        .await;
    let standard = vec![
        PowerOp::On,
        PowerOp::GracefulOff,
        PowerOp::ForceOff,
        PowerOp::HardReset,
        PowerOp::GracefulRestart,
    ];
    let caps = s.driver("sys1", &[]).capabilities().await.unwrap();
    assert_eq!(caps.power_ops, standard);
    assert_eq!(
        caps.boot_devices,
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cd,
            BootDevice::Bios
        ]
    );
    assert!(!caps.virtual_media);
    let caps = s.driver("sys2", &[]).capabilities().await.unwrap();
    assert_eq!(caps.power_ops, PowerOp::ALL.to_vec(), "from the ActionInfo");
    // No allowable values at all: the driver assumes the standard set.
    let caps = s.driver("sys3", &[]).capabilities().await.unwrap();
    assert_eq!(caps.power_ops, PowerOp::ALL.to_vec());

    // An op the system does not offer is refused before anything is sent.
    let d = s.driver("sys1", &[]);
    let e = d.power(PowerOp::PowerCycle).await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
    assert_eq!(s.counters().await["resets"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_powers_the_vm_on_resets_it_and_powers_it_off() {
    let s = sim(1);
    let id = "sys1";
    let d = s.driver(id, &[]);
    assert_eq!(d.power_state().await.unwrap(), Power::Off);

    let t = Instant::now();
    d.power(PowerOp::On).await.unwrap();
    eprintln!("driver On accepted in {:?}", t.elapsed());
    let took = s.wait_power(id, "On", LIMIT).await;
    eprintln!("PowerState On {took:?} later");
    assert!(s.state(id).await["qemu_pid"].is_u64());
    assert_eq!(d.power_state().await.unwrap(), Power::On);
    s.wait_console(id, BIOS_BANNER, 1, LIMIT).await;

    let before = s.system(id).await["LastResetTime"].clone();
    d.power(PowerOp::HardReset).await.unwrap();
    s.wait_system(id, "a new LastResetTime", LIMIT, |sys| {
        assert_eq!(sys["PowerState"], "On", "{sys}");
        sys["LastResetTime"] != before
    })
    .await;
    s.wait_console(id, BIOS_BANNER, 2, LIMIT).await;

    d.power(PowerOp::ForceOff).await.unwrap();
    s.wait_power(id, "Off", LIMIT).await;
    assert!(s.state(id).await["qemu_pid"].is_null());
    assert_eq!(d.power_state().await.unwrap(), Power::Off);
    let c = s.counters().await;
    assert_eq!(
        c["resets"][id],
        json!({"On": 1, "ForceRestart": 1, "ForceOff": 1}),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_reads_the_restart_marker_and_sees_a_hard_reset() {
    let s = sim(3);
    let id = "sys1";
    s.set_knobs("sys2", json!({"evidence": ["LastResetTime"]}))
        .await;
    s.set_knobs("sys3", json!({"evidence": []})).await;
    let d = s.driver(id, &[]);
    assert!(d.capabilities().await.unwrap().restart_evidence);
    assert!(
        s.driver("sys2", &[])
            .capabilities()
            .await
            .unwrap()
            .restart_evidence
    );
    let none = s.driver("sys3", &[]);
    assert!(!none.capabilities().await.unwrap().restart_evidence);
    assert_eq!(none.observe().await.unwrap().marker, None);

    d.power(PowerOp::On).await.unwrap();
    s.wait_power(id, "On", LIMIT).await;
    let before = d.observe().await.unwrap();
    let sys = s.system(id).await;
    let marker = before.marker.clone().expect("a marker");
    assert_eq!(before.power, Power::On);
    assert_eq!(
        marker.last_reset_time.as_deref(),
        sys["LastResetTime"].as_str()
    );
    assert_eq!(
        marker.boot_progress.as_deref(),
        Some("SystemHardwareInitializationComplete")
    );

    d.power(PowerOp::HardReset).await.unwrap();
    s.wait_system(id, "a new LastResetTime", LIMIT, |now| {
        now["LastResetTime"] != sys["LastResetTime"]
    })
    .await;
    let after = d.observe().await.unwrap();
    assert_eq!(after.power, Power::On);
    let now = after.marker.expect("a marker");
    assert!(now.shows_restart_since(&marker), "{marker} → {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_sets_the_boot_override_with_the_etag() {
    let s = sim(1);
    let id = "sys1";
    let d = s.driver(id, &[]);
    d.set_boot_once(BootDevice::Pxe).await.unwrap();
    let boot = &s.system(id).await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe", "{boot}");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Once", "{boot}");
    let c = s.counters().await;
    assert_eq!(
        (c["patches"][id].clone(), c["precondition_failed"].clone()),
        (json!(1), json!(0)),
        "{c}"
    );

    // The resource changes between the driver's GET and its PATCH, once: the
    // driver reads the ETag again and succeeds.
    s.set_knobs(id, json!({"precondition_fail_times": 1})).await;
    d.set_boot_once(BootDevice::Cd).await.unwrap();
    assert_eq!(s.system(id).await["Boot"]["BootSourceOverrideTarget"], "Cd");
    let c = s.counters().await;
    assert_eq!(
        (c["patches"][id].clone(), c["precondition_failed"].clone()),
        (json!(3), json!(1)),
        "{c}"
    );
    // Twice: it gives up and says why.
    s.set_knobs(id, json!({"precondition_fail_times": 2})).await;
    let e = d.set_boot_once(BootDevice::Disk).await.unwrap_err();
    assert!(matches!(e, BmcError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("412"), "{e}");
    assert_eq!(s.system(id).await["Boot"]["BootSourceOverrideTarget"], "Cd");

    // The next power on boots from it once.
    d.power(PowerOp::On).await.unwrap();
    s.wait_power(id, "On", LIMIT).await;
    assert_eq!(
        s.system(id).await["Boot"]["BootSourceOverrideEnabled"],
        "Disabled"
    );
    assert_eq!(s.state(id).await["boots"][0]["device"], "Cd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_logs_in_once_and_logs_out_at_close() {
    let s = sim(2);
    let d1 = s.driver("sys1", &[]);
    let d2 = s.driver("sys2", &[("auth", "session")]);
    for _ in 0..3 {
        assert_eq!(d1.power_state().await.unwrap(), Power::Off);
        assert_eq!(d2.power_state().await.unwrap(), Power::Off);
    }
    d1.power(PowerOp::On).await.unwrap();
    let c = s.counters().await["sessions"].clone();
    assert_eq!(
        (c["created"].clone(), c["open"].clone()),
        (json!(2), json!(2)),
        "one session per driver: {c}"
    );
    d1.close().await;
    d2.close().await;
    let c = s.counters().await["sessions"].clone();
    assert_eq!(
        (c["deleted"].clone(), c["open"].clone()),
        (json!(2), json!(0)),
        "{c}"
    );

    // A BMC out of sessions: with auth = session the driver fails and says
    // why; by default it falls back to basic auth.
    s.set_bmc_knobs(json!({"session_limit": 0})).await;
    let strict = s.driver("sys2", &[("auth", "session")]);
    let e = strict.power_state().await.unwrap_err();
    assert!(e.to_string().contains("simultaneous sessions"), "{e}");
    let auto = s.driver("sys2", &[]);
    assert_eq!(auto.power_state().await.unwrap(), Power::Off);
    assert!(
        s.counters().await["sessions"]["refused_limit"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // Wrong password: an Auth error with the BMC's words, no secret in it.
    let mut ep = s.endpoint("sys1", &[]);
    ep.password = rack_agent::bmc::Secret::new("Wr0ng-but-secret");
    let d = rack_agent::bmc::redfish::RedfishBmc::connect("sys1", &ep).unwrap();
    let e = d.power_state().await.unwrap_err();
    assert!(matches!(e, BmcError::Auth(_)), "{e:?}");
    assert!(!e.to_string().contains("Wr0ng-but-secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_follows_the_reset_task_until_it_ends() {
    let s = Sim::start(SimOptions {
        system_knobs: json!({"reset_response": 202, "task_min_ms": 1500}),
        ..SimOptions::default()
    });
    let id = "sys1";
    let d = s.driver(id, &[("task_timeout", "8s")]);
    let t = Instant::now();
    d.power(PowerOp::On).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "returned before the task ended: {took:?}"
    );
    assert_eq!(s.power_state(id).await, "On");
    let task = s.get_json("/redfish/v1/TaskService/Tasks/1").await;
    assert_eq!(task["TaskState"], "Completed", "{task}");

    // A graceful restart of a VM without an OS never ends. The driver does
    // not wait for its task: accepted is done, and the engine confirms the
    // effect with its own budgets (soft_reboot, then its fallback).
    s.wait_console(id, BIOS_BANNER, 1, LIMIT).await;
    let t = Instant::now();
    d.power(PowerOp::GracefulRestart).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let task = s.get_json("/redfish/v1/TaskService/Tasks/2").await;
    assert_eq!(task["TaskState"], "Running", "{task}");

    // A forced reset whose task never ends: the driver's task_timeout says
    // so, and that the reset was accepted and not re-sent.
    s.set_knobs(id, json!({"task_stuck": true})).await;
    let d = s.driver(id, &[("task_timeout", "2s")]);
    let e = d.power(PowerOp::HardReset).await.unwrap_err();
    assert!(matches!(e, BmcError::Unfinished(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("Reset ForceRestart was accepted (HTTP 202)")
            && text.contains("still Running after 2s"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// With the bench guest (hil-tests/guest), which reacts to the ACPI power
// button and says on its console when it boots and is ready.

/// The guest is ready 2.4–8 s after a start on this machine; its README asks
/// for a generous timeout.
const GUEST_LIMIT: Duration = Duration::from_secs(120);
const GUEST_BOOT: &str = "rack-guest: boot";
const GUEST_READY: &str = "rack-guest: ready";
const GUEST_CLEAN_OFF: &str = "rack-guest: power button: clean shutdown";

fn acpi_sim(systems: u16) -> Sim {
    Sim::start(SimOptions {
        systems,
        guest: Guest::Acpi,
        ..SimOptions::default()
    })
}

/// Powers `id` on and waits until the guest is ready (`OSRunning`).
async fn power_on_guest(s: &Sim, id: &str) -> Value {
    s.reset_expect(id, "On", 204).await;
    s.wait_console(id, GUEST_READY, 1, GUEST_LIMIT).await;
    s.wait_system(id, "OSRunning", GUEST_LIMIT, |sys| {
        sys["BootProgress"]["LastState"] == "OSRunning"
    })
    .await
    .0
}

/// Polls until the guest is running again after a restart that keeps the
/// power on, asserting PowerState On at every read; returns the system and
/// the BootProgress states seen on the way.
async fn wait_warm_restart(s: &Sim, id: &str, before: &Value) -> (Value, Vec<String>) {
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let sys = s.system(id).await;
        assert_eq!(
            sys["PowerState"],
            "On",
            "PowerState must stay On through a warm restart: {sys}\n{}",
            s.log()
        );
        let state = str_of(&sys["BootProgress"]["LastState"]);
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if sys["LastResetTime"] != before["LastResetTime"] && state == "OSRunning" {
            return (sys, seen);
        }
        assert!(
            started.elapsed() < GUEST_LIMIT,
            "no restart to OSRunning within {GUEST_LIMIT:?}; states seen {seen:?}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_is_warm_with_the_acpi_guest() {
    let s = acpi_sim(1);
    let id = "sys1";
    let before = power_on_guest(&s, id).await;
    let pid = s.state(id).await["qemu_pid"].clone();

    let t = Instant::now();
    s.reset_expect(id, "GracefulRestart", 204).await;
    let (after, seen) = wait_warm_restart(&s, id, &before).await;
    eprintln!(
        "warm GracefulRestart: OSRunning again after {:?}, BootProgress {seen:?}",
        t.elapsed()
    );
    assert!(
        seen.contains(&"SystemHardwareInitializationComplete".to_string()),
        "BootProgress never went back to the start: {seen:?}"
    );
    assert!(str_of(&after["LastResetTime"]) > str_of(&before["LastResetTime"]));
    // The guest shut down cleanly and booted once more, in the same QEMU.
    let console = s.console(id);
    assert_eq!(count(&console, GUEST_CLEAN_OFF), 1, "{console}");
    assert_eq!(count(&console, GUEST_BOOT), 2, "{console}");
    assert_eq!(count(&console, GUEST_READY), 2, "{console}");
    let state = s.state(id).await;
    assert_eq!(
        state["qemu_pid"], pid,
        "a warm restart keeps the VM: {state}"
    );
    assert_eq!(state["boots"][1]["cause"], "graceful_restart", "{state}");
    assert!(state["pending"].is_null(), "{state}");

    // The same request with the cold style, for contrast: Off in between,
    // a new QEMU process.
    s.set_knobs(id, json!({"graceful_restart": "cold", "cold_off_ms": 1500}))
        .await;
    s.reset_expect(id, "GracefulRestart", 204).await;
    s.wait_power(id, "Off", GUEST_LIMIT).await;
    s.wait_power(id, "On", GUEST_LIMIT).await;
    s.wait_console(id, GUEST_READY, 3, GUEST_LIMIT).await;
    let state = s.state(id).await;
    assert!(
        state["qemu_pid"].is_u64() && state["qemu_pid"] != pid,
        "{state}"
    );
    assert_eq!(
        state["boots"][2]["cause"], "graceful_restart_cold",
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_restart_and_graceful_shutdown_of_the_acpi_guest() {
    let s = acpi_sim(1);
    let id = "sys1";
    let before = power_on_guest(&s, id).await;
    assert_eq!(count(&s.console(id), GUEST_BOOT), 1);

    // ForceRestart: no shutdown, one more boot, power On throughout.
    s.reset_expect(id, "ForceRestart", 204).await;
    wait_warm_restart(&s, id, &before).await;
    let console = s.console(id);
    assert_eq!(count(&console, GUEST_BOOT), 2, "{console}");
    assert_eq!(count(&console, GUEST_CLEAN_OFF), 0, "{console}");

    // GracefulShutdown with a task: it ends when the guest powered off.
    s.set_knobs(id, json!({"reset_response": 202, "task_min_ms": 0}))
        .await;
    let resp = s.reset_expect(id, "GracefulShutdown", 202).await;
    let monitor = resp.headers()["location"].to_str().unwrap().to_string();
    s.wait_power(id, "Off", GUEST_LIMIT).await;
    let (status, task) = json_of(s.get(&monitor).await).await;
    assert_eq!(
        (status, str_of(&task["TaskState"])),
        (StatusCode::OK, "Completed".into()),
        "{task}"
    );
    assert_eq!(count(&s.console(id), GUEST_CLEAN_OFF), 1);
    let sys = s.system(id).await;
    assert_eq!(sys["BootProgress"]["LastState"], "None", "{sys}");
    assert!(s.state(id).await["qemu_pid"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_graceful_restart_of_the_acpi_guest() {
    let s = acpi_sim(1);
    let id = "sys1";
    let d = s.driver(id, &[]);
    d.power(PowerOp::On).await.unwrap();
    s.wait_console(id, GUEST_READY, 1, GUEST_LIMIT).await;
    let before = s
        .wait_system(id, "OSRunning", GUEST_LIMIT, |sys| {
            sys["BootProgress"]["LastState"] == "OSRunning"
        })
        .await
        .0;
    let marker = d.observe().await.unwrap().marker.expect("a marker");
    d.power(PowerOp::GracefulRestart).await.unwrap();
    wait_warm_restart(&s, id, &before).await;
    let after = d.observe().await.unwrap();
    assert_eq!(after.power, Power::On);
    let now = after.marker.expect("a marker");
    assert!(now.shows_restart_since(&marker), "{marker} → {now}");
    assert_eq!(count(&s.console(id), GUEST_CLEAN_OFF), 1);
    d.power(PowerOp::GracefulOff).await.unwrap();
    s.wait_power(id, "Off", GUEST_LIMIT).await;
    assert_eq!(d.power_state().await.unwrap(), Power::Off);
    let c = s.counters().await;
    assert_eq!(
        c["resets"][id],
        json!({"On": 1, "GracefulRestart": 1, "GracefulShutdown": 1}),
        "{c}"
    );
}

/// A marker read while the guest boots and one read once it runs, with no
/// restart in between: the BMC's BootProgress moved forward within one boot
/// (SystemHardwareInitializationComplete → OSBootStarted → OSRunning), as
/// firmware's does, while LastResetTime stayed. That is not a restart. The
/// engine confirms a SOFT/HARD reboot with `shows_restart_since`, so a reboot
/// requested while the server is still booting would be "confirmed" by the
/// boot that was already under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_marker_shows_no_restart_while_one_boot_progresses() {
    let s = acpi_sim(1);
    let id = "sys1";
    let d = s.driver(id, &[]);
    d.power(PowerOp::On).await.unwrap();
    s.wait_power(id, "On", GUEST_LIMIT).await;
    let booting = d.observe().await.unwrap().marker.expect("a marker");
    assert_eq!(
        booting.boot_progress.as_deref(),
        Some("SystemHardwareInitializationComplete"),
        "read too late: {booting}"
    );
    s.wait_console(id, GUEST_READY, 1, GUEST_LIMIT).await;
    let running = s
        .wait_system(id, "OSRunning", GUEST_LIMIT, |sys| {
            sys["BootProgress"]["LastState"] == "OSRunning"
        })
        .await
        .0;
    let ready = d.observe().await.unwrap().marker.expect("a marker");
    // No restart happened: one boot, the same LastResetTime.
    assert_eq!(s.state(id).await["boots"].as_array().unwrap().len(), 1);
    assert_eq!(ready.last_reset_time, booting.last_reset_time);
    assert_eq!(
        ready.last_reset_time.as_deref(),
        running["LastResetTime"].as_str()
    );
    assert!(
        !ready.shows_restart_since(&booting),
        "one boot progressing is taken for a restart: {booting} → {ready}"
    );
}

// ---------------------------------------------------------------------------
// Inventory: identity, sensors and the SEL, the driver against curl.

fn text_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// A sensor as compared: value, unit in words, status.
type SensorView = (Option<f64>, String, String);

/// The Redfish unit in the words the driver documents (the IPMI side's).
fn unit_words(ucum: &str) -> String {
    match ucum {
        "Cel" => "degrees C",
        "V" => "Volts",
        "A" => "Amps",
        "W" => "Watts",
        other => other,
    }
    .to_string()
}

fn curl_status(member: &Value) -> String {
    match member["Status"]["State"].as_str() {
        Some("Enabled") | None => member["Status"]["Health"]
            .as_str()
            .unwrap_or("OK")
            .to_ascii_lowercase(),
        Some(_) => "unavailable".into(),
    }
}

/// What curl reads of the system's sensors, by name: the chassis' `Sensors`
/// members, or its `Thermal` and `Power` arrays. Members whose reading is
/// not a number (or null) are left out: the driver must report those as
/// problems.
fn curl_sensors(s: &Sim, id: &str, mode: &str) -> BTreeMap<String, SensorView> {
    // The first chassis the system links that has sensors (the enclosure,
    // Chassis1, has none).
    let sys = s.curl(&s.system_path(id));
    let chassis = sys["Links"]["Chassis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s.curl(l["@odata.id"].as_str().unwrap()))
        .find(|c| {
            ["Sensors", "Thermal", "Power"]
                .iter()
                .any(|k| c.get(*k).is_some())
        })
        .expect("a chassis with sensors");
    assert_eq!(chassis["Id"], id);
    let mut out = BTreeMap::new();
    let mut add = |m: &Value, reading: &Value, unit: String| {
        if reading.is_number() || reading.is_null() {
            out.insert(str_of(&m["Name"]), (reading.as_f64(), unit, curl_status(m)));
        }
    };
    if mode == "sensors" {
        let coll = chassis["Sensors"]["@odata.id"]
            .as_str()
            .expect("Sensors link");
        for m in s.curl_members(coll) {
            add(
                &m,
                &m["Reading"],
                unit_words(m["ReadingUnits"].as_str().unwrap()),
            );
        }
    } else {
        assert!(chassis.get("Sensors").is_none(), "{chassis}");
        let thermal = s.curl(chassis["Thermal"]["@odata.id"].as_str().unwrap());
        let power = s.curl(chassis["Power"]["@odata.id"].as_str().unwrap());
        for (res, array, key, unit) in [
            (&thermal, "Temperatures", "ReadingCelsius", "degrees C"),
            (&thermal, "Fans", "Reading", "RPM"),
            (&power, "Voltages", "ReadingVolts", "Volts"),
            (&power, "PowerControl", "PowerConsumedWatts", "Watts"),
        ] {
            for m in res[array].as_array().unwrap() {
                add(m, &m[key], unit.to_string());
            }
        }
    }
    out
}

fn driver_sensors(h: &rack_agent::bmc::Health) -> BTreeMap<String, SensorView> {
    h.sensors
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                (s.value, s.unit.clone(), s.status.as_str().to_string()),
            )
        })
        .collect()
}

async fn get_requests(s: &Sim) -> u64 {
    s.counters().await["requests"]["GET"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_identity_equals_curl() {
    let s = sim(2);
    let mut serials = Vec::new();
    for id in ["sys1", "sys2"] {
        let got = s.driver(id, &[]).identity().await.unwrap();
        let sys = s.curl(&s.system_path(id));
        let mgr = s.curl(sys["Links"]["ManagedBy"][0]["@odata.id"].as_str().unwrap());
        assert_eq!(got.bmc_manufacturer, text_of(&mgr["Manufacturer"]));
        assert_eq!(got.bmc_model, text_of(&mgr["Model"]));
        assert_eq!(got.firmware_version, text_of(&mgr["FirmwareVersion"]));
        assert_eq!(got.system_manufacturer, text_of(&sys["Manufacturer"]));
        assert_eq!(got.system_model, text_of(&sys["Model"]));
        assert_eq!(got.serial_number, text_of(&sys["SerialNumber"]));
        assert_eq!(got.bios_version, text_of(&sys["BiosVersion"]));
        assert_eq!(got.ipmi_version, None);
        // Everything there to compare: the simulator fills every field.
        assert!(
            got.bmc_manufacturer.is_some()
                && got.bmc_model.is_some()
                && got.firmware_version.is_some()
                && got.serial_number.is_some()
                && got.bios_version.is_some(),
            "{got:?}"
        );
        serials.push(got.serial_number.clone());
    }
    assert_ne!(serials[0], serials[1], "each system has its own serial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_health_equals_curl_for_sensors_and_legacy_and_sees_a_critical_inlet() {
    let s = sim(1);
    let id = "sys1";
    let d = s.driver(id, &[]);
    d.capabilities().await.unwrap(); // discovery, so that the counts below are health's own
    for mode in ["sensors", "legacy"] {
        s.set_knobs(id, json!({ "sensors": mode })).await;
        let before = get_requests(&s).await;
        let h = d.health().await.unwrap();
        let gets = get_requests(&s).await - before; // /control is not counted
        let want = curl_sensors(&s, id, mode);
        assert_eq!(driver_sensors(&h), want, "{mode}");
        assert!(h.problems.is_empty(), "{mode}: {:?}", h.problems);
        assert_eq!(h.inlet_celsius(), Some(23.0), "{mode}");
        assert!(h.power_watts().is_some(), "{mode}");
        // System, the two chassis it links (the enclosure first), then the
        // Sensors collection and (no $expand) one GET per member, or Thermal
        // and Power.
        let want_gets = if mode == "sensors" {
            4 + want.len() as u64
        } else {
            5
        };
        assert_eq!(gets, want_gets, "{mode}: GETs of one health call");
    }

    // The inlet over its critical threshold, and the CPU sensor gone.
    s.control(
        Method::POST,
        &format!("/control/systems/{id}/sensors"),
        Some(json!({"InletTemp": 45.0, "CPU1Temp": {"state": "Absent"}})),
    )
    .await;
    for mode in ["sensors", "legacy"] {
        s.set_knobs(id, json!({ "sensors": mode })).await;
        let h = d.health().await.unwrap();
        let want = curl_sensors(&s, id, mode);
        assert_eq!(driver_sensors(&h), want, "{mode}");
        assert_eq!(want["Inlet Temp"].2, "critical", "curl, {mode}");
        assert_eq!(
            want["CPU1 Temp"],
            (None, "degrees C".into(), "unavailable".into())
        );
        assert_eq!(h.inlet_celsius(), Some(45.0));
    }

    // `both` links Sensors and the legacy pair: the driver reads Sensors.
    s.set_knobs(id, json!({"sensors": "both", "malformed_sensor": true}))
        .await;
    let h = d.health().await.unwrap();
    assert_eq!(driver_sensors(&h), curl_sensors(&s, id, "sensors"));
    assert!(h.sensors.iter().any(|s| s.name == "PSU1 Input Current"));
    // The malformed member is named, the others are still there.
    assert_eq!(h.problems.len(), 1, "{:?}", h.problems);
    assert!(
        h.problems[0].starts_with("/redfish/v1/Chassis/sys1/Sensors/Broken: Reading is a string"),
        "{:?}",
        h.problems
    );
    s.set_knobs(id, json!({"sensors": "legacy"})).await;
    let h = d.health().await.unwrap();
    assert_eq!(driver_sensors(&h), curl_sensors(&s, id, "legacy"));
    assert_eq!(
        h.problems,
        ["/redfish/v1/Chassis/sys1/Thermal#/Temperatures/1: ReadingCelsius is a string, not a number"]
    );

    // With $expand advertised, the members come in the collection's GET.
    s.set_knobs(id, json!({"sensors": "sensors"})).await;
    s.set_bmc_knobs(json!({"expand": true})).await;
    let d2 = s.driver(id, &[]);
    d2.capabilities().await.unwrap();
    let before = get_requests(&s).await;
    let h = d2.health().await.unwrap();
    assert_eq!(
        get_requests(&s).await - before,
        4,
        "system, the enclosure, its chassis, Sensors?$expand=."
    );
    assert_eq!(driver_sensors(&h), curl_sensors(&s, id, "sensors"));
    assert_eq!(h.problems.len(), 1, "{:?}", h.problems);
}

/// Unix seconds of an RFC 3339 time, as GNU date reads it.
fn epoch(t: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", t, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date cannot read {t:?}"))
}

/// The SEL's entries as curl reads them (every page), those with an Id.
fn curl_sel(s: &Sim, id: &str) -> Vec<Value> {
    s.curl_members(&format!("/redfish/v1/Systems/{id}/LogServices/SEL/Entries"))
        .into_iter()
        .filter(|e| e["Id"].is_string())
        .collect()
}

fn assert_events_equal(got: &[rack_agent::bmc::BmcEvent], want: &[Value]) {
    let got_ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|e| e["Id"].as_str().unwrap()).collect();
    assert_eq!(got_ids, want_ids);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.at, Some(epoch(w["Created"].as_str().unwrap())), "{w}");
        assert_eq!(Some(g.message.as_str()), w["Message"].as_str(), "{w}");
        assert_eq!(Some(g.event.as_str()), w["Message"].as_str(), "{w}");
        assert_eq!(g.sensor_type, str_of(&w["SensorType"]), "{w}");
        assert_eq!(g.sensor, w["SensorNumber"].to_string(), "{w}");
        assert_eq!(
            g.severity,
            w["Severity"].as_str().unwrap().to_ascii_lowercase()
        );
        let direction = match w["EntryCode"].as_str() {
            Some("Assert") => "asserted",
            Some("Deassert") => "deasserted",
            _ => "",
        };
        assert_eq!(g.direction, direction, "{w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_events_follow_the_sel_pages_and_equal_curl() {
    let s = Sim::start(SimOptions {
        system_knobs: json!({"sel_page_size": 2, "malformed_log_entry": true}),
        ..SimOptions::default()
    });
    let id = "sys1";
    power_on_bios(&s, id).await;
    s.reset_expect(id, "ForceRestart", 204).await;
    s.wait_boots(id, 2, LIMIT).await;
    let sensors = format!("/control/systems/{id}/sensors");
    s.control(Method::POST, &sensors, Some(json!({"InletTemp": 45.0})))
        .await;
    s.control(Method::POST, &sensors, Some(json!({"InletTemp": 23.0})))
        .await;
    s.reset_expect(id, "ForceOff", 204).await;
    s.wait_power(id, "Off", LIMIT).await;

    let want = curl_sel(&s, id);
    let first = s.curl(&format!("/redfish/v1/Systems/{id}/LogServices/SEL/Entries"));
    assert_eq!(first["Members"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(
        first["Members@odata.count"], 6,
        "5 entries and a malformed one: 3 pages: {first}"
    );
    let messages: Vec<&str> = want
        .iter()
        .map(|e| e["Message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 5, "{messages:?}");
    assert!(
        messages[0].starts_with("The system powered on"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("The system restarted"),
        "{messages:?}"
    );
    assert!(
        messages[2].contains("crossed its critical threshold"),
        "{messages:?}"
    );
    assert_eq!(want[2]["Severity"], "Critical");
    assert!(messages[3].contains("is back within"), "{messages:?}");
    assert_eq!(messages[4], "The system powered off.");

    // The driver: every page, the SEL (not the manager's Event log), the
    // malformed entry left out.
    let d = s.driver(id, &[]);
    let got = d.events(None, 100).await.unwrap();
    assert_events_equal(&got, &want);

    // since and limit: the newest `limit` of those at or after `since`.
    let since = got[2].at;
    let newer: Vec<Value> = want
        .iter()
        .filter(|e| epoch(e["Created"].as_str().unwrap()) >= since.unwrap())
        .cloned()
        .collect();
    let got = d.events(since, 2).await.unwrap();
    assert_events_equal(&got, &newer[newer.len() - 2..]);
    assert!(d.events(None, 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_button_press_turns_the_guest_off_behind_the_agents_back_and_both_see_it() {
    let s = acpi_sim(1);
    let id = "sys1";
    power_on_guest(&s, id).await;
    let d = s.driver(id, &[]);
    assert_eq!(d.power_state().await.unwrap(), Power::On);
    let before = d.events(None, 1000).await.unwrap();
    assert_events_equal(&before, &curl_sel(&s, id));

    s.control(
        Method::POST,
        &format!("/control/systems/{id}/power_button"),
        Some(json!({})),
    )
    .await;
    s.wait_power(id, "Off", LIMIT).await;
    assert_eq!(d.power_state().await.unwrap(), Power::Off);
    // The guest shut down by itself, on the ACPI button.
    assert_eq!(s.state(id).await["console_marks"]["clean_shutdown"], 1);

    let want = curl_sel(&s, id);
    let after = d.events(None, 1000).await.unwrap();
    assert_events_equal(&after, &want);
    let new: Vec<&str> = after[before.len()..]
        .iter()
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(new, ["Power Button pressed", "The system powered off."]);
    let button = &after[before.len()];
    assert_eq!(
        (button.sensor_type.as_str(), button.direction.as_str()),
        ("Button/Switch", "asserted")
    );
}
