//! The Redfish side of a simulated BMC: HTTPS (or plain HTTP) on a port of
//! its own, with the resources the agent's driver reads — the service root,
//! the Systems collection, one ComputerSystem (PowerState, LastResetTime,
//! BootProgress, Boot override, the Reset action with its AllowableValues),
//! and the SessionService — with basic auth and sessions.
//!
//! Two layouts: one port per BMC, like real BMCs (an idle listener costs a
//! socket and a parked task), or one shared port serving every system under
//! `/redfish/v1/Systems/node{i}`, for N where a socket per BMC and per
//! connection would pass the open-files limit. On the shared port the
//! sessions belong to the service and are kept (and counted) by BMC 0. See
//! the README for the figures at N = 10,000.

pub mod session;

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;

use crate::state::{cause, Bmc, BmcState, BootFlags};
use crate::Sim;

/// The TLS identity every Redfish port presents: one self-signed certificate
/// for `127.0.0.1` and `localhost`, made at start.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub cert_pem: String,
    /// SHA-256 of the certificate's DER, hex (what the agent's `cert_sha256` pins).
    pub sha256: String,
}

pub fn make_tls() -> anyhow::Result<Tls> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use sha2::Digest;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let der = ck.cert.der().clone();
    let sha256 = sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(cfg)),
        cert_pem: ck.cert.pem(),
        sha256,
    })
}

pub fn bind(base: u16, n: usize) -> anyhow::Result<(u16, Vec<TcpListener>)> {
    crate::ports::bind_run(base, n, |port| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
    })
}

/// One accept loop per port; one task per connection. With `shared`, the
/// one listener serves every system.
pub fn serve(
    sim: Arc<Sim>,
    listeners: Vec<TcpListener>,
    tls: Option<TlsAcceptor>,
    shared: bool,
) -> anyhow::Result<()> {
    for (i, l) in listeners.into_iter().enumerate() {
        let port_bmc = (!shared).then_some(i);
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        let sim = sim.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = match l.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors and the like: wait, do not spin.
                        tracing::warn!(port_bmc = ?port_bmc, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let sim = sim.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let sim = sim.clone();
                        async move { Ok::<_, Infallible>(handle(&sim, port_bmc, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
    }
    Ok(())
}

/// An answer before it becomes an HTTP response.
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }
    fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: None,
        }
    }
    fn header(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// A Redfish error body with one message of the Base registry.
fn error(status: StatusCode, id: &str, message: &str) -> Answer {
    Answer::json(
        status,
        json!({
            "error": {
                "code": format!("Base.1.8.{id}"),
                "message": message,
                "@Message.ExtendedInfo": [{
                    "@odata.type": "#Message.v1_1_1.Message",
                    "MessageId": format!("Base.1.8.{id}"),
                    "Message": message,
                    "Severity": "Warning",
                    "Resolution": "None",
                }]
            }
        }),
    )
}

/// `port_bmc`: the BMC whose port this is; `None` on the shared port.
async fn handle(
    sim: &Sim,
    port_bmc: Option<usize>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let a = if body.len() > 64 * 1024 {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "GeneralError",
            "The request body is too large.",
        )
    } else {
        let rq = Rq {
            method: &parts.method,
            path: normalize(parts.uri.path()),
            headers: &parts.headers,
            body: &body,
            now: Instant::now(),
        };
        route(sim, port_bmc, &rq)
    };
    let mut resp = Response::builder().status(a.status);
    if let Some(h) = resp.headers_mut() {
        h.insert("OData-Version", HeaderValue::from_static("4.0"));
        for (k, v) in &a.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(*k, v);
            }
        }
    }
    let bytes = match a.body {
        Some(v) => {
            resp = resp.header("Content-Type", "application/json");
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        None => Bytes::new(),
    };
    resp.body(Full::new(bytes))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

const ROOT: &str = "/redfish/v1";
const SYSTEMS: &str = "/redfish/v1/Systems";
const SESSION_SERVICE: &str = "/redfish/v1/SessionService";
const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
/// The reset types offered, in the order listed.
pub const RESET_TYPES: [&str; 8] = [
    "On",
    "ForceOn",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
    "Nmi",
];
const BOOT_TARGETS: [(&str, u8); 5] = [
    ("None", 0x0),
    ("Pxe", 0x1),
    ("Hdd", 0x2),
    ("Cd", 0x5),
    ("BiosSetup", 0x6),
];

pub fn system_id(i: usize) -> String {
    format!("node{i}")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Who is asking: a session token, else basic credentials.
fn authenticated(sim: &Sim, st: &mut BmcState, headers: &HeaderMap, now: Instant) -> bool {
    if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        return st.redfish.touch(token, now).is_some();
    }
    let Some(basic) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", sim.user, sim.password);
    decoded == expected.as_bytes()
}

/// One request, as the routes see it.
struct Rq<'a> {
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    now: Instant,
}

