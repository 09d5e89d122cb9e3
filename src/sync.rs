//! The power-state sync loop: polls every BMC on an interval with jitter and a
//! bound on concurrency. What it finds goes through the engine, which persists
//! and publishes a change (including one made behind the agent's back).
//!
//! Every `health_interval`, the gap after a power pass also reads every BMC's
//! sensors (which sets the power-draw and inlet gauges), with the same bound
//! on concurrency; what is still being read when the next power pass is due
//! is dropped, and the pass goes on at once: health never delays power.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info_span, Instrument};

use crate::config::SyncSettings;
use crate::engine::Engine;

/// Polls until `stop` turns true.
pub async fn run(engine: Arc<Engine>, settings: SyncSettings, mut stop: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(settings.max_concurrent));
    // The first health pass follows the first power pass.
    let mut health_due = tokio::time::Instant::now();
    loop {
        // The interval is a period, from the start of one pass to the start
        // of the next: a pass over many slow BMCs does not stretch it (a
        // pass longer than the interval is followed at once by the next).
        let started = tokio::time::Instant::now();
        let pass = poll_all(&engine, &limit);
        tokio::select! {
            _ = pass => {}
            _ = stop.changed() => return,
        }
        let jitter_ms = settings.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ms)
        };
        let next = started + settings.interval + Duration::from_millis(extra);
        let now = tokio::time::Instant::now();
        if !settings.health_interval.is_zero() && now >= health_due && now < next {
            health_due = now + settings.health_interval;
            tokio::select! {
                _ = health_all(&engine, &limit, next) => {}
                _ = stop.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One pass over every server, at most `limit` at once.
async fn poll_all(engine: &Arc<Engine>, limit: &Arc<Semaphore>) {
    let started = tokio::time::Instant::now();
    engine.sync_tick();
    let mut set = JoinSet::new();
    let ids = engine.server_ids();
    for id in &ids {
        let id = id.clone();
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let engine = engine.clone();
        set.spawn(async move {
            let _permit = permit;
            engine.poll_power(&id, "sync").await;
        });
    }
    while set.join_next().await.is_some() {}
    engine.sync_tick();
    debug!(
        servers = ids.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sync pass done"
    );
}

/// Reads every server's sensors, at most `limit` at once, until `deadline`
/// (the next power pass): reads still under way then are dropped, and the
/// servers not reached wait for the next health pass.
async fn health_all(engine: &Arc<Engine>, limit: &Arc<Semaphore>, deadline: tokio::time::Instant) {
    // In a new order each pass: a pass cut short does not leave the same
    // servers unread every time.
    let mut ids = engine.server_ids();
    ids.shuffle(&mut rand::rng());
    let mut set = JoinSet::new();
    let work = async {
        for id in &ids {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let engine = engine.clone();
            let span = info_span!("health_poll", server_id = %id);
            let id = id.clone();
            set.spawn(
                async move {
                    let _permit = permit;
                    engine.poll_health(&id).await;
                }
                .instrument(span),
            );
        }
        while set.join_next().await.is_some() {}
    };
    let finished = tokio::select! {
        _ = work => true,
        _ = tokio::time::sleep_until(deadline) => false,
    };
    if !finished {
        debug!(
            servers = ids.len(),
            "health pass cut short: the next power pass is due"
        );
    }
    // Dropping the set stops whatever is still being read.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::fake::{FakeBmcFactory, FakeSettings};
    use crate::bmc::{Power, Protocol, Secret};
    use crate::config::Timeouts;
    use crate::engine::{EngineSettings, EnrollRequest};
    use crate::model::*;
    use crate::policy::Policy;
    use crate::store::Store;

    /// An engine on fake BMCs with one enrolled server, `s1`; `verify`: the
    /// enrolment reads the server's power first.
    async fn engine_with_s1(
        fakes: &Arc<FakeBmcFactory>,
        sync: &SyncSettings,
        verify: bool,
    ) -> Arc<Engine> {
        let engine = Engine::start(
            Store::open_in_memory().unwrap(),
            fakes.clone(),
            EngineSettings {
                timeouts: Timeouts::default(),
                sync: sync.clone(),
                event_retain: 100,
                actions: Default::default(),
                credentials_dir: "/nonexistent".into(),
                secrets_dir: std::env::temp_dir()
                    .join(format!("rack-agent-test-{}", uuid::Uuid::new_v4())),
                policy: Policy::default(),
                metrics: crate::metrics::Metrics::new(),
            },
            &[],
        )
        .unwrap();
        fakes.fake_for("s1");
        engine
            .enroll(
                &Caller::agent(),
                EnrollRequest {
                    id: "s1".into(),
                    project_id: "p".into(),
                    bmc: BmcRecord {
                        protocol: Protocol::Ipmi,
                        address: "192.0.2.9".into(),
                        port: 623,
                        username: "u".into(),
                        credential: Credential::Inline(Secret::new("p")),
                        options: Default::default(),
                    },
                    skip_verify: !verify,
                },
            )
            .await
            .unwrap();
        engine
    }

    #[tokio::test(start_paused = true)]
    async fn a_power_button_press_reaches_watchers_within_two_intervals() {
        let fakes = Arc::new(FakeBmcFactory::new(FakeSettings::default()).unwrap());
        let sync = SyncSettings {
            interval: Duration::from_secs(10),
            jitter: Duration::from_secs(1),
            ..SyncSettings::default()
        };
        let engine = engine_with_s1(&fakes, &sync, true).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(engine.clone(), sync.clone(), stop_rx));
        let mut events = engine.subscribe_events();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pressed = tokio::time::Instant::now();
        fakes.get("s1").unwrap().set_power(Power::Off);
        let ev = tokio::time::timeout(2 * (sync.interval + sync.jitter), events.recv())
            .await
            .expect("no event within two intervals")
            .unwrap();
        assert_eq!((ev.server_id.as_str(), ev.power), ("s1", PowerState::Off));
        assert_eq!(ev.cause, "sync");
        assert!(pressed.elapsed() <= 2 * (sync.interval + sync.jitter));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_is_a_period_not_a_pause_after_each_pass() {
        let fakes = Arc::new(FakeBmcFactory::new(FakeSettings::default()).unwrap());
        let sync = SyncSettings {
            interval: Duration::from_secs(10),
            jitter: Duration::ZERO,
            ..SyncSettings::default()
        };
        let fake = fakes.fake_for("s1");
        // Verified at enrolment (its identity read then, not at the first pass).
        let engine = engine_with_s1(&fakes, &sync, true).await;
        // A slow BMC: every read takes 4 s.
        fake.set_latency(Duration::from_secs(4));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(engine.clone(), sync, stop_rx));
        tokio::time::sleep(Duration::from_secs(101)).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let reads = fake
            .calls()
            .iter()
            .filter(|c| **c == crate::bmc::fake::FakeCall::PowerState)
            .count();
        // The enrolment's read, then passes at 0, 10, ..., 100 s: 1 + 11 (a
        // pause after each would give 8). The health reads between passes
        // (at 8 s, cut short at 10 s; at 74 s) delay none of them.
        assert_eq!(reads, 12, "{:?}", fake.calls());
        let health = fake
            .calls()
            .iter()
            .filter(|c| **c == crate::bmc::fake::FakeCall::Health)
            .count();
        assert_eq!(health, 2, "{:?}", fake.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn the_health_poll_sets_the_gauges_and_can_be_turned_off() {
        for (every, expect) in [(Duration::from_secs(60), true), (Duration::ZERO, false)] {
            let fakes = Arc::new(FakeBmcFactory::new(FakeSettings::default()).unwrap());
            let sync = SyncSettings {
                interval: Duration::from_secs(10),
                jitter: Duration::ZERO,
                health_interval: every,
                ..SyncSettings::default()
            };
            let engine = engine_with_s1(&fakes, &sync, true).await;
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(run(engine.clone(), sync, stop_rx));
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop_tx.send(true).unwrap();
            task.await.unwrap();
            let text = engine.render_metrics();
            assert_eq!(
                text.contains("rack_agent_server_power_watts{server_id=\"s1\"} 180.0"),
                expect,
                "{text}"
            );
            assert_eq!(
                text.contains("rack_agent_server_inlet_celsius{server_id=\"s1\"} 23.0"),
                expect,
                "{text}"
            );
        }
    }
}
