//! The real `rack-agent` daemon against rfsim (hil-tests/redfish-sim) with
//! the ACPI bench guest: the case sushy-tools hid. On firmware a SOFT reboot
//! through Redfish `GracefulRestart` is a warm restart — the power never goes
//! off — so it can only be confirmed by the BMC's restart evidence. Every
//! effect is checked at the simulator: its counters, its console, its VM.

mod common;
mod redfish_sim;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use redfish_sim::{count, Guest, Sim, SimOptions};
use reqwest::Method;
use serde_json::{json, Value};
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(120);
const GUEST_BOOT: &str = "rack-guest: boot";
const GUEST_READY: &str = "rack-guest: ready";
const GUEST_CLEAN_OFF: &str = "rack-guest: power button: clean shutdown";
const SERVER: &str = "rf-1";
const SYSTEM: &str = "sys1";

const SETTINGS: &str =
    "[sync]\ninterval = \"1s\"\njitter = \"100ms\"\nunknown_after_failures = 1\n\n\
[timeouts]\nbmc_command = \"15s\"\nconfirm_poll = \"250ms\"\npower_confirm = \"30s\"\n\
soft_reboot = \"20s\"\ngraceful_stop = \"30s\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n";

/// rfsim with the ACPI guest, and a daemon that controls its `sys1` as
/// `rf-1`, once the daemon has read its power.
async fn bench() -> (Sim, tempfile::TempDir, Daemon, RackAgentClient<Channel>) {
    let s = Sim::start(SimOptions {
        guest: Guest::Acpi,
        ..SimOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "rf.pass", &s.password);
    let config = format!(
        "{SETTINGS}[[servers]]\nid = \"{SERVER}\"\nproject = \"p1\"\nprotocol = \"redfish\"\n\
         address = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword_file = \"rf.pass\"\n\
         options = {{ system_id = \"{SYSTEM}\", ca_file = \"{}\" }}\n",
        s.port,
        s.cert().display()
    );
    let daemon = start_daemon(dir.path(), &config);
    let mut client = daemon.client().await;
    // Actions are refused until the first sync has read the power.
    wait_server(&mut client, SERVER, LIMIT, |srv| {
        srv.power_state != pb::PowerState::Unknown as i32
            && srv.power_state != pb::PowerState::Unspecified as i32
    })
    .await;
    (s, dir, daemon, client)
}

async fn start(client: &mut RackAgentClient<Channel>) -> pb::Action {
    let req = pb::StartRequest {
        server_id: SERVER.into(),
        request_id: String::new(),
    };
    let id = client.start(admin(req)).await.unwrap().into_inner().id;
    wait_action(client, &id, LIMIT).await
}

async fn soft_reboot(client: &mut RackAgentClient<Channel>) -> pb::Action {
    let req = pb::RebootRequest {
        server_id: SERVER.into(),
        r#type: pb::RebootType::Soft as i32,
        request_id: String::new(),
    };
    let id = client.reboot(admin(req)).await.unwrap().into_inner().id;
    wait_action(client, &id, LIMIT).await
}

async fn graceful_stop(client: &mut RackAgentClient<Channel>) -> pb::Action {
    let req = pb::StopRequest {
        server_id: SERVER.into(),
        force: false,
        request_id: String::new(),
    };
    let id = client.stop(admin(req)).await.unwrap().into_inner().id;
    wait_action(client, &id, LIMIT).await
}

fn steps(a: &pb::Action) -> Vec<String> {
    a.events.iter().map(|e| e.step.clone()).collect()
}

fn assert_succeeded(what: &str, a: &pb::Action) {
    assert_eq!(
        pb::ActionState::try_from(a.state).unwrap(),
        pb::ActionState::Succeeded,
        "{what}: {} / {:#?}",
        a.message,
        a.events
    );
}

/// Waits until the guest is up with its power button handler armed: a
/// graceful request before that finds nobody listening, as on a real server.
async fn wait_guest_running(s: &Sim, boots: usize) {
    s.wait_console(SYSTEM, GUEST_READY, boots, LIMIT).await;
    s.wait_system(SYSTEM, "OSRunning", LIMIT, |sys| {
        sys["BootProgress"]["LastState"] == "OSRunning"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemon_soft_reboot_is_a_warm_restart_confirmed_by_evidence() {
    let (s, _dir, mut daemon, mut client) = bench().await;
    assert_succeeded("start", &start(&mut client).await);
    wait_guest_running(&s, 1).await;
    let pid = s.state(SYSTEM).await["qemu_pid"].clone();

    // SOFT reboot: GracefulRestart, the guest shuts down and the simulator
    // restarts it warm; the daemon confirms it by LastResetTime/BootProgress.
    let a = soft_reboot(&mut client).await;
    assert_succeeded("soft reboot", &a);
    let st = steps(&a);
    assert!(st.iter().any(|s| s == "graceful_restart"), "{st:?}");
    assert!(
        !st.iter()
            .any(|s| s == "fallback_hard" || s == "graceful_off"),
        "{st:?}"
    );
    // The evidence, recorded on the action: LastResetTime moved.
    let seen = a
        .events
        .iter()
        .find(|e| e.step == "wait_restart" && e.phase == pb::StepPhase::Finished as i32)
        .map(|e| e.detail.clone())
        .unwrap_or_default();
    assert!(
        seen.starts_with("restart seen: LastResetTime"),
        "{seen:?}: {a:#?}"
    );
    assert!(a.message.contains("restart seen"), "{}", a.message);
    wait_guest_running(&s, 2).await;
    let console = s.console(SYSTEM);
    assert_eq!(count(&console, GUEST_CLEAN_OFF), 1, "{console}");
    assert_eq!(count(&console, GUEST_BOOT), 2, "{console}");
    let state = s.state(SYSTEM).await;
    assert_eq!(state["qemu_pid"], pid, "the VM was power-cycled: {state}");
    assert_eq!(state["boots"][1]["cause"], "graceful_restart", "{state}");
    assert_eq!(
        s.counters().await["resets"][SYSTEM],
        json!({"On": 1, "GracefulRestart": 1}),
        "exactly one restart request, no fallback reset"
    );

    // A graceful stop: the guest powers off, the simulator shows Off.
    let stop = graceful_stop(&mut client).await;
    assert_succeeded("stop", &stop);
    assert!(
        stop.message
            .starts_with("powered off (graceful; off after "),
        "{}",
        stop.message
    );
    assert_eq!(s.power_state(SYSTEM).await, "Off");
    assert_eq!(count(&s.console(SYSTEM), GUEST_CLEAN_OFF), 2);
    assert!(s.state(SYSTEM).await["qemu_pid"].is_null());

    // The daemon used one session at a time and returns it when it stops.
    let c = s.counters().await["sessions"].clone();
    assert!(c["open"].as_u64().unwrap() <= 1, "{c}");
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "daemon exit: {status:?}\n{}",
        daemon.log()
    );
    let c = s.counters().await["sessions"].clone();
    assert_eq!(c["open"], 0, "sessions left open at the BMC: {c}");
    assert_eq!(c["created"], c["deleted"], "{c}");
}

/// A SOFT reboot sent right after a start, while the guest is still booting:
/// its power button handler is not armed yet, so the ACPI request is lost and
/// the server does not restart (the simulator shows one boot and a
/// GracefulRestart still pending). Whatever the daemon then does — wait,
/// fall back to HARD, or fail — it must not report a reboot that did not
/// happen. It did: BootProgress moving on within the boot already under way
/// (SystemHardwareInitializationComplete → OSBootStarted) was taken for the
/// restart (`RestartMarker::shows_restart_since`); now only LastResetTime
/// decides, so the daemon sees no sign and falls back to one HARD reboot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemon_soft_reboot_while_booting_is_not_confirmed_by_that_boot() {
    let (s, _dir, _daemon, mut client) = bench().await;
    assert_succeeded("start", &start(&mut client).await);
    let booting = s.system(SYSTEM).await;
    assert_ne!(
        booting["BootProgress"]["LastState"], "OSRunning",
        "the guest booted too fast for this test: {booting}"
    );

    let a = soft_reboot(&mut client).await;
    let boots = s.state(SYSTEM).await["boots"].as_array().unwrap().len();
    if pb::ActionState::try_from(a.state).unwrap() == pb::ActionState::Succeeded {
        assert!(
            boots >= 2,
            "the SOFT reboot is reported done ({:?}: {}), but the server never restarted: \
             the simulator saw {boots} boot(s); pending: {}; console:\n{}",
            steps(&a),
            a.message,
            s.state(SYSTEM).await["pending"],
            s.console(SYSTEM)
        );
    }
}

// ---------------------------------------------------------------------------
// Issue 10 through the daemon: what the control plane reads over gRPC is what
// curl reads from the same BMC.

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The chassis sensors as curl reads them: name → (reading, Redfish unit,
/// health in lower case).
fn curl_sensors(s: &Sim) -> BTreeMap<String, (Option<f64>, String, String)> {
    s.curl_members(&format!("/redfish/v1/Chassis/{SYSTEM}/Sensors"))
        .into_iter()
        .map(|m| {
            (
                text(&m["Name"]),
                (
                    m["Reading"].as_f64(),
                    text(&m["ReadingUnits"]),
                    text(&m["Status"]["Health"]).to_ascii_lowercase(),
                ),
            )
        })
        .collect()
}

/// The same view of a gRPC answer; the unit in Redfish's UCUM words.
fn grpc_sensors(h: &pb::ServerHealth) -> BTreeMap<String, (Option<f64>, String, String)> {
    h.sensors
        .iter()
        .map(|x| {
            let unit = match x.unit.as_str() {
                "degrees C" => "Cel",
                "Volts" => "V",
                "Amps" => "A",
                "Watts" => "W",
                other => other,
            };
            let status = match pb::SensorStatus::try_from(x.status).unwrap() {
                pb::SensorStatus::Ok => "ok",
                pb::SensorStatus::Warning => "warning",
                pb::SensorStatus::Critical => "critical",
                other => panic!("{} is {other:?}", x.name),
            };
            (
                x.name.clone(),
                (x.value, unit.to_string(), status.to_string()),
            )
        })
        .collect()
}

async fn health(client: &mut RackAgentClient<Channel>) -> pb::ServerHealth {
    client
        .get_server_health(admin(pb::GetServerHealthRequest {
            server_id: SERVER.into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

/// (Id, Message) of every SEL entry, as curl reads every page.
fn curl_sel(s: &Sim) -> Vec<(String, String)> {
    s.curl_members(&format!(
        "/redfish/v1/Systems/{SYSTEM}/LogServices/SEL/Entries"
    ))
    .iter()
    .map(|e| (text(&e["Id"]), text(&e["Message"])))
    .collect()
}

fn grpc_sel(events: &[pb::BmcEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.id.clone(), e.message.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemon_identity_health_and_sel_equal_curl_and_a_button_press_arrives_with_its_entry() {
    let (s, _dir, daemon, mut client) = bench().await;
    // Small SEL pages, so the daemon's reads cross several.
    s.set_knobs(SYSTEM, json!({"sel_page_size": 2})).await;
    assert_succeeded("start", &start(&mut client).await);
    wait_guest_running(&s, 1).await;

    // Identity: the Manager's and the System's own words.
    let srv = client
        .get_server(admin(pb::GetServerRequest {
            id: SERVER.into(),
            refresh_identity: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let id = srv.identity.expect("identity");
    assert_eq!(id.error, "", "{id:?}");
    let sys = s.curl(&s.system_path(SYSTEM));
    let mgr = s.curl(sys["Links"]["ManagedBy"][0]["@odata.id"].as_str().unwrap());
    assert_eq!(id.bmc_model, text(&mgr["Model"]));
    assert_eq!(id.firmware_version, text(&mgr["FirmwareVersion"]));
    assert_eq!(id.bmc_manufacturer, text(&mgr["Manufacturer"]));
    assert_eq!(id.system_manufacturer, text(&sys["Manufacturer"]));
    assert_eq!(id.system_model, text(&sys["Model"]));
    assert_eq!(id.serial_number, text(&sys["SerialNumber"]));
    assert_eq!(id.bios_version, text(&sys["BiosVersion"]));
    assert!(!id.serial_number.is_empty() && !id.bios_version.is_empty());

    // Sensors, then an inlet over its critical threshold.
    let h = health(&mut client).await;
    assert!(h.problems.is_empty(), "{:?}", h.problems);
    assert_eq!(grpc_sensors(&h), curl_sensors(&s));
    s.control(
        Method::POST,
        &format!("/control/systems/{SYSTEM}/sensors"),
        Some(json!({"InletTemp": 45.0})),
    )
    .await;
    let h = health(&mut client).await;
    let want = curl_sensors(&s);
    assert_eq!(grpc_sensors(&h), want);
    let inlet = want
        .iter()
        .find(|(name, _)| name.contains("Inlet"))
        .expect("an inlet sensor");
    assert_eq!((inlet.1 .0, inlet.1 .2.as_str()), (Some(45.0), "critical"));
    assert_eq!(h.inlet_celsius, Some(45.0));
    let maddr = daemon.logged_addr("metrics at /metrics", Duration::from_secs(5));
    let metrics = http_body(maddr, "/metrics");
    assert!(
        metrics.contains(&format!(
            "rack_agent_server_inlet_celsius{{server_id=\"{SERVER}\"}} 45.0"
        )),
        "{metrics}"
    );

    // The event log, every page of it.
    assert_eq!(grpc_sel(&bmc_log(&mut client, SERVER).await), curl_sel(&s));

    // Someone presses the power button: the guest shuts down by itself, the
    // daemon sees the change and hands it to watchers with the SEL entry.
    let mut watch = client
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec![SERVER.into()],
            after_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    s.control(
        Method::POST,
        &format!("/control/systems/{SYSTEM}/power_button"),
        Some(json!({})),
    )
    .await;
    let off = next_power_event(&mut watch, pb::PowerState::Off, LIMIT).await;
    assert_eq!(count(&s.console(SYSTEM), GUEST_CLEAN_OFF), 1);
    assert_eq!(off.cause, "sync");
    let attached: Vec<&str> = off.bmc_events.iter().map(|e| e.message.as_str()).collect();
    assert!(
        attached.contains(&"Power Button pressed"),
        "{attached:?} / {off:?}"
    );
    let sel = curl_sel(&s);
    for e in &off.bmc_events {
        assert!(
            sel.contains(&(e.id.clone(), e.message.clone())),
            "{e:?} is not in the BMC's SEL {sel:?}"
        );
    }
    assert_eq!(grpc_sel(&bmc_log(&mut client, SERVER).await), sel);
    assert!(!daemon.log().contains(&s.password));
}
