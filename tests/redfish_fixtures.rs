//! Parser tests over recorded Redfish resources (tests/fixtures/redfish), and
//! the driver walking such trees served by a loopback server of our own.

mod redfish_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rack_agent::bmc::redfish::mapping;
use rack_agent::bmc::redfish::model::*;
use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Bmc, BmcError, BootDevice, Endpoint, Power, PowerOp, Protocol, Secret};
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

    // Several systems and no system_id: told which ids exist.
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("Host, Baseboard"), "{e}");

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

    // The baseboard has no Reset action: not power-controllable, said clearly.
    let bmc =
        RedfishBmc::connect("x", &endpoint(server.port(), &[("system_id", "Baseboard")])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
    assert!(
        e.to_string().contains("no #ComputerSystem.Reset action"),
        "{e}"
    );
    let e = bmc.power(PowerOp::On).await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e:?}");
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);

    // An unknown system id names the ones that exist.
    let bmc = RedfishBmc::connect("x", &endpoint(server.port(), &[("system_id", "2")])).unwrap();
    let e = bmc.capabilities().await.unwrap_err();
    assert!(e.to_string().contains("no such system"), "{e}");
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
