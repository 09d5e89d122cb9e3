//! Issue 10 in the engine: the BMC's identity (read at enrolment or at the
//! first good poll, stored, refreshed on request; a failure recorded, never
//! fatal), sensors and their gauges, the event log, and power changes that
//! carry the BMC's log entries.

use super::*;
use crate::bmc::{BmcError, BmcIdentity};
use crate::engine::inventory::EVENT_LOG_WAIT;

fn count(fake: &FakeBmc, call: &FakeCall) -> usize {
    fake.calls().iter().filter(|c| *c == call).count()
}

fn stored(rig: &Rig, id: &str) -> ServerRecord {
    rig.engine
        .store
        .all_servers()
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .expect("stored")
}

async fn settle() {
    // Lets queued writes (write_later) reach the database.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn identity_is_read_at_enrolment_and_stored() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let rec = rig.server("s1");
    let id = rec.identity.clone().expect("read at enrolment");
    assert_eq!(id.serial_number.as_deref(), Some("FAKE-s1"));
    assert!(rec.identity_read_at.is_some() && rec.identity_error.is_none());
    assert_eq!(stored(&rig, "s1").identity, Some(id));
    // The first poll does not read it again.
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    assert_eq!(count(&fake, &FakeCall::Identity), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_identity_read_is_recorded_and_refreshed_on_request() {
    let rig = rig();
    let fake = rig.fakes.fake_for("s1");
    fake.set_identity(None);
    rig.enroll("s1", Power::On).await;
    let rec = rig.server("s1");
    assert_eq!(rec.identity, None);
    assert_eq!(
        rec.identity_error.as_deref(),
        Some("the BMC offers no identity")
    );
    assert_eq!(rec.power, PowerState::On, "the enrolment stands");

    let new = BmcIdentity {
        firmware_version: Some("2.14".into()),
        ..BmcIdentity::default()
    };
    fake.set_identity(Some(new.clone()));
    let rec = rig.engine.refresh_identity(&admin(), "s1").await.unwrap();
    assert_eq!(rec.identity, Some(new.clone()));
    assert_eq!(rec.identity_error, None);
    settle().await;
    assert_eq!(stored(&rig, "s1").identity, Some(new.clone()));

    // A BMC that stops answering: the error is recorded, what was read kept.
    fake.set_hang(true);
    let rec = rig.engine.refresh_identity(&admin(), "s1").await.unwrap();
    assert_eq!(rec.identity, Some(new));
    assert!(
        rec.identity_error
            .as_deref()
            .is_some_and(|e| e.contains("did not answer")),
        "{rec:?}"
    );
    // Another project may not refresh it.
    let err = rig
        .engine
        .refresh_identity(&member("p2"), "s1")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(_)), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unverified_server_has_its_identity_read_at_its_first_good_poll() {
    let rig = rig();
    let fake = rig.fakes.fake_for("s1");
    fake.set_hang(true);
    rig.engine
        .enroll(
            &admin(),
            EnrollRequest {
                id: "s1".into(),
                project_id: "p1".into(),
                bmc: bmc_record(0),
                skip_verify: true,
            },
        )
        .await
        .unwrap();
    assert!(!rig.server("s1").identity_tried());
    // A failed poll reads nothing more.
    assert!(rig.engine.poll_power("s1", "sync").await.unwrap().is_err());
    assert!(!rig.server("s1").identity_tried());
    fake.set_hang(false);
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    assert!(rig.server("s1").identity.is_some());
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    assert_eq!(count(&fake, &FakeCall::Identity), 1);
}

fn gauges(rig: &Rig) -> String {
    rig.engine
        .render_metrics()
        .lines()
        .filter(|l| l.starts_with("rack_agent_server_"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(start_paused = true)]
async fn health_reads_set_gauges_one_series_per_server_until_removed() {
    let rig = rig();
    let f1 = rig.enroll("s1", Power::On).await;
    rig.enroll("s2", Power::Off).await;
    let (h, _) = rig.engine.server_health(&admin(), "s1").await.unwrap();
    assert_eq!(h.power_watts(), Some(180.0));
    rig.engine.server_health(&member("p1"), "s1").await.unwrap();
    rig.engine.server_health(&admin(), "s2").await.unwrap();
    let g = gauges(&rig);
    assert_eq!(
        g.matches("rack_agent_server_power_watts{").count(),
        2,
        "{g}"
    );
    assert!(
        g.contains("rack_agent_server_power_watts{server_id=\"s1\"} 180.0"),
        "{g}"
    );
    assert!(
        g.contains("rack_agent_server_inlet_celsius{server_id=\"s2\"} 23.0"),
        "{g}"
    );

    // Another project: refused like GetServer, and no BMC traffic.
    let before = f1.calls().len();
    let err = rig
        .engine
        .server_health(&member("p2"), "s1")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(_)), "{err:?}");
    assert_eq!(f1.calls().len(), before);

    // A BMC without sensors: unsupported, and no series for it.
    f1.set_sensors_offered(false);
    let err = rig.engine.server_health(&admin(), "s1").await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Bmc {
                source: BmcError::Unsupported(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!gauges(&rig).contains("\"s1\""), "{}", gauges(&rig));
    // Nor is it counted as a BMC error (the health poll asks every pass).
    assert!(!rig.engine.render_metrics().contains("kind=\"unsupported\""));

    // Removed: its series go with it.
    rig.engine.remove_server(&admin(), "s2").await.unwrap();
    assert_eq!(gauges(&rig), "", "no series left");
    let err = rig.engine.server_health(&admin(), "s2").await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn the_event_log_is_read_through_the_engine() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    fake.press_power_button();
    let all = rig
        .engine
        .bmc_events(&admin(), "s1", None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let newest = rig
        .engine
        .bmc_events(&admin(), "s1", None, 1)
        .await
        .unwrap();
    assert_eq!(newest[0].event, "Power Off / Power Down");
    let future = rig
        .engine
        .bmc_events(&admin(), "s1", Some(i64::MAX / 2), 100)
        .await
        .unwrap();
    assert!(future.is_empty());
    fake.set_event_log_offered(false);
    let err = rig
        .engine
        .bmc_events(&admin(), "s1", None, 100)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::Bmc {
            source: BmcError::Unsupported(_),
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_power_button_press_is_published_with_the_bmc_log_and_stored_with_it() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let mut events = rig.engine.subscribe_events();
    fake.press_power_button();
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (ev.kind, ev.power),
        (EventKind::PowerChanged, PowerState::Off)
    );
    let words: Vec<&str> = ev.bmc_events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(words, ["Power Button pressed", "Power Off / Power Down"]);
    assert!(fake.calls().iter().any(|c| matches!(
        c,
        FakeCall::Events {
            since: Some(_),
            limit: 10
        }
    )));
    // A watcher resuming from the store gets them too.
    let again = rig.engine.events_after(ev.seq - 1, 1).unwrap();
    assert_eq!(again[0].bmc_events, ev.bmc_events);

    // A change an action made carries no log read.
    let reads = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::Events { .. }))
        .count();
    let a = rig.submit("s1", ActionRequest::Start).await.unwrap();
    rig.wait(&a.id).await;
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    let after = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::Events { .. }))
        .count();
    assert_eq!(reads, after);
}

