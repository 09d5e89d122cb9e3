//! Wires the pieces into a running daemon: store, BMC factory, engine, sync
//! loop and gRPC server, with a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::api::Service;
use crate::bmc::fake::FakeBmcFactory;
use crate::bmc::{BmcFactory, RealBmcFactory};
use crate::config::Config;
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::policy::Policy;
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
    #[error("listen = {0}: the gRPC listener has no TLS yet, so it may only listen on loopback (127.0.0.1 or ::1)")]
    PlaintextOffLoopback(SocketAddr),
    #[error("cannot open the fake BMC journal")]
    FakeJournal(#[source] std::io::Error),
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs until `shutdown` resolves, then stops gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    if !config.listen.ip().is_loopback() {
        return Err(DaemonError::PlaintextOffLoopback(config.listen));
    }
    let state_dir = config.state_dir();
    let store = Store::open(&state_dir)?;
    let factory: Arc<dyn BmcFactory> = match config.fake() {
        Some(fake) => {
            warn!("[fake_bmc] is enabled: every BMC is an in-memory simulator; no real server is touched (tests and demos only)");
            Arc::new(FakeBmcFactory::new(fake.clone()).map_err(DaemonError::FakeJournal)?)
        }
        None => Arc::new(RealBmcFactory),
    };
    let settings = EngineSettings {
        timeouts: config.timeouts.clone(),
        sync: config.sync.clone(),
        event_retain: config.events.retain,
        credentials_dir: config.credentials_dir(),
        policy: Policy::default(),
    };
    let engine = Engine::start(store, factory, settings, &config.servers)?;
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let sync = tokio::spawn(crate::sync::run(
        engine.clone(),
        config.sync.clone(),
        stop_rx,
    ));
    info!(%addr, state_dir = %state_dir.display(), servers = engine.server_ids().len(), "listening");
    let service = RackAgentServer::new(Service::new(engine.clone()));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            shutdown.await;
            info!("stopping: no new requests; in-flight actions get the grace period");
        })
        .await;
    let _ = stop_tx.send(true);
    let _ = sync.await;
    engine.shutdown(config.timeouts.shutdown_grace).await;
    info!("stopped");
    served.map_err(DaemonError::from)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
