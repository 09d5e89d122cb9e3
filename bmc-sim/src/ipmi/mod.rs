//! The IPMI v2.0 (RMCP+ over UDP) side of a simulated BMC, written from the
//! specification as an independent peer of the agent's client: [`handle`]
//! turns one datagram into at most one answer; [`io`] moves datagrams.
//!
//! What a client gets, as from a real BMC:
//! - ASF presence ping → pong;
//! - Get Channel Authentication Capabilities and Get Channel Cipher Suites
//!   before a session (IPMI v1.5 or v2.0 framing);
//! - Open Session with cipher suites 1, 2, 3 (anything else is refused with
//!   the RMCP+ status naming the algorithm), RAKP 1–4 with RAKP-HMAC-SHA1;
//!   an unknown user gets RAKP 2 status 0Dh; a wrong password shows as a RAKP 2
//!   code that does not verify at the client and, if the client goes on, RAKP 4
//!   status 0Fh; both free the session slot;
//! - a full session table refuses Open Session with status 01h;
//! - in a session: integrity (HMAC-SHA1-96) and confidentiality (AES-CBC-128)
//!   checked and applied, sequence numbers checked (replays dropped), idle
//!   timeout, privilege levels, and the commands of [`commands`].
//!
//! Anything malformed, unauthentic or for an unknown session is dropped
//! without an answer, which is what BMCs do.

pub mod commands;
pub mod io;
pub mod session;
pub mod wire;

use std::time::Instant;

use self::commands::{Outcome, NETFN_APP};
use self::session::{status, Stage, ADMIN};
use self::wire::{ptype, Frame, Protection, V20};
use crate::state::{Bmc, BmcState};
use crate::Sim;

/// One datagram in, at most one datagram out.
pub fn handle(sim: &Sim, bmc: &Bmc, d: &[u8]) -> Option<Vec<u8>> {
    let now = Instant::now();
    let mut guard = bmc.lock();
    let st = &mut *guard;
    st.c.ipmi_packets += 1;
    st.ipmi.expire(now, sim.limits.ipmi_timeout, &mut st.c);
    let out = match wire::parse(d) {
        None => None,
        Some(Frame::Ping { tag }) => {
            st.c.ipmi_pings += 1;
            Some(wire::pong(tag))
        }
        Some(Frame::V15 { msg }) => presession(st, msg).map(|m| wire::encode_v15(&m)),
        Some(Frame::V20(p)) => v20(sim, bmc, st, &p, now),
    };
    if out.is_none() {
        st.c.ipmi_dropped += 1;
    }
    out
}

/// A command outside any session: only the two that open the way to one.
fn presession(st: &mut BmcState, msg: &[u8]) -> Option<Vec<u8>> {
    let rq = wire::parse_request(msg)?;
    let o = match (rq.netfn, rq.cmd) {
        (NETFN_APP, 0x38) => commands::channel_auth_capabilities(rq.data),
        (NETFN_APP, 0x54) => commands::channel_cipher_suites(rq.data),
        _ => return None,
    };
    st.c.ipmi_presession += 1;
    Some(wire::encode_response(&rq, o.cc, &o.data))
}

fn clear(payload_type: u8, body: &[u8]) -> Vec<u8> {
    wire::encode_v20(payload_type, 0, 0, body, Protection::default())
}

