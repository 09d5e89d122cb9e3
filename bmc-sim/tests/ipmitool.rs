//! The simulator's IPMI side judged by an independent client: ipmitool
//! (`-I lanplus`), plus a hand-built RMCP+ exchange for what ipmitool never
//! sends. What the simulator counted is read on its control port.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

#[test]
fn power_status_on_off_reset_as_ipmitool_sees_them() {
    require("ipmitool");
    let sim = Sim::start(2, &[]);
    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is off"), "{out}");

    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "on"]);
    assert!(ok && out.contains("Up/On"), "{out}");
    let (_, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is on"), "{out}");
    assert_eq!(sim.bmc(0)["power"], "on");
    assert_eq!(sim.bmc(1)["power"], "off", "BMCs are independent");

    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "reset"]);
    assert!(ok && out.contains("Reset"), "{out}");
    let (ok, out) = sim.ipmitool(0, &["chassis", "restart_cause"]);
    assert!(ok && out.contains("chassis power control command"), "{out}");

    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "cycle"]);
    assert!(ok && out.contains("Cycle"), "{out}");
    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "soft"]);
    assert!(ok && out.contains("Soft"), "{out}");
    let (_, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is off"), "{out}");

    // A reset of a host that is off is refused (cc D5h), as the spec recommends.
    let (ok, out) = sim.ipmitool(0, &["chassis", "power", "reset"]);
    assert!(!ok, "{out}");
    assert!(out.contains("not supported in present state"), "{out}");

    let b = sim.bmc(0);
    let c = &b["counters"];
    assert_eq!(c["chassis_power_on"], 1);
    assert_eq!(c["chassis_hard_reset"], 2);
    assert_eq!(c["chassis_power_cycle"], 1);
    assert_eq!(c["chassis_soft_off"], 1);
    assert_eq!(c["chassis_refused"], 1);
    assert_eq!(c["host_boots"], 3, "power on, reset, cycle");
    // Every ipmitool run opened one session and closed it.
    assert_eq!(c["ipmi_sessions_created"], 9, "{b}");
    assert_eq!(c["ipmi_sessions_closed"], 9, "{b}");
    assert_eq!(b["ipmi_sessions_open"], 0);
    assert_eq!(b["ipmi_handshakes_pending"], 0);
}

#[test]
fn bootdev_pxe_is_a_one_time_override() {
    require("ipmitool");
    let sim = Sim::start(1, &[]);
    let (ok, out) = sim.ipmitool(0, &["chassis", "bootdev", "pxe"]);
    assert!(ok && out.contains("Set Boot Device to pxe"), "{out}");
    let (ok, out) = sim.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
    assert!(ok, "{out}");
    assert!(out.contains("Force PXE"), "{out}");
    assert!(out.contains("Boot Flag Valid"), "{out}");
    assert!(out.contains("Options apply to only next boot"), "{out}");
    assert_eq!(sim.bmc(0)["boot_flags"]["device"], "pxe");

    // The next boot uses it, and the BMC clears the valid bit.
    sim.ipmitool(0, &["chassis", "power", "on"]);
    let b = sim.bmc(0);
    assert_eq!(b["last_boot_device"], "pxe", "{b}");
    assert_eq!(b["counters"]["host_pxe_boots"], 1);
    let (_, out) = sim.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
    assert!(out.contains("Boot Flag Invalid"), "{out}");
    sim.ipmitool(0, &["chassis", "power", "reset"]);
    let b = sim.bmc(0);
    assert_eq!(b["last_boot_device"], "default");
    assert_eq!(b["counters"]["host_pxe_boots"], 1, "PXE exactly once");
    assert_eq!(b["counters"]["host_boots"], 2);

    // The same override is what Redfish shows.
    let (ok, _) = sim.ipmitool(0, &["chassis", "bootdev", "pxe"]);
    assert!(ok);
    let (code, _, body) = sim.curl(0, &["-u", "admin:password"], "/redfish/v1/Systems/node0");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(v["Boot"]["BootSourceOverrideEnabled"], "Once");
}

