//! RMCP / IPMI v2.0 session framing (IPMI v2.0 §13.6 table 13-8, §13.28,
//! §13.29): the RMCP header, the RMCP+ session header, the integrity trailer
//! (HMAC-SHA1-96 over the session header and payload) and the AES-CBC-128
//! confidentiality wrapper of the payload.

use aes::Aes128;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::bmc::ipmi::message::DecodeError;

pub type HmacSha1 = Hmac<Sha1>;

/// RMCP version 1.0, reserved, sequence 0xFF (no RMCP ACK), class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
/// Authentication type / format: RMCP+.
const AUTH_RMCP_PLUS: u8 = 0x06;
const NEXT_HEADER: u8 = 0x07;
/// HMAC-SHA1-96: the first 12 bytes of the HMAC.
const AUTH_CODE_LEN: usize = 12;
const SESSION_HEADER_LEN: usize = 4 + 12;

/// Payload types (table 13-16).
pub mod payload {
    pub const IPMI: u8 = 0x00;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP1: u8 = 0x12;
    pub const RAKP2: u8 = 0x13;
    pub const RAKP3: u8 = 0x14;
    pub const RAKP4: u8 = 0x15;
}

/// The keys of an active session; both `None` before activation.
#[derive(Clone, Default)]
pub struct Security {
    /// K1, for HMAC-SHA1-96 integrity.
    pub integrity: Option<[u8; 20]>,
    /// The first 16 bytes of K2, for AES-CBC-128.
    pub confidentiality: Option<[u8; 16]>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("integrity", &self.integrity.is_some())
            .field("confidentiality", &self.confidentiality.is_some())
            .finish()
    }
}

/// A packet as received, after integrity check and decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub payload_type: u8,
    pub session_id: u32,
    pub seq: u32,
    pub authenticated: bool,
    pub payload: Vec<u8>,
}

