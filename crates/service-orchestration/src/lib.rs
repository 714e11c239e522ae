//! Bring a service graph up on real health and keep it up.
//!
//! - [`lifecycle`]: the per-service lifecycle as a pure reducer
//!   (`reduce(state, event, now) -> (state, effects)`), with restart policies and backoff.
//! - [`executor`]: the [`ServiceExecutor`] trait, one implementation per target kind;
//!   [`ProcessExecutor`] runs local processes.
//! - [`health`]: exec, HTTP(S), TCP and log-line checks.
//! - [`manager`]: [`ServiceManager`], which brings a project's dependency graph up on
//!   real health, keeps it up (restarts with backoff) and stops it in reverse order.
//! - [`resolve`]: what `${svc.ip|port|host}` expand to.
#![forbid(unsafe_code)]

pub mod docker;
pub mod executor;
pub mod health;
pub mod lifecycle;
pub mod manager;
pub mod package;
pub mod process;
pub mod remote;
pub mod resolve;
pub mod ssh;

pub use executor::{
    BoxError, ExecOutcome, ExecutorError, InstanceEvent, InstanceEvents, InstanceRecord, Launched,
    ServiceExecutor, ServiceInstance, SharedExecutor, StartContext,
};
pub use health::ProbeTls;
pub use lifecycle::{
    AfterStop, Backoff, Effect, Event, LifecyclePolicy, Phase, RestartMode, ServiceLifecycle,
    backoff_delay, reduce,
};
pub use manager::{
    ManagerError, ManagerEvent, ManagerOptions, ServiceManager, ServiceRecord, Subscription,
};
pub use process::{ProcessExecutor, ProcessRecord};
pub use resolve::{EndpointResolver, LoopbackResolver};
