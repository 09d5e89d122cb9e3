//! The tonic service: each RPC decodes its request, names the caller, calls the
//! engine and maps the answer. No BMC logic lives here.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use super::auth::Authenticator;
use super::convert::{self, id as checked_id};
use super::status::ApiError;
use crate::engine::{ActionRequest, Engine};
use crate::model::{Caller, ServerEvent};
use crate::proto as pb;
use crate::proto::rack_agent_server::RackAgent;

/// The engine, once the daemon has opened the store and recovered: until
/// then every call answers UNAVAILABLE (and the health service NOT_SERVING).
pub type EngineSlot = Arc<std::sync::OnceLock<Arc<Engine>>>;

pub struct Service {
    engine: EngineSlot,
    auth: Authenticator,
}

impl Service {
    pub fn new(engine: EngineSlot, auth: Authenticator) -> Self {
        Service { engine, auth }
    }

    fn engine(&self) -> Result<&Arc<Engine>, Status> {
        self.engine
            .get()
            .ok_or_else(|| Status::unavailable("rack-agent is starting: the store is not open yet"))
    }

    /// The caller, and the engine to ask.
    fn begin<T>(&self, req: &Request<T>) -> Result<(Caller, &Arc<Engine>), Status> {
        let engine = self.engine()?;
        Ok((self.auth.caller(req)?, engine))
    }

    async fn submit(
        &self,
        caller: &Caller,
        server_id: &str,
        req: ActionRequest,
        request_id: &str,
    ) -> Result<Response<pb::Action>, Status> {
        checked_id("server_id", server_id)?;
        let a = self
            .engine()?
            .submit(caller, server_id, req, convert::request_id(request_id))
            .await?;
        Ok(Response::new(convert::action(&a)))
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RackAgent for Service {
    async fn enroll_server(
        &self,
        req: Request<pb::EnrollServerRequest>,
    ) -> Result<Response<pb::Server>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let enroll = convert::enroll(req.into_inner())?;
        let rec = engine.enroll(&caller, enroll).await?;
        Ok(Response::new(convert::server(&rec)))
    }

    async fn get_server(
        &self,
        req: Request<pb::GetServerRequest>,
    ) -> Result<Response<pb::Server>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        checked_id("id", &r.id)?;
        let rec = if r.refresh_identity {
            engine.refresh_identity(&caller, &r.id).await?
        } else {
            engine.get_server(&caller, &r.id)?
        };
        Ok(Response::new(convert::server(&rec)))
    }

