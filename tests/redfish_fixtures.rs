//! Parser tests over recorded Redfish resources (tests/fixtures/redfish), and
//! the driver walking such trees served by a loopback server of our own.

mod redfish_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rack_agent::bmc::redfish::mapping;
use rack_agent::bmc::redfish::model::*;
use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{
    Bmc, BmcError, BootDevice, Endpoint, Power, PowerOp, Protocol, RestartMarker, Secret,
};
use redfish_support::mock::{MockReply, MockRequest, MockServer};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/redfish/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---- parsing ---------------------------------------------------------------

#[test]
fn service_roots_advertise_sessions_or_not() {
    let dmtf: ServiceRoot = parse("dmtf_service_root.json");
    assert_eq!(
        dmtf.sessions_link(),
        Some("/redfish/v1/SessionService/Sessions")
    );
    assert!(dmtf.session_service.is_some());
    let sushy: ServiceRoot = parse("sushy_service_root.json");
    assert!(sushy.session_service.is_none() && sushy.sessions_link().is_none());
    assert_eq!(sushy.systems.unwrap().odata_id, "/redfish/v1/Systems");
}

#[test]
fn dell_system_embedded_lacks_graceful_restart() {
    let sys: ComputerSystem = parse("dell_system.json");
    assert_eq!(sys.id, "System.Embedded.1");
    assert_eq!(sys.power_state, Some(PowerState::Off));
    assert_eq!(sys.odata_etag.as_deref(), Some("W/\"gen-17\""));
    let reset = sys.actions.unwrap().reset.unwrap();
    assert_eq!(
        reset.target,
        "/redfish/v1/Systems/System.Embedded.1/Actions/ComputerSystem.Reset"
    );
    let allowed = reset.allowable_values.unwrap();
    assert!(!allowed.contains(&ResetType::GracefulRestart));
    assert_eq!(
        mapping::power_ops(Some(&allowed)),
        vec![
            PowerOp::On,
            PowerOp::GracefulOff,
            PowerOp::ForceOff,
            PowerOp::HardReset,
            PowerOp::PowerCycle
        ]
    );
    let boot = sys.boot.unwrap();
    assert_eq!(boot.enabled, Some(BootSourceOverrideEnabled::Disabled));
    assert_eq!(boot.mode, Some(BootSourceOverrideMode::Uefi));
    assert!(boot.target_allowable.unwrap().contains(&BootSource::SdCard));
    assert_eq!(
        sys.links.unwrap().managed_by[0].odata_id,
        "/redfish/v1/Managers/iDRAC.Embedded.1"
    );
}

#[test]
fn hpe_system_with_oem_and_unknown_values() {
    let sys: ComputerSystem = parse("hpe_system.json");
    assert_eq!(sys.id, "1");
    // PoweringOff still has power.
    assert_eq!(
        mapping::power(sys.power_state.as_ref().unwrap()),
        Some(Power::On)
    );
    let allowed = sys
        .actions
        .unwrap()
        .reset
        .unwrap()
        .allowable_values
        .unwrap();
    assert!(allowed.contains(&ResetType::GracefulRestart));
    assert!(!allowed.contains(&ResetType::PowerCycle));
}

#[test]
fn action_info_parameters_give_the_reset_types() {
    let sys: ComputerSystem = parse("dmtf_system_actioninfo.json");
    let reset = sys.actions.unwrap().reset.unwrap();
    assert!(reset.allowable_values.is_none());
    assert_eq!(
        reset.action_info.as_deref(),
        Some("/redfish/v1/Systems/437XR1138R2/ResetActionInfo")
    );
    let info: ActionInfo = parse("dmtf_reset_actioninfo.json");
    let values = mapping::reset_types(info.allowable("ResetType").unwrap());
    assert!(values.contains(&ResetType::PushPowerButton));
    assert!(!mapping::power_ops(Some(&values)).contains(&PowerOp::PowerCycle));
}

#[test]
fn tasks_parse_with_states() {
    let t: Task = parse("task_running.json");
    assert_eq!(t.task_state, Some(TaskState::Running));
    assert!(!t.task_state.unwrap().is_final());
    assert_eq!(
        t.task_monitor.as_deref(),
        Some("/redfish/v1/TaskService/TaskMonitors/JID_471269252011")
    );
    let t: Task = parse("task_completed.json");
    assert_eq!(t.task_state, Some(TaskState::Completed));
    assert_eq!(t.task_status, Some(Health::Ok));
    let t: Task = parse("task_exception.json");
    assert_eq!(t.task_state, Some(TaskState::Exception));
    assert!(messages_text(&t.messages)
        .unwrap()
        .contains("in use or in transition"));
}

