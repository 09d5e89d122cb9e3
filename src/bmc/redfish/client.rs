//! The HTTP side of one Redfish BMC: authentication (session or basic),
//! per-request timeouts, bounded retries, a bounded number of requests in
//! flight, and the mapping of HTTP failures to [`BmcError`].

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};

use super::model::ErrorBody;
use super::options::{RedfishOptions, TlsTrust};
use super::tls;
use crate::bmc::{BmcError, Endpoint, Secret};

/// The longest `Retry-After` honoured; a BMC asking for more is treated as down.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The first backoff delay; doubled per attempt, capped at `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// How requests authenticate, decided at discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    Basic,
    /// Sessions, created by POSTing to this collection. With `fallback`, a
    /// BMC that will not create a session (404/405/501, no token...) is used
    /// with basic auth instead; wrong credentials never fall back.
    Session {
        sessions: String,
        fallback: bool,
    },
}

#[derive(Debug, Default)]
struct AuthState {
    mode: Option<AuthMode>,
    token: Option<Secret>,
    /// The session resource, DELETEd at close.
    session_uri: Option<String>,
}

/// One request. `resendable` says whether it may be sent again after it may
/// have reached the BMC (GET, PATCH: yes; a Reset POST: never).
#[derive(Debug, Clone)]
pub struct Req<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<serde_json::Value>,
    pub if_match: Option<String>,
    pub resendable: bool,
    pub authenticated: bool,
}

impl<'a> Req<'a> {
    pub fn get(path: &'a str) -> Self {
        Req {
            method: Method::GET,
            path,
            body: None,
            if_match: None,
            resendable: true,
            authenticated: true,
        }
    }
    pub fn post(path: &'a str, body: serde_json::Value, resendable: bool) -> Self {
        Req {
            method: Method::POST,
            path,
            body: Some(body),
            if_match: None,
            resendable,
            authenticated: true,
        }
    }
    pub fn patch(path: &'a str, body: serde_json::Value, if_match: Option<String>) -> Self {
        Req {
            method: Method::PATCH,
            path,
            body: Some(body),
            if_match,
            resendable: true,
            authenticated: true,
        }
    }
}

/// An HTTP answer the BMC gave with a success status.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, BmcError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            BmcError::Protocol(format!("{what}: the body is not the expected JSON ({e})"))
        })
    }
    pub fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn location(&self) -> Option<&str> {
        self.header(LOCATION)
    }
    /// `Retry-After` in seconds (the HTTP-date form is ignored), capped.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// The HTTP client of one BMC.
pub struct Client {
    http: reqwest::Client,
    base: String,
    server_id: String,
    bmc: String,
    username: String,
    password: Secret,
    request_timeout: Duration,
    retries: u32,
    auth: Mutex<AuthState>,
    in_flight: Semaphore,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("server_id", &self.server_id)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

/// The HTTP clients, one per distinct set of client settings, shared by
/// every BMC that uses those settings. A client (its TLS configuration, root
/// store and connection pool, which keeps idle connections per host) costs
/// tens of kilobytes and a millisecond to build: one per BMC made 5,000
/// Redfish servers cost ~300 MiB and seconds at every start. BMCs are
/// distinct hosts, so sharing a pool does not make them share connections.
/// A `ca_file` is read when the first BMC that names it is set up.
fn shared_http(opts: &RedfishOptions) -> Result<reqwest::Client, BmcError> {
    type Key = (String, bool, Duration, usize);
    static CLIENTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<Key, reqwest::Client>>,
    > = std::sync::OnceLock::new();
    let key: Key = (
        format!("{:?}", opts.trust),
        opts.https,
        opts.request_timeout,
        opts.max_connections,
    );
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(c) = clients.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let builder = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .connect_timeout(opts.request_timeout)
        .pool_max_idle_per_host(opts.max_connections)
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rack-agent/", env!("CARGO_PKG_VERSION")));
    let builder = if opts.https {
        tls::configure(builder, &opts.trust)?
    } else {
        builder
    };
    let http = builder
        .build()
        .map_err(|e| BmcError::Protocol(format!("building the HTTP client: {e}")))?;
    clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, http.clone());
    Ok(http)
}

