//! The Sensor Data Record repository (IPMI v2.0 §33, §43) and sensor readings
//! (§35.14): the commands the walk sends, the decoding of one record into a
//! [`SensorDef`], and the conversion of a Get Sensor Reading answer into a
//! [`SensorReading`]. Everything here is pure: the walk itself (which sends)
//! lives in `super::health`.
//!
//! Records are parsed with `ipmi-rs-core` 0.6 (`Record::parse`: ID string,
//! sensor type, event/reading type, sensor key). Where that crate is wrong or
//! can panic, this module works around it — all in [`crate_fixes`], each fix
//! saying what the crate does and what ipmitool (and the specification) do:
//!
//! - lengths are checked before the crate sees a record (it indexes past the
//!   end of short full/compact records and of a short Get SDR Repository Info
//!   answer, and panics on a compact record whose ID-string modifier is 10b
//!   or 11b);
//! - the conversion factors (M, B, Bexp, Rexp, linearisation, analog data
//!   format) and the thresholds are read from the record's bytes here: the
//!   crate drops bit 9 of a negative M, numbers the linearisation functions
//!   9–11 wrongly, and converts one's-complement readings off by one;
//! - ID strings in BCD plus or 6-bit packed ASCII are decoded here (the
//!   crate prints their bytes as a hex list);
//! - unit names are ipmitool's ("degrees C", "RPM", "Volts"), not the crate's
//!   ("Degrees Celsius", "rpm").

use ipmi_rs_core::connection::{IpmiCommand, Message, NetFn, NotEnoughData};
use ipmi_rs_core::sensor_event::{GetSensorReading, ThresholdReading, ThresholdStatus};
use ipmi_rs_core::storage::sdr::event_reading_type_code::EventReadingTypeCodes;
use ipmi_rs_core::storage::sdr::record::{
    RecordContents, SensorId, SensorKey, WithSensorRecordCommon,
};
use ipmi_rs_core::storage::sdr::{Record, SdrRepositoryInfo, SensorType};

use crate::bmc::inventory::{SensorKind, SensorReading, SensorStatus, Thresholds};

// ---------------------------------------------------------------------------
// Commands the walk sends (NetFn Storage). The crate's `GetDeviceSdr` always
// reads a whole record from offset 0 and it has no Reserve SDR Repository, so
// these two are ours; `SdrInfo` wraps the crate's decoder with a length check.

/// Get SDR Repository Info (Storage 0x20, §33.9).
pub struct SdrInfo;

impl From<SdrInfo> for Message {
    fn from(_: SdrInfo) -> Message {
        Message::new_request(NetFn::Storage, 0x20, vec![])
    }
}

impl IpmiCommand for SdrInfo {
    type Output = SdrRepositoryInfo;
    type Error = NotEnoughData;
    fn parse_success_response(data: &[u8]) -> Result<SdrRepositoryInfo, NotEnoughData> {
        crate_fixes::repository_info(data)
    }
}

/// What decides whether a cached repository is still current: record count,
/// most recent addition and most recent erase.
pub fn repository_key(info: &SdrRepositoryInfo) -> (u16, String, String) {
    (
        info.record_count,
        info.most_recent_addition.to_string(),
        info.most_recent_erase.to_string(),
    )
}

/// Reserve SDR Repository (Storage 0x22, §33.11).
pub struct ReserveSdr;

impl From<ReserveSdr> for Message {
    fn from(_: ReserveSdr) -> Message {
        Message::new_request(NetFn::Storage, 0x22, vec![])
    }
}

impl IpmiCommand for ReserveSdr {
    type Output = u16;
    type Error = NotEnoughData;
    fn parse_success_response(data: &[u8]) -> Result<u16, NotEnoughData> {
        match data {
            [lo, hi, ..] => Ok(u16::from_le_bytes([*lo, *hi])),
            _ => Err(NotEnoughData),
        }
    }
}

