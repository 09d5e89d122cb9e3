//! The fuzz targets of rack-agent, as plain functions: each takes the
//! fuzzer's bytes, feeds them to the agent's own decoder or loader, and
//! panics only when a property below is broken (or the code under test
//! panics, which is what the fuzzer looks for).
//!
//! - `fuzz_targets/*.rs` hand them to libFuzzer (`scripts/fuzz.sh`);
//! - `tests/replay.rs` runs every seed (`seeds/`) and every regression input
//!   (`regressions/`) through them on each `cargo test`, without libFuzzer.
//!
//! Inputs come from the network (IPMI datagrams, Redfish bodies, gRPC
//! request messages, client certificates) or from the operator (the config and
//! policy files), so none of them is trusted.

use std::path::Path;

use hmac::Mac;
use prost::Message;
use rack_agent::api::{auth, convert};
use rack_agent::bmc::ipmi::commands::{
    self, ChassisControl, CloseSession, Command, GetBootFlags, GetChassisStatus,
    GetSystemRestartCause, SetBootFlags, SetSessionPrivilege,
};
use rack_agent::bmc::ipmi::identity;
use rack_agent::bmc::ipmi::lan::packet::{self, payload, HmacSha1, Security};
use rack_agent::bmc::ipmi::lan::rakp::{self, Handshake};
use rack_agent::bmc::ipmi::{message, sdr, sel};
use rack_agent::bmc::redfish::{mapping, model};
use rack_agent::config::Config;
use rack_agent::engine::EngineError;
use rack_agent::model as m;
use rack_agent::policy::{Op, Policy};
use rack_agent::proto as pb;

/// Fixed session keys: the fuzzer cannot guess HMACs, so the packet target
/// also signs what it is given with K1 (see `ipmi_packet`).
const K1: [u8; 20] = [0x5a; 20];
const K2: [u8; 16] = [0xa5; 16];

fn security(mode: u8) -> Security {
    match mode % 3 {
        0 => Security::default(),
        1 => Security {
            integrity: Some(K1),
            confidentiality: None,
        },
        _ => Security {
            integrity: Some(K1),
            confidentiality: Some(K2),
        },
    }
}

/// RMCP+ framing (`bmc::ipmi::lan::packet`): a datagram from the BMC, in a
/// session with no keys, integrity only, or integrity and confidentiality
/// (chosen by the first byte).
///
/// 1. The bytes as received: an error or a packet, never a panic.
/// 2. The bytes with a correct HMAC-SHA1-96 appended (the fuzzer controls
///    the pad, the next-header byte, the ciphertext and its padding): this
///    reaches the trailer and AES-CBC checks that a forged code never passes.
/// 3. Round trip: what `encode` frames, `decode` gives back unchanged.
pub fn ipmi_packet(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sec = security(mode);
    if let Ok(inb) = packet::decode(rest, &sec) {
        assert!(inb.payload_type <= 0x3f);
        if sec.confidentiality.is_none() {
            assert!(inb.payload.len() <= rest.len());
        }
    }
    if rest.len() >= 4 {
        let mut signed = rest.to_vec();
        let mut mac = <HmacSha1 as Mac>::new_from_slice(&K1).expect("any key length");
        mac.update(&signed[4..]);
        signed.extend_from_slice(&mac.finalize().into_bytes()[..12]);
        let _ = packet::decode(&signed, &sec);
    }
    // IPMI messages are small (a LAN payload length is 16 bits; ours are
    // under 64 bytes): round trips are checked up to 1 KiB.
    if rest.len() <= 1024 {
        let iv: [u8; 16] = std::array::from_fn(|i| rest.get(i).copied().unwrap_or(0));
        let sid = u32::from_le_bytes(iv[..4].try_into().unwrap());
        let seq = u32::from_le_bytes(iv[4..8].try_into().unwrap());
        let framed = packet::encode(payload::IPMI, sid, seq, rest, &sec, iv);
        let back = packet::decode(&framed, &sec).expect("a framed packet decodes");
        assert_eq!(back.payload, rest);
        assert_eq!((back.session_id, back.seq), (sid, seq));
        assert_eq!(back.authenticated, sec.integrity.is_some());
    }
    if let Some(key) = sec.confidentiality {
        if let Ok(plain) = packet::decrypt(&key, rest) {
            assert!(plain.len() + 17 <= rest.len());
        }
    }
}

