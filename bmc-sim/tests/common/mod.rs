//! Starting the simulator for a test and looking at it from outside: the
//! `bmc-sim` binary on free loopback ports it picks itself, its control port
//! over a plain HTTP/1.1 exchange, ipmitool, ipmipower and curl as
//! independent clients. The process is killed when the guard drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";

pub struct Sim {
    child: Child,
    pub dir: tempfile::TempDir,
    pub ready: Value,
    pub ipmi_base: u16,
    pub redfish_base: u16,
    pub control: String,
}

pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run hil-tests/ipmi/setup.sh (as root) first"
    );
}

impl Sim {
    /// Starts `bmc-sim` with IPMI and Redfish on ports it finds, plus `extra` flags.
    pub fn start(count: usize, extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bmc-sim"))
            .args(["--count", &count.to_string()])
            .args(["--ipmi-base", "0", "--redfish-base", "0"])
            .arg("--cert-out")
            .arg(&cert)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bmc-sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bmc-sim did not start ({e}): {line:?}"));
        assert_eq!(ready["ready"], true, "{ready}");
        Sim {
            ipmi_base: ready["ipmi_base"].as_u64().expect("ipmi_base") as u16,
            redfish_base: ready["redfish_base"].as_u64().expect("redfish_base") as u16,
            control: ready["control"].as_str().expect("control").to_string(),
            ready,
            child,
            dir,
        }
    }

    pub fn ipmi_port(&self, i: usize) -> u16 {
        self.ipmi_base + i as u16
    }

    pub fn redfish_port(&self, i: usize) -> u16 {
        self.redfish_base + i as u16
    }

    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// One HTTP/1.1 exchange with the control port; the body as JSON.
    pub fn control(&self, method: &str, path: &str) -> Value {
        let mut s = TcpStream::connect(&self.control).expect("connect to the control port");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("control answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    pub fn bmc(&self, i: usize) -> Value {
        self.control("GET", &format!("/bmcs/{i}"))
    }

    pub fn counter(&self, i: usize, name: &str) -> u64 {
        self.bmc(i)["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    pub fn summary(&self) -> Value {
        self.control("GET", "/summary")
    }

    /// `ipmitool -I lanplus` against BMC `i`: (exit status ok, stdout + stderr).
    pub fn ipmitool_as(
        &self,
        i: usize,
        user: &str,
        password: &str,
        args: &[&str],
    ) -> (bool, String) {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
            .arg(self.ipmi_port(i).to_string())
            .args(["-U", user, "-P", password, "-N", "1", "-R", "1"])
            .args(args)
            .output()
            .expect("run ipmitool");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `ipmitool -I lanplus -C 3` as admin.
    pub fn ipmitool(&self, i: usize, args: &[&str]) -> (bool, String) {
        let mut all = vec!["-C", "3"];
        all.extend_from_slice(args);
        self.ipmitool_as(i, USER, PASSWORD, &all)
    }

    /// `curl` against BMC `i`'s Redfish port, trusting the simulator's
    /// certificate: (HTTP status, headers, body).
    pub fn curl(&self, i: usize, args: &[&str], path: &str) -> (u16, String, String) {
        let headers = self.dir.path().join(format!("h{}", rand_suffix()));
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(self.cert())
            .arg("-D")
            .arg(&headers)
            .args(["-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("https://127.0.0.1:{}{path}", self.redfish_port(i)))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        (code.trim().parse().unwrap_or(0), head, body.to_string())
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
