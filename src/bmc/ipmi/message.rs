//! IPMI messages as carried in a LAN session payload (IPMI v2.0 §13.8,
//! "IPMI LAN Message Format"), and completion codes (§5.2, table 5-2).
//!
//! Request:  rsAddr | netFn/rsLUN | chk1 | rqAddr | rqSeq/rqLUN | cmd | data.. | chk2
//! Response: rqAddr | netFn/rqLUN | chk1 | rsAddr | rqSeq/rsLUN | cmd | cc | data.. | chk2

/// The BMC's responder address.
pub const BMC_ADDR: u8 = 0x20;
/// Our requester address: a remote console software ID (§5.5).
pub const CONSOLE_SWID: u8 = 0x81;

/// Why bytes received from a BMC could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} is {len} bytes long, at least {need} expected")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A request: network function, command and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
}

/// A decoded response. `data` excludes the completion code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion: u8,
    pub data: Vec<u8>,
}

/// Two's complement checksum: the bytes plus the checksum sum to 0 (mod 256).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Frames `req` with the 6-bit request sequence number `rq_seq` (LUN 0).
pub fn encode_request(req: &Request, rq_seq: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + req.data.len());
    m.push(BMC_ADDR);
    m.push(req.netfn << 2);
    m.push(checksum(&m[0..2]));
    m.push(CONSOLE_SWID);
    m.push((rq_seq & 0x3f) << 2);
    m.push(req.cmd);
    m.extend_from_slice(&req.data);
    let chk = checksum(&m[3..]);
    m.push(chk);
    m
}

/// Parses and checks a response: length, both checksums, addresses.
pub fn decode_response(b: &[u8]) -> Result<Response, DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Short {
            what: "IPMI response message",
            len: b.len(),
            need: 8,
        });
    }
    if checksum(&b[0..2]) != b[2] {
        return Err(DecodeError::Invalid(
            "IPMI response header checksum mismatch".into(),
        ));
    }
    if checksum(&b[3..b.len() - 1]) != b[b.len() - 1] {
        return Err(DecodeError::Invalid(
            "IPMI response body checksum mismatch".into(),
        ));
    }
    if b[0] != CONSOLE_SWID {
        return Err(DecodeError::Invalid(format!(
            "IPMI response addressed to {:#04x}, not to us ({CONSOLE_SWID:#04x})",
            b[0]
        )));
    }
    Ok(Response {
        netfn: b[1] >> 2,
        cmd: b[5],
        rq_seq: b[4] >> 2,
        completion: b[6],
        data: b[7..b.len() - 1].to_vec(),
    })
}

/// The meaning of a generic completion code (IPMI v2.0 table 5-2).
/// Command-specific codes (0x80..=0xBE) are explained by the command.
pub fn completion_meaning(cc: u8) -> &'static str {
    match cc {
        0x00 => "command completed normally",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC4 => "out of space",
        0xC5 => "reservation canceled or invalid reservation ID",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return number of requested data bytes",
        0xCB => "requested sensor, data, or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization or initialization agent in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function has been disabled or is unavailable",
        0xFF => "unspecified error",
        0x01..=0x7E => "device-specific (OEM) completion code",
        0x80..=0xBE => "command-specific completion code",
        _ => "reserved completion code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_chassis_status_request_frame() {
        // NetFn Chassis (0x00), cmd 0x01, no data, rqSeq 5.
        let req = Request {
            netfn: 0x00,
            cmd: 0x01,
            data: vec![],
        };
        let m = encode_request(&req, 5);
        // 0x20 + 0x00 + 0xE0 = 0x100; 0x81 + 0x14 + 0x01 + 0x6A = 0x100.
        assert_eq!(m, vec![0x20, 0x00, 0xE0, 0x81, 0x14, 0x01, 0x6A]);
    }

    #[test]
    fn app_netfn_is_shifted_into_the_high_bits() {
        let req = Request {
            netfn: 0x06,
            cmd: 0x3B,
            data: vec![0x04],
        };
        let m = encode_request(&req, 0);
        assert_eq!(&m[..3], &[0x20, 0x18, 0xC8]);
        assert_eq!(m[5], 0x3B);
        assert_eq!(m[6], 0x04);
        assert_eq!(checksum(&m[3..]), 0);
    }

    fn response(netfn: u8, seq: u8, cmd: u8, cc: u8, data: &[u8]) -> Vec<u8> {
        let mut m = vec![CONSOLE_SWID, (netfn | 1) << 2];
        m.push(checksum(&m));
        m.extend_from_slice(&[BMC_ADDR, seq << 2, cmd, cc]);
        m.extend_from_slice(data);
        let c = checksum(&m[3..]);
        m.push(c);
        m
    }

    #[test]
    fn decodes_a_response() {
        let r = decode_response(&response(0x00, 7, 0x01, 0, &[0x01, 0x00, 0x40])).unwrap();
        assert_eq!(r.netfn, 0x01);
        assert_eq!(r.rq_seq, 7);
        assert_eq!(r.cmd, 0x01);
        assert_eq!(r.completion, 0);
        assert_eq!(r.data, vec![0x01, 0x00, 0x40]);
    }

    #[test]
    fn truncated_and_corrupt_responses_are_errors() {
        let good = response(0x00, 7, 0x01, 0, &[0x01, 0x00, 0x40]);
        for n in 0..good.len() {
            assert!(decode_response(&good[..n]).is_err(), "prefix of {n} bytes");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5A;
            assert!(decode_response(&bad).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn completion_codes_have_meanings() {
        assert_eq!(completion_meaning(0xD4), "insufficient privilege level");
        assert_eq!(completion_meaning(0xCC), "invalid data field in request");
        assert_eq!(completion_meaning(0x81), "command-specific completion code");
    }
}
