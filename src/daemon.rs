//! Wires the pieces into a running daemon: listener first (health says
//! NOT_SERVING), then the store and the engine (recovery), then READY.
//! On SIGTERM: STOPPING, refuse new actions, give in-flight ones the grace
//! period, close BMC sessions.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

use crate::api::auth::Authenticator;
use crate::api::service::EngineSlot;
use crate::api::Service;
use crate::bmc::fake::FakeBmcFactory;
use crate::bmc::{BmcFactory, RealBmcFactory};
use crate::config::Config;
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use crate::proto::rack_agent_server::RackAgentServer;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the state database")]
    Store(#[from] StoreError),
    #[error("cannot start the engine")]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read TLS file {path}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot open the fake BMC journal")]
    FakeJournal(#[source] std::io::Error),
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
    #[error("startup task failed: {0}")]
    Join(String),
}

/// What the daemon tells the service manager (systemd's notify protocol).
/// Without `NOTIFY_SOCKET` every call is a no-op.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// Runs until `shutdown` resolves, then stops gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    tokio::pin!(shutdown);
    let policy = match &config.policy_file {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let tls = match &config.api.tls {
        Some(files) => {
            let read = |p: &PathBuf| {
                let path = config.credential_path(p);
                std::fs::read(&path).map_err(|source| DaemonError::TlsFile { path, source })
            };
            Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(
                        read(&files.cert_file)?,
                        read(&files.key_file)?,
                    ))
                    .client_ca_root(Certificate::from_pem(read(&files.client_ca_file)?)),
            )
        }
        None => {
            warn!(listen = %config.listen, "insecure_plaintext: no TLS, callers named by request metadata (loopback only)");
            None
        }
    };
    let auth = if tls.is_some() {
        Authenticator::Certificates
    } else {
        Authenticator::Metadata
    };

    // 1. The listener, with health NOT_SERVING and the API answering UNAVAILABLE.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: config.listen,
        source,
    })?;
    let slot: EngineSlot = Arc::new(OnceLock::new());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<RackAgentServer<Service>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DaemonError::Join(format!("reflection: {e}")))?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let (stop_server_tx, mut stop_server_rx) = watch::channel(false);
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(crate::api::limits::rack_agent(Service::new(
            slot.clone(),
            auth,
        )));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        // Our own listener, so tonic's `tcp_nodelay` does not apply: set it per
        // connection, or Nagle and delayed ACKs stall every burst of calls
        // (~40 ms each, measured).
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        async move {
            let _ = stop_server_rx.wait_for(|s| *s).await;
        },
    ));
    info!(%addr, tls = matches!(auth, Authenticator::Certificates), "listening");

    // 2. The store and the engine (crash recovery runs here).
    let state_dir = config.state_dir();
    let factory: Arc<dyn BmcFactory> = match config.fake() {
        Some(fake) => {
            warn!("[fake_bmc] is enabled: every BMC is an in-memory simulator; no real server is touched (tests and demos only)");
            let mut fake = fake.clone();
            fake.journal = Some(fake.journal_path(&state_dir));
            Arc::new(FakeBmcFactory::new(fake).map_err(DaemonError::FakeJournal)?)
        }
        None => Arc::new(RealBmcFactory),
    };
    let metrics = Metrics::new();
    let settings = EngineSettings {
        timeouts: config.timeouts.clone(),
        sync: config.sync.clone(),
        event_retain: config.events.retain,
        actions: config.actions.clone(),
        credentials_dir: config.credentials_dir(),
        secrets_dir: state_dir.join("secrets"),
        policy,
        metrics,
    };
    let inventory = config.servers.clone();
    let dir = state_dir.clone();
    let starting = tokio::task::spawn_blocking(move || -> Result<Arc<Engine>, DaemonError> {
        let store = Store::open(&dir)?;
        Ok(Engine::start(store, factory, settings, &inventory)?)
    });
    // Asked to stop while still starting (waiting for the database, say):
    // stop now, cleanly; nothing was accepted yet.
    let engine = tokio::select! {
        e = starting => e.map_err(|e| DaemonError::Join(e.to_string()))??,
        _ = &mut shutdown => {
            notify(&[sd_notify::NotifyState::Stopping]);
            info!("asked to stop while starting; stopped before ready");
            let _ = stop_server_tx.send(true);
            return Ok(());
        }
    };
    let _ = slot.set(engine.clone());

    // 3. Metrics, sync loop, then ready.
    if let Some(maddr) = config.metrics.listen {
        let l = TcpListener::bind(maddr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: maddr,
                source,
            })?;
        let bound = l.local_addr().unwrap_or(maddr);
        let e = engine.clone();
        tokio::spawn(crate::metrics::serve(
            l,
            Arc::new(move || e.render_metrics()),
        ));
        info!(addr = %bound, "metrics at /metrics");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let sync = tokio::spawn(crate::sync::run(
        engine.clone(),
        config.sync.clone(),
        stop_rx.clone(),
    ));
    health.set_serving::<RackAgentServer<Service>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status_line(&engine)),
    ]);
    info!(state_dir = %state_dir.display(), servers = engine.server_ids().len(), "ready");
    let keeper = tokio::spawn(keep_alive(engine.clone(), config.clone(), stop_rx));

    // 4. Until asked to stop (or the server fails).
    tokio::pin!(server);
    let served = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut server => Some(r),
    };
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing in-flight actions"),
    ]);
    info!(
        in_flight = engine.in_flight(),
        "stopping: refusing new actions; in-flight actions get the grace period"
    );
    health.set_not_serving::<RackAgentServer<Service>>().await;
    engine.begin_shutdown();
    let _ = stop_tx.send(true);
    let _ = stop_server_tx.send(true);
    let _ = sync.await;
    let _ = keeper.await;
    engine.shutdown(config.timeouts.shutdown_grace).await;
    let served = match served {
        Some(r) => r,
        None => match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(r) => r,
            Err(_) => {
                warn!("gRPC connections still open after the grace period; closing them");
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    info!("stopped");
    served
        .map_err(|e| DaemonError::Join(e.to_string()))?
        .map_err(DaemonError::from)
}

fn status_line(engine: &Engine) -> String {
    format!(
        "{} servers, {} actions in flight, {} BMCs unreachable",
        engine.server_ids().len(),
        engine.in_flight(),
        engine.unreachable()
    )
}

/// Watchdog pings (only while the engine proves alive) and STATUS= lines.
async fn keep_alive(engine: Arc<Engine>, config: Config, mut stop: watch::Receiver<bool>) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = match watchdog {
        Some(w) => (w / 2).min(Duration::from_secs(5)),
        None => Duration::from_secs(5),
    };
    // The sync loop passes every interval (+ jitter); a poll can take up to
    // the BMC command timeout.
    let limit = 2 * (config.sync.interval + config.sync.jitter) + config.timeouts.bmc_command;
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let status = status_line(&engine);
        if status != last_status {
            notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
        if watchdog.is_some() {
            match engine.heartbeat(limit).await {
                Ok(()) => notify(&[sd_notify::NotifyState::Watchdog]),
                Err(why) => warn!(reason = %why, "withholding the watchdog ping"),
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives while
/// the daemon is still starting (or right after READY=1) is kept, and the
/// daemon stops gracefully as soon as it can, instead of dying by the
/// signal's default action. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot listen for SIGTERM/SIGINT");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
