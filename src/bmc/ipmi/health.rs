//! Sensors and the event log over IPMI: the SDR walk, Get Sensor Reading for
//! each sensor, the SEL walk, and their caches. The decoders are in
//! [`super::sdr`] and [`super::sel`].
//!
//! **All sending goes through [`send`]**, one adapter from an `ipmi-rs-core`
//! `IpmiCommand` to the session layer: it turns the command into a raw
//! request, holds the session lock for that one exchange only (a long SEL
//! walk never blocks a power command for longer than one round trip),
//! re-establishes a session that stopped answering like every other
//! idempotent command, and parses the answer with the command's
//! `handle_completion_code` / `parse_success_response`. Every command here is
//! a read (or a reservation, harmless to repeat), so retransmission is safe.
//!
//! Caches, per BMC: the decoded SDR repository, kept while Get SDR Repository
//! Info gives the same record count and addition/erase timestamps; the
//! decoded SEL entries, kept while Get SEL Info gives the same count and
//! timestamps, and extended — not re-read — when only entries were added
//! (the walk resumes at the last entry it had read).

use std::collections::HashMap;
use std::sync::Arc;

use ipmi_rs_core::connection::{CompletionErrorCode, IpmiCommand, Message, NotEnoughData};
use ipmi_rs_core::sensor_event::{GetSensorReading, ThresholdReading};

use super::lan::LanError;
use super::message::completion_meaning;
use super::sdr::{self, GetSdrPart, ReserveSdr, SdrInfo, SensorDef, HEADER_LEN};
use super::sel::{self, GetSelInfo, GetSelRaw};
use super::Inner;
use crate::bmc::inventory::{BmcEvent, Health};
use crate::bmc::BmcError;

/// What can come back from [`send`].
#[derive(Debug)]
pub enum Failed<E> {
    /// No answer, no session, a broken answer: the BMC's trouble, as for any
    /// other command.
    Bmc(BmcError),
    /// A completion code ≠ 0 that the command did not claim.
    Completion(u8),
    /// The command's own error (its decoder, or a completion code it knows).
    Command(E),
}

impl<E: std::fmt::Debug> Failed<E> {
    /// For a read the walk cannot do without: the BMC's own error as is,
    /// anything else as an answer we cannot use.
    fn into_bmc_error(self, inner: &Inner, what: &str) -> BmcError {
        match self {
            Failed::Bmc(e) => e,
            other => BmcError::Protocol(format!("{}: {}", inner.bmc, other.describe(what))),
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            Failed::Bmc(e) => format!("{what}: {e}"),
            Failed::Completion(cc) => format!(
                "{what}: {} (completion code {cc:#04x})",
                completion_meaning(*cc)
            ),
            Failed::Command(e) => format!("{what}: cannot be decoded: {e:?}"),
        }
    }
}

/// THE adapter: sends one `ipmi-rs-core` command over this driver's session
/// (the crate's `Message` as the session carries it) and parses the answer
/// with the crate. Unlike `Inner::run_idempotent` it hands back the raw
/// completion code, which the SDR and SEL walks act on (0xC5 reservation
/// lost, 0xCA too many bytes asked); nothing else here sends.
pub(super) async fn send<C>(
    inner: &Arc<Inner>,
    what: &'static str,
    cmd: C,
) -> Result<C::Output, Failed<C::Error>>
where
    C: IpmiCommand,
{
    if let Some((addr, channel)) = cmd.target() {
        if addr.0 != super::message::BMC_ADDR || channel.value() != 0 {
            return Err(Failed::Bmc(BmcError::Unsupported(format!(
                "{what}: a sensor owned by {:#04x} on channel {} (bridged requests)",
                addr.0,
                channel.value()
            ))));
        }
    }
    // request
    let req: Message = cmd.into();
    let rsp = {
        let mut slot = inner.session.lock().await;
        let reused = slot.is_some();
        let s = inner.ensure(&mut slot).await.map_err(Failed::Bmc)?;
        match s.request(&req, inner.retry()).await {
            Ok(r) => r,
            Err(LanError::Timeout { .. }) if reused => {
                tracing::warn!(
                    server_id = %inner.server_id,
                    bmc = %inner.bmc,
                    command = what,
                    "no answer in the current session; re-establishing it"
                );
                inner.discard(&mut slot);
                let s = inner.ensure(&mut slot).await.map_err(Failed::Bmc)?;
                match s.request(&req, inner.retry()).await {
                    Ok(r) => r,
                    Err(e) => return Err(Failed::Bmc(inner.fail(&mut slot, what, e))),
                }
            }
            Err(e) => return Err(Failed::Bmc(inner.fail(&mut slot, what, e))),
        }
    };
    // answer
    if rsp.cc() != 0 {
        if let Ok(code) = CompletionErrorCode::try_from(rsp.cc()) {
            if let Some(e) = C::handle_completion_code(code, rsp.data()) {
                return Err(Failed::Command(e));
            }
        }
        return Err(Failed::Completion(rsp.cc()));
    }
    C::parse_success_response(rsp.data()).map_err(Failed::Command)
}