#[test]
fn error_bodies_give_extended_info_text() {
    let e: ErrorBody = parse("error_action_not_supported.json");
    assert_eq!(
        e.text().unwrap(),
        "The parameter PowerCycle for the action ComputerSystem.Reset is not supported on the target resource."
    );
    let e: ErrorBody = parse("error_dell_job.json");
    let text = e.text().unwrap();
    assert!(
        text.contains("already in the requested power state"),
        "{text}"
    );
    assert!(text.contains("internal service error"), "{text}");
}

#[test]
fn session_and_virtual_media_parse() {
    let s: Session = parse("session.json");
    assert_eq!(s.id.as_deref(), Some("1234567890ABCDEF"));
    let cd: VirtualMedia = parse("dell_vmedia_cd.json");
    assert!(cd.is_optical());
    assert_eq!(cd.inserted, Some(false));
    let usb: VirtualMedia = parse("dell_vmedia_removable.json");
    assert!(!usb.is_optical());
    let m: Manager = parse("dell_manager.json");
    assert!(m.virtual_media.is_some());
}

#[test]
fn a_dmtf_system_shows_last_reset_time_and_boot_progress() {
    let sys: ComputerSystem = parse("dmtf_system_boot_progress.json");
    assert_eq!(
        sys.last_reset_time.as_deref(),
        Some("2024-05-06T09:34:35+06:00")
    );
    let progress = sys.boot_progress.as_ref().unwrap();
    assert_eq!(progress.last_state.as_deref(), Some("OSRunning"));
    assert!(mapping::has_restart_evidence(&sys));
    assert_eq!(
        mapping::restart_marker(&sys),
        Some(RestartMarker {
            last_reset_time: Some("2024-05-06T09:34:35+06:00".into()),
            boot_progress: Some("OSRunning".into()),
            boot_progress_time: Some("2024-05-06T09:41:27+06:00".into()),
            restart_cause: None,
        })
    );
}

#[test]
fn an_openbmc_system_shows_last_reset_time_and_boot_progress() {
    let sys: ComputerSystem = parse("openbmc_system.json");
    assert_eq!(sys.id, "system");
    let m = mapping::restart_marker(&sys).unwrap();
    assert_eq!(
        m.last_reset_time.as_deref(),
        Some("2024-11-02T17:05:12+00:00")
    );
    assert_eq!(m.boot_progress.as_deref(), Some("OSRunning"));
    assert_eq!(
        m.boot_progress_time.as_deref(),
        Some("2024-11-02T17:08:54+00:00")
    );
    assert_eq!(
        m.to_string(),
        "LastResetTime 2024-11-02T17:05:12+00:00, \
         BootProgress OSRunning at 2024-11-02T17:08:54+00:00"
    );
    // Its hypervisor system shows neither.
    let hv: ComputerSystem = parse("openbmc_hypervisor.json");
    assert!(!mapping::has_restart_evidence(&hv));
    assert_eq!(mapping::restart_marker(&hv), None);
}

#[test]
fn older_schemas_and_vendor_trees_without_the_properties_give_no_marker() {
    for name in [
        "dell_system.json",
        "hpe_system.json",
        "dmtf_system_actioninfo.json",
        "baseboard_no_reset.json",
    ] {
        let sys: ComputerSystem = parse(name);
        assert!(!mapping::has_restart_evidence(&sys), "{name}");
        assert_eq!(mapping::restart_marker(&sys), None, "{name}");
    }
}

#[test]
fn oem_states_placeholders_and_odd_types() {
    // An OEM boot state is named by the vendor's OemLastState.
    let sys: ComputerSystem = serde_json::from_str(
        r#"{"Id":"1","PowerState":"On",
            "BootProgress":{"LastState":"OEM","OemLastState":"HostbootIstepStarted"}}"#,
    )
    .unwrap();
    let m = mapping::restart_marker(&sys).unwrap();
    assert_eq!(
        m.boot_progress.as_deref(),
        Some("OEM (HostbootIstepStarted)")
    );
    assert_eq!(m.last_reset_time, None);

    // A never-set time of zeros (as some iDRAC firmware answers) is no marker:
    // the first real value would otherwise read as a restart.
    let zeros = fixture("dell_system.json").replacen(
        '{',
        r#"{"LastResetTime": "0000-00-00T00:00:00+00:00","#,
        1,
    );
    let sys: ComputerSystem = serde_json::from_str(&zeros).unwrap();
    assert_eq!(
        sys.last_reset_time.as_deref(),
        Some("0000-00-00T00:00:00+00:00")
    );
    assert_eq!(mapping::restart_marker(&sys), None);
    assert!(!mapping::has_restart_evidence(&sys));

    // Values of the wrong type read as absent; the power state still parses.
    let sys: ComputerSystem = serde_json::from_str(
        r#"{"Id":"1","PowerState":"Off","LastResetTime":1714980875,"BootProgress":"OSRunning"}"#,
    )
    .unwrap();
    assert_eq!(sys.power_state, Some(PowerState::Off));
    assert_eq!(mapping::restart_marker(&sys), None);
    let sys: ComputerSystem = serde_json::from_str(
        r#"{"Id":"1","PowerState":"On","LastResetTime":null,"BootProgress":{"LastState":null}}"#,
    )
    .unwrap();
    assert_eq!(mapping::restart_marker(&sys), None);
}

