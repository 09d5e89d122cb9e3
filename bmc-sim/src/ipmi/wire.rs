//! The bytes on the wire, BMC side (IPMI v2.0 §13): RMCP, ASF presence
//! ping/pong, the IPMI v1.5 session wrapper (pre-session commands only), the
//! RMCP+ session wrapper with its integrity trailer (HMAC-SHA1-96) and
//! confidentiality (AES-CBC-128), and IPMI LAN messages with their checksums.

use aes::Aes128;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;

pub type HmacSha1 = Hmac<Sha1>;

pub const RMCP_VERSION: u8 = 0x06;
pub const CLASS_ASF: u8 = 0x06;
pub const CLASS_IPMI: u8 = 0x07;
pub const AUTH_NONE: u8 = 0x00;
pub const AUTH_RMCP_PLUS: u8 = 0x06;
/// The BMC's slave address.
pub const BMC_SA: u8 = 0x20;
const ASF_IANA: [u8; 4] = [0x00, 0x00, 0x11, 0xBE];

/// RMCP+ payload types (table 13-16).
pub mod ptype {
    pub const IPMI: u8 = 0x00;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP1: u8 = 0x12;
    pub const RAKP2: u8 = 0x13;
    pub const RAKP3: u8 = 0x14;
    pub const RAKP4: u8 = 0x15;
}

pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut m = <HmacSha1 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A datagram, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// ASF presence ping with its message tag.
    Ping { tag: u8 },
    /// IPMI v1.5 session wrapper, no authentication, session 0: a message.
    V15 { msg: &'a [u8] },
    /// RMCP+ session wrapper.
    V20(V20<'a>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct V20<'a> {
    pub payload_type: u8,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub seq: u32,
    /// The payload as sent (still encrypted when `encrypted`).
    pub payload: &'a [u8],
    /// The whole datagram, for the integrity check.
    pub datagram: &'a [u8],
    /// Where the payload ends in `datagram`.
    pub payload_end: usize,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Classifies a datagram; `None` for anything a BMC ignores.
pub fn parse(d: &[u8]) -> Option<Frame<'_>> {
    if d.len() < 4 || d[0] != RMCP_VERSION {
        return None;
    }
    match d[3] & 0x1F {
        CLASS_ASF => {
            // IANA 4542, message type 80h = presence ping.
            if d.len() >= 12 && d[4..8] == ASF_IANA && d[8] == 0x80 {
                Some(Frame::Ping { tag: d[9] })
            } else {
                None
            }
        }
        CLASS_IPMI => match *d.get(4)? {
            AUTH_NONE => {
                // auth type, seq (4), session id (4), length, message.
                if d.len() < 14 {
                    return None;
                }
                let sid = le32(&d[9..13]);
                let len = d[13] as usize;
                if sid != 0 || d.len() < 14 + len {
                    return None;
                }
                Some(Frame::V15 {
                    msg: &d[14..14 + len],
                })
            }
            AUTH_RMCP_PLUS => {
                if d.len() < 16 {
                    return None;
                }
                let len = u16::from_le_bytes([d[14], d[15]]) as usize;
                let end = 16 + len;
                if d.len() < end {
                    return None;
                }
                Some(Frame::V20(V20 {
                    payload_type: d[5] & 0x3F,
                    encrypted: d[5] & 0x80 != 0,
                    authenticated: d[5] & 0x40 != 0,
                    session_id: le32(&d[6..10]),
                    seq: le32(&d[10..14]),
                    payload: &d[16..end],
                    datagram: d,
                    payload_end: end,
                }))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Checks the integrity trailer of an authenticated RMCP+ packet: pad of
/// 0xFF to a multiple of 4 from the auth type on, pad length, next header
/// 07h, then HMAC-SHA1-96 (K1) over everything from the auth type on.
pub fn verify_integrity(p: &V20<'_>, k1: &[u8; 20]) -> bool {
    let d = p.datagram;
    if d.len() < p.payload_end + 2 + 12 {
        return false;
    }
    let code_at = d.len() - 12;
    let pad = d[code_at - 2] as usize;
    if d[code_at - 1] != 0x07 || p.payload_end + pad + 2 != code_at || pad > 3 {
        return false;
    }
    if !(code_at - 4).is_multiple_of(4) {
        return false;
    }
    let mut m = <HmacSha1 as Mac>::new_from_slice(k1).expect("any key length");
    m.update(&d[4..code_at]);
    m.verify_truncated_left(&d[code_at..]).is_ok()
}

/// AES-CBC-128 payload (§13.29): IV, then blocks whose plaintext ends with
/// the pad bytes 1, 2, .. and the pad length.
pub fn decrypt(key: &[u8; 16], body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < 32 || !body.len().is_multiple_of(16) {
        return None;
    }
    let iv: [u8; 16] = body[..16].try_into().ok()?;
    let mut data = body[16..].to_vec();
    cbc::Decryptor::<Aes128>::new(key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .ok()?;
    let pad = *data.last()? as usize;
    if pad > 15 || pad + 1 > data.len() {
        return None;
    }
    let n = data.len() - 1 - pad;
    if data[n..data.len() - 1]
        .iter()
        .zip(1u8..)
        .any(|(b, want)| *b != want)
    {
        return None;
    }
    data.truncate(n);
    Some(data)
}

pub fn encrypt(key: &[u8; 16], iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
    let pad = (16 - (plain.len() + 1) % 16) % 16;
    let mut buf = Vec::with_capacity(16 + plain.len() + pad + 1);
    buf.extend_from_slice(plain);
    buf.extend(1..=pad as u8);
    buf.push(pad as u8);
    let n = buf.len();
    cbc::Encryptor::<Aes128>::new(key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, n)
        .expect("a whole number of blocks");
    let mut out = iv.to_vec();
    out.extend_from_slice(&buf);
    out
}

/// The keys an RMCP+ packet is protected with.
#[derive(Clone, Copy, Default)]
pub struct Protection<'a> {
    pub k1: Option<&'a [u8; 20]>,
    pub aes: Option<&'a [u8; 16]>,
}

/// Frames an RMCP+ packet from the BMC.
pub fn encode_v20(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    prot: Protection<'_>,
) -> Vec<u8> {
    let body;
    let payload = match prot.aes {
        Some(key) => {
            body = encrypt(key, rand::random(), payload);
            &body[..]
        }
        None => payload,
    };
    let mut t = payload_type & 0x3F;
    if prot.aes.is_some() {
        t |= 0x80;
    }
    if prot.k1.is_some() {
        t |= 0x40;
    }
    let mut p = Vec::with_capacity(16 + payload.len() + 20);
    p.extend_from_slice(&[RMCP_VERSION, 0x00, 0xFF, CLASS_IPMI, AUTH_RMCP_PLUS, t]);
    p.extend_from_slice(&session_id.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    p.extend_from_slice(payload);
    if let Some(k1) = prot.k1 {
        let pad = (4 - (p.len() - 4 + 2) % 4) % 4;
        p.extend(std::iter::repeat_n(0xFF, pad));
        p.push(pad as u8);
        p.push(0x07);
        let code = hmac_sha1(k1, &[&p[4..]]);
        p.extend_from_slice(&code[..12]);
    }
    p
}

/// Frames a message in the IPMI v1.5 wrapper without authentication.
pub fn encode_v15(msg: &[u8]) -> Vec<u8> {
    let mut p = vec![RMCP_VERSION, 0x00, 0xFF, CLASS_IPMI, AUTH_NONE];
    p.extend_from_slice(&[0; 8]);
    p.push(msg.len() as u8);
    p.extend_from_slice(msg);
    p
}

/// ASF presence pong: IPMI supported, no ASF interactions.
pub fn pong(tag: u8) -> Vec<u8> {
    let mut p = vec![RMCP_VERSION, 0x00, 0xFF, CLASS_ASF];
    p.extend_from_slice(&ASF_IANA);
    p.extend_from_slice(&[0x40, tag, 0x00, 0x10]);
    p.extend_from_slice(&ASF_IANA); // IANA enterprise number
    p.extend_from_slice(&[0, 0, 0, 0]); // OEM-defined
    p.push(0x81); // supported entities: IPMI, ASF 1.0
    p.push(0x00); // supported interactions
    p.extend_from_slice(&[0; 6]);
    p
}

pub fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)).wrapping_neg()
}

/// An IPMI request as carried on LAN (§13.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub netfn: u8,
    pub rs_lun: u8,
    pub rq_addr: u8,
    pub rq_seq: u8,
    pub rq_lun: u8,
    pub cmd: u8,
    pub data: &'a [u8],
}

/// Parses a request, checking both checksums and the responder address.
pub fn parse_request(m: &[u8]) -> Option<Request<'_>> {
    if m.len() < 7 || m[0] != BMC_SA {
        return None;
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return None;
    }
    Some(Request {
        netfn: m[1] >> 2,
        rs_lun: m[1] & 3,
        rq_addr: m[3],
        rq_seq: m[4] >> 2,
        rq_lun: m[4] & 3,
        cmd: m[5],
        data: &m[6..m.len() - 1],
    })
}

pub fn encode_response(rq: &Request<'_>, cc: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + data.len());
    m.push(rq.rq_addr);
    m.push(((rq.netfn | 1) << 2) | rq.rq_lun);
    m.push(checksum(&m[..2]));
    m.push(BMC_SA);
    m.push((rq.rq_seq << 2) | rq.rs_lun);
    m.push(rq.cmd);
    m.push(cc);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(netfn: u8, cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut m = vec![BMC_SA, netfn << 2];
        m.push(checksum(&m));
        m.extend_from_slice(&[0x81, 5 << 2, cmd]);
        m.extend_from_slice(data);
        m.push(checksum(&m[3..]));
        m
    }

    #[test]
    fn request_and_response_round_trip() {
        let m = request(0x00, 0x01, &[]);
        let rq = parse_request(&m).unwrap();
        assert_eq!((rq.netfn, rq.cmd, rq.rq_seq, rq.rq_addr), (0, 1, 5, 0x81));
        let r = encode_response(&rq, 0, &[0x01, 0, 0]);
        assert_eq!(&r[..2], &[0x81, 0x04]);
        assert_eq!(checksum(&r[..2]), r[2]);
        assert_eq!(r[4] >> 2, 5);
        assert_eq!(checksum(&r[3..r.len() - 1]), r[r.len() - 1]);
        let mut bad = m.clone();
        bad[6] ^= 1;
        assert!(parse_request(&bad).is_none());
    }

    #[test]
    fn integrity_and_encryption_round_trip() {
        let k1 = [3u8; 20];
        let aes = [4u8; 16];
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).collect();
            let p = encode_v20(
                ptype::IPMI,
                7,
                9,
                &payload,
                Protection {
                    k1: Some(&k1),
                    aes: Some(&aes),
                },
            );
            let Some(Frame::V20(f)) = parse(&p) else {
                panic!("not RMCP+")
            };
            assert!(f.encrypted && f.authenticated);
            assert!(verify_integrity(&f, &k1));
            assert!(!verify_integrity(&f, &[5u8; 20]));
            assert_eq!(decrypt(&aes, f.payload).unwrap(), payload);
            for i in 4..p.len() {
                let mut bad = p.clone();
                bad[i] ^= 0x40;
                if let Some(Frame::V20(f)) = parse(&bad) {
                    assert!(!verify_integrity(&f, &k1), "flip at {i}");
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(0..80);
            let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if b.len() > 6 && rng.random_bool(0.5) {
                b[..5].copy_from_slice(&[6, 0, 0xFF, 7, if rng.random() { 6 } else { 0 }]);
            }
            if let Some(Frame::V20(f)) = parse(&b) {
                let _ = verify_integrity(&f, &[1; 20]);
                let _ = decrypt(&[1; 16], f.payload);
            }
            let _ = parse_request(&b);
        }
    }

    #[test]
    fn pong_layout() {
        let p = pong(9);
        assert_eq!(p.len(), 4 + 8 + 16, "RMCP, ASF header, pong data");
        assert_eq!(p[9], 9);
        assert_eq!(p[8], 0x40);
    }
}
