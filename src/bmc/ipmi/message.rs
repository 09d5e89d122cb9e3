//! The IPMI LAN message framing (IPMI v2.0 §13.8, "IPMI LAN Message
//! Format") around the message types of `ipmi-rs-core`, and the meaning of
//! its completion codes (§5.2, table 5-2).
//!
//! Request:  rsAddr | netFn/rsLUN | chk1 | rqAddr | rqSeq/rqLUN | cmd | data.. | chk2
//! Response: rqAddr | netFn/rqLUN | chk1 | rsAddr | rqSeq/rsLUN | cmd | cc | data.. | chk2
//!
//! What is ours and what is the crate's: `ipmi-rs-core` 0.6 is sans-IO and
//! stops at the message — [`Message`] (NetFn, command, data), [`NetFn`],
//! [`CompletionErrorCode`], and its `Response` (the completion code and the
//! data after it, with a sequence number). It has no LAN framing: the
//! addresses, the request sequence number and the two checksums are this
//! module's; the RMCP+ session and its payloads are `super::lan`'s.

use ipmi_rs_core::connection::{CompletionErrorCode, Message, Response};

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

/// Two's complement checksum: the bytes plus the checksum sum to 0 (mod 256).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Frames the request `msg` with the 6-bit request sequence number `rq_seq`
/// (LUN 0). The message's NetFn is sent as it is (a request NetFn is even).
pub fn encode_request(msg: &Message, rq_seq: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + msg.data().len());
    m.push(BMC_ADDR);
    m.push(msg.netfn_raw() << 2);
    m.push(checksum(&m[0..2]));
    m.push(CONSOLE_SWID);
    m.push((rq_seq & 0x3f) << 2);
    m.push(msg.cmd());
    m.extend_from_slice(msg.data());
    let chk = checksum(&m[3..]);
    m.push(chk);
    m
}

/// Parses and checks a response: length, both checksums, addresses. The
/// crate's `Response` carries the response NetFn, the command, the request
/// sequence number (`seq()`), the completion code (`cc()`) and the data after
/// it (`data()`).
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
    // Completion code and data: at least the code (the length check above).
    let message = Message::new_raw(b[1] >> 2, b[5], b[6..b.len() - 1].to_vec());
    Response::new(message, i64::from(b[4] >> 2))
        .ok_or_else(|| DecodeError::Invalid("IPMI response without a completion code".into()))
}

/// The meaning of a completion code, read through the crate's
/// [`CompletionErrorCode`] (IPMI v2.0 table 5-2). Command-specific codes
/// (0x80..=0xBE) are explained by the command (`Command::completion_meaning`).
pub fn completion_meaning(cc: u8) -> &'static str {
    use ipmi_rs_core::connection::CompletionErrorCode as C;
    let Ok(code) = CompletionErrorCode::try_from(cc) else {
        return "command completed normally";
    };
    match code {
        C::NodeBusy => "node busy",
        C::InvalidCommand => "invalid command",
        C::InvalidCommandForLun => "command invalid for given LUN",
        C::ProcessingTimeout => "timeout while processing command",
        C::OutOfSpace => "out of space",
        C::ReservationCancelledOrInvalidId => "reservation canceled or invalid reservation ID",
        C::RequestDataTruncated => "request data truncated",
        C::RequestDataLenInvalid => "request data length invalid",
        C::RequestDataLengthLimitExceeded => "request data field length limit exceeded",
        C::ParameterOutOfRange => "parameter out of range",
        C::CannotReturnNumOfRequestedBytes => "cannot return number of requested data bytes",
        C::RequestedDatapointNotPresent => "requested sensor, data, or record not present",
        C::InvalidDataFieldInRequest => "invalid data field in request",
        C::CommandIllegalForSensorOrRecord => "command illegal for specified sensor or record type",
        // The crate folds CEh, D0h, D1h and D2h into one variant whose
        // `reason` type it does not export: the byte tells them apart.
        C::ResponseUnavailable { .. } => match cc {
            0xD0 => "SDR repository in update mode",
            0xD1 => "device in firmware update mode",
            0xD2 => "BMC initialization or initialization agent in progress",
            _ => "command response could not be provided",
        },
        C::CannotExecuteDuplicateRequest => "cannot execute duplicated request",
        C::DestinationUnavailable => "destination unavailable",
        C::InsufficientPrivilege => "insufficient privilege level",
        C::CannotExecuteCommandInCurrentState => "command not supported in present state",
        C::SubFunctionDisabled => "command sub-function has been disabled or is unavailable",
        C::Unspecified => "unspecified error",
        C::Oem(_) => "device-specific (OEM) completion code",
        C::CommandSpecific(_) => "command-specific completion code",
        C::Reserved(_) => "reserved completion code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipmi_rs_core::connection::NetFn;

    #[test]
    fn get_chassis_status_request_frame() {
        // NetFn Chassis (0x00), cmd 0x01, no data, rqSeq 5.
        let req = Message::new_request(NetFn::Chassis, 0x01, vec![]);
        let m = encode_request(&req, 5);
        // 0x20 + 0x00 + 0xE0 = 0x100; 0x81 + 0x14 + 0x01 + 0x6A = 0x100.
        assert_eq!(m, vec![0x20, 0x00, 0xE0, 0x81, 0x14, 0x01, 0x6A]);
    }

    #[test]
    fn app_netfn_is_shifted_into_the_high_bits() {
        let req = Message::new_request(NetFn::App, 0x3B, vec![0x04]);
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
        assert_eq!(r.netfn_raw(), 0x01);
        assert_eq!(r.netfn(), NetFn::Chassis);
        assert_eq!(r.seq(), 7);
        assert_eq!(r.cmd(), 0x01);
        assert_eq!(r.cc(), 0);
        assert_eq!(r.data(), &[0x01, 0x00, 0x40]);
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
        assert_eq!(completion_meaning(0x00), "command completed normally");
        assert_eq!(
            completion_meaning(0xCE),
            "command response could not be provided"
        );
        assert_eq!(completion_meaning(0xD1), "device in firmware update mode");
        assert_eq!(completion_meaning(0x7F), "reserved completion code");
        for cc in 0..=u8::MAX {
            assert!(!completion_meaning(cc).is_empty());
        }
    }
}
