//! The BMC's identity from Get Device ID (IPMI v2.0 table 20-2), as decoded
//! by `ipmi-rs-core`'s `DeviceId`, in the words `ipmitool mc info` uses:
//!
//! - manufacturer: the IANA Private Enterprise Number (20 bits) named from a
//!   short table of BMC makers, else "IANA <n>";
//! - model: "product 0x%04x" (the product ID has no registry);
//! - firmware: "major.minor" — the minor revision is BCD on the wire, which the
//!   crate decodes to its decimal value, so two decimal digits print what
//!   ipmitool's `%02x` of the raw byte prints;
//! - IPMI version: "major.minor" (BCD nibbles, least significant digit high).
//!
//! Get Device ID says nothing of the host system (IPMI keeps that in FRU
//! data), so the system fields stay `None`.

use ipmi_rs_core::app::DeviceId;

use crate::bmc::BmcIdentity;

/// IANA Private Enterprise Numbers of BMC and server makers, with the names
/// the IANA registry gives them (https://www.iana.org/assignments/enterprise-numbers,
/// as shipped in Debian's `/usr/share/misc/enterprise-numbers.txt`, the file
/// `ipmitool` names manufacturers from). 4753 is what OpenIPMI's `ipmi_sim`
/// bench BMCs announce.
const MANUFACTURERS: &[(u32, &str)] = &[
    (2, "IBM"),
    (11, "Hewlett-Packard"),
    (42, "Sun Microsystems"),
    (343, "Intel Corporation"),
    (674, "Dell Inc."),
    (2011, "HUAWEI Technology Co.,Ltd"),
    (3704, "Advanced Micro Devices, Inc"),
    (4128, "ARM Ltd."),
    (4753, "MontaVista Software, Inc."),
    (5703, "NVIDIA Corporation"),
    (6569, "INVENTEC CORPORATION"),
    (7244, "Quanta Computer Inc."),
    (10876, "Super Micro Computer Inc."),
    (11129, "Google, Inc."),
    (15370, "GIGA-BYTE TECHNOLOGY CO., LTD"),
    (19046, "Lenovo Enterprise Business Group"),
    (20301, "IBM eServer X"),
    (47196, "Hewlett Packard Enterprise"),
    (49871, "OpenBMC Project"),
];

/// The manufacturer ID is 20 bits; the top nibble of its third byte is
/// reserved (table 20-2). The crate keeps all 24 bits, so they are masked here.
const MANUFACTURER_ID_MASK: u32 = 0x0F_FFFF;

/// The registry name of a manufacturer ID, where the table knows it.
pub fn manufacturer_name(id: u32) -> Option<&'static str> {
    let id = id & MANUFACTURER_ID_MASK;
    MANUFACTURERS
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| *name)
}

/// The manufacturer as the identity names it: the registry name, else
/// "IANA <n>".
pub fn manufacturer(id: u32) -> String {
    match manufacturer_name(id) {
        Some(name) => name.to_string(),
        None => format!("IANA {}", id & MANUFACTURER_ID_MASK),
    }
}