/// Get SDR (Storage 0x23, §33.12): `len` bytes of record `record` from
/// `offset`, under `reservation` (0 = none, allowed for offset 0).
#[derive(Debug, Clone, Copy)]
pub struct GetSdrPart {
    pub reservation: u16,
    pub record: u16,
    pub offset: u8,
    pub len: u8,
}

impl From<GetSdrPart> for Message {
    fn from(c: GetSdrPart) -> Message {
        let mut data = Vec::with_capacity(6);
        data.extend_from_slice(&c.reservation.to_le_bytes());
        data.extend_from_slice(&c.record.to_le_bytes());
        data.push(c.offset);
        data.push(c.len);
        Message::new_request(NetFn::Storage, 0x23, data)
    }
}

impl IpmiCommand for GetSdrPart {
    /// The next record's id and the bytes read.
    type Output = (u16, Vec<u8>);
    type Error = NotEnoughData;
    fn parse_success_response(data: &[u8]) -> Result<(u16, Vec<u8>), NotEnoughData> {
        next_id_and_bytes(data)
    }
}

/// The answer of Get SDR and of Get SEL Entry: the next record's id
/// (little-endian), then the record's bytes.
pub fn next_id_and_bytes(data: &[u8]) -> Result<(u16, Vec<u8>), NotEnoughData> {
    match data {
        [lo, hi, rest @ ..] => Ok((u16::from_le_bytes([*lo, *hi]), rest.to_vec())),
        _ => Err(NotEnoughData),
    }
}

/// The SDR record header: id (2), version, type, length of what follows.
pub const HEADER_LEN: usize = 5;

// ---------------------------------------------------------------------------
// One sensor as its record describes it.

/// How a raw reading becomes a value (full sensor records, §36.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    /// Bits 7:6 of Sensor Units 1: 0 unsigned, 1 one's complement, 2 two's
    /// complement (3 = no analog reading: no `Conversion` at all).
    pub format: u8,
    pub linearization: u8,
    pub m: i16,
    pub b: i16,
    pub b_exp: i8,
    pub r_exp: i8,
}

/// A sensor from a full or compact record, with what reading it needs.
#[derive(Debug, Clone)]
pub struct SensorDef {
    pub record_id: u16,
    pub name: String,
    pub number: u8,
    /// The owner (slave address or software id byte, as in the record) and LUN.
    pub owner: u8,
    pub lun: u8,
    pub sensor_type: u8,
    /// Event/reading type code: 0x01 threshold, 0x02–0x0C generic, 0x6F sensor-specific.
    pub reading_type: u8,
    pub kind: SensorKind,
    pub unit: String,
    /// `None` for compact records and full records without analog readings.
    pub conversion: Option<Conversion>,
    pub thresholds: Thresholds,
    pub context: Option<String>,
    /// The crate's sensor key, for Get Sensor Reading.
    pub key: SensorKey,
}

impl SensorDef {
    /// A threshold-based sensor with an analog value.
    pub fn is_analog(&self) -> bool {
        self.reading_type == 0x01 && self.conversion.is_some()
    }
}

