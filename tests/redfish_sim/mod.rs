//! rfsim (hil-tests/redfish-sim) as the HIL tests use it: a Redfish BMC of
//! our own whose systems are QEMU VMs, started by `start.sh` on a free
//! loopback port in a temp dir and stopped (with every QEMU it started) by
//! `stop.sh` when the guard drops. Knobs and counters go through the
//! simulator's `/control` endpoint and Redfish through plain HTTPS: this
//! harness runs no Python itself and shares no code with the driver.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Endpoint, Protocol, Secret};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// What the systems run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// An OS-less SeaBIOS VM: it ignores the ACPI power button.
    None,
    /// The bench guest (hil-tests/guest): shuts down on the power button and
    /// prints `rack-guest: boot` / `rack-guest: ready` on its console.
    Acpi,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub systems: u16,
    pub guest: Guest,
    /// BMC knobs applied at start (a JSON object).
    pub knobs: Value,
    /// System knobs applied to every system at start (a JSON object).
    pub system_knobs: Value,
    pub power_on: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            systems: 1,
            guest: Guest::None,
            knobs: json!({}),
            system_knobs: json!({}),
            power_on: false,
        }
    }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hil-tests/redfish-sim")
        .join(name)
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A running simulator; stopped (with its VMs, by PID) on drop.
pub struct Sim {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
    pub systems: Vec<String>,
    http: reqwest::Client,
    opts: SimOptions,
}

