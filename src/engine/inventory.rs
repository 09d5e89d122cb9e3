//! What a BMC tells beyond power: its identity (read at enrolment or at the
//! first poll, kept in the record, refreshed on request), its sensors (read
//! on request and by the sync loop's health poll, which feed the power and
//! inlet gauges) and its event log. Every read goes through the BMC's lock
//! like any other BMC operation, with a deadline.

use std::future::Future;
use std::time::Duration;

use tracing::{debug, info_span, warn, Instrument};

use super::{not_found_server, with_timeout, Engine, EngineError, Result};
use crate::bmc::{BmcError, BmcEvent, BmcIdentity, Health, SharedBmc};
use crate::model::*;
use crate::store::Write;

/// How long a power change waits for the BMC's event log before it goes out
/// without it.
pub(super) const EVENT_LOG_WAIT: Duration = Duration::from_secs(2);
/// How far before the previous observation the event log is read from, for
/// a BMC clock a little behind the agent's.
pub(super) const EVENT_LOG_SLACK_SECS: i64 = 10;
/// Entries attached to one power change, the newest.
pub(super) const EVENT_LOG_ENTRIES: usize = 10;

/// What an identity read found, as the record keeps it.
pub(super) fn apply_identity(
    rec: &mut ServerRecord,
    found: std::result::Result<BmcIdentity, BmcError>,
) {
    match found {
        Ok(id) => {
            rec.identity = Some(id);
            rec.identity_read_at = Some(now_ms());
            rec.identity_error = None;
        }
        Err(e) => {
            rec.identity_error = Some(identity_error_text(&e));
        }
    }
}

fn identity_error_text(e: &BmcError) -> String {
    match e {
        BmcError::Unsupported(_) => "the BMC offers no identity".to_string(),
        other => other.to_string(),
    }
}

impl Engine {
    /// Runs one call on a server's BMC under the BMC's lock, with `limit`.
    /// `None` when the server is not enrolled (any more).
    pub(super) async fn on_bmc<T, F, Fut>(
        &self,
        server_id: &str,
        limit: Duration,
        call: F,
    ) -> Option<std::result::Result<T, BmcError>>
    where
        F: FnOnce(SharedBmc) -> Fut,
        Fut: Future<Output = std::result::Result<T, BmcError>>,
    {
        let (bmc, op_lock) = {
            let inner = self.lock();
            let slot = inner.servers.get(server_id)?;
            (
                slot.bmc.clone(),
                inner.bmc_locks.get(&slot.rec.bmc.key())?.clone(),
            )
        };
        let _op = op_lock.lock().await;
        Some(with_timeout(limit, call(bmc)).await)
    }

    /// Reads the identity of a server's BMC now (the caller holds the BMC's
    /// lock, or the server is not in the map yet) and records what it found
    /// in the record; a failure is recorded, never returned.
    pub(super) async fn read_identity(&self, bmc: &SharedBmc, rec: &mut ServerRecord) {
        let found = with_timeout(self.settings.timeouts.bmc_command, bmc.identity()).await;
        if let Err(e) = &found {
            debug!(server_id = %rec.id, error = %e, "cannot read the BMC's identity");
        }
        apply_identity(rec, found);
    }

    /// Stores what an identity read found in the server's record (if the
    /// server is still there).
    pub(super) fn record_identity(
        &self,
        server_id: &str,
        found: std::result::Result<BmcIdentity, BmcError>,
    ) -> Option<ServerRecord> {
        let mut inner = self.lock();
        let slot = inner.servers.get_mut(server_id)?;
        if let Err(e) = &found {
            warn!(server_id, bmc = %slot.rec.bmc.key(), error = %e, kind = e.kind(), "cannot read the BMC's identity");
        }
        apply_identity(&mut slot.rec, found);
        let rec = slot.rec.clone();
        self.store.write_later(vec![Write::PutServer(rec.clone())]);
        Some(rec)
    }

    /// Reads the BMC's identity again (GetServer with refresh_identity). A
    /// failure is recorded in the record's `identity_error`; the server is
    /// answered either way.
    pub async fn refresh_identity(&self, caller: &Caller, server_id: &str) -> Result<ServerRecord> {
        self.get_server(caller, server_id)?;
        let span = info_span!("identity", server_id);
        let found = self
            .on_bmc(
                server_id,
                self.settings.timeouts.bmc_command,
                |bmc| async move { bmc.identity().await },
            )
            .instrument(span)
            .await
            .ok_or_else(|| not_found_server(server_id))?;
        self.record_identity(server_id, found)
            .ok_or_else(|| not_found_server(server_id))
    }

    /// Every sensor of a server's BMC, read now; updates its gauges.
    pub async fn server_health(
        &self,
        caller: &Caller,
        server_id: &str,
    ) -> Result<(Health, Millis)> {
        let rec = self.get_server(caller, server_id)?;
        let span = info_span!("health", server_id);
        let found = self.poll_health(server_id).instrument(span).await;
        match found {
            None => Err(not_found_server(server_id)),
            Some(Ok(h)) => Ok((h, now_ms())),
            Some(Err(source)) => Err(EngineError::Bmc {
                server: rec.id,
                bmc: rec.bmc.key(),
                source,
            }),
        }
    }

    /// Reads a server's sensors (under its BMC's lock) and sets its gauges
    /// from them. `None` when the server is gone.
    pub async fn poll_health(
        &self,
        server_id: &str,
    ) -> Option<std::result::Result<Health, BmcError>> {
        let found = self
            .on_bmc(
                server_id,
                self.settings.timeouts.bmc_command,
                |bmc| async move { bmc.health().await },
            )
            .await?;
        let inner = self.lock();
        // Under the engine lock: a server removed meanwhile gets no series
        // back (removal forgets them under the same lock).
        if let Some(slot) = inner.servers.get(server_id) {
            match &found {
                Ok(h) => self.settings.metrics.set_server_health(
                    server_id,
                    h.power_watts(),
                    h.inlet_celsius(),
                ),
                Err(e) => {
                    // A BMC (or a driver) without sensors is not failing:
                    // the health poll would count it every pass.
                    if !matches!(e, BmcError::Unsupported(_)) {
                        self.settings
                            .metrics
                            .bmc_error(slot.rec.bmc.protocol.as_str(), e.kind());
                    }
                    // A stale reading would be a lie: no series until the
                    // next good read.
                    self.settings.metrics.forget_server(server_id);
                }
            }
        }
        drop(inner);
        Some(found)
    }

    /// The BMC's event log, entries logged at or after `since` (Unix
    /// seconds), at most `limit` of the newest, oldest first.
    pub async fn bmc_events(
        &self,
        caller: &Caller,
        server_id: &str,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Vec<BmcEvent>> {
        let rec = self.get_server(caller, server_id)?;
        let span = info_span!("bmc_events", server_id);
        let found = self
            .on_bmc(
                server_id,
                self.settings.timeouts.bmc_command,
                |bmc| async move { bmc.events(since, limit).await },
            )
            .instrument(span)
            .await
            .ok_or_else(|| not_found_server(server_id))?;
        found.map_err(|source| EngineError::Bmc {
            server: rec.id,
            bmc: rec.bmc.key(),
            source,
        })
    }
}
