//! Identity, sensors and the event log over Redfish: the Manager and the
//! System (identity), the system's Chassis — its `Sensors` collection, else the
//! legacy `Thermal` and `Power` resources — (health), and the LogServices of
//! the system and of its manager (events).
//!
//! These resources vary more between firmware than the power path does, and
//! one odd member must not hide the others, so they are read as JSON values
//! and checked property by property: a sensor member that cannot be
//! understood becomes a line in [`Health::problems`] naming its `@odata.id`,
//! a log entry that cannot be understood is skipped with a warning in the log
//! (tracing), and only a BMC that cannot be reached, or refuses our
//! credentials, fails a whole call.
//!
//! Bounds: at most [`MAX_SENSOR_MEMBERS`] sensor members are read, with at
//! most [`MEMBER_CONCURRENCY`] GETs in flight (one GET of the collection with
//! `$expand` when the service root says it supports it); at most
//! [`MAX_LOG_PAGES`] pages of log entries are followed.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::client::Client;
use super::discovery::Discovered;
use crate::bmc::{
    BmcError, BmcEvent, BmcIdentity, Health, SensorKind, SensorReading, SensorStatus, Thresholds,
};

/// The most sensor members read in one [`health`] call; the rest are named in
/// one problem line.
pub const MAX_SENSOR_MEMBERS: usize = 256;
/// Member GETs in flight at once (the client's own `max_connections` bounds
/// them too).
pub const MEMBER_CONCURRENCY: usize = 4;
/// The most pages (`Members@odata.nextLink`) of one log's entries followed;
/// past it, the rest of the log is not read, and a warning says so.
pub const MAX_LOG_PAGES: usize = 64;
/// The most pages of a sensors collection followed.
const MAX_COLLECTION_PAGES: usize = 16;
/// The most chassis of a system looked at for its sensors.
const MAX_CHASSIS: usize = 4;
/// The most log services looked at under one `LogServices` collection.
const MAX_LOG_SERVICES: usize = 16;
/// The most log entries fetched one by one (entries listed as links only).
const MAX_ENTRY_GETS: usize = 1024;

// ---------------------------------------------------------------------------
// JSON helpers.

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn link(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(|l| l.get("@odata.id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn links(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|l| l.get("@odata.id").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional string property: absent or null is `None`, another type is
/// an error.
fn opt_str(v: &Value, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(other) => Err(format!("{key} is {}, not a string", type_name(other))),
    }
}

/// An optional number property: absent or null is `None`, another type is an
/// error.
fn opt_num(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(format!("{key} is {}, not a number", type_name(other))),
    }
}

/// A collection's member links, and members given inline (`$expand`, or a
/// BMC that always inlines them).
fn members(v: &Value) -> Result<Vec<Value>, String> {
    match v.get("Members") {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(other) => Err(format!("Members is {}, not an array", type_name(other))),
    }
}

/// Whether a member is only a link (`{"@odata.id": ...}`), to be fetched.
fn is_bare_link(m: &Value) -> bool {
    m.as_object()
        .is_some_and(|o| o.keys().all(|k| k.starts_with('@')))
}

/// Runs futures concurrently (their own semaphore bounds the work in flight)
/// and returns their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Errors that end a whole call: the BMC is down, or refuses us. Anything
/// else (a 404 on one member, a body that does not parse) concerns one
/// resource.
fn is_fatal(e: &BmcError) -> bool {
    e.is_unavailable() || matches!(e, BmcError::Auth(_))
}

async fn get(client: &Client, path: &str) -> Result<Value, BmcError> {
    client.get_json::<Value>(path).await
}

/// GETs `paths` with at most [`MEMBER_CONCURRENCY`] in flight.
async fn get_all(client: &Client, paths: &[String]) -> Vec<Result<Value, BmcError>> {
    let gate = Semaphore::new(MEMBER_CONCURRENCY);
    let gate = &gate;
    join_all(
        paths
            .iter()
            .map(|p| async move {
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| BmcError::Unreachable("closed".into()))?;
                get(client, p).await
            })
            .collect(),
    )
    .await
}

// ---------------------------------------------------------------------------
// Identity.

/// The identity from the System and its Manager (when one was found).
pub fn identity_from(system: &Value, manager: Option<&Value>) -> BmcIdentity {
    BmcIdentity {
        bmc_manufacturer: manager.and_then(|m| text(m, "Manufacturer")),
        bmc_model: manager.and_then(|m| text(m, "Model")),
        firmware_version: manager.and_then(|m| text(m, "FirmwareVersion")),
        ipmi_version: None,
        system_manufacturer: text(system, "Manufacturer"),
        system_model: text(system, "Model"),
        serial_number: text(system, "SerialNumber"),
        bios_version: text(system, "BiosVersion"),
    }
}

