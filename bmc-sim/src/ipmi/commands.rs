//! IPMI commands the simulated BMC answers, each after its table in the IPMI
//! v2.0 specification, with the privilege level the specification requires
//! (appendix G): a session that has not raised its privilege cannot control
//! the chassis, as on real BMCs.

use std::time::Instant;

use super::session::{self, CALLBACK, OPERATOR, USER};
use super::wire::Request;
use crate::state::{cause, BmcState, BootFlags};
use crate::Sim;

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

/// Completion codes (table 5-2).
pub mod cc {
    pub const OK: u8 = 0x00;
    pub const PARAM_NOT_SUPPORTED: u8 = 0x80;
    pub const SET_IN_PROGRESS: u8 = 0x81;
    pub const PRIV_EXCEEDS_LIMIT: u8 = 0x81;
    pub const INVALID_SESSION_ID: u8 = 0x87;
    pub const INVALID_COMMAND: u8 = 0xC1;
    pub const BAD_LENGTH: u8 = 0xC7;
    pub const INVALID_DATA: u8 = 0xCC;
    pub const INSUFFICIENT_PRIVILEGE: u8 = 0xD4;
    pub const NOT_IN_PRESENT_STATE: u8 = 0xD5;
}

/// The answer to one command, and a session to close once it is sent.
pub struct Outcome {
    pub cc: u8,
    pub data: Vec<u8>,
    pub close: Option<u32>,
}

fn answer(cc: u8, data: Vec<u8>) -> Outcome {
    Outcome {
        cc,
        data,
        close: None,
    }
}

fn fail(cc: u8) -> Outcome {
    answer(cc, Vec::new())
}

/// The privilege a command needs; `None` for a command this BMC does not have.
fn required(netfn: u8, cmd: u8) -> Option<u8> {
    Some(match (netfn, cmd) {
        (NETFN_APP, 0x01) => USER,                          // Get Device ID
        (NETFN_APP, 0x38 | 0x54 | 0x3B | 0x3C) => CALLBACK, // auth caps, ciphers, privilege, close
        (NETFN_CHASSIS, 0x01 | 0x07) => USER,               // status, restart cause
        (NETFN_CHASSIS, 0x02 | 0x08 | 0x09) => OPERATOR,    // control, boot options
        _ => return None,
    })
}

/// Get Channel Authentication Capabilities (table 22-15), before or in a
/// session. Only RMCP+ logins exist here: no IPMI v1.5 authentication types.
pub fn channel_auth_capabilities(data: &[u8]) -> Outcome {
    if data.len() < 2 {
        return fail(cc::BAD_LENGTH);
    }
    let channel = data[0] & 0x0F;
    let v2 = data[0] & 0x80 != 0;
    let privilege = data[1] & 0x0F;
    if !(channel == 0x0E || channel == 0x01) || privilege == 0 || privilege > 5 {
        return fail(cc::INVALID_DATA);
    }
    answer(
        cc::OK,
        vec![
            0x01,                         // channel number
            if v2 { 0x80 } else { 0x00 }, // v2.0 extended data; no v1.5 auth types
            0x04,                         // non-null user names enabled, KG default
            if v2 { 0x02 } else { 0x00 }, // IPMI v2.0 connections supported
            0x00,
            0x00,
            0x00, // OEM ID
            0x00, // OEM auxiliary data
        ],
    )
}

/// Get Channel Cipher Suites (table 22-18): suites 1, 2 and 3.
pub fn channel_cipher_suites(data: &[u8]) -> Outcome {
    if data.len() < 3 {
        return fail(cc::BAD_LENGTH);
    }
    if data[1] != 0x00 {
        return fail(cc::INVALID_DATA);
    }
    const BY_SUITE: [u8; 15] = [
        0xC0, 0x01, 0x01, 0x40, 0x80, // suite 1: RAKP-HMAC-SHA1, none, none
        0xC0, 0x02, 0x01, 0x41, 0x80, // suite 2: + HMAC-SHA1-96
        0xC0, 0x03, 0x01, 0x41, 0x81, // suite 3: + AES-CBC-128
    ];
    const ALGORITHMS: [u8; 5] = [0x01, 0x40, 0x41, 0x80, 0x81];
    let records: &[u8] = if data[2] & 0x80 != 0 {
        &BY_SUITE
    } else {
        &ALGORITHMS
    };
    let start = ((data[2] & 0x3F) as usize * 16).min(records.len());
    let end = (start + 16).min(records.len());
    let mut out = vec![0x01];
    out.extend_from_slice(&records[start..end]);
    answer(cc::OK, out)
}

