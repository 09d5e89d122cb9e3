//! What can be written, and the SQL for it. Writes are applied only by the
//! writer thread (`writer`), in the order they were queued.

use rusqlite::{params, Connection, OptionalExtension};

use super::{Result, StoreError};
use crate::model::*;

/// One change to the database.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a server.
    PutServer(ServerRecord),
    DeleteServer(String),
    InsertAction(Action),
    /// PENDING → RUNNING at `at` (nothing if it is no longer pending).
    StartAction {
        id: String,
        at: Millis,
    },
    /// Ends an action — only while it has not ended: an ended action is never
    /// overwritten, so a late writer (a runner finishing an action that was
    /// just superseded) changes nothing.
    EndAction {
        id: String,
        state: ActionState,
        message: String,
        at: Millis,
        superseded_by: Option<String>,
    },
    AddStep {
        action_id: String,
        step: StepEvent,
    },
    /// Numbered at commit; keeps the newest `retain` events.
    AppendEvent {
        event: ServerEvent,
        retain: u64,
    },
    /// Deletes ended actions (and their steps) but the `keep` that ended
    /// last; unfinished ones are never deleted.
    PruneActions {
        keep: u64,
    },
}

impl Write {
    /// Whether applying it takes one SQL statement, which undoes itself when
    /// it fails (the others may need a savepoint to be all or nothing).
    pub(super) fn is_one_statement(&self) -> bool {
        match self {
            Write::PutServer(_)
            | Write::DeleteServer(_)
            | Write::StartAction { .. }
            | Write::EndAction { .. }
            | Write::AddStep { .. } => true,
            Write::InsertAction(a) => a.events.is_empty(),
            Write::AppendEvent { .. } | Write::PruneActions { .. } => false,
        }
    }
}

/// Applies one write; an appended event comes back numbered.
pub(super) fn apply(conn: &Connection, w: &Write) -> Result<Option<ServerEvent>> {
    match w {
        Write::PutServer(s) => put_server(conn, s)?,
        Write::DeleteServer(id) => {
            conn.prepare_cached("DELETE FROM servers WHERE id = ?1")?
                .execute([id])?;
        }
        Write::InsertAction(a) => insert_action(conn, a)?,
        Write::StartAction { id, at } => {
            conn.prepare_cached(
                "UPDATE actions SET state = 'running', started_at = ?2
                 WHERE id = ?1 AND state = 'pending'",
            )?
            .execute(params![id, at])?;
        }
        Write::EndAction {
            id,
            state,
            message,
            at,
            superseded_by,
        } => {
            conn.prepare_cached(
                "UPDATE actions SET state = ?2, message = ?3, finished_at = ?4,
                    started_at = COALESCE(started_at, ?4), superseded_by = ?5
                 WHERE id = ?1 AND state IN ('pending', 'running')",
            )?
            .execute(params![id, state.as_str(), message, at, superseded_by])?;
        }
        Write::AddStep { action_id, step } => {
            conn.prepare_cached(
                "INSERT INTO steps (action_id, at, step, phase, detail, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                action_id,
                step.at,
                step.step,
                step.phase.as_str(),
                step.detail,
                step.data
            ])?;
        }
        Write::AppendEvent { event, retain } => {
            return append_event(conn, event.clone(), *retain).map(Some)
        }
        Write::PruneActions { keep } => {
            // The newest `keep` by the time they ended, not by when they were
            // accepted: an action that ran long (a slow BMC) while many newer
            // ones came and went must not be deleted the moment it ends,
            // before anyone could read its outcome.
            //
            // Runs in the writer, between commits: it must stay cheap. No
            // more than `keep` actions can exist while their seqs span no
            // more than `keep` (two lookups in the primary key); otherwise
            // the cut is the `keep + 1`-th newest end, found by walking the
            // `actions_by_end` index (whose entries carry seq), not by
            // sorting the table.
            let (lo, hi): (Option<i64>, Option<i64>) = conn
                .prepare_cached("SELECT MIN(seq), MAX(seq) FROM actions")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let span = match (lo, hi) {
                (Some(lo), Some(hi)) => hi - lo + 1,
                _ => 0,
            };
            if span <= *keep as i64 {
                return Ok(None);
            }
            let cut: Option<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT finished_at, seq FROM actions WHERE finished_at IS NOT NULL
                     ORDER BY finished_at DESC, seq DESC LIMIT 1 OFFSET ?1",
                )?
                .query_row([*keep as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((at, seq)) = cut else {
                return Ok(None);
            };
            const OLDER_ENDED: &str = "SELECT id FROM actions
                 WHERE finished_at <= ?1 AND (finished_at < ?1 OR seq <= ?2)
                   AND state IN ('succeeded', 'failed', 'superseded')";
            conn.prepare_cached(&format!(
                "DELETE FROM steps WHERE action_id IN ({OLDER_ENDED})"
            ))?
            .execute([at, seq])?;
            conn.prepare_cached(&format!("DELETE FROM actions WHERE id IN ({OLDER_ENDED})"))?
                .execute([at, seq])?;
        }
    }
    Ok(None)
}

