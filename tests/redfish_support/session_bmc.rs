//! A loopback Redfish service with a SessionService (the emulator has none):
//! login by POST to Sessions, X-Auth-Token required on everything else (basic
//! auth refused), DELETE of a session, and a count of open sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::mock::{MockReply, MockRequest, MockServer};

pub const PASSWORD: &str = "s3ssion-Secret!";
pub const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

#[derive(Default)]
pub struct SessionBmc {
    /// token → session id
    pub open: HashMap<String, u32>,
    pub next: u32,
    pub logins: u32,
    pub power_on: bool,
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
            match (method, path) {
                ("DELETE", p) if p == format!("{SESSIONS}/{id}") => {
                    st.open.retain(|_, v| *v != id);
                    MockReply::empty(204)
                }
                ("GET", "/redfish/v1/Systems") => MockReply::json(
                    200,
                    r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/Self"}]}"#,
                ),
                ("GET", "/redfish/v1/Systems/Self") => MockReply::json(
                    200,
                    format!(
                        r##"{{"Id":"Self","PowerState":"{}","Actions":{{"#ComputerSystem.Reset":{{
                        "target":"/redfish/v1/Systems/Self/Actions/ComputerSystem.Reset"}}}}}}"##,
                        if st.power_on { "On" } else { "Off" }
                    ),
                ),
                ("POST", "/redfish/v1/Systems/Self/Actions/ComputerSystem.Reset") => {
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

/// Starts one; the state is shared with the test.
pub async fn start() -> (MockServer, Arc<Mutex<SessionBmc>>) {
    let state = Arc::new(Mutex::new(SessionBmc::default()));
    let s = state.clone();
    (MockServer::start(move |r| handle(&s, r)).await, state)
}