/// Runs a command inside the active session at `idx`.
pub fn run(st: &mut BmcState, idx: usize, rq: &Request<'_>, sim: &Sim, now: Instant) -> Outcome {
    let Some(need) = required(rq.netfn, rq.cmd) else {
        return fail(cc::INVALID_COMMAND);
    };
    let session = &st.ipmi.list[idx];
    if session.priv_level < need {
        return fail(cc::INSUFFICIENT_PRIVILEGE);
    }
    let d = rq.data;
    let delay = sim.power_delay;
    match (rq.netfn, rq.cmd) {
        (NETFN_APP, 0x01) => answer(
            cc::OK,
            vec![
                0x20, // device ID
                0x01, // device revision
                0x01, // firmware 1.00, normal operation
                0x00, 0x02, // IPMI 2.0
                0x80, // chassis device
                0x00, 0x00, 0x00, // manufacturer: none
                0x53, 0x49, // product "SI"
                0x00, 0x00, 0x00, 0x00,
            ],
        ),
        (NETFN_APP, 0x38) => channel_auth_capabilities(d),
        (NETFN_APP, 0x54) => channel_cipher_suites(d),
        (NETFN_APP, 0x3B) => {
            // Set Session Privilege Level (table 22-24).
            if d.is_empty() {
                return fail(cc::BAD_LENGTH);
            }
            let want = d[0] & 0x0F;
            let s = &mut st.ipmi.list[idx];
            match want {
                0 => {}
                1..=4 if want <= s.max_priv => s.priv_level = want,
                1..=4 => return fail(cc::PRIV_EXCEEDS_LIMIT),
                _ => return fail(cc::INVALID_DATA),
            }
            answer(cc::OK, vec![s.priv_level])
        }
        (NETFN_APP, 0x3C) => {
            // Close Session (table 22-25): this one or another of this BMC.
            if d.len() < 4 {
                return fail(cc::BAD_LENGTH);
            }
            let sid = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            let exists = st
                .ipmi
                .list
                .iter()
                .any(|s| s.bmc_sid == sid && s.stage == session::Stage::Active);
            if sid == 0 || !exists {
                return fail(cc::INVALID_SESSION_ID);
            }
            Outcome {
                cc: cc::OK,
                data: Vec::new(),
                close: Some(sid),
            }
        }
        (NETFN_CHASSIS, 0x01) => {
            // Get Chassis Status (table 28-3).
            let on = st.host.settle(now, &mut st.c);
            answer(
                cc::OK,
                vec![
                    on as u8 | 0x20, // power, restore policy "previous"
                    st.host.last_power_event,
                    0x00,
                    0x00,
                ],
            )
        }
        (NETFN_CHASSIS, 0x02) => {
            // Chassis Control (table 28-4).
            if d.is_empty() {
                return fail(cc::BAD_LENGTH);
            }
            let (host, c) = (&mut st.host, &mut st.c);
            let result = match d[0] & 0x0F {
                0x0 => {
                    c.chassis_power_off += 1;
                    host.power_off(now, delay, c);
                    Ok(())
                }
                0x1 => {
                    c.chassis_power_on += 1;
                    host.power_on(now, delay, c);
                    Ok(())
                }
                0x2 => {
                    c.chassis_power_cycle += 1;
                    host.power_cycle(now, delay, c)
                }
                0x3 => {
                    c.chassis_hard_reset += 1;
                    host.restart(now, delay, cause::CHASSIS_CONTROL, c)
                }
                0x4 => {
                    c.chassis_diag_interrupt += 1;
                    Ok(())
                }
                0x5 => {
                    // Soft shutdown via ACPI: the simulated OS obeys.
                    c.chassis_soft_off += 1;
                    host.power_off(now, delay, c);
                    Ok(())
                }
                _ => return fail(cc::INVALID_DATA),
            };
            match result {
                Ok(()) => fail(cc::OK),
                Err(_) => {
                    c.chassis_refused += 1;
                    fail(cc::NOT_IN_PRESENT_STATE)
                }
            }
        }
        (NETFN_CHASSIS, 0x07) => {
            // Get System Restart Cause (table 28-11).
            st.host.settle(now, &mut st.c);
            answer(cc::OK, vec![st.host.restart_cause & 0x0F, 0x01])
        }
        (NETFN_CHASSIS, 0x08) => set_boot_option(st, d),
        (NETFN_CHASSIS, 0x09) => {
            // Get System Boot Options (table 28-13).
            if d.len() < 3 {
                return fail(cc::BAD_LENGTH);
            }
            let param = d[0] & 0x7F;
            let mut out = vec![0x01, param];
            match param {
                0 => out.push(st.host.boot_set_in_progress),
                4 => out.extend_from_slice(&st.host.boot_info_ack),
                5 => out.extend_from_slice(&st.host.boot.0),
                _ => return fail(cc::PARAM_NOT_SUPPORTED),
            }
            answer(cc::OK, out)
        }
        _ => fail(cc::INVALID_COMMAND),
    }
}

/// Set System Boot Options (table 28-14): parameters 0 (set in progress),
/// 4 (boot info acknowledge) and 5 (boot flags), which is what `ipmitool
/// chassis bootdev` and the agent send.
fn set_boot_option(st: &mut BmcState, d: &[u8]) -> Outcome {
    if d.is_empty() {
        return fail(cc::BAD_LENGTH);
    }
    let rest = &d[1..];
    match d[0] & 0x7F {
        0 => {
            let Some(&v) = rest.first() else {
                return fail(cc::BAD_LENGTH);
            };
            match v & 0x03 {
                1 if st.host.boot_set_in_progress == 1 => return fail(cc::SET_IN_PROGRESS),
                3 => return fail(cc::INVALID_DATA),
                v => st.host.boot_set_in_progress = v,
            }
        }
        4 => {
            if rest.len() < 2 {
                return fail(cc::BAD_LENGTH);
            }
            let (mask, bits) = (rest[0], rest[1]);
            let ack = &mut st.host.boot_info_ack;
            ack[0] = mask;
            ack[1] = (ack[1] & !mask) | (bits & mask);
        }
        5 => {
            if rest.len() < 5 {
                return fail(cc::BAD_LENGTH);
            }
            let mut b = [0u8; 5];
            b.copy_from_slice(&rest[..5]);
            st.host.boot = BootFlags(b);
            st.c.boot_options_set += 1;
        }
        _ => return fail(cc::PARAM_NOT_SUPPORTED),
    }
    fail(cc::OK)
}