// ---- the driver over served trees --------------------------------------------

/// Serves fixtures by path; `post`/`patch` answer the writes.
struct Tree {
    files: HashMap<String, String>,
}

impl Tree {
    fn new(entries: &[(&str, &str)]) -> Self {
        Tree {
            files: entries
                .iter()
                .map(|(path, file)| (path.to_string(), fixture(file)))
                .collect(),
        }
    }
    fn get(&self, path: &str) -> MockReply {
        match self.files.get(path) {
            Some(body) => MockReply::json(200, body.clone()),
            None => MockReply::json(
                404,
                r#"{"error":{"code":"Base.1.8.ResourceMissingAtURI","message":"not found"}}"#,
            ),
        }
    }
}

fn endpoint(port: u16, options: &[(&str, &str)]) -> Endpoint {
    let mut o: BTreeMap<String, String> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    o.insert("scheme".into(), "http".into());
    o.insert("auth".into(), "basic".into());
    Endpoint {
        protocol: Protocol::Redfish,
        address: "127.0.0.1".into(),
        port,
        username: "root".into(),
        password: Secret::new("calvin"),
        options: o,
    }
}

fn dell_tree() -> Tree {
    Tree::new(&[
        ("/redfish/v1/", "dmtf_service_root.json"),
        ("/redfish/v1/Systems", "dell_systems.json"),
        ("/redfish/v1/Systems/System.Embedded.1", "dell_system.json"),
        ("/redfish/v1/Managers/iDRAC.Embedded.1", "dell_manager.json"),
        (
            "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia",
            "dell_vmedia_collection.json",
        ),
        (
            "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/RemovableDisk",
            "dell_vmedia_removable.json",
        ),
        (
            "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD",
            "dell_vmedia_cd.json",
        ),
        (
            "/redfish/v1/TaskService/Tasks/JID_471269252011",
            "task_completed.json",
        ),
    ])
}

#[tokio::test]
async fn dell_tree_discovery_reset_by_task_and_boot_with_etag() {
    let tree = dell_tree();
    let monitor_polls = Arc::new(Mutex::new(0));
    let polls = monitor_polls.clone();
    let server =
        MockServer::start(
            move |r: &MockRequest| match (r.method.as_str(), r.path.as_str()) {
                ("POST", "/redfish/v1/Systems/System.Embedded.1/Actions/ComputerSystem.Reset") => {
                    MockReply::json(202, fixture("task_running.json"))
                        .header(
                            "Location",
                            "/redfish/v1/TaskService/TaskMonitors/JID_471269252011",
                        )
                        .header("Retry-After", "0")
                }
                ("GET", "/redfish/v1/TaskService/TaskMonitors/JID_471269252011") => {
                    let mut n = polls.lock().unwrap();
                    *n += 1;
                    if *n < 3 {
                        MockReply::json(202, fixture("task_running.json"))
                    } else {
                        MockReply::json(200, fixture("task_completed.json"))
                    }
                }
                ("PATCH", "/redfish/v1/Systems/System.Embedded.1") => MockReply::empty(204),
                ("GET", p) => tree.get(p),
                _ => MockReply::json(405, "{}"),
            },
        )
        .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();

    let caps = bmc.capabilities().await.unwrap();
    assert!(!caps.supports(PowerOp::GracefulRestart));
    assert!(caps.supports(PowerOp::PowerCycle));
    assert!(caps.virtual_media, "CD under the Manager");
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);

    let e = bmc.power(PowerOp::GracefulRestart).await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");

    bmc.power(PowerOp::HardReset).await.unwrap();
    assert_eq!(
        *monitor_polls.lock().unwrap(),
        3,
        "task followed to completion"
    );
    let reqs = server.requests();
    let posts: Vec<&MockRequest> = reqs.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].json()["ResetType"], "ForceRestart");
    assert!(posts[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));

    bmc.set_boot_once(BootDevice::Pxe).await.unwrap();
    let patch = server
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(patch.header("if-match"), Some("W/\"gen-17\""));
    assert_eq!(
        patch.json(),
        serde_json::json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
    );
}

