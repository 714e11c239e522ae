//! `services.yaml`: parse with exact locations, validate, interpolate, merge,
//! JSON Schema, and the dependency graph.
//!
//! This crate owns the configuration file format of harness. The rest of harness
//! works with the validated [`model::Project`] it produces, never with YAML.

mod de;
pub mod graph;
pub mod interp;
pub mod model;
pub mod raw;
pub mod template;
pub mod tree;

pub use graph::{DependencyGraph, GraphError};
pub use model::{
    Backoff, Build, Check, Condition, Dependency, DockerSpec, EnvFile, LogPattern, Network, Node,
    PortMapping, Probe, Project, Protocol, Resources, RestartMode, RestartPolicy, Security,
    ServiceSpec, Settings, Shutdown, Target,
};
pub use template::{RefField, ServiceRef, expand_refs, references};
