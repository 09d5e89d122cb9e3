//! Round trips of the IPMI driver against ipmi_sim, next to `ipmitool -C 3` and
//! FreeIPMI's `ipmipower`, in one command:
//!
//!     hil-tests/ipmi/setup.sh    # once
//!     cargo run --release --example ipmi_bench -- [ITERATIONS]
//!
//! It starts one bench BMC (ipmi_sim + QEMU) in a temp dir on port 19601 (or
//! `IPMI_BENCH_PORT`), powers the VM on, and measures Get Chassis Status and
//! Chassis Control (power up on a running VM, which changes nothing) through:
//! our driver in one reused session, our driver with a fresh session per call
//! (open + command + close, what the CLI tools do), ipmitool and ipmipower.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rack_agent::bmc::ipmi::IpmiBmc;
use rack_agent::bmc::{Bmc, Endpoint, PowerOp, Protocol, Secret};

const PASSWORD: &str = "password";

struct Stats {
    label: String,
    samples: Vec<Duration>,
}

impl Stats {
    fn median(&self) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[s.len() / 2]
    }
    fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run_tool(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().expect("run reference tool");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ipmitool(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new("ipmitool");
    c.args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "admin", "-P", PASSWORD])
        .args(args);
    c
}

fn ipmipower(port: u16, op: &str) -> Command {
    let mut c = Command::new("ipmipower");
    c.args(["-D", "LAN_2_0", "-h"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-u",
            "admin",
            "-p",
            PASSWORD,
            "-I",
            "3",
            "-W",
            "opensesspriv",
        ])
        .arg(op);
    c
}

fn print(group: &str, rows: &[Stats]) {
    let base = rows[0].median();
    println!("\n{group}");
    println!(
        "  {:<44} {:>6} {:>10} {:>10} {:>8}",
        "client", "n", "median ms", "mean ms", "ratio"
    );
    for r in rows {
        println!(
            "  {:<44} {:>6} {:>10.3} {:>10.3} {:>7.1}x",
            r.label,
            r.samples.len(),
            ms(r.median()),
            ms(r.mean()),
            r.median().as_secs_f64() / base.as_secs_f64()
        );
    }
}

async fn measure_status(
    bmc: &IpmiBmc,
    ep: &Endpoint,
    n: usize,
    tool_n: usize,
    activation: &mut Vec<Duration>,
) -> Vec<Stats> {
    let port = ep.port;
    let mut status = vec![Stats {
        label: "rack-agent driver, reused session".into(),
        samples: Vec::new(),
    }];
    for _ in 0..n {
        let t = Instant::now();
        bmc.power_state().await.expect("status");
        status[0].samples.push(t.elapsed());
    }
    let mut fresh = Stats {
        label: "rack-agent driver, new session per call".into(),
        samples: Vec::new(),
    };
    for _ in 0..tool_n {
        let b = IpmiBmc::new("bench", ep).expect("driver");
        let t = Instant::now();
        b.power_state().await.expect("status");
        activation.push(t.elapsed());
        b.close().await;
        fresh.samples.push(t.elapsed());
    }
    status.push(fresh);
    status.push(Stats {
        label: "ipmitool -I lanplus -C 3 chassis power status".into(),
        samples: (0..tool_n)
            .map(|_| run_tool(&mut ipmitool(port, &["chassis", "power", "status"])))
            .collect(),
    });
    status.push(Stats {
        label: "ipmipower -D LAN_2_0 -W opensesspriv --stat".into(),
        samples: (0..tool_n)
            .map(|_| run_tool(&mut ipmipower(port, "--stat")))
            .collect(),
    });
    status
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ITERATIONS is a number"))
        .unwrap_or(200);
    let tool_n = (n / 4).max(5);
    let port: u16 = std::env::var("IPMI_BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19601);
    for tool in ["ipmi_sim", "ipmitool", "ipmipower", "qemu-system-x86_64"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} missing: run hil-tests/ipmi/setup.sh first");
    }

    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("hil-tests/ipmi");
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Command::new("bash")
        .arg(scripts.join("start.sh"))
        .arg(dir.path())
        .args(["1", &port.to_string()])
        .env("BMC_PASSWORD", PASSWORD)
        .status()
        .expect("start.sh");
    assert!(started.success(), "start.sh failed");
    struct Stop<'a>(&'a Path, &'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(self.0.join("stop.sh"))
                .arg(self.1)
                .status();
        }
    }
    let _stop = Stop(&scripts, dir.path());

    let ep = Endpoint {
        protocol: Protocol::Ipmi,
        address: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: Secret::new(PASSWORD),
        options: Default::default(),
    };
    let bmc = IpmiBmc::new("bench", &ep).expect("driver");
    bmc.power(PowerOp::On).await.expect("power on");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Warm up (session activation, page cache of the tools).
    bmc.power_state().await.expect("status");
    run_tool(&mut ipmitool(port, &["chassis", "power", "status"]));
    run_tool(&mut ipmipower(port, "--stat"));

    let mut activation = Vec::new();
    let status = measure_status(&bmc, &ep, n, tool_n, &mut activation).await;

    // The same against a BMC with no power program: the protocol alone.
    let bare_port = port + 1;
    let bare_dir = tempfile::tempdir().expect("temp dir");
    let started = Command::new("bash")
        .arg(scripts.join("start.sh"))
        .arg(bare_dir.path())
        .args(["1", &bare_port.to_string()])
        .env("BMC_PASSWORD", PASSWORD)
        .env("BMC_POWER", "none")
        .status()
        .expect("start.sh");
    assert!(started.success(), "start.sh failed");
    let _stop_bare = Stop(&scripts, bare_dir.path());
    let bare_ep = Endpoint {
        port: bare_port,
        ..ep.clone()
    };
    let bare = IpmiBmc::new("bare", &bare_ep).expect("driver");
    bare.power_state().await.expect("status");
    let bare_status = measure_status(&bare, &bare_ep, n, tool_n, &mut Vec::new()).await;
    bare.close().await;

    let control_n = (n / 4).max(5);
    let mut control = vec![Stats {
        label: "rack-agent driver, reused session".into(),
        samples: Vec::new(),
    }];
    for _ in 0..control_n {
        let t = Instant::now();
        bmc.power(PowerOp::On).await.expect("power on");
        control[0].samples.push(t.elapsed());
    }
    control.push(Stats {
        label: "ipmitool -I lanplus -C 3 chassis power on".into(),
        samples: (0..tool_n)
            .map(|_| run_tool(&mut ipmitool(port, &["chassis", "power", "on"])))
            .collect(),
    });
    control.push(Stats {
        label: "ipmipower -D LAN_2_0 -W opensesspriv --on".into(),
        samples: (0..tool_n)
            .map(|_| run_tool(&mut ipmipower(port, "--on")))
            .collect(),
    });
    bmc.close().await;

    let act = Stats {
        label: String::new(),
        samples: activation,
    };
    println!(
        "ipmi_sim 127.0.0.1:{port}, VM on; session activation + first status \
         (open session, RAKP 1-4, set privilege, status): median {:.3} ms",
        ms(act.median())
    );
    print(
        "Get Chassis Status (ratio: median / the driver's reused-session median)",
        &status,
    );
    print(
        "Get Chassis Status, BMC without a power program (protocol only)",
        &bare_status,
    );
    print(
        "Chassis Control power up on a running VM (ratio: median / the driver's)",
        &control,
    );
}