#[tokio::test]
async fn task_ending_in_exception_is_refused_with_its_message() {
    let tree = dell_tree();
    let server =
        MockServer::start(
            move |r: &MockRequest| match (r.method.as_str(), r.path.as_str()) {
                ("POST", _) => MockReply::json(202, "{}")
                    .header("Location", "/redfish/v1/TaskService/TaskMonitors/5"),
                ("GET", "/redfish/v1/TaskService/TaskMonitors/5") => {
                    MockReply::json(200, fixture("task_exception.json"))
                }
                ("GET", p) => tree.get(p),
                _ => MockReply::json(405, "{}"),
            },
        )
        .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.power(PowerOp::On).await.unwrap_err();
    assert!(matches!(e, BmcError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("in use or in transition"), "{e}");
}

#[tokio::test]
async fn refusal_surfaces_the_extended_info_text() {
    let tree = dell_tree();
    let server =
        MockServer::start(
            move |r: &MockRequest| match (r.method.as_str(), r.path.as_str()) {
                ("POST", _) => MockReply::json(400, fixture("error_action_not_supported.json")),
                ("GET", p) => tree.get(p),
                _ => MockReply::json(405, "{}"),
            },
        )
        .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.power(PowerOp::PowerCycle).await.unwrap_err();
    assert!(matches!(e, BmcError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("HTTP 400"), "{e}");
    assert!(
        e.to_string().contains(
            "The parameter PowerCycle for the action ComputerSystem.Reset is not supported"
        ),
        "{e}"
    );
    assert!(!e.to_string().contains("calvin"));
}

#[tokio::test]
async fn action_info_tree_and_system_virtual_media() {
    let tree = Tree::new(&[
        ("/redfish/v1/", "sushy_service_root.json"),
        ("/redfish/v1/Systems", "multi_systems.json"),
        ("/redfish/v1/Systems/Host", "dmtf_system_actioninfo.json"),
        ("/redfish/v1/Systems/Baseboard", "baseboard_no_reset.json"),
        (
            "/redfish/v1/Systems/437XR1138R2/ResetActionInfo",
            "dmtf_reset_actioninfo.json",
        ),
    ]);
    let server = MockServer::start(move |r: &MockRequest| tree.get(&r.path)).await;

    // Several systems and no system_id: the only one with a Reset action.
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[])).unwrap();
    let caps = bmc.capabilities().await.unwrap();
    assert!(caps.supports(PowerOp::HardReset));
    let gets = server.requests();
    assert!(gets
        .iter()
        .any(|r| r.path == "/redfish/v1/Systems/Baseboard"));

    // The host: reset types from its ActionInfo.
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[("system_id", "Host")])).unwrap();
    let caps = bmc.capabilities().await.unwrap();
    assert_eq!(
        caps.power_ops,
        vec![
            PowerOp::On,
            PowerOp::GracefulOff,
            PowerOp::ForceOff,
            PowerOp::HardReset,
            PowerOp::GracefulRestart
        ]
    );
    assert_eq!(caps.boot_devices.len(), 4);
    assert!(
        !caps.virtual_media,
        "its VirtualMedia link leads nowhere here"
    );
    let e = bmc
        .insert_media("http://127.0.0.1/x.iso")
        .await
        .unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");

    // The baseboard has no Reset action and the host has one: choosing the
    // baseboard is a configuration question, and the answer names the host.
    let bmc =
        RedfishBmc::connect("x", &endpoint(server.port(), &[("system_id", "Baseboard")])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Config(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the BMC configuration needs attention: `system_id` \"Baseboard\" names a system \
         without a #ComputerSystem.Reset action; the systems on this BMC that have one: Host"
    );
    let e = bmc.power(PowerOp::On).await.unwrap_err();
    assert!(matches!(e, BmcError::Config(_)), "{e:?}");
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);

    // An unknown system id names the ones that exist.
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[("system_id", "2")])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Config(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("`system_id` \"2\" names no system on this BMC (it has: Host, Baseboard)"),
        "{e}"
    );
}

