//! Under systemd, logs go to journald with fields an operator filters on.
//! The test plays journald: in a private mount namespace the daemon's
//! `/run/systemd/journal/socket` is a datagram socket of the test's own, and
//! stderr is a file whose device:inode is given in `JOURNAL_STREAM`, which is
//! how systemd tells a service its stderr is the journal.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;

/// One journal entry: field name → values (a field may repeat).
type Entry = HashMap<String, Vec<String>>;

/// Parses journald's native protocol: `KEY=value\n`, or `KEY\n` + u64 LE
/// length + value + `\n` for values with newlines.
fn parse(mut b: &[u8]) -> Entry {
    let mut e: Entry = HashMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            let k = String::from_utf8_lossy(&line[..eq]).into_owned();
            let v = String::from_utf8_lossy(&line[eq + 1..]).into_owned();
            e.entry(k).or_default().push(v);
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let k = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let v = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            e.entry(k).or_default().push(v);
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    e
}

fn one<'a>(e: &'a Entry, k: &str) -> Option<&'a str> {
    e.get(k).and_then(|v| v.first()).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_logs_reach_journald_with_fields_and_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    let sock = UnixDatagram::bind(jdir.join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(creds.join("bmc.pass"), "pw\n").unwrap();
        std::fs::set_permissions(
            creds.join("bmc.pass"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("rack-agent.toml");
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\ncredentials_dir = \"{}\"\n[api]\ninsecure_plaintext = true\n[fake_bmc]\nenabled = true\nlatency = \"10ms\"\nfail = [\"n-02\"]\n[sync]\ninterval = \"300ms\"\n[timeouts]\nconfirm_poll = \"50ms\"\n",
        dir.path().join("state").display(),
        creds.display()
    );
    for id in ["n-01", "n-02"] {
        text.push_str(&format!("[[servers]]\nid = \"{id}\"\nproject = \"p1\"\nprotocol = \"ipmi\"\naddress = \"127.0.0.1\"\nport = 9{}\nusername = \"admin\"\npassword_file = \"bmc.pass\"\n", &id[2..]));
    }
    std::fs::write(&config, text).unwrap();

    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let script = format!(
        "mkdir -p /run/systemd/journal && mount --bind '{}' /run/systemd/journal && exec '{}' --config '{}' run",
        jdir.display(),
        env!("CARGO_BIN_EXE_rack-agent"),
        config.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("cannot run unshare (needs root and util-linux)");

    let mut entries: Vec<Entry> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut collect =
        |until: &dyn Fn(&[Entry]) -> bool, limit: Duration, entries: &mut Vec<Entry>| {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline && !until(entries) {
                if let Ok(n) = sock.recv(&mut buf) {
                    entries.push(parse(&buf[..n]));
                }
            }
        };
    let has =
        |msg: &'static str| move |es: &[Entry]| es.iter().any(|e| one(e, "MESSAGE") == Some(msg));
    collect(&has("ready"), Duration::from_secs(30), &mut entries);
    if !entries.iter().any(|e| one(e, "MESSAGE") == Some("ready")) {
        let _ = child.kill();
        panic!(
            "no 'ready' entry reached the journal socket; stderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
    }

    let mut c = RackAgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::RebootRequest {
        server_id: "n-01".into(),
        r#type: pb::RebootType::Hard as i32,
        request_id: String::new(),
    });
    req.metadata_mut()
        .insert("x-rackagent-caller", "ops".parse().unwrap());
    req.metadata_mut()
        .insert("x-rackagent-roles", "admin".parse().unwrap());
    let a = c.reboot(req).await.unwrap().into_inner();
    collect(
        &has("action succeeded"),
        Duration::from_secs(10),
        &mut entries,
    );
    collect(
        &has("cannot read power state"),
        Duration::from_secs(10),
        &mut entries,
    );
    let _ = child.kill();
    let _ = child.wait();

    let ok = entries
        .iter()
        .find(|e| one(e, "MESSAGE") == Some("action succeeded"))
        .expect("no 'action succeeded' entry");
    assert_eq!(one(ok, "SERVER_ID"), Some("n-01"));
    assert_eq!(one(ok, "ACTION_ID"), Some(a.id.as_str()));
    assert_eq!(one(ok, "PRIORITY"), Some("6"), "info is PRIORITY 6");
    assert_eq!(one(ok, "SYSLOG_IDENTIFIER"), Some("rack-agent"));
    // An event inside an action's span carries the span's fields too.
    let span_ev = entries
        .iter()
        .find(|e| one(e, "ACTION_ID") == Some(a.id.as_str()) && e.contains_key("BMC"))
        .expect("no entry with the action span's BMC field");
    assert_eq!(one(span_ev, "BMC"), Some("127.0.0.1:901"));
    let warn = entries
        .iter()
        .find(|e| one(e, "MESSAGE") == Some("cannot read power state"))
        .expect("no warning for the failing BMC");
    assert_eq!(one(warn, "SERVER_ID"), Some("n-02"));
    assert_eq!(one(warn, "PRIORITY"), Some("4"), "warn is PRIORITY 4");
    assert!(warn.contains_key("BMC"));
    // Nothing went to stderr as text while the journal was there.
    let text = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        !text.contains("action succeeded"),
        "logged to stderr too:\n{text}"
    );
}
