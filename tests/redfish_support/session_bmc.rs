//! A loopback Redfish service with a SessionService (the emulator has none):
//! login by POST to Sessions, X-Auth-Token required on everything else (basic
//! auth refused), DELETE of a session, and counts of sessions created, deleted
//! and open. Its systems and a few faults are set by the test (`start_with`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::mock::{MockReply, MockRequest, MockServer};

pub const PASSWORD: &str = "s3ssion-Secret!";
pub const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// One system under `/redfish/v1/Systems/<id>`.
#[derive(Debug, Clone)]
pub struct SystemSpec {
    pub id: String,
    /// Whether it has a `#ComputerSystem.Reset` action.
    pub reset: bool,
}

impl SystemSpec {
    pub fn new(id: &str, reset: bool) -> Self {
        SystemSpec {
            id: id.to_string(),
            reset,
        }
    }
}

pub struct SessionBmc {
    /// token → session id
    pub open: HashMap<String, u32>,
    pub next: u32,
    /// Sessions created (successful logins).
    pub logins: u32,
    /// Sessions deleted by their owner (DELETE answered 204).
    pub deleted: u32,
    pub power_on: bool,
    pub systems: Vec<SystemSpec>,
    /// Answer GET of the Systems collection with this status instead.
    pub fail_collection: Option<u16>,
    /// Answer GET of any system with this status instead.
    pub fail_system: Option<u16>,
}

impl Default for SessionBmc {
    fn default() -> Self {
        SessionBmc {
            open: HashMap::new(),
            next: 0,
            logins: 0,
            deleted: 0,
            power_on: false,
            systems: vec![SystemSpec::new("Self", true)],
            fail_collection: None,
            fail_system: None,
        }
    }
}

fn server_error(status: u16) -> MockReply {
    MockReply::json(
        status,
        r#"{"error":{"code":"Base.1.8.InternalError","message":"The request failed due to an internal service error.  The service is still operational."}}"#,
    )
}

pub fn handle(state: &Mutex<SessionBmc>, r: &MockRequest) -> MockReply {
    let mut st = state.lock().unwrap();
    let unauthorized = || {
        MockReply::json(
            401,
            r#"{"error":{"code":"Base.1.8.NoValidSession","message":"There is no valid session established with the implementation.","@Message.ExtendedInfo":[{"MessageId":"Base.1.8.NoValidSession","Message":"There is no valid session established with the implementation."}]}}"#,
        )
    };
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/redfish/v1/") => MockReply::json(
            200,
            r#"{"@odata.id":"/redfish/v1/","RedfishVersion":"1.11.0",
               "Systems":{"@odata.id":"/redfish/v1/Systems"},
               "SessionService":{"@odata.id":"/redfish/v1/SessionService"},
               "Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}"#,
        ),
        ("POST", SESSIONS) => {
            let body = r.json();
            if body["UserName"] != "admin" || body["Password"] != PASSWORD {
                return MockReply::json(
                    401,
                    r#"{"error":{"code":"Base.1.8.GeneralError","message":"Login failed",
                       "@Message.ExtendedInfo":[{"MessageId":"Base.1.8.NoValidSession","Message":"Invalid user name or password."}]}}"#,
                );
            }
            st.next += 1;
            st.logins += 1;
            let id = st.next;
            let token = format!("token-{id}-{}", rand_hex());
            st.open.insert(token.clone(), id);
            MockReply::json(
                201,
                format!(r#"{{"@odata.id":"{SESSIONS}/{id}","Id":"{id}","UserName":"admin"}}"#),
            )
            .header("X-Auth-Token", &token)
            .header("Location", &format!("{SESSIONS}/{id}"))
        }
        (method, path) => {
            // Everything else needs a valid session; basic auth is refused.
            let Some(id) = r
                .header("x-auth-token")
                .and_then(|t| st.open.get(t))
                .copied()
            else {
                return unauthorized();
            };
            let system = path.strip_prefix("/redfish/v1/Systems/").and_then(|rest| {
                let id = rest.split('/').next()?;
                st.systems.iter().find(|s| s.id == id).cloned()
            });
            match (method, path, system) {
                ("DELETE", p, _) if p == format!("{SESSIONS}/{id}") => {
                    st.open.retain(|_, v| *v != id);
                    st.deleted += 1;
                    MockReply::empty(204)
                }
                ("GET", "/redfish/v1/Systems", _) => {
                    if let Some(status) = st.fail_collection {
                        return server_error(status);
                    }
                    let members: Vec<String> = st
                        .systems
                        .iter()
                        .map(|s| format!(r#"{{"@odata.id":"/redfish/v1/Systems/{}"}}"#, s.id))
                        .collect();
                    MockReply::json(200, format!(r#"{{"Members":[{}]}}"#, members.join(",")))
                }
                ("GET", p, Some(sys)) if p == format!("/redfish/v1/Systems/{}", sys.id) => {
                    if let Some(status) = st.fail_system {
                        return server_error(status);
                    }
                    let actions = if sys.reset {
                        format!(
                            r##","Actions":{{"#ComputerSystem.Reset":{{
                            "target":"/redfish/v1/Systems/{}/Actions/ComputerSystem.Reset"}}}}"##,
                            sys.id
                        )
                    } else {
                        String::new()
                    };
                    MockReply::json(
                        200,
                        format!(
                            r#"{{"@odata.id":"/redfish/v1/Systems/{id}","Id":"{id}","PowerState":"{power}"{actions}}}"#,
                            id = sys.id,
                            power = if st.power_on { "On" } else { "Off" },
                        ),
                    )
                }
                ("POST", p, Some(sys))
                    if sys.reset
                        && p == format!(
                            "/redfish/v1/Systems/{}/Actions/ComputerSystem.Reset",
                            sys.id
                        ) =>
                {
                    st.power_on = r.json()["ResetType"] == "On";
                    MockReply::empty(204)
                }
                _ => MockReply::json(404, "{}"),
            }
        }
    }
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Starts one with a single system `Self` that has a Reset action; the state
/// is shared with the test.
pub async fn start() -> (MockServer, Arc<Mutex<SessionBmc>>) {
    start_with(|_| {}).await
}

/// Starts one after `setup` changed its systems or faults.
pub async fn start_with(
    setup: impl FnOnce(&mut SessionBmc),
) -> (MockServer, Arc<Mutex<SessionBmc>>) {
    let mut bmc = SessionBmc::default();
    setup(&mut bmc);
    let state = Arc::new(Mutex::new(bmc));
    let s = state.clone();
    (MockServer::start(move |r| handle(&s, r)).await, state)
}
