//! Everything a run starts is written to `RUN_DIR/started` before it can
//! outlive the bench, and stopped at the end: on success, on failure, on
//! Ctrl-C/SIGTERM, and — when the bench itself was killed — by the wrapper's
//! trap (`bench cleanup RUN_DIR`), which reads the same file.
//!
//! Lines: `proc PID NAME` (a process group the bench started; NAME, a path
//! inside this run's directory, is matched against /proc/PID/cmdline so a
//! recycled PID is never signalled) and
//! `ipmi DIR` (ipmi_sim BMCs started by hil-tests/ipmi/start.sh, stopped by
//! its stop.sh).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Reaper {
    file: PathBuf,
    stop_sh: PathBuf,
    lock: Mutex<()>,
}

impl Reaper {
    pub fn new(run_dir: &Path, repo: &Path) -> Reaper {
        Reaper {
            file: run_dir.join("started"),
            stop_sh: repo.join("hil-tests/ipmi/stop.sh"),
            lock: Mutex::new(()),
        }
    }

    fn append(&self, line: &str) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .expect("cannot write the run's list of started processes");
        writeln!(f, "{line}").expect("cannot write the run's list of started processes");
    }

    /// A process started in a group of its own (`process_group(0)`).
    pub fn process(&self, pid: u32, name: &str) {
        self.append(&format!("proc {pid} {name}"));
    }

    /// A directory of BMCs that start.sh is about to start.
    pub fn ipmi_dir(&self, dir: &Path) {
        self.append(&format!("ipmi {}", dir.display()));
    }

    /// Stops everything recorded: first every process group (newest first;
    /// among them the start.sh that may still be starting BMCs), then the
    /// BMCs of every directory. Safe to call more than once.
    pub fn cleanup(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut groups = Vec::new();
        let mut dirs = Vec::new();
        for line in text.lines().rev() {
            if let Some(rest) = line.strip_prefix("proc ") {
                if let Some((pid, name)) = rest.split_once(' ') {
                    if let Ok(pid) = pid.parse::<u32>() {
                        if is_ours(pid, name) {
                            signal_group(pid, "TERM");
                            groups.push((pid, name.to_string()));
                        }
                    }
                }
            } else if let Some(dir) = line.strip_prefix("ipmi ") {
                dirs.push(dir.to_string());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (pid, name) in groups {
            while is_ours(pid, &name) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_ours(pid, &name) {
                signal_group(pid, "KILL");
            }
        }
        for dir in dirs {
            if Path::new(&dir).exists() {
                let _ = std::process::Command::new("bash")
                    .arg(&self.stop_sh)
                    .arg(&dir)
                    .status();
            }
        }
    }
}

/// PID is alive (not a zombie) and runs NAME.
pub fn is_ours(pid: u32, name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true);
    !zombie && String::from_utf8_lossy(&cmdline).contains(name)
}

/// `kill -SIG -- -PID`: the whole process group PID leads.
pub fn signal_group(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stderr(std::process::Stdio::null())
        .status();
}

/// `kill -SIG PID`.
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
}