fn put_server(conn: &Connection, s: &ServerRecord) -> Result<()> {
    // Only a reference to the secret is ever written here.
    let credential = match &s.bmc.credential {
        Credential::File(name) => format!("file:{name}"),
        Credential::Stored(name) => format!("stored:{name}"),
        Credential::Inline(_) => {
            return Err(StoreError::Corrupt(format!(
                "server {}: an inline password must be moved to a file before it is stored",
                s.id
            )))
        }
    };
    let options = serde_json::to_string(&s.bmc.options).unwrap_or_else(|_| "{}".into());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO servers (id, project_id, protocol, address, port, username,
            credential, options, power, power_observed_at, vm_state,
            task_action_id, task_kind, locked, locked_by_admin, bmc_error, source, created_at,
            identity, identity_read_at, identity_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
            ?19, ?20, ?21)",
    )?
    .execute(params![
        s.id,
        s.project_id,
        s.bmc.protocol.as_str(),
        s.bmc.address,
        s.bmc.port,
        s.bmc.username,
        credential,
        options,
        s.power.as_str(),
        s.power_observed_at,
        s.vm_state.as_str(),
        s.task.as_ref().map(|t| t.0.clone()),
        s.task.as_ref().map(|t| t.1.as_str()),
        s.locked,
        s.locked_by_admin,
        s.bmc_error,
        s.source.as_str(),
        s.created_at,
        s.identity
            .as_ref()
            .and_then(|i| serde_json::to_string(i).ok()),
        s.identity_read_at,
        s.identity_error,
    ])?;
    Ok(())
}

fn insert_action(conn: &Connection, a: &Action) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO actions (id, server_id, kind, state, params, request_id, caller,
            created_at, started_at, finished_at, message, superseded_by, request_scope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        a.id,
        a.server_id,
        a.kind.as_str(),
        a.state.as_str(),
        serde_json::to_string(&a.params).unwrap_or_else(|_| "{}".into()),
        a.request_id,
        serde_json::to_string(&a.caller).unwrap_or_else(|_| "{}".into()),
        a.created_at,
        a.started_at,
        a.finished_at,
        a.message,
        a.superseded_by,
        a.request_id.as_ref().map(|_| a.caller.request_scope()),
    ])?;
    for step in &a.events {
        apply(
            conn,
            &Write::AddStep {
                action_id: a.id.clone(),
                step: step.clone(),
            },
        )?;
    }
    Ok(())
}

fn append_event(conn: &Connection, mut ev: ServerEvent, retain: u64) -> Result<ServerEvent> {
    conn.prepare_cached(
        "INSERT INTO events (at, server_id, kind, power, vm_state, task, action_id, cause,
            bmc_events)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        ev.at,
        ev.server_id,
        ev.kind.as_str(),
        ev.power.as_str(),
        ev.vm_state.as_str(),
        ev.task.map(|t| t.as_str()),
        ev.action_id,
        ev.cause,
        (!ev.bmc_events.is_empty())
            .then(|| serde_json::to_string(&ev.bmc_events).ok())
            .flatten(),
    ])?;
    ev.seq = conn.last_insert_rowid() as u64;
    if ev.seq.is_multiple_of(256) && ev.seq > retain {
        conn.prepare_cached("DELETE FROM events WHERE seq <= ?1")?
            .execute([(ev.seq - retain) as i64])?;
    }
    Ok(ev)
}