/// The manager of the system: `Links.ManagedBy`, else the Managers
/// collection's only member, else the one whose `Links.ManagerForServers`
/// names the system. `None` (with a warning) when none can be told.
async fn find_manager(
    client: &Client,
    d: &Discovered,
    system: &Value,
) -> Result<Option<(String, Value)>, BmcError> {
    let system_links = system.get("Links").cloned().unwrap_or(Value::Null);
    let mut candidates = links(&system_links, "ManagedBy");
    let from_link = !candidates.is_empty();
    if candidates.is_empty() {
        if let Some(coll) = &d.managers {
            match get(client, coll).await {
                Ok(c) => candidates = links(&c, "Members"),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    warn!(server_id = client.server_id(), bmc = client.bmc(), managers = %coll, error = %e,
                        "cannot read the Managers collection");
                }
            }
        }
    }
    if from_link || candidates.len() == 1 {
        let path = candidates[0].clone();
        return match get(client, &path).await {
            Ok(m) => Ok(Some((path, m))),
            Err(e) if is_fatal(&e) => Err(e),
            Err(e) => {
                warn!(server_id = client.server_id(), bmc = client.bmc(), manager = %path, error = %e,
                    "cannot read the system's manager");
                Ok(None)
            }
        };
    }
    let read: Vec<String> = candidates.iter().take(8).cloned().collect();
    for (path, m) in read.iter().zip(get_all(client, &read).await) {
        let m = match m {
            Ok(m) => m,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(_) => continue,
        };
        let serves = m
            .get("Links")
            .map(|l| links(l, "ManagerForServers"))
            .unwrap_or_default();
        if serves.iter().any(|s| s.trim_end_matches('/') == d.system) {
            return Ok(Some((path.clone(), m)));
        }
    }
    if !candidates.is_empty() {
        warn!(
            server_id = client.server_id(),
            bmc = client.bmc(),
            managers = candidates.len(),
            "the system names no manager and none of the managers names the system: \
             the BMC's model and firmware are left out"
        );
    }
    Ok(None)
}

pub async fn identity(client: &Client, d: &Discovered) -> Result<BmcIdentity, BmcError> {
    let system = get(client, &d.system).await?;
    let manager = find_manager(client, d, &system).await?;
    Ok(identity_from(&system, manager.as_ref().map(|(_, m)| m)))
}

// ---------------------------------------------------------------------------
// Health: sensors.

/// A Redfish unit (UCUM in `Sensor.ReadingUnits`, words in legacy Fans) in
/// the words the IPMI side uses.
pub fn unit_words(unit: &str) -> String {
    match unit {
        "Cel" => "degrees C",
        "RPM" | "{rev}/min" => "RPM",
        "V" => "Volts",
        "A" => "Amps",
        "W" => "Watts",
        "%" | "Percent" => "percent",
        other => other,
    }
    .to_string()
}

/// `Sensor.ReadingType` (or the unit, where the type is missing) as a kind.
fn kind_of(reading_type: Option<&str>, unit: Option<&str>) -> SensorKind {
    match reading_type {
        Some("Temperature") => SensorKind::Temperature,
        Some("Rotational") => SensorKind::Fan,
        Some("Voltage") => SensorKind::Voltage,
        Some("Current") => SensorKind::Current,
        Some("Power") => SensorKind::Power,
        Some(_) => SensorKind::Other,
        None => match unit {
            Some("Cel") => SensorKind::Temperature,
            Some("RPM") => SensorKind::Fan,
            Some("V") => SensorKind::Voltage,
            Some("A") => SensorKind::Current,
            Some("W") => SensorKind::Power,
            _ => SensorKind::Other,
        },
    }
}

/// `Status.State` values that mean "no reading".
fn state_unavailable(state: Option<&str>) -> bool {
    state.is_some_and(|s| matches!(s, "Absent" | "Disabled") || s.starts_with("Unavailable"))
}

/// The status: unavailable without a reading, else the BMC's own
/// `Status.Health`, else (no health given) the reading against the
/// thresholds.
fn status_of(health: Option<&str>, value: Option<f64>, t: &Thresholds) -> SensorStatus {
    let Some(v) = value else {
        return SensorStatus::Unavailable;
    };
    match health {
        Some("OK") => SensorStatus::Ok,
        Some("Warning") => SensorStatus::Warning,
        Some("Critical") => SensorStatus::Critical,
        _ => {
            let above = |x: Option<f64>| x.is_some_and(|x| v >= x);
            let below = |x: Option<f64>| x.is_some_and(|x| v <= x);
            if above(t.upper_critical) || below(t.lower_critical) {
                SensorStatus::Critical
            } else if above(t.upper_warning) || below(t.lower_warning) {
                SensorStatus::Warning
            } else {
                SensorStatus::Ok
            }
        }
    }
}

fn status_parts(v: &Value) -> Result<(Option<String>, Option<String>), String> {
    match v.get("Status") {
        None | Some(Value::Null) => Ok((None, None)),
        Some(s @ Value::Object(_)) => Ok((opt_str(s, "State")?, opt_str(s, "Health")?)),
        Some(other) => Err(format!("Status is {}, not an object", type_name(other))),
    }
}

fn name_of(v: &Value, at: &str) -> String {
    text(v, "Name")
        .or_else(|| text(v, "Id"))
        .or_else(|| text(v, "MemberId"))
        .unwrap_or_else(|| {
            at.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(at)
                .to_string()
        })
}

/// One member of a `Sensors` collection (Sensor v1.x), found at `at`.
pub fn sensor_from(member: &Value, at: &str) -> Result<SensorReading, String> {
    if !member.is_object() {
        return Err(format!("{} instead of a Sensor", type_name(member)));
    }
    let (state, health) = status_parts(member)?;
    let unavailable = state_unavailable(state.as_deref());
    let value = match member.get("Reading") {
        None if unavailable => None,
        None => return Err("no Reading".into()),
        Some(_) => opt_num(member, "Reading")?,
    };
    let reading_type = opt_str(member, "ReadingType")?;
    let units = opt_str(member, "ReadingUnits")?;
    let mut thresholds = Thresholds::default();
    match member.get("Thresholds") {
        None | Some(Value::Null) => {}
        Some(t @ Value::Object(_)) => {
            let one = |key: &str| -> Result<Option<f64>, String> {
                match t.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(th) => opt_num(th, "Reading").map_err(|e| format!("Thresholds.{key}.{e}")),
                }
            };
            thresholds.lower_critical = one("LowerCritical")?;
            thresholds.lower_warning = one("LowerCaution")?;
            thresholds.upper_warning = one("UpperCaution")?;
            thresholds.upper_critical = one("UpperCritical")?;
        }
        Some(other) => return Err(format!("Thresholds is {}, not an object", type_name(other))),
    }
    let value = if unavailable { None } else { value };
    Ok(SensorReading {
        name: name_of(member, at),
        kind: kind_of(reading_type.as_deref(), units.as_deref()),
        value,
        unit: units.as_deref().map(unit_words).unwrap_or_default(),
        status: status_of(health.as_deref(), value, &thresholds),
        thresholds,
        context: opt_str(member, "PhysicalContext")?,
    })
}

