//! The harness daemon.
//!
//! `harnessd` keeps a project's services up between CLI calls. It owns a
//! state directory (one daemon per directory, see [`lock`]), listens on
//! loopback for clients speaking the `harness-protocol` over mutual TLS
//! (the `server` module), and serves project operations through a [`Backend`].
//! The real backend ([`ManagerBackend`]) runs each project's services as
//! local processes, Docker containers and processes on nodes over ssh
//! ([`targets`]).
//! It exits on SIGTERM, SIGINT or a `daemon_stop` request, leaving the
//! services it started running.

pub mod activity;
pub mod backend;
pub mod events;
pub mod exec;
pub mod lock;
pub mod logs;
pub mod metrics;
pub mod projects;
pub mod recovery;
mod server;
pub mod targets;
mod turns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_listener::Event;
use harness_protocol::{
    CertPaths, DaemonAddress, DaemonInfo, PROTOCOL_VERSION, StateDir, StateDirError, TlsError,
    write_atomic,
};

pub use backend::{Backend, BackendResult, EmptyBackend, ItemSink};
pub use lock::{LockError, StateLock};
pub use metrics::Metrics;
pub use projects::ManagerBackend;

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The state directory (already resolved).
    pub state_dir: PathBuf,
    /// Where to listen; by default a free port on 127.0.0.1.
    pub listen: Option<SocketAddr>,
    /// Where to serve Prometheus metrics (`/metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the state directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The state directory is unusable.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// Certificates could not be made or loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not be opened.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// A running daemon, shared by its connections.
pub struct Daemon {
    state: StateDir,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
    started_at_ms: u64,
    open_connections: AtomicU64,
    connection_closed: Event,
    shutdown: AtomicBool,
    shutdown_event: Event,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state", &self.state)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Daemon {
    /// Asks every part of the daemon to stop.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.shutdown_event.notify(usize::MAX);
    }

    /// Resolves once shutdown was requested.
    pub async fn shutdown_requested(&self) {
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let listener = self.shutdown_event.listen();
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }

    /// What [`harness_protocol::Method::DaemonStatus`] answers.
    pub fn info(&self) -> DaemonInfo {
        DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
            address: self.address.to_string(),
            state_dir: self.state.root().to_owned(),
            started_at_ms: self.started_at_ms,
            projects: self.backend.projects(),
            connections: self.open_connections.load(Ordering::SeqCst),
            metrics_address: self.metrics_address.map(|a| a.to_string()),
            warnings: self.backend.warnings(),
            stopping: self.backend.stopping(),
        }
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    async fn wait_for_connections_to_close(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            if self.open_connections.load(Ordering::SeqCst) == 0 {
                return;
            }
            let listener = self.connection_closed.listen();
            if self.open_connections.load(Ordering::SeqCst) == 0 {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            futures_lite::future::or(listener, async {
                async_io::Timer::after(left).await;
            })
            .await;
        }
    }
}

/// Runs the daemon until it is told to stop: takes the lock, makes the
/// certificates if needed, listens, writes the address file, serves.
/// `make_backend` is called once the state directory is locked (it
/// re-adopts what a previous daemon left running).
pub async fn run<F, Fut>(options: DaemonOptions, make_backend: F) -> Result<(), DaemonError>
where
    F: FnOnce(StateDir) -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    let state = StateDir::new(&options.state_dir);
    state.create()?;
    let lock = StateLock::acquire_dir(state.root(), &state.lock_file(), &state.address_file())?;
    let (soft, hard) = raise_open_file_limit();
    tracing::info!(soft, hard, "open-file limit (RLIMIT_NOFILE)");
    let tls_state = state.clone();
    let server_config = blocking::unblock(move || -> Result<_, TlsError> {
        if harness_protocol::ensure_certificates(&tls_state)? {
            tracing::info!("made the CA, server and client certificates");
        }
        harness_protocol::tls::server_config(&CertPaths::of(&tls_state))
    })
    .await?;

    let listen = options
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = async_net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            address: listen,
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            address: listen,
            source,
        })?;
    let backend = make_backend(state.clone()).await;
    let mut metrics = Metrics::new();
    backend.register_metrics(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let metrics_listener = match options.metrics {
        Some(a) => Some(
            metrics::bind(a)
                .await
                .map_err(|source| DaemonError::Listen { address: a, source })?,
        ),
        None => None,
    };
    let metrics_address = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let daemon = Arc::new(Daemon {
        state: state.clone(),
        backend,
        metrics: metrics.clone(),
        address,
        metrics_address,
        started_at_ms: now_ms(),
        open_connections: AtomicU64::new(0),
        connection_closed: Event::new(),
        shutdown: AtomicBool::new(false),
        shutdown_event: Event::new(),
    });

    let signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(DaemonError::Signals)?;
    let signal_daemon = daemon.clone();
    let signal_task = smol::spawn(async move {
        let mut signals = signals;
        if let Some(Ok(sig)) = futures_lite::StreamExt::next(&mut signals).await {
            tracing::info!(signal = ?sig, "stopping on signal");
            signal_daemon.request_shutdown();
        }
    });
    let metrics_task = metrics_listener.map(|l| smol::spawn(metrics::serve(l, metrics.clone())));

    // Clients find the daemon by this file; it is written last, once the
    // daemon is ready to answer.
    let record = DaemonAddress {
        address,
        pid: std::process::id(),
        protocol: PROTOCOL_VERSION,
    };
    let json = serde_json::to_vec_pretty(&record).expect("DaemonAddress serializes");
    write_atomic(&state.address_file(), &json, 0o644)?;
    tracing::info!(%address, pid = record.pid, state_dir = %state.root().display(), "harnessd ready");

    let acceptor = futures_rustls::TlsAcceptor::from(server_config);
    server::accept_loop(daemon.clone(), listener, acceptor).await;

    // Shutting down: no new connections; give open ones a moment to flush.
    daemon
        .wait_for_connections_to_close(Duration::from_secs(3))
        .await;
    if let Err(e) = daemon.backend.persist().await {
        tracing::warn!(error = %e, "persisting state on shutdown failed");
    }
    // Remove the address file only if it is still ours.
    if state
        .read_address()
        .map(|a| a.pid == std::process::id())
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(state.address_file());
    }
    drop(signal_task);
    drop(metrics_task);
    tracing::info!("harnessd stopped; services keep running");
    drop(lock);
    Ok(())
}

/// Raises this process's soft open-file limit to its hard limit, so that
/// following hundreds of services does not fail for want of descriptors;
/// returns the limits now in force (`0` standing for unlimited). Services
/// inherit the raised limit, as they do under Docker.
pub fn raise_open_file_limit() -> (u64, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    (limit.current.unwrap_or(0), limit.maximum.unwrap_or(0))
}
