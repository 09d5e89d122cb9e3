//! SQLite persistence: servers, actions, their step events, and the numbered
//! event log that watchers resume from (which is also the power-state history).
//!
//! WAL mode with `synchronous = FULL`: an action the API answered is on disk
//! before the answer leaves, and a step is on disk as "started" before its BMC
//! command is sent. Calls are short and made inline under one connection lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::bmc::Protocol;
use crate::model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot prepare the state directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state database holds a value this version cannot read: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    protocol TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    username TEXT NOT NULL,
    credential TEXT NOT NULL,
    options TEXT NOT NULL,
    power TEXT NOT NULL,
    power_observed_at INTEGER,
    vm_state TEXT NOT NULL,
    task_action_id TEXT,
    task_kind TEXT,
    locked INTEGER NOT NULL,
    locked_by_admin INTEGER NOT NULL,
    bmc_error TEXT,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    server_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    -- The namespace of request_id: the caller's project (`Caller::request_scope`).
    request_scope TEXT,
    request_id TEXT,
    caller TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    message TEXT NOT NULL,
    superseded_by TEXT
);
CREATE INDEX IF NOT EXISTS actions_by_server ON actions (server_id, seq);
CREATE INDEX IF NOT EXISTS actions_by_state ON actions (state);
CREATE UNIQUE INDEX IF NOT EXISTS actions_by_request ON actions (request_scope, request_id);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    detail TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_action ON steps (action_id, id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    server_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    power TEXT NOT NULL,
    vm_state TEXT NOT NULL,
    task TEXT,
    action_id TEXT,
    cause TEXT NOT NULL
);
"#;

