//! The engine's life: what the service manager and the metrics ask (in
//! flight, unreachable, heartbeat), shutdown, and the crash-test hooks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

#[cfg(any(test, feature = "kill-points"))]
use super::killpoint;
use super::Engine;
use crate::bmc::SharedBmc;
use crate::model::now_ms;

impl Engine {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Servers whose BMC did not answer the last read.
    pub fn unreachable(&self) -> usize {
        self.lock()
            .servers
            .values()
            .filter(|s| s.rec.bmc_error.is_some())
            .count()
    }

    /// Updates the gauges, then renders every metric (for a scrape).
    pub fn render_metrics(&self) -> String {
        let m = &self.settings.metrics;
        m.in_flight_actions.set(self.in_flight() as i64);
        m.unreachable_bmcs.set(self.unreachable() as i64);
        m.encode()
    }

    /// The sync loop calls this at each pass, so the watchdog can tell it runs.
    pub fn sync_tick(&self) {
        self.sync_tick.store(now_ms(), Ordering::SeqCst);
    }

    /// Proof of life for the service manager's watchdog: the engine lock can be
    /// taken, the store answers (a read, and a commit through the writer
    /// thread), and the sync loop ran within `limit`.
    pub async fn heartbeat(&self, limit: Duration) -> std::result::Result<(), String> {
        drop(self.lock());
        self.store
            .ping()
            .map_err(|e| format!("state database does not answer: {e}"))?;
        self.store
            .write(Vec::new())
            .durable()
            .await
            .map_err(|e| format!("state database does not commit: {e}"))?;
        let age = now_ms() - self.sync_tick.load(Ordering::SeqCst);
        if age > limit.as_millis() as i64 {
            return Err(format!("the sync loop has not run for {age} ms"));
        }
        Ok(())
    }

    /// Arms a kill point (crash tests only).
    #[cfg(any(test, feature = "kill-points"))]
    pub fn arm_kill_point(&self, point: killpoint::KillPoint, mode: killpoint::KillMode) {
        self.kill_points.arm(point, mode);
    }

    /// Resolves once a frozen kill point was reached (engine tests).
    #[cfg(test)]
    pub(crate) async fn kill_point_fired(&self) {
        self.kill_points.fired().await
    }

    /// Drops every running action where it is, writing nothing: what a crash
    /// leaves behind (engine tests).
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        let mut inner = self.lock();
        for slot in inner.servers.values_mut() {
            if let Some((_, handle)) = slot.running.take() {
                handle.abort();
            }
        }
    }

    /// Resolves once a shutdown began (streams end on it).
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Refuses new BMC actions from now on and ends the watch streams.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stopping.send_replace(true);
    }

    /// Refuses new BMC actions, gives in-flight ones `grace` to finish, then
    /// stops them where they are (the next start recovers them from the store),
    /// and closes every BMC session.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight() > 0 {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let (left, bmcs): (Vec<String>, Vec<SharedBmc>) = {
            let mut inner = self.lock();
            let mut left = Vec::new();
            for slot in inner.servers.values_mut() {
                if let Some((id, handle)) = slot.running.take() {
                    handle.abort();
                    left.push(id);
                }
            }
            (
                left,
                inner.servers.values().map(|s| s.bmc.clone()).collect(),
            )
        };
        if !left.is_empty() {
            warn!(actions = ?left, "stopping with actions in flight; the next start recovers them");
        }
        for bmc in bmcs {
            bmc.close().await;
        }
    }
}
