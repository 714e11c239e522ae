//! Bring a service graph up on real health and keep it up.
//!
//! - [`lifecycle`]: the per-service lifecycle as a pure reducer
//!   (`reduce(state, event, now) -> (state, effects)`), with restart policies and backoff.
//! - [`executor`]: the [`ServiceExecutor`] trait, one implementation per target kind;
//!   [`ProcessExecutor`] ([`process`]) runs local processes.
//! - [`docker`]: the executor of Docker services (containers on the local engine or
//!   on a node's engine reached over ssh).
//! - [`docker_hosts`]: the docker executor that places each container on this
//!   machine's engine or on its node's, and shows a node that drops off as unreachable.
//! - [`ssh`]: connections to remote nodes: the system `ssh`, one multiplexed master
//!   connection per node, and whether each node answers.
//! - [`remote`]: the executor of `remote` services, detached on their node under a
//!   small wrapper (they outlive the connection and the daemon).
//! - [`package`]: `package` services: deploy a versioned package to a node (sha256
//!   checked there, `current` switched atomically, rollback), then run it there.
//! - [`health`]: exec, HTTP(S), TCP and log-line checks.
//! - [`manager`]: [`ServiceManager`], which brings a project's dependency graph up on
//!   real health, keeps it up (restarts with backoff) and stops it in reverse order.
//!   A service whose instance cannot be seen (its node is unreachable) shows as
//!   `unknown` with the reason, its failing checks restart nothing, and it returns
//!   to its state (or is restarted per its policy, if it ended) once it can be seen.
//! - [`reconcile`]: [`ServiceManager::reconcile`], which brings running services in
//!   step with a changed configuration: what changed restarts, the rest runs on.
//! - [`placement`]: where services run, kept in the service registry, and what
//!   `${svc.ip|port|host}` expand to, from each consumer's point of view.
#![forbid(unsafe_code)]

pub mod docker;
pub mod docker_hosts;
pub mod executor;
pub mod health;
pub mod lifecycle;
pub mod manager;
pub mod package;
pub mod placement;
pub mod port_owner;
pub mod process;
pub mod reconcile;
pub mod remote;
pub mod ssh;

pub use executor::{
    BoxError, ExecOutcome, ExecutorError, InstanceEvent, InstanceEvents, InstanceRecord, Launched,
    ReservedAddress, ServiceExecutor, ServiceInstance, SharedExecutor, StartContext,
};
pub use health::ProbeTls;
pub use lifecycle::{
    AfterStop, Backoff, Effect, Event, LifecyclePolicy, Phase, RestartMode, ServiceLifecycle,
    backoff_delay, reduce,
};
pub use manager::{
    ManagerError, ManagerEvent, ManagerOptions, PendingStart, ServiceManager, ServiceRecord,
    Subscription,
};
pub use placement::{Placement, PlacementError};
pub use process::{ProcessExecutor, ProcessRecord};
pub use reconcile::Reconciled;