fn normalize(path: &str) -> &str {
    if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    }
}

fn not_found(path: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        "ResourceMissingAtURI",
        &format!("The resource at the URI {path} was not found."),
    )
}

/// Which system a path is about, and whether it is the Reset action.
fn system_of(path: &str, n: usize) -> Option<(usize, bool)> {
    let rest = path.strip_prefix(SYSTEMS)?.strip_prefix("/node")?;
    let (num, reset) = match rest.split_once('/') {
        None => (rest, false),
        Some((num, "Actions/ComputerSystem.Reset")) => (num, true),
        Some(_) => return None,
    };
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    num.parse::<usize>()
        .ok()
        .filter(|i| *i < n)
        .map(|i| (i, reset))
}

/// Two phases. The service (root, Systems, sessions, authentication) is
/// answered under the lock of the BMC that holds the sessions: the port's
/// own BMC, or BMC 0 on the shared port. A system resource is then answered
/// under its own BMC's lock.
fn route(sim: &Sim, port_bmc: Option<usize>, rq: &Rq<'_>) -> Answer {
    let path = rq.path;
    let system =
        system_of(path, sim.bmcs.len()).filter(|(i, _)| port_bmc.is_none_or(|own| own == *i));
    let session_id = path
        .strip_prefix(SESSIONS)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty() && !r.contains('/'));
    let service_path = ["/redfish", ROOT, SYSTEMS, SESSION_SERVICE, SESSIONS].contains(&path)
        || session_id.is_some();
    if !service_path && system.is_none() {
        return not_found(path);
    }

    let holder = &sim.bmcs[port_bmc.unwrap_or(0)];
    {
        let mut guard = holder.lock();
        let st = &mut *guard;
        st.redfish
            .expire(rq.now, sim.limits.redfish_timeout, &mut st.c);
        if system.is_none() {
            st.c.redfish_requests += 1;
        }
        let open =
            path == "/redfish" || path == ROOT || (path == SESSIONS && rq.method == Method::POST);
        if !open && !authenticated(sim, st, rq.headers, rq.now) {
            st.c.redfish_auth_failures += 1;
            return error(
                StatusCode::UNAUTHORIZED,
                "NoValidSession",
                "There is no valid session established with the implementation.",
            )
            .header("WWW-Authenticate", "Basic realm=\"bmc-sim\"".into());
        }
        if system.is_none() {
            return service(sim, holder, st, port_bmc, rq, session_id);
        }
    }
    let (i, reset) = system.expect("a system path");
    let bmc = &sim.bmcs[i];
    let mut guard = bmc.lock();
    let st = &mut *guard;
    st.c.redfish_requests += 1;
    match (rq.method, reset) {
        (&Method::GET, false) => {
            let (etag, body) = system_body(bmc, st, rq.now);
            Answer::json(StatusCode::OK, body).header("ETag", etag)
        }
        (&Method::PATCH, false) => patch_system(bmc, st, rq.headers, rq.body, rq.now),
        (&Method::POST, true) => reset_system(sim, st, rq.body, rq.now),
        _ => not_allowed(rq.method, path),
    }
}

fn not_allowed(method: &Method, path: &str) -> Answer {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "OperationNotAllowed",
        &format!("The HTTP method {method} is not allowed on {path}."),
    )
}

