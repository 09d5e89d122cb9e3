//! The IPMI bench (hil-tests/ipmi) as the HIL tests use it: start N ipmi_sim
//! BMCs powering QEMU VMs on free loopback ports in a temp dir, observe the
//! VMs without going through any driver, stop everything by PID on drop.
//! Included by `hil_ipmi_driver.rs`, `hil_ipmi.rs` and `hil_ipmi_guest.rs`
//! with `#[path]`.
//!
//! Boots: every boot of a VM, with or without the guest, passes SeaBIOS, so
//! `"SeaBIOS (version"` on the console counts boots in both modes; with the
//! ACPI guest (`Guest::Acpi`) the guest's own lines (hil-tests/guest/README.md)
//! also say when the OS is up and when it shut down cleanly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rack_agent::bmc::ipmi::IpmiBmc;
use rack_agent::bmc::{Endpoint, Protocol, Secret};

pub const PASSWORD: &str = "hil-s3cret";

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hil-tests/ipmi")
        .join(name)
}

/// What the bench VMs boot (start.sh's `BMC_GUEST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// No OS: SeaBIOS finds nothing to boot and ACPI requests are ignored.
    None,
    /// The bench guest of hil-tests/guest: shuts down cleanly on the ACPI
    /// power button; a slow (TCG) boot of a few seconds.
    Acpi,
}

impl Guest {
    fn env(self) -> &'static str {
        match self {
            Guest::None => "none",
            Guest::Acpi => "acpi",
        }
    }
}

/// The guest's console contract (hil-tests/guest/README.md).
pub const GUEST_BOOT: &str = "rack-guest: boot";
pub const GUEST_READY: &str = "rack-guest: ready";
pub const GUEST_CLEAN_SHUTDOWN: &str = "rack-guest: power button: clean shutdown";

/// The ACPI guest is built (hil-tests/guest/build.sh, run by setup.sh).
pub fn require_guest() {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("hil-tests/guest/qemu-args.sh"))
        .output()
        .expect("run hil-tests/guest/qemu-args.sh");
    assert!(
        out.status.success(),
        "the bench guest is missing ({}): run hil-tests/ipmi/setup.sh (as root) first, \
         or hil-tests/guest/build.sh",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

pub fn require_peers() {
    for tool in ["ipmi_sim", "ipmitool", "qemu-system-x86_64", "python3"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "HIL peer {tool} is not installed: run hil-tests/ipmi/setup.sh (as root) first"
        );
    }
}

/// `n` consecutive ports on 127.0.0.1 that are free right now, for UDP and TCP.
pub fn free_ports(n: u16) -> u16 {
    // Tests run as threads of one process (cargo test) or as processes
    // (nextest): mix the PID, the clock and a per-process counter.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let seed = (std::process::id() as u64) << 32 ^ nanos ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 20000 + ((x >> 33) % 30000) as u16;
        let held: Vec<_> = (0..n)
            .map_while(|i| {
                // Free on both loopbacks, so an IPv6 bench can use it too,
                // and as a TCP port: each BMC's emulator console listens on
                // TCP at its UDP port's number (start.sh refuses a taken one).
                let v4 = UdpSocket::bind(("127.0.0.1", base + i)).ok()?;
                let v6 = UdpSocket::bind(("::1", base + i)).ok();
                let console = std::net::TcpListener::bind(("127.0.0.1", base + i)).ok()?;
                Some((v4, v6, console))
            })
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} free consecutive UDP+TCP ports found");
}

/// A running bench; stopped (every ipmi_sim and QEMU, by PID) on drop.
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub base: u16,
    pub n: u16,
    pub power: String,
    pub addr: String,
    pub guest: Guest,
}

impl Bench {
    pub fn start(n: u16) -> Bench {
        Bench::start_with(n, "qemu")
    }

    /// `power`: "qemu" (a VM behind chassis_control) or "none" (no power
    /// program: ipmi_sim refuses power commands).
    pub fn start_with(n: u16, power: &str) -> Bench {
        Bench::start_at(n, power, "127.0.0.1")
    }

    /// BMCs listening on `addr` ("127.0.0.1" or "::1").
    pub fn start_at(n: u16, power: &str, addr: &str) -> Bench {
        Bench::start_full(n, power, addr, Guest::None)
    }

    /// BMCs whose VMs boot the ACPI guest (a PXE boot stays a network boot).
    pub fn start_guest(n: u16) -> Bench {
        Bench::start_full(n, "qemu", "127.0.0.1", Guest::Acpi)
    }

