//! RMCP+ session activation (IPMI v2.0 §13.17–13.20, §13.31–13.32): the
//! Open Session request/response, RAKP messages 1–4, and the keys derived from
//! them (SIK, K1, K2) for the RAKP-HMAC-SHA1 authentication algorithm.

use hmac::Mac;

use super::packet::HmacSha1;
use crate::bmc::ipmi::message::DecodeError;

/// A cipher suite: authentication, integrity and confidentiality algorithms
/// (table 22-20). Only the SHA-1 family is implemented: ipmi_sim 2.0.33, the
/// bench peer, does not support SHA-256 (suite 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    pub id: u8,
    /// 0x01 RAKP-HMAC-SHA1.
    pub auth: u8,
    /// 0x00 none, 0x01 HMAC-SHA1-96.
    pub integrity: u8,
    /// 0x00 none, 0x01 AES-CBC-128.
    pub confidentiality: u8,
}

impl CipherSuite {
    /// Suites 1–3. Suite 0 (no authentication at all) is refused on purpose.
    pub fn by_id(id: u8) -> Option<CipherSuite> {
        let (auth, integrity, confidentiality) = match id {
            1 => (0x01, 0x00, 0x00),
            2 => (0x01, 0x01, 0x00),
            3 => (0x01, 0x01, 0x01),
            _ => return None,
        };
        Some(CipherSuite {
            id,
            auth,
            integrity,
            confidentiality,
        })
    }
}

/// Requested maximum privilege: administrator. RAKP 1 also sets bit 4,
/// "name-only lookup" (the user is found by name, the role is only requested).
pub const ADMIN: u8 = 0x04;
const NAME_ONLY_LOOKUP: u8 = 0x10;

/// The meaning of an RMCP+ status code (table 13-15).
pub fn status_meaning(code: u8) -> &'static str {
    match code {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "reserved status code",
    }
}

fn short(what: &'static str, b: &[u8], need: usize) -> Result<(), DecodeError> {
    if b.len() < need {
        return Err(DecodeError::Short {
            what,
            len: b.len(),
            need,
        });
    }
    Ok(())
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// RMCP+ Open Session Request (table 13-9).
pub fn open_session_request(tag: u8, console_sid: u32, suite: &CipherSuite) -> Vec<u8> {
    let mut m = vec![tag, ADMIN, 0, 0];
    m.extend_from_slice(&console_sid.to_le_bytes());
    for (kind, alg) in [
        (0u8, suite.auth),
        (1, suite.integrity),
        (2, suite.confidentiality),
    ] {
        m.extend_from_slice(&[kind, 0, 0, 0x08, alg, 0, 0, 0]);
    }
    m
}

/// RMCP+ Open Session Response (table 13-10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub bmc_sid: u32,
    /// Algorithms the BMC chose: authentication, integrity, confidentiality.
    pub algorithms: [u8; 3],
}

pub fn decode_open_session_response(b: &[u8]) -> Result<OpenSessionResponse, DecodeError> {
    short("Open Session Response", b, 2)?;
    if b[1] != 0 {
        // An error response may stop after the status (or the console ID).
        return Ok(OpenSessionResponse {
            tag: b[0],
            status: b[1],
            console_sid: if b.len() >= 8 { le32(&b[4..8]) } else { 0 },
            bmc_sid: 0,
            algorithms: [0; 3],
        });
    }
    short("Open Session Response", b, 36)?;
    Ok(OpenSessionResponse {
        tag: b[0],
        status: 0,
        console_sid: le32(&b[4..8]),
        bmc_sid: le32(&b[8..12]),
        algorithms: [b[16], b[24], b[32]],
    })
}

/// RAKP Message 1 (table 13-11).
pub fn rakp1(tag: u8, bmc_sid: u32, console_rand: &[u8; 16], username: &[u8]) -> Vec<u8> {
    let mut m = vec![tag, 0, 0, 0];
    m.extend_from_slice(&bmc_sid.to_le_bytes());
    m.extend_from_slice(console_rand);
    m.extend_from_slice(&[ADMIN | NAME_ONLY_LOOKUP, 0, 0, username.len() as u8]);
    m.extend_from_slice(username);
    m
}

/// RAKP Message 2 (table 13-12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub bmc_rand: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth_code: Vec<u8>,
}

pub fn decode_rakp2(b: &[u8]) -> Result<Rakp2, DecodeError> {
    short("RAKP Message 2", b, 2)?;
    let mut r = Rakp2 {
        tag: b[0],
        status: b[1],
        console_sid: 0,
        bmc_rand: [0; 16],
        bmc_guid: [0; 16],
        auth_code: Vec::new(),
    };
    if r.status != 0 {
        return Ok(r);
    }
    // RAKP-HMAC-SHA1: a 20-byte key exchange authentication code.
    short("RAKP Message 2", b, 40 + 20)?;
    r.console_sid = le32(&b[4..8]);
    r.bmc_rand.copy_from_slice(&b[8..24]);
    r.bmc_guid.copy_from_slice(&b[24..40]);
    r.auth_code = b[40..60].to_vec();
    Ok(r)
}

