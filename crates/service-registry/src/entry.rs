//! What the registry knows about one service: where it runs and how to reach it.

use std::net::IpAddr;

use harness_core::{ServiceKind, ServiceName, ServiceState};
use serde::{Deserialize, Serialize};

/// A container port published on the Docker host (`-p HOST:CONTAINER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The port on the Docker host (bound on all host addresses).
    pub host: u16,
    /// The port inside the container.
    pub container: u16,
}

/// Where a service (or a consumer of a service) runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Location {
    /// A process on this host.
    LocalHost,
    /// A container on a Docker network of this host.
    DockerNetwork {
        /// The Docker network name.
        network: String,
        /// The container's address on that network.
        container_ip: IpAddr,
        /// Ports published on this host.
        #[serde(default)]
        published: Vec<PublishedPort>,
    },
    /// A process on a node of a LAN network.
    LanNode {
        /// The node name (as configured).
        node: String,
        /// The node's LAN address.
        address: IpAddr,
    },
    /// A process on a peer of a WireGuard mesh.
    WireguardPeer {
        /// The node name (as configured).
        node: String,
        /// The peer's address on the mesh.
        mesh_ip: IpAddr,
    },
    /// A container on a node's Docker engine: reached at the node's address
    /// (its published ports). As a consumer it is a host of its own: the
    /// node's services are not on its loopback.
    NodeContainer {
        /// The node name (as configured).
        node: String,
        /// The node's address (LAN, or mesh for a WireGuard peer).
        address: IpAddr,
    },
}

impl Location {
    /// A short label: `local`, `docker`, `lan`, `wireguard`, `node-container`.
    pub fn label(&self) -> &'static str {
        match self {
            Location::LocalHost => "local",
            Location::DockerNetwork { .. } => "docker",
            Location::LanNode { .. } => "lan",
            Location::WireguardPeer { .. } => "wireguard",
            Location::NodeContainer { .. } => "node-container",
        }
    }

    /// The host column of `harness status`: `local`, the docker network, or the node name.
    pub fn host_label(&self) -> String {
        match self {
            Location::LocalHost => "local".to_owned(),
            Location::DockerNetwork { network, .. } => format!("docker:{network}"),
            Location::LanNode { node, .. }
            | Location::WireguardPeer { node, .. }
            | Location::NodeContainer { node, .. } => node.clone(),
        }
    }

    /// The remote node this location is on, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Location::LanNode { node, .. }
            | Location::WireguardPeer { node, .. }
            | Location::NodeContainer { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The address a peer sees this location at, if it is not this host itself.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Location::LocalHost => None,
            Location::DockerNetwork { container_ip, .. } => Some(*container_ip),
            Location::LanNode { address, .. } => Some(*address),
            Location::WireguardPeer { mesh_ip, .. } => Some(*mesh_ip),
            Location::NodeContainer { address, .. } => Some(*address),
        }
    }
}

/// One service as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The service name.
    pub name: ServiceName,
    /// The target kind.
    pub kind: ServiceKind,
    /// Where it runs.
    pub location: Location,
    /// The ports it listens on where it runs (inside the container for Docker);
    /// the first one is the primary port `${svc.port}` refers to.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Its host name where it runs: the container name (resolvable by Docker's
    /// DNS on the same network) or the node's host name. `None` means "use the
    /// address".
    #[serde(default)]
    pub hostname: Option<String>,
    /// Its lifecycle state.
    pub state: ServiceState,
    /// The deployed version (package services), if known.
    #[serde(default)]
    pub version: Option<String>,
    /// When the registry first saw it, in milliseconds since the Unix epoch.
    pub registered_at_ms: u64,
    /// When it last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl ServiceEntry {
    /// A new entry in state `Pending`, with timestamps set to now.
    pub fn new(name: ServiceName, kind: ServiceKind, location: Location) -> ServiceEntry {
        let now = now_ms();
        ServiceEntry {
            name,
            kind,
            location,
            ports: Vec::new(),
            hostname: None,
            state: ServiceState::Pending,
            version: None,
            registered_at_ms: now,
            updated_at_ms: now,
        }
    }

    /// Sets the ports (builder style).
    pub fn with_ports(mut self, ports: impl IntoIterator<Item = u16>) -> ServiceEntry {
        self.ports = ports.into_iter().collect();
        self
    }

    /// Sets the host name (builder style).
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> ServiceEntry {
        self.hostname = Some(hostname.into());
        self
    }

    /// Sets the state (builder style).
    pub fn with_state(mut self, state: ServiceState) -> ServiceEntry {
        self.state = state;
        self
    }

    /// The primary port, if the service declares one.
    pub fn primary_port(&self) -> Option<u16> {
        self.ports.first().copied()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