/// The per-BMC caches.
#[derive(Default)]
pub(super) struct Caches {
    sdr: std::sync::Mutex<Option<Arc<SdrCache>>>,
    sel: std::sync::Mutex<Option<Arc<SelCache>>>,
}

struct SdrCache {
    key: (u16, String, String),
    sensors: Vec<SensorDef>,
    problems: Vec<String>,
}

#[derive(Clone)]
struct SelCache {
    key: (u16, String, String),
    erase: String,
    entries: Vec<sel::Decoded>,
    /// Record id of the last entry read (where a walk resumes).
    last: Option<u16>,
}

/// Bytes asked per Get SDR after the header; halved when the BMC says it
/// cannot return that many.
const SDR_CHUNK: u8 = 32;
/// Reservations lost in a row before a record is given up.
const MAX_RESERVE: u32 = 4;
/// Records walked at most (a linked list that loops must not loop us).
const MAX_RECORDS: usize = 4096;

/// Why one record could not be read.
enum RecordErr {
    /// Give up the walk: the BMC is gone (the call fails).
    Bmc(BmcError),
    /// This record is bad; `next` is where to go on, when known.
    Record { why: String, next: Option<u16> },
}

/// Where SDR records are read from: the BMC ([`Live`]), or a scripted
/// repository in the unit tests.
#[async_trait::async_trait]
trait SdrSource: Send {
    fn bmc(&self) -> &str;
    async fn reserve(&mut self) -> Result<u16, Failed<NotEnoughData>>;
    async fn part(&mut self, p: GetSdrPart) -> Result<(u16, Vec<u8>), Failed<NotEnoughData>>;
}

struct Live<'a>(&'a Arc<Inner>);

#[async_trait::async_trait]
impl SdrSource for Live<'_> {
    fn bmc(&self) -> &str {
        &self.0.bmc
    }
    async fn reserve(&mut self) -> Result<u16, Failed<NotEnoughData>> {
        send(self.0, "Reserve SDR Repository", ReserveSdr).await
    }
    async fn part(&mut self, p: GetSdrPart) -> Result<(u16, Vec<u8>), Failed<NotEnoughData>> {
        send(self.0, "Get SDR", p).await
    }
}

async fn reserve_sdr(src: &mut impl SdrSource) -> Result<u16, RecordErr> {
    match src.reserve().await {
        Ok(r) => Ok(r),
        Err(Failed::Bmc(e)) => Err(RecordErr::Bmc(e)),
        // Without reservations (0xC1), partial reads go with id 0.
        Err(Failed::Completion(0xC1)) => Ok(0),
        Err(e) => Err(RecordErr::Record {
            why: e.describe("Reserve SDR Repository"),
            next: None,
        }),
    }
}