/// RAKP Message 3 (table 13-13).
pub fn rakp3(tag: u8, bmc_sid: u32, auth_code: &[u8]) -> Vec<u8> {
    let mut m = vec![tag, 0, 0, 0];
    m.extend_from_slice(&bmc_sid.to_le_bytes());
    m.extend_from_slice(auth_code);
    m
}

/// RAKP Message 3 reporting an error in RAKP 2 (status, reserved, managed
/// system session ID only): tells the BMC to drop the half-open session.
pub fn rakp3_error(tag: u8, bmc_sid: u32, status: u8) -> Vec<u8> {
    let mut m = vec![tag, status, 0, 0];
    m.extend_from_slice(&bmc_sid.to_le_bytes());
    m
}

/// RAKP Message 4 (table 13-14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub icv: Vec<u8>,
}

pub fn decode_rakp4(b: &[u8]) -> Result<Rakp4, DecodeError> {
    short("RAKP Message 4", b, 2)?;
    if b[1] != 0 {
        return Ok(Rakp4 {
            tag: b[0],
            status: b[1],
            console_sid: 0,
            icv: Vec::new(),
        });
    }
    // HMAC-SHA1-96 integrity check value.
    short("RAKP Message 4", b, 8 + 12)?;
    Ok(Rakp4 {
        tag: b[0],
        status: 0,
        console_sid: le32(&b[4..8]),
        icv: b[8..20].to_vec(),
    })
}

/// Everything both sides know after RAKP 2, and the codes and keys computed
/// from it (§13.31, §13.32).
pub struct Handshake {
    pub console_sid: u32,
    pub bmc_sid: u32,
    pub console_rand: [u8; 16],
    pub bmc_rand: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub username: Vec<u8>,
    /// Kuid: the password, zero-padded to 20 bytes.
    pub kuid: [u8; 20],
}

impl Handshake {
    fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
        let mut m = <HmacSha1 as Mac>::new_from_slice(key).expect("any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn role_and_name(&self) -> Vec<u8> {
        let mut v = vec![ADMIN | NAME_ONLY_LOOKUP, self.username.len() as u8];
        v.extend_from_slice(&self.username);
        v
    }

