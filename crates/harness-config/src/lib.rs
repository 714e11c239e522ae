//! `services.yaml`: parse with exact locations, validate, interpolate, merge,
//! JSON Schema, and the dependency graph.
//!
//! This crate owns the configuration file format of harness. The rest of harness
//! works with the validated [`model::Project`] it produces, never with YAML.
//!
//! ```
//! let loaded = harness_config::from_yaml_str(
//!     r#"
//! name: shop
//! services:
//!   db:
//!     type: docker
//!     image: postgres:16
//!     ports: ["5432:5432"]
//!     health_check: { command: pg_isready, interval: 2s }
//!   api:
//!     type: process
//!     binary: ./api
//!     env: { DATABASE_URL: "postgres://${db.host}:${db.port}/shop" }
//!     dependencies: [db]
//! "#,
//! )
//! .unwrap();
//! let project = loaded.project;
//! let order: Vec<&str> = project.graph().start_order().iter().map(|s| s.as_str()).collect();
//! assert_eq!(order, ["db", "api"]);
//! assert_eq!(
//!     project.graph().dependencies("api")[0].condition,
//!     harness_config::Condition::Healthy
//! );
//! ```
//!
//! Loading reports every problem at once, each with file:line:column, the line,
//! a caret and a hint ([`Diagnostics`] implements `Display`). The commands
//! `validate`, `config` and `config schema` are one call each:
//!
//! ```no_run
//! use harness_config::{LoadOptions, load};
//!
//! // `-f base.yaml -f override.yaml`; no file given means `./services.yaml`.
//! let opts = LoadOptions::files(["base.yaml", "override.yaml"]);
//! match load(&opts) {
//!     Ok(loaded) => {
//!         eprint!("{}", loaded.warnings.render(false)); // warnings, if any
//!         println!("{}", loaded.summary()); // validate
//!         println!("{}", loaded.project.to_yaml()); // config (or to_json)
//!     }
//!     Err(diagnostics) => {
//!         eprint!("{}", diagnostics.render(true)); // every error, coloured
//!         std::process::exit(1);
//!     }
//! }
//! println!("{}", harness_config::json_schema_string()); // config schema
//! ```

pub mod changes;
mod de;
pub mod diag;
pub mod file;
pub mod graph;
pub mod interp;
mod load;
pub mod model;
pub mod raw;
mod schema;
pub mod template;
pub mod tree;
pub mod watch;

pub use changes::{ProjectChanges, ServiceChange, restarts_with_dependency};
pub use diag::{Diagnostic, Diagnostics, Location, Severity};
pub use file::{MAX_CONFIG_BYTES, ReadFileError, read_limited};
pub use graph::{DependencyGraph, GraphError};
pub use load::{
    DEFAULT_FILES, LoadOptions, Loaded, STRICT_ENV_VAR, from_sources, from_yaml_str, load,
    load_async, strict_env_value,
};
pub use model::{
    Backoff, Build, Check, Condition, Dependency, DockerSpec, EnvFile, LogPattern, Network, Node,
    PortMapping, Probe, Project, Protocol, Resources, RestartMode, RestartPolicy, Security,
    ServiceSpec, Settings, Shutdown, Target, WatchRule, project_name_from_title,
};
pub use schema::{json_schema, json_schema_string};
pub use template::{RefField, ServiceRef, expand_refs, references};