/// Reads one whole record: its header, then the rest in chunks, re-reserving
/// when the reservation was lost (0xC5) and starting the record over.
async fn read_record(
    src: &mut impl SdrSource,
    id: u16,
    reservation: &mut u16,
) -> Result<(u16, Vec<u8>), RecordErr> {
    let mut chunk = SDR_CHUNK;
    let mut lost = 0;
    'again: loop {
        let mut next = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut total = HEADER_LEN;
        while buf.len() < total {
            if buf.len() > u8::MAX as usize {
                return Err(RecordErr::Record {
                    why: format!("declares {total} bytes; Get SDR cannot read past offset 255"),
                    next,
                });
            }
            let want = if buf.is_empty() {
                HEADER_LEN as u8
            } else {
                chunk.min((total - buf.len()) as u8)
            };
            let part = GetSdrPart {
                reservation: *reservation,
                record: id,
                offset: buf.len() as u8,
                len: want,
            };
            match src.part(part).await {
                Ok((n, data)) => {
                    next.get_or_insert(n);
                    if data.is_empty() {
                        return Err(RecordErr::Record {
                            why: format!("truncated: {} bytes, {total} expected", buf.len()),
                            next,
                        });
                    }
                    buf.extend_from_slice(&data[..data.len().min(want as usize)]);
                    if total == HEADER_LEN && buf.len() >= HEADER_LEN {
                        total = HEADER_LEN + buf[4] as usize;
                        buf.truncate(total);
                    }
                }
                Err(Failed::Bmc(e)) => return Err(RecordErr::Bmc(e)),
                Err(Failed::Completion(0xC5)) if lost < MAX_RESERVE => {
                    lost += 1;
                    tracing::debug!(bmc = %src.bmc(), record = id, "SDR reservation lost; reserving again");
                    *reservation = reserve_sdr(src).await?;
                    continue 'again;
                }
                Err(Failed::Completion(0xCA | 0xC7 | 0xC8)) if !buf.is_empty() && chunk > 8 => {
                    chunk /= 2;
                    continue;
                }
                Err(e) => {
                    let why = if buf.is_empty() {
                        e.describe("Get SDR")
                    } else {
                        format!(
                            "truncated: {} bytes, {total} expected ({})",
                            buf.len(),
                            e.describe("Get SDR")
                        )
                    };
                    return Err(RecordErr::Record { why, next });
                }
            }
        }
        return Ok((next.unwrap_or(0xFFFF), buf));
    }
}

/// The SDR repository, from the cache while its timestamps hold.
async fn repository(inner: &Arc<Inner>) -> Result<Arc<SdrCache>, BmcError> {
    let info = send(inner, "Get SDR Repository Info", SdrInfo)
        .await
        .map_err(|e| e.into_bmc_error(inner, "Get SDR Repository Info"))?;
    let key = sdr::repository_key(&info);
    if let Some(c) = inner.caches.sdr.lock().expect("not poisoned").as_ref() {
        if c.key == key {
            return Ok(c.clone());
        }
    }
    let mut sensors = Vec::new();
    let mut problems = Vec::new();
    let mut complete = true;
    if info.record_count > 0 {
        let mut src = Live(inner);
        let mut reservation = match reserve_sdr(&mut src).await {
            Ok(r) => r,
            Err(RecordErr::Bmc(e)) => return Err(e),
            Err(RecordErr::Record { why, .. }) => {
                problems.push(why);
                0
            }
        };
        let mut id = 0u16;
        let mut seen = std::collections::HashSet::new();
        loop {
            if !seen.insert(id) || seen.len() > MAX_RECORDS {
                problems.push(format!(
                    "SDR record 0x{id:04x}: the record list loops; walk stopped"
                ));
                complete = false;
                break;
            }
            let next = match read_record(&mut src, id, &mut reservation).await {
                Ok((next, bytes)) => {
                    let rid = if bytes.len() >= 2 {
                        u16::from_le_bytes([bytes[0], bytes[1]])
                    } else {
                        id
                    };
                    match sdr::decode_record(rid, &bytes) {
                        Ok(Some(def)) => sensors.push(def),
                        Ok(None) => {}
                        Err(why) => problems.push(format!("SDR record 0x{rid:04x}: {why}")),
                    }
                    Some(next)
                }
                Err(RecordErr::Bmc(e)) => return Err(e),
                Err(RecordErr::Record { why, next }) => {
                    problems.push(format!("SDR record 0x{id:04x}: {why}"));
                    if next.is_none() {
                        complete = false;
                    }
                    next
                }
            };
            match next {
                Some(0xFFFF) => break,
                Some(n) => id = n,
                None => {
                    problems.push("the SDR walk stopped: the next record is unknown".into());
                    break;
                }
            }
        }
    }
    for p in &problems {
        tracing::warn!(server_id = %inner.server_id, bmc = %inner.bmc, problem = %p, "SDR repository");
    }
    let cache = Arc::new(SdrCache {
        key,
        sensors,
        problems,
    });
    if complete {
        *inner.caches.sdr.lock().expect("not poisoned") = Some(cache.clone());
    }
    Ok(cache)
}