/// Decodes one whole record (header included). `Ok(None)` for records that
/// describe no readable sensor (event-only, locators, OEM). Never panics.
pub fn decode_record(record_id: u16, bytes: &[u8]) -> Result<Option<SensorDef>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, at least {HEADER_LEN} expected",
            bytes.len()
        ));
    }
    let rtype = bytes[3];
    let declared = bytes[4] as usize;
    let body = &bytes[HEADER_LEN..];
    if body.len() != declared {
        return Err(format!(
            "truncated: {} bytes, {} expected",
            bytes.len(),
            HEADER_LEN + declared
        ));
    }
    match rtype {
        0x01 | 0x02 => {}
        _ => return Ok(None),
    }
    crate_fixes::check_sensor_body(rtype, body)?;
    let record = Record::parse(bytes).map_err(|e| format!("cannot be parsed: {e:?}"))?;
    let (common, conversion) = match &record.contents {
        RecordContents::FullSensor(full) => (full.common(), crate_fixes::conversion(body)),
        RecordContents::CompactSensor(c) => (c.common(), None),
        _ => return Ok(None),
    };
    let sensor_type = u8::from(common.ty);
    let reading_type = match common.event_reading_type_code {
        EventReadingTypeCodes::Unspecified => 0x00,
        EventReadingTypeCodes::Threshold => 0x01,
        EventReadingTypeCodes::DiscreteGeneric(v)
        | EventReadingTypeCodes::Oem(v)
        | EventReadingTypeCodes::Reserved(v) => v,
        EventReadingTypeCodes::SensorSpecific => 0x6F,
    };
    let base_unit = body[16];
    let thresholds = match &conversion {
        Some(c) if reading_type == 0x01 => crate_fixes::thresholds(body, c),
        _ => Thresholds::default(),
    };
    Ok(Some(SensorDef {
        record_id,
        name: crate_fixes::sensor_name(&common.sensor_id),
        number: body[2],
        owner: body[0],
        lun: body[1] & 0x03,
        sensor_type,
        reading_type,
        kind: kind(common.ty, base_unit),
        unit: crate_fixes::unit_text(body[15], base_unit, body[17]),
        conversion,
        thresholds,
        context: context(body[3]),
        key: common.key,
    }))
}

fn kind(ty: SensorType, base_unit: u8) -> SensorKind {
    match ty {
        SensorType::Temperature => SensorKind::Temperature,
        SensorType::Voltage => SensorKind::Voltage,
        SensorType::Current => SensorKind::Current,
        SensorType::Fan => SensorKind::Fan,
        _ if base_unit == 6 => SensorKind::Power,
        _ => SensorKind::Other,
    }
}

/// Where the sensor sits, from its entity id (IPMI v2.0 table 43-13), in the
/// words Redfish uses for `PhysicalContext`.
fn context(entity: u8) -> Option<String> {
    let c = match entity {
        0x03 => "CPU",
        0x07 => "SystemBoard",
        0x08 => "Memory",
        0x0A => "PowerSupply",
        0x13 | 0x14 => "PowerSupply",
        0x17 => "Chassis",
        0x1D | 0x1E => "Fan",
        0x37 | 0x40 => "Intake",
        0x41 => "CPU",
        _ => return None,
    };
    Some(c.to_string())
}

// ---------------------------------------------------------------------------
// Readings.

/// Why a reading gives no value.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadingIssue {
    /// Nothing to report: the sensor is simply unavailable.
    None,
    /// A line for `Health::problems`.
    Problem(String),
}

/// A sensor whose reading could not be had at all (completion code, decode
/// error): unavailable, with why.
pub fn unreadable(def: &SensorDef) -> SensorReading {
    SensorReading {
        name: def.name.clone(),
        kind: def.kind,
        value: None,
        unit: def.unit.clone(),
        status: SensorStatus::Unavailable,
        thresholds: def.thresholds,
        context: def.context.clone(),
    }
}

/// A Get Sensor Reading answer turned into the model: the value by the
/// record's formula, the status by the threshold-comparison bits.
pub fn reading(def: &SensorDef, r: &ThresholdReading) -> SensorReading {
    let mut out = unreadable(def);
    if r.scanning_disabled {
        return out;
    }
    let Some(raw) = r.reading else {
        return out;
    };
    if !def.is_analog() {
        // A discrete sensor: no value; available.
        out.status = SensorStatus::Ok;
        return out;
    }
    out.value = def.conversion.as_ref().and_then(|c| convert(c, raw));
    out.status = match r.threshold_status {
        Some(s) => status(&s),
        None => SensorStatus::Ok,
    };
    if out.value.is_none() {
        out.status = SensorStatus::Unavailable;
    }
    out
}

/// [`reading`] from the data of a Get Sensor Reading answer (after the
/// completion code), decoded by the crate; `None` when too short.
pub fn reading_from_answer(def: &SensorDef, data: &[u8]) -> Option<SensorReading> {
    let raw = GetSensorReading::parse_success_response(data).ok()?;
    Some(reading(def, &ThresholdReading::from(&raw)))
}

