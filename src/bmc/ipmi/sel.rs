//! The System Event Log (IPMI v2.0 §31, §32): decoding one 16-byte SEL entry
//! into a [`BmcEvent`]. Pure; the walk (which sends) lives in `super::health`.
//!
//! System event records (type 0x02) are parsed with `ipmi-rs-core` 0.6
//! (`Entry::parse`) and described with its offset tables (`decode_event`:
//! threshold, generic discrete and sensor-specific offsets — Power Unit,
//! Button / Switch, System Event, Processor, Power Supply, ...); an offset the
//! tables do not name reads "offset N". OEM records (0xC0–0xDF timestamped,
//! 0xE0–0xFF not) are kept raw.
//!
//! A record that cannot be decoded (short, an unknown record type, an
//! invalid channel) is **not dropped**: it becomes an event whose `event`
//! says "malformed SEL record: ..." with the raw bytes, and the walk goes
//! on. The event log has no problems list, and an operator should see that
//! the BMC logged something, even unreadable.

use std::fmt;

use ipmi_rs_core::connection::{IpmiCommand, Message, NetFn, NotEnoughData};
use ipmi_rs_core::storage::sdr::{decode_event, SensorType};
use ipmi_rs_core::storage::sel::{Entry, EventDirection, SelInfo};

use crate::bmc::inventory::BmcEvent;

/// Timestamps at or below this count seconds since the BMC started, not
/// since 1970 (IPMI v2.0 §37).
pub const PRE_INIT_MAX: u32 = 0x2000_0000;

/// Get SEL Info (Storage 0x40). The crate's decoder wants exactly 14 bytes,
/// which is what the specification gives; it is used as is.
pub use ipmi_rs_core::storage::sel::GetSelInfo;

/// What decides whether cached SEL entries are still current.
pub fn info_key(info: &SelInfo) -> (u16, String, String) {
    (
        info.entries,
        info.last_add_time.to_string(),
        info.last_del_time.to_string(),
    )
}

/// The erase part of the key alone: when only additions happened, the walk
/// resumes after the last entry read.
pub fn erase_key(info: &SelInfo) -> String {
    info.last_del_time.to_string()
}

/// Get SEL Entry (Storage 0x43), whole entry, no reservation (offset 0).
/// Ours rather than the crate's `GetSelEntry` so that an entry the crate
/// cannot parse still gives its next id and raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct GetSelRaw {
    pub record: u16,
}

impl From<GetSelRaw> for Message {
    fn from(c: GetSelRaw) -> Message {
        let mut data = vec![0, 0];
        data.extend_from_slice(&c.record.to_le_bytes());
        data.push(0);
        data.push(0xFF);
        Message::new_request(NetFn::Storage, 0x43, data)
    }
}

impl IpmiCommand for GetSelRaw {
    /// The next entry's id and the entry's bytes.
    type Output = (u16, Vec<u8>);
    type Error = NotEnoughData;
    fn parse_success_response(data: &[u8]) -> Result<(u16, Vec<u8>), NotEnoughData> {
        super::sdr::next_id_and_bytes(data)
    }
}

/// One decoded entry and, for system events, the sensor it names (so that
/// the caller can put the sensor's name from the SDR in `sensor`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: BmcEvent,
    /// (generator address byte, sensor number, sensor type) for system
    /// event records: what ipmitool matches an SDR by.
    pub sensor: Option<(u8, u8, u8)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn time(ts: u32) -> Option<i64> {
    (ts > PRE_INIT_MAX && ts != 0xFFFF_FFFF).then_some(ts as i64)
}

struct Described {
    event_type: u8,
    sensor_type: SensorType,
    offset: u8,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        decode_event(f, self.event_type, self.sensor_type, self.offset)
    }
}

/// The event in words: the crate's tables, else "offset N".
pub fn event_text(sensor_type: u8, event_type: u8, offset: u8) -> String {
    let s = Described {
        event_type,
        sensor_type: SensorType::from(sensor_type),
        offset,
    }
    .to_string();
    if s.is_empty() {
        format!("offset {offset}")
    } else {
        s
    }
}

