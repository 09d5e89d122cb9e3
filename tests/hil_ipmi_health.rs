//! Hardware-in-the-loop tests of the IPMI driver's sensors (`health()`) and
//! event log (`events()`) against ipmi_sim BMCs (hil-tests/ipmi, whose
//! sensors are defined by `sensors.sh`), judged by ipmitool reading the same
//! BMC: `sensor list` for names, values, units, status and thresholds, `sel
//! elist` for record ids, times, sensor types, events and directions. The
//! expected values are parsed from ipmitool's output, never hard-coded.
//!
//! Where ipmitool and the driver word things differently (ipmitool "Power
//! off/down", "Button"; the specification's and the driver's "Power Off /
//! Power Down", "Button/Switch"), every word ipmitool prints must be among
//! the driver's words.
//!
//! The peers must be installed (`hil-tests/ipmi/setup.sh`); when they are not,
//! these tests fail and say so. They never skip.

mod common;
#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ipmi_bench::*;

use rack_agent::bmc::inventory::{
    BmcEvent, Health, SensorKind, SensorReading, SensorStatus, Thresholds,
};
use rack_agent::bmc::{Bmc, Power, PowerOp};
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use tonic::transport::Channel;

/// ipmitool's standard output (times in UTC); the call must succeed.
fn tool(bench: &Bench, args: &[&str]) -> String {
    let out = Command::new("ipmitool")
        .env("TZ", "UTC")
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(bench.port(0).to_string())
        .args(["-U", "admin", "-P", PASSWORD, "-N", "1", "-R", "2"])
        .args(args)
        .output()
        .expect("run ipmitool");
    assert!(
        out.status.success(),
        "ipmitool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bench_script(bench: &Bench, name: &str, args: &[&str]) -> String {
    let out = Command::new(script(name))
        .arg(bench.bmc_dir(0))
        .args(args)
        .output()
        .expect("run a bench script");
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lower-case words (letters and digits).
fn words(s: &str) -> BTreeSet<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

fn words_within(theirs: &str, ours: &str) -> bool {
    words(theirs).is_subset(&words(ours))
}

// ---------------------------------------------------------------------------
// Sensors

#[derive(Debug)]
struct ToolSensor {
    name: String,
    value: Option<f64>,
    unit: String,
    status: String,
    /// lower critical, lower non-critical, upper non-critical, upper critical
    thresholds: [Option<f64>; 4],
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse().ok()
}

/// `ipmitool sensor list`: name | value | unit | status | lnr | lcr | lnc | unc | ucr | unr
fn sensor_list(text: &str) -> Vec<ToolSensor> {
    text.lines()
        .filter(|l| l.contains('|'))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            assert!(f.len() >= 10, "unexpected sensor list line: {l}");
            ToolSensor {
                name: f[0].to_string(),
                value: num(f[1]),
                unit: f[2].to_string(),
                status: f[3].to_string(),
                thresholds: [num(f[5]), num(f[6]), num(f[7]), num(f[8])],
            }
        })
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        // ipmitool prints three decimals.
        (Some(a), Some(b)) => (a - b).abs() <= 0.0006,
        (None, None) => true,
        _ => false,
    }
}