fn hmac(key: &[u8]) -> HmacSha1 {
    // HMAC accepts keys of any length.
    <HmacSha1 as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Frames a payload. `iv` is used only when the session encrypts.
pub fn encode(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    sec: &Security,
    iv: [u8; 16],
) -> Vec<u8> {
    let body = match &sec.confidentiality {
        Some(key) => encrypt(key, iv, payload),
        None => payload.to_vec(),
    };
    let mut ptype = payload_type & 0x3f;
    if sec.confidentiality.is_some() {
        ptype |= 0x80;
    }
    if sec.integrity.is_some() {
        ptype |= 0x40;
    }
    let mut p = Vec::with_capacity(SESSION_HEADER_LEN + body.len() + 20);
    p.extend_from_slice(&RMCP_HEADER);
    p.push(AUTH_RMCP_PLUS);
    p.push(ptype);
    p.extend_from_slice(&session_id.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&(body.len() as u16).to_le_bytes());
    p.extend_from_slice(&body);
    if let Some(k1) = &sec.integrity {
        // Pad so that AuthType..NextHeader is a multiple of 4 bytes.
        let covered = 12 + body.len() + 2;
        let pad = (4 - covered % 4) % 4;
        p.extend(std::iter::repeat_n(0xFF, pad));
        p.push(pad as u8);
        p.push(NEXT_HEADER);
        let mut mac = hmac(k1);
        mac.update(&p[4..]);
        let code = mac.finalize().into_bytes();
        p.extend_from_slice(&code[..AUTH_CODE_LEN]);
    }
    p
}

/// Parses a datagram, checks its integrity code and decrypts it. A session that
/// has keys accepts only packets protected with them.
pub fn decode(buf: &[u8], sec: &Security) -> Result<Inbound, DecodeError> {
    if buf.len() < SESSION_HEADER_LEN {
        return Err(DecodeError::Short {
            what: "RMCP+ packet",
            len: buf.len(),
            need: SESSION_HEADER_LEN,
        });
    }
    if buf[..4] != RMCP_HEADER {
        return Err(DecodeError::Invalid("not an RMCP IPMI-class packet".into()));
    }
    if buf[4] != AUTH_RMCP_PLUS {
        return Err(DecodeError::Invalid(format!(
            "session format {:#04x} is not RMCP+ (IPMI v2.0)",
            buf[4]
        )));
    }
    let encrypted = buf[5] & 0x80 != 0;
    let authenticated = buf[5] & 0x40 != 0;
    let payload_type = buf[5] & 0x3f;
    let session_id = u32::from_le_bytes([buf[6], buf[7], buf[8], buf[9]]);
    let seq = u32::from_le_bytes([buf[10], buf[11], buf[12], buf[13]]);
    let len = u16::from_le_bytes([buf[14], buf[15]]) as usize;
    let end = SESSION_HEADER_LEN + len;
    if buf.len() < end {
        return Err(DecodeError::Short {
            what: "RMCP+ payload",
            len: buf.len() - SESSION_HEADER_LEN,
            need: len,
        });
    }
    match (&sec.integrity, authenticated) {
        (Some(k1), true) => {
            let trailer = &buf[end..];
            if trailer.len() < 2 + AUTH_CODE_LEN {
                return Err(DecodeError::Short {
                    what: "RMCP+ integrity trailer",
                    len: trailer.len(),
                    need: 2 + AUTH_CODE_LEN,
                });
            }
            let code_at = buf.len() - AUTH_CODE_LEN;
            let pad = buf[code_at - 2] as usize;
            if buf[code_at - 1] != NEXT_HEADER || end + pad + 2 != code_at {
                return Err(DecodeError::Invalid(
                    "malformed RMCP+ integrity trailer".into(),
                ));
            }
            let mut mac = hmac(k1);
            mac.update(&buf[4..code_at]);
            mac.verify_truncated_left(&buf[code_at..])
                .map_err(|_| DecodeError::Invalid("RMCP+ integrity check failed".into()))?;
        }
        (Some(_), false) => {
            return Err(DecodeError::Invalid(
                "unauthenticated packet in an authenticated session".into(),
            ))
        }
        (None, true) => {
            return Err(DecodeError::Invalid(
                "authenticated packet outside an authenticated session".into(),
            ))
        }
        (None, false) => {}
    }
    let body = &buf[SESSION_HEADER_LEN..end];
    let payload = match (&sec.confidentiality, encrypted) {
        (Some(key), true) => decrypt(key, body)?,
        (Some(_), false) => {
            return Err(DecodeError::Invalid(
                "unencrypted packet in an encrypted session".into(),
            ))
        }
        (None, true) => {
            return Err(DecodeError::Invalid(
                "encrypted packet outside an encrypted session".into(),
            ))
        }
        (None, false) => body.to_vec(),
    };
    Ok(Inbound {
        payload_type,
        session_id,
        seq,
        authenticated,
        payload,
    })
}

/// AES-CBC-128 with the IPMI confidentiality trailer (§13.29): the plaintext
/// is padded with 1, 2, 3.. then the pad length, to a multiple of 16; the IV
/// goes first.
pub fn encrypt(key: &[u8; 16], iv: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let pad = (16 - (payload.len() + 1) % 16) % 16;
    let mut plain = payload.to_vec();
    plain.extend(1..=pad as u8);
    plain.push(pad as u8);
    let n = plain.len();
    cbc::Encryptor::<Aes128>::new(key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, n)
        .expect("plaintext is a multiple of the block size");
    let mut out = iv.to_vec();
    out.extend_from_slice(&plain);
    out
}

/// The inverse of [`encrypt`], checking the padding.
pub fn decrypt(key: &[u8; 16], body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if body.len() < 32 || !body.len().is_multiple_of(16) {
        return Err(DecodeError::Invalid(format!(
            "encrypted payload of {} bytes is not IV + whole AES blocks",
            body.len()
        )));
    }
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&body[..16]);
    let mut data = body[16..].to_vec();
    cbc::Decryptor::<Aes128>::new(key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .map_err(|_| DecodeError::Invalid("AES-CBC decryption failed".into()))?;
    let pad = *data.last().unwrap_or(&0) as usize;
    if pad >= 16 || pad + 1 > data.len() {
        return Err(DecodeError::Invalid(
            "bad confidentiality pad length".into(),
        ));
    }
    let body_len = data.len() - 1 - pad;
    if data[body_len..data.len() - 1]
        .iter()
        .enumerate()
        .any(|(i, b)| *b as usize != i + 1)
    {
        return Err(DecodeError::Invalid("bad confidentiality pad bytes".into()));
    }
    data.truncate(body_len);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessionless_packet_layout() {
        let p = encode(
            payload::OPEN_SESSION_REQUEST,
            0,
            0,
            &[0xAA, 0xBB],
            &Security::default(),
            [0; 16],
        );
        assert_eq!(
            p,
            vec![
                0x06, 0x00, 0xFF, 0x07, // RMCP
                0x06, 0x10, // RMCP+, open session request, clear
                0, 0, 0, 0, 0, 0, 0, 0, // session id, sequence
                0x02, 0x00, // length
                0xAA, 0xBB
            ]
        );
        let d = decode(&p, &Security::default()).unwrap();
        assert_eq!(d.payload_type, payload::OPEN_SESSION_REQUEST);
        assert_eq!(d.payload, vec![0xAA, 0xBB]);
    }

    fn keys() -> Security {
        Security {
            integrity: Some([0x11; 20]),
            confidentiality: Some([0x22; 16]),
        }
    }

    #[test]
    fn authenticated_encrypted_round_trip_and_layout() {
        let sec = keys();
        let payload = [1, 2, 3, 4, 5, 6, 7];
        let p = encode(payload::IPMI, 0x0102_0304, 9, &payload, &sec, [0x33; 16]);
        assert_eq!(p[5], 0xC0);
        assert_eq!(&p[6..10], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(&p[10..14], &[9, 0, 0, 0]);
        // IV + one block.
        assert_eq!(&p[14..16], &[32, 0]);
        assert_eq!(&p[16..32], &[0x33; 16]);
        // 12 + 32 + 2 = 46 -> 2 bytes of pad to 48.
        assert_eq!(&p[48..52], &[0xFF, 0xFF, 0x02, 0x07]);
        assert_eq!(p.len(), 52 + 12);
        let d = decode(&p, &sec).unwrap();
        assert_eq!(d.payload, payload.to_vec());
        assert_eq!((d.session_id, d.seq), (0x0102_0304, 9));
    }

    #[test]
    fn every_corruption_and_truncation_is_rejected() {
        let sec = keys();
        let p = encode(payload::IPMI, 7, 1, &[9; 20], &sec, [0x44; 16]);
        for n in 0..p.len() {
            assert!(decode(&p[..n], &sec).is_err(), "prefix of {n}");
        }
        for i in 0..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad, &sec).is_err(), "bit flip at {i}");
        }
    }

    #[test]
    fn packets_must_match_the_session_protection() {
        let clear = encode(payload::IPMI, 7, 1, &[1], &Security::default(), [0; 16]);
        assert!(decode(&clear, &keys()).is_err());
        let protected = encode(payload::IPMI, 7, 1, &[1], &keys(), [0; 16]);
        assert!(decode(&protected, &Security::default()).is_err());
    }

    #[test]
    fn aes_padding_follows_the_spec() {
        let key = [7u8; 16];
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).collect();
            let c = encrypt(&key, [1; 16], &payload);
            assert_eq!(c.len() % 16, 0);
            assert_eq!(decrypt(&key, &c).unwrap(), payload);
        }
        assert!(decrypt(&key, &[0u8; 31]).is_err());
        assert!(decrypt(&key, &[0u8; 16]).is_err());
    }

    #[test]
    fn hmac_sha1_matches_rfc2202_case_2() {
        let mut m = hmac(b"Jefe");
        m.update(b"what do ya want for nothing?");
        let out = m.finalize().into_bytes();
        assert_eq!(
            out[..],
            [
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ]
        );
    }
}