    /// What the BMC must have sent in RAKP 2:
    /// HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp2_code(&self) -> [u8; 20] {
        Self::mac(
            &self.kuid,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &self.role_and_name(),
            ],
        )
    }

    /// Whether RAKP 2's code proves the BMC knows the same password (constant time).
    pub fn rakp2_matches(&self, code: &[u8]) -> bool {
        let mut m = <HmacSha1 as Mac>::new_from_slice(&self.kuid).expect("any key length");
        m.update(&self.console_sid.to_le_bytes());
        m.update(&self.bmc_sid.to_le_bytes());
        m.update(&self.console_rand);
        m.update(&self.bmc_rand);
        m.update(&self.bmc_guid);
        m.update(&self.role_and_name());
        m.verify_slice(code).is_ok()
    }

    /// What we send in RAKP 3: HMAC_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp3_code(&self) -> [u8; 20] {
        Self::mac(
            &self.kuid,
            &[
                &self.bmc_rand,
                &self.console_sid.to_le_bytes(),
                &self.role_and_name(),
            ],
        )
    }

    /// Session Integrity Key: HMAC_Kg(Rm, Rc, ROLEm, ULENGTHm, UNAMEm), with
    /// Kg = Kuid (no BMC key configured).
    pub fn sik(&self) -> [u8; 20] {
        Self::mac(
            &self.kuid,
            &[&self.console_rand, &self.bmc_rand, &self.role_and_name()],
        )
    }

    /// Whether RAKP 4's integrity check value, HMAC_SIK(Rm, SIDc, GUIDc)
    /// truncated to 96 bits, is right (constant time).
    pub fn rakp4_matches(&self, sik: &[u8; 20], icv: &[u8]) -> bool {
        let mut m = <HmacSha1 as Mac>::new_from_slice(sik).expect("any key length");
        m.update(&self.console_rand);
        m.update(&self.bmc_sid.to_le_bytes());
        m.update(&self.bmc_guid);
        icv.len() == 12 && m.verify_truncated_left(icv).is_ok()
    }

    /// K1 (integrity) and K2 (confidentiality): HMAC_SIK(const 0x01/0x02 * 20).
    pub fn derived_key(sik: &[u8; 20], n: u8) -> [u8; 20] {
        Self::mac(sik, &[&[n; 20]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite3() -> CipherSuite {
        CipherSuite::by_id(3).unwrap()
    }

    #[test]
    fn suites() {
        assert_eq!(
            CipherSuite::by_id(3),
            Some(CipherSuite {
                id: 3,
                auth: 1,
                integrity: 1,
                confidentiality: 1
            })
        );
        assert_eq!(CipherSuite::by_id(1).unwrap().integrity, 0);
        assert!(CipherSuite::by_id(0).is_none());
        assert!(CipherSuite::by_id(17).is_none());
    }

    #[test]
    fn open_session_request_layout() {
        let m = open_session_request(0x2A, 0xA0A1_A2A3, &suite3());
        assert_eq!(
            m,
            vec![
                0x2A, 0x04, 0x00, 0x00, // tag, max privilege admin, reserved
                0xA3, 0xA2, 0xA1, 0xA0, // console session id
                0x00, 0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0x00, // RAKP-HMAC-SHA1
                0x01, 0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0x00, // HMAC-SHA1-96
                0x02, 0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0x00, // AES-CBC-128
            ]
        );
    }

    #[test]
    fn open_session_response_decoding() {
        let mut b = vec![0x2A, 0x00, 0x04, 0x00, 0xA3, 0xA2, 0xA1, 0xA0, 1, 2, 3, 4];
        for (kind, alg) in [(0u8, 1u8), (1, 1), (2, 1)] {
            b.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
        }
        let r = decode_open_session_response(&b).unwrap();
        assert_eq!(r.console_sid, 0xA0A1_A2A3);
        assert_eq!(r.bmc_sid, 0x0403_0201);
        assert_eq!(r.algorithms, [1, 1, 1]);
        for n in 0..b.len() {
            if n < 2 {
                assert!(decode_open_session_response(&b[..n]).is_err());
            } else {
                // Truncated success responses are errors, never panics.
                assert!(decode_open_session_response(&b[..n]).is_err(), "{n}");
            }
        }
        // Error status: the rest is optional.
        let r = decode_open_session_response(&[0x2A, 0x11]).unwrap();
        assert_eq!(r.status, 0x11);
    }

    #[test]
    fn rakp1_and_rakp3_layouts() {
        let m = rakp1(7, 0x1122_3344, &[0xEE; 16], b"admin");
        let mut want = vec![7, 0, 0, 0, 0x44, 0x33, 0x22, 0x11];
        want.extend_from_slice(&[0xEE; 16]);
        want.extend_from_slice(&[0x14, 0, 0, 5]);
        want.extend_from_slice(b"admin");
        assert_eq!(m, want);
        assert_eq!(
            rakp3_error(9, 0x1122_3344, 0x0F),
            vec![9, 0x0F, 0, 0, 0x44, 0x33, 0x22, 0x11]
        );
        let m = rakp3(8, 0x1122_3344, &[0xCD; 20]);
        let mut want = vec![8, 0, 0, 0, 0x44, 0x33, 0x22, 0x11];
        want.extend_from_slice(&[0xCD; 20]);
        assert_eq!(m, want);
    }

    fn handshake() -> Handshake {
        let mut kuid = [0u8; 20];
        kuid[..8].copy_from_slice(b"password");
        Handshake {
            console_sid: 0xA0A1_A2A3,
            bmc_sid: 0x0403_0201,
            console_rand: [1; 16],
            bmc_rand: [2; 16],
            bmc_guid: [3; 16],
            username: b"admin".to_vec(),
            kuid,
        }
    }

    #[test]
    fn rakp2_and_rakp4_decoding_and_checks() {
        let h = handshake();
        let mut b = vec![7, 0, 0, 0, 0xA3, 0xA2, 0xA1, 0xA0];
        b.extend_from_slice(&[2; 16]);
        b.extend_from_slice(&[3; 16]);
        b.extend_from_slice(&h.rakp2_code());
        let r = decode_rakp2(&b).unwrap();
        assert_eq!(r.console_sid, h.console_sid);
        assert!(h.rakp2_matches(&r.auth_code));
        let mut wrong = h.kuid;
        wrong[0] ^= 1;
        let other = Handshake {
            kuid: wrong,
            ..handshake()
        };
        assert!(!other.rakp2_matches(&r.auth_code));
        for n in 0..b.len() {
            assert!(decode_rakp2(&b[..n]).is_err(), "{n}");
        }
        assert_eq!(decode_rakp2(&[7, 0x0D]).unwrap().status, 0x0D);

        let sik = h.sik();
        let mut m = <HmacSha1 as Mac>::new_from_slice(&sik).unwrap();
        m.update(&h.console_rand);
        m.update(&h.bmc_sid.to_le_bytes());
        m.update(&h.bmc_guid);
        let icv = m.finalize().into_bytes();
        let mut b4 = vec![7, 0, 0, 0, 0xA3, 0xA2, 0xA1, 0xA0];
        b4.extend_from_slice(&icv[..12]);
        let r4 = decode_rakp4(&b4).unwrap();
        assert!(h.rakp4_matches(&sik, &r4.icv));
        assert!(!h.rakp4_matches(&Handshake::derived_key(&sik, 1), &r4.icv));
        for n in 0..b4.len() {
            assert!(decode_rakp4(&b4[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn keys_differ_and_are_deterministic() {
        let h = handshake();
        let sik = h.sik();
        assert_eq!(sik, handshake().sik());
        let k1 = Handshake::derived_key(&sik, 1);
        let k2 = Handshake::derived_key(&sik, 2);
        assert_ne!(k1, k2);
        assert_ne!(h.rakp2_code(), h.rakp3_code());
    }
}