/// What Get Device ID tells of the BMC.
pub fn from_device_id(id: &DeviceId) -> BmcIdentity {
    BmcIdentity {
        bmc_manufacturer: Some(manufacturer(id.manufacturer_id)),
        bmc_model: Some(format!("product {:#06x}", id.product_id)),
        firmware_version: Some(format!(
            "{}.{:02}",
            id.major_fw_revision, id.minor_fw_revision
        )),
        ipmi_version: Some(format!("{}.{}", id.major_version, id.minor_version)),
        ..BmcIdentity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::ipmi::commands::{self, Command, IpmiCommand, Message, NetFn};
    use crate::bmc::ipmi::message::{decode_response, encode_request};
    use ipmi_rs_core::app::GetDeviceId;

    /// What ipmi_sim 2.0.33 answers for the bench's `mc_add 0x20 0
    /// no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02` (`ipmitool raw 6 1`), for
    /// which `ipmitool mc info` prints Firmware Revision 9.08, IPMI Version
    /// 2.0, Manufacturer ID 4753, Product ID 3842 (0x0f02).
    const IPMI_SIM: [u8; 15] = [
        0x00, 0x03, 0x09, 0x08, 0x02, 0x9f, 0x91, 0x12, 0x00, 0x02, 0x0f, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn get_device_id_request_on_the_wire() {
        let m: Message = GetDeviceId.into();
        assert_eq!(
            (m.netfn(), m.netfn_raw(), m.cmd()),
            (NetFn::App, 0x06, 0x01)
        );
        assert!(m.data().is_empty());
        assert!(GetDeviceId.idempotent());
        // rsAddr BMC, NetFn App/LUN 0 (0x18), chk1, rqAddr 81h, rqSeq 3, cmd 01h, chk2.
        assert_eq!(
            encode_request(&m, 3),
            [0x20, 0x18, 0xC8, 0x81, 0x0C, 0x01, 0x72]
        );
    }

    #[test]
    fn ipmi_sims_answer_reads_as_ipmitool_prints_it() {
        // The whole LAN message: NetFn App response (07h), rqSeq 3, cc 0.
        let mut wire = vec![0x81, 0x1C, 0x63, 0x20, 0x0C, 0x01, 0x00];
        wire.extend_from_slice(&IPMI_SIM);
        let sum = wire[3..]
            .iter()
            .fold(0u8, |a, b| a.wrapping_add(*b))
            .wrapping_neg();
        wire.push(sum);
        let rsp = decode_response(&wire).unwrap();
        assert_eq!(
            (rsp.netfn_raw(), rsp.cmd(), rsp.seq(), rsp.cc()),
            (0x07, 0x01, 3, 0)
        );
        let id = commands::decode::<GetDeviceId>(rsp.data()).unwrap();
        assert_eq!(
            from_device_id(&id),
            BmcIdentity {
                bmc_manufacturer: Some("MontaVista Software, Inc.".into()),
                bmc_model: Some("product 0x0f02".into()),
                firmware_version: Some("9.08".into()),
                ipmi_version: Some("2.0".into()),
                ..BmcIdentity::default()
            }
        );
    }

    #[test]
    fn firmware_minor_is_bcd_and_ipmi_version_nibbles_are_swapped() {
        let mut d = IPMI_SIM;
        d[2] = 0x82; // device unavailable (bit 7), major 2
        d[3] = 0x45; // BCD 45
        d[4] = 0x51; // IPMI 1.5
        d[6..9].copy_from_slice(&[0x7C, 0x2A, 0x00]); // 10876 = 0x2A7C
        d[9..11].copy_from_slice(&[0x34, 0x12]);
        let id = commands::decode::<GetDeviceId>(&d).unwrap();
        let got = from_device_id(&id);
        assert_eq!(got.firmware_version.as_deref(), Some("2.45"));
        assert_eq!(got.ipmi_version.as_deref(), Some("1.5"));
        assert_eq!(
            got.bmc_manufacturer.as_deref(),
            Some("Super Micro Computer Inc.")
        );
        assert_eq!(got.bmc_model.as_deref(), Some("product 0x1234"));
        assert_eq!(got.system_manufacturer, None);
        assert_eq!(got.serial_number, None);
    }

    #[test]
    fn unknown_and_reserved_manufacturer_bits() {
        assert_eq!(manufacturer(674), "Dell Inc.");
        assert_eq!(manufacturer(99_999), "IANA 99999");
        // The reserved top nibble of the third byte is not part of the ID.
        assert_eq!(manufacturer(0xF0_0000 | 343), "Intel Corporation");
        assert_eq!(manufacturer(0xFF_FFFF), "IANA 1048575");
    }

    #[test]
    fn truncated_answers_are_errors_and_nothing_panics() {
        // 11 bytes are required; the 4 auxiliary revision bytes are optional.
        for n in 0..11 {
            let e = commands::decode::<GetDeviceId>(&IPMI_SIM[..n]).unwrap_err();
            assert!(e.to_string().contains("Get Device ID"), "{e}");
        }
        let short = commands::decode::<GetDeviceId>(&IPMI_SIM[..11]).unwrap();
        assert_eq!(short.aux_revision, None);
        assert_eq!(
            from_device_id(&short).firmware_version.as_deref(),
            Some("9.08")
        );
        // Every byte value in every position: an identity or an error.
        for i in 0..IPMI_SIM.len() {
            for v in 0..=u8::MAX {
                let mut d = IPMI_SIM;
                d[i] = v;
                let id = GetDeviceId::parse_success_response(&d).unwrap();
                let got = from_device_id(&id);
                assert!(got.firmware_version.is_some() && got.bmc_manufacturer.is_some());
            }
        }
    }
}