    pub fn start_full(n: u16, power: &str, addr: &str, guest: Guest) -> Bench {
        require_peers();
        if guest == Guest::Acpi {
            require_guest();
        }
        let mut last = String::new();
        // A port can be taken between the check and ipmi_sim's bind: retry.
        for _ in 0..3 {
            let bench = Bench {
                dir: tempfile::Builder::new()
                    .prefix("hil-ipmi-")
                    .tempdir()
                    .expect("temp dir"),
                base: free_ports(n),
                n,
                power: power.to_string(),
                addr: addr.to_string(),
                guest,
            };
            match bench.run_start() {
                Ok(()) => return bench,
                Err(e) => last = e,
            }
        }
        panic!("hil-tests/ipmi/start.sh failed: {last}");
    }

    pub fn run_start(&self) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(script("start.sh"))
            .arg(self.dir.path())
            .arg(self.n.to_string())
            .arg(self.base.to_string())
            .env("BMC_PASSWORD", PASSWORD)
            .env("BMC_POWER", &self.power)
            .env("BMC_ADDR", &self.addr)
            .env("BMC_GUEST", self.guest.env())
            .output()
            .map_err(|e| format!("cannot run start.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script("stop.sh"))
            .arg(self.dir.path())
            .status();
    }

    pub fn port(&self, i: u16) -> u16 {
        self.base + i
    }

    pub fn bmc_dir(&self, i: u16) -> PathBuf {
        self.dir.path().join(format!("bmc{i}"))
    }

    pub fn endpoint(&self, i: u16, password: &str, options: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            protocol: Protocol::Ipmi,
            address: self.addr.clone(),
            port: self.port(i),
            username: "admin".into(),
            password: Secret::new(password),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    pub fn driver(&self, i: u16) -> IpmiBmc {
        IpmiBmc::new(&format!("n{i}"), &self.endpoint(i, PASSWORD, &[])).expect("driver")
    }

    /// The PID of the BMC's QEMU if that process is alive.
    pub fn qemu_pid(&self, i: u16) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.bmc_dir(i).join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // A zombie is not a running VM.
        let zombie = stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'));
        (String::from_utf8_lossy(&cmdline).contains("qemu") && !zombie).then_some(pid)
    }

    /// QMP `query-status` of the VM, e.g. "running".
    pub fn qmp_status(&self, i: u16) -> Option<String> {
        let out = Command::new("python3")
            .arg(script("qmp.py"))
            .arg(self.bmc_dir(i).join("qmp.sock"))
            .arg("query-status")
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["return"]["status"].as_str().map(str::to_string)
    }

    pub fn serial_log(&self, i: u16) -> String {
        std::fs::read_to_string(self.bmc_dir(i).join("serial.log")).unwrap_or_default()
    }

    /// The BMC's chassis_control call log ("set power 1", "set shutdown 1"...).
    pub fn calls(&self, i: u16) -> String {
        std::fs::read_to_string(self.bmc_dir(i).join("calls.log")).unwrap_or_default()
    }

    /// How many boots the guest announced on the console of VM `i`.
    pub fn guest_boots(&self, i: u16) -> usize {
        count(&self.serial_log(i), GUEST_BOOT)
    }

    /// How many times the guest shut down on the ACPI power button.
    pub fn clean_shutdowns(&self, i: u16) -> usize {
        count(&self.serial_log(i), GUEST_CLEAN_SHUTDOWN)
    }

    /// Waits until the guest of VM `i` has announced `boots` boots and the
    /// last one is ready (its power button handler armed). Fails with the
    /// console when it does not happen within `timeout`, or when the guest
    /// boots more often than `boots`.
    pub fn wait_guest_ready(&self, i: u16, boots: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let log = self.serial_log(i);
            let (booted, ready) = (count(&log, GUEST_BOOT), count(&log, GUEST_READY));
            assert!(
                booted <= boots,
                "bmc{i}: the guest booted {booted} times, expected {boots}; console:\n{}",
                tail(&log, 40)
            );
            if booted == boots && ready == boots {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "bmc{i}: timed out after {timeout:?} waiting for guest boot {boots} to be ready \
                 ({booted} boots, {ready} ready so far); console:\n{}",
                tail(&log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// ipmitool as an independent observer.
    pub fn ipmitool(&self, i: u16, args: &[&str]) -> (bool, String) {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", &self.addr, "-p"])
            .arg(self.port(i).to_string())
            .args(["-U", "admin", "-P", PASSWORD, "-N", "1", "-R", "2"])
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

    pub fn kill_ipmi_sim(&self, i: u16) {
        let pid = std::fs::read_to_string(self.bmc_dir(i).join("ipmi_sim.pid")).unwrap();
        let ok = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill ipmi_sim {pid}");
        wait_until("ipmi_sim to exit", Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{}", pid.trim())).exists()
        });
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How often `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// One `Name : value` line of ipmitool's output.
pub fn ipmitool_field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name:?} line in ipmitool's output:\n{out}"))
}