/// The service's own resources, under the session holder's lock.
fn service(
    sim: &Sim,
    holder: &Bmc,
    st: &mut BmcState,
    port_bmc: Option<usize>,
    rq: &Rq<'_>,
    session_id: Option<&str>,
) -> Answer {
    let path = rq.path;
    match (rq.method, path) {
        (&Method::GET, "/redfish") => Answer::json(StatusCode::OK, json!({ "v1": "/redfish/v1/" })),
        (&Method::GET, ROOT) => Answer::json(
            StatusCode::OK,
            json!({
                "@odata.id": "/redfish/v1/",
                "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                "Id": "RootService",
                "Name": match port_bmc {
                    Some(i) => format!("bmc-sim BMC {i}"),
                    None => format!("bmc-sim, {} systems", sim.bmcs.len()),
                },
                "RedfishVersion": "1.17.0",
                "UUID": holder.uuid(),
                "Systems": { "@odata.id": SYSTEMS },
                "SessionService": { "@odata.id": SESSION_SERVICE },
                "Links": { "Sessions": { "@odata.id": SESSIONS } },
            }),
        ),
        (&Method::GET, SYSTEMS) => {
            let members: Vec<Value> = match port_bmc {
                Some(i) => vec![json!({ "@odata.id": format!("{SYSTEMS}/{}", system_id(i)) })],
                None => (0..sim.bmcs.len())
                    .map(|i| json!({ "@odata.id": format!("{SYSTEMS}/{}", system_id(i)) }))
                    .collect(),
            };
            Answer::json(
                StatusCode::OK,
                json!({
                    "@odata.id": SYSTEMS,
                    "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                    "Name": "Computer System Collection",
                    "Members@odata.count": members.len(),
                    "Members": members,
                }),
            )
        }
        (&Method::GET, SESSION_SERVICE) => Answer::json(
            StatusCode::OK,
            json!({
                "@odata.id": SESSION_SERVICE,
                "@odata.type": "#SessionService.v1_1_8.SessionService",
                "Id": "SessionService",
                "Name": "Session Service",
                "ServiceEnabled": true,
                "SessionTimeout": sim.limits.redfish_timeout.as_secs(),
                "Sessions": { "@odata.id": SESSIONS },
            }),
        ),
        (&Method::GET, SESSIONS) => {
            let members: Vec<Value> = st
                .redfish
                .list
                .iter()
                .map(|s| json!({ "@odata.id": format!("{SESSIONS}/{}", s.id) }))
                .collect();
            Answer::json(
                StatusCode::OK,
                json!({
                    "@odata.id": SESSIONS,
                    "@odata.type": "#SessionCollection.SessionCollection",
                    "Name": "Session Collection",
                    "Members@odata.count": members.len(),
                    "Members": members,
                }),
            )
        }
        (&Method::POST, SESSIONS) => login(sim, st, rq.body, rq.now),
        (&Method::GET, _) if session_id.is_some() => {
            let id = session_id.unwrap_or_default();
            match st.redfish.list.iter().find(|s| s.id == id) {
                Some(s) => Answer::json(StatusCode::OK, session_body(&s.id, &s.user)),
                None => not_found(path),
            }
        }
        (&Method::DELETE, _) if session_id.is_some() => {
            if st.redfish.delete(session_id.unwrap_or_default()) {
                st.c.redfish_sessions_deleted += 1;
                Answer::empty(StatusCode::NO_CONTENT)
            } else {
                not_found(path)
            }
        }
        _ => not_allowed(rq.method, path),
    }
}

fn session_body(id: &str, user: &str) -> Value {
    json!({
        "@odata.id": format!("{SESSIONS}/{id}"),
        "@odata.type": "#Session.v1_5_0.Session",
        "Id": id,
        "Name": "User Session",
        "UserName": user,
    })
}

fn login(sim: &Sim, st: &mut BmcState, body: &[u8], now: Instant) -> Answer {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (Some(user), Some(password)) = (v["UserName"].as_str(), v["Password"].as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyMissing",
            "The properties UserName and Password are required to create a session.",
        );
    };
    if user != sim.user || password != sim.password {
        st.c.redfish_auth_failures += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            "ResourceAtUriUnauthorized",
            "While accessing the resource at /redfish/v1/SessionService/Sessions, the service \
             received an authorization error: invalid user name or password.",
        );
    }
    match st.redfish.create(user, now) {
        Some(s) => {
            st.c.redfish_sessions_created += 1;
            let location = format!("{SESSIONS}/{}", s.id);
            Answer::json(StatusCode::CREATED, session_body(&s.id, &s.user))
                .header("X-Auth-Token", s.token)
                .header("Location", location)
        }
        None => {
            st.c.redfish_sessions_refused += 1;
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SessionLimitExceeded",
                "The session establishment failed due to the number of simultaneous sessions \
                 exceeding the limit of the implementation.",
            )
        }
    }
}

/// The system and its ETag (a hash of what it shows).
fn system_body(bmc: &Bmc, st: &mut BmcState, now: Instant) -> (String, Value) {
    let on = st.host.settle(now, &mut st.c);
    let h = &st.host;
    let id = system_id(bmc.index);
    let path = format!("{SYSTEMS}/{id}");
    let target = BOOT_TARGETS
        .iter()
        .find(|(_, d)| *d == h.boot.device())
        .map_or("None", |(name, _)| name);
    let enabled = match (h.boot.valid(), h.boot.persistent()) {
        (false, _) => "Disabled",
        (true, false) => "Once",
        (true, true) => "Continuous",
    };
    let mut v = json!({
        "@odata.id": path,
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": id,
        "Name": format!("Simulated server {}", bmc.index),
        "UUID": bmc.uuid(),
        "SystemType": "Physical",
        "Manufacturer": "rack-agent bmc-sim",
        "Model": "bmc-sim",
        "PowerState": if on { "On" } else { "Off" },
        "LastResetTime": rfc3339(h.last_reset),
        "BootProgress": {
            "LastState": if on { "OSRunning" } else { "None" },
            "LastStateTime": rfc3339(h.last_change),
        },
        "Status": { "State": "Enabled", "Health": "OK" },
        "Boot": {
            "BootSourceOverrideEnabled": enabled,
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideMode": if h.boot.efi() { "UEFI" } else { "Legacy" },
            "BootSourceOverrideTarget@Redfish.AllowableValues":
                BOOT_TARGETS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        },
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": format!("{path}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": RESET_TYPES,
            }
        },
    });
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut hasher);
    let etag = format!("W/\"{:016x}\"", hasher.finish());
    v["@odata.etag"] = Value::String(etag.clone());
    (etag, v)
}