fn status(s: &ThresholdStatus) -> SensorStatus {
    if s.at_or_above_non_recoverable
        || s.at_or_below_lower_non_recoverable
        || s.at_or_above_upper_critical
        || s.at_or_below_lower_critical
    {
        SensorStatus::Critical
    } else if s.at_or_above_upper_non_critical || s.at_or_below_lower_non_critical {
        SensorStatus::Warning
    } else {
        SensorStatus::Ok
    }
}

/// y = L[(M·x + B·10^Bexp) · 10^Rexp] (§36.3). `None` for linearisations
/// that need Get Sensor Reading Factors (0x70) or are OEM, and for results
/// that are not finite (1/0, ln 0).
pub fn convert(c: &Conversion, raw: u8) -> Option<f64> {
    let x = match c.format {
        0 => raw as f64,
        1 => {
            if raw & 0x80 != 0 {
                -((!raw & 0x7F) as f64)
            } else {
                raw as f64
            }
        }
        2 => raw as i8 as f64,
        _ => return None,
    };
    let v = (c.m as f64 * x + c.b as f64 * 10f64.powi(c.b_exp as i32)) * 10f64.powi(c.r_exp as i32);
    let y = match c.linearization {
        0 => v,
        1 => v.ln(),
        2 => v.log10(),
        3 => v.log2(),
        4 => v.exp(),
        5 => 10f64.powf(v),
        6 => 2f64.powf(v),
        7 => 1.0 / v,
        8 => v * v,
        9 => v * v * v,
        10 => v.sqrt(),
        11 => v.cbrt(),
        _ => return None,
    };
    y.is_finite().then_some(y)
}

/// Workarounds for `ipmi-rs-core` 0.6, in one place (see the module docs).
pub mod crate_fixes {
    use super::*;

    /// A sensor's ID string in words. The crate keeps BCD plus and 6-bit
    /// packed ASCII as bytes (and prints them as a hex list): decoded here
    /// after IPMI v2.0 §43.15. 8-bit ASCII/Latin-1 and Unicode as the crate has
    /// them.
    pub fn sensor_name(id: &SensorId) -> String {
        match id {
            SensorId::BCDPlus(b) => b
                .iter()
                .flat_map(|x| [x >> 4, x & 0x0F])
                .map(|n| match n {
                    0..=9 => (b'0' + n) as char,
                    0xA => ' ',
                    0xB => '-',
                    0xC => '.',
                    0xD => ':',
                    0xE => ',',
                    _ => '_',
                })
                .collect::<String>()
                .trim_end()
                .to_string(),
            SensorId::Ascii6BPacked(b) => {
                // Little-endian bit stream, 6 bits a character, 0x20-based.
                let mut out = String::new();
                let (mut acc, mut bits) = (0u32, 0u32);
                for &x in b {
                    acc |= (x as u32) << bits;
                    bits += 8;
                    while bits >= 6 {
                        out.push(((acc & 0x3F) as u8 + 0x20) as char);
                        acc >>= 6;
                        bits -= 6;
                    }
                }
                out.trim_end().to_string()
            }
            other => other.to_string(),
        }
    }

    /// The crate's `RepositoryInfo::parse` indexes 14 bytes without checking.
    pub fn repository_info(data: &[u8]) -> Result<SdrRepositoryInfo, NotEnoughData> {
        if data.len() < 14 {
            return Err(NotEnoughData);
        }
        SdrRepositoryInfo::parse(data).ok_or(NotEnoughData)
    }