/// The legacy threshold properties (Thermal, Power): critical, else fatal,
/// as critical; non-critical as warning.
fn legacy_thresholds(v: &Value) -> Result<Thresholds, String> {
    let either =
        |a: &str, b: &str| -> Result<Option<f64>, String> { Ok(opt_num(v, a)?.or(opt_num(v, b)?)) };
    Ok(Thresholds {
        lower_critical: either("LowerThresholdCritical", "LowerThresholdFatal")?,
        lower_warning: opt_num(v, "LowerThresholdNonCritical")?,
        upper_warning: opt_num(v, "UpperThresholdNonCritical")?,
        upper_critical: either("UpperThresholdCritical", "UpperThresholdFatal")?,
    })
}

/// One element of a legacy array (`Temperatures`, `Fans`, `Voltages`,
/// `PowerControl`), whose reading is the first of `reading_keys` present.
fn legacy_reading(
    v: &Value,
    at: &str,
    reading_keys: &[&str],
    kind: SensorKind,
    unit: &str,
) -> Result<SensorReading, String> {
    if !v.is_object() {
        return Err(format!("{} instead of an object", type_name(v)));
    }
    let (state, health) = status_parts(v)?;
    let unavailable = state_unavailable(state.as_deref());
    let key = reading_keys.iter().find(|k| v.get(**k).is_some());
    let value = match key {
        None if unavailable => None,
        None => return Err(format!("no {}", reading_keys.join(" or "))),
        Some(k) => opt_num(v, k)?,
    };
    let value = if unavailable { None } else { value };
    let thresholds = legacy_thresholds(v)?;
    let unit = match opt_str(v, "ReadingUnits")? {
        Some(u) => unit_words(&u),
        None => unit.to_string(),
    };
    Ok(SensorReading {
        name: name_of(v, at),
        kind,
        value,
        unit,
        status: status_of(health.as_deref(), value, &thresholds),
        thresholds,
        context: opt_str(v, "PhysicalContext")?,
    })
}

/// The sensors of a legacy `Thermal` or `Power` resource found at `at`,
/// added to `health`.
pub fn legacy_sensors(resource: &Value, at: &str, health: &mut Health) {
    type Spec = (
        &'static str,
        &'static [&'static str],
        SensorKind,
        &'static str,
    );
    const SPECS: [Spec; 4] = [
        (
            "Temperatures",
            &["ReadingCelsius"],
            SensorKind::Temperature,
            "degrees C",
        ),
        ("Fans", &["Reading", "ReadingRPM"], SensorKind::Fan, "RPM"),
        ("Voltages", &["ReadingVolts"], SensorKind::Voltage, "Volts"),
        (
            "PowerControl",
            &["PowerConsumedWatts"],
            SensorKind::Power,
            "Watts",
        ),
    ];
    for (array, keys, kind, unit) in SPECS {
        let items = match resource.get(array) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(other) => {
                health.problems.push(format!(
                    "{at}: {array} is {}, not an array",
                    type_name(other)
                ));
                continue;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let id = item
                .get("@odata.id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{at}#/{array}/{i}"));
            match legacy_reading(item, &id, keys, kind, unit) {
                Ok(mut s) => {
                    if kind == SensorKind::Power && text(item, "Name").is_none() {
                        s.name = format!("Power Control {i}");
                    }
                    health.sensors.push(s);
                }
                Err(e) => health.problems.push(format!("{id}: {e}")),
            }
        }
    }
}

/// The chassis that may hold the system's sensors: those of its
/// `Links.Chassis` (a blade's system links its own chassis and the
/// enclosure), else the Chassis collection's only member.
async fn chassis_candidates(
    client: &Client,
    d: &Discovered,
    system: &Value,
) -> Result<Vec<String>, BmcError> {
    let system_links = system.get("Links").cloned().unwrap_or(Value::Null);
    let linked = links(&system_links, "Chassis");
    if !linked.is_empty() {
        return Ok(linked.into_iter().take(MAX_CHASSIS).collect());
    }
    let Some(coll) = &d.chassis else {
        return Err(BmcError::Unsupported(format!(
            "sensors: system {:?} links no chassis and the service root lists no Chassis",
            d.system_id
        )));
    };
    let all = links(&get(client, coll).await?, "Members");
    match all.as_slice() {
        [only] => Ok(vec![only.clone()]),
        [] => Err(BmcError::Unsupported(format!(
            "sensors: system {:?} links no chassis and {coll} is empty",
            d.system_id
        ))),
        many => Err(BmcError::Unsupported(format!(
            "sensors: system {:?} links no chassis and the BMC has {} ({}); which one holds its \
             sensors cannot be told",
            d.system_id,
            many.len(),
            many.join(", ")
        ))),
    }
}