impl Client {
    pub fn new(
        server_id: &str,
        endpoint: &Endpoint,
        opts: &RedfishOptions,
    ) -> Result<Self, BmcError> {
        let bmc = endpoint.key();
        if opts.trust == TlsTrust::Insecure {
            warn!(
                server_id,
                bmc = %bmc,
                "TLS certificate verification is OFF for this BMC (insecure_skip_verify = true)"
            );
        }
        if !opts.https {
            warn!(server_id, bmc = %bmc, "plain http: credentials travel unencrypted (scheme = http)");
        }
        let http = shared_http(opts)?;
        let host = if endpoint.address.contains(':') && !endpoint.address.starts_with('[') {
            format!("[{}]", endpoint.address)
        } else {
            endpoint.address.clone()
        };
        let scheme = if opts.https { "https" } else { "http" };
        Ok(Client {
            http,
            base: format!("{scheme}://{host}:{}", endpoint.port),
            server_id: server_id.to_string(),
            bmc,
            username: endpoint.username.clone(),
            password: endpoint.password.clone(),
            request_timeout: opts.request_timeout,
            retries: opts.retries,
            auth: Mutex::new(AuthState::default()),
            in_flight: Semaphore::new(opts.max_connections),
        })
    }

    /// The server this client works for, for log fields.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// `address:port` of the BMC, for log fields.
    pub fn bmc(&self) -> &str {
        &self.bmc
    }

    pub async fn set_auth_mode(&self, mode: AuthMode) {
        let mut st = self.auth.lock().await;
        if st.mode.as_ref() != Some(&mode) {
            info!(server_id = %self.server_id, bmc = %self.bmc, auth = ?mode, "Redfish authentication chosen");
            st.mode = Some(mode);
        }
    }

