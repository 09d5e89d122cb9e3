//! The BMC's RMCP+ session table and session activation (IPMI v2.0 §13.17–
//! 13.24, §13.31–13.32): Open Session, RAKP 1–4 with RAKP-HMAC-SHA1, the keys
//! derived from it, a session limit, idle timeouts, privilege levels and the
//! inbound sequence-number window.

use std::time::{Duration, Instant};

use hmac::Mac;

use super::wire::{hmac_sha1, HmacSha1};
use crate::state::Counters;

/// RMCP+ status codes (table 13-15) this BMC sends.
pub mod status {
    pub const OK: u8 = 0x00;
    pub const NO_RESOURCES: u8 = 0x01;
    pub const INVALID_SESSION_ID: u8 = 0x02;
    pub const INVALID_AUTH_ALGORITHM: u8 = 0x04;
    pub const INVALID_INTEGRITY_ALGORITHM: u8 = 0x05;
    pub const INVALID_ROLE: u8 = 0x09;
    pub const INVALID_NAME_LENGTH: u8 = 0x0C;
    pub const UNAUTHORIZED_NAME: u8 = 0x0D;
    pub const INVALID_INTEGRITY_CHECK: u8 = 0x0F;
    pub const INVALID_CONFIDENTIALITY_ALGORITHM: u8 = 0x10;
    pub const NO_CIPHER_SUITE_MATCH: u8 = 0x11;
    pub const ILLEGAL_PARAMETER: u8 = 0x12;
}

/// Privilege levels.
pub const CALLBACK: u8 = 1;
pub const USER: u8 = 2;
pub const OPERATOR: u8 = 3;
pub const ADMIN: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Open Session answered; RAKP 1 expected.
    Opened,
    /// RAKP 2 sent; RAKP 3 expected.
    Rakp2Sent,
    Active,
}

#[derive(Clone)]
pub struct Session {
    pub bmc_sid: u32,
    pub console_sid: u32,
    pub stage: Stage,
    /// Integrity and confidentiality algorithms (0 none, 1 HMAC-SHA1-96 / AES-CBC-128).
    pub integrity: u8,
    pub confidentiality: u8,
    /// The privilege asked for in Open Session (0: the highest available).
    pub open_priv: u8,
    /// RAKP 1's role byte, exactly as sent (it enters every HMAC).
    pub role: u8,
    pub username: Vec<u8>,
    pub console_rand: [u8; 16],
    pub bmc_rand: [u8; 16],
    pub k1: [u8; 20],
    pub aes: [u8; 16],
    /// The ICV of RAKP 4, kept to answer a retransmitted RAKP 3 alike.
    pub rakp4_icv: [u8; 12],
    /// The highest privilege this session may take, and the one it has.
    pub max_priv: u8,
    pub priv_level: u8,
    pub in_highest: u32,
    /// Bit i: `in_highest - i` was received.
    pub in_seen: u32,
    pub out_seq: u32,
    pub last_activity: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("bmc_sid", &self.bmc_sid)
            .field("console_sid", &self.console_sid)
            .field("stage", &self.stage)
            .field("priv_level", &self.priv_level)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Accepts an inbound session sequence number once: anything above the
    /// highest seen so far, or one of the 16 below it not seen yet (§6.12.13).
    pub fn accept_seq(&mut self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.in_highest {
            let shift = seq - self.in_highest;
            self.in_seen = if shift >= 32 {
                0
            } else {
                self.in_seen << shift
            } | 1;
            self.in_highest = seq;
            return true;
        }
        let back = self.in_highest - seq;
        if back >= 16 || self.in_seen & (1 << back) != 0 {
            return false;
        }
        self.in_seen |= 1 << back;
        true
    }

    pub fn next_out_seq(&mut self) -> u32 {
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        self.out_seq
    }

    fn name_part(&self) -> Vec<u8> {
        let mut v = vec![self.role, self.username.len() as u8];
        v.extend_from_slice(&self.username);
        v
    }

