//! Bring a service graph up on real health and keep it up.
//!
//! - [`lifecycle`]: the per-service lifecycle as a pure reducer
//!   (`reduce(state, event, now) -> (state, effects)`), with restart policies and backoff.
//! - [`executor`]: the [`ServiceExecutor`] trait, one implementation per target kind.
#![forbid(unsafe_code)]

pub mod executor;
pub mod lifecycle;

pub use executor::{
    BoxError, ExecOutcome, ExecutorError, InstanceEvent, InstanceEvents, InstanceRecord, Launched,
    ServiceExecutor, ServiceInstance, SharedExecutor, StartContext,
};
pub use lifecycle::{
    AfterStop, Backoff, Effect, Event, LifecyclePolicy, Phase, RestartMode, ServiceLifecycle,
    backoff_delay, reduce,
};
