//! The simulator's Redfish side judged with curl over HTTPS (trusting the
//! certificate the simulator wrote), and its agreement with the IPMI side.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const BASIC: [&str; 2] = ["-u", "admin:password"];
const SYSTEM: &str = "/redfish/v1/Systems/node0";
const RESET: &str = "/redfish/v1/Systems/node0/Actions/ComputerSystem.Reset";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn post(sim: &Sim, auth: &[&str], path: &str, body: &str) -> (u16, String, String) {
    let mut args = auth.to_vec();
    args.extend_from_slice(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
    ]);
    sim.curl(0, &args, path)
}

fn system(sim: &Sim) -> Value {
    let (code, _, body) = sim.curl(0, &BASIC, SYSTEM);
    assert_eq!(code, 200, "{body}");
    json(&body)
}

#[test]
fn service_root_systems_and_reset_as_curl_sees_them() {
    require("curl");
    require("ipmitool");
    let sim = Sim::start(2, &[]);
    // The root is readable without credentials and leads everywhere.
    let (code, _, body) = sim.curl(0, &[], "/redfish/v1/");
    assert_eq!(code, 200, "{body}");
    let root = json(&body);
    assert_eq!(root["Systems"]["@odata.id"], "/redfish/v1/Systems");
    assert_eq!(
        root["Links"]["Sessions"]["@odata.id"],
        "/redfish/v1/SessionService/Sessions"
    );
    // Nothing else is.
    let (code, head, _) = sim.curl(0, &[], "/redfish/v1/Systems");
    assert_eq!(code, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: basic"),
        "{head}"
    );
    let (code, _, _) = sim.curl(0, &["-u", "admin:nope"], "/redfish/v1/Systems");
    assert_eq!(code, 401);

    let (code, _, body) = sim.curl(0, &BASIC, "/redfish/v1/Systems");
    assert_eq!(code, 200);
    assert_eq!(json(&body)["Members"][0]["@odata.id"], SYSTEM);
    let s = system(&sim);
    assert_eq!(s["PowerState"], "Off");
    let allowed = s["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"]
        .as_array()
        .unwrap()
        .clone();
    for t in [
        "On",
        "ForceOff",
        "GracefulShutdown",
        "GracefulRestart",
        "ForceRestart",
        "PowerCycle",
    ] {
        assert!(allowed.contains(&Value::from(t)), "{t} in {allowed:?}");
    }
    assert_eq!(s["Actions"]["#ComputerSystem.Reset"]["target"], RESET);

    // Reset changes PowerState at once, and IPMI sees the same host.
    let (code, _, body) = post(&sim, &BASIC, RESET, r#"{"ResetType":"On"}"#);
    assert_eq!(code, 204, "{body}");
    assert_eq!(system(&sim)["PowerState"], "On");
    let (_, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is on"), "{out}");
    let (_, out) = sim.ipmitool(1, &["chassis", "power", "status"]);
    assert!(
        out.contains("Chassis Power is off"),
        "BMC 1 untouched: {out}"
    );

    // A warm restart keeps the power on and moves the restart evidence.
    let before = system(&sim);
    std::thread::sleep(Duration::from_millis(1100)); // LastResetTime has 1 s resolution
    let (code, _, _) = post(&sim, &BASIC, RESET, r#"{"ResetType":"GracefulRestart"}"#);
    assert_eq!(code, 204);
    let after = system(&sim);
    assert_eq!(after["PowerState"], "On");
    assert_ne!(after["LastResetTime"], before["LastResetTime"]);
    assert_eq!(after["BootProgress"]["LastState"], "OSRunning");
    let (_, out) = sim.ipmitool(0, &["chassis", "restart_cause"]);
    assert!(out.contains("soft reset"), "{out}");

    let (code, _, _) = post(&sim, &BASIC, RESET, r#"{"ResetType":"ForceOff"}"#);
    assert_eq!(code, 204);
    assert_eq!(system(&sim)["PowerState"], "Off");
    let (code, _, body) = post(&sim, &BASIC, RESET, r#"{"ResetType":"Explode"}"#);
    assert_eq!(code, 400);
    assert!(body.contains("ActionParameterValueNotInList"), "{body}");
    let (code, _, body) = post(&sim, &BASIC, RESET, r#"{}"#);
    assert_eq!(code, 400);
    assert!(body.contains("ActionParameterMissing"), "{body}");

    let c = &sim.bmc(0)["counters"];
    assert_eq!(c["redfish_reset_on"], 1);
    assert_eq!(c["redfish_reset_graceful_restart"], 1);
    assert_eq!(c["redfish_reset_force_off"], 1);
    assert_eq!(c["redfish_auth_failures"], 2);
}

#[test]
fn sessions_are_created_used_deleted_and_limited() {
    require("curl");
    let sim = Sim::start(1, &["--redfish-sessions", "2"]);
    let login = |password: &str| {
        post(
            &sim,
            &[],
            "/redfish/v1/SessionService/Sessions",
            &format!(r#"{{"UserName":"admin","Password":"{password}"}}"#),
        )
    };
    let header = |head: &str, name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    let (code, _, _) = login("wrong");
    assert_eq!(code, 401);

    let (code, head, body) = login(PASSWORD);
    assert_eq!(code, 201, "{body}");
    let token = header(&head, "X-Auth-Token");
    let location = header(&head, "Location");
    assert_eq!(json(&body)["@odata.id"], location.as_str());
    let auth = format!("X-Auth-Token: {token}");
    let (code, _, _) = sim.curl(0, &["-H", &auth], SYSTEM);
    assert_eq!(code, 200);

    let (code, _, _) = login(PASSWORD);
    assert_eq!(code, 201);
    let (code, _, body) = login(PASSWORD);
    assert_eq!(code, 503, "the third session is over the limit");
    assert!(body.contains("SessionLimitExceeded"), "{body}");
    assert_eq!(sim.bmc(0)["redfish_sessions_open"], 2);

    let (code, _, _) = sim.curl(0, &["-H", &auth, "-X", "DELETE"], &location);
    assert_eq!(code, 204);
    let (code, _, _) = sim.curl(0, &["-H", &auth], SYSTEM);
    assert_eq!(code, 401, "a deleted session's token is refused");
    let (code, _, _) = login(PASSWORD);
    assert_eq!(code, 201, "the freed slot is usable");

    let b = sim.bmc(0);
    assert_eq!(b["counters"]["redfish_sessions_created"], 3);
    assert_eq!(b["counters"]["redfish_sessions_deleted"], 1);
    assert_eq!(b["counters"]["redfish_sessions_refused"], 1);
    assert_eq!(b["redfish_sessions_open"], 2);
}

#[test]
fn boot_override_with_etags_is_what_ipmi_sees() {
    require("curl");
    require("ipmitool");
    let sim = Sim::start(1, &[]);
    let patch = |etag: &str, body: &str| {
        let mut args = BASIC.to_vec();
        let if_match = format!("If-Match: {etag}");
        args.extend_from_slice(&["-X", "PATCH", "-H", "Content-Type: application/json"]);
        args.extend_from_slice(&["-H", &if_match, "-d", body]);
        sim.curl(0, &args, SYSTEM)
    };
    let pxe = r#"{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}"#;
    let (code, _, _) = patch("W/\"stale\"", pxe);
    assert_eq!(code, 412);
    let etag = system(&sim)["@odata.etag"].as_str().unwrap().to_string();
    let (code, _, body) = patch(&etag, pxe);
    assert_eq!(code, 204, "{body}");
    let s = system(&sim);
    assert_eq!(s["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_ne!(s["@odata.etag"].as_str().unwrap(), etag, "the ETag moves");
    let (_, out) = sim.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
    assert!(
        out.contains("Force PXE") && out.contains("Boot Flag Valid"),
        "{out}"
    );
    let (code, _, body) = patch("*", r#"{"Boot":{"BootSourceOverrideTarget":"Floppy"}}"#);
    assert_eq!(code, 400);
    assert!(body.contains("PropertyValueNotInList"), "{body}");
    let (code, _, _) = patch("*", r#"{"PowerState":"On"}"#);
    assert_eq!(code, 400);
}