/// The first candidate chassis that links `Sensors`, `Thermal` or `Power`.
async fn find_chassis(
    client: &Client,
    d: &Discovered,
    system: &Value,
) -> Result<(String, Value), BmcError> {
    let candidates = chassis_candidates(client, d, system).await?;
    let mut first_error = None;
    for path in &candidates {
        match get(client, path).await {
            Ok(c)
                if ["Sensors", "Thermal", "Power"]
                    .iter()
                    .any(|k| link(&c, k).is_some()) =>
            {
                return Ok((path.clone(), c));
            }
            Ok(_) => {}
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if candidates.len() == 1 => Err(e),
        _ => Err(BmcError::Unsupported(format!(
            "sensors: no Sensors, Thermal or Power resource under the chassis of system {:?} ({})",
            d.system_id,
            candidates.join(", ")
        ))),
    }
}

/// Every member of a collection (following `Members@odata.nextLink`),
/// fetched where only linked, each with the path it came from. At most `cap`
/// members; how many more there were is returned too.
async fn collection_members(
    client: &Client,
    first_page: &str,
    expand: Option<&str>,
    cap: usize,
    problems: &mut Vec<String>,
) -> Result<(Vec<(String, Result<Value, BmcError>)>, usize), BmcError> {
    let mut listed: Vec<Value> = Vec::new();
    let mut page = match expand {
        Some(q) => {
            let url = format!("{first_page}?{q}");
            match get(client, &url).await {
                Ok(v) => v,
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    debug!(server_id = client.server_id(), bmc = client.bmc(), url = %url, error = %e,
                        "$expand refused; reading the members one by one");
                    get(client, first_page).await?
                }
            }
        }
        None => get(client, first_page).await?,
    };
    let mut pages = 1;
    loop {
        match members(&page) {
            Ok(m) => listed.extend(m),
            Err(e) => problems.push(format!("{first_page}: {e}")),
        }
        let next = page
            .get("Members@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
        match next {
            Some(next) if pages < MAX_COLLECTION_PAGES && listed.len() < cap => {
                page = get(client, &next).await?;
                pages += 1;
            }
            Some(_) => {
                problems.push(format!(
                    "{first_page}: more members than read ({} pages, {} members)",
                    pages,
                    listed.len()
                ));
                break;
            }
            None => break,
        }
    }
    let more = listed.len().saturating_sub(cap);
    listed.truncate(cap);
    let mut out: Vec<(String, Option<Result<Value, BmcError>>)> = Vec::new();
    let mut to_get = Vec::new();
    for (i, m) in listed.into_iter().enumerate() {
        let at = m
            .get("@odata.id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{first_page}#/Members/{i}"));
        if is_bare_link(&m) {
            to_get.push(out.len());
            out.push((at, None));
        } else {
            out.push((at, Some(Ok(m))));
        }
    }
    let paths: Vec<String> = to_get.iter().map(|&i| out[i].0.clone()).collect();
    for (i, r) in to_get.into_iter().zip(get_all(client, &paths).await) {
        out[i].1 = Some(r);
    }
    let mut done = Vec::with_capacity(out.len());
    for (at, r) in out {
        let r = r.unwrap_or_else(|| Err(BmcError::Protocol("not read".into())));
        if let Err(e) = &r {
            if is_fatal(e) {
                return Err(e.clone());
            }
        }
        done.push((at, r));
    }
    Ok((done, more))
}

pub async fn health(client: &Client, d: &Discovered) -> Result<Health, BmcError> {
    let system = get(client, &d.system).await?;
    let (chassis_path, chassis) = find_chassis(client, d, &system).await?;
    let mut health = Health::default();
    if let Some(sensors) = link(&chassis, "Sensors") {
        let (read, more) = collection_members(
            client,
            &sensors,
            d.expand.as_deref(),
            MAX_SENSOR_MEMBERS,
            &mut health.problems,
        )
        .await?;
        for (at, r) in read {
            match r {
                Ok(v) => match sensor_from(&v, &at) {
                    Ok(s) => health.sensors.push(s),
                    Err(e) => health.problems.push(format!("{at}: {e}")),
                },
                Err(e) => health.problems.push(format!("{at}: {e}")),
            }
        }
        if more > 0 {
            health.problems.push(format!(
                "{sensors}: {more} more members not read (at most {MAX_SENSOR_MEMBERS} are)"
            ));
        }
        if !health.sensors.is_empty() || !health.problems.is_empty() {
            return Ok(health);
        }
        // An empty Sensors collection next to the legacy resources: use those.
    }
    let legacy: Vec<String> = ["Thermal", "Power"]
        .iter()
        .filter_map(|k| link(&chassis, k))
        .collect();
    if legacy.is_empty() {
        debug!(server_id = client.server_id(), bmc = client.bmc(), chassis = %chassis_path,
            "the Sensors collection is empty and there is no Thermal or Power");
    }
    for path in legacy {
        match get(client, &path).await {
            Ok(v) => legacy_sensors(&v, &path, &mut health),
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => health.problems.push(format!("{path}: {e}")),
        }
    }
    Ok(health)
}

// ---------------------------------------------------------------------------
// Events: LogServices.