impl Sim {
    pub fn start(opts: SimOptions) -> Sim {
        for tool in ["qemu-system-x86_64", "python3", "openssl", "curl"] {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool} >/dev/null"))
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                found,
                "rfsim needs {tool}: run hil-tests/redfish-sim/setup.sh (as root) first"
            );
        }
        let mut last = String::new();
        // A port can be taken between the check and the simulator's bind: retry.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("hil-rfsim-")
                .tempdir()
                .expect("temp dir");
            let port = free_port();
            match run(&mut start_command(dir.path(), port, &opts)) {
                Ok(_) => {
                    let password = std::fs::read_to_string(dir.path().join("password"))
                        .expect("start.sh wrote no password file");
                    let cert = std::fs::read(dir.path().join("cert.pem")).expect("cert.pem");
                    let http = reqwest::Client::builder()
                        .tls_built_in_root_certs(false)
                        .add_root_certificate(
                            reqwest::Certificate::from_pem(&cert).expect("cert.pem is PEM"),
                        )
                        .timeout(Duration::from_secs(20))
                        .build()
                        .expect("HTTP client");
                    return Sim {
                        dir,
                        port,
                        password,
                        systems: (1..=opts.systems).map(|i| format!("sys{i}")).collect(),
                        http,
                        opts,
                    };
                }
                Err(e) => {
                    let _ = run(Command::new("bash").arg(script("stop.sh")).arg(dir.path()));
                    last = e;
                }
            }
        }
        panic!("rfsim did not start (hil-tests/redfish-sim/start.sh): {last}");
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn system_path(&self, id: &str) -> String {
        format!("/redfish/v1/Systems/{id}")
    }

    /// An HTTPS client that trusts the simulator's certificate and sends no
    /// credentials of its own.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A driver endpoint for one system, trusting the certificate.
    pub fn endpoint(&self, system: &str, extra: &[(&str, &str)]) -> Endpoint {
        let mut options: BTreeMap<String, String> = BTreeMap::new();
        options.insert("system_id".into(), system.into());
        options.insert("ca_file".into(), self.cert().display().to_string());
        for (k, v) in extra {
            options.insert(k.to_string(), v.to_string());
        }
        options.retain(|_, v| !v.is_empty());
        Endpoint {
            protocol: Protocol::Redfish,
            address: "127.0.0.1".into(),
            port: self.port,
            username: "admin".into(),
            password: Secret::new(self.password.clone()),
            options,
        }
    }

    pub fn driver(&self, system: &str, extra: &[(&str, &str)]) -> RedfishBmc {
        RedfishBmc::connect(system, &self.endpoint(system, extra)).expect("driver connect")
    }

    // -- the control endpoint ------------------------------------------------

    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("control {method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "control {method} {path} {body:?}: HTTP {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// Sets BMC knobs; returns them all.
    pub async fn set_bmc_knobs(&self, knobs: Value) -> Value {
        self.control(Method::POST, "/control/knobs", Some(knobs))
            .await
    }

    /// Sets a system's knobs; returns them all.
    pub async fn set_knobs(&self, system: &str, knobs: Value) -> Value {
        self.control(
            Method::POST,
            &format!("/control/systems/{system}/knobs"),
            Some(knobs),
        )
        .await
    }

    pub async fn counters(&self) -> Value {
        self.control(Method::GET, "/control/counters", None).await
    }

    pub async fn reset_counters(&self) {
        self.control(Method::DELETE, "/control/counters", None)
            .await;
    }

    /// The simulator's own view of a system: power, qemu_pid, boots,
    /// console_marks, pending, events...
    pub async fn state(&self, system: &str) -> Value {
        self.control(Method::GET, &format!("/control/systems/{system}"), None)
            .await
    }

    /// Everything the system's serial console printed, across power cycles.
    pub fn console(&self, system: &str) -> String {
        let raw =
            std::fs::read(self.dir.path().join(system).join("console.log")).unwrap_or_default();
        String::from_utf8_lossy(&raw).to_string()
    }

    /// The simulator's log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rfsim.log")).unwrap_or_default()
    }

    // -- Redfish as an operator would use it (basic auth) ----------------------

    pub fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth("admin", Some(&self.password))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.authed(Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// GET `path` with curl, as an operator would check (basic auth, the
    /// simulator's certificate), parsed. The credentials go to curl on its
    /// stdin (`-K -`), so they are in no command line and no failure message.
    pub fn curl(&self, path: &str) -> Value {
        use std::io::Write;
        let url = self.url(path);
        let mut child = Command::new("curl")
            .args(["-sS", "-g", "--fail-with-body", "-K", "-", "--cacert"])
            .arg(self.cert())
            .arg(&url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        child
            .stdin
            .take()
            .expect("curl stdin")
            .write_all(format!("user = \"admin:{}\"\n", self.password).as_bytes())
            .expect("curl config");
        let out = child.wait_with_output().expect("curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {url}: {}: {}{body}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("curl {url}: not JSON ({e}): {body}"))
    }

    /// Every member of a collection as curl reads it, following
    /// `Members@odata.nextLink`, members given only as links fetched.
    pub fn curl_members(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut page = self.curl(path);
        loop {
            for m in page["Members"].as_array().cloned().unwrap_or_default() {
                let only_link = m.as_object().is_some_and(|o| o.len() == 1);
                match m["@odata.id"].as_str() {
                    Some(p) if only_link => out.push(self.curl(p)),
                    _ => out.push(m),
                }
            }
            match page["Members@odata.nextLink"].as_str() {
                Some(next) => page = self.curl(next),
                None => return out,
            }
        }
    }

    pub async fn system(&self, id: &str) -> Value {
        self.get_json(&self.system_path(id)).await
    }

    pub async fn power_state(&self, id: &str) -> String {
        self.system(id).await["PowerState"]
            .as_str()
            .unwrap_or("<none>")
            .to_string()
    }

    /// POSTs a Reset of `reset_type`; returns the answer as it came.
    pub async fn reset(&self, id: &str, reset_type: &str) -> Response {
        let path = format!("{}/Actions/ComputerSystem.Reset", self.system_path(id));
        self.authed(Method::POST, &path)
            .json(&json!({ "ResetType": reset_type }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} {reset_type}: {e}"))
    }

    /// POSTs a Reset and expects `want` back.
    pub async fn reset_expect(&self, id: &str, reset_type: &str, want: u16) -> Response {
        let resp = self.reset(id, reset_type).await;
        if resp.status().as_u16() != want {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            panic!("Reset {reset_type} of {id}: HTTP {status}, expected {want}: {text}");
        }
        resp
    }

    /// Polls the system resource until `cond` holds; returns it and the time taken.
    pub async fn wait_system(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let sys = self.system(id).await;
            if cond(&sys) {
                return (sys, started.elapsed());
            }
            assert!(
                started.elapsed() < timeout,
                "system {id}: {what} not seen within {timeout:?}; last: PowerState {} \
                 LastResetTime {} BootProgress {}\nsimulator log:\n{}",
                sys["PowerState"],
                sys["LastResetTime"],
                sys["BootProgress"],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_power(&self, id: &str, want: &str, timeout: Duration) -> Duration {
        self.wait_system(id, &format!("PowerState {want}"), timeout, |s| {
            s["PowerState"] == want
        })
        .await
        .1
    }

    /// Waits until the simulator recorded `n` boots of the system; returns its state.
    pub async fn wait_boots(&self, id: &str, n: usize, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let state = self.state(id).await;
            if state["boots"].as_array().map_or(0, Vec::len) >= n {
                return state;
            }
            assert!(
                started.elapsed() < timeout,
                "system {id}: {n} boots not seen within {timeout:?}: {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the console printed `needle` at least `n` times.
    pub async fn wait_console(&self, id: &str, needle: &str, n: usize, timeout: Duration) {
        let started = Instant::now();
        loop {
            let seen = self.console(id).matches(needle).count();
            if seen >= n {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "system {id}: {needle:?} printed {seen} times, expected {n}, within {timeout:?}; \
                 console:\n{}",
                self.console(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `start.sh DIR PORT` with the options' flags.
fn start_command(dir: &Path, port: u16, opts: &SimOptions) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script("start.sh"))
        .arg(dir)
        .arg(port.to_string())
        .arg("--systems")
        .arg(opts.systems.to_string())
        .arg("--guest")
        .arg(match opts.guest {
            Guest::None => "none",
            Guest::Acpi => "acpi",
        })
        .arg("--knobs")
        .arg(opts.knobs.to_string())
        .arg("--system-knobs")
        .arg(opts.system_knobs.to_string());
    if opts.power_on {
        cmd.arg("--power-on");
    }
    cmd
}

impl Sim {
    /// The simulator's PID (from `rfsim.pid`).
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("rfsim.pid"))
            .expect("rfsim.pid")
            .trim()
            .parse()
            .expect("rfsim.pid holds a PID")
    }

    /// SIGKILL, like a BMC that crashes: no answer is finished, nothing is
    /// cleaned up. Its VMs keep running (see `stop_orphan_vms`); its log and
    /// consoles stay in `dir`.
    pub fn kill(&self) {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let started = Instant::now();
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| !st.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')))
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "rfsim {pid} did not die"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the VMs a killed simulator left running (by the PIDs it wrote).
    pub fn stop_orphan_vms(&self) {
        for system in &self.systems {
            let Ok(pid) = std::fs::read_to_string(self.dir.path().join(system).join("qemu.pid"))
            else {
                continue;
            };
            let pid = pid.trim();
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu"));
            if ours {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }

    /// Starts the simulator again on the same port and directory, with the
    /// same password and certificate: the BMC comes back. It remembers
    /// nothing (power, sessions, tasks, counters); `power_on` powers its
    /// systems on, as a host that kept running would read.
    pub fn restart(&self, power_on: bool) {
        let opts = SimOptions {
            power_on,
            ..self.opts.clone()
        };
        // A killed simulator may linger as a zombie, which start.sh would
        // take for a running one.
        let _ = std::fs::remove_file(self.dir.path().join("rfsim.pid"));
        let mut cmd = start_command(self.dir.path(), self.port, &opts);
        cmd.env("RFSIM_PASSWORD", &self.password);
        run(&mut cmd).unwrap_or_else(|e| panic!("restarting rfsim: {e}"));
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("bash")
            .arg(script("stop.sh"))
            .arg(self.dir.path()))
        {
            eprintln!("stopping rfsim: {e}");
        }
    }
}

/// The first `@Message.ExtendedInfo` MessageId of a Redfish error body.
pub fn message_id(body: &Value) -> String {
    body["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        .as_str()
        .unwrap_or("<no MessageId>")
        .to_string()
}

/// How often `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
