//! One executor per target kind: the seam between the manager and the things it runs.
//!
//! A [`ServiceExecutor`] starts a service of its kind ([`ServiceExecutor::start`]) or
//! re-adopts one a previous daemon started ([`ServiceExecutor::attach`]). Either way it
//! returns a [`Launched`]: a [`ServiceInstance`] handle (stop it, run a check where it
//! runs, describe it for persistence) and the [`InstanceEvents`] stream of what happens
//! to it (started, output lines, exit).
//!
//! The manager owns the lifecycle (restarts, health, ordering); an executor only
//! carries out single actions and reports facts. Executors for local processes
//! ([`crate::ProcessExecutor`]), Docker containers and SSH hosts sit behind this
//! same trait.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::Stream;
use harness_config::ServiceSpec;
use harness_core::{ExitStatus, OutputLine, ProjectName, ServiceKind, SharedSpawner, Signal};
use serde::{Deserialize, Serialize};

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong carrying out an executor action; every variant names the service.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The service could not be started.
    #[error("cannot start `{service}`: {source}")]
    Start {
        /// The service.
        service: String,
        /// Why.
        source: BoxError,
    },
    /// The service could not be stopped.
    #[error("cannot stop `{service}`: {source}")]
    Stop {
        /// The service.
        service: String,
        /// Why.
        source: BoxError,
    },
    /// What a previous daemon started could not be re-adopted.
    #[error("cannot re-attach to `{service}`: {source}")]
    Attach {
        /// The service.
        service: String,
        /// Why.
        source: BoxError,
    },
    /// A check could not be run where the service runs.
    #[error("cannot run the check of `{service}`: {source}")]
    Probe {
        /// The service.
        service: String,
        /// Why.
        source: BoxError,
    },
    /// This executor cannot do that for this service.
    #[error("`{service}`: {what} is not supported by the {kind} executor")]
    Unsupported {
        /// The service.
        service: String,
        /// The executor kind.
        kind: ServiceKind,
        /// What was asked.
        what: &'static str,
    },
}

/// Everything an executor needs to start a service besides its spec.
#[derive(Clone)]
pub struct StartContext {
    /// The project the service belongs to (label containers and processes with it).
    pub project: ProjectName,
    /// The environment to give the service: the spec's `env` with references
    /// expanded, plus `HARNESS_PROJECT` and `HARNESS_SERVICE`. Use this, not `spec.env`.
    pub env: BTreeMap<String, String>,
    /// Where output may be written to files (so it outlives the daemon), if anywhere:
    /// a directory of this service's own.
    pub log_dir: Option<PathBuf>,
    /// Which run of the service this is (1 for the first spawn after a request, growing with restarts).
    pub generation: u64,
    /// Runs background work on the embedder's executor.
    pub spawner: SharedSpawner,
    /// The address the registry keeps for this service in its network's
    /// configured subnet, for executors that place services at a fixed
    /// address (containers on the project network); `None`: the runtime picks.
    pub address: Option<ReservedAddress>,
}

/// An address kept for a service in a configured subnet: the same on every
/// start, so what refers to the service keeps reaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedAddress {
    /// The address.
    pub ip: std::net::IpAddr,
    /// The subnet of the network it is in.
    pub subnet: service_registry::IpNet,
}

impl std::fmt::Debug for StartContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartContext")
            .field("project", &self.project)
            .field("env", &self.env)
            .field("log_dir", &self.log_dir)
            .field("generation", &self.generation)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// What an executor persists about a running instance so that a new daemon can