/// Every sensor now.
pub(super) async fn health(inner: &Arc<Inner>) -> Result<Health, BmcError> {
    let repo = repository(inner).await?;
    let mut out = Health {
        sensors: Vec::with_capacity(repo.sensors.len()),
        problems: repo.problems.clone(),
    };
    for def in &repo.sensors {
        let what = "Get Sensor Reading";
        if def.lun != 0 {
            // The session layer addresses LUN 0 only.
            out.problems.push(format!(
                "sensor {:?} (0x{:02x}, SDR record 0x{:04x}): on LUN {}, which this driver does not address",
                def.name, def.number, def.record_id, def.lun
            ));
            out.sensors.push(sdr::unreadable(def));
            continue;
        }
        match send(inner, what, GetSensorReading::for_sensor_key(&def.key)).await {
            Ok(raw) => out
                .sensors
                .push(sdr::reading(def, &ThresholdReading::from(&raw))),
            Err(Failed::Bmc(e)) if e.is_unavailable() => return Err(e),
            Err(e) => {
                out.problems.push(format!(
                    "sensor {:?} (0x{:02x}, SDR record 0x{:04x}): {}",
                    def.name,
                    def.number,
                    def.record_id,
                    e.describe(what)
                ));
                out.sensors.push(sdr::unreadable(def));
            }
        }
    }
    Ok(out)
}

/// The SEL, read incrementally.
async fn sel_entries(inner: &Arc<Inner>) -> Result<Arc<SelCache>, BmcError> {
    let info = send(inner, "Get SEL Info", GetSelInfo)
        .await
        .map_err(|e| e.into_bmc_error(inner, "Get SEL Info"))?;
    let key = sel::info_key(&info);
    let erase = sel::erase_key(&info);
    let cached = inner.caches.sel.lock().expect("not poisoned").clone();
    if let Some(c) = &cached {
        if c.key == key {
            return Ok(c.clone());
        }
    }
    let mut cache = match cached {
        // Only additions since: resume after the last entry read.
        Some(c)
            if c.erase == erase && c.last.is_some() && info.entries as usize >= c.entries.len() =>
        {
            let mut c = (*c).clone();
            c.key = key.clone();
            c
        }
        _ => SelCache {
            key: key.clone(),
            erase,
            entries: Vec::new(),
            last: None,
        },
    };
    if info.entries == 0 {
        cache.entries.clear();
        cache.last = None;
    } else {
        let mut id = match cache.last {
            // Read the last entry again: its next id now points at the new ones.
            Some(last) => match send(inner, "Get SEL Entry", GetSelRaw { record: last }).await {
                Ok((next, _)) => next,
                Err(Failed::Bmc(e)) => return Err(e),
                Err(_) => {
                    // Gone after all: read everything.
                    cache.entries.clear();
                    0
                }
            },
            None => 0,
        };
        let mut steps = 0usize;
        while id != 0xFFFF {
            steps += 1;
            if steps > 0x10000 {
                tracing::warn!(bmc = %inner.bmc, "the SEL record list loops; walk stopped");
                break;
            }
            match send(inner, "Get SEL Entry", GetSelRaw { record: id }).await {
                Ok((next, bytes)) => {
                    let rid = if bytes.len() >= 2 {
                        u16::from_le_bytes([bytes[0], bytes[1]])
                    } else {
                        id
                    };
                    let d = sel::decode(rid, &bytes);
                    if d.event.event.starts_with("malformed") {
                        tracing::warn!(
                            server_id = %inner.server_id,
                            bmc = %inner.bmc,
                            problem = %d.event.message,
                            "SEL entry kept raw"
                        );
                    }
                    cache.entries.push(d);
                    cache.last = Some(rid);
                    id = next;
                }
                Err(Failed::Bmc(e)) => return Err(e),
                // Nothing at 0x0000 (an empty log in the middle of an erase).
                Err(Failed::Completion(0xCB)) if id == 0 => break,
                Err(e) => {
                    let why = e.describe("Get SEL Entry");
                    tracing::warn!(server_id = %inner.server_id, bmc = %inner.bmc, record = id, problem = %why, "SEL walk stopped");
                    return Err(BmcError::Protocol(format!(
                        "{}: SEL record 0x{id:04x}: {why}",
                        inner.bmc
                    )));
                }
            }
        }
    }
    let cache = Arc::new(cache);
    *inner.caches.sel.lock().expect("not poisoned") = Some(cache.clone());
    Ok(cache)
}

