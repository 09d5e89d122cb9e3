//! The daemon as a service: systemd's notify protocol (READY, WATCHDOG,
//! STATUS, STOPPING), health and reflection, metrics, and secrets that never
//! leak.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use rack_agent::proto as pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const FAKE: &str = "[fake_bmc]\nenabled = true\nlatency = \"20ms\"\n\n[sync]\ninterval = \"300ms\"\njitter = \"50ms\"\n\n[timeouts]\nconfirm_poll = \"50ms\"\n\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_protocol_ready_watchdog_status_and_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = free_port();
    let body = format!(
        "listen = \"127.0.0.1:{port}\"\n[fake_bmc]\nenabled = true\nlatency = \"2s\"\n\n[timeouts]\nshutdown_grace = \"1s\"\nconfirm_poll = \"100ms\"\n\n{}",
        inventory("n", 2, "p1")
    );
    let mut d = spawn_daemon(
        dir.path(),
        &body,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        Until::Listening,
    );
    let mut buf = [0u8; 4096];
    let mut recv = |limit: Duration| -> Option<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    };
    // READY=1 comes once the port accepts connections (and the store is open).
    let mut status = Vec::new();
    loop {
        let msg = recv(Duration::from_secs(30)).expect("no READY=1 within 30 s");
        if msg.lines().any(|l| l == "READY=1") {
            TcpStream::connect(("127.0.0.1", port)).expect("READY=1 before the port accepts");
            status.extend(
                msg.lines()
                    .filter(|l| l.starts_with("STATUS="))
                    .map(String::from),
            );
            break;
        }
        assert!(
            !msg.contains("WATCHDOG=1"),
            "watchdog ping before READY: {msg}"
        );
    }
    assert!(
        status.iter().any(|s| s.contains("2 servers")),
        "STATUS line with the server count: {status:?}"
    );
    // WATCHDOG=1 at half the configured 400 ms.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if let Some(m) = recv(Duration::from_millis(100)) {
            pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!(
        (5..=15).contains(&pings),
        "{pings} watchdog pings in 2 s, want ~10"
    );

    // An action in flight (each fake BMC command takes 2 s), then SIGTERM.
    let mut c = d.client().await;
    let a = c
        .reboot(admin(pb::RebootRequest {
            server_id: "n-01".into(),
            r#type: pb::RebootType::Hard as i32,
            request_id: "stop-test".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = d.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut stopping = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !stopping {
        if let Some(m) = recv(Duration::from_millis(200)) {
            stopping = m.lines().any(|l| l == "STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let exit = d
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit within the stop timeout");
    assert!(exit.success(), "exit status {exit}");

    // The in-flight action was recorded, and the next start finishes it.
    let d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    let a = wait_action(&mut c, &a.id, Duration::from_secs(60)).await;
    assert_eq!(a.state, pb::ActionState::Succeeded as i32, "{a:#?}");
    assert!(a
        .events
        .iter()
        .any(|e| e.step == "recovery" || e.step == "hard_reset"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_the_store_is_open_and_reflection_lists_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // Another process holds the state database: the agent must wait for it.
    drop(rack_agent::store::Store::open(&dir.path().join("state")).unwrap());
    let holder = rusqlite::Connection::open(dir.path().join("state/rack-agent.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let d = spawn_daemon(dir.path(), FAKE, &[], Until::Listening);
    let channel = tonic::transport::Channel::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let check = |svc: &str| HealthCheckRequest {
        service: svc.into(),
    };
    let st = health.check(check("")).await.unwrap().into_inner().status;
    assert_eq!(st, ServingStatus::NotServing as i32);
    let st = health
        .check(check("rackagent.v1.RackAgent"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(st, ServingStatus::NotServing as i32);
    let mut c = d.client().await;
    let err = c
        .list_servers(admin(pb::ListServersRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("starting"), "{}", err.message());

    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = health.check(check("")).await.unwrap().into_inner().status;
        if st == ServingStatus::Serving as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.list_servers(admin(pb::ListServersRequest::default()))
        .await
        .unwrap();

    // Server reflection, as grpcurl uses it.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"rackagent.v1.RackAgent".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Undoes HTTP/1.1 chunked transfer encoding.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_actions() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let body = format!(
        "{FAKE}[metrics]\nlisten = \"127.0.0.1:0\"\n\n{}",
        inventory("n", 2, "p1")
    );
    let d = start_daemon(dir.path(), &body);
    let maddr = d.logged_addr("metrics at /metrics", Duration::from_secs(5));
    let mut c = d.client().await;
    let a = c
        .reboot(admin(hard_reboot("n-01")))
        .await
        .unwrap()
        .into_inner();
    wait_action(&mut c, &a.id, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // a sync pass or two

    let (head, body) = http_get(maddr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("not Prometheus text");
    let find = |name: &'static str| scrape.samples.iter().filter(move |s| s.metric == name);
    let done: Vec<_> = find("rack_agent_actions_total")
        .filter(|s| s.labels.get("kind") == Some("reboot_hard"))
        .collect();
    assert_eq!(done.len(), 1, "{text}");
    assert_eq!(done[0].labels.get("outcome"), Some("succeeded"));
    assert_eq!(done[0].labels.get("protocol"), Some("ipmi"));
    // The OpenMetrics `# TYPE` line names the family without `_total`, which
    // this parser then reads as untyped: the count is what matters.
    let count = match done[0].value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("not a counter: {other:?}"),
    };
    assert_eq!(count, 1.0);
    for family in [
        "rack_agent_poll_duration_seconds_count",
        "rack_agent_unreachable_bmcs",
        "rack_agent_in_flight_actions",
        "rack_agent_action_duration_seconds_count",
    ] {
        assert!(find(family).next().is_some(), "{family} missing:\n{text}");
    }
    let (head, _) = http_get(maddr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_answers_errors_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let file_secret = "file-SECRET-5678";
    let inline_secret = "inline-SECRET-1234";
    write_secret(dir.path(), "bmc.pass", file_secret);
    // A password file others may read is refused, with a clear reason.
    write_secret(dir.path(), "open.pass", "open-SECRET-9");
    {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join("credentials/open.pass");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let body = format!(
        "{FAKE}{}[[servers]]\nid = \"open\"\nproject = \"p1\"\nprotocol = \"ipmi\"\naddress = \"127.0.0.1\"\nusername = \"admin\"\npassword_file = \"open.pass\"\n",
        inventory("n", 1, "p1")
    );
    let mut d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    let open = wait_server(&mut c, "open", Duration::from_secs(10), |s| {
        !s.bmc_error.is_empty()
    })
    .await;
    assert!(
        open.bmc_error.contains("readable by others"),
        "{}",
        open.bmc_error
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rackctl"))
        .args([
            "--endpoint",
            &d.endpoint(),
            "enroll",
            "inl",
            "--project",
            "p1",
            "--protocol",
            "redfish",
            "--address",
            "127.0.0.1",
            "--username",
            "root",
            "--password-stdin",
            "-o",
            "json",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(inline_secret.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = String::from_utf8_lossy(&out.stdout).into_owned();
    for args in [
        vec!["-o", "json", "servers"],
        vec!["show", "inl"],
        vec!["-o", "json", "show", "n-01"],
        vec!["reboot", "inl", "--hard", "--wait"],
        vec!["power", "open", "--refresh"],
        vec![
            "enroll",
            "bad",
            "--project",
            "p1",
            "--protocol",
            "ipmi",
            "--address",
            "x",
            "--username",
            "u",
            "--password-file",
            "../bmc.pass",
        ],
    ] {
        let o = d.rackctl(&args);
        seen.push_str(&String::from_utf8_lossy(&o.stdout));
        seen.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        seen.contains("credential_source") || seen.contains("credential="),
        "{seen}"
    );
    assert!(
        seen.contains("plain file name"),
        "the traversal attempt was refused: {seen}"
    );
    assert!(d
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    seen.push_str(&d.log());

    let mut db = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            db.extend(std::fs::read(&p).unwrap());
        }
    }
    let db = String::from_utf8_lossy(&db);
    for secret in [file_secret, inline_secret, "open-SECRET-9"] {
        assert!(
            !seen.contains(secret),
            "{secret} leaked into logs or answers"
        );
        assert!(!db.contains(secret), "{secret} is in the state database");
    }
    // The inline password lives in a 0600 file of its own.
    use std::os::unix::fs::PermissionsExt;
    let stored = dir.path().join("state/secrets/inl.pass");
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), inline_secret);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A SIGTERM that comes while the daemon is still starting (here, while it
/// waits for a database another process holds) is honoured: the daemon
/// stops cleanly (exit 0) instead of dying by the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_start_up_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", "pw");
    let body = format!("[fake_bmc]\nenabled = true\n\n{}", inventory("n", 3, "p1"));
    // Hold the database so that start-up waits (busy timeout) after the
    // listener is up.
    let state = dir.path().join("state");
    let store = rack_agent::store::Store::open(&state).unwrap();
    let conn = rusqlite_hold(&state);
    let mut d = spawn_daemon(dir.path(), &body, &[], Until::Listening);
    let status = d.terminate(Duration::from_secs(30));
    drop(conn);
    drop(store);
    assert!(
        status.is_some_and(|s| s.success()),
        "a SIGTERM during start-up: {status:?}\n{}",
        d.log()
    );
}

/// An open write transaction on the database, as a second process would hold it.
fn rusqlite_hold(state: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(state.join("rack-agent.db")).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE").unwrap();
    c
}