fn patch_system(
    bmc: &Bmc,
    st: &mut BmcState,
    headers: &HeaderMap,
    body: &[u8],
    now: Instant,
) -> Answer {
    if let Some(want) = headers.get("if-match").and_then(|v| v.to_str().ok()) {
        let (etag, _) = system_body(bmc, st, now);
        if want != "*" && want != etag {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "The ETag supplied did not match the ETag required to change this resource.",
            );
        }
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "MalformedJSON",
                "The request body submitted was malformed JSON.",
            )
        }
    };
    let obj = v.as_object().cloned().unwrap_or_default();
    if let Some(k) = obj.keys().find(|k| k.as_str() != "Boot") {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyNotWritable",
            &format!("The property {k} is a read only property and cannot be assigned a value."),
        );
    }
    let boot = &v["Boot"];
    let cur = st.host.boot;
    let mut device = cur.device();
    let (mut valid, mut persistent, mut efi) = (cur.valid(), cur.persistent(), cur.efi());
    if let Some(t) = boot.get("BootSourceOverrideTarget") {
        match BOOT_TARGETS.iter().find(|(n, _)| Some(*n) == t.as_str()) {
            Some((_, d)) => device = *d,
            None => return not_in_list(t, "BootSourceOverrideTarget"),
        }
    }
    if let Some(e) = boot.get("BootSourceOverrideEnabled") {
        match e.as_str() {
            Some("Disabled") => valid = false,
            Some("Once") => (valid, persistent) = (true, false),
            Some("Continuous") => (valid, persistent) = (true, true),
            _ => return not_in_list(e, "BootSourceOverrideEnabled"),
        }
    }
    if let Some(m) = boot.get("BootSourceOverrideMode") {
        match m.as_str() {
            Some("UEFI") => efi = true,
            Some("Legacy") => efi = false,
            _ => return not_in_list(m, "BootSourceOverrideMode"),
        }
    }
    st.host.boot = BootFlags::set(valid, persistent, efi, device);
    st.c.redfish_boot_patches += 1;
    Answer::empty(StatusCode::NO_CONTENT)
}

fn not_in_list(value: &Value, property: &str) -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        "PropertyValueNotInList",
        &format!("The value {value} for the property {property} is not in the list of acceptable values."),
    )
}

fn reset_system(sim: &Sim, st: &mut BmcState, body: &[u8], now: Instant) -> Answer {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(kind) = v["ResetType"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "ActionParameterMissing",
            "The action ComputerSystem.Reset requires the parameter ResetType to be present in \
             the request body.",
        );
    };
    let d = sim.power_delay;
    let (h, c) = (&mut st.host, &mut st.c);
    let on = h.settle(now, c);
    match kind {
        "On" | "ForceOn" => {
            c.redfish_reset_on += 1;
            h.power_on(now, d, c);
        }
        "ForceOff" => {
            c.redfish_reset_force_off += 1;
            h.power_off(now, d, c);
        }
        "GracefulShutdown" => {
            c.redfish_reset_graceful_shutdown += 1;
            h.power_off(now, d, c);
        }
        // A restart of a host that is off starts it.
        "GracefulRestart" => {
            c.redfish_reset_graceful_restart += 1;
            if on {
                let _ = h.restart(now, d, cause::SOFT_RESET, c);
            } else {
                h.power_on(now, d, c);
            }
        }
        "ForceRestart" => {
            c.redfish_reset_force_restart += 1;
            if on {
                let _ = h.restart(now, d, cause::CHASSIS_CONTROL, c);
            } else {
                h.power_on(now, d, c);
            }
        }
        "PowerCycle" => {
            c.redfish_reset_power_cycle += 1;
            if on {
                let _ = h.power_cycle(now, d, c);
            } else {
                h.power_on(now, d, c);
            }
        }
        "Nmi" => c.redfish_reset_nmi += 1,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueNotInList",
                &format!(
                    "The value {other} for the parameter ResetType in the action \
                     ComputerSystem.Reset is not in the list of acceptable values."
                ),
            )
        }
    }
    Answer::empty(StatusCode::NO_CONTENT)
}
