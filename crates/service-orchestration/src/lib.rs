//! Bring a service graph up on real health and keep it up.
//!
//! - [`lifecycle`]: the per-service lifecycle as a pure reducer
//!   (`reduce(state, event, now) -> (state, effects)`), with restart policies and backoff.
#![forbid(unsafe_code)]

pub mod lifecycle;

pub use lifecycle::{
    AfterStop, Backoff, Effect, Event, LifecyclePolicy, Phase, RestartMode, ServiceLifecycle,
    backoff_delay, reduce,
};