#[tokio::test]
async fn virtual_media_under_the_manager_is_inserted_and_ejected() {
    let tree = dell_tree();
    let inserted = Arc::new(Mutex::new(false));
    let state = inserted.clone();
    let server =
        MockServer::start(
            move |r: &MockRequest| match (r.method.as_str(), r.path.as_str()) {
                ("POST", p) if p.ends_with("/CD/Actions/VirtualMedia.InsertMedia") => {
                    *state.lock().unwrap() = true;
                    MockReply::empty(204)
                }
                ("POST", p) if p.ends_with("/CD/Actions/VirtualMedia.EjectMedia") => {
                    *state.lock().unwrap() = false;
                    MockReply::empty(204)
                }
                ("GET", "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD")
                    if *state.lock().unwrap() =>
                {
                    MockReply::json(
                        200,
                        fixture("dell_vmedia_cd.json")
                            .replace("\"Inserted\": false", "\"Inserted\": true")
                            .replace("\"Image\": null", "\"Image\": \"http://127.0.0.1/x.iso\""),
                    )
                }
                ("GET", p) => tree.get(p),
                _ => MockReply::json(405, "{}"),
            },
        )
        .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();
    bmc.insert_media("http://127.0.0.1/x.iso").await.unwrap();
    assert!(*inserted.lock().unwrap());
    let insert = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(insert.json()["Image"], "http://127.0.0.1/x.iso");
    assert_eq!(insert.json()["Inserted"], true);
    bmc.eject_media().await.unwrap();
    assert!(!*inserted.lock().unwrap());
}

#[tokio::test]
async fn vanished_task_monitor_falls_back_to_the_task_resource() {
    let tree = dell_tree();
    let server =
        MockServer::start(
            move |r: &MockRequest| match (r.method.as_str(), r.path.as_str()) {
                ("POST", _) => MockReply::json(202, fixture("task_running.json"))
                    .header("Location", "/redfish/v1/TaskService/TaskMonitors/gone")
                    .header("Retry-After", "0"),
                ("GET", "/redfish/v1/TaskService/TaskMonitors/gone") => MockReply::json(404, "{}"),
                ("GET", p) => tree.get(p),
                _ => MockReply::json(405, "{}"),
            },
        )
        .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();
    bmc.power(PowerOp::On).await.unwrap();
    assert!(server
        .requests()
        .iter()
        .any(|r| r.path == "/redfish/v1/TaskService/Tasks/JID_471269252011"));
}

#[tokio::test]
async fn boot_override_retries_once_when_the_etag_changed() {
    let tree = dell_tree();
    let patches = Arc::new(Mutex::new(0));
    let p2 = patches.clone();
    let server = MockServer::start(move |r: &MockRequest| match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", _) => {
            let mut n = p2.lock().unwrap();
            *n += 1;
            if *n == 1 {
                MockReply::json(412, r#"{"error":{"code":"Base.1.8.PreconditionFailed","message":"ETag mismatch"}}"#)
            } else {
                MockReply::empty(204)
            }
        }
        ("GET", p) => tree.get(p),
        _ => MockReply::json(405, "{}"),
    })
    .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();
    bmc.set_boot_once(BootDevice::Cd).await.unwrap();
    assert_eq!(*patches.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_system_that_moved_is_found_again() {
    // First the system lives at /Systems/1, then (after a "firmware update")
    // at /Systems/System.Embedded.1.
    let moved = Arc::new(Mutex::new(false));
    let m = moved.clone();
    let server = MockServer::start(move |r: &MockRequest| {
        let moved = *m.lock().unwrap();
        let id = if moved { "System.Embedded.1" } else { "1" };
        match r.path.as_str() {
            "/redfish/v1/" => MockReply::json(200, fixture("sushy_service_root.json")),
            "/redfish/v1/Systems" => MockReply::json(
                200,
                format!(r#"{{"Members":[{{"@odata.id":"/redfish/v1/Systems/{id}"}}]}}"#),
            ),
            p if p == format!("/redfish/v1/Systems/{id}") => MockReply::json(
                200,
                fixture("dell_system.json").replace("System.Embedded.1", id),
            ),
            _ => MockReply::json(404, "{}"),
        }
    })
    .await;
    let bmc = RedfishBmc::connect("dell", &endpoint(server.port(), &[])).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
    *moved.lock().unwrap() = true;
    let e = bmc.power_state().await.unwrap_err();
    assert!(e.to_string().contains("looked up again"), "{e}");
    assert_eq!(bmc.power_state().await.unwrap(), Power::Off);
}

fn openbmc_tree(hypervisor: &str) -> Tree {
    Tree::new(&[
        ("/redfish/v1/", "dmtf_service_root.json"),
        ("/redfish/v1/Systems", "openbmc_systems.json"),
        ("/redfish/v1/Systems/system", "openbmc_system.json"),
        ("/redfish/v1/Systems/hypervisor", hypervisor),
        (
            "/redfish/v1/Systems/system/ResetActionInfo",
            "openbmc_reset_actioninfo.json",
        ),
    ])
}

/// Captures what the driver logs on this thread (current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish(),
        )
    }
}

