//! Store tests: round trips through a real file, migrations of databases
//! made by older versions, request-id scopes, event numbering, and group
//! commit.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::*;
use crate::bmc::Protocol;

/// Blocking one-write helpers, as the tests of each table use them.
impl Store {
    fn put_server(&self, s: &ServerRecord) -> Result<()> {
        self.write_now(vec![Write::PutServer(s.clone())])
            .map(|_| ())
    }
    fn insert_action(&self, a: &Action) -> Result<()> {
        self.write_now(vec![Write::InsertAction(a.clone())])
            .map(|_| ())
    }
    fn add_step(&self, action_id: &str, step: &StepEvent) -> Result<()> {
        self.write_now(vec![Write::AddStep {
            action_id: action_id.into(),
            step: step.clone(),
        }])
        .map(|_| ())
    }
    fn append_event(&self, ev: ServerEvent, retain: u64) -> Result<ServerEvent> {
        let mut evs = self.write_now(vec![Write::AppendEvent { event: ev, retain }])?;
        Ok(evs.remove(0))
    }
}

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
        identity: None,
        identity_read_at: None,
        identity_error: None,
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
fn a_database_without_identity_or_bmc_events_is_migrated() {
    migrated_from("");
}

/// A crash between two of the migration's statements: the next start adds
/// what is missing.
#[test]
fn a_database_migrated_halfway_is_completed() {
    migrated_from("ALTER TABLE servers ADD COLUMN identity TEXT;");
}