/// Severity of threshold events by the threshold crossed; empty elsewhere.
fn severity(event_type: u8, offset: u8, direction: EventDirection) -> &'static str {
    if event_type != 0x01 {
        return "";
    }
    if direction == EventDirection::Deassert {
        return "ok";
    }
    match offset {
        0x00 | 0x01 | 0x06 | 0x07 => "warning",
        0x02..=0x05 | 0x08..=0x0B => "critical",
        _ => "",
    }
}

/// The sensor type in words (the crate's names: "Power Unit",
/// "Button/Switch", "Temperature"; "OEM (0xC0)" and "Reserved (0x..)").
pub fn sensor_type_name(sensor_type: u8) -> String {
    SensorType::from(sensor_type).to_string()
}

/// Decodes one SEL entry (the 16 bytes after the next-id). Never fails:
/// what cannot be decoded is an event that says so (see the module docs).
pub fn decode(record_id: u16, bytes: &[u8]) -> Decoded {
    let id = format!("0x{record_id:04x}");
    let raw = hex(bytes);
    let malformed = |why: String| Decoded {
        event: BmcEvent {
            id: id.clone(),
            at: None,
            sensor_type: String::new(),
            sensor: String::new(),
            event: format!("malformed SEL record: {why}"),
            direction: String::new(),
            severity: String::new(),
            message: format!("SEL record {id}: malformed: {why}"),
            raw: raw.clone(),
        },
        sensor: None,
    };
    if bytes.len() != 16 {
        return malformed(format!("{} bytes, 16 expected", bytes.len()));
    }
    let stored_id = u16::from_le_bytes([bytes[0], bytes[1]]);
    if stored_id != record_id {
        tracing::debug!(
            asked = record_id,
            stored = stored_id,
            "SEL entry carries another record id"
        );
    }
    match Entry::parse(bytes) {
        Ok(Entry::System {
            timestamp: _,
            sensor_type,
            sensor_number,
            event_direction,
            event_type,
            event_data,
            ..
        }) => {
            let ts = u32::from_le_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
            let st = sensor_type_name(sensor_type);
            let text = event_text(sensor_type, event_type, event_data.offset);
            let direction = match event_direction {
                EventDirection::Assert => "asserted",
                EventDirection::Deassert => "deasserted",
            };
            let sensor = format!("#0x{sensor_number:02x}");
            Decoded {
                event: BmcEvent {
                    id,
                    at: time(ts),
                    message: format!("{st} {sensor}: {text} ({direction})"),
                    sensor_type: st,
                    sensor,
                    event: text,
                    direction: direction.into(),
                    severity: severity(event_type, event_data.offset, event_direction).into(),
                    raw,
                },
                sensor: Some((bytes[7], sensor_number, sensor_type)),
            }
        }
        Ok(Entry::OemTimestamped {
            ty,
            manufacturer_id,
            data,
            ..
        }) => {
            let ts = u32::from_le_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
            let event = format!(
                "OEM record 0x{ty:02x}, manufacturer {manufacturer_id}, data {}",
                hex(&data)
            );
            oem(id, time(ts), event, raw)
        }
        Ok(Entry::OemNotTimestamped { ty, data, .. }) => {
            let event = format!("OEM record 0x{ty:02x}, data {}", hex(&data));
            oem(id, None, event, raw)
        }
        Err(e) => malformed(format!("{e:?}")),
    }
}

/// Keeps the entries logged at or after `since` (entries without a valid
/// time always), then the newest `limit` of them, oldest first.
pub fn select(mut events: Vec<BmcEvent>, since: Option<i64>, limit: usize) -> Vec<BmcEvent> {
    if let Some(since) = since {
        events.retain(|e| e.at.is_none_or(|t| t >= since));
    }
    if events.len() > limit {
        events.drain(..events.len() - limit);
    }
    events
}

