//! The daemon under test: the release `rack-agent` binary, started with a
//! config of the bench's own on a loopback port (plaintext, callers named by
//! metadata, as the tests do), its log written to a file, its process read
//! from /proc.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rack_agent::proto::rack_agent_client::RackAgentClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::reaper;
use crate::Ctx;

pub const BMC_USER: &str = "admin";
pub const BMC_PASSWORD: &str = "password";

/// Names every call as an admin of project "ops" (plaintext mode).
#[derive(Clone, Copy)]
pub struct Admin;

impl tonic::service::Interceptor for Admin {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        let m = r.metadata_mut();
        m.insert("x-rackagent-caller", MetadataValue::from_static("bench"));
        m.insert("x-rackagent-roles", MetadataValue::from_static("admin"));
        m.insert("x-rackagent-project", MetadataValue::from_static("ops"));
        Ok(r)
    }
}

pub type Client = RackAgentClient<InterceptedService<Channel, Admin>>;

/// A new HTTP/2 connection (Nagle off, as tonic's default).
pub async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to the daemon at {addr}: {e}"))
}

pub fn client(ch: Channel) -> Client {
    RackAgentClient::with_interceptor(ch, Admin).max_decoding_message_size(64 << 20)
}

/// `n` clients, each on its own connection.
pub async fn clients(addr: SocketAddr, n: usize) -> Result<Vec<Client>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client(connect(addr).await?));
    }
    Ok(out)
}

/// One `[[servers]]` entry.
pub fn server_entry(id: &str, protocol: &str, port: u16, options: &str) -> String {
    let options = if options.is_empty() {
        String::new()
    } else {
        format!("options = {{ {options} }}\n")
    };
    format!(
        "[[servers]]\nid = \"{id}\"\nproject = \"ops\"\nprotocol = \"{protocol}\"\naddress = \"127.0.0.1\"\nport = {port}\nusername = \"{BMC_USER}\"\npassword_file = \"bmc.pass\"\n{options}\n"
    )
}

/// Writes DIR/rack-agent.toml (listener on a free loopback port, plaintext,
/// state and credentials under DIR, a metrics listener) with `tables` (e.g.
/// `[timeouts]`, `[sync]`, `[fake_bmc]`) and `servers` ([[servers]] entries),
/// and the BMC password file.
pub fn write_config(dir: &Path, tables: &str, servers: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| {
        format!(
            "cannot write the daemon's config under {}: {e}",
            dir.display()
        )
    };
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).map_err(io)?;
    let pass = creds.join("bmc.pass");
    std::fs::write(&pass, format!("{BMC_PASSWORD}\n")).map_err(io)?;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\ncredentials_dir = \"{}\"\nlog_level = \"info\"\n\n[api]\ninsecure_plaintext = true\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n{tables}\n\n{servers}",
        dir.join("state").display(),
        creds.display()
    );
    let path = dir.join("rack-agent.toml");
    std::fs::write(&path, text).map_err(io)?;
    Ok(path)
}

pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    log: PathBuf,
    /// From spawn to the " listening " and " ready " log lines.
    pub listening_after: Duration,
    pub ready_after: Duration,
    ready_at: Instant,
}

fn addr_in(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
}

/// Starts `rack-agent --config DIR/rack-agent.toml run` in a process group of
/// its own and waits (up to `limit`) until it logs " ready ": the store is
/// open, recovery has run, health is SERVING.
pub fn start(ctx: &Ctx, dir: &Path, limit: Duration) -> Result<Daemon, String> {
    let log = dir.join("daemon.log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    writeln!(f, "=== bench: starting rack-agent ===").map_err(|e| e.to_string())?;
    let offset = f.metadata().map(|m| m.len()).unwrap_or(0);
    let t0 = Instant::now();
    let child = Command::new(&ctx.agent)
        .arg("--config")
        .arg(dir.join("rack-agent.toml"))
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(f))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ctx.agent.display()))?;
    let pid = child.id();
    // Its config path names this run: a recycled PID is never taken for it.
    ctx.reaper
        .process(pid, &dir.join("rack-agent.toml").display().to_string());
    let mut d = Daemon {
        child: Some(child),
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics: None,
        log: log.clone(),
        listening_after: Duration::ZERO,
        ready_after: Duration::ZERO,
        ready_at: Instant::now(),
    };
    let mut file = std::fs::File::open(&log).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?;
    let mut pending = String::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        pending.push_str(&String::from_utf8_lossy(&buf));
        while let Some(nl) = pending.find('\n') {
            let line: String = pending.drain(..=nl).collect();
            if line.contains(" listening ") {
                if let Some(a) = addr_in(&line) {
                    d.addr = a;
                    d.listening_after = t0.elapsed();
                }
            } else if line.contains(" metrics at ") {
                d.metrics = addr_in(&line);
            } else if line.contains(" ready ") {
                d.ready_after = t0.elapsed();
                d.ready_at = Instant::now();
                if d.addr.port() == 0 {
                    return Err(format!(
                        "rack-agent was ready but logged no listening address; log: {}",
                        log.display()
                    ));
                }
                return Ok(d);
            }
        }
        if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            d.child = None;
            return Err(format!(
                "rack-agent exited ({st}) before it was ready; the end of its log:\n{}",
                d.log_tail(20)
            ));
        }
        if t0.elapsed() > limit {
            let tail = d.log_tail(20);
            return Err(format!(
                "rack-agent was not ready within {limit:?}; the end of its log:\n{tail}"
            ));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

impl Daemon {
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM and wait for the exit (SIGKILL after `limit`).
    pub fn stop(&mut self, limit: Duration) -> Result<(), String> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        // The daemon logs " ready " (and tells systemd READY=1) before its
        // SIGTERM handler exists: that is installed when `run` first polls
        // its shutdown future, after the line. A SIGTERM in between kills it
        // outright (seen: 5 of 15 starts with 10,000 servers). Give it a
        // moment so that a stop measures a shutdown, not that window.
        let settle = Duration::from_millis(300);
        if let Some(rest) = settle.checked_sub(self.ready_at.elapsed()) {
            std::thread::sleep(rest);
        }
        reaper::signal(self.pid, "TERM");
        let t = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => return Err(format!("rack-agent exited with {st} on SIGTERM")),
                Ok(None) if t.elapsed() > limit => {
                    reaper::signal_group(self.pid, "KILL");
                    let _ = c.wait();
                    return Err(format!(
                        "rack-agent did not stop within {limit:?} of SIGTERM; killed"
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// User + system CPU seconds the daemon has used.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid)
    }

    /// Resident set (VmRSS) and its peak (VmHWM), MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    pub async fn metric(&self, name: &str) -> Result<f64, String> {
        let addr = self.metrics.ok_or("the daemon logged no metrics address")?;
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {name} in /metrics"))
    }

    /// Waits until no action is in flight (the load of one measurement must
    /// not spill into the next).
    pub async fn drain(&self, limit: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            if self.metric("rack_agent_in_flight_actions").await? == 0.0 {
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(format!(
                    "actions still in flight {limit:?} after the load stopped"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(30));
    }
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = text.rsplit_once(") ") else {
        return f64::NAN;
    };
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(14) + ticks(15)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}