/// Seconds since the Unix epoch of an RFC 3339 time ("2026-11-26T04:01:02Z",
/// "...+01:00", fractions allowed); `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let o = oh * 3600 + om * 60;
            if rb[0] == b'-' {
                -o
            } else {
                o
            }
        }
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's method.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// One LogEntry as an event; `Err` says why it cannot be one.
pub fn event_from(entry: &Value) -> Result<BmcEvent, String> {
    if !entry.is_object() {
        return Err(format!("{} instead of a LogEntry", type_name(entry)));
    }
    let id = match entry.get("Id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => return Err("no Id".into()),
        Some(other) => return Err(format!("Id is {}", type_name(other))),
    };
    let created = opt_str(entry, "Created")?;
    let at = created.as_deref().and_then(parse_rfc3339);
    let message = opt_str(entry, "Message")?;
    let message_id = opt_str(entry, "MessageId")?;
    let sensor_type = opt_str(entry, "SensorType")?.unwrap_or_default();
    let sensor = match entry.get("SensorNumber") {
        None | Some(Value::Null) => String::new(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => return Err(format!("SensorNumber is {}", type_name(other))),
    };
    let severity = opt_str(entry, "Severity")?
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let direction = match opt_str(entry, "EntryCode")?.as_deref() {
        Some("Assert") => "asserted",
        Some("Deassert") => "deasserted",
        _ => "",
    }
    .to_string();
    let event = message
        .clone()
        .or_else(|| message_id.clone())
        .unwrap_or_default();
    let message = message.unwrap_or_else(|| {
        let mut parts: Vec<String> = Vec::new();
        if !sensor_type.is_empty() {
            parts.push(sensor_type.clone());
        }
        if !sensor.is_empty() {
            parts.push(format!("sensor {sensor}"));
        }
        if let Some(m) = &message_id {
            parts.push(m.clone());
        }
        if !direction.is_empty() {
            parts.push(direction.clone());
        }
        parts.join(" ")
    });
    Ok(BmcEvent {
        id,
        at,
        sensor_type,
        sensor,
        event,
        direction,
        severity,
        message,
        raw: String::new(),
    })
}

/// Entries at or after `since` (and those without a time), oldest first,
/// the newest `limit` of them. Entries without a time count as oldest; equal
/// times keep the BMC's order.
pub fn select_events(mut events: Vec<BmcEvent>, since: Option<i64>, limit: usize) -> Vec<BmcEvent> {
    if let Some(since) = since {
        events.retain(|e| e.at.is_none_or(|t| t >= since));
    }
    events.sort_by_key(|e| e.at.unwrap_or(i64::MIN));
    let skip = events.len().saturating_sub(limit);
    events.split_off(skip)
}

/// How much a log service is preferred (lower is better): SEL, then Event,
/// then Multiple, then a service that does not say. Other types (Diagnostic,
/// OEM, CXL) are not event logs: `None`.
pub fn log_service_rank(svc: &Value) -> Option<u8> {
    match svc.get("LogEntryType").and_then(Value::as_str) {
        Some("SEL") => Some(0),
        Some("Event") => Some(1),
        Some("Multiple") => Some(2),
        Some(_) => None,
        None => {
            let named_sel = ["Id", "Name"]
                .iter()
                .filter_map(|k| text(svc, k))
                .any(|n| n.to_ascii_uppercase().contains("SEL"));
            Some(if named_sel { 0 } else { 3 })
        }
    }
}

/// The log services under the system and its manager, ranked (system first
/// at equal rank), with their Entries links.
async fn choose_log_service(client: &Client, d: &Discovered) -> Result<(String, String), BmcError> {
    let system = get(client, &d.system).await?;
    let mut collections = Vec::new();
    if let Some(l) = link(&system, "LogServices") {
        collections.push(l);
    }
    if let Some((_, manager)) = find_manager(client, d, &system).await? {
        if let Some(l) = link(&manager, "LogServices") {
            collections.push(l);
        }
    }
    if collections.is_empty() {
        return Err(BmcError::Unsupported(format!(
            "the event log: neither system {:?} nor its manager has LogServices",
            d.system_id
        )));
    }
    let mut best: Option<(u8, String, String)> = None;
    let mut seen = Vec::new();
    for coll in &collections {
        let c = match get(client, coll).await {
            Ok(c) => c,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                seen.push(format!("{coll}: {e}"));
                continue;
            }
        };
        let paths: Vec<String> = links(&c, "Members")
            .into_iter()
            .take(MAX_LOG_SERVICES)
            .collect();
        for (path, svc) in paths.iter().zip(get_all(client, &paths).await) {
            let svc = match svc {
                Ok(s) => s,
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    seen.push(format!("{path}: {e}"));
                    continue;
                }
            };
            let kind = text(&svc, "LogEntryType").unwrap_or_else(|| "no LogEntryType".into());
            let (Some(rank), Some(entries)) = (log_service_rank(&svc), link(&svc, "Entries"))
            else {
                seen.push(format!("{path} ({kind})"));
                continue;
            };
            if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                best = Some((rank, path.clone(), entries));
            }
        }
    }
    best.map(|(_, path, entries)| (path, entries))
        .ok_or_else(|| {
            BmcError::Unsupported(format!(
                "the event log: no SEL or Event log service under {} (seen: {})",
                collections.join(" and "),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join("; ")
                }
            ))
        })
}