#[tokio::test]
async fn openbmc_host_is_chosen_over_its_hypervisor_and_observed_in_one_get() {
    // The restart evidence moves when the tree says the host restarted.
    let restarted = Arc::new(Mutex::new(false));
    let r = restarted.clone();
    let tree = openbmc_tree("openbmc_hypervisor.json");
    let server = MockServer::start(move |req: &MockRequest| {
        if req.path == "/redfish/v1/Systems/system" && *r.lock().unwrap() {
            return MockReply::json(
                200,
                fixture("openbmc_system.json")
                    .replace("2024-11-02T17:05:12+00:00", "2024-11-03T08:00:01+00:00")
                    .replace("\"OSRunning\"", "\"OSBootStarted\"")
                    .replace("2024-11-02T17:08:54+00:00", "2024-11-03T08:01:40+00:00"),
            );
        }
        tree.get(&req.path)
    })
    .await;
    let logs = Logs::default();
    let _guard = logs.install();

    let bmc = RedfishBmc::connect("node-7", &endpoint(server.port(), &[])).unwrap();
    let caps = bmc.capabilities().await.unwrap();
    assert!(caps.restart_evidence);
    assert!(caps.supports(PowerOp::GracefulRestart) && caps.supports(PowerOp::PowerCycle));
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("using the only one with a Reset action"))
        .unwrap_or_else(|| panic!("no log of the choice in:\n{text}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("server_id=node-7"), "{line}");
    assert!(
        line.contains(&format!("bmc=127.0.0.1:{}", server.port())),
        "{line}"
    );
    assert!(line.contains("system=/redfish/v1/Systems/system"), "{line}");

    let before_gets = server.requests().len();
    let before = bmc.observe().await.unwrap();
    assert_eq!(
        server.requests().len(),
        before_gets + 1,
        "one GET per observe"
    );
    assert_eq!(before.power, Power::On);
    let m = before.marker.clone().unwrap();
    assert_eq!(
        m.last_reset_time.as_deref(),
        Some("2024-11-02T17:05:12+00:00")
    );
    assert_eq!(m.boot_progress.as_deref(), Some("OSRunning"));
    let again = bmc.observe().await.unwrap();
    assert!(!again.marker.unwrap().shows_restart_since(&m));

    *restarted.lock().unwrap() = true;
    let after = bmc.observe().await.unwrap();
    let m2 = after.marker.unwrap();
    assert!(m2.shows_restart_since(&m), "{m2} vs {m}");
    assert_eq!(m2.boot_progress.as_deref(), Some("OSBootStarted"));
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
}

#[tokio::test]
async fn two_resettable_systems_without_system_id_is_a_configuration_question() {
    let tree = openbmc_tree("openbmc_hypervisor_resettable.json");
    let server = MockServer::start(move |r: &MockRequest| tree.get(&r.path)).await;
    let bmc = RedfishBmc::connect("node-7", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Config(_)), "{e:?}");
    assert_eq!(e.kind(), "config");
    assert!(!e.is_unavailable());
    assert_eq!(
        e.to_string(),
        "the BMC configuration needs attention: this BMC has 2 systems with a \
         #ComputerSystem.Reset action (system, hypervisor); set the `system_id` option to \
         the one this server is"
    );
    assert!(!e.to_string().contains("does not support"));
    // Every call says the same until the option is set; nothing was sent.
    let e = bmc.power(PowerOp::On).await.unwrap_err();
    assert!(matches!(e, BmcError::Config(_)), "{e:?}");
    assert!(server.requests().iter().all(|r| r.method == "GET"));

    let bmc = RedfishBmc::connect(
        "node-7",
        &endpoint(server.port(), &[("system_id", "system")]),
    )
    .unwrap();
    assert!(bmc.capabilities().await.unwrap().restart_evidence);
    let bmc = RedfishBmc::connect(
        "node-7",
        &endpoint(server.port(), &[("system_id", "hypervisor")]),
    )
    .unwrap();
    let caps = bmc.capabilities().await.unwrap();
    assert!(!caps.restart_evidence, "the hypervisor shows no evidence");
    assert_eq!(bmc.observe().await.unwrap().marker, None);
}

#[tokio::test]
async fn several_systems_none_resettable_and_a_lone_system_without_reset() {
    let tree = Tree::new(&[
        ("/redfish/v1/", "sushy_service_root.json"),
        ("/redfish/v1/Systems", "openbmc_systems.json"),
        ("/redfish/v1/Systems/system", "baseboard_no_reset.json"),
        ("/redfish/v1/Systems/hypervisor", "openbmc_hypervisor.json"),
    ]);
    let server = MockServer::start(move |r: &MockRequest| tree.get(&r.path)).await;
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Config(_)), "{e:?}");
    assert!(
        e.to_string().contains(
            "this BMC has 2 systems (system, hypervisor) and none has a \
             #ComputerSystem.Reset action; set the `system_id` option"
        ),
        "{e}"
    );

    // One system, without a Reset action: nothing to configure, the BMC
    // cannot power-control it, and capabilities() says so.
    let tree = Tree::new(&[
        ("/redfish/v1/", "sushy_service_root.json"),
        ("/redfish/v1/Systems", "dell_systems.json"),
        (
            "/redfish/v1/Systems/System.Embedded.1",
            "baseboard_no_reset.json",
        ),
    ]);
    let server = MockServer::start(move |r: &MockRequest| tree.get(&r.path)).await;
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the BMC does not support power control of system \"Baseboard\": it has no \
         #ComputerSystem.Reset action, so it cannot be powered on, off or reset through \
         Redfish (its power state can still be read)"
    );
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
}

