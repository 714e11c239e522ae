//! From the configuration model (`harness_config`) to the registry's types.
//!
//! - [`topology_from_config`]: the project's networks plus this host's addresses.
//! - [`remote_location`]: where a `remote`/`package` service runs, from its `host:`.
//! - [`entry_from_spec`]: a registry entry for a service placed at a location.
//! - [`environment_for`]: what `harness env SERVICE` prints.

use std::collections::BTreeMap;
use std::net::IpAddr;

use harness_config::{Project, ServiceSpec, Target};

use crate::entry::{Location, PublishedPort, ServiceEntry};
use crate::env::{EnvError, service_environment};
use crate::host::HostNetwork;
use crate::net::{IpNet, NetError};
use crate::registry::RegistrySnapshot;
use crate::topology::{Network, NetworkKind, NetworkTopology, Node};

/// Why the configuration cannot be turned into a topology or a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A network's subnet is not a valid CIDR subnet.
    #[error("network `{network}`: {source}")]
    BadSubnet {
        /// The network.
        network: String,
        /// What is wrong.
        source: NetError,
    },
    /// A service's `host:` names no node of any (or of its) network.
    #[error(
        "service `{service}` runs on `{host}`, which is not a node of {}",
        match network { Some(n) => format!("network `{n}`"), None => "any network".to_owned() }
    )]
    UnknownNode {
        /// The service.
        service: String,
        /// Its `host:`.
        host: String,
        /// Its network, if it names one.
        network: Option<String>,
    },
    /// A node's address is a DNS name, not yet resolved to an IP address.
    #[error(
        "service `{service}` runs on node `{node}` whose address `{host}` is not an IP address; give the node an IP address in network `{network}`"
    )]
    NodeWithoutAddress {
        /// The service.
        service: String,
        /// The node name.
        node: String,
        /// Its `host:`.
        host: String,
        /// The network.
        network: String,
    },
    /// A container that is not running has no address yet.
    #[error(
        "service `{service}` is a container that is not in the registry: its address is known once it runs"
    )]
    NotPlaced {
        /// The service.
        service: String,
    },
    /// `remote_location` was asked about a service without a `host:`.
    #[error("service `{service}` is a {kind} service without a `host:`")]
    NotRemote {
        /// The service.
        service: String,
        /// Its kind.
        kind: harness_core::ServiceKind,
    },
}

/// The configured networks joined with this host's addresses.
///
/// A node's address is its `host` when that is an IP address (on a WireGuard
/// network only when it lies in the mesh subnet, since otherwise it is the
/// address SSH reaches it at, not its mesh address).
pub fn topology_from_config(
    networks: &BTreeMap<String, harness_config::Network>,
    host: HostNetwork,
) -> Result<NetworkTopology, ConfigError> {
    let mut topology = NetworkTopology::new(host);
    for (name, net) in networks {
        let subnet = |s: &str| {
            s.parse::<IpNet>().map_err(|source| ConfigError::BadSubnet {
                network: name.clone(),
                source,
            })
        };
        let node = |n: &harness_config::Node, subnet: Option<IpNet>| {
            let address = n
                .host
                .parse::<IpAddr>()
                .ok()
                .filter(|ip| subnet.is_none_or(|s| s.contains(*ip)));
            Node {
                name: node_name(n).to_owned(),
                host: n.host.clone(),
                address,
            }
        };
        let kind = match net {
            harness_config::Network::Local { subnet: s } => NetworkKind::Local {
                subnet: s.as_deref().map(subnet).transpose()?,
            },
            harness_config::Network::Lan { subnet: s, nodes } => NetworkKind::Lan {
                subnet: subnet(s)?,
                nodes: nodes.iter().map(|n| node(n, None)).collect(),
            },
            harness_config::Network::Wireguard {
                subnet: s, nodes, ..
            } => {
                let s = subnet(s)?;
                NetworkKind::Wireguard {
                    subnet: s,
                    nodes: nodes.iter().map(|n| node(n, Some(s))).collect(),
                }
            }
        };
        topology.add_network(Network {
            name: name.clone(),
            kind,
        });
    }
    Ok(topology)
}