/// Everything that reads a session payload: the IPMI message layer
/// (`bmc::ipmi::message`), RMCP+ activation (`bmc::ipmi::lan::rakp`: Open
/// Session Response, RAKP 2 and 4, and the checks of their codes) and the
/// typed command decoders (`bmc::ipmi::commands`).
pub fn ipmi_session(data: &[u8]) {
    if let Ok(r) = message::decode_response(data) {
        assert_eq!(r.data().len() + 8, data.len());
        assert_eq!(message::checksum(&data[3..]), 0);
        let _ = message::completion_meaning(r.cc());
    }
    if let Ok(o) = rakp::decode_open_session_response(data) {
        let _ = rakp::status_meaning(o.status);
    }
    let hs = Handshake {
        console_sid: 0xA0A1_A2A3,
        bmc_sid: 0x0403_0201,
        console_rand: [1; 16],
        bmc_rand: [2; 16],
        bmc_guid: [3; 16],
        username: data.iter().take(16).copied().collect(),
        kuid: [4; 20],
    };
    if let Ok(r2) = rakp::decode_rakp2(data) {
        if r2.status == 0 {
            assert_eq!(r2.auth_code.len(), 20);
        }
        let _ = hs.rakp2_matches(&r2.auth_code);
    }
    if let Ok(r4) = rakp::decode_rakp4(data) {
        let _ = hs.rakp4_matches(&hs.sik(), &r4.icv);
    }
    // Codes of any length are refused, never a panic.
    let _ = hs.rakp2_matches(data);
    let _ = hs.rakp4_matches(&[9; 20], data);

    command::<GetChassisStatus>(data);
    command::<GetSystemRestartCause>(data);
    command::<GetBootFlags>(data);
    command::<SetSessionPrivilege>(data);
    command::<ChassisControl>(data);
    command::<CloseSession>(data);
    command::<commands::GetDeviceId>(data);
    if let Ok(flags) = commands::decode::<GetBootFlags>(data) {
        // What was read can be written back.
        let m = commands::Message::from(SetBootFlags(flags));
        assert_eq!((m.cmd(), m.data().len(), m.data()[0]), (0x08, 6, 0x05));
    }
    if let Ok(c) = commands::decode::<GetSystemRestartCause>(data) {
        assert!(!c.cause.describe().is_empty());
    }
    if let Ok(id) = commands::decode::<commands::GetDeviceId>(data) {
        let who = identity::from_device_id(&id);
        assert!(who.bmc_manufacturer.is_some() && who.firmware_version.is_some());
    }
}

fn command<C: Command>(data: &[u8]) {
    let _ = commands::decode::<C>(data);
    if let Some(&cc) = data.first() {
        let _ = C::completion_meaning(cc);
    }
}

/// The Redfish models (`bmc::redfish::model`) and what the driver computes
/// from them (`bmc::redfish::mapping`): a body from the BMC, read as each
/// resource the driver reads. A body either parses or is an error.
pub fn redfish_json(data: &[u8]) {
    use model::*;
    if let Ok(sys) = serde_json::from_slice::<ComputerSystem>(data) {
        let marker = mapping::restart_marker(&sys);
        assert_eq!(marker.is_some(), mapping::has_restart_evidence(&sys));
        if let Some(p) = &sys.power_state {
            let _ = mapping::power(p);
            assert_eq!(PowerState::from(p.as_str()), *p);
        }
        let allowed = sys
            .actions
            .as_ref()
            .and_then(|a| a.reset.as_ref())
            .and_then(|r| r.allowable_values.as_deref());
        for op in mapping::power_ops(allowed) {
            let t = mapping::reset_type_for(op, allowed).expect("an offered op has a reset type");
            assert!(allowed.is_none_or(|a| a.contains(&t)));
        }
        if let Some(boot) = &sys.boot {
            for d in mapping::boot_devices(boot.target_allowable.as_deref()) {
                let _ = mapping::boot_source(d).to_string();
            }
        }
    }
    if let Ok(root) = serde_json::from_slice::<ServiceRoot>(data) {
        let _ = root.sessions_link();
    }
    let _ = serde_json::from_slice::<Collection>(data);
    if let Ok(info) = serde_json::from_slice::<ActionInfo>(data) {
        if let Some(values) = info.allowable("ResetType") {
            let types = mapping::reset_types(values);
            let _ = mapping::power_ops(Some(&types));
        }
    }
    let _ = serde_json::from_slice::<SessionService>(data);
    let _ = serde_json::from_slice::<Session>(data);
    let _ = serde_json::from_slice::<Manager>(data);
    if let Ok(vm) = serde_json::from_slice::<VirtualMedia>(data) {
        let _ = vm.is_optical();
    }
    if let Ok(task) = serde_json::from_slice::<Task>(data) {
        let _ = task.task_state.as_ref().map(TaskState::is_final);
        let _ = messages_text(&task.messages);
    }
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(data) {
        let _ = body.text();
    }
    // Every enum keeps the value it was given, known or not.
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(ResetType::from(s).as_str(), s);
        assert_eq!(BootSource::from(s).as_str(), s);
        assert_eq!(TaskState::from(s).as_str(), s);
    }
}