/// re-adopt it with [`ServiceExecutor::attach`].
///
/// `data` is the executor's own (e.g. pid, start time and log offsets for a
/// process; a container id for Docker); the other fields are common to all kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The executor kind that made it.
    pub kind: ServiceKind,
    /// The process id, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The container id, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Where it runs: `local`, a node, a docker host.
    pub host: String,
    /// Executor-specific details.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Something that happened to a running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceEvent {
    /// It runs (the first event).
    Started {
        /// Its process id, if it has one the executor knows.
        pid: Option<u32>,
    },
    /// A line of its output.
    Output(OutputLine),
    /// This many lines were lost because they were not read fast enough.
    Dropped {
        /// How many.
        lines: u64,
    },
    /// It can no longer be observed (e.g. its host is unreachable), for this
    /// reason. Not an exit: it may well still run. The manager shows the service
    /// as `unknown` with the reason and holds off restarts until
    /// [`InstanceEvent::Reachable`] (or an exit) follows.
    Unreachable {
        /// Why, naming the host.
        reason: String,
    },
    /// It can be observed again after [`InstanceEvent::Unreachable`]. If it ended
    /// meanwhile, [`InstanceEvent::Exited`] follows.
    Reachable,
    /// It ended (the last event; the stream ends after it).
    Exited(ExitStatus),
}

/// The events of one instance, in order, ending after [`InstanceEvent::Exited`].
pub type InstanceEvents = Pin<Box<dyn Stream<Item = InstanceEvent> + Send + 'static>>;

/// The result of a check run where the service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// True if it passed (exit code 0).
    pub success: bool,
    /// A one-line description of the result (exit status, start of the output).
    pub detail: String,
}

/// A running (or re-adopted) instance of a service.
#[async_trait::async_trait]
pub trait ServiceInstance: Send + Sync + 'static {
    /// The process id, if any.
    fn pid(&self) -> Option<u32>;

    /// What to persist to re-adopt this instance later (current log offsets included).
    fn record(&self) -> InstanceRecord;

    /// Stops it: `signal` to everything it consists of (the whole process group,
    /// the container), then, after `grace`, SIGKILL. Returns once it is gone.
    async fn stop(&self, signal: Signal, grace: Duration) -> Result<(), ExecutorError>;

    /// Runs `command args` where the service runs (same host, inside the
    /// container) and reports whether it exited with 0 within `timeout`.
    async fn exec(
        &self,
        command: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError>;

    /// Where it runs, for the registry, when the executor knows better than
    /// the configuration (a container's network and address). The default,
    /// `None`, places it where its configuration says.
    fn location(&self) -> Option<service_registry::Location> {
        None
    }

    /// Why it cannot be observed right now (its host does not answer), if it
    /// cannot. The manager asks when a check of the instance fails, to tell a
    /// service that fails its check from one it cannot see: then the service
    /// shows as `unknown` with this reason and is not restarted. May take a
    /// round trip to the host. The default: always observable.
    async fn unreachable(&self) -> Option<String> {
        None
    }
}

/// An instance and the stream of its events.
///
/// Executors whose instances are always observable (local processes) never emit
/// [`InstanceEvent::Unreachable`]; the others emit it on losing sight of an
/// instance and [`InstanceEvent::Reachable`] on regaining it.
pub struct Launched {
    /// The handle.
    pub instance: Arc<dyn ServiceInstance>,
    /// Its events.
    pub events: InstanceEvents,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("record", &self.instance.record())
            .finish_non_exhaustive()
    }
}

/// Starts and re-adopts services of one target kind.
#[async_trait::async_trait]
pub trait ServiceExecutor: Send + Sync + 'static {
    /// The kind of target it runs.
    fn kind(&self) -> ServiceKind;

    /// Starts `spec` (whose reference templates are already expanded).
    /// Returns once it runs; its events follow on the returned stream.
    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError>;

    /// Where a service of `spec` will run, known before it starts, when the
    /// executor knows better than the configuration: the references in its
    /// environment are resolved from there. A container is on a network of
    /// its engine whose address it does not have yet, so it is placed at the
    /// network's gateway, an address in the same subnet. The default, `None`,
    /// places it where its configuration says.
    async fn place(
        &self,
        _spec: &ServiceSpec,
        _ctx: &StartContext,
    ) -> Result<Option<service_registry::Location>, ExecutorError> {
        Ok(None)
    }

    /// Re-adopts an instance a previous daemon started, from its persisted record.
    /// Must fail (not adopt a stranger) when the record no longer matches what
    /// runs (e.g. the pid was reused).
    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError>;
}

/// A shared executor.
pub type SharedExecutor = Arc<dyn ServiceExecutor>;