/// Brings a database made by an older version up to `SCHEMA`; runs first, in
/// the same transaction. `CREATE TABLE IF NOT EXISTS` leaves an existing table
/// as it was, so a table whose shape changed is rebuilt here. Each step is
/// written as it was at the time and never follows later changes of `SCHEMA`.
fn migrate(conn: &Connection) -> Result<()> {
    let columns = |table: &str| -> Result<Vec<String>> {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let names = stmt
            .query_map([table], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    };
    let actions = columns("actions")?;
    if !actions.is_empty() && !actions.iter().any(|c| c == "request_scope") {
        tracing::info!("migrating the state database: request ids become unique per project");
        conn.execute_batch(MIGRATE_REQUEST_SCOPE)?;
    }
    // Steps gained `data`: what a finished step returned, for resuming.
    let steps = columns("steps")?;
    if !steps.is_empty() && !steps.iter().any(|c| c == "data") {
        conn.execute_batch("ALTER TABLE steps ADD COLUMN data TEXT")?;
    }
    Ok(())
}

/// request_id was unique across every caller (a column constraint, which
/// SQLite cannot drop), so one tenant's id blocked — and named — another's.
/// It is now unique per request scope; existing ids get the scope of the
/// caller recorded on their action.
const MIGRATE_REQUEST_SCOPE: &str = r#"
CREATE TABLE actions_scoped (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    server_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    request_scope TEXT,
    request_id TEXT,
    caller TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    message TEXT NOT NULL,
    superseded_by TEXT
);
INSERT INTO actions_scoped (seq, id, server_id, kind, state, params, request_scope,
    request_id, caller, created_at, started_at, finished_at, message, superseded_by)
SELECT seq, id, server_id, kind, state, params,
    CASE
        WHEN request_id IS NULL THEN NULL
        WHEN COALESCE(json_extract(caller, '$.project_id'), '') <> ''
            THEN 'project:' || json_extract(caller, '$.project_id')
        ELSE 'caller:' || COALESCE(json_extract(caller, '$.id'), '')
    END,
    request_id, caller, created_at, started_at, finished_at, message, superseded_by
FROM actions;
DROP TABLE actions;
ALTER TABLE actions_scoped RENAME TO actions;
"#;

pub struct Store {
    conn: Mutex<Connection>,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

fn parse_enum<T>(what: &str, s: String, f: fn(&str) -> Option<T>) -> Result<T> {
    f(&s).ok_or_else(|| corrupt(what, &s))
}

impl Store {
    /// Opens (or creates) `DIR/rack-agent.db`. The directory is made 0700 and
    /// the database files 0600: the inline BMC passwords' files live beside
    /// it (the database holds only their names).
    pub fn open(dir: &Path) -> Result<Store> {
        use std::os::unix::fs::PermissionsExt;
        let dir_err = |source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        let path = dir.join("rack-agent.db");
        if !path.exists() {
            // Create the file ourselves so it is never world-readable, even briefly.
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode_0600()
                .open(&path)
                .map_err(dir_err)?;
        }
        let conn = Connection::open(&path)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        // Another process holding the database (a second agent) is waited for,
        // then refused: the agent must be the only writer of its state.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let schema = migrate(&conn).and_then(|()| Ok(conn.execute_batch(SCHEMA)?));
        match schema {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A trivial query: the database answers.
    pub fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    // ---- servers ----

    pub fn put_server(&self, s: &ServerRecord) -> Result<()> {
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
        self.conn().execute(
            "INSERT OR REPLACE INTO servers (id, project_id, protocol, address, port, username,
                credential, options, power, power_observed_at, vm_state,
                task_action_id, task_kind, locked, locked_by_admin, bmc_error, source, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
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
            ],
        )?;
        Ok(())
    }

    pub fn delete_server(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM servers WHERE id = ?1", [id])?
            > 0)
    }

    pub fn all_servers(&self) -> Result<Vec<ServerRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM servers ORDER BY id")?;
        let rows = stmt.query_map([], raw_server)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(server_from_raw))
            .collect()
    }

    // ---- actions ----

    pub fn insert_action(&self, a: &Action) -> Result<()> {
        self.conn().execute(
            "INSERT INTO actions (id, server_id, kind, state, params, request_id, caller,
                created_at, started_at, finished_at, message, superseded_by, request_scope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
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
            ],
        )?;
        Ok(())
    }

    /// Writes an action's state, times, message and successor.
    pub fn update_action(&self, a: &Action) -> Result<()> {
        self.conn().execute(
            "UPDATE actions SET state = ?2, started_at = ?3, finished_at = ?4, message = ?5,
                superseded_by = ?6 WHERE id = ?1",
            params![
                a.id,
                a.state.as_str(),
                a.started_at,
                a.finished_at,
                a.message,
                a.superseded_by
            ],
        )?;
        Ok(())
    }

    pub fn add_step(&self, action_id: &str, step: &StepEvent) -> Result<()> {
        self.conn().execute(
            "INSERT INTO steps (action_id, at, step, phase, detail, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                action_id,
                step.at,
                step.step,
                step.phase.as_str(),
                step.detail,
                step.data
            ],
        )?;
        Ok(())
    }

    pub fn get_action(&self, id: &str) -> Result<Option<Action>> {
        let conn = self.conn();
        let raw = conn
            .query_row("SELECT * FROM actions WHERE id = ?1", [id], raw_action)
            .optional()?;
        raw.map(|r| action_with_steps(&conn, r)).transpose()
    }

    /// The action a request id names within a scope (`Caller::request_scope`).
    pub fn action_by_request_id(&self, scope: &str, request_id: &str) -> Result<Option<Action>> {
        let conn = self.conn();
        let raw = conn
            .query_row(
                "SELECT * FROM actions WHERE request_scope = ?1 AND request_id = ?2",
                [scope, request_id],
                raw_action,
            )
            .optional()?;
        raw.map(|r| action_with_steps(&conn, r)).transpose()
    }

    /// A page of a server's actions, newest first. `before` is the cursor of the
    /// previous page; the second value is the cursor of the next one.
    pub fn list_actions(
        &self,
        server_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Action>, Option<i64>)> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT * FROM actions WHERE server_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )?;
        let raws: Vec<RawAction> = stmt
            .query_map(
                params![server_id, before.unwrap_or(i64::MAX), limit as i64 + 1],
                raw_action,
            )?
            .collect::<rusqlite::Result<_>>()?;
        let more = raws.len() > limit;
        let mut out = Vec::new();
        let mut last_seq = None;
        for raw in raws.into_iter().take(limit) {
            last_seq = Some(raw.seq);
            out.push(action_with_steps(&conn, raw)?);
        }
        Ok((out, if more { last_seq } else { None }))
    }

    /// Actions that were accepted but had not ended when the agent stopped.
    pub fn unfinished_actions(&self) -> Result<Vec<Action>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT * FROM actions WHERE state IN ('pending', 'running') ORDER BY seq")?;
        let raws: Vec<RawAction> = stmt
            .query_map([], raw_action)?
            .collect::<rusqlite::Result<_>>()?;
        raws.into_iter()
            .map(|r| action_with_steps(&conn, r))
            .collect()
    }

    // ---- events ----

    /// Appends an event and returns it numbered. Keeps the newest `retain`.
    pub fn append_event(&self, mut ev: ServerEvent, retain: u64) -> Result<ServerEvent> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (at, server_id, kind, power, vm_state, task, action_id, cause)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                ev.at,
                ev.server_id,
                ev.kind.as_str(),
                ev.power.as_str(),
                ev.vm_state.as_str(),
                ev.task.map(|t| t.as_str()),
                ev.action_id,
                ev.cause
            ],
        )?;
        ev.seq = conn.last_insert_rowid() as u64;
        if ev.seq.is_multiple_of(256) && ev.seq > retain {
            conn.execute(
                "DELETE FROM events WHERE seq <= ?1",
                [(ev.seq - retain) as i64],
            )?;
        }
        Ok(ev)
    }

    /// Events after `after_seq`, oldest first, at most `limit`.
    pub fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<ServerEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![after_seq as i64, limit as i64], raw_event)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(event_from_raw))
            .collect()
    }

    /// The oldest and newest retained sequence numbers (0, 0 when empty).
    pub fn event_bounds(&self) -> Result<(u64, u64)> {
        let (lo, hi): (Option<i64>, Option<i64>) =
            self.conn()
                .query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        // AUTOINCREMENT never reuses numbers, even after pruning to empty.
        let hi = match hi {
            Some(h) => h,
            None => self
                .conn()
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0),
        };
        Ok((lo.unwrap_or(hi + 1) as u64, hi as u64))
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}
impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