/// The daemon's config loader (`config::Config::parse`): any text either
/// loads or is refused with an error that names the file; every server entry
/// of a config that loads is then handed to its driver's option parser, as
/// the daemon does at connect.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match Config::parse(text, path) {
        Ok(c) => {
            for s in &c.servers {
                let _ = match s.protocol {
                    rack_agent::bmc::Protocol::Ipmi => {
                        rack_agent::bmc::ipmi::options::Options::parse(&s.options).map(|_| ())
                    }
                    rack_agent::bmc::Protocol::Redfish => {
                        rack_agent::bmc::redfish::options::RedfishOptions::parse(&s.options)
                            .map(|_| ())
                    }
                };
            }
            durations_are_usable(&c);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("fuzz.toml"),
                "the error does not name the file: {msg}"
            );
        }
    }
}

/// The daemon adds the configured durations to the clock and to each other
/// (deadlines, the watchdog interval): a config the loader accepts must not
/// make that arithmetic overflow later, at run time.
fn durations_are_usable(c: &Config) {
    let t = &c.timeouts;
    let now = std::time::Instant::now();
    for d in [
        t.bmc_command,
        t.soft_reboot,
        t.graceful_stop,
        t.power_confirm,
        t.confirm_poll,
        t.shutdown_grace,
        c.sync.interval,
        c.sync.jitter,
    ] {
        assert!(
            d.checked_mul(4)
                .and_then(|d4| now.checked_add(d4))
                .is_some(),
            "an accepted duration of {d:?} overflows the clock"
        );
    }
}

/// The policy loader (`policy::Policy::parse`): any text either loads or is
/// refused naming the file; a policy that loads decides every operation.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, Path::new("fuzz-policy.toml")) {
        Ok(p) => {
            let admin = m::Caller {
                id: "ops".into(),
                project_id: None,
                roles: vec!["admin".into()],
            };
            let tenant = m::Caller {
                id: "t".into(),
                project_id: Some("p1".into()),
                roles: vec![],
            };
            for op in [
                Op::Enroll,
                Op::Remove,
                Op::Read,
                Op::Reboot,
                Op::Start,
                Op::Stop,
                Op::Reinstall,
                Op::ResetState,
                Op::Lock,
                Op::Unlock,
            ] {
                // Every rule lets an admin through, and refuses a stranger by naming itself.
                if p.check(&admin, op, Some("p1")).is_err() {
                    assert_eq!(p.rule(op), rack_agent::policy::Rule::Owner);
                }
                if let Err(d) = p.check(&tenant, op, Some("p2")) {
                    assert_eq!(d.rule, p.rule(op).as_str());
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz-policy.toml"), "{msg}");
        }
    }
}

/// How long a refusal may be: the field, the reason and at most
/// `ECHO_MAX_CHARS` characters of the value, escaped (a control character
/// escapes to at most 10 bytes).
const REFUSAL_MAX_BYTES: usize = 200 + 10 * m::ECHO_MAX_CHARS;

/// A refusal names the field, is short, and never repeats a long value whole.
fn refusal(err: impl ToString, field: &str, value: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(field),
        "{field}: the refusal does not name it: {msg}"
    );
    assert!(
        msg.len() <= REFUSAL_MAX_BYTES,
        "{field}: a {}-byte refusal",
        msg.len()
    );
    if value.chars().count() > m::ECHO_MAX_CHARS {
        assert!(
            !msg.contains(value),
            "{field}: the refusal repeats the value whole"
        );
    }
}

fn engine_refusal(r: Result<impl Sized, EngineError>, field: &str, value: &str) {
    match r {
        Ok(_) => {}
        Err(EngineError::InvalidArgument(msg)) => refusal(msg, field, value),
        Err(e) => panic!("{field}: refused as {e:?}, not as an invalid argument"),
    }
}

