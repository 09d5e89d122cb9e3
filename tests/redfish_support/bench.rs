//! The sushy-tools emulator as a test peer: installed by `setup.sh`, started
//! by `start.sh` into a temp dir on a free port, stopped by `stop.sh` when the
//! guard drops. Anything that prevents it from running fails the test loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rack_agent::bmc::{Endpoint, Protocol, Secret};

/// The systems `start.sh` configures (fake driver): two Off, two On.
pub const SYSTEMS: [&str; 4] = [
    "27946b59-9e44-4fa7-8e91-f3527a1ef001",
    "27946b59-9e44-4fa7-8e91-f3527a1ef002",
    "27946b59-9e44-4fa7-8e91-f3527a1ef003",
    "27946b59-9e44-4fa7-8e91-f3527a1ef004",
];

static SETUP: Mutex<Option<Result<(), String>>> = Mutex::new(None);

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hil-tests/redfish")
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

/// Runs `setup.sh` once per test process.
fn setup() {
    let mut done = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let result = done
        .get_or_insert_with(|| run(&mut Command::new(scripts().join("setup.sh"))).map(|_| ()))
        .clone();
    if let Err(e) = result {
        panic!("the Redfish bench cannot be installed (hil-tests/redfish/setup.sh): {e}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

pub struct Sushy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
}

impl Sushy {
    /// Starts an emulator of our own; panics with the reason if it cannot.
    pub fn start() -> Sushy {
        setup();
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            match run(Command::new(scripts().join("start.sh"))
                .arg(dir.path())
                .arg(port.to_string()))
            {
                Ok(_) => {
                    let password = std::fs::read_to_string(dir.path().join("password"))
                        .expect("start.sh wrote no password file");
                    return Sushy {
                        dir,
                        port,
                        password,
                    };
                }
                Err(e) => {
                    let _ = run(Command::new(scripts().join("stop.sh")).arg(dir.path()));
                    last = e;
                }
            }
        }
        panic!("sushy-emulator did not start (hil-tests/redfish/start.sh): {last}");
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// An endpoint for one system, with the CA file set, plus `extra` options.
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

    /// GET a path as an operator would, with curl.
    pub fn curl(&self, path: &str) -> serde_json::Value {
        Sushy::curl_with(&self.cert(), &self.password, self.port, path)
    }

    pub fn system(&self, id: &str) -> serde_json::Value {
        self.curl(&format!("/redfish/v1/Systems/{id}"))
    }

    pub fn power_state(&self, id: &str) -> String {
        self.system(id)["PowerState"]
            .as_str()
            .unwrap_or("<none>")
            .to_string()
    }

    /// Polls PowerState (curl) until it is `want`; returns how long it took.
    pub async fn wait_power(&self, id: &str, want: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let id2 = id.to_string();
            let (cert, pw, port) = (self.cert(), self.password.clone(), self.port);
            let now = tokio::task::spawn_blocking(move || {
                let s = Sushy::curl_with(&cert, &pw, port, &format!("/redfish/v1/Systems/{id2}"));
                s["PowerState"].as_str().unwrap_or("<none>").to_string()
            })
            .await
            .unwrap();
            if now == want {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                panic!(
                    "system {id}: PowerState still {now:?} after {timeout:?}, expected {want:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// curl gets the credentials on its stdin (`-K -`): they are in no
    /// command line, and no failure message prints them.
    fn curl_with(cert: &Path, password: &str, port: u16, path: &str) -> serde_json::Value {
        use std::io::Write;
        let mut child = Command::new("curl")
            .args(["-sSf", "-K", "-", "--cacert"])
            .arg(cert)
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("curl {path}: {e}"));
        child
            .stdin
            .take()
            .expect("curl stdin")
            .write_all(format!("user = \"admin:{password}\"\n").as_bytes())
            .expect("curl config");
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("curl {path}: {e}"));
        assert!(
            out.status.success(),
            "curl {path}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("curl {path}: not JSON: {e}"))
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new(scripts().join("stop.sh")).arg(self.dir.path())) {
            eprintln!("stopping sushy-emulator: {e}");
        }
    }
}
