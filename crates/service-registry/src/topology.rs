//! The configured networks joined with this host's real addresses.
//!
//! A [`NetworkTopology`] answers questions such as "which of this host's
//! addresses lies in the LAN subnet" or "which address of this host does the
//! WireGuard peer `10.100.0.3` reach it at", which address resolution needs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::alloc::{AllocError, IpPool};
use crate::host::{HostAddress, HostNetwork};
use crate::net::IpNet;

/// A remote machine that belongs to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node name (defaults to its host in the configuration).
    pub name: String,
    /// How to reach it over SSH: a host name or an address.
    pub host: String,
    /// Its address in this network, when known (the host if it is an IP on a
    /// LAN, the mesh address on a WireGuard network).
    pub address: Option<IpAddr>,
}

impl Node {
    /// A node whose address is its host, when the host is an IP address.
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> Node {
        let host = host.into();
        Node {
            name: name.into(),
            address: host.parse().ok(),
            host,
        }
    }

    /// Sets the address of the node in its network (builder style).
    pub fn with_address(mut self, address: IpAddr) -> Node {
        self.address = Some(address);
        self
    }
}

/// What kind of network it is, with what belongs to each kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NetworkKind {
    /// This host only (processes and the default Docker bridge).
    Local {
        /// An optional subnet for the project's containers.
        subnet: Option<IpNet>,
    },
    /// A Docker network on this host.
    Docker {
        /// Its subnet, when known.
        subnet: Option<IpNet>,
        /// Its gateway (this host's address on the bridge), when known.
        gateway: Option<IpAddr>,
    },
    /// Machines on a local network.
    Lan {
        /// The LAN subnet.
        subnet: IpNet,
        /// The remote nodes.
        nodes: Vec<Node>,
    },
    /// Peers of a WireGuard mesh.
    Wireguard {
        /// The mesh subnet.
        subnet: IpNet,
        /// The peers.
        nodes: Vec<Node>,
    },
}

/// One configured network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its name in `services.yaml`.
    pub name: String,
    /// Its kind and members.
    pub kind: NetworkKind,
}

impl Network {
    /// The subnet, when the network has one.
    pub fn subnet(&self) -> Option<IpNet> {
        match &self.kind {
            NetworkKind::Local { subnet } | NetworkKind::Docker { subnet, .. } => *subnet,
            NetworkKind::Lan { subnet, .. } | NetworkKind::Wireguard { subnet, .. } => {
                Some(*subnet)
            }
        }
    }

    /// The remote nodes of the network (none for local and Docker networks).
    pub fn nodes(&self) -> &[Node] {
        match &self.kind {
            NetworkKind::Lan { nodes, .. } | NetworkKind::Wireguard { nodes, .. } => nodes,
            _ => &[],
        }
    }
}

/// One of this host's addresses that lies in a configured network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalBinding {
    /// The configured network.
    pub network: String,
    /// The subnet of that network.
    pub subnet: IpNet,
    /// The address of this host inside it.
    pub address: HostAddress,
}

/// Configured networks plus this host's real addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTopology {
    /// This host.
    pub host: HostNetwork,
    /// The configured networks, by name.
    pub networks: BTreeMap<String, Network>,
}

