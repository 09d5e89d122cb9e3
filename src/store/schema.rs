//! The database's tables, and how a database made by an older version is
//! brought up to them.

use rusqlite::Connection;

use super::Result;

pub(super) const SCHEMA: &str = r#"
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
    created_at INTEGER NOT NULL,
    -- The BMC's identity as last read (JSON), when, and why the last read failed.
    identity TEXT,
    identity_read_at INTEGER,
    identity_error TEXT
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
CREATE INDEX IF NOT EXISTS actions_by_end ON actions (finished_at);
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
    cause TEXT NOT NULL,
    -- The BMC event-log entries attached to a power change (JSON array), or NULL.
    bmc_events TEXT
);
"#;

/// Brings a database made by an older version up to `SCHEMA`; runs first, in
/// the same transaction. `CREATE TABLE IF NOT EXISTS` leaves an existing table
/// as it was, so a table whose shape changed is rebuilt here. Each step is
/// written as it was at the time and never follows later changes of `SCHEMA`.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
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
    // Servers gained their BMC's identity (issue 10): NULL until read.
    // Each column on its own: a crash between two of them leaves a database
    // the next start completes.
    let servers = columns("servers")?;
    if !servers.is_empty() {
        for (column, ty) in [
            ("identity", "TEXT"),
            ("identity_read_at", "INTEGER"),
            ("identity_error", "TEXT"),
        ] {
            if !servers.iter().any(|c| c == column) {
                tracing::info!(
                    column,
                    "migrating the state database: servers gain their BMC identity"
                );
                conn.execute_batch(&format!("ALTER TABLE servers ADD COLUMN {column} {ty}"))?;
            }
        }
    }
    // Events gained the BMC event-log entries of a power change (issue 10).
    let events = columns("events")?;
    if !events.is_empty() && !events.iter().any(|c| c == "bmc_events") {
        conn.execute_batch("ALTER TABLE events ADD COLUMN bmc_events TEXT")?;
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