    /// A URL on this BMC for a path or an absolute URL the BMC gave us. An
    /// absolute URL keeps only its path: credentials never go to another host.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            if let Ok(u) = reqwest::Url::parse(path) {
                let mut p = u.path().to_string();
                if let Some(q) = u.query() {
                    p.push('?');
                    p.push_str(q);
                }
                return format!("{}{}", self.base, p);
            }
        }
        if path.starts_with('/') {
            format!("{}{}", self.base, path)
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    /// GETs a resource and parses it.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, BmcError> {
        self.send(Req::get(path)).await?.json(path)
    }

    /// Sends a request with auth, retries and error mapping.
    pub async fn send(&self, req: Req<'_>) -> Result<Reply, BmcError> {
        self.send_allowing(req, &[]).await
    }

    /// Like [`send`](Self::send), but answers with a status in `allowed` come
    /// back as `Ok` for the caller to handle (a 412 on PATCH, a 404 from a
    /// task monitor that is gone).
    pub async fn send_allowing(
        &self,
        req: Req<'_>,
        allowed: &[StatusCode],
    ) -> Result<Reply, BmcError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| BmcError::Unreachable("the driver is closed".into()))?;
        let mut attempt = 0u32;
        let mut relogged = false;
        loop {
            let token = if req.authenticated {
                self.auth_token().await?
            } else {
                None
            };
            let started = Instant::now();
            let result = self.send_once(&req, token.as_ref()).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match result {
                Err(fail) => {
                    let retry = attempt < self.retries
                        && match fail.kind {
                            FailKind::Connect => true,
                            FailKind::AfterSend => req.resendable,
                            FailKind::Timeout | FailKind::Tls => false,
                        };
                    debug!(server_id = %self.server_id, bmc = %self.bmc, method = %req.method,
                        path = req.path, elapsed_ms, error = %fail.error, retry, "Redfish request failed");
                    if !retry {
                        return Err(fail.error);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Ok(reply) => {
                    let status = reply.status;
                    debug!(server_id = %self.server_id, bmc = %self.bmc, method = %req.method,
                        path = req.path, status = status.as_u16(), elapsed_ms, "Redfish request");
                    if status == StatusCode::UNAUTHORIZED && req.authenticated && !relogged {
                        if let Some(token) = token {
                            // The session expired or was deleted at the BMC: the
                            // request was rejected unprocessed, so one re-send is safe.
                            relogged = true;
                            self.relogin(&token).await?;
                            continue;
                        }
                    }
                    if status == StatusCode::SERVICE_UNAVAILABLE && attempt < self.retries {
                        // 503: the service did not process the request (busy,
                        // starting up), so re-sending even a Reset is safe.
                        let wait = reply.retry_after().unwrap_or_else(|| backoff(attempt));
                        info!(server_id = %self.server_id, bmc = %self.bmc, path = req.path,
                            wait_ms = wait.as_millis() as u64, "BMC busy (503), retrying");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    if status.is_success() || allowed.contains(&status) {
                        return Ok(reply);
                    }
                    return Err(self.status_error(&req, &reply));
                }
            }
        }
    }

    async fn send_once(&self, req: &Req<'_>, token: Option<&Secret>) -> Result<Reply, Fail> {
        let mut rb = self
            .http
            .request(req.method.clone(), self.url(req.path))
            .header(ACCEPT, "application/json")
            .header("OData-Version", "4.0");
        if req.authenticated {
            rb = match token {
                Some(t) => {
                    let mut v = HeaderValue::from_str(t.expose()).map_err(|_| Fail {
                        kind: FailKind::Tls,
                        error: BmcError::Protocol("the session token is not a valid header".into()),
                    })?;
                    v.set_sensitive(true);
                    rb.header("X-Auth-Token", v)
                }
                None => rb.basic_auth(&self.username, Some(self.password.expose())),
            };
        }
        if let Some(tag) = &req.if_match {
            rb = rb.header("If-Match", tag);
        }
        if let Some(body) = &req.body {
            rb = rb
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = rb.send().await.map_err(|e| self.classify(e, false))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.classify(e, true))?
            .to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn classify(&self, e: reqwest::Error, sent: bool) -> Fail {
        let cause = root_cause(&e);
        if e.is_timeout() {
            return Fail {
                kind: FailKind::Timeout,
                error: BmcError::Timeout(self.request_timeout),
            };
        }
        if is_tls(&e) {
            return Fail {
                kind: FailKind::Tls,
                error: BmcError::Unreachable(format!(
                    "{}: TLS handshake failed: {cause} (a self-signed BMC certificate needs the \
                     ca_file or cert_sha256 option)",
                    self.bmc
                )),
            };
        }
        if e.is_connect() && !sent {
            return Fail {
                kind: FailKind::Connect,
                error: BmcError::Unreachable(format!("{}: cannot connect: {cause}", self.bmc)),
            };
        }
        Fail {
            kind: FailKind::AfterSend,
            error: BmcError::Unreachable(format!("{}: the exchange broke off: {cause}", self.bmc)),
        }
    }

    fn status_error(&self, req: &Req<'_>, reply: &Reply) -> BmcError {
        let status = reply.status;
        let said = serde_json::from_slice::<ErrorBody>(&reply.body)
            .ok()
            .and_then(|b| b.text())
            .or_else(|| body_snippet(&reply.body))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason").to_string());
        let text = format!(
            "HTTP {} on {} {}: {said}",
            status.as_u16(),
            req.method,
            req.path
        );
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                BmcError::Auth(format!("user {:?}: {text}", self.username))
            }
            _ => BmcError::Refused(text),
        }
    }

    /// The session token to send, logging in first when sessions are in use.
    async fn auth_token(&self) -> Result<Option<Secret>, BmcError> {
        let mut st = self.auth.lock().await;
        let (sessions, fallback) = match &st.mode {
            Some(AuthMode::Session { sessions, fallback }) => (sessions.clone(), *fallback),
            _ => return Ok(None),
        };
        if st.token.is_none() {
            match self.login(&sessions).await {
                Ok((token, uri)) => {
                    st.token = Some(token);
                    st.session_uri = uri;
                }
                Err(e @ (BmcError::Refused(_) | BmcError::Protocol(_))) if fallback => {
                    warn!(server_id = %self.server_id, bmc = %self.bmc, error = %e,
                        "the BMC would not create a session; using HTTP basic auth instead");
                    st.mode = Some(AuthMode::Basic);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(st.token.clone())
    }

    /// Replaces a token the BMC rejected (unless another task already did).
    async fn relogin(&self, rejected: &Secret) -> Result<(), BmcError> {
        let mut st = self.auth.lock().await;
        if st.token.as_ref() == Some(rejected) {
            info!(server_id = %self.server_id, bmc = %self.bmc, "session rejected (401), logging in again");
            st.token = None;
            st.session_uri = None;
        }
        Ok(())
    }

    async fn login(&self, sessions: &str) -> Result<(Secret, Option<String>), BmcError> {
        let body = serde_json::json!({
            "UserName": self.username,
            "Password": self.password.expose(),
        });
        let req = Req {
            method: Method::POST,
            path: sessions,
            body: Some(body),
            if_match: None,
            resendable: true,
            authenticated: false,
        };
        let reply = Box::pin(self.send_unauthenticated(req)).await?;
        let token = reply
            .header("X-Auth-Token")
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                BmcError::Protocol(format!(
                    "POST {sessions} created a session without an X-Auth-Token header"
                ))
            })?;
        let body = serde_json::from_slice::<super::model::Session>(&reply.body).ok();
        // Where to DELETE it: the Location header (required by the spec), the
        // body's @odata.id, or the collection plus the body's Id.
        let uri = reply
            .location()
            .map(str::to_string)
            .or_else(|| body.as_ref().and_then(|s| s.odata_id.clone()))
            .or_else(|| {
                body.as_ref()
                    .and_then(|s| s.id.as_deref())
                    .map(|id| format!("{}/{id}", sessions.trim_end_matches('/')))
            });
        match &uri {
            Some(uri) => {
                info!(server_id = %self.server_id, bmc = %self.bmc, session = %uri, "Redfish session created")
            }
            None => warn!(server_id = %self.server_id, bmc = %self.bmc,
                "Redfish session created without a Location: it cannot be deleted and is left to the BMC's timeout"),
        }
        Ok((token, uri))
    }

    /// A request that carries no credentials of ours in headers (login).
    async fn send_unauthenticated(&self, req: Req<'_>) -> Result<Reply, BmcError> {
        let mut attempt = 0u32;
        loop {
            match self.send_once(&req, None).await {
                Err(f) if f.kind == FailKind::Connect && attempt < self.retries => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.error),
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE && attempt < self.retries => {
                    tokio::time::sleep(r.retry_after().unwrap_or_else(|| backoff(attempt))).await;
                    attempt += 1;
                }
                Ok(r) if r.status.is_success() => return Ok(r),
                Ok(r) => return Err(self.status_error(&req, &r)),
            }
        }
    }

    /// Deletes our session, if any, so the BMC's session slots are not leaked.
    /// The next authenticated request logs in again.
    pub async fn close(&self) {
        let taken = {
            let mut st = self.auth.lock().await;
            (st.token.take(), st.session_uri.take())
        };
        if let Some(delete) = self.session_delete(taken) {
            delete.send().await;
        }
    }

    /// What it takes to DELETE a session, detached from `self` so that it can
    /// also run after the client is gone (see `Drop`).
    fn session_delete(&self, taken: (Option<Secret>, Option<String>)) -> Option<SessionDelete> {
        let (Some(token), Some(uri)) = taken else {
            return None;
        };
        Some(SessionDelete {
            http: self.http.clone(),
            url: self.url(&uri),
            uri,
            token,
            server_id: self.server_id.clone(),
            bmc: self.bmc.clone(),
        })
    }
}