    /// Full records need 43 bytes after the header (through the ID string
    /// type/length byte), compact ones 27; the crate reads them before
    /// checking. It panics on a compact record's ID-string instance modifier
    /// type 10b/11b (reserved by the specification).
    pub fn check_sensor_body(rtype: u8, body: &[u8]) -> Result<(), String> {
        let need = if rtype == 0x01 { 43 } else { 27 };
        if body.len() < need {
            return Err(format!(
                "truncated: {} bytes, at least {} expected for a {} sensor record",
                body.len() + HEADER_LEN,
                need + HEADER_LEN,
                if rtype == 0x01 { "full" } else { "compact" }
            ));
        }
        if rtype == 0x02 && (body[18] >> 4) & 0x03 > 1 {
            return Err(format!(
                "ID string instance modifier type {} is reserved",
                (body[18] >> 4) & 0x03
            ));
        }
        let idlen = (body[need - 1] & 0x1F) as usize;
        if body.len() < need + idlen {
            return Err(format!(
                "truncated: the ID string needs {idlen} bytes, {} present",
                body.len() - need
            ));
        }
        Ok(())
    }

    /// The conversion factors of a full record (body = the bytes after the
    /// header, so record byte N is `body[N - 6]`): units 1 (byte 21),
    /// linearisation (24), M (25, 26 bits 7:6: 10-bit two's complement), B (27,
    /// 28 bits 7:6: 10-bit two's complement), Rexp/Bexp (30: 4-bit two's
    /// complement each). ipmitool reads the same bytes.
    pub fn conversion(body: &[u8]) -> Option<Conversion> {
        let format = body[15] >> 6;
        if format == 3 {
            return None;
        }
        let ten = |lo: u8, hi: u8| -> i16 {
            let v = (lo as u16) | (((hi >> 6) as u16) << 8);
            // Sign-extend bit 9.
            ((v << 6) as i16) >> 6
        };
        let four = |n: u8| -> i8 { ((n << 4) as i8) >> 4 };
        Some(Conversion {
            format,
            linearization: body[18] & 0x7F,
            m: ten(body[19], body[20]),
            b: ten(body[21], body[22]),
            r_exp: four(body[24] >> 4),
            b_exp: four(body[24] & 0x0F),
        })
    }

    /// Thresholds the record says are readable (byte 19 bits 5:0), converted
    /// by its formula (bytes 38 UC, 39 UNC, 41 LC, 42 LNC). Non-recoverable
    /// thresholds have no place in the model.
    pub fn thresholds(body: &[u8], c: &Conversion) -> Thresholds {
        let readable = body[13];
        let at = |bit: u8, idx: usize| -> Option<f64> {
            if readable & (1 << bit) != 0 {
                convert(c, body[idx])
            } else {
                None
            }
        };
        Thresholds {
            lower_warning: at(0, 36),
            lower_critical: at(1, 35),
            upper_warning: at(3, 33),
            upper_critical: at(4, 32),
        }
    }

    /// ipmitool's unit names (its `unit_desc` table, after IPMI v2.0 table
    /// 43-15), with its "% " prefix for percentages and "base/modifier" or
    /// "base*modifier" forms. The crate names units its own way.
    pub fn unit_text(units1: u8, base: u8, modifier: u8) -> String {
        let name = |u: u8| -> &'static str { UNITS.get(u as usize).copied().unwrap_or("unknown") };
        let mut s = match (units1 >> 1) & 0x03 {
            1 => format!("{}/{}", name(base), name(modifier)),
            2 => format!("{}*{}", name(base), name(modifier)),
            _ => name(base).to_string(),
        };
        if base == 0 && (units1 >> 1) & 0x03 == 0 {
            s.clear();
        }
        if units1 & 1 != 0 {
            s = format!("% {s}").trim_end().to_string();
        }
        s
    }