/// An OEM record: kept as the BMC wrote it, described by its bytes.
fn oem(id: String, at: Option<i64>, event: String, raw: String) -> Decoded {
    Decoded {
        event: BmcEvent {
            id,
            at,
            sensor_type: "OEM".into(),
            sensor: String::new(),
            message: event.clone(),
            event,
            direction: String::new(),
            severity: String::new(),
            raw,
        },
        sensor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(id: u16, ts: u32, st: u8, num: u8, dir_type: u8, data: [u8; 3]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&id.to_le_bytes());
        b.push(0x02);
        b.extend_from_slice(&ts.to_le_bytes());
        b.extend_from_slice(&[0x20, 0x00, 0x04, st, num, dir_type]);
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn power_unit_off_and_power_button() {
        let d = decode(
            5,
            &system(5, 0x6925_0000, 0x09, 0x01, 0x6F, [0x00, 0xFF, 0xFF]),
        );
        assert_eq!(d.event.id, "0x0005");
        assert_eq!(d.event.at, Some(0x6925_0000));
        assert_eq!(d.event.sensor_type, "Power Unit");
        assert_eq!(d.event.sensor, "#0x01");
        assert_eq!(d.event.event, "Power Off / Power Down");
        assert_eq!(d.event.direction, "asserted");
        assert_eq!(d.sensor, Some((0x20, 0x01, 0x09)));
        let d = decode(6, &system(6, 100, 0x14, 0x02, 0x6F, [0x00, 0xFF, 0xFF]));
        assert_eq!(d.event.event, "Power Button pressed");
        assert_eq!(d.event.at, None, "pre-init time");
        let d = decode(7, &system(7, 100, 0x09, 0x01, 0xEF, [0x00, 0xFF, 0xFF]));
        assert_eq!(d.event.direction, "deasserted");
    }

    #[test]
    fn threshold_events_have_severity() {
        let d = decode(1, &system(1, 0, 0x01, 0x01, 0x01, [0x59, 47, 45]));
        assert_eq!(d.event.event, "Upper Critical - going high");
        assert_eq!(d.event.severity, "critical");
        assert_eq!(d.event.sensor_type, "Temperature");
        let d = decode(1, &system(1, 0, 0x01, 0x01, 0x01, [0x57, 47, 40]));
        assert_eq!(d.event.severity, "warning");
    }

    #[test]
    fn unknown_offsets_and_oem_records() {
        let d = decode(1, &system(1, 0, 0x09, 0x01, 0x6F, [0x0E, 0xFF, 0xFF]));
        assert_eq!(d.event.event, "offset 14");
        let mut oem = system(2, 0x6925_0000, 0, 0, 0, [0; 3]);
        oem[2] = 0xC1;
        let d = decode(2, &oem);
        assert!(
            d.event.event.starts_with("OEM record 0xc1"),
            "{:?}",
            d.event
        );
        assert_eq!(d.event.at, Some(0x6925_0000));
        oem[2] = 0xE1;
        let d = decode(2, &oem);
        assert_eq!(d.event.at, None);
        assert_eq!(d.event.raw.len(), 32);
    }

    #[test]
    fn truncated_and_garbage_entries_say_so() {
        let good = system(3, 0, 0x09, 0x01, 0x6F, [0, 0xFF, 0xFF]);
        for n in 0..16 {
            let d = decode(3, &good[..n]);
            assert!(d.event.event.starts_with("malformed SEL record"), "{n}");
            assert_eq!(d.event.id, "0x0003");
        }
        let mut bad = good.clone();
        bad[2] = 0x10; // unknown record type
        assert!(decode(3, &bad).event.event.contains("UnknownRecordType"));
        let mut bad = good;
        bad[8] = 0xC0; // channel 0xC is invalid
        assert!(decode(3, &bad).event.event.contains("malformed"));
        for i in 0..16 {
            for v in [0x00, 0x02, 0x6F, 0x80, 0xC0, 0xE0, 0xFF] {
                let mut r = system(9, 0, 0x14, 0x02, 0x6F, [0, 0, 0]);
                r[i] = v;
                let _ = decode(9, &r);
            }
        }
    }

    #[test]
    fn since_and_limit() {
        let ev = |id: &str, at: Option<i64>| BmcEvent {
            id: id.into(),
            at,
            sensor_type: String::new(),
            sensor: String::new(),
            event: String::new(),
            direction: String::new(),
            severity: String::new(),
            message: String::new(),
            raw: String::new(),
        };
        let all = vec![
            ev("1", Some(10)),
            ev("2", None),
            ev("3", Some(20)),
            ev("4", Some(30)),
        ];
        let ids = |v: Vec<BmcEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(select(all.clone(), Some(20), 10)), ["2", "3", "4"]);
        assert_eq!(ids(select(all.clone(), None, 2)), ["3", "4"]);
        assert_eq!(ids(select(all, None, 0)), Vec::<String>::new());
    }
}