/// The API's request checks (`api::convert`, the id, text and URL rules of
/// `model`) on request messages as the gRPC layer decodes them from the
/// wire, and the identity read from a client certificate (`api::auth`).
/// The first byte chooses the message; the rest is its protobuf encoding.
pub fn api_request(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let Ok(req) = pb::EnrollServerRequest::decode(bytes) else {
                return;
            };
            // A password is never repeated, not even in part: the refusal is
            // the same whatever the password says (its length may matter).
            let mut masked = req.clone();
            if let Some(pb::bmc_endpoint::Secret::Password(p)) =
                masked.bmc.as_mut().and_then(|b| b.secret.as_mut())
            {
                *p = "*".repeat(p.len());
            }
            if let Err(e) = convert::enroll(req) {
                let msg = e.to_string();
                assert!(
                    msg.len() <= REFUSAL_MAX_BYTES,
                    "a {}-byte refusal",
                    msg.len()
                );
                let other = convert::enroll(masked)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                assert_eq!(other, Err(msg), "the refusal depends on the password");
            }
        }
        1 => {
            let Ok(req) = pb::RebootRequest::decode(bytes) else {
                return;
            };
            engine_refusal(
                convert::id("server_id", &req.server_id),
                "server_id",
                &req.server_id,
            );
            engine_refusal(convert::reboot(req.r#type), "type", "");
            if !req.request_id.is_empty() {
                let r = m::validate_id("request_id", &req.request_id);
                if let Err(msg) = r {
                    refusal(msg, "request_id", &req.request_id);
                }
            }
        }
        2 => {
            let Ok(req) = pb::ReinstallRequest::decode(bytes) else {
                return;
            };
            match convert::reinstall(req.boot_source.clone()) {
                Ok(rack_agent::engine::ActionRequest::Reinstall(
                    rack_agent::engine::BootSource::VirtualMedia(url),
                )) => {
                    if let Err(msg) = m::validate_media_url("virtual_media_url", &url) {
                        refusal(&msg, "virtual_media_url", &url);
                        // The URL is never repeated: it may hold a secret.
                        if url.len() >= 16 {
                            assert!(!msg.contains(&url), "the refusal repeats the URL: {msg}");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => refusal(e, "boot source", ""),
            }
        }
        3 => {
            let Ok(req) = pb::ResetStateRequest::decode(bytes) else {
                return;
            };
            engine_refusal(convert::reset_state(req.state), "target", "");
        }
        4 => {
            let Ok(req) = pb::ListActionsRequest::decode(bytes) else {
                return;
            };
            engine_refusal(
                convert::id("server_id", &req.server_id),
                "server_id",
                &req.server_id,
            );
            engine_refusal(
                convert::action_page_token(&req.page_token),
                "page_token",
                &req.page_token,
            );
            let n = convert::page_size(req.page_size);
            assert!((1..=500).contains(&n));
        }
        _ => {
            // A client certificate (DER) as the TLS layer hands it over.
            match auth::from_certificate(bytes) {
                Ok(caller) => {
                    m::validate_id("id", &caller.id).expect("the CN follows the id rule");
                    if let Some(p) = &caller.project_id {
                        m::validate_id("project", p).expect("the O follows the id rule");
                    }
                }
                Err(EngineError::Unauthenticated(msg)) => {
                    assert!(
                        msg.len() <= REFUSAL_MAX_BYTES,
                        "a {}-byte refusal",
                        msg.len()
                    );
                }
                Err(e) => panic!("a certificate refused as {e:?}"),
            }
        }
    }
}

/// A fuzz target: the fuzzer's bytes in, a panic when something is wrong.
pub type Target = fn(&[u8]);

/// SDR records and SEL entries as a BMC stores them (`bmc::ipmi::sdr`,
/// `bmc::ipmi::sel`): the first byte chooses the decoder (even: an SDR
/// record, then a Get Sensor Reading answer for the sensor it describes,
/// taken from the bytes after the record's declared length; odd: a SEL
/// entry).
///
/// 1. Never a panic (the crate underneath panics on some short records; the
///    driver checks first).
/// 2. A decoded sensor's name fits the record's 5-bit ID length (decoded:
///    BCD plus and 6-bit packed names are text, not a list of bytes); a reading
///    keeps the sensor's name, unit and thresholds, and a value only when
///    it is finite.
/// 3. A SEL entry always decodes to an event with the id asked for, and
///    the raw bytes in hex.
pub fn ipmi_records(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let end = rest
            .get(4)
            .map(|l| (5 + *l as usize).min(rest.len()))
            .unwrap_or(rest.len());
        let (record, answer) = rest.split_at(end);
        if let Ok(Some(def)) = sdr::decode_record(0x0012, record) {
            // 31 bytes of ID string: at most 62 BCD digits or 41 packed characters.
            assert!(def.name.chars().count() <= 62, "{:?}", def.name);
            if let Some(r) = sdr::reading_from_answer(&def, answer) {
                assert_eq!(r.name, def.name);
                assert_eq!(r.unit, def.unit);
                assert_eq!(r.thresholds, def.thresholds);
                assert!(r.value.is_none_or(f64::is_finite));
            }
        }
    } else {
        let d = sel::decode(0x0042, rest);
        assert_eq!(d.event.id, "0x0042");
        assert_eq!(d.event.raw.len(), rest.len() * 2);
    }
}

/// Every target, by name, for the replay test and the seed writer.
pub const TARGETS: &[(&str, Target)] = &[
    ("ipmi_packet", ipmi_packet),
    ("ipmi_records", ipmi_records),
    ("ipmi_session", ipmi_session),
    ("redfish_json", redfish_json),
    ("config", config),
    ("policy", policy),
    ("api_request", api_request),
];