#[test]
fn cipher_suites_one_to_three_and_discovery() {
    require("ipmitool");
    let sim = Sim::start(1, &["--power", "on"]);
    for suite in ["1", "2", "3"] {
        let (ok, out) = sim.ipmitool_as(
            0,
            USER,
            PASSWORD,
            &["-C", suite, "chassis", "power", "status"],
        );
        assert!(
            ok && out.contains("Chassis Power is on"),
            "suite {suite}: {out}"
        );
    }
    // Without -C, ipmitool asks for the channel's cipher suites and picks one.
    let (ok, out) = sim.ipmitool_as(0, USER, PASSWORD, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is on"), "{out}");
    let (ok, out) = sim.ipmitool_as(0, USER, PASSWORD, &["channel", "getciphers", "ipmi"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("hmac_sha1") && out.contains("aes_cbc_128"),
        "{out}"
    );
    // Suite 17 (SHA-256) and suite 0 (no authentication) are refused by name.
    for suite in ["17", "0"] {
        let (ok, out) = sim.ipmitool_as(
            0,
            USER,
            PASSWORD,
            &["-C", suite, "chassis", "power", "status"],
        );
        assert!(!ok, "suite {suite}: {out}");
        assert!(out.contains("invalid authentication algorithm"), "{out}");
    }
    let b = sim.bmc(0);
    assert_eq!(b["ipmi_sessions_open"], 0);
    assert_eq!(b["ipmi_handshakes_pending"], 0);
}

#[test]
fn a_wrong_password_or_user_is_refused_as_a_real_bmc_refuses_it() {
    require("ipmitool");
    let sim = Sim::start(1, &[]);
    // Unknown user: RAKP 2 carries status 0Dh, and the slot is freed at once.
    let (ok, out) = sim.ipmitool_as(
        0,
        "nobody",
        PASSWORD,
        &["-v", "-C", "3", "chassis", "power", "status"],
    );
    assert!(!ok);
    assert!(out.contains("unauthorized name"), "{out}");
    let b = sim.bmc(0);
    assert_eq!(b["counters"]["ipmi_auth_failures"], 1);
    assert_eq!(b["ipmi_handshakes_pending"], 0);

    // Wrong password: the BMC signs RAKP 2 with the real password, so the
    // client sees a code that does not verify; ipmitool gives up there and
    // its half-open session waits for the timeout, as on a real BMC.
    let (ok, out) = sim.ipmitool_as(
        0,
        USER,
        "wrong",
        &["-v", "-C", "3", "chassis", "power", "status"],
    );
    assert!(!ok);
    assert!(out.contains("RAKP 2 HMAC is invalid"), "{out}");
    let b = sim.bmc(0);
    assert_eq!(b["ipmi_sessions_open"], 0);
    assert_eq!(b["ipmi_handshakes_pending"], 1, "{b}");
}

/// One sessionless RMCP+ exchange by hand: the payload of the answer.
fn exchange(sock: &UdpSocket, payload_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x06,
        0x00,
        0xFF,
        0x07,
        0x06,
        payload_type,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    p.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    p.extend_from_slice(payload);
    sock.send(&p).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("an answer");
    assert_eq!(buf[5] & 0x3F, payload_type + 1, "answer type");
    let len = u16::from_le_bytes([buf[14], buf[15]]) as usize;
    assert_eq!(n, 16 + len);
    buf[16..16 + len].to_vec()
}

#[test]
fn a_rakp3_made_with_the_wrong_password_gets_rakp4_status_0f_and_frees_the_slot() {
    let sim = Sim::start(1, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(("127.0.0.1", sim.ipmi_port(0))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let console_sid = 0x4433_2211u32;

    let mut open = vec![0x01, 0x04, 0, 0];
    open.extend_from_slice(&console_sid.to_le_bytes());
    for kind in 0..3u8 {
        open.extend_from_slice(&[kind, 0, 0, 8, 1, 0, 0, 0]);
    }
    let r = exchange(&sock, 0x10, &open);
    assert_eq!(r[1], 0x00, "open session status");
    let bmc_sid = r[8..12].to_vec();
    assert_eq!(sim.bmc(0)["ipmi_handshakes_pending"], 1);

    let mut rakp1 = vec![0x02, 0, 0, 0];
    rakp1.extend_from_slice(&bmc_sid);
    rakp1.extend_from_slice(&[0x5A; 16]);
    rakp1.extend_from_slice(&[0x14, 0, 0, 5]);
    rakp1.extend_from_slice(b"admin");
    let r = exchange(&sock, 0x12, &rakp1);
    assert_eq!(r[1], 0x00, "RAKP 2 status");
    assert_eq!(
        r.len(),
        8 + 16 + 16 + 20,
        "RAKP 2 with a 20-byte HMAC-SHA1 code"
    );

    let mut rakp3 = vec![0x03, 0, 0, 0];
    rakp3.extend_from_slice(&bmc_sid);
    rakp3.extend_from_slice(&[0u8; 20]);
    let r = exchange(&sock, 0x14, &rakp3);
    assert_eq!(r[1], 0x0F, "RAKP 4: invalid integrity check value");
    assert_eq!(&r[4..8], &console_sid.to_le_bytes());

    let b = sim.bmc(0);
    assert_eq!(b["counters"]["ipmi_auth_failures"], 1);
    assert_eq!(b["ipmi_handshakes_pending"], 0, "{b}");
    assert_eq!(b["ipmi_sessions_open"], 0);

    // The session is gone: RAKP 3 again names an invalid session ID.
    let r = exchange(&sock, 0x14, &rakp3);
    assert_eq!(r[1], 0x02);
}

#[test]
fn asf_presence_ping_gets_a_pong() {
    let sim = Sim::start(1, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(("127.0.0.1", sim.ipmi_port(0))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send(&[
        0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x42, 0x00, 0x00,
    ])
    .unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(n, 28);
    assert_eq!((buf[8], buf[9]), (0x40, 0x42), "pong with our tag");
    assert_eq!(buf[20] & 0x80, 0x80, "IPMI supported");
    assert_eq!(sim.counter(0, "ipmi_pings"), 1);
}

#[test]
fn power_changes_show_after_the_configured_delay() {
    require("ipmitool");
    let sim = Sim::start(1, &["--power-delay", "1s"]);
    let (ok, _) = sim.ipmitool(0, &["chassis", "power", "on"]);
    assert!(ok);
    let (_, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is off"), "not yet: {out}");
    wait_until("power on after 1 s", Duration::from_secs(5), || {
        sim.ipmitool(0, &["chassis", "power", "status"])
            .1
            .contains("Chassis Power is on")
    });
    // Out-of-band power through the control port is immediate.
    sim.control("POST", "/bmcs/0/power/off");
    let (_, out) = sim.ipmitool(0, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is off"), "{out}");
    assert_eq!(
        sim.counter(0, "chassis_power_off"),
        0,
        "not a client command"
    );
}