// ---- row mapping ----

struct RawServer {
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
}

fn raw_server(r: &Row<'_>) -> rusqlite::Result<RawServer> {
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
    })
}

fn server_from_raw(r: RawServer) -> Result<ServerRecord> {
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
    })
}

struct RawAction {
    seq: i64,
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

fn raw_action(r: &Row<'_>) -> rusqlite::Result<RawAction> {
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

fn action_with_steps(conn: &Connection, r: RawAction) -> Result<Action> {
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

struct RawEvent {
    seq: i64,
    at: i64,
    server_id: String,
    kind: String,
    power: String,
    vm_state: String,
    task: Option<String>,
    action_id: Option<String>,
    cause: String,
}

fn raw_event(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
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
    })
}

fn event_from_raw(r: RawEvent) -> Result<ServerEvent> {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn server(id: &str) -> ServerRecord {
        ServerRecord {
            id: id.into(),
            project_id: "p1".into(),
            bmc: BmcRecord {
                protocol: Protocol::Ipmi,
                address: "127.0.0.1".into(),
                port: 623,
                username: "admin".into(),
                credential: Credential::Stored("s1.pass".into()),
                options: BTreeMap::from([("cipher_suite".into(), "3".into())]),
            },
            power: PowerState::On,
            power_observed_at: Some(5),
            vm_state: VmState::Active,
            task: Some(("a1".into(), ActionKind::RebootHard)),
            locked: false,
            locked_by_admin: false,
            bmc_error: None,
            source: Source::Api,
            created_at: 1,
        }
    }

    fn action(id: &str, server: &str) -> Action {
        Action {
            id: id.into(),
            server_id: server.into(),
            kind: ActionKind::RebootHard,
            state: ActionState::Pending,
            params: BTreeMap::new(),
            request_id: Some(format!("req-{id}")),
            caller: Caller::agent(),
            created_at: 1,
            started_at: None,
            finished_at: None,
            message: String::new(),
            events: vec![],
            superseded_by: None,
        }
    }

    #[test]
    fn servers_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_server(&server("s1")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.all_servers().unwrap(), vec![server("s1")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("rack-agent.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "database must not be readable by others");
    }

    #[test]
    fn a_database_without_step_data_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The steps table as the first version made it.
            let conn = Connection::open(dir.path().join("rack-agent.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE steps (id INTEGER PRIMARY KEY AUTOINCREMENT, action_id TEXT NOT NULL,
                 at INTEGER NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL, detail TEXT NOT NULL);
                 INSERT INTO steps (action_id, at, step, phase, detail) VALUES ('a0', 1, 'discover', 'finished', '');",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        store.insert_action(&action("a0", "s1")).unwrap();
        let step = StepEvent {
            at: 2,
            step: "read_power".into(),
            phase: StepPhase::Finished,
            detail: "on".into(),
            data: Some("{}".into()),
        };
        store.add_step("a0", &step).unwrap();
        let a = store.get_action("a0").unwrap().unwrap();
        assert_eq!(a.events.len(), 2);
        assert_eq!(a.events[0].data, None);
        assert_eq!(a.events[1], step);
    }

    #[test]
    fn an_inline_secret_is_never_written() {
        let store = Store::open_in_memory().unwrap();
        let mut s = server("s1");
        s.bmc.credential = Credential::Inline(crate::bmc::Secret::new("hunter2"));
        assert!(store.put_server(&s).is_err());
    }

    #[test]
    fn actions_page_newest_first_with_steps() {
        let store = Store::open_in_memory().unwrap();
        for i in 0..5 {
            store
                .insert_action(&action(&format!("a{i}"), "s1"))
                .unwrap();
        }
        store.insert_action(&action("other", "s2")).unwrap();
        let step = StepEvent {
            at: 2,
            step: "hard_reset".into(),
            phase: StepPhase::Started,
            detail: String::new(),
            data: Some("{\"power\":\"on\"}".into()),
        };
        store.add_step("a4", &step).unwrap();
        let (page, next) = store.list_actions("s1", None, 2).unwrap();
        assert_eq!(
            page.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a4", "a3"]
        );
        assert_eq!(page[0].events, vec![step]);
        let (page2, next2) = store.list_actions("s1", next, 10).unwrap();
        assert_eq!(
            page2.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a2", "a1", "a0"]
        );
        assert_eq!(next2, None);
    }

    fn caller_of(project: Option<&str>) -> Caller {
        Caller {
            id: "u".into(),
            project_id: project.map(String::from),
            roles: vec![],
        }
    }

    #[test]
    fn request_id_is_unique_per_scope() {
        let store = Store::open_in_memory().unwrap();
        let agent = Caller::agent().request_scope();
        store.insert_action(&action("a1", "s1")).unwrap();
        let mut dup = action("a2", "s1");
        dup.request_id = Some("req-a1".into());
        assert!(store.insert_action(&dup).is_err());
        assert_eq!(
            store
                .action_by_request_id(&agent, "req-a1")
                .unwrap()
                .unwrap()
                .id,
            "a1"
        );
        // Another project may use the same id; each finds only its own.
        let mut other = action("b1", "s2");
        other.request_id = Some("req-a1".into());
        other.caller = caller_of(Some("p2"));
        store.insert_action(&other).unwrap();
        assert_eq!(
            store
                .action_by_request_id("project:p2", "req-a1")
                .unwrap()
                .unwrap()
                .id,
            "b1"
        );
        assert!(store
            .action_by_request_id("project:p3", "req-a1")
            .unwrap()
            .is_none());
        // Actions without a request id never collide.
        for id in ["n1", "n2"] {
            let mut a = action(id, "s1");
            a.request_id = None;
            store.insert_action(&a).unwrap();
        }
    }

    /// The `actions` table as the first release made it: `request_id UNIQUE`
    /// across every caller.
    const V1_ACTIONS: &str = "CREATE TABLE actions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        server_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        params TEXT NOT NULL,
        request_id TEXT UNIQUE,
        caller TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        message TEXT NOT NULL,
        superseded_by TEXT
    );
    CREATE INDEX actions_by_server ON actions (server_id, seq);
    CREATE INDEX actions_by_state ON actions (state);";

    #[test]
    fn an_old_database_gets_request_ids_scoped_by_project() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("rack-agent.db")).unwrap();
            conn.execute_batch(V1_ACTIONS).unwrap();
            let insert = |seq: i64, id: &str, rid: Option<&str>, caller: &Caller| {
                conn.execute(
                    "INSERT INTO actions (seq, id, server_id, kind, state, params, request_id,
                        caller, created_at, message)
                     VALUES (?1, ?2, 's1', 'lock', 'succeeded', '{}', ?3, ?4, 1, 'locked')",
                    params![seq, id, rid, serde_json::to_string(caller).unwrap()],
                )
                .unwrap();
            };
            insert(7, "old-p1", Some("r1"), &caller_of(Some("p1")));
            insert(8, "old-ops", Some("r2"), &caller_of(None));
            insert(9, "old-none", None, &caller_of(Some("p1")));
        }
        let store = Store::open(dir.path()).unwrap();
        // Old ids are found in the scope of the caller that used them...
        let found = |scope: &str, rid: &str| {
            store
                .action_by_request_id(scope, rid)
                .unwrap()
                .map(|a| a.id)
        };
        assert_eq!(found("project:p1", "r1").as_deref(), Some("old-p1"));
        assert_eq!(found("caller:u", "r2").as_deref(), Some("old-ops"));
        assert_eq!(found("project:p2", "r1"), None);
        // ... still block a second use there, and no longer anywhere else.
        let mut dup = action("new-p1", "s1");
        dup.request_id = Some("r1".into());
        dup.caller = caller_of(Some("p1"));
        assert!(store.insert_action(&dup).is_err());
        let mut p2 = action("new-p2", "s1");
        p2.request_id = Some("r1".into());
        p2.caller = caller_of(Some("p2"));
        store.insert_action(&p2).unwrap();
        // Every action survived, and numbering goes on after the old ones.
        let (page, _) = store.list_actions("s1", None, 10).unwrap();
        let ids: Vec<&str> = page.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["new-p2", "old-none", "old-ops", "old-p1"]);
        drop(store);
        // Opening it again is a no-op.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list_actions("s1", None, 10).unwrap().0.len(), 4);
    }

    #[test]
    fn events_are_numbered_and_pruned() {
        let store = Store::open_in_memory().unwrap();
        let ev = ServerEvent {
            seq: 0,
            at: 1,
            server_id: "s1".into(),
            kind: EventKind::PowerChanged,
            power: PowerState::Off,
            vm_state: VmState::Shutoff,
            task: None,
            action_id: None,
            cause: "sync".into(),
        };
        for _ in 0..600 {
            store.append_event(ev.clone(), 100).unwrap();
        }
        let (lo, hi) = store.event_bounds().unwrap();
        assert_eq!(hi, 600);
        assert!(lo > 1 && lo <= 600 - 100 + 1, "lo={lo}");
        let after = store.events_after(598, 10).unwrap();
        assert_eq!(
            after.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![599, 600]
        );
    }
}
