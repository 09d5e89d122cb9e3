//! Writes the generated fuzz seeds (`fuzz/seeds/`) from the agent's own
//! encoders: `cargo run -p rack-agent-fuzz --example write_seeds`.
//! (`tests/replay.rs` then runs them through every target.)

use std::path::{Path, PathBuf};

use prost::Message;
use rack_agent::bmc::ipmi::lan::packet::{self, payload, Security};
use rack_agent::bmc::ipmi::lan::rakp::{self, CipherSuite};
use rack_agent::bmc::ipmi::message::{self, checksum, CONSOLE_SWID};
use rack_agent::proto as pb;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn with_mode(mode: u8, p: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(p);
    v
}

fn response(netfn: u8, seq: u8, cmd: u8, cc: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![CONSOLE_SWID, (netfn | 1) << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[message::BMC_ADDR, seq << 2, cmd, cc]);
    m.extend_from_slice(data);
    let c = checksum(&m[3..]);
    m.push(c);
    m
}

fn main() {
    // ipmi_packet: mode byte (0 none, 1 integrity, 2 both), then a datagram
    // framed with the target's keys (K1 = 0x5a.., K2 = 0xa5..).
    let k1 = [0x5a; 20];
    let k2 = [0xa5; 16];
    let keys = [
        Security::default(),
        Security {
            integrity: Some(k1),
            confidentiality: None,
        },
        Security {
            integrity: Some(k1),
            confidentiality: Some(k2),
        },
    ];
    let status = response(0x00, 1, 0x01, 0, &[0x01, 0x00, 0x40, 0x00]);
    for (mode, sec) in keys.iter().enumerate() {
        let p = packet::encode(payload::IPMI, 0x0403_0201, 7, &status, sec, [0x33; 16]);
        write(
            "ipmi_packet",
            &format!("status-{mode}"),
            &with_mode(mode as u8, &p),
        );
    }
    let open = rakp::open_session_request(0x2a, 0xA0A1_A2A3, &CipherSuite::by_id(3).unwrap());
    let p = packet::encode(
        payload::OPEN_SESSION_REQUEST,
        0,
        0,
        &open,
        &keys[0],
        [0; 16],
    );
    write("ipmi_packet", "open-session", &with_mode(0, &p));

    // ipmi_session: session payloads as the BMC sends them.
    write("ipmi_session", "chassis-status", &status);
    write(
        "ipmi_session",
        "boot-flags",
        &response(0x00, 2, 0x09, 0, &[0x01, 0x05, 0x80, 0x04, 0, 0, 0]),
    );
    write(
        "ipmi_session",
        "boot-flags-data",
        &[0x01, 0x05, 0xE0, 0x18, 0x00, 0x00, 0x00],
    );
    write("ipmi_session", "restart-cause-data", &[0x01, 0x01]);
    // What ipmi_sim answers to Get Device ID for the bench's BMC.
    let device_id = [
        0x00, 0x03, 0x09, 0x08, 0x02, 0x9f, 0x91, 0x12, 0x00, 0x02, 0x0f, 0x00, 0x00, 0x00, 0x00,
    ];
    write("ipmi_session", "device-id-data", &device_id);
    write(
        "ipmi_session",
        "device-id",
        &response(0x06, 3, 0x01, 0, &device_id),
    );
    let mut osr = vec![0x2A, 0x00, 0x04, 0x00, 0xA3, 0xA2, 0xA1, 0xA0, 1, 2, 3, 4];
    for (kind, alg) in [(0u8, 1u8), (1, 1), (2, 1)] {
        osr.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
    }
    write("ipmi_session", "open-session-response", &osr);
    let mut r2 = vec![7, 0, 0, 0, 0xA3, 0xA2, 0xA1, 0xA0];
    r2.extend_from_slice(&[2; 16]);
    r2.extend_from_slice(&[3; 16]);
    r2.extend_from_slice(&[0xCD; 20]);
    write("ipmi_session", "rakp2", &r2);
    let mut r4 = vec![8, 0, 0, 0, 0xA3, 0xA2, 0xA1, 0xA0];
    r4.extend_from_slice(&[0xEF; 12]);
    write("ipmi_session", "rakp4", &r4);
    write("ipmi_session", "rakp2-error", &[7, 0x0D]);

    // config and policy: beside the shipped files (config/), what they leave out.
    write(
        "config",
        "servers.toml",
        br#"listen = "[::1]:50051"
log_level = "rack_agent=debug"

[api]
insecure_plaintext = true

[sync]
interval = "500ms"
jitter = "0s"
max_concurrent = 2
unknown_after_failures = 1

[events]
retain = 10

[[servers]]
id = "node-01"
project = "tenant-a"
protocol = "ipmi"
address = "192.0.2.10"
port = 6230
username = "admin"
password_file = "node-01.pass"
options = { cipher_suite = "3", timeout = "1s", retries = "2", keepalive = "10s", boot_mode = "efi" }

[[servers]]
id = "node-02"
project = "tenant-a"
protocol = "redfish"
address = "bmc-02.example"
username = "root"
password_file = "/etc/rack-agent/credentials/node-02.pass"
options = { system_id = "1", auth = "session", cert_sha256 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89", request_timeout = "10s", task_timeout = "2m", retries = "3", max_connections = "4", scheme = "https" }
"#,
    );
    write(
        "config",
        "fake.toml",
        br#"[api]
insecure_plaintext = true

[fake_bmc]
enabled = true
latency = "20ms"
initial_power = "off"
ignore_acpi = true
graceful_restart = true
restart_evidence = true
effect_delay = "1s"
hang = ["n3"]
fail = ["n4"]
journal = "/tmp/fake.journal"

[timeouts]
bmc_command = "15s"
soft_reboot = "2m"
graceful_stop = "2m"
power_confirm = "1m"
confirm_poll = "2s"
shutdown_grace = "20s"
"#,
    );
    write(
        "config",
        "tls.toml",
        br#"listen = "0.0.0.0:50051"
[api.tls]
cert_file = "server.pem"
key_file = "server.key"
client_ca_file = "clients-ca.pem"
[metrics]
listen = "127.0.0.1:9464"
"#,
    );
    write(
        "policy",
        "owner.toml",
        b"reboot = \"owner\"\nunlock = \"admin\"\n",
    );
    write("policy", "empty.toml", b"");
    write(
        "policy",
        "all.toml",
        b"enroll = \"admin\"\nremove = \"admin\"\nread = \"admin_or_owner\"\nreboot = \"admin_or_owner\"\nstart = \"owner\"\nstop = \"owner\"\nreinstall = \"admin\"\nreset_state = \"admin\"\nlock = \"admin_or_owner\"\nunlock = \"admin_or_owner\"\n",
    );

    // api_request: selector byte (0 enroll, 1 reboot, 2 reinstall,
    // 3 reset-state, 4 list actions, 5 certificate), then the message.
    let enroll = pb::EnrollServerRequest {
        id: "node-09".into(),
        project_id: "tenant-a".into(),
        bmc: Some(pb::BmcEndpoint {
            protocol: pb::BmcProtocol::Redfish as i32,
            address: "192.0.2.9".into(),
            port: 443,
            username: "root".into(),
            secret: Some(pb::bmc_endpoint::Secret::Password("hunter2-hunter2".into())),
            options: [("system_id".to_string(), "1".to_string())].into(),
        }),
        skip_verify: false,
    };
    write(
        "api_request",
        "enroll",
        &with_mode(0, &enroll.encode_to_vec()),
    );
    let reboot = pb::RebootRequest {
        server_id: "node-01".into(),
        r#type: pb::RebootType::Hard as i32,
        request_id: "req-1".into(),
    };
    write(
        "api_request",
        "reboot",
        &with_mode(1, &reboot.encode_to_vec()),
    );
    let reinstall = pb::ReinstallRequest {
        server_id: "node-01".into(),
        boot_source: Some(pb::reinstall_request::BootSource::VirtualMediaUrl(
            "https://images.example:8443/rhel9.iso".into(),
        )),
        request_id: String::new(),
    };
    write(
        "api_request",
        "reinstall",
        &with_mode(2, &reinstall.encode_to_vec()),
    );
    let reset = pb::ResetStateRequest {
        server_id: "node-01".into(),
        state: pb::ResetStateTarget::Error as i32,
        request_id: String::new(),
    };
    write(
        "api_request",
        "reset-state",
        &with_mode(3, &reset.encode_to_vec()),
    );
    let list = pb::ListActionsRequest {
        server_id: "node-01".into(),
        page_size: 10,
        page_token: "42".into(),
    };
    write(
        "api_request",
        "list-actions",
        &with_mode(4, &list.encode_to_vec()),
    );
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "cp-1");
    dn.push(rcgen::DnType::OrganizationName, "ops");
    dn.push(
        rcgen::DnType::OrganizationalUnitName,
        "admin, control-plane",
    );
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    write("api_request", "certificate", &with_mode(5, cert.der()));
}