fn node_name(n: &harness_config::Node) -> &str {
    n.name.as_deref().unwrap_or(&n.host)
}

/// Where a service with a `host:` (`remote`, `package`, a container on a
/// node) runs: the node its `host:` names (by name or address), in its own
/// network if it names one, as a LAN node or a WireGuard peer, or as a
/// container on that node.
pub fn remote_location(
    spec: &ServiceSpec,
    topology: &NetworkTopology,
) -> Result<Location, ConfigError> {
    let Some(host) = spec.host() else {
        return Err(ConfigError::NotRemote {
            service: spec.name.to_string(),
            kind: spec.kind(),
        });
    };
    let found = topology
        .networks
        .values()
        .filter(|net| spec.network.as_deref().is_none_or(|n| n == net.name))
        .find_map(|net| {
            net.nodes()
                .iter()
                .find(|n| n.name == host || n.host == host)
                .map(|n| (net, n))
        });
    let Some((net, node)) = found else {
        return Err(ConfigError::UnknownNode {
            service: spec.name.to_string(),
            host: host.to_owned(),
            network: spec.network.clone(),
        });
    };
    let Some(address) = node.address else {
        return Err(ConfigError::NodeWithoutAddress {
            service: spec.name.to_string(),
            node: node.name.clone(),
            host: node.host.clone(),
            network: net.name.clone(),
        });
    };
    if matches!(spec.target, Target::Docker(_)) {
        return Ok(Location::NodeContainer {
            node: node.name.clone(),
            address,
        });
    }
    Ok(match net.kind {
        NetworkKind::Wireguard { .. } => Location::WireguardPeer {
            node: node.name.clone(),
            mesh_ip: address,
        },
        _ => Location::LanNode {
            node: node.name.clone(),
            address,
        },
    })
}

/// A registry entry for `spec` placed at `location`: its kind, its ports
/// (where it listens) and, for a container whose location lists no published
/// port, the published ports the configuration declares. A container on a
/// node is reached at the node's address, so its ports are the ones published
/// there.
pub fn entry_from_spec(spec: &ServiceSpec, location: Location) -> ServiceEntry {
    if matches!(spec.target, Target::Docker(_)) && location.node().is_some() {
        let mut entry = ServiceEntry::new(spec.name.clone(), spec.kind(), location);
        entry.ports = spec
            .ports
            .iter()
            .map(|p| p.host.unwrap_or(p.container))
            .collect();
        return entry;
    }
    let mut location = location;
    if let Location::DockerNetwork { published, .. } = &mut location
        && published.is_empty()
    {
        *published = spec
            .ports
            .iter()
            .filter_map(|p| {
                p.host.map(|host| PublishedPort {
                    host,
                    container: p.container,
                })
            })
            .collect();
    }
    let mut ports: Vec<u16> = spec.ports.iter().map(|p| p.container).collect();
    if ports.is_empty()
        && let Some(p) = spec.primary_port()
    {
        ports.push(p);
    }
    let mut entry = ServiceEntry::new(spec.name.clone(), spec.kind(), location);
    entry.ports = ports;
    if let Target::Package { version, .. } = &spec.target {
        entry.version = version.clone();
    }
    entry
}

/// Where `spec` runs, as far as the configuration alone tells: this host for
/// a process, its node for a service with a `host:` (remote, package, or a
/// container on that node's engine). A container of this host's engine is
/// only placed once it runs (it comes from the registry).
pub fn planned_location(
    spec: &ServiceSpec,
    topology: &NetworkTopology,
) -> Result<Location, ConfigError> {
    if spec.host().is_some() {
        return remote_location(spec, topology);
    }
    match spec.target {
        Target::Process { .. } => Ok(Location::LocalHost),
        Target::Docker(_) => Err(ConfigError::NotPlaced {
            service: spec.name.to_string(),
        }),
        Target::Remote { .. } | Target::Package { .. } => remote_location(spec, topology),
    }
}

