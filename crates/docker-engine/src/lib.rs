//! A runtime-agnostic Docker Engine API client.
//!
//! [`Docker`] speaks HTTP/1 (hyper) over a [`Transport`]: the unix socket
//! (`DOCKER_HOST=unix://...`, the default), plain TCP, or the stdio of a command
//! such as `ssh NODE docker system dial-stdio` for an engine on another host.
//! The API version is negotiated on connect. Each call opens its own
//! connection and is driven by the caller's polling: no executor or runtime is
//! needed, so it works under smol, tokio or a bare `block_on`.
//!
//! It covers what harness needs: containers (create with the hardening options,
//! start, stop with a signal and grace, kill, remove, inspect, list by label,
//! wait), images (inspect, build from a local context), exec, demultiplexed
//! logs, the event stream, and networks. Errors are typed and name the cause:
//! an unreachable engine names its socket, a missing image says that nothing
//! can be pulled here and how to build or load it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), docker_engine::DockerError> {
//! use docker_engine::{ContainerSpec, Docker};
//! let docker = Docker::from_env().await?;
//! let mut spec = ContainerSpec::new("harness-test/busybox:latest");
//! spec.cmd = Some(vec!["sleep".into(), "60".into()]);
//! spec.read_only_rootfs = true;
//! spec.cap_drop = vec!["ALL".into()];
//! let id = docker.create_container(&spec).await?;
//! docker.start_container(&id).await?;
//! docker.remove_container(&id, true).await?;
//! # Ok(()) }
//! ```

mod client;
pub mod container;
pub mod context;
pub mod error;
pub mod events;
pub mod exec;
pub mod image;
pub mod logs;
pub mod network;
pub mod system;
pub mod testing;
pub mod transport;

pub use client::{ApiVersion, Docker, MAX_API_VERSION, MIN_API_VERSION};
pub use container::{
    ContainerInspect, ContainerSpec, ContainerSummary, Mount, MountSource, PortSpec, Protocol,
    WaitCondition,
};
pub use context::DockerIgnore;
pub use error::{DockerError, Result};
pub use events::{Event, EventFilter, EventStream};
pub use exec::{ExecInspect, ExecOutput, ExecSpec, ExecStream};
pub use image::{BuildSpec, ImageInspect};
pub use logs::{Demuxer, Frames, LogLine, LogOptions, LogStream, parse_timestamp};
pub use network::NetworkInspect;
pub use system::Version;
pub use transport::Transport;