/// The event log, with sensor names from the SDR where it has them.
pub(super) async fn events(
    inner: &Arc<Inner>,
    since: Option<i64>,
    limit: usize,
) -> Result<Vec<BmcEvent>, BmcError> {
    let log = sel_entries(inner).await?;
    let names: HashMap<(u8, u8, u8), String> = match repository(inner).await {
        Ok(repo) => repo
            .sensors
            .iter()
            .map(|s| ((s.owner, s.number, s.sensor_type), s.name.clone()))
            .collect(),
        Err(e) => {
            tracing::debug!(bmc = %inner.bmc, error = %e, "no sensor names for the event log");
            HashMap::new()
        }
    };
    let events = log
        .entries
        .iter()
        .map(|d| {
            let mut e = d.event.clone();
            if let Some(name) = d.sensor.and_then(|k| names.get(&k)) {
                e.message = e.message.replacen(&e.sensor, name, 1);
                e.sensor = name.clone();
            }
            e
        })
        .collect();
    Ok(sel::select(events, since, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository that answers like a BMC with limits: at most `max` bytes
    /// per read (0xCA beyond), reservation `res` only (0xC5 otherwise), and
    /// a reservation lost once after `lose_after` reads.
    struct Scripted {
        records: Vec<(u16, Vec<u8>)>,
        max: usize,
        res: u16,
        reads: usize,
        lose_after: Option<usize>,
        reserves: usize,
    }

    #[async_trait::async_trait]
    impl SdrSource for Scripted {
        fn bmc(&self) -> &str {
            "scripted"
        }
        async fn reserve(&mut self) -> Result<u16, Failed<NotEnoughData>> {
            self.reserves += 1;
            self.res += 1;
            Ok(self.res)
        }
        async fn part(&mut self, p: GetSdrPart) -> Result<(u16, Vec<u8>), Failed<NotEnoughData>> {
            self.reads += 1;
            if self.lose_after == Some(self.reads) {
                self.res += 100;
            }
            if p.offset != 0 && p.reservation != self.res {
                return Err(Failed::Completion(0xC5));
            }
            if p.len as usize > self.max && p.len != 0xFF {
                return Err(Failed::Completion(0xCA));
            }
            let i = self
                .records
                .iter()
                .position(|(id, _)| *id == p.record)
                .ok_or(Failed::Completion(0xCB))?;
            let next = self.records.get(i + 1).map_or(0xFFFF, |r| r.0);
            let b = &self.records[i].1;
            let from = (p.offset as usize).min(b.len());
            let to = (from + p.len as usize).min(b.len());
            Ok((next, b[from..to].to_vec()))
        }
    }

    fn record(len: usize) -> Vec<u8> {
        let mut r: Vec<u8> = (0..len as u8).collect();
        r[4] = (len - HEADER_LEN) as u8;
        r
    }

    fn scripted(records: Vec<(u16, Vec<u8>)>, max: usize, lose_after: Option<usize>) -> Scripted {
        Scripted {
            records,
            max,
            res: 1,
            reads: 0,
            lose_after,
            reserves: 0,
        }
    }

    #[tokio::test]
    async fn reads_in_chunks_and_halves_them_when_the_bmc_says_too_many() {
        let r = record(58);
        let mut src = scripted(vec![(7, r.clone()), (9, record(20))], 16, None);
        let mut res = 1;
        let (next, got) = read_record(&mut src, 7, &mut res).await.ok().unwrap();
        assert_eq!((next, got), (9, r));
    }

    #[tokio::test]
    async fn a_lost_reservation_is_renewed_and_the_record_read_again() {
        let r = record(58);
        let mut src = scripted(vec![(7, r.clone())], 64, Some(2));
        let mut res = 1;
        let (next, got) = read_record(&mut src, 7, &mut res).await.ok().unwrap();
        assert_eq!((next, got), (0xFFFF, r));
        assert_eq!(src.reserves, 1);
        assert_eq!(res, src.res);
    }

    #[tokio::test]
    async fn a_record_shorter_than_its_header_says_is_a_record_error() {
        let mut r = record(20);
        r[4] = 60; // claims 60 bytes after the header, has 15
        let mut src = scripted(vec![(7, r), (8, record(10))], 64, None);
        let mut res = 1;
        match read_record(&mut src, 7, &mut res).await {
            Err(RecordErr::Record { why, next }) => {
                assert_eq!(why, "truncated: 20 bytes, 65 expected");
                assert_eq!(next, Some(8), "the walk can go on");
            }
            _ => panic!("expected a record error"),
        }
        match read_record(&mut src, 99, &mut res).await {
            Err(RecordErr::Record { why, next: None }) => {
                assert!(why.contains("0xcb"), "{why}")
            }
            _ => panic!("expected a record error"),
        }
    }
}