fn v20(sim: &Sim, bmc: &Bmc, st: &mut BmcState, p: &V20<'_>, now: Instant) -> Option<Vec<u8>> {
    let sessionless = p.session_id == 0 && !p.authenticated && !p.encrypted;
    match p.payload_type {
        ptype::OPEN_SESSION_REQUEST if sessionless => {
            open_session(st, p.payload, now).map(|b| clear(ptype::OPEN_SESSION_RESPONSE, &b))
        }
        ptype::RAKP1 if sessionless => {
            rakp1(sim, bmc, st, p.payload, now).map(|b| clear(ptype::RAKP2, &b))
        }
        ptype::RAKP3 if sessionless => {
            rakp3(sim, bmc, st, p.payload, now).map(|b| clear(ptype::RAKP4, &b))
        }
        ptype::IPMI if sessionless => presession(st, p.payload).map(|m| clear(ptype::IPMI, &m)),
        ptype::IPMI if p.session_id != 0 => in_session(sim, st, p, now),
        _ => None,
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// RMCP+ Open Session Request (table 13-9) → Response (table 13-10).
fn open_session(st: &mut BmcState, b: &[u8], now: Instant) -> Option<Vec<u8>> {
    if b.len() < 8 {
        return None;
    }
    let tag = b[0];
    let requested = b[1] & 0x0F;
    let console_sid = le32(&b[4..8]);
    let refuse = |code: u8| {
        let mut r = vec![tag, code, 0, 0];
        r.extend_from_slice(&console_sid.to_le_bytes());
        Some(r)
    };
    if b.len() < 32 {
        return refuse(status::ILLEGAL_PARAMETER);
    }
    // Three 8-byte algorithm payloads: type, reserved, reserved, length 8, algorithm.
    let alg = |at: usize, kind: u8| (b[at] == kind).then_some(b[at + 4] & 0x3F);
    let (Some(auth), Some(integrity), Some(confidentiality)) = (alg(8, 0), alg(16, 1), alg(24, 2))
    else {
        return refuse(status::ILLEGAL_PARAMETER);
    };
    if requested > ADMIN {
        return refuse(status::INVALID_ROLE);
    }
    if auth != 0x01 {
        // Only RAKP-HMAC-SHA1 (suites 1-3). Suite 0 (none) is never offered.
        return refuse(status::INVALID_AUTH_ALGORITHM);
    }
    if integrity > 0x01 {
        return refuse(status::INVALID_INTEGRITY_ALGORITHM);
    }
    if confidentiality > 0x01 {
        return refuse(status::INVALID_CONFIDENTIALITY_ALGORITHM);
    }
    if integrity == 0 && confidentiality == 1 {
        return refuse(status::NO_CIPHER_SUITE_MATCH);
    }
    let Some(s) = st
        .ipmi
        .open(console_sid, integrity, confidentiality, requested, now)
    else {
        st.c.ipmi_sessions_refused += 1;
        return refuse(status::NO_RESOURCES);
    };
    let bmc_sid = s.bmc_sid;
    st.c.ipmi_sessions_opened += 1;
    let mut r = vec![
        tag,
        status::OK,
        if requested == 0 { ADMIN } else { requested },
        0,
    ];
    r.extend_from_slice(&console_sid.to_le_bytes());
    r.extend_from_slice(&bmc_sid.to_le_bytes());
    for (kind, alg) in [(0u8, auth), (1, integrity), (2, confidentiality)] {
        r.extend_from_slice(&[kind, 0, 0, 0x08, alg, 0, 0, 0]);
    }
    Some(r)
}

/// RAKP Message 1 (table 13-11) → RAKP Message 2 (table 13-12).
fn rakp1(sim: &Sim, bmc: &Bmc, st: &mut BmcState, b: &[u8], now: Instant) -> Option<Vec<u8>> {
    if b.len() < 8 {
        return None;
    }
    let tag = b[0];
    let bmc_sid = le32(&b[4..8]);
    let refuse = |code: u8, console_sid: u32| {
        let mut r = vec![tag, code, 0, 0];
        r.extend_from_slice(&console_sid.to_le_bytes());
        Some(r)
    };
    let Some(s) = st
        .ipmi
        .find(bmc_sid)
        .filter(|s| matches!(s.stage, Stage::Opened | Stage::Rakp2Sent))
    else {
        return refuse(status::INVALID_SESSION_ID, 0);
    };
    let console_sid = s.console_sid;
    if b.len() < 28 {
        return refuse(status::ILLEGAL_PARAMETER, console_sid);
    }
    let role = b[24];
    let ulen = b[27] as usize;
    let failure = if ulen > 16 || b.len() < 28 + ulen {
        Some(status::INVALID_NAME_LENGTH)
    } else if &b[28..28 + ulen] != sim.user.as_bytes() {
        Some(status::UNAUTHORIZED_NAME)
    } else if !(1..=ADMIN).contains(&(role & 0x0F)) {
        Some(status::INVALID_ROLE)
    } else {
        None
    };
    if let Some(code) = failure {
        // The slot is freed at once: the client cannot go on.
        st.ipmi.remove(bmc_sid);
        st.c.ipmi_auth_failures += 1;
        return refuse(code, console_sid);
    }
    s.console_rand.copy_from_slice(&b[8..24]);
    s.bmc_rand = rand::random();
    s.role = role;
    s.username = b[28..28 + ulen].to_vec();
    s.max_priv = (role & 0x0F).min(ADMIN);
    s.stage = Stage::Rakp2Sent;
    s.last_activity = now;
    let code = s.rakp2_code(&sim.kuid, &bmc.guid);
    let mut r = vec![tag, status::OK, 0, 0];
    r.extend_from_slice(&console_sid.to_le_bytes());
    r.extend_from_slice(&s.bmc_rand);
    r.extend_from_slice(&bmc.guid);
    r.extend_from_slice(&code);
    Some(r)
}

/// RAKP Message 3 (table 13-13) → RAKP Message 4 (table 13-14).
fn rakp3(sim: &Sim, bmc: &Bmc, st: &mut BmcState, b: &[u8], now: Instant) -> Option<Vec<u8>> {
    if b.len() < 8 {
        return None;
    }
    let tag = b[0];
    let client_status = b[1];
    let bmc_sid = le32(&b[4..8]);
    let refuse = |code: u8, console_sid: u32| {
        let mut r = vec![tag, code, 0, 0];
        r.extend_from_slice(&console_sid.to_le_bytes());
        Some(r)
    };
    let Some(s) = st.ipmi.find(bmc_sid) else {
        return refuse(status::INVALID_SESSION_ID, 0);
    };
    let console_sid = s.console_sid;
    if client_status != status::OK {
        // The console gives up (RAKP 2 did not verify): free the slot, say nothing.
        if s.stage != Stage::Active {
            st.ipmi.remove(bmc_sid);
            st.c.ipmi_handshakes_abandoned += 1;
        }
        return None;
    }
    let code = b.get(8..28)?;
    match s.stage {
        // A retransmitted RAKP 3 (our RAKP 4 was lost): answer it alike.
        Stage::Active if s.rakp3_verifies(&sim.kuid, code) => {}
        Stage::Rakp2Sent if s.rakp3_verifies(&sim.kuid, code) => {
            s.activate(&sim.kuid, &bmc.guid, now);
            st.c.ipmi_sessions_created += 1;
        }
        Stage::Rakp2Sent => {
            // Wrong password: the console's code was made with another key.
            st.ipmi.remove(bmc_sid);
            st.c.ipmi_auth_failures += 1;
            return refuse(status::INVALID_INTEGRITY_CHECK, console_sid);
        }
        _ => return refuse(status::INVALID_SESSION_ID, console_sid),
    }
    let s = st.ipmi.find(bmc_sid)?;
    let mut r = vec![tag, status::OK, 0, 0];
    r.extend_from_slice(&console_sid.to_le_bytes());
    r.extend_from_slice(&s.rakp4_icv);
    Some(r)
}

/// An IPMI message in an active session: checked, run, answered with the
/// session's protection.
fn in_session(sim: &Sim, st: &mut BmcState, p: &V20<'_>, now: Instant) -> Option<Vec<u8>> {
    let idx = st
        .ipmi
        .list
        .iter()
        .position(|s| s.bmc_sid == p.session_id && s.stage == Stage::Active)?;
    let s = &mut st.ipmi.list[idx];
    let wants_integrity = s.integrity == 1;
    if p.authenticated != wants_integrity || p.encrypted != (s.confidentiality == 1) {
        return None;
    }
    if wants_integrity && !wire::verify_integrity(p, &s.k1) {
        return None;
    }
    let plain;
    let msg = if s.confidentiality == 1 {
        plain = wire::decrypt(&s.aes, p.payload)?;
        &plain[..]
    } else {
        p.payload
    };
    let rq = wire::parse_request(msg)?;
    if !s.accept_seq(p.seq) {
        return None;
    }
    s.last_activity = now;
    st.c.ipmi_requests += 1;
    let Outcome { cc, data, close } = commands::run(st, idx, &rq, sim, now);
    let reply = wire::encode_response(&rq, cc, &data);
    let s = &mut st.ipmi.list[idx];
    let seq = s.next_out_seq();
    let prot = Protection {
        k1: (s.integrity == 1).then_some(&s.k1),
        aes: (s.confidentiality == 1).then_some(&s.aes),
    };
    let out = wire::encode_v20(ptype::IPMI, s.console_sid, seq, &reply, prot);
    if let Some(sid) = close {
        st.ipmi.remove(sid);
        st.c.ipmi_sessions_closed += 1;
    }
    Some(out)
}
