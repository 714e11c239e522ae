//! What runs where, and how each service reaches every other.
//!
//! This crate owns:
//! - [`ServiceEntry`]: a service's kind, [`Location`] (this host, a Docker
//!   network, a LAN node, a WireGuard peer), ports, host name, state, version
//!   and timestamps;
//! - the [`Registry`]: entries and address pools, persisted crash-safely
//!   ([`store`]), with change events to any number of [`Subscription`]s;
//! - the [`NetworkTopology`]: configured networks joined with this host's real
//!   addresses ([`HostNetwork::read`]);
//! - [`resolve()`]: the [`Endpoint`](harness_core::Endpoint) at which a consumer
//!   reaches a provider, from the consumer's point of view;
//! - [`IpPool`]: address allocation inside a subnet ([`IpNet`]);
//! - [`service_environment`]: the resolved environment a service gets;
//! - [`config`]: conversions from the configuration model (`harness_config`).
//!
//! It is runtime-agnostic: writes are `async` and do their file I/O on
//! `blocking`'s thread pool; nothing here starts a runtime.
//!
//! ```
//! use service_registry::{Location, NetworkTopology, Registry, ServiceEntry};
//! use harness_core::{ServiceKind, ServiceName};
//!
//! # futures_lite::future::block_on(async {
//! let registry = Registry::in_memory();
//! let db = ServiceEntry::new(ServiceName::new("db").unwrap(), ServiceKind::Process, Location::LocalHost)
//!     .with_ports([5432]);
//! registry.upsert(db).await.unwrap();
//! let topology = NetworkTopology::default();
//! let ep = registry.resolve(&topology, "db", &Location::LocalHost).unwrap();
//! assert_eq!(ep.ip.to_string(), "127.0.0.1");
//! assert_eq!(ep.port, Some(5432));
//! # });
//! ```

pub mod alloc;
pub mod config;
pub mod entry;
pub mod env;
pub mod host;
pub mod net;
pub mod registry;
pub mod resolve;
pub mod store;
pub mod topology;

pub use alloc::{AllocError, IpPool};
pub use config::{
    ConfigError, entry_from_spec, environment_for, planned_location, remote_location,
    topology_from_config,
};
pub use entry::{Location, PublishedPort, ServiceEntry};
pub use env::{EnvError, service_environment};
pub use host::{HostAddress, HostNetwork};
pub use net::{IpNet, NetError};
pub use registry::{Registry, RegistryError, RegistryEvent, RegistrySnapshot, Subscription};
pub use resolve::{ResolveError, resolve};
pub use store::{LoadReport, LoadSource, PersistError, StateFile};
pub use topology::{LocalBinding, Network, NetworkKind, NetworkTopology, Node};
