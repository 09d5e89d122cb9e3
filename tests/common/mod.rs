//! Test harness: starts the real `rack-agent` binary on a loopback port and
//! talks to it with tonic and with the real `rackctl` binary.
#![allow(dead_code)]

pub mod pki;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use tonic::transport::Channel;
use tonic::Request;

pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
}

/// Writes `body` (a config without `listen`/`state_dir`) into `dir` and
/// starts the daemon on it; returns once it is ready.
pub fn start_daemon(dir: &Path, body: &str) -> Daemon {
    spawn_daemon(dir, body, &[], Until::Ready)
}

/// When `spawn_daemon` returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The gRPC port is bound (the store may not be open yet).
    Listening,
    /// The store is open and recovery has run.
    Ready,
}

pub fn spawn_daemon(dir: &Path, body: &str, env: &[(&str, &str)], until: Until) -> Daemon {
    let config = dir.join("rack-agent.toml");
    let api = if body.contains("[api") {
        ""
    } else {
        "[api]\ninsecure_plaintext = true\n"
    };
    // Top-level keys of `body` go before any table.
    let split = body.find("\n[").map(|i| i + 1).unwrap_or(0);
    let split = if body.starts_with('[') { 0 } else { split };
    let (top, tables) = body.split_at(split);
    // The gRPC address, unless the body gives its own (a `listen` in a
    // table, such as [metrics], is not that one).
    let listen = if top.contains("listen =") {
        String::new()
    } else {
        "listen = \"127.0.0.1:0\"\n".to_string()
    };
    let text = format!(
        "{listen}state_dir = \"{}\"\ncredentials_dir = \"{}\"\n{top}\n{api}\n{tables}",
        dir.join("state").display(),
        dir.join("credentials").display()
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rack-agent"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start rack-agent");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut addr: Option<SocketAddr> = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" listening ") {
                addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(|a| a.parse().unwrap());
                if until == Until::Listening {
                    let _ = tx.send(addr.unwrap());
                }
            }
            // Ready: the store is open and recovery has run.
            if line.contains(" ready ") && until == Until::Ready {
                if let Some(a) = addr {
                    let _ = tx.send(a);
                }
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "rack-agent was not ready within 30 s; its log:\n{}",
                log.lock().unwrap()
            );
        }
    };
    Daemon {
        child: Some(child),
        addr,
        dir: dir.to_path_buf(),
        log,
    }
}

impl Daemon {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> RackAgentClient<Channel> {
        RackAgentClient::connect(self.endpoint()).await.unwrap()
    }

    /// Runs rackctl against this daemon as an admin (unless `args` say otherwise).
    pub fn rackctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rackctl"))
            .arg("--endpoint")
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("cannot run rackctl")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The `addr=` of the first log line containing `marker`, once it appears.
    pub fn logged_addr(&self, marker: &str, limit: Duration) -> SocketAddr {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(a) = self
                .log()
                .lines()
                .find(|l| l.contains(marker))
                .and_then(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse().ok())
                })
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no {marker:?} line in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: no chance to clean up, like a crash or a power loss of the host.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits; returns the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.pid()?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        self.wait_exit(limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A request with the caller metadata of an admin.
pub fn admin<T>(msg: T) -> Request<T> {
    as_caller(msg, "ops", "admin", "ops")
}

pub fn as_caller<T>(msg: T, id: &str, roles: &str, project: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-rackagent-caller", id.parse().unwrap());
    r.metadata_mut()
        .insert("x-rackagent-roles", roles.parse().unwrap());
    r.metadata_mut()
        .insert("x-rackagent-project", project.parse().unwrap());
    r
}

/// A HARD reboot of `server` with no request id.
pub fn hard_reboot(server: &str) -> pb::RebootRequest {
    pb::RebootRequest {
        server_id: server.into(),
        r#type: pb::RebootType::Hard as i32,
        request_id: String::new(),
    }
}

/// Writes a password file the daemon accepts (mode 0600).
pub fn write_secret(dir: &Path, name: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let path = creds.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `[[servers]]` entries for `n` servers named `prefix-NN`.
pub fn inventory(prefix: &str, n: usize, project: &str) -> String {
    let mut s = String::new();
    for i in 1..=n {
        s.push_str(&format!(
            "[[servers]]\nid = \"{prefix}-{i:02}\"\nproject = \"{project}\"\nprotocol = \"ipmi\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword_file = \"bmc.pass\"\n\n",
            9100 + i
        ));
    }
    s
}

/// Polls an action until it ends.
pub async fn wait_action(
    client: &mut RackAgentClient<Channel>,
    id: &str,
    limit: Duration,
) -> pb::Action {
    let deadline = Instant::now() + limit;
    loop {
        let a = client
            .get_action(admin(pb::GetActionRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner();
        let s = pb::ActionState::try_from(a.state).unwrap();
        if matches!(
            s,
            pb::ActionState::Succeeded | pb::ActionState::Failed | pb::ActionState::Superseded
        ) {
            return a;
        }
        assert!(Instant::now() < deadline, "action {id} did not end: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `cond` holds for the server, or panics after `limit`.
pub async fn wait_server(
    client: &mut RackAgentClient<Channel>,
    id: &str,
    limit: Duration,
    cond: impl Fn(&pb::Server) -> bool,
) -> pb::Server {
    let deadline = Instant::now() + limit;
    loop {
        let s = client
            .get_server(admin(pb::GetServerRequest {
                id: id.into(),
                refresh_identity: false,
            }))
            .await
            .unwrap()
            .into_inner();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "server {id} never reached the state: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of a plain-HTTP GET (the metrics endpoint).
pub fn http_body(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The first event on a power watch that reports `power`; fails the test
/// if none comes within `limit` or the stream ends.
pub async fn next_power_event(
    stream: &mut tonic::Streaming<pb::ServerEvent>,
    power: pb::PowerState,
    limit: Duration,
) -> pb::ServerEvent {
    tokio::time::timeout(limit, async {
        while let Some(ev) = stream.message().await.expect("the watch failed") {
            if ev.power_state == power as i32 {
                return ev;
            }
        }
        panic!("the watch ended before a {power:?} event");
    })
    .await
    .unwrap_or_else(|_| panic!("no {power:?} event within {limit:?}"))
}

/// Every entry of a server's BMC event log (`ListBmcEvents`, limit 1,000).
pub async fn bmc_log(c: &mut RackAgentClient<Channel>, server: &str) -> Vec<pb::BmcEvent> {
    c.list_bmc_events(admin(pb::ListBmcEventsRequest {
        server_id: server.into(),
        since: None,
        limit: 1000,
    }))
    .await
    .unwrap()
    .into_inner()
    .events
}