    const UNITS: &[&str] = &[
        "unspecified",
        "degrees C",
        "degrees F",
        "degrees K",
        "Volts",
        "Amps",
        "Watts",
        "Joules",
        "Coulombs",
        "VA",
        "Nits",
        "lumen",
        "lux",
        "Candela",
        "kPa",
        "PSI",
        "Newton",
        "CFM",
        "RPM",
        "Hz",
        "microsecond",
        "millisecond",
        "second",
        "minute",
        "hour",
        "day",
        "week",
        "mil",
        "inches",
        "feet",
        "cu in",
        "cu feet",
        "mm",
        "cm",
        "m",
        "cu cm",
        "cu m",
        "liters",
        "fluid ounce",
        "radians",
        "steradians",
        "revolutions",
        "cycles",
        "gravities",
        "ounce",
        "pound",
        "ft-lb",
        "oz-in",
        "gauss",
        "gilberts",
        "henry",
        "millihenry",
        "farad",
        "microfarad",
        "ohms",
        "siemens",
        "mole",
        "becquerel",
        "PPM",
        "reserved",
        "Decibels",
        "DbA",
        "DbC",
        "gray",
        "sievert",
        "color temp deg K",
        "bit",
        "kilobit",
        "megabit",
        "gigabit",
        "byte",
        "kilobyte",
        "megabyte",
        "gigabyte",
        "word",
        "dword",
        "qword",
        "line",
        "hit",
        "miss",
        "retry",
        "reset",
        "overflow",
        "underrun",
        "collision",
        "packets",
        "messages",
        "characters",
        "error",
        "correctable error",
        "uncorrectable error",
        "fatal error",
        "grams",
    ];
}

