//! Rows to the agent's types and back.

use std::collections::BTreeMap;

use rusqlite::{Connection, Row};

use super::{corrupt, parse_enum, Result};
use crate::bmc::Protocol;
use crate::model::*;

pub(super) struct RawServer {
    id: String,
    project_id: String,
    protocol: String,
    address: String,
    port: u16,
    username: String,
    credential: String,
    options: String,
    power: String,
    power_observed_at: Option<i64>,
    vm_state: String,
    task_action_id: Option<String>,
    task_kind: Option<String>,
    locked: bool,
    locked_by_admin: bool,
    bmc_error: Option<String>,
    source: String,
    created_at: i64,
    identity: Option<String>,
    identity_read_at: Option<i64>,
    identity_error: Option<String>,
}

pub(super) fn raw_server(r: &Row<'_>) -> rusqlite::Result<RawServer> {
    Ok(RawServer {
        id: r.get("id")?,
        project_id: r.get("project_id")?,
        protocol: r.get("protocol")?,
        address: r.get("address")?,
        port: r.get("port")?,
        username: r.get("username")?,
        credential: r.get("credential")?,
        options: r.get("options")?,
        power: r.get("power")?,
        power_observed_at: r.get("power_observed_at")?,
        vm_state: r.get("vm_state")?,
        task_action_id: r.get("task_action_id")?,
        task_kind: r.get("task_kind")?,
        locked: r.get("locked")?,
        locked_by_admin: r.get("locked_by_admin")?,
        bmc_error: r.get("bmc_error")?,
        source: r.get("source")?,
        created_at: r.get("created_at")?,
        identity: r.get("identity")?,
        identity_read_at: r.get("identity_read_at")?,
        identity_error: r.get("identity_error")?,
    })
}

pub(super) fn server_from_raw(r: RawServer) -> Result<ServerRecord> {
    let protocol = match r.protocol.as_str() {
        "ipmi" => Protocol::Ipmi,
        "redfish" => Protocol::Redfish,
        other => return Err(corrupt("protocol", other)),
    };
    let credential = if let Some(f) = r.credential.strip_prefix("file:") {
        Credential::File(f.to_string())
    } else if let Some(f) = r.credential.strip_prefix("stored:") {
        Credential::Stored(f.to_string())
    } else {
        return Err(corrupt("credential of server", &r.id));
    };
    let options: BTreeMap<String, String> =
        serde_json::from_str(&r.options).map_err(|_| corrupt("options", &r.options))?;
    let identity = r
        .identity
        .map(|j| serde_json::from_str(&j).map_err(|_| corrupt("identity of server", &r.id)))
        .transpose()?;
    let task = match (r.task_action_id, r.task_kind) {
        (Some(id), Some(kind)) => Some((id, parse_enum("task kind", kind, ActionKind::parse)?)),
        _ => None,
    };
    Ok(ServerRecord {
        id: r.id,
        project_id: r.project_id,
        bmc: BmcRecord {
            protocol,
            address: r.address,
            port: r.port,
            username: r.username,
            credential,
            options,
        },
        power: parse_enum("power", r.power, PowerState::parse)?,
        power_observed_at: r.power_observed_at,
        vm_state: parse_enum("vm_state", r.vm_state, VmState::parse)?,
        task,
        locked: r.locked,
        locked_by_admin: r.locked_by_admin,
        bmc_error: r.bmc_error,
        source: parse_enum("source", r.source, Source::parse)?,
        created_at: r.created_at,
        identity,
        identity_read_at: r.identity_read_at,
        identity_error: r.identity_error,
    })
}

pub(super) struct RawAction {
    pub seq: i64,
    id: String,
    server_id: String,
    kind: String,
    state: String,
    params: String,
    request_id: Option<String>,
    caller: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    message: String,
    superseded_by: Option<String>,
}

pub(super) fn raw_action(r: &Row<'_>) -> rusqlite::Result<RawAction> {
    Ok(RawAction {
        seq: r.get("seq")?,
        id: r.get("id")?,
        server_id: r.get("server_id")?,
        kind: r.get("kind")?,
        state: r.get("state")?,
        params: r.get("params")?,
        request_id: r.get("request_id")?,
        caller: r.get("caller")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        message: r.get("message")?,
        superseded_by: r.get("superseded_by")?,
    })
}

pub(super) fn action_with_steps(conn: &Connection, r: RawAction) -> Result<Action> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, step, phase, detail, data FROM steps WHERE action_id = ?1 ORDER BY id",
    )?;
    let events = stmt
        .query_map([&r.id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
            ))
        })?
        .map(|row| {
            let (at, step, phase, detail, data) = row?;
            Ok(StepEvent {
                at,
                step,
                phase: parse_enum("step phase", phase, StepPhase::parse)?,
                detail,
                data,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Action {
        kind: parse_enum("action kind", r.kind, ActionKind::parse)?,
        state: parse_enum("action state", r.state, ActionState::parse)?,
        params: serde_json::from_str(&r.params).map_err(|_| corrupt("params", &r.params))?,
        caller: serde_json::from_str(&r.caller).map_err(|_| corrupt("caller", &r.caller))?,
        id: r.id,
        server_id: r.server_id,
        request_id: r.request_id,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        message: r.message,
        events,
        superseded_by: r.superseded_by,
    })
}

pub(super) struct RawEvent {
    pub seq: i64,
    at: i64,
    server_id: String,
    kind: String,
    power: String,
    vm_state: String,
    task: Option<String>,
    action_id: Option<String>,
    cause: String,
    bmc_events: Option<String>,
}

pub(super) fn raw_event(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        seq: r.get("seq")?,
        at: r.get("at")?,
        server_id: r.get("server_id")?,
        kind: r.get("kind")?,
        power: r.get("power")?,
        vm_state: r.get("vm_state")?,
        task: r.get("task")?,
        action_id: r.get("action_id")?,
        cause: r.get("cause")?,
        bmc_events: r.get("bmc_events")?,
    })
}

pub(super) fn event_from_raw(r: RawEvent) -> Result<ServerEvent> {
    Ok(ServerEvent {
        seq: r.seq as u64,
        at: r.at,
        server_id: r.server_id,
        kind: parse_enum("event kind", r.kind, EventKind::parse)?,
        power: parse_enum("power", r.power, PowerState::parse)?,
        vm_state: parse_enum("vm_state", r.vm_state, VmState::parse)?,
        task: r
            .task
            .map(|t| parse_enum("task", t, ActionKind::parse))
            .transpose()?,
        action_id: r.action_id,
        cause: r.cause,
        bmc_events: match r.bmc_events {
            Some(j) => serde_json::from_str(&j).map_err(|_| corrupt("bmc_events of event", &j))?,
            None => Vec::new(),
        },
    })
}
