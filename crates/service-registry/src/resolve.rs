//! Where a consumer reaches a provider: one function, [`resolve`].
//!
//! The answer depends on both ends (ADR 004 has the full table):
//!
//! | provider \ consumer | this host | container, same network | container, other network | LAN node / WireGuard peer |
//! |---|---|---|---|---|
//! | local process | `127.0.0.1` | host's address on the consumer's bridge | same | host's address in the peer's subnet |
//! | container | `127.0.0.1` + published port (container IP if unpublished) | container IP + container port | host's address on the consumer's bridge + published port | host's address in the peer's subnet + published port |
//! | LAN node / WireGuard peer / container on a node | its address | its address | its address | `127.0.0.1` for a process on the same node; else (also for a container there) its address in the consumer's network, else its own address |

use std::net::IpAddr;

use harness_core::{Endpoint, ServiceName};

use crate::entry::{Location, ServiceEntry};
use crate::topology::NetworkTopology;

/// Why a consumer cannot reach a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The provider is a container whose primary port is not published, and
    /// the consumer is not on its Docker network.
    #[error(
        "service `{provider}` runs in a container on docker network `{network}` and publishes no host port for port {port}: {consumer} cannot reach it (publish the port or put the consumer on `{network}`)"
    )]
    NotPublished {
        /// The provider.
        provider: ServiceName,
        /// Its Docker network.
        network: String,
        /// Its primary (container) port, 0 if it declares none.
        port: u16,
        /// The consumer, described.
        consumer: String,
    },
    /// This host has no address the consumer can reach it at.
    #[error(
        "service `{provider}` runs on this host, but this host has no address in the network of {consumer} ({peer}): add this host to that network or check its interfaces"
    )]
    NoHostAddress {
        /// The provider.
        provider: ServiceName,
        /// The consumer, described.
        consumer: String,
        /// The consumer's address.
        peer: IpAddr,
    },
}

/// The endpoint at which a consumer at `consumer` reaches `provider`.
///
/// `${svc.ip}`, `${svc.port}` and `${svc.host}` expand to the fields of this
/// endpoint. Pure: it reads the topology and does no I/O.
pub fn resolve(
    topology: &NetworkTopology,
    provider: &ServiceEntry,
    consumer: &Location,
) -> Result<Endpoint, ResolveError> {
    let port = provider.primary_port();
    let name_or = |ip: IpAddr| provider.hostname.clone().unwrap_or_else(|| ip.to_string());
    match &provider.location {
        Location::LocalHost => match consumer.address() {
            None => Ok(Endpoint::loopback(port)),
            Some(peer) => {
                let ip = topology.host_address_toward(peer).ok_or_else(|| {
                    ResolveError::NoHostAddress {
                        provider: provider.name.clone(),
                        consumer: describe(consumer),
                        peer,
                    }
                })?;
                Ok(Endpoint {
                    ip,
                    port,
                    host: this_host_name(topology, consumer, ip),
                })
            }
        },
        Location::DockerNetwork {
            network,
            container_ip,
            published,
        } => {
            let same_network =
                matches!(consumer, Location::DockerNetwork { network: n, .. } if n == network);
            if same_network {
                return Ok(Endpoint {
                    ip: *container_ip,
                    port,
                    host: name_or(*container_ip),
                });
            }
            let host_port = port.and_then(|p| {
                published
                    .iter()
                    .find(|pp| pp.container == p)
                    .map(|pp| pp.host)
            });
            match (consumer, host_port) {
                (Location::LocalHost, Some(hp)) => Ok(Endpoint::loopback(Some(hp))),
                // Unpublished (or no port at all): on Linux this host routes to
                // its bridge networks, so the container address works from here.
                (Location::LocalHost, None) => Ok(Endpoint {
                    ip: *container_ip,
                    port,
                    host: name_or(*container_ip),
                }),
                (_, Some(hp)) => {
                    let peer = consumer
                        .address()
                        .expect("every location but LocalHost has an address");
                    let ip = topology.host_address_toward(peer).ok_or_else(|| {
                        ResolveError::NoHostAddress {
                            provider: provider.name.clone(),
                            consumer: describe(consumer),
                            peer,
                        }
                    })?;
                    Ok(Endpoint {
                        ip,
                        port: Some(hp),
                        host: this_host_name(topology, consumer, ip),
                    })
                }
                (_, None) => Err(ResolveError::NotPublished {
                    provider: provider.name.clone(),
                    network: network.clone(),
                    port: port.unwrap_or(0),
                    consumer: describe(consumer),
                }),
            }
        }
        Location::LanNode { node, address: own }
        | Location::WireguardPeer { node, mesh_ip: own }
        | Location::NodeContainer { node, address: own } => {
            // A process on the same node has it on its loopback; a container
            // there is a host of its own.
            let same_node = consumer.node() == Some(node.as_str());
            if same_node && !matches!(consumer, Location::NodeContainer { .. }) {
                return Ok(Endpoint::loopback(port));
            }
            let ip = match consumer {
                Location::LanNode { address: peer, .. }
                | Location::WireguardPeer { mesh_ip: peer, .. }
                | Location::NodeContainer { address: peer, .. } => {
                    topology.node_address_toward(node, *peer).unwrap_or(*own)
                }
                _ => *own,
            };
            Ok(Endpoint {
                ip,
                port,
                host: provider.hostname.clone().unwrap_or_else(|| node.clone()),
            })
        }
    }
}

/// The host name of this host as seen from `consumer`: the kernel's node name
/// for remote nodes (they usually know it), the address for containers (they
/// usually do not).
fn this_host_name(topology: &NetworkTopology, consumer: &Location, ip: IpAddr) -> String {
    match consumer {
        Location::LanNode { .. }
        | Location::WireguardPeer { .. }
        | Location::NodeContainer { .. }
            if !topology.host.hostname.is_empty() =>
        {
            topology.host.hostname.clone()
        }
        _ => ip.to_string(),
    }
}

fn describe(location: &Location) -> String {
    match location {
        Location::LocalHost => "a process on this host".to_owned(),
        Location::DockerNetwork {
            network,
            container_ip,
            ..
        } => format!("a container on docker network `{network}` ({container_ip})"),
        Location::LanNode { node, address } => format!("LAN node `{node}` ({address})"),
        Location::WireguardPeer { node, mesh_ip } => {
            format!("WireGuard peer `{node}` ({mesh_ip})")
        }
        Location::NodeContainer { node, address } => {
            format!("a container on node `{node}` ({address})")
        }
    }
}