/// A database from before issue 10, with `extra` statements run on it.
fn migrated_from(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    {
        // The servers and events tables as they were before issue 10.
        let conn = Connection::open(dir.path().join("rack-agent.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE servers (id TEXT PRIMARY KEY, project_id TEXT NOT NULL,
                protocol TEXT NOT NULL, address TEXT NOT NULL, port INTEGER NOT NULL,
                username TEXT NOT NULL, credential TEXT NOT NULL, options TEXT NOT NULL,
                power TEXT NOT NULL, power_observed_at INTEGER, vm_state TEXT NOT NULL,
                task_action_id TEXT, task_kind TEXT, locked INTEGER NOT NULL,
                locked_by_admin INTEGER NOT NULL, bmc_error TEXT, source TEXT NOT NULL,
                created_at INTEGER NOT NULL);
             INSERT INTO servers VALUES ('old', 'p1', 'ipmi', '10.0.0.1', 623, 'u',
                'file:old.pass', '{}', 'on', 5, 'active', NULL, NULL, 0, 0, NULL, 'config', 1);
             CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
                server_id TEXT NOT NULL, kind TEXT NOT NULL, power TEXT NOT NULL,
                vm_state TEXT NOT NULL, task TEXT, action_id TEXT, cause TEXT NOT NULL);
             INSERT INTO events (at, server_id, kind, power, vm_state, cause)
                VALUES (1, 'old', 'power_changed', 'off', 'shutoff', 'sync');",
        )
        .unwrap();
        conn.execute_batch(extra).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let old = store.all_servers().unwrap().remove(0);
    assert_eq!((old.id.as_str(), old.identity.clone()), ("old", None));
    assert!(!old.identity_tried());
    assert!(store.events_after(0, 10).unwrap()[0].bmc_events.is_empty());
    // What the new columns hold comes back as written.
    let mut s = old;
    s.identity = Some(crate::bmc::BmcIdentity {
        serial_number: Some("SN1".into()),
        ..Default::default()
    });
    s.identity_read_at = Some(7);
    s.identity_error = Some("the BMC did not answer within 15s".into());
    store.write_now(vec![Write::PutServer(s.clone())]).unwrap();
    assert_eq!(store.all_servers().unwrap()[0], s);
    let entry = crate::bmc::BmcEvent {
        id: "0x0001".into(),
        at: Some(100),
        sensor_type: "Power Unit".into(),
        sensor: "Power Unit".into(),
        event: "Power Off / Power Down".into(),
        direction: "asserted".into(),
        severity: String::new(),
        message: String::new(),
        raw: String::new(),
    };
    let mut ev = store.events_after(0, 1).unwrap().remove(0);
    ev.bmc_events = vec![entry];
    let ev = store.append_event(ev, 100).unwrap();
    assert_eq!(store.events_after(ev.seq - 1, 1).unwrap()[0], ev);
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
        bmc_events: vec![],
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

#[test]
fn concurrent_writes_share_commits_and_a_failing_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.insert_action(&action("taken", "s1")).unwrap();
    let before = store.commits();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let results: Vec<Result<Vec<ServerEvent>>> = rt.block_on(async {
        // 200 jobs queued at once, the tenth one a duplicate of an action
        // already stored: it fails alone, the others are durable.
        let tickets: Vec<Ticket> = (0..200)
            .map(|i| {
                let id = if i == 10 {
                    "taken".to_string()
                } else {
                    format!("a{i}")
                };
                store.write(vec![
                    Write::InsertAction(action(&id, "s1")),
                    Write::AppendEvent {
                        event: ServerEvent {
                            seq: 0,
                            at: i,
                            server_id: "s1".into(),
                            kind: EventKind::TaskChanged,
                            power: PowerState::On,
                            vm_state: VmState::Active,
                            task: None,
                            action_id: Some(id.clone()),
                            cause: "test".into(),
                            bmc_events: vec![],
                        },
                        retain: 1000,
                    },
                ])
            })
            .collect();
        let mut out = Vec::new();
        for t in tickets {
            out.push(t.durable().await);
        }
        out
    });
    let commits = store.commits() - before;
    assert!(
        commits < 100,
        "200 queued jobs took {commits} commits: no grouping"
    );
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (10, Err(e)) => assert!(e.to_string().contains("UNIQUE"), "{e}"),
            (10, Ok(_)) => panic!("the duplicate was accepted"),
            (_, Ok(evs)) => assert_eq!(evs.len(), 1),
            (_, Err(e)) => panic!("job {i} failed with the duplicate: {e}"),
        }
    }
    // Every successful job is on disk; the failed one left no event.
    let (all, _) = store.list_actions("s1", None, 1000).unwrap();
    assert_eq!(all.len(), 200);
    let evs = store.events_after(0, 1000).unwrap();
    assert_eq!(evs.len(), 199);
    assert!(evs.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn pruning_keeps_the_newest_actions_and_every_unfinished_one() {
    let store = Store::open_in_memory().unwrap();
    for i in 0..300 {
        let mut a = action(&format!("a{i:03}"), "s1");
        a.request_id = None;
        // The tenth is still running: it must survive any pruning. The
        // others ended in the order they were accepted.
        if i != 10 {
            a.state = ActionState::Succeeded;
            a.finished_at = Some(1000 + i);
        }
        a.events = vec![StepEvent {
            at: i,
            step: "hard_reset".into(),
            phase: StepPhase::Started,
            detail: String::new(),
            data: None,
        }];
        store.insert_action(&a).unwrap();
    }
    store
        .write_now(vec![Write::PruneActions { keep: 100 }])
        .unwrap();
    let (kept, _) = store.list_actions("s1", None, 1000).unwrap();
    let ids: Vec<&str> = kept.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(kept.len(), 101, "{ids:?}");
    assert!(ids.contains(&"a010"));
    assert!(ids.contains(&"a299") && ids.contains(&"a200") && !ids.contains(&"a199"));
    // The steps of the deleted actions went with them.
    let steps: i64 = store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM steps", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(steps, 101);
    // Nothing to prune: nothing changes.
    store
        .write_now(vec![Write::PruneActions { keep: 1000 }])
        .unwrap();
    assert_eq!(store.list_actions("s1", None, 1000).unwrap().0.len(), 101);
}

#[test]
fn pruning_keeps_an_action_that_ended_last_however_old() {
    let store = Store::open_in_memory().unwrap();
    for i in 0..300 {
        let mut a = action(&format!("a{i:03}"), "s1");
        a.request_id = None;
        a.state = ActionState::Succeeded;
        a.finished_at = Some(1_000 + i);
        // The first one ran on a slow BMC and ended after all the others.
        if i == 0 {
            a.finished_at = Some(10_000);
        }
        store.insert_action(&a).unwrap();
    }
    store
        .write_now(vec![Write::PruneActions { keep: 100 }])
        .unwrap();
    let (kept, _) = store.list_actions("s1", None, 1000).unwrap();
    let ids: Vec<&str> = kept.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(kept.len(), 100, "{ids:?}");
    assert!(
        ids.contains(&"a000"),
        "the action that ended last went: {ids:?}"
    );
    assert!(ids.contains(&"a299") && ids.contains(&"a201") && !ids.contains(&"a200"));
}