    async fn list_servers(
        &self,
        req: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        let after = match r.page_token.as_str() {
            "" => None,
            t => Some(checked_id("page_token", t)?),
        };
        let (page, next) = engine.list_servers(&caller, after, convert::page_size(r.page_size));
        Ok(Response::new(pb::ListServersResponse {
            servers: page.iter().map(convert::server).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn remove_server(
        &self,
        req: Request<pb::RemoveServerRequest>,
    ) -> Result<Response<pb::RemoveServerResponse>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let id = req.into_inner().id;
        checked_id("id", &id)?;
        engine.remove_server(&caller, &id).await?;
        Ok(Response::new(pb::RemoveServerResponse {}))
    }

    async fn reboot(
        &self,
        req: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(
            &caller,
            &r.server_id,
            convert::reboot(r.r#type)?,
            &r.request_id,
        )
        .await
    }

    async fn start(&self, req: Request<pb::StartRequest>) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(&caller, &r.server_id, ActionRequest::Start, &r.request_id)
            .await
    }

    async fn stop(&self, req: Request<pb::StopRequest>) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(
            &caller,
            &r.server_id,
            ActionRequest::Stop { force: r.force },
            &r.request_id,
        )
        .await
    }

    async fn reinstall(
        &self,
        req: Request<pb::ReinstallRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(
            &caller,
            &r.server_id,
            convert::reinstall(r.boot_source)?,
            &r.request_id,
        )
        .await
    }

    async fn reset_state(
        &self,
        req: Request<pb::ResetStateRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(
            &caller,
            &r.server_id,
            convert::reset_state(r.state)?,
            &r.request_id,
        )
        .await
    }

    async fn lock(&self, req: Request<pb::LockRequest>) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(&caller, &r.server_id, ActionRequest::Lock, &r.request_id)
            .await
    }

    async fn unlock(
        &self,
        req: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let (caller, _) = self.begin(&req)?;
        let r = req.into_inner();
        self.submit(&caller, &r.server_id, ActionRequest::Unlock, &r.request_id)
            .await
    }

    async fn get_action(
        &self,
        req: Request<pb::GetActionRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let id = req.into_inner().id;
        checked_id("id", &id)?;
        Ok(Response::new(convert::action(
            &engine.get_action(&caller, &id)?,
        )))
    }

    async fn list_actions(
        &self,
        req: Request<pb::ListActionsRequest>,
    ) -> Result<Response<pb::ListActionsResponse>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        checked_id("server_id", &r.server_id)?;
        let before = convert::action_page_token(&r.page_token)?;
        let (page, next) = engine.list_actions(
            &caller,
            &r.server_id,
            before,
            convert::page_size(r.page_size),
        )?;
        Ok(Response::new(pb::ListActionsResponse {
            actions: page.iter().map(convert::action).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    type WatchActionStream = Stream_<pb::Action>;

    async fn watch_action(
        &self,
        req: Request<pb::WatchActionRequest>,
    ) -> Result<Response<Self::WatchActionStream>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let id = req.into_inner().id;
        checked_id("id", &id)?;
        // Subscribe before the first read so no change falls in between.
        let mut updates = engine.action_updates();
        let mut stop = engine.stopping();
        let first = engine.get_action(&caller, &id)?;
        let engine = engine.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(convert::action(&last))).await.is_err() {
                return;
            }
            while !last.state.is_terminal() {
                let update = tokio::select! {
                    u = updates.recv() => Some(u),
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(update) = update else {
                    // The agent is stopping. An action that ended is
                    // reported as such; one that has not is not "done":
                    // the stream says so and how to follow it on.
                    if let Ok(Some(now)) = engine.load_action(&id) {
                        if now != last {
                            if tx.send(Ok(convert::action(&now))).await.is_err() {
                                return;
                            }
                            last = now;
                        }
                    }
                    if !last.state.is_terminal() {
                        let end = ApiError::ActionWatchStopped {
                            action_id: id,
                            state: last.state,
                        };
                        let _ = tx.send(Err(end.into())).await;
                    }
                    return;
                };
                match update {
                    Ok(changed) if changed != id => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                // A stream ends OK only once its action has ended: a read
                // that fails is tried again, then reported, never taken for
                // the end.
                let mut tries = 0;
                let now = loop {
                    match engine.load_action(&id) {
                        Ok(Some(now)) => break now,
                        Ok(None) => {
                            let gone = Status::not_found(format!(
                                "action {id} is no longer recorded; it was {}",
                                last.state
                            ));
                            let _ = tx.send(Err(gone)).await;
                            return;
                        }
                        Err(e) if tries < 20 => {
                            warn!(action_id = %id, error = %e, "WatchAction: reading the action failed; trying again");
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                };
                if now != last {
                    if tx.send(Ok(convert::action(&now))).await.is_err() {
                        return;
                    }
                    last = now;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_power_state(
        &self,
        req: Request<pb::GetPowerStateRequest>,
    ) -> Result<Response<pb::PowerStatus>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        checked_id("server_id", &r.server_id)?;
        let reading = engine.power_state(&caller, &r.server_id, r.refresh).await?;
        Ok(Response::new(convert::power_status(&reading)))
    }

    async fn get_server_health(
        &self,
        req: Request<pb::GetServerHealthRequest>,
    ) -> Result<Response<pb::ServerHealth>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        checked_id("server_id", &r.server_id)?;
        let (health, at) = engine.server_health(&caller, &r.server_id).await?;
        Ok(Response::new(convert::health(&r.server_id, &health, at)))
    }

    async fn list_bmc_events(
        &self,
        req: Request<pb::ListBmcEventsRequest>,
    ) -> Result<Response<pb::ListBmcEventsResponse>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        checked_id("server_id", &r.server_id)?;
        let limit = convert::bmc_event_limit(r.limit)?;
        let since = r.since.map(|t| t.seconds);
        let events = engine
            .bmc_events(&caller, &r.server_id, since, limit)
            .await?;
        Ok(Response::new(pb::ListBmcEventsResponse {
            server_id: r.server_id,
            events: events.iter().map(convert::bmc_event).collect(),
        }))
    }

    async fn get_power_states(
        &self,
        req: Request<pb::GetPowerStatesRequest>,
    ) -> Result<Response<pb::GetPowerStatesResponse>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        if r.server_ids.len() > super::limits::MAX_SWEEP {
            return Err(Status::invalid_argument(format!(
                "server_ids: at most {} per call, not {}",
                super::limits::MAX_SWEEP,
                r.server_ids.len()
            )));
        }
        for id in &r.server_ids {
            checked_id("server_ids", id)?;
        }
        let ids = (!r.server_ids.is_empty()).then_some(r.server_ids);
        let results = engine.power_states(&caller, ids, r.refresh).await;
        Ok(Response::new(pb::GetPowerStatesResponse {
            results: results
                .into_iter()
                .map(|(server_id, reading)| match reading {
                    Ok(reading) => pb::PowerStateResult {
                        server_id,
                        status: Some(convert::power_status(&reading)),
                        error_code: 0,
                        error: String::new(),
                    },
                    Err(e) => {
                        let st = Status::from(e);
                        pb::PowerStateResult {
                            server_id,
                            status: None,
                            error_code: st.code() as i32,
                            error: st.message().to_string(),
                        }
                    }
                })
                .collect(),
        }))
    }

    type WatchPowerStateStream = Stream_<pb::ServerEvent>;

    async fn watch_power_state(
        &self,
        req: Request<pb::WatchPowerStateRequest>,
    ) -> Result<Response<Self::WatchPowerStateStream>, Status> {
        let (caller, engine) = self.begin(&req)?;
        let r = req.into_inner();
        for id in &r.server_ids {
            checked_id("server_ids", id)?;
        }
        for id in &r.server_ids {
            // An unknown or forbidden id is an error now, not a silent empty stream.
            engine.get_server(&caller, id)?;
        }
        let only: HashSet<String> = r.server_ids.into_iter().collect();
        let live = engine.subscribe_events();
        let stop = engine.stopping();
        let (lo, hi) = engine.event_bounds().map_err(Status::from)?;
        let cursor = match r.after_seq {
            0 => hi,
            s if s > hi => {
                return Err(ApiError::CursorAhead {
                    cursor: s,
                    newest: hi,
                }
                .into())
            }
            s if s + 1 < lo => {
                return Err(ApiError::CursorExpired {
                    cursor: s,
                    oldest: lo,
                    newest: hi,
                }
                .into())
            }
            s => s,
        };
        let (tx, rx) = mpsc::channel(256);
        let engine = engine.clone();
        tokio::spawn(async move {
            let filter = |ev: &ServerEvent| {
                (only.is_empty() || only.contains(&ev.server_id))
                    && engine.may_read(&caller, &ev.server_id)
            };
            if let Err(e) = follow(&engine, live, stop, cursor, &filter, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Retained events after `cursor`, oldest first, as long as they follow it
/// without a gap; `cursor` moves to the last one. The second value is set
/// when the next event after them is no longer retained (pruned while this
/// watcher was behind): the stream must end there, never skip.
fn catch_up(
    engine: &Engine,
    cursor: &mut u64,
) -> Result<(Vec<ServerEvent>, Option<ApiError>), Status> {
    let mut out = Vec::new();
    loop {
        let batch = engine.events_after(*cursor, 500)?;
        let n = batch.len();
        for ev in batch {
            if ev.seq != *cursor + 1 {
                let (oldest, newest) = engine.event_bounds()?;
                let gap = ApiError::WatchFellBehind {
                    last: *cursor,
                    oldest,
                    newest,
                };
                return Ok((out, Some(gap)));
            }
            *cursor = ev.seq;
            out.push(ev);
        }
        if n < 500 {
            return Ok((out, None));
        }
    }
}

/// Sends retained events after `cursor`, then live ones, in order and without
/// gaps: when the live channel skips ahead or lags, the store fills the gap;
/// when the store no longer has it, the stream ends with OUT_OF_RANGE.
async fn follow(
    engine: &Engine,
    mut live: broadcast::Receiver<ServerEvent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut cursor: u64,
    filter: &(dyn Fn(&ServerEvent) -> bool + Sync),
    tx: &mpsc::Sender<Result<pb::ServerEvent, Status>>,
) -> Result<(), Status> {
    let send_all = |evs: Vec<ServerEvent>| async move {
        for ev in evs.iter().filter(|e| filter(e)) {
            if tx.send(Ok(convert::event(ev))).await.is_err() {
                return false;
            }
        }
        true
    };
    let (evs, gap) = catch_up(engine, &mut cursor)?;
    if !send_all(evs).await {
        return Ok(());
    }
    if let Some(gap) = gap {
        return Err(gap.into());
    }
    loop {
        let next = tokio::select! {
            n = live.recv() => n,
            _ = stop.wait_for(|s| *s) => {
                return Err(ApiError::WatchStopped { last: cursor }.into());
            }
        };
        let (evs, gap) = match next {
            Ok(ev) if ev.seq <= cursor => continue,
            Ok(ev) if ev.seq == cursor + 1 => {
                cursor = ev.seq;
                (vec![ev], None)
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                debug!(cursor, "watcher fell behind; reading from the store");
                catch_up(engine, &mut cursor)?
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if !send_all(evs).await {
            return Ok(());
        }
        if let Some(gap) = gap {
            debug!(
                cursor,
                "watcher fell behind the retained events; ending its stream"
            );
            return Err(gap.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::fake::{FakeBmcFactory, FakeSettings};
    use crate::bmc::{Protocol, Secret};
    use crate::engine::{EngineSettings, EnrollRequest};
    use crate::model::{BmcRecord, Credential};
    use crate::store::Store;

    /// An engine with one server, "s1", and `events` lock changes on it.
    async fn engine_with_events(retain: u64, events: usize) -> (Arc<Engine>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let settings = EngineSettings {
            timeouts: Default::default(),
            sync: Default::default(),
            event_retain: retain,
            actions: Default::default(),
            credentials_dir: dir.path().into(),
            secrets_dir: dir.path().join("secrets"),
            policy: Default::default(),
            metrics: crate::metrics::Metrics::new(),
        };
        let fakes = Arc::new(FakeBmcFactory::new(FakeSettings::default()).unwrap());
        let engine = Engine::start(Store::open_in_memory().unwrap(), fakes, settings, &[]).unwrap();
        let admin = Caller::agent();
        engine
            .enroll(
                &admin,
                EnrollRequest {
                    id: "s1".into(),
                    project_id: "p1".into(),
                    bmc: BmcRecord {
                        protocol: Protocol::Ipmi,
                        address: "192.0.2.1".into(),
                        port: 623,
                        username: "u".into(),
                        credential: Credential::Inline(Secret::new("pw")),
                        options: Default::default(),
                    },
                    skip_verify: true,
                },
            )
            .await
            .unwrap();
        for i in 1..events {
            let req = if i % 2 == 1 {
                ActionRequest::Lock
            } else {
                ActionRequest::Unlock
            };
            engine.submit(&admin, "s1", req, None).await.unwrap();
        }
        (engine, dir)
    }

    #[tokio::test]
    async fn catch_up_stops_at_a_gap_instead_of_skipping_it() {
        let (engine, _dir) = engine_with_events(60, 600).await;
        let (lo, hi) = engine.event_bounds().unwrap();
        assert_eq!(hi, 600);
        assert!(lo > 2, "pruned: oldest {lo}");
        // From a cursor whose successor was pruned: nothing, and the gap.
        let mut cursor = 1;
        let (evs, gap) = catch_up(&engine, &mut cursor).unwrap();
        assert!(evs.is_empty());
        assert_eq!(cursor, 1);
        assert_eq!(
            gap,
            Some(ApiError::WatchFellBehind {
                last: 1,
                oldest: lo,
                newest: hi
            })
        );
        // From the oldest retained: all of them, in order, and no gap.
        let mut cursor = lo - 1;
        let (evs, gap) = catch_up(&engine, &mut cursor).unwrap();
        assert_eq!(gap, None);
        assert_eq!(cursor, hi);
        let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (lo..=hi).collect::<Vec<_>>());
    }
}