/// Test helpers: a full threshold sensor record as a BMC would store it.
#[cfg(test)]
pub mod build {
    /// A full sensor record: `conv` = (M, B, Bexp, Rexp), thresholds raw
    /// (UNR, UC, UNC, LNR, LC, LNC), all readable.
    #[allow(clippy::too_many_arguments)]
    pub fn full(
        id: u16,
        number: u8,
        sensor_type: u8,
        unit: u8,
        conv: (i16, i16, i8, i8),
        thresholds: [u8; 6],
        entity: u8,
        name: &str,
    ) -> Vec<u8> {
        let (m, b, bexp, rexp) = conv;
        let mut r = vec![0u8; 48 + name.len()];
        r[0..2].copy_from_slice(&id.to_le_bytes());
        r[2] = 0x51;
        r[3] = 0x01;
        r[4] = (43 + name.len()) as u8;
        r[5] = 0x20;
        r[6] = 0x00;
        r[7] = number;
        r[8] = entity;
        r[9] = 0x01;
        r[10] = 0x7F;
        r[11] = 0x48;
        r[12] = sensor_type;
        r[13] = 0x01;
        r[18] = 0x3F;
        r[19] = 0x3F;
        r[20] = 0x00;
        r[21] = unit;
        r[23] = 0x00;
        r[24] = (m & 0xFF) as u8;
        r[25] = (((m >> 8) & 0x03) as u8) << 6;
        r[26] = (b & 0xFF) as u8;
        r[27] = (((b >> 8) & 0x03) as u8) << 6;
        r[29] = (((rexp as u8) & 0x0F) << 4) | ((bexp as u8) & 0x0F);
        r[34] = 0xFF;
        r[36..42].copy_from_slice(&thresholds);
        r[47] = 0xC0 | name.len() as u8;
        r[48..].copy_from_slice(name.as_bytes());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inlet() -> Vec<u8> {
        build::full(
            0x0012,
            1,
            0x01,
            1,
            (1, 0, 0, 0),
            [50, 45, 40, 0, 5, 10],
            0x37,
            "Inlet Temp",
        )
    }

    #[test]
    fn a_full_temperature_record_decodes_with_thresholds_and_context() {
        let d = decode_record(0x12, &inlet()).unwrap().unwrap();
        assert_eq!(d.name, "Inlet Temp");
        assert_eq!(d.number, 1);
        assert_eq!(d.kind, SensorKind::Temperature);
        assert_eq!(d.unit, "degrees C");
        assert_eq!(d.context.as_deref(), Some("Intake"));
        assert_eq!(
            d.thresholds,
            Thresholds {
                lower_critical: Some(5.0),
                lower_warning: Some(10.0),
                upper_warning: Some(40.0),
                upper_critical: Some(45.0),
            }
        );
        assert!(d.is_analog());
    }

    #[test]
    fn negative_m_b_and_exponents_follow_the_specification() {
        // M = -3 (10-bit), B = -100, Bexp = 1, Rexp = -2: y = (-3x - 1000)/100.
        let r = build::full(1, 2, 0x02, 4, (-3, -100, 1, -2), [0; 6], 0x07, "V");
        let d = decode_record(1, &r).unwrap().unwrap();
        let c = d.conversion.unwrap();
        assert_eq!((c.m, c.b, c.b_exp, c.r_exp), (-3, -100, 1, -2));
        assert_eq!(convert(&c, 10), Some((-30.0 - 1000.0) / 100.0));
        assert_eq!(d.unit, "Volts");
    }

    #[test]
    fn formats_and_linearisations() {
        let mut c = Conversion {
            format: 1,
            linearization: 0,
            m: 1,
            b: 0,
            b_exp: 0,
            r_exp: 0,
        };
        // One's complement: 0xFE is -1 (the crate computes !x as i8, giving 1).
        assert_eq!(convert(&c, 0xFE), Some(-1.0));
        assert_eq!(convert(&c, 0x05), Some(5.0));
        c.format = 2;
        assert_eq!(convert(&c, 0xFE), Some(-2.0));
        c.format = 0;
        c.linearization = 10;
        assert_eq!(convert(&c, 16), Some(4.0));
        c.linearization = 9;
        assert_eq!(convert(&c, 2), Some(8.0));
        c.linearization = 7;
        assert_eq!(convert(&c, 0), None);
        c.linearization = 0x70;
        assert_eq!(convert(&c, 1), None);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let r = inlet();
        for n in 0..r.len() {
            let mut cut = r[..n].to_vec();
            // With the declared length left as is, and adjusted to the cut.
            assert!(decode_record(0x12, &cut).is_err(), "{n}");
            if n >= HEADER_LEN {
                cut[4] = (n - HEADER_LEN) as u8;
                let e = decode_record(0x12, &cut);
                assert!(e.is_err(), "{n}: {e:?}");
            }
        }
        let e = decode_record(0x12, &r[..20]).unwrap_err();
        assert_eq!(e, "truncated: 20 bytes, 58 expected");
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic sweep of every byte value at every position.
        let base = inlet();
        for i in 0..base.len() {
            for v in [0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF] {
                let mut r = base.clone();
                r[i] = v;
                let _ = decode_record(0x12, &r);
                r[3] = 0x02;
                let _ = decode_record(0x12, &r);
            }
        }
        let mut compact = vec![0u8; 5 + 27];
        compact[3] = 0x02;
        compact[4] = 27;
        compact[5 + 18] = 0x30; // reserved modifier type: the crate panics
        assert!(decode_record(1, &compact).unwrap_err().contains("reserved"));
    }

    #[test]
    fn other_record_types_are_skipped() {
        let mc = [0x01, 0x00, 0x51, 0x12, 0x02, 0x20, 0x00];
        assert!(decode_record(1, &mc).unwrap().is_none());
    }

    #[test]
    fn packed_and_bcd_names_are_decoded() {
        use crate_fixes::sensor_name;
        // "ABCD" in 6-bit packed ASCII: 0x21 0x22 0x23 0x24.
        let packed = SensorId::Ascii6BPacked(vec![0xA1, 0x38, 0x92]);
        assert_eq!(sensor_name(&packed), "ABCD");
        assert_eq!(sensor_name(&SensorId::BCDPlus(vec![0x12, 0xB3])), "12-3");
        assert_eq!(
            sensor_name(&SensorId::Ascii8BAndLatin1("Fan 1".into())),
            "Fan 1"
        );
    }

    #[test]
    fn unit_text_is_ipmitools() {
        use crate_fixes::unit_text;
        assert_eq!(unit_text(0, 18, 0), "RPM");
        assert_eq!(unit_text(0, 6, 0), "Watts");
        assert_eq!(unit_text(0, 0, 0), "");
        assert_eq!(unit_text(1, 0, 0), "%");
        assert_eq!(unit_text(0, 200, 0), "unknown");
    }
}