#[tokio::test(start_paused = true)]
async fn an_event_log_that_hangs_holds_the_event_no_longer_than_the_bound() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let mut events = rig.engine.subscribe_events();
    fake.set_event_log_hang(true);
    fake.press_power_button();
    let started = tokio::time::Instant::now();
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    let ev = events.recv().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(ev.power, PowerState::Off);
    assert!(ev.bmc_events.is_empty());
    assert!(
        waited <= EVENT_LOG_WAIT + Duration::from_millis(100),
        "held {waited:?}"
    );
    // A log that refuses: the event goes out at once, without entries.
    fake.set_event_log_hang(false);
    fake.set_event_log_offered(false);
    fake.set_power(Power::On);
    rig.engine.poll_power("s1", "sync").await.unwrap().unwrap();
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.power, PowerState::On);
    assert!(ev.bmc_events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_finds_a_power_change_attaches_the_log_too() {
    let rig = rig();
    let fake = rig.enroll("s1", Power::On).await;
    let mut events = rig.engine.subscribe_events();
    fake.press_power_button();
    let r = rig.engine.power_state(&admin(), "s1", true).await.unwrap();
    assert_eq!(r.power, PowerState::Off);
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.cause, "refresh");
    assert_eq!(ev.bmc_events.len(), 2, "{ev:?}");
}