/// Every sensor ipmitool lists is in `health` with the same value, unit,
/// status and thresholds, and the driver lists no other.
fn assert_same(health: &Health, tool: &[ToolSensor]) {
    assert!(
        health.problems.is_empty(),
        "problems: {:?}",
        health.problems
    );
    let ours: BTreeSet<&str> = health.sensors.iter().map(|s| s.name.as_str()).collect();
    let theirs: BTreeSet<&str> = tool.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(ours, theirs, "sensor names");
    for t in tool {
        let s = health.sensors.iter().find(|s| s.name == t.name).unwrap();
        assert!(
            close(s.value, t.value),
            "{}: value {:?}, ipmitool {:?}",
            t.name,
            s.value,
            t.value
        );
        assert_eq!(s.unit, t.unit, "{}: unit", t.name);
        let status = match t.status.as_str() {
            "ok" => SensorStatus::Ok,
            "nc" => SensorStatus::Warning,
            "cr" | "nr" => SensorStatus::Critical,
            "na" | "ns" => SensorStatus::Unavailable,
            other => panic!("{}: ipmitool status {other:?}", t.name),
        };
        assert_eq!(
            s.status, status,
            "{}: status (ipmitool {})",
            t.name, t.status
        );
        let th = &s.thresholds;
        let ours = [
            th.lower_critical,
            th.lower_warning,
            th.upper_warning,
            th.upper_critical,
        ];
        for (k, (a, b)) in ours.iter().zip(t.thresholds.iter()).enumerate() {
            assert!(
                close(*a, *b),
                "{}: threshold {k} (lc, lnc, unc, uc): {a:?}, ipmitool {b:?}",
                t.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_match_ipmitool_before_and_after_set_sensor() {
    let bench = Bench::start(1);
    let bmc = bench.driver(0);

    let health = bmc.health().await.expect("health");
    assert_same(&health, &sensor_list(&tool(&bench, &["sensor", "list"])));
    assert!(health.sensors.len() >= 5, "{health:?}");
    assert!(health.power_watts().is_some(), "{health:?}");
    assert!(health.inlet_celsius().is_some(), "{health:?}");
    // The names ipmitool's `sdr elist full` gives are the driver's too.
    let elist = tool(&bench, &["sdr", "elist", "full"]);
    for line in elist.lines().filter(|l| l.contains('|')) {
        let name = line.split('|').next().unwrap().trim();
        assert!(health.sensors.iter().any(|s| s.name == name), "{name}");
    }

    // Over the inlet's upper critical threshold, the 12 V rail under its
    // lower warning, the fan under its lower critical.
    let inlet_uc = health
        .sensors
        .iter()
        .find(|s| s.name == "Inlet Temp")
        .and_then(|s| s.thresholds.upper_critical)
        .expect("the inlet has an upper critical threshold");
    let over = (inlet_uc + 3.0).to_string();
    bench_script(&bench, "set-sensor", &["Inlet Temp", &over]);
    bench_script(&bench, "set-sensor", &["12V", "11.1"]);
    bench_script(&bench, "set-sensor", &["Fan 1", "400"]);

    let health = bmc.health().await.expect("health after set-sensor");
    let listed = sensor_list(&tool(&bench, &["sensor", "list"]));
    assert_same(&health, &listed);
    let by = |n: &str| health.sensors.iter().find(|s| s.name == n).unwrap();
    assert_eq!(by("Inlet Temp").status, SensorStatus::Critical);
    assert_eq!(by("Inlet Temp").value, Some(inlet_uc + 3.0));
    assert_eq!(by("12V").status, SensorStatus::Warning);
    assert_eq!(by("Fan 1").status, SensorStatus::Critical);
    assert_eq!(by("CPU Temp").status, SensorStatus::Ok);

    // The threshold events ipmi_sim logged are the same in both views.
    let events = bmc.events(None, 1000).await.expect("events");
    assert_same_events(&events, &sel_elist(&tool(&bench, &["sel", "elist"])));
    assert!(
        events
            .iter()
            .any(|e| e.sensor == "Inlet Temp" && e.severity == "critical"),
        "{events:#?}"
    );
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_sdr_record_is_a_problem_line_and_the_rest_still_reads() {
    let bench = Bench::start_with(1, "none");
    // A full sensor record cut short: 10 bytes after the header where a full
    // record needs at least 43. ipmi_sim stores what it is given.
    bench_script(
        &bench,
        "console",
        &["main_sdr_add 0x20 0 0 0x51 0x01 10 0x20 0 0x30 0x07 1 0x7f 0x48 0x01 0x01 0"],
    );
    let bmc = bench.driver(0);
    let health = bmc.health().await.expect("health");
    assert_eq!(health.problems.len(), 1, "{:?}", health.problems);
    let p = &health.problems[0];
    assert!(
        p.starts_with("SDR record 0x") && p.contains("truncated"),
        "{p}"
    );
    assert!(health.sensors.len() >= 5, "{health:?}");
    // ipmitool reads past the short record and lists a sensor named by
    // whatever bytes follow it; every other sensor it lists reads the same.
    let listed = sensor_list(&tool(&bench, &["sensor", "list"]));
    assert_eq!(listed.len(), health.sensors.len() + 1, "{listed:#?}");
    let good: Vec<ToolSensor> = listed
        .into_iter()
        .filter(|t| health.sensors.iter().any(|s| s.name == t.name))
        .collect();
    assert_eq!(good.len(), health.sensors.len());
    assert_same(
        &Health {
            problems: vec![],
            ..health.clone()
        },
        &good,
    );
    bmc.close().await;
}

// ---------------------------------------------------------------------------
// Event log

#[derive(Debug)]
struct ToolEvent {
    id: u16,
    at: Option<i64>,
    sensor: String,
    event: String,
    direction: String,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// "11/26/26" + "04:01:02 UTC" (TZ=UTC) to Unix seconds.
fn tool_time(date: &str, time: &str) -> i64 {
    let d: Vec<i64> = date.split('/').map(|x| x.parse().unwrap()).collect();
    let t: Vec<i64> = time
        .split_whitespace()
        .next()
        .unwrap()
        .split(':')
        .map(|x| x.parse().unwrap())
        .collect();
    let year = if d[2] < 100 { 2000 + d[2] } else { d[2] };
    days_from_civil(year, d[0], d[1]) * 86400 + t[0] * 3600 + t[1] * 60 + t[2]
}

/// `ipmitool sel elist`: id | date | time | sensor | event | direction [| detail],
/// or id | Pre-Init | seconds | sensor | event | direction.
fn sel_elist(text: &str) -> Vec<ToolEvent> {
    text.lines()
        .filter(|l| l.contains('|'))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            assert!(f.len() >= 6, "unexpected sel elist line: {l}");
            ToolEvent {
                id: u16::from_str_radix(f[0], 16).unwrap(),
                at: (f[1] != "Pre-Init").then(|| tool_time(f[1], f[2])),
                sensor: f[3].to_string(),
                event: f[4].to_string(),
                direction: f[5].to_ascii_lowercase(),
            }
        })
        .collect()
}

fn assert_same_events(ours: &[BmcEvent], theirs: &[ToolEvent]) {
    assert_eq!(
        ours.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        theirs
            .iter()
            .map(|e| format!("0x{:04x}", e.id))
            .collect::<Vec<_>>(),
        "record ids"
    );
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(o.at, t.at, "{}: time", o.id);
        assert!(
            t.sensor.ends_with(&o.sensor)
                && words_within(t.sensor.trim_end_matches(&o.sensor), &o.sensor_type),
            "{}: ipmitool sensor {:?}, ours {:?} {:?}",
            o.id,
            t.sensor,
            o.sensor_type,
            o.sensor
        );
        assert!(
            words_within(&t.event, &o.event),
            "{}: ipmitool event {:?}, ours {:?}",
            o.id,
            t.event,
            o.event
        );
        assert_eq!(o.direction, t.direction, "{}: direction", o.id);
    }
}

/// Sets the BMC's SEL clock to now (Set SEL Time, Storage 0x49), so entries
/// carry real times instead of ipmi_sim's seconds since start.
fn set_sel_clock(bench: &Bench) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let b = now.to_le_bytes().map(|x| format!("0x{x:02x}"));
    let mut args = vec!["raw", "0x0a", "0x49"];
    args.extend(b.iter().map(String::as_str));
    tool(bench, &args);
    now as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_match_ipmitool_after_power_changes_and_a_power_button_press() {
    let bench = Bench::start_guest(1);
    let bmc = bench.driver(0);
    assert!(bmc.events(None, 100).await.expect("events").is_empty());
    let t0 = set_sel_clock(&bench);

    bmc.power(PowerOp::On).await.expect("power on");
    bench.wait_guest_ready(0, 1, Duration::from_secs(40));
    let before = bmc.events(None, 1000).await.expect("events");
    assert_same_events(&before, &sel_elist(&tool(&bench, &["sel", "elist"])));
    assert!(
        before.iter().any(|e| e.sensor_type == "Power Unit"
            && e.direction == "deasserted"
            && e.at.is_some_and(|t| t >= t0)),
        "power on is logged: {before:#?}"
    );

    // Someone presses the power button: the guest shuts down, the BMC says off.
    bench_script(&bench, "press-power-button", &[]);
    let start = Instant::now();
    while bmc.power_state().await.expect("power") != Power::Off {
        assert!(start.elapsed() < Duration::from_secs(15), "still on");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(bench.clean_shutdowns(0), 1);

    let after = bmc.events(None, 1000).await.expect("events");
    let listed = sel_elist(&tool(&bench, &["sel", "elist"]));
    assert_same_events(&after, &listed);
    let new: Vec<&BmcEvent> = after[before.len()..].iter().collect();
    assert!(
        new.iter().any(|e| e.event == "Power Button pressed"),
        "{new:#?}"
    );
    assert!(
        new.iter()
            .any(|e| e.event == "Power Off / Power Down" && e.direction == "asserted"),
        "{new:#?}"
    );
    assert!(
        listed
            .iter()
            .any(|e| e.event.contains("Power Button pressed")),
        "ipmitool sees the button press too"
    );

    // since / limit: the newest entries only, oldest first.
    let last_two = bmc.events(None, 2).await.unwrap();
    assert_eq!(last_two, after[after.len() - 2..].to_vec());
    let at = new[0].at.expect("a real time");
    let since = bmc.events(Some(at), 1000).await.unwrap();
    assert!(since.iter().all(|e| e.at.is_some_and(|t| t >= at)));
    assert!(since.len() >= new.len());

    // The agent's own graceful off: the guest shuts down on the ACPI button
    // and the bench logs the off once QEMU is gone (ipmi_sim itself logs
    // nothing for power changes).
    bmc.power(PowerOp::On).await.expect("power on again");
    bench.wait_guest_ready(0, 2, Duration::from_secs(40));
    bmc.power(PowerOp::GracefulOff).await.expect("graceful off");
    let start = Instant::now();
    loop {
        let now = bmc.events(None, 1000).await.expect("events");
        let offs = now
            .iter()
            .filter(|e| e.event == "Power Off / Power Down" && e.direction == "asserted")
            .count();
        if offs == 2 && bmc.power_state().await.unwrap() == Power::Off {
            assert_same_events(&now, &sel_elist(&tool(&bench, &["sel", "elist"])));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no second power-off entry: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(bench.clean_shutdowns(0), 2);
    bmc.close().await;
}

// ---------------------------------------------------------------------------
// Through the daemon: what the control plane reads over gRPC is what
// ipmitool reads from the same BMC.

fn health_of(h: &pb::ServerHealth) -> Health {
    let sensors = h
        .sensors
        .iter()
        .map(|x| SensorReading {
            name: x.name.clone(),
            kind: SensorKind::Other,
            value: x.value,
            unit: x.unit.clone(),
            status: match pb::SensorStatus::try_from(x.status).unwrap() {
                pb::SensorStatus::Ok => SensorStatus::Ok,
                pb::SensorStatus::Warning => SensorStatus::Warning,
                pb::SensorStatus::Critical => SensorStatus::Critical,
                pb::SensorStatus::Unavailable => SensorStatus::Unavailable,
                pb::SensorStatus::Unspecified => panic!("{}: no status", x.name),
            },
            thresholds: Thresholds {
                lower_critical: x.lower_critical,
                lower_warning: x.lower_warning,
                upper_warning: x.upper_warning,
                upper_critical: x.upper_critical,
            },
            context: None,
        })
        .collect();
    Health {
        sensors,
        problems: h.problems.clone(),
    }
}

fn event_of(e: &pb::BmcEvent) -> BmcEvent {
    BmcEvent {
        id: e.id.clone(),
        at: e.at.map(|t| t.seconds),
        sensor_type: e.sensor_type.clone(),
        sensor: e.sensor.clone(),
        event: e.event.clone(),
        direction: e.direction.clone(),
        severity: e.severity.clone(),
        message: e.message.clone(),
        raw: e.raw.clone(),
    }
}

const DAEMON_SETTINGS: &str = r#"
[sync]
interval = "1s"
jitter = "100ms"

[timeouts]
bmc_command = "10s"
confirm_poll = "200ms"
power_confirm = "60s"
shutdown_grace = "5s"

[metrics]
listen = "127.0.0.1:0"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_what_ipmitool_reads_and_a_button_press_arrives_with_its_sel_entry() {
    let bench = Bench::start_guest(1);
    set_sel_clock(&bench);
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "bmc.pass", PASSWORD);
    let body = format!(
        "{DAEMON_SETTINGS}\n[[servers]]\nid = \"n1\"\nproject = \"p1\"\nprotocol = \"ipmi\"\n\
         address = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword_file = \"bmc.pass\"\n",
        bench.port(0)
    );
    let d = start_daemon(dir.path(), &body);
    let mut c = d.client().await;
    let limit = Duration::from_secs(60);
    wait_server(&mut c, "n1", limit, |s| {
        s.power_state == pb::PowerState::Off as i32
    })
    .await;
    let started = c
        .start(admin(pb::StartRequest {
            server_id: "n1".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let a = wait_action(&mut c, &started.id, limit).await;
    assert_eq!(a.state, pb::ActionState::Succeeded as i32, "{}", a.message);
    bench.wait_guest_ready(0, 1, Duration::from_secs(120));

    // Identity, as `ipmitool mc info` reads it.
    let id = c
        .get_server(admin(pb::GetServerRequest {
            id: "n1".into(),
            refresh_identity: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .identity
        .expect("identity");
    assert_eq!(id.error, "", "{id:?}");
    let info = tool(&bench, &["mc", "info"]);
    let mfr: u32 = ipmitool_field(&info, "Manufacturer ID").parse().unwrap();
    assert_eq!(
        id.bmc_manufacturer,
        rack_agent::bmc::ipmi::identity::manufacturer(mfr)
    );
    let product = ipmitool_field(&info, "Product ID");
    let product: u16 = product.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(id.bmc_model, format!("product {product:#06x}"));
    assert_eq!(
        id.firmware_version,
        ipmitool_field(&info, "Firmware Revision")
    );
    assert_eq!(id.ipmi_version, ipmitool_field(&info, "IPMI Version"));

    // Sensors, then an inlet over its upper critical threshold.
    let read = |mut c: RackAgentClient<Channel>| async move {
        c.get_server_health(admin(pb::GetServerHealthRequest {
            server_id: "n1".into(),
        }))
        .await
        .unwrap()
        .into_inner()
    };
    let h = read(c.clone()).await;
    assert_same(
        &health_of(&h),
        &sensor_list(&tool(&bench, &["sensor", "list"])),
    );
    let listed = sensor_list(&tool(&bench, &["sensor", "list"]));
    let inlet = listed.iter().find(|s| s.name == "Inlet Temp").unwrap();
    let over = format!("{}", inlet.thresholds[3].expect("an upper critical") + 4.0);
    bench_script(&bench, "set-sensor", &["Inlet Temp", &over]);
    let h = read(c.clone()).await;
    let listed = sensor_list(&tool(&bench, &["sensor", "list"]));
    assert_same(&health_of(&h), &listed);
    let inlet = listed.iter().find(|s| s.name == "Inlet Temp").unwrap();
    assert_eq!(inlet.status, "cr");
    assert!(close(h.inlet_celsius, inlet.value), "{h:?}");
    let maddr = d.logged_addr("metrics at /metrics", Duration::from_secs(5));
    let metrics = http_body(maddr, "/metrics");
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rack_agent_server_inlet_celsius{server_id=\"n1\"} "))
        .unwrap_or_else(|| panic!("no inlet gauge for n1:\n{metrics}"));
    assert!(close(gauge.parse().ok(), inlet.value), "{gauge}");

    // The SEL.
    let log = |mut c: RackAgentClient<Channel>| async move {
        bmc_log(&mut c, "n1")
            .await
            .iter()
            .map(event_of)
            .collect::<Vec<_>>()
    };
    assert_same_events(
        &log(c.clone()).await,
        &sel_elist(&tool(&bench, &["sel", "elist"])),
    );

    // Someone presses the power button behind the agent's back: watchers get
    // the change with the SEL's explanation.
    let mut watch = c
        .watch_power_state(admin(pb::WatchPowerStateRequest {
            server_ids: vec!["n1".into()],
            after_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    bench_script(&bench, "press-power-button", &[]);
    let off = next_power_event(&mut watch, pb::PowerState::Off, limit).await;
    assert_eq!(bench.clean_shutdowns(0), 1);
    assert_eq!(off.cause, "sync");
    let attached: Vec<BmcEvent> = off.bmc_events.iter().map(event_of).collect();
    assert!(
        attached.iter().any(|e| e.event == "Power Button pressed"),
        "{attached:#?}"
    );
    let sel = sel_elist(&tool(&bench, &["sel", "elist"]));
    let all = log(c.clone()).await;
    assert_same_events(&all, &sel);
    for e in &attached {
        assert!(all.contains(e), "{e:?} is not in the BMC's SEL");
    }
    assert!(!d.log().contains(PASSWORD));
}