/// The resolved environment of service `service` of `project`: its declared
/// `env` with references expanded, plus the generated variables (see
/// [`service_environment`]). The service's location comes from the registry
/// when it is registered (running or known), else from the configuration
/// ([`planned_location`]).
pub fn environment_for(
    project: &Project,
    registry: &RegistrySnapshot,
    topology: &NetworkTopology,
    service: &str,
) -> Result<BTreeMap<String, String>, EnvError> {
    let spec = project
        .services
        .get(service)
        .ok_or_else(|| EnvError::UnknownService {
            service: service.to_owned(),
            reference: None,
        })?;
    let entry = match registry.entries.get(service) {
        Some(e) => e.clone(),
        None => entry_from_spec(spec, planned_location(spec, topology)?),
    };
    service_environment(&project.name, registry, topology, &entry, &spec.env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness_config::{PortMapping, Protocol};
    use harness_core::{ServiceKind, ServiceName};

    fn cfg_node(host: &str, name: Option<&str>) -> harness_config::Node {
        harness_config::Node {
            host: host.into(),
            name: name.map(str::to_owned),
            ssh_user: "deploy".into(),
            ssh_key: None,
            ssh_port: None,
            package_deploy: false,
        }
    }

    fn networks() -> BTreeMap<String, harness_config::Network> {
        BTreeMap::from([
            (
                "lan".to_owned(),
                harness_config::Network::Lan {
                    subnet: "192.168.1.0/24".into(),
                    nodes: vec![
                        cfg_node("192.168.1.21", Some("n1")),
                        cfg_node("builder.lan", None),
                    ],
                },
            ),
            (
                "mesh".to_owned(),
                harness_config::Network::Wireguard {
                    subnet: "10.100.0.0/24".into(),
                    config_path: None,
                    nodes: vec![
                        cfg_node("10.100.0.30", Some("far")),
                        cfg_node("203.0.113.9", Some("edge")),
                    ],
                },
            ),
            (
                "dev".to_owned(),
                harness_config::Network::Local { subnet: None },
            ),
        ])
    }

    fn remote(name: &str, host: &str, network: Option<&str>) -> ServiceSpec {
        let mut s = ServiceSpec::process(ServiceName::new(name).unwrap(), "x", vec![]);
        s.target = Target::Remote {
            host: host.into(),
            binary: "/bin/api".into(),
            args: vec![],
        };
        s.network = network.map(str::to_owned);
        s
    }

    #[test]
    fn converts_networks_and_places_remote_services() {
        let t = topology_from_config(&networks(), HostNetwork::default()).unwrap();
        assert_eq!(t.networks.len(), 3);
        let (net, n1) = t.node("n1").unwrap();
        assert_eq!(
            (net.name.as_str(), n1.address),
            ("lan", Some("192.168.1.21".parse().unwrap()))
        );
        assert_eq!(t.node("builder.lan").unwrap().1.address, None);
        // A public SSH address is not a mesh address.
        assert_eq!(t.node("edge").unwrap().1.address, None);

        let loc = remote_location(&remote("api", "n1", None), &t).unwrap();
        assert_eq!(
            loc,
            Location::LanNode {
                node: "n1".into(),
                address: "192.168.1.21".parse().unwrap()
            }
        );
        let loc = remote_location(&remote("api", "10.100.0.30", Some("mesh")), &t).unwrap();
        assert_eq!(
            loc,
            Location::WireguardPeer {
                node: "far".into(),
                mesh_ip: "10.100.0.30".parse().unwrap()
            }
        );
        let e = remote_location(&remote("api", "n1", Some("mesh")), &t).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownNode { .. }), "{e}");
        assert!(e.to_string().contains("network `mesh`"), "{e}");
        let e = remote_location(&remote("api", "builder.lan", None), &t).unwrap_err();
        assert!(matches!(e, ConfigError::NodeWithoutAddress { .. }), "{e}");
        let local = ServiceSpec::process(ServiceName::new("w").unwrap(), "x", vec![]);
        assert!(matches!(
            remote_location(&local, &t),
            Err(ConfigError::NotRemote { .. })
        ));
    }

    #[test]
    fn bad_subnets_name_the_network() {
        let nets = BTreeMap::from([(
            "lan".to_owned(),
            harness_config::Network::Lan {
                subnet: "10.0.0.1/8".into(),
                nodes: vec![],
            },
        )]);
        let e = topology_from_config(&nets, HostNetwork::default()).unwrap_err();
        assert!(e.to_string().starts_with("network `lan`"), "{e}");
    }

    #[test]
    fn environment_of_a_configured_service() {
        use harness_core::ProjectName;
        let t = topology_from_config(&networks(), HostNetwork::default()).unwrap();
        let mut api = remote("api", "n1", None);
        api.ports = vec![PortMapping {
            host: None,
            host_ip: None,
            container: 9000,
            protocol: Protocol::Tcp,
        }];
        let mut web = ServiceSpec::process(ServiceName::new("web").unwrap(), "web", vec![]);
        web.env = BTreeMap::from([("API".to_owned(), "http://${api.ip}:${api.port}".to_owned())]);
        let mut db = ServiceSpec::process(ServiceName::new("db").unwrap(), "x", vec![]);
        db.target = Target::Docker(harness_config::DockerSpec {
            image: "postgres".into(),
            build: None,
            command: None,
            entrypoint: None,
            volumes: vec![],
            networks: vec![],
            security: Default::default(),
            resources: Default::default(),
            host: None,
        });
        let services = BTreeMap::from([
            (api.name.clone(), api.clone()),
            (web.name.clone(), web.clone()),
            (db.name.clone(), db.clone()),
        ]);
        let project = Project::new(
            ProjectName::new("shop").unwrap(),
            Default::default(),
            networks(),
            services,
        )
        .unwrap();
        let mut reg = RegistrySnapshot::default();
        let api_entry = entry_from_spec(&api, remote_location(&api, &t).unwrap());
        reg.entries.insert(api_entry.name.clone(), api_entry);

        // `web` is not registered: it is planned on this host.
        let env = environment_for(&project, &reg, &t, "web").unwrap();
        assert_eq!(env["API"], "http://192.168.1.21:9000");
        assert_eq!(env["API_HOST"], "n1");
        assert_eq!(env["HARNESS_PROJECT"], "shop");
        // A container that does not run yet has no place; an unknown service is an error.
        let e = environment_for(&project, &reg, &t, "db").unwrap_err();
        assert!(e.to_string().contains("`db`"), "{e}");
        assert!(environment_for(&project, &reg, &t, "nope").is_err());
    }

    #[test]
    fn entries_from_specs() {
        let mut s = ServiceSpec::process(ServiceName::new("db").unwrap(), "x", vec![]);
        s.ports = vec![
            PortMapping {
                host: Some(15432),
                host_ip: None,
                container: 5432,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host: None,
                host_ip: None,
                container: 9187,
                protocol: Protocol::Tcp,
            },
        ];
        let e = entry_from_spec(
            &s,
            Location::DockerNetwork {
                network: "app".into(),
                container_ip: "172.20.0.5".parse().unwrap(),
                published: vec![],
            },
        );
        assert_eq!(e.kind, ServiceKind::Process);
        assert_eq!(e.ports, [5432, 9187]);
        match e.location {
            Location::DockerNetwork { published, .. } => {
                assert_eq!(
                    published,
                    [PublishedPort {
                        host: 15432,
                        container: 5432
                    }]
                )
            }
            other => panic!("{other:?}"),
        }
        let e = entry_from_spec(&s, Location::LocalHost);
        assert_eq!(e.primary_port(), Some(5432));
    }
}