pub async fn events(
    client: &Client,
    d: &Discovered,
    since: Option<i64>,
    limit: usize,
) -> Result<Vec<BmcEvent>, BmcError> {
    let (service, entries) = choose_log_service(client, d).await?;
    let mut listed: Vec<(String, Value)> = Vec::new();
    let mut page = get(client, &entries).await?;
    let mut pages = 1;
    let mut skipped: Vec<String> = Vec::new();
    loop {
        match members(&page) {
            Ok(m) => {
                for (i, e) in m.into_iter().enumerate() {
                    let at = e
                        .get("@odata.id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{entries} page {pages} member {i}"));
                    listed.push((at, e));
                }
            }
            Err(e) => skipped.push(format!("{entries} page {pages}: {e}")),
        }
        let Some(next) = page
            .get("Members@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            break;
        };
        if pages >= MAX_LOG_PAGES {
            warn!(server_id = client.server_id(), bmc = client.bmc(), log = %service, pages,
                entries = listed.len(), next = %next,
                "the event log has more pages than are read; the rest is left out");
            break;
        }
        page = get(client, &next).await?;
        pages += 1;
    }
    // Entries listed as links only are fetched (bounded).
    let bare: Vec<usize> = listed
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| is_bare_link(e))
        .map(|(i, _)| i)
        .collect();
    let fetch: Vec<usize> = bare.iter().rev().take(MAX_ENTRY_GETS).copied().collect();
    if bare.len() > fetch.len() {
        warn!(server_id = client.server_id(), bmc = client.bmc(), log = %service,
            linked = bare.len(), read = fetch.len(), "only the last log entries listed as links are read");
    }
    let paths: Vec<String> = fetch.iter().map(|&i| listed[i].0.clone()).collect();
    let mut failed = std::collections::HashSet::new();
    for (i, r) in fetch.iter().zip(get_all(client, &paths).await) {
        match r {
            Ok(v) => listed[*i].1 = v,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                skipped.push(format!("{}: {e}", listed[*i].0));
                failed.insert(*i);
            }
        }
    }
    let mut out = Vec::with_capacity(listed.len());
    for (i, (at, e)) in listed.iter().enumerate() {
        if is_bare_link(e) || failed.contains(&i) {
            continue;
        }
        match event_from(e) {
            Ok(ev) => out.push(ev),
            Err(why) => skipped.push(format!("{at}: {why}")),
        }
    }
    if !skipped.is_empty() {
        warn!(server_id = client.server_id(), bmc = client.bmc(), log = %service,
            skipped = skipped.len(), first = %skipped[0],
            "log entries that cannot be understood are left out");
    }
    Ok(select_events(out, since, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_takes_the_manager_and_the_system_and_leaves_gaps_empty() {
        // Shaped like an iDRAC manager and its System.Embedded.1.
        let manager = json!({
            "@odata.id": "/redfish/v1/Managers/iDRAC.Embedded.1",
            "Id": "iDRAC.Embedded.1", "ManagerType": "BMC",
            "Model": "14G Monolithic", "FirmwareVersion": "5.10.00.00",
        });
        let system = json!({
            "@odata.id": "/redfish/v1/Systems/System.Embedded.1",
            "Manufacturer": "Dell Inc.", "Model": "PowerEdge R640",
            "SerialNumber": "CN7475178I0123", "BiosVersion": "2.12.2",
            "SKU": "ABC1234",
        });
        let id = identity_from(&system, Some(&manager));
        assert_eq!(
            id.bmc_manufacturer, None,
            "the manager names no Manufacturer"
        );
        assert_eq!(id.bmc_model.as_deref(), Some("14G Monolithic"));
        assert_eq!(id.firmware_version.as_deref(), Some("5.10.00.00"));
        assert_eq!(id.system_manufacturer.as_deref(), Some("Dell Inc."));
        assert_eq!(id.system_model.as_deref(), Some("PowerEdge R640"));
        assert_eq!(id.serial_number.as_deref(), Some("CN7475178I0123"));
        assert_eq!(id.bios_version.as_deref(), Some("2.12.2"));
        assert_eq!(id.ipmi_version, None);
        // No manager, odd types and blanks: absent, not guessed.
        let odd = json!({"Manufacturer": "  ", "Model": 42, "SerialNumber": null});
        assert_eq!(identity_from(&odd, None), BmcIdentity::default());
    }

    #[test]
    fn sensors_members_read_with_units_thresholds_and_status() {
        // Shaped like a DMTF Sensor v1.x member (public-rackmount1 style).
        let inlet = json!({
            "@odata.id": "/redfish/v1/Chassis/1U/Sensors/AmbientTemp",
            "@odata.type": "#Sensor.v1_7_0.Sensor",
            "Id": "AmbientTemp", "Name": "Ambient Temperature",
            "ReadingType": "Temperature", "ReadingUnits": "Cel", "Reading": 22.5,
            "PhysicalContext": "Intake",
            "Status": {"State": "Enabled", "Health": "OK"},
            "Thresholds": {
                "UpperCaution": {"Reading": 35}, "UpperCritical": {"Reading": 40},
                "LowerCritical": {"Reading": 5, "Activation": "Decreasing"},
            },
        });
        let s = sensor_from(&inlet, "/x").unwrap();
        assert_eq!(s.name, "Ambient Temperature");
        assert_eq!(s.kind, SensorKind::Temperature);
        assert_eq!(s.value, Some(22.5));
        assert_eq!(s.unit, "degrees C");
        assert_eq!(s.status, SensorStatus::Ok);
        assert_eq!(s.context.as_deref(), Some("Intake"));
        assert_eq!(
            s.thresholds,
            Thresholds {
                lower_critical: Some(5.0),
                lower_warning: None,
                upper_warning: Some(35.0),
                upper_critical: Some(40.0)
            }
        );
        let fan = json!({"Id": "Fan1", "Name": "Fan 1", "ReadingType": "Rotational",
            "ReadingUnits": "RPM", "Reading": 6000, "Status": {"State": "Enabled", "Health": "Warning"}});
        let s = sensor_from(&fan, "/f").unwrap();
        assert_eq!(
            (s.kind, s.unit.as_str(), s.status),
            (SensorKind::Fan, "RPM", SensorStatus::Warning)
        );
        let power = json!({"Id": "TotalPower", "ReadingType": "Power", "ReadingUnits": "W", "Reading": 318.0});
        let s = sensor_from(&power, "/p").unwrap();
        assert_eq!(
            (s.name.as_str(), s.kind, s.unit.as_str()),
            ("TotalPower", SensorKind::Power, "Watts")
        );
        // No Health given: judged against the thresholds.
        let hot = json!({"Name": "CPU", "ReadingUnits": "Cel", "Reading": 91,
            "Thresholds": {"UpperCaution": {"Reading": 80}, "UpperCritical": {"Reading": 90}}});
        let s = sensor_from(&hot, "/c").unwrap();
        assert_eq!(
            (s.kind, s.status),
            (SensorKind::Temperature, SensorStatus::Critical)
        );
        // Absent: no reading, unavailable, not a problem.
        let absent = json!({"Name": "PSU2 Power", "ReadingType": "Power", "ReadingUnits": "W",
            "Status": {"State": "Absent"}});
        let s = sensor_from(&absent, "/a").unwrap();
        assert_eq!((s.value, s.status), (None, SensorStatus::Unavailable));
        let null = json!({"Name": "V", "ReadingUnits": "V", "Reading": null, "Status": {"State": "Enabled"}});
        assert_eq!(
            sensor_from(&null, "/v").unwrap().status,
            SensorStatus::Unavailable
        );
    }

    #[test]
    fn malformed_sensor_members_say_why() {
        let cases = [
            (
                json!({"Name": "x", "Status": {"State": "Enabled"}}),
                "no Reading",
            ),
            (
                json!({"Name": "x", "Reading": "n/a"}),
                "Reading is a string",
            ),
            (
                json!({"Name": "x", "Reading": 1, "ReadingUnits": 7}),
                "ReadingUnits is a number",
            ),
            (
                json!({"Name": "x", "Reading": 1, "Status": "OK"}),
                "Status is a string",
            ),
            (
                json!({"Name": "x", "Reading": 1, "Thresholds": {"UpperCritical": {"Reading": "hot"}}}),
                "Thresholds.UpperCritical.Reading is a string",
            ),
            (json!([1, 2]), "an array instead of a Sensor"),
        ];
        for (v, want) in cases {
            let e = sensor_from(&v, "/s").unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn legacy_thermal_and_power_become_sensors_and_problems() {
        // Shaped like an iDRAC/HPE Thermal and Power (v1.x) pair.
        let thermal = json!({
            "@odata.id": "/redfish/v1/Chassis/1/Thermal",
            "Temperatures": [
                {"@odata.id": "/redfish/v1/Chassis/1/Thermal#/Temperatures/0", "MemberId": "0",
                 "Name": "Inlet Temp", "ReadingCelsius": 24, "PhysicalContext": "Intake",
                 "UpperThresholdNonCritical": 42, "UpperThresholdCritical": 47,
                 "LowerThresholdCritical": -7, "Status": {"State": "Enabled", "Health": "OK"}},
                {"MemberId": "1", "Name": "CPU1 Temp", "ReadingCelsius": "hot"},
                {"MemberId": "2", "Name": "CPU2 Temp", "Status": {"State": "Absent"}},
            ],
            "Fans": [
                {"MemberId": "0", "Name": "Fan 1", "Reading": 5880, "ReadingUnits": "RPM",
                 "LowerThresholdCritical": 600, "Status": {"State": "Enabled", "Health": "OK"}},
                {"MemberId": "1", "FanName": "Fan 2", "ReadingRPM": 3000},
                {"MemberId": "2", "Name": "Fan 3", "Reading": 40, "ReadingUnits": "Percent"},
            ],
        });
        let power = json!({
            "@odata.id": "/redfish/v1/Chassis/1/Power",
            "PowerControl": [{"@odata.id": "/redfish/v1/Chassis/1/Power#/PowerControl/0",
                "MemberId": "0", "Name": "System Power Control", "PowerConsumedWatts": 224,
                "PowerLimit": {"LimitInWatts": null}}],
            "Voltages": [{"MemberId": "0", "Name": "PS1 Voltage 1", "ReadingVolts": 208,
                "UpperThresholdCritical": 250, "LowerThresholdCritical": 180,
                "Status": {"State": "Enabled", "Health": "Critical"}}],
        });
        let mut h = Health::default();
        legacy_sensors(&thermal, "/redfish/v1/Chassis/1/Thermal", &mut h);
        legacy_sensors(&power, "/redfish/v1/Chassis/1/Power", &mut h);
        let names: Vec<&str> = h.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Inlet Temp",
                "CPU2 Temp",
                "Fan 1",
                "1",
                "Fan 3",
                "PS1 Voltage 1",
                "System Power Control"
            ]
        );
        assert_eq!(h.inlet_celsius(), Some(24.0));
        assert_eq!(h.power_watts(), Some(224.0));
        let inlet = &h.sensors[0];
        assert_eq!(
            (inlet.unit.as_str(), inlet.thresholds.upper_critical),
            ("degrees C", Some(47.0))
        );
        assert_eq!(h.sensors[1].status, SensorStatus::Unavailable);
        assert_eq!(
            (h.sensors[3].value, h.sensors[3].unit.as_str()),
            (Some(3000.0), "RPM")
        );
        assert_eq!(h.sensors[4].unit, "percent");
        assert_eq!(h.sensors[5].status, SensorStatus::Critical);
        assert_eq!(h.sensors[5].unit, "Volts");
        assert_eq!(
            h.problems,
            ["/redfish/v1/Chassis/1/Thermal#/Temperatures/1: ReadingCelsius is a string, not a number"]
        );
        let mut h = Health::default();
        legacy_sensors(&json!({"Temperatures": {"0": {}}}), "/t", &mut h);
        assert_eq!(h.problems, ["/t: Temperatures is an object, not an array"]);
    }

    #[test]
    fn rfc3339_times_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-26T04:01:02Z"), Some(1_795_665_662));
        assert_eq!(
            parse_rfc3339("2026-11-26T04:01:02.345+00:00"),
            Some(1_795_665_662)
        );
        assert_eq!(
            parse_rfc3339("2026-11-26T05:01:02+01:00"),
            Some(1_795_665_662)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T22:01:02-06:00"),
            Some(1_795_665_662)
        );
        assert_eq!(parse_rfc3339("2000-02-29T12:00:00Z"), Some(951_825_600));
        for bad in [
            "",
            "2026-11-26",
            "2026-11-26T04:01:02",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-26T04:01:02.Z",
            "0000-00-00T00:00:00+00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_entries_become_events() {
        // Shaped like an OpenBMC/iDRAC SEL LogEntry.
        let e = json!({
            "@odata.id": "/redfish/v1/Systems/1/LogServices/SEL/Entries/12",
            "@odata.type": "#LogEntry.v1_15_0.LogEntry",
            "Id": "12", "Name": "Log Entry 12", "EntryType": "SEL",
            "Created": "2026-11-26T04:01:02+00:00", "Severity": "Critical",
            "Message": "Power Button pressed", "MessageId": "OpenBMC.0.1.PowerButtonPressed",
            "SensorType": "Button/Switch", "SensorNumber": 5, "EntryCode": "Assert",
        });
        let ev = event_from(&e).unwrap();
        assert_eq!(ev.id, "12");
        assert_eq!(ev.at, Some(1_795_665_662));
        assert_eq!(ev.sensor_type, "Button/Switch");
        assert_eq!(ev.sensor, "5");
        assert_eq!(ev.event, "Power Button pressed");
        assert_eq!(ev.message, "Power Button pressed");
        assert_eq!(ev.direction, "asserted");
        assert_eq!(ev.severity, "critical");
        // No Message: the MessageId stands for the event; no time: kept.
        let e = json!({"Id": "7", "MessageId": "Base.1.0.Cleared", "Severity": "OK", "EntryCode": "Deassert"});
        let ev = event_from(&e).unwrap();
        assert_eq!(
            (ev.event.as_str(), ev.at, ev.direction.as_str()),
            ("Base.1.0.Cleared", None, "deasserted")
        );
        assert_eq!(ev.message, "Base.1.0.Cleared deasserted");
        for (bad, why) in [
            (json!({"Message": "no id"}), "no Id"),
            (json!({"Id": "1", "Message": 5}), "Message is a number"),
            (
                json!({"Id": "1", "Created": 1700000000}),
                "Created is a number",
            ),
            (json!("entry"), "a string instead of a LogEntry"),
        ] {
            assert!(event_from(&bad).unwrap_err().contains(why), "{bad}");
        }
    }

    fn ev(id: &str, at: Option<i64>) -> BmcEvent {
        event_from(&json!({"Id": id}))
            .map(|mut e| {
                e.at = at;
                e
            })
            .unwrap()
    }

    #[test]
    fn events_are_filtered_and_the_newest_kept_oldest_first() {
        let all = vec![
            ev("3", Some(30)),
            ev("1", Some(10)),
            ev("x", None),
            ev("2", Some(20)),
            ev("4", Some(30)),
        ];
        let ids = |v: Vec<BmcEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(select_events(all.clone(), None, 10)),
            ["x", "1", "2", "3", "4"]
        );
        assert_eq!(
            ids(select_events(all.clone(), Some(20), 10)),
            ["x", "2", "3", "4"]
        );
        assert_eq!(ids(select_events(all.clone(), None, 2)), ["3", "4"]);
        assert_eq!(ids(select_events(all, Some(25), 0)), Vec::<String>::new());
    }

    #[test]
    fn log_services_are_ranked_sel_first() {
        let rank = |v: Value| log_service_rank(&v);
        assert_eq!(rank(json!({"Id": "SEL", "LogEntryType": "SEL"})), Some(0));
        assert_eq!(
            rank(json!({"Id": "EventLog", "LogEntryType": "Event"})),
            Some(1)
        );
        assert_eq!(
            rank(json!({"Id": "Log1", "LogEntryType": "Multiple"})),
            Some(2)
        );
        assert_eq!(
            rank(json!({"Id": "Dump", "LogEntryType": "Diagnostic"})),
            None
        );
        assert_eq!(rank(json!({"Id": "IPMI SEL"})), Some(0));
        assert_eq!(rank(json!({"Id": "Journal"})), Some(3));
    }

    #[test]
    fn expand_is_used_only_where_advertised() {
        use super::super::model::ServiceRoot;
        let root = |v: Value| {
            serde_json::from_value::<ServiceRoot>(v)
                .unwrap()
                .expand_members_query()
        };
        assert_eq!(root(json!({})), None);
        assert_eq!(
            root(
                json!({"ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": false, "NoLinks": false}}})
            ),
            None
        );
        assert_eq!(
            root(
                json!({"ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": true, "Levels": true, "MaxLevels": 6, "NoLinks": true}}})
            ),
            Some("$expand=.")
        );
        assert_eq!(
            root(json!({"ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": true}}})),
            Some("$expand=*")
        );
        // A malformed block is ignored, not a failure of the root.
        assert_eq!(
            root(json!({"ProtocolFeaturesSupported": {"ExpandQuery": "yes"}})),
            None
        );
    }
}