    /// RAKP 2's key exchange authentication code:
    /// HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp2_code(&self, kuid: &[u8; 20], guid: &[u8; 16]) -> [u8; 20] {
        hmac_sha1(
            kuid,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                guid,
                &self.name_part(),
            ],
        )
    }

    /// Whether RAKP 3's code is HMAC_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp3_verifies(&self, kuid: &[u8; 20], code: &[u8]) -> bool {
        let mut m = <HmacSha1 as Mac>::new_from_slice(kuid).expect("any key length");
        m.update(&self.bmc_rand);
        m.update(&self.console_sid.to_le_bytes());
        m.update(&self.name_part());
        code.len() == 20 && m.verify_slice(code).is_ok()
    }

    /// Derives SIK, K1, K2 and RAKP 4's ICV (HMAC_SIK(Rm, SIDc, GUIDc), 96 bits),
    /// and activates the session at User privilege (or less, if that is its maximum).
    pub fn activate(&mut self, kuid: &[u8; 20], guid: &[u8; 16], now: Instant) {
        let sik = hmac_sha1(
            kuid,
            &[&self.console_rand, &self.bmc_rand, &self.name_part()],
        );
        self.k1 = hmac_sha1(&sik, &[&[1u8; 20]]);
        let k2 = hmac_sha1(&sik, &[&[2u8; 20]]);
        self.aes.copy_from_slice(&k2[..16]);
        let icv = hmac_sha1(
            &sik,
            &[&self.console_rand, &self.bmc_sid.to_le_bytes(), guid],
        );
        self.rakp4_icv.copy_from_slice(&icv[..12]);
        self.stage = Stage::Active;
        self.priv_level = USER.min(self.max_priv);
        self.last_activity = now;
    }
}

/// One BMC's sessions, active and half-open; both count against the limit,
/// as on real BMCs.
#[derive(Debug)]
pub struct IpmiSessions {
    pub limit: usize,
    pub list: Vec<Session>,
}

impl IpmiSessions {
    pub fn new(limit: usize) -> IpmiSessions {
        IpmiSessions {
            limit,
            list: Vec::new(),
        }
    }

    pub fn active(&self) -> usize {
        self.list
            .iter()
            .filter(|s| s.stage == Stage::Active)
            .count()
    }

    pub fn find(&mut self, bmc_sid: u32) -> Option<&mut Session> {
        self.list.iter_mut().find(|s| s.bmc_sid == bmc_sid)
    }

    pub fn remove(&mut self, bmc_sid: u32) -> Option<Session> {
        let i = self.list.iter().position(|s| s.bmc_sid == bmc_sid)?;
        Some(self.list.swap_remove(i))
    }

    /// Ends sessions idle for longer than `timeout` (half-open ones too).
    pub fn expire(&mut self, now: Instant, timeout: Duration, c: &mut Counters) {
        self.list.retain(|s| {
            let alive = now.saturating_duration_since(s.last_activity) < timeout;
            if !alive {
                if s.stage == Stage::Active {
                    c.ipmi_sessions_expired += 1;
                } else {
                    c.ipmi_handshakes_abandoned += 1;
                }
            }
            alive
        });
    }

    /// A new half-open session, or `None` when the table is full.
    pub fn open(
        &mut self,
        console_sid: u32,
        integrity: u8,
        confidentiality: u8,
        open_priv: u8,
        now: Instant,
    ) -> Option<&Session> {
        if self.list.len() >= self.limit {
            return None;
        }
        let mut bmc_sid = 0;
        while bmc_sid == 0 || self.list.iter().any(|s| s.bmc_sid == bmc_sid) {
            bmc_sid = rand::random();
        }
        self.list.push(Session {
            bmc_sid,
            console_sid,
            stage: Stage::Opened,
            integrity,
            confidentiality,
            open_priv,
            role: 0,
            username: Vec::new(),
            console_rand: [0; 16],
            bmc_rand: [0; 16],
            k1: [0; 20],
            aes: [0; 16],
            rakp4_icv: [0; 12],
            max_priv: ADMIN,
            priv_level: CALLBACK,
            in_highest: 0,
            in_seen: 0,
            out_seq: 0,
            last_activity: now,
        });
        self.list.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let mut t = IpmiSessions::new(1);
        t.open(1, 1, 1, 0, Instant::now()).unwrap().clone()
    }

    #[test]
    fn sequence_window() {
        let mut s = session();
        assert!(!s.accept_seq(0));
        assert!(s.accept_seq(1));
        assert!(!s.accept_seq(1), "replay");
        assert!(s.accept_seq(5));
        assert!(s.accept_seq(3), "late but new");
        assert!(!s.accept_seq(3));
        assert!(s.accept_seq(100));
        assert!(!s.accept_seq(84), "more than 16 behind");
        assert!(s.accept_seq(85));
    }

    #[test]
    fn table_limit_and_expiry() {
        let mut c = Counters::default();
        let t0 = Instant::now();
        let mut t = IpmiSessions::new(2);
        let a = t.open(1, 1, 1, 0, t0).unwrap().bmc_sid;
        t.open(2, 1, 1, 0, t0).unwrap();
        assert!(t.open(3, 1, 1, 0, t0).is_none());
        t.find(a).unwrap().stage = Stage::Active;
        t.expire(
            t0 + Duration::from_secs(61),
            Duration::from_secs(60),
            &mut c,
        );
        assert!(t.list.is_empty());
        assert_eq!(c.ipmi_sessions_expired, 1);
        assert_eq!(c.ipmi_handshakes_abandoned, 1);
    }
}