impl NetworkTopology {
    /// A topology with no configured network yet.
    pub fn new(host: HostNetwork) -> NetworkTopology {
        NetworkTopology {
            host,
            networks: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a configured network.
    pub fn add_network(&mut self, network: Network) {
        self.networks.insert(network.name.clone(), network);
    }

    /// Adds a network (builder style).
    pub fn with_network(mut self, network: Network) -> NetworkTopology {
        self.add_network(network);
        self
    }

    /// Which of this host's addresses lies in which configured subnet.
    pub fn local_bindings(&self) -> Vec<LocalBinding> {
        let mut out = Vec::new();
        for net in self.networks.values() {
            let Some(subnet) = net.subnet() else { continue };
            for a in self.host.addresses.iter().filter(|a| subnet.contains(a.ip)) {
                out.push(LocalBinding {
                    network: net.name.clone(),
                    subnet,
                    address: a.clone(),
                });
            }
        }
        out
    }

    /// This host's address in the configured network `name`, if it has one.
    pub fn host_address_in(&self, name: &str) -> Option<IpAddr> {
        let subnet = self.networks.get(name)?.subnet()?;
        self.host.address_in(subnet).map(|a| a.ip)
    }

    /// The configured network whose subnet holds `ip` (the narrowest one).
    pub fn network_containing(&self, ip: IpAddr) -> Option<&Network> {
        self.networks
            .values()
            .filter(|n| n.subnet().is_some_and(|s| s.contains(ip)))
            .max_by_key(|n| n.subnet().map(|s| s.prefix()))
    }

    /// The address at which `peer` reaches this host: the address of the
    /// interface directly connected to `peer` (e.g. a Docker bridge gateway),
    /// or else this host's address in the configured network holding `peer`
    /// (a routed peer). The directly connected one comes first: a configured
    /// subnet may be wide enough to hold several of this host's networks.
    pub fn host_address_toward(&self, peer: IpAddr) -> Option<IpAddr> {
        if let Some(a) = self.host.address_facing(peer) {
            return Some(a.ip);
        }
        let subnet = self.network_containing(peer).and_then(Network::subnet)?;
        self.host.address_in(subnet).map(|a| a.ip)
    }

    /// The address node `node` has in the network that holds `peer`, if the
    /// node is a member of that network with a known address.
    pub fn node_address_toward(&self, node: &str, peer: IpAddr) -> Option<IpAddr> {
        let net = self.network_containing(peer)?;
        net.nodes()
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.address)
    }

    /// The address pool of network `name`, for handing addresses to containers
    /// or mesh peers: `None` if the network is unknown or has no subnet.
    ///
    /// Docker and local networks get a gateway (the configured one, else the
    /// first host address); a WireGuard mesh has none. This host's addresses
    /// in the subnet and the known node addresses are reserved, so they are
    /// never handed out.
    pub fn address_pool(&self, name: &str) -> Result<Option<IpPool>, AllocError> {
        let Some(net) = self.networks.get(name) else {
            return Ok(None);
        };
        let Some(subnet) = net.subnet() else {
            return Ok(None);
        };
        let mut pool = match &net.kind {
            NetworkKind::Docker { gateway, .. } => IpPool::new(name, subnet, *gateway)?,
            NetworkKind::Local { .. } => IpPool::new(name, subnet, None)?,
            NetworkKind::Lan { .. } | NetworkKind::Wireguard { .. } => {
                IpPool::without_gateway(name, subnet)
            }
        };
        let taken = self
            .host
            .addresses
            .iter()
            .map(|a| a.ip)
            .chain(net.nodes().iter().filter_map(|n| n.address))
            .filter(|ip| subnet.contains(*ip) && Some(*ip) != pool.gateway());
        for ip in taken.collect::<Vec<_>>() {
            // Network or broadcast addresses of odd configurations are not
            // assignable anyway: nothing to reserve.
            if let Err(e) = pool.reserve(ip)
                && !matches!(e, AllocError::NotAssignable { .. })
            {
                return Err(e);
            }
        }
        Ok(Some(pool))
    }

    /// Gives every node whose `host` is a DNS name an address `lookup` finds
    /// for it: the first inside the network's subnet; on a LAN, else the
    /// first at all; on a WireGuard network only one inside the mesh subnet,
    /// since the name may well be the node's public address. Nodes that
    /// already have an address are left alone; `lookup` is asked once per
    /// name. Returns the names no usable address was found for.
    pub fn resolve_node_names(
        &mut self,
        mut lookup: impl FnMut(&str) -> Vec<IpAddr>,
    ) -> Vec<String> {
        let mut seen: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let mut unresolved = Vec::new();
        for net in self.networks.values_mut() {
            let (nodes, subnet, mesh) = match &mut net.kind {
                NetworkKind::Lan { nodes, subnet } => (nodes, *subnet, false),
                NetworkKind::Wireguard { nodes, subnet } => (nodes, *subnet, true),
                _ => continue,
            };
            for node in nodes.iter_mut().filter(|n| n.address.is_none()) {
                if node.host.parse::<IpAddr>().is_ok() {
                    continue;
                }
                let found = seen
                    .entry(node.host.clone())
                    .or_insert_with(|| lookup(&node.host));
                let inside = found.iter().copied().find(|ip| subnet.contains(*ip));
                let usable = if mesh {
                    inside
                } else {
                    inside.or_else(|| found.first().copied())
                };
                match usable {
                    Some(ip) => node.address = Some(ip),
                    None => unresolved.push(node.host.clone()),
                }
            }
        }
        unresolved
    }

    /// Finds a node by name: its network and itself (the first network that lists it).
    pub fn node(&self, name: &str) -> Option<(&Network, &Node)> {
        self.networks.values().find_map(|net| {
            net.nodes()
                .iter()
                .find(|n| n.name == name)
                .map(|n| (net, n))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostNetwork {
        let a = |i: &str, ip: &str, p| HostAddress {
            interface: i.into(),
            ip: ip.parse().unwrap(),
            prefix: p,
        };
        HostNetwork {
            hostname: "ctl".into(),
            addresses: vec![
                a("lo", "127.0.0.1", 8),
                a("eth0", "192.168.1.10", 24),
                a("wg0", "10.100.0.1", 24),
                a("br-1", "172.20.0.1", 16),
            ],
        }
    }

    fn topo() -> NetworkTopology {
        NetworkTopology::new(host())
            .with_network(Network {
                name: "lan".into(),
                kind: NetworkKind::Lan {
                    subnet: "192.168.1.0/24".parse().unwrap(),
                    nodes: vec![Node::new("n1", "192.168.1.21")],
                },
            })
            .with_network(Network {
                name: "mesh".into(),
                kind: NetworkKind::Wireguard {
                    subnet: "10.100.0.0/24".parse().unwrap(),
                    nodes: vec![
                        Node::new("n1", "192.168.1.21")
                            .with_address("10.100.0.21".parse().unwrap()),
                        Node::new("far", "far.example.org")
                            .with_address("10.100.0.30".parse().unwrap()),
                    ],
                },
            })
            .with_network(Network {
                name: "other".into(),
                kind: NetworkKind::Lan {
                    subnet: "10.50.0.0/16".parse().unwrap(),
                    nodes: vec![],
                },
            })
    }

    #[test]
    fn joins_configured_subnets_with_host_addresses() {
        let t = topo();
        let b: Vec<String> = t
            .local_bindings()
            .iter()
            .map(|b| format!("{} {}", b.network, b.address.ip))
            .collect();
        assert_eq!(b, ["lan 192.168.1.10", "mesh 10.100.0.1"]);
        assert_eq!(
            t.host_address_in("lan").unwrap().to_string(),
            "192.168.1.10"
        );
        assert_eq!(t.host_address_in("other"), None);
        assert_eq!(t.host_address_in("nope"), None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            t.host_address_toward(ip("10.100.0.30")),
            Some(ip("10.100.0.1"))
        );
        assert_eq!(
            t.host_address_toward(ip("172.20.0.5")),
            Some(ip("172.20.0.1"))
        );
        assert_eq!(t.host_address_toward(ip("10.50.0.5")), None);
        assert_eq!(
            t.node_address_toward("n1", ip("10.100.0.30")),
            Some(ip("10.100.0.21"))
        );
        assert_eq!(t.node_address_toward("far", ip("192.168.1.5")), None);
        assert_eq!(t.node("far").unwrap().0.name, "mesh");
        assert_eq!(t.node("n1").unwrap().1.address, Some(ip("192.168.1.21")));
    }

    #[test]
    fn node_names_resolve_once_and_mesh_nodes_only_inside_the_mesh() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut t = NetworkTopology::new(host())
            .with_network(Network {
                name: "lan".into(),
                kind: NetworkKind::Lan {
                    subnet: "192.168.1.0/24".parse().unwrap(),
                    nodes: vec![
                        Node::new("b", "builder.lan"),
                        Node::new("g", "gone.lan"),
                        Node::new("fixed", "192.168.1.9").with_address(ip("192.168.1.9")),
                    ],
                },
            })
            .with_network(Network {
                name: "mesh".into(),
                kind: NetworkKind::Wireguard {
                    subnet: "10.100.0.0/24".parse().unwrap(),
                    nodes: vec![
                        Node::new("b", "builder.lan"),
                        Node::new("e", "edge.example.org"),
                    ],
                },
            });
        let mut asked = Vec::new();
        let unresolved = t.resolve_node_names(|name| {
            asked.push(name.to_owned());
            match name {
                // A dual-stack name: the address inside the subnet wins.
                "builder.lan" => vec![ip("fd00::22"), ip("192.168.1.22")],
                "edge.example.org" => vec![ip("10.100.0.7")],
                _ => Vec::new(),
            }
        });
        asked.sort();
        assert_eq!(asked, ["builder.lan", "edge.example.org", "gone.lan"]);
        assert_eq!(unresolved, ["gone.lan", "builder.lan"]);
        let lan = t.networks["lan"].nodes();
        assert_eq!(lan[0].address, Some(ip("192.168.1.22")));
        assert_eq!(lan[1].address, None);
        assert_eq!(lan[2].address, Some(ip("192.168.1.9")));
        let mesh = t.networks["mesh"].nodes();
        assert_eq!(mesh[0].address, None, "a LAN address is no mesh address");
        assert_eq!(mesh[1].address, Some(ip("10.100.0.7")));
    }

    #[test]
    fn address_pools_never_hand_out_known_addresses() {
        let t = topo();
        let mut mesh = t.address_pool("mesh").unwrap().unwrap();
        assert_eq!(mesh.gateway(), None);
        // .1 is this host, .21 and .30 are nodes: all reserved.
        assert_eq!(mesh.usable(), 254 - 3);
        let mut got = Vec::new();
        for i in 0..mesh.usable() {
            got.push(mesh.allocate(&format!("p{i}")).unwrap());
        }
        for taken in ["10.100.0.1", "10.100.0.21", "10.100.0.30"] {
            assert!(!got.contains(&taken.parse().unwrap()), "{taken} handed out");
        }
        assert!(t.address_pool("nope").unwrap().is_none());
        let docker = NetworkTopology::new(host()).with_network(Network {
            name: "app".into(),
            kind: NetworkKind::Docker {
                subnet: Some("172.20.0.0/16".parse().unwrap()),
                gateway: Some("172.20.0.1".parse().unwrap()),
            },
        });
        let mut p = docker.address_pool("app").unwrap().unwrap();
        assert_eq!(p.allocate("db").unwrap().to_string(), "172.20.0.2");
    }
}