impl Drop for Client {
    /// A client dropped with a session open (an enrolment refused after the
    /// login, a driver replaced without `close`) still deletes it, when a
    /// tokio runtime is there to send the DELETE (best effort).
    fn drop(&mut self) {
        let st = self.auth.get_mut();
        let taken = (st.token.take(), st.session_uri.take());
        let Some(delete) = self.session_delete(taken) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(delete.send());
            }
            Err(_) => warn!(server_id = %self.server_id, bmc = %self.bmc, session = %delete.uri,
                "dropped outside a runtime: our session is left to the BMC's timeout"),
        }
    }
}

/// A DELETE of our session, ready to send.
struct SessionDelete {
    http: reqwest::Client,
    url: String,
    uri: String,
    token: Secret,
    server_id: String,
    bmc: String,
}

impl SessionDelete {
    async fn send(self) {
        let SessionDelete {
            http,
            url,
            uri,
            token,
            server_id,
            bmc,
        } = self;
        let Ok(mut v) = HeaderValue::from_str(token.expose()) else {
            return;
        };
        v.set_sensitive(true);
        match http.delete(url).header("X-Auth-Token", v).send().await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {
                info!(server_id = %server_id, bmc = %bmc, session = %uri, "Redfish session deleted")
            }
            Ok(r) => {
                warn!(server_id = %server_id, bmc = %bmc, session = %uri,
                    status = r.status().as_u16(), "the BMC refused to delete our session")
            }
            Err(e) => {
                warn!(server_id = %server_id, bmc = %bmc, session = %uri,
                    error = %root_cause(&e), "could not delete our session")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    /// The connection was never made: the request did not reach the BMC.
    Connect,
    /// The request may have reached the BMC.
    AfterSend,
    Timeout,
    Tls,
}

struct Fail {
    kind: FailKind,
    error: BmcError,
}

fn backoff(attempt: u32) -> Duration {
    let d = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(8));
    let d = d.min(MAX_BACKOFF);
    // Up to 25 % jitter so several agents do not retry in step.
    let jitter = rand::random::<f64>() * 0.25;
    d.mul_f64(1.0 + jitter)
}

/// The innermost error message, which says what actually happened.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        cur = err.source();
    }
    // Some layers flatten the rustls error into a message (an io::Error's
    // source() skips its payload): recognise rustls's own wording too.
    let text = root_cause(e);
    ["certificate", "handshake", "tls", "TLS", "alert"]
        .iter()
        .any(|w| text.contains(w))
}

/// A short, printable excerpt of a non-JSON error body.
fn body_snippet(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?.trim();
    if s.is_empty() {
        return None;
    }
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    Some(out)
}

/// A URL fit for logs and errors: any `user:password@` part is removed.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("http://u:hunter2@10.0.0.1/img.iso"),
            "http://10.0.0.1/img.iso"
        );
        assert_eq!(
            redact_url("http://10.0.0.1/img.iso"),
            "http://10.0.0.1/img.iso"
        );
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(0) < Duration::from_millis(400));
        assert!(backoff(10) <= MAX_BACKOFF.mul_f64(1.25));
    }
}