// ---- identity, sensors and the event log -------------------------------------

#[test]
fn identity_from_recorded_systems_and_managers() {
    use rack_agent::bmc::redfish::inventory::identity_from;
    let v = |name: &str| -> serde_json::Value { parse(name) };
    let dell = identity_from(&v("dell_system.json"), Some(&v("dell_manager.json")));
    assert_eq!(dell.bmc_model.as_deref(), Some("14G Monolithic"));
    assert_eq!(dell.firmware_version.as_deref(), Some("5.10.00.00"));
    assert_eq!(dell.bmc_manufacturer, None);
    assert_eq!(dell.system_manufacturer.as_deref(), Some("Dell Inc."));
    assert_eq!(dell.system_model.as_deref(), Some("PowerEdge R650"));
    assert_eq!(dell.bios_version.as_deref(), Some("2.10.2"));
    // OpenBMC leaves the system's inventory strings empty: absent, not "".
    let obmc = identity_from(&v("openbmc_system.json"), Some(&v("openbmc_manager.json")));
    assert_eq!(obmc.bmc_model.as_deref(), Some("OpenBmc"));
    assert_eq!(
        obmc.firmware_version.as_deref(),
        Some("2.15.0-dev-1011-g3a8b7c2e4")
    );
    assert_eq!(
        (
            obmc.system_manufacturer,
            obmc.system_model,
            obmc.serial_number
        ),
        (None, None, None)
    );
}

fn openbmc_inventory_tree() -> Tree {
    let mut t = openbmc_tree("openbmc_hypervisor.json");
    let more = Tree::new(&[
        ("/redfish/v1/Managers/bmc", "openbmc_manager.json"),
        ("/redfish/v1/Chassis/chassis", "openbmc_chassis.json"),
        // Only the $expand form is served: a GET per member would fail.
        (
            "/redfish/v1/Chassis/chassis/Sensors?$expand=*",
            "openbmc_sensors_expanded.json",
        ),
        (
            "/redfish/v1/Systems/system/LogServices",
            "openbmc_system_log_services.json",
        ),
        (
            "/redfish/v1/Systems/system/LogServices/EventLog",
            "openbmc_event_log.json",
        ),
        (
            "/redfish/v1/Systems/system/LogServices/Dump",
            "openbmc_dump_log.json",
        ),
        (
            "/redfish/v1/Systems/system/LogServices/EventLog/Entries",
            "openbmc_event_entries.json",
        ),
        (
            "/redfish/v1/Systems/system/LogServices/EventLog/Entries?$skip=3",
            "openbmc_event_entries_2.json",
        ),
        (
            "/redfish/v1/Managers/bmc/LogServices",
            "openbmc_manager_log_services.json",
        ),
        (
            "/redfish/v1/Managers/bmc/LogServices/Journal",
            "openbmc_journal.json",
        ),
    ]);
    t.files.extend(more.files);
    t
}

#[tokio::test]
async fn openbmc_tree_identity_expanded_sensors_and_a_paged_event_log() {
    use rack_agent::bmc::{SensorKind, SensorStatus};
    let tree = openbmc_inventory_tree();
    let server = MockServer::start(move |r: &MockRequest| tree.get(&r.path)).await;
    let bmc = RedfishBmc::connect("node-7", &endpoint(server.port(), &[])).unwrap();

    let id = bmc.identity().await.unwrap();
    assert_eq!(id.bmc_model.as_deref(), Some("OpenBmc"));
    assert_eq!(id.serial_number, None);

    let h = bmc.health().await.unwrap();
    let names: Vec<&str> = h.sensors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Ambient 0 Temp",
            "fan0 0",
            "total power",
            "P12V",
            "PSU0 Input Current"
        ]
    );
    assert_eq!(h.power_watts(), Some(301.5));
    let fan = &h.sensors[1];
    assert_eq!(
        (fan.kind, fan.status, fan.unit.as_str()),
        (SensorKind::Fan, SensorStatus::Warning, "RPM")
    );
    assert_eq!(h.sensors[4].status, SensorStatus::Unavailable);
    assert_eq!(
        h.problems,
        ["/redfish/v1/Chassis/chassis/Sensors/altitude_Altitude: no Reading"]
    );
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        !paths.iter().any(|p| p.contains("/Sensors/")),
        "no member GETs with $expand: {paths:?}"
    );

    // The Event log of the system (the manager's journal is Multiple: not
    // preferred), both pages, the entry without an Id left out.
    let ev = bmc.events(None, 10).await.unwrap();
    let ids: Vec<&str> = ev.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["1730566512", "1730566700", "1730570000", "1730570003"]
    );
    assert_eq!(ev[0].at, Some(1_730_567_112));
    assert_eq!(ev[1].severity, "warning");
    assert_eq!(ev[2].event, "The power button was pressed");
    assert_eq!(ev[2].direction, "");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        !paths.iter().any(|p| p.contains("Journal/Entries")),
        "{paths:?}"
    );
    // since and limit.
    let ev = bmc.events(Some(1_730_567_300), 1).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id, "1730570003");
}

