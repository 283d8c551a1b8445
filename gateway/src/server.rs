//! Builds the gateway from a validated config and serves it: HTTP, gRPC and admin listeners under
//! one cancellation token and one tracked task set, with a bounded graceful shutdown. Every
//! listener serves through the stack in [`stack`], accepting through [`listen`].

pub mod listen;
pub mod stack;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::access::Port;
use crate::api::admin::{self, AdminState};
use crate::api::grpc::GrpcService;
use crate::api::http::{self, HttpState};
use crate::config::Config;
use crate::control::{ConfigSource, Control};
use crate::core::{BuildError, Gateway, Snapshot, TableSet};
use crate::monitor::service::Monitors;
use crate::runtime::{RuntimeError, library};
pub use tls::{Tls, TlsError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot bind {what} address {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Other(String),
}

/// A started gateway. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub control: Arc<Control>,
    pub rollouts: Arc<crate::rollout::Rollouts>,
    token: CancellationToken,
    /// `server.drain_delay_ms`.
    drain_delay: Duration,
    /// The listeners (HTTP, gRPC, admin).
    servers: TaskTracker,
    /// Everything else: batchers, shadow work, config watchers.
    tasks: TaskTracker,
}

/// Loads ONNX Runtime and every model, then binds the three listeners and starts serving.
/// Nothing is bound unless every model loaded. With a `source`, the config file is watched
/// (`server.watch_config`) and reloaded on SIGHUP.
pub async fn start(config: Config, source: Option<ConfigSource>) -> Result<RunningServer, StartError> {
    let metrics = crate::metrics::install().map_err(|e| StartError::Other(e.to_string()))?;
    // TLS first: a certificate that does not load stops the start before any model is loaded
    let tls = config.server.tls.as_ref().map(Tls::new).transpose()?;
    crate::webhook::configure(config.server.webhook_ca_file.as_deref())
        .map_err(|e| StartError::Other(format!("server.webhook_ca_file: {e}")))?;
    let lib = config.runtime.onnxruntime_lib.clone();
    library::environment(lib.as_deref())?;
    // MLflow aliases resolved before anything is written to a config store
    let config = crate::registry::mlflow::resolve(config, None).await.map_err(|e| StartError::Other(e.to_string()))?;
    // with a config store, models and endpoints come from its latest version
    let (config, store) = match config.storage.config_store.clone() {
        Some(location) => {
            let (c, store, versions) =
                crate::control::store::open_at_start(&location, config).await.map_err(StartError::Other)?;
            (c, Some((store, versions)))
        }
        None => (config, None),
    };
    let following = store.is_some();
    // MLflow aliases resolved; models in object storage or an MLflow registry copied into the
    // local cache and checked before they load
    let config = crate::registry::mlflow::prepare(config, None).await.map_err(|e| StartError::Other(e.to_string()))?;
    let lease = store.as_ref().map(|(s, _)| Arc::new(crate::control::lease::Lease::new(s, config.server.leader_lease)));
    let leadership = lease.as_ref().map_or_else(crate::control::lease::Leadership::alone, |l| l.leadership.clone());
    // every table commit says which replica wrote it
    sluice_tables::set_writer_name(&leadership.id);
    let members = store.as_ref().map(|(s, _)| {
        Arc::new(crate::control::members::Members::new(
            s,
            leadership.id.clone(),
            config.server.leader_lease,
            config.server.fleet_ready_timeout,
        ))
    });
    let fleet = store.as_ref().map(|(s, _)| {
        Arc::new(crate::control::fleet::Fleet::new(s, leadership.id.clone(), config.server.fleet_report))
    });
    let shared_rollouts = store.as_ref().map(|(s, _)| {
        let (objects, prefix) = s.parts();
        crate::rollout::shared::SharedStates::new(objects, prefix)
    });
    let tasks = TaskTracker::new();
    let cfg = config.clone();
    let t = tasks.clone();
    let tables = Arc::new(TableSet::new(crate::api::error::status_code));
    let ts = tables.clone();
    let snapshot = tokio::task::spawn_blocking(move || Snapshot::build(&cfg, None, &t, &ts))
        .await
        .map_err(|e| StartError::Other(format!("model loading panicked: {e}")))??;
    crate::monitor::service::check(&config, &snapshot.table_schemas())
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    let gateway = Arc::new(Gateway::new(snapshot, tables));
    // Monitors first: the control plane restarts them on config changes.
    let monitors = Monitors::start(&config, leadership.clone()).map_err(|e| StartError::Other(e.to_string()))?;
    let control = Arc::new(Control::new(
        gateway.clone(),
        config.clone(),
        source.clone(),
        tasks.clone(),
        monitors.clone(),
        store,
        leadership,
    ));
    // fleet readiness from the first change on (a rollout moved into the store is one)
    if let Some(m) = &members {
        m.serving(control.store_version().await).await;
        control.set_members(m.clone());
    }
    // Running rollouts put their traffic back before anything is served.
    let clock = if config.server.test_clock { crate::clock::Clock::test() } else { crate::clock::Clock::system() };
    let rollouts = crate::rollout::Rollouts::start(
        control.clone(),
        clock,
        config.server.data_dir.clone(),
        tasks.clone(),
        shared_rollouts,
    )
    .await;

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
    };
    let http_listener = bind("http", config.server.http_addr).await?;
    let grpc_listener = bind("grpc", config.server.grpc_addr).await?;
    let admin_listener = bind("admin", config.server.admin_addr).await?;
    let local = |l: &TcpListener| l.local_addr().map_err(|e| StartError::Other(e.to_string()));
    let (http_addr, grpc_addr, admin_addr) = (local(&http_listener)?, local(&grpc_listener)?, local(&admin_listener)?);

    let token = CancellationToken::new();
    let servers = TaskTracker::new();
    tasks.spawn(rollouts.clone().run(token.clone()));
    if config.runtime.registry.is_some() {
        tasks.spawn(crate::registry::watch::run(control.clone(), rollouts.clone(), token.clone()));
    }
    let limits = config.server.limits;
    listen::raise_descriptor_limit();
    // One pool of slots for inference in progress, over HTTP and gRPC alike.
    let admission = stack::Admission::new(&limits, config.server.max_body_bytes);
    // a burst of one second's labels, and at least one full post
    let labels_rate = crate::api::rate::RateLimiter::new(
        config.server.labels_per_second,
        config.server.labels_per_second.max(crate::inference_log::labels::MAX_LABELS_PER_POST as u64),
    );
    let state = HttpState {
        gateway: gateway.clone(),
        max_body_bytes: config.server.max_body_bytes,
        metrics,
        labels_rate: Arc::new(labels_rate),
    };
    let guard = |port| stack::Guard { control: control.clone(), port };
    let serving = crate::api::serving_endpoints::ServingState::new(
        control.clone(),
        state.metrics.clone(),
        config.server.max_body_bytes,
        http_addr.ip().is_loopback(),
    );
    let http_router = stack::http_stack(
        http::router(state.clone()).merge(crate::api::serving_endpoints::router(serving)),
        &limits,
        config.server.max_body_bytes,
        Some(admission.clone()),
        guard(Port::Inference),
    );
    let http_acceptor = listen::Acceptor::new(http_listener, "http", limits.max_connections, true);
    servers.spawn(listen::serve_http(
        http_acceptor,
        http_router,
        limits,
        token.clone(),
        tls.as_ref().map(|t| t.http.clone()),
    ));
    let admin = AdminState {
        control: control.clone(),
        rollouts: rollouts.clone(),
        monitors,
        loopback: admin_listener.local_addr().is_ok_and(|a| a.ip().is_loopback()),
        max_body_bytes: config.server.max_body_bytes,
        fleet: fleet.clone(),
    };
    let admin_router =
        stack::http_stack(admin::router(state, admin), &limits, config.server.max_body_bytes, None, guard(Port::Admin));
    let admin_acceptor = listen::Acceptor::new(admin_listener, "admin", limits.max_connections, true);
    servers.spawn(listen::serve_http(
        admin_acceptor,
        admin_router,
        limits,
        token.clone(),
        tls.as_ref().map(|t| t.http.clone()),
    ));
    if let Some(tls) = &tls {
        tasks.spawn(tls.clone().watch(config.server.watch_interval, token.clone()));
    }
    let grpc = stack::GrpcAdmit::new(
        GrpcService::server(gateway.clone(), config.server.max_body_bytes),
        admission,
        control.clone(),
    );
    let grpc_acceptor = listen::Acceptor::new(grpc_listener, "grpc", limits.max_connections, false);
    let incoming = listen::incoming(
        grpc_acceptor,
        tls.as_ref().map(|t| t.grpc.clone()),
        limits.header_read_timeout,
        token.clone(),
    );
    let t = token.clone();
    servers.spawn(async move {
        if let Err(e) = stack::grpc_builder(&limits)
            .add_service(grpc)
            .serve_with_incoming_shutdown(incoming, t.cancelled_owned())
            .await
        {
            tracing::error!("grpc server: {e}");
        }
    });
    if following {
        tasks.spawn(control.clone().follow_store(config.server.watch_interval, token.clone()));
    }
    if let Some(m) = &members {
        tasks.spawn(m.clone().run(token.clone()));
    }
    if let Some(lease) = lease {
        tasks.spawn(lease.run(token.clone()));
    }
    if let Some(f) = &fleet {
        tasks.spawn(f.clone().run(control.clone(), token.clone()));
    }
    if source.is_some() {
        // with a config store the file only started the first replica: edits of it reach the
        // store on SIGHUP or `POST /admin/reload`, not by watching
        if config.server.watch_config && !following {
            tasks.spawn(control.clone().watch(config.server.watch_interval, token.clone()));
        }
        tasks.spawn(reload_on_sighup(control.clone(), token.clone()));
    }
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, "sluice serving");
    let drain_delay = config.server.drain_delay;
    Ok(RunningServer {
        http_addr,
        grpc_addr,
        admin_addr,
        gateway,
        control,
        rollouts,
        token,
        drain_delay,
        servers,
        tasks,
    })
}