#[tokio::test]
async fn a_tree_without_chassis_sensors_or_logs_says_unsupported() {
    let tree = openbmc_tree("openbmc_hypervisor.json");
    let server = MockServer::start(move |r: &MockRequest| tree.get(&r.path)).await;
    let bmc = RedfishBmc::connect("node-7", &endpoint(server.port(), &[])).unwrap();
    // The system links a chassis that is not there: a refusal naming it.
    let e = bmc.health().await.unwrap_err();
    assert!(e.to_string().contains("/redfish/v1/Chassis/chassis"), "{e}");
    // The log services collection is missing (404) and so is the manager.
    let e = bmc.events(None, 5).await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("LogServices"), "{e}");
    // Identity still reads the system when its manager cannot be read.
    let id = bmc.identity().await.unwrap();
    assert_eq!(id.bmc_model, None);
}

/// A BMC with an endless event log and 300 sensors: the driver reads at most
/// MAX_LOG_PAGES pages and MAX_SENSOR_MEMBERS members, says so, and answers.
#[tokio::test]
async fn endless_logs_and_huge_sensor_collections_are_read_within_bounds() {
    use rack_agent::bmc::redfish::inventory::{MAX_LOG_PAGES, MAX_SENSOR_MEMBERS};
    let tree = openbmc_inventory_tree();
    let server = MockServer::start(move |r: &MockRequest| {
        let path = r.path.as_str();
        let entries = "/redfish/v1/Systems/system/LogServices/EventLog/Entries";
        if let Some(rest) = path.strip_prefix(entries) {
            // Two entries per page, and always a next page.
            let skip: u64 = rest
                .strip_prefix("?$skip=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let member = |i: u64| {
                serde_json::json!({
                    "@odata.id": format!("{entries}/{i}"), "Id": i.to_string(),
                    "Created": format!("2024-11-02T17:{:02}:{:02}+00:00", (i / 60) % 60, i % 60),
                    "Message": format!("entry {i}"), "Severity": "OK"
                })
            };
            let page = serde_json::json!({
                "Members": [member(skip), member(skip + 1)],
                "Members@odata.nextLink": format!("{entries}?$skip={}", skip + 2)
            });
            return MockReply::json(200, page.to_string());
        }
        if path == "/redfish/v1/Chassis/chassis/Sensors?$expand=*" {
            let members: Vec<serde_json::Value> = (0..300)
                .map(|i| {
                    serde_json::json!({
                        "@odata.id": format!("/redfish/v1/Chassis/chassis/Sensors/t{i}"),
                        "Name": format!("T{i}"), "ReadingType": "Temperature",
                        "ReadingUnits": "Cel", "Reading": 20 + i % 10
                    })
                })
                .collect();
            return MockReply::json(200, serde_json::json!({ "Members": members }).to_string());
        }
        tree.get(path)
    })
    .await;
    let bmc = RedfishBmc::connect("node-7", &endpoint(server.port(), &[])).unwrap();

    let ev = bmc.events(None, 1000).await.unwrap();
    assert_eq!(ev.len(), 2 * MAX_LOG_PAGES);
    let pages = server
        .requests()
        .iter()
        .filter(|r| r.path.contains("EventLog/Entries"))
        .count();
    assert_eq!(pages, MAX_LOG_PAGES);
    assert_eq!(ev.last().unwrap().id, (2 * MAX_LOG_PAGES - 1).to_string());

    let h = bmc.health().await.unwrap();
    assert_eq!(h.sensors.len(), MAX_SENSOR_MEMBERS);
    assert_eq!(
        h.problems,
        [format!(
            "/redfish/v1/Chassis/chassis/Sensors: {} more members not read (at most {} are)",
            300 - MAX_SENSOR_MEMBERS,
            MAX_SENSOR_MEMBERS
        )]
    );
}