impl RunningServer {
    /// Writes `{"http": port, "grpc": port, "admin": port}` to `path` (atomically).
    pub fn write_ports_file(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_json::json!({
            "http": self.http_addr.port(),
            "grpc": self.grpc_addr.port(),
            "admin": self.admin_addr.port(),
        });
        crate::durable::write_atomic(path, body.to_string().as_bytes())
    }

    /// Reports not ready, waits `server.drain_delay_ms` still accepting, then stops accepting,
    /// lets in-flight requests and shadow work finish, writes out every queued inference-table
    /// row, and returns: all within `deadline` after the drain delay. The last quarter of it (at least
    /// a second, when it allows) is kept for the table flush, so a slow drain cannot eat the
    /// time the rows need.
    pub async fn shutdown(self, deadline: Duration) {
        // not ready at once; with a drain delay, go on accepting meanwhile, so that a load
        // balancer's health check takes the replica out before its listeners close
        if !self.drain_delay.is_zero() {
            self.gateway.set_draining();
            tracing::info!(delay = ?self.drain_delay, "not ready; still serving during the drain delay");
            tokio::time::sleep(self.drain_delay).await;
        }
        self.gateway.set_ready(false);
        let start = tokio::time::Instant::now();
        let until = start + deadline;
        let drain_until = until - (deadline / 4).max(Duration::from_secs(1)).min(deadline);
        self.token.cancel();
        // Monitors stop first: an interrupted refresh is redone from its persisted state.
        let monitors = self.control.monitors().clone();
        let stopped = tokio::task::spawn_blocking(move || monitors.stop());
        match tokio::time::timeout_at(drain_until, stopped).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("monitors did not stop cleanly"),
            Err(_) => tracing::warn!("monitors still stopping at the shutdown deadline; going on without them"),
        }
        // Listeners stop accepting; requests in flight finish (late ones get a logged 503).
        self.servers.close();
        if tokio::time::timeout_at(drain_until, self.servers.wait()).await.is_err() {
            tracing::warn!("shutdown deadline of {deadline:?} passed with requests still in flight");
        }
        // Dropping the models' and shadow queues' senders lets their tasks drain and end.
        self.gateway.swap(Snapshot::empty());
        drop(self.rollouts);
        drop(self.control);
        self.tasks.close();
        if tokio::time::timeout_at(drain_until, self.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown deadline of {deadline:?} passed with shadow work still running");
        }
        // Every answer given is now queued for its table: write it all out.
        let tables = self.gateway.tables().clone();
        match tokio::time::timeout_at(until, tokio::task::spawn_blocking(move || tables.close_all())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("inference table writers did not close cleanly"),
            Err(_) => tracing::error!(
                "inference tables were still being written at the shutdown deadline of {deadline:?}; \
                 rows not yet written are lost (raise --shutdown-grace-secs)"
            ),
        }
    }
}

async fn reload_on_sighup(control: Arc<Control>, token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload instead");
        return;
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                match control.reload_from_file().await {
                    Ok(changed) => tracing::info!(?changed, "SIGHUP: config reloaded"),
                    Err(e) => tracing::error!("SIGHUP: config not applied; still serving the previous config: {e}"),
                }
            }
        }
    }
}
