//! Address resolution, as a table of every (provider location, consumer location) pair.

use std::collections::BTreeSet;

use harness_core::{ServiceKind, ServiceName};
use service_registry::{
    HostAddress, HostNetwork, Location, Network, NetworkKind, NetworkTopology, Node, PublishedPort,
    ResolveError, ServiceEntry, resolve,
};

fn topology() -> NetworkTopology {
    let a = |i: &str, ip: &str, p| HostAddress {
        interface: i.into(),
        ip: ip.parse().unwrap(),
        prefix: p,
    };
    let host = HostNetwork {
        hostname: "ctl".into(),
        addresses: vec![
            a("lo", "127.0.0.1", 8),
            a("eth0", "192.168.1.10", 24),
            a("wg0", "10.100.0.1", 24),
            a("br-app", "172.20.0.1", 16),
            a("br-other", "172.21.0.1", 16),
        ],
    };
    NetworkTopology::new(host)
        .with_network(Network {
            name: "lan".into(),
            kind: NetworkKind::Lan {
                subnet: "192.168.1.0/24".parse().unwrap(),
                nodes: vec![
                    Node::new("n1", "192.168.1.21"),
                    Node::new("n2", "192.168.1.22"),
                ],
            },
        })
        .with_network(Network {
            name: "mesh".into(),
            kind: NetworkKind::Wireguard {
                subnet: "10.100.0.0/24".parse().unwrap(),
                nodes: vec![
                    Node::new("n1", "192.168.1.21").with_address("10.100.0.21".parse().unwrap()),
                    Node::new("far", "far.example.org")
                        .with_address("10.100.0.30".parse().unwrap()),
                ],
            },
        })
        .with_network(Network {
            name: "app".into(),
            kind: NetworkKind::Docker {
                subnet: Some("172.20.0.0/16".parse().unwrap()),
                gateway: Some("172.20.0.1".parse().unwrap()),
            },
        })
}

fn docker(network: &str, ip: &str, published: &[(u16, u16)]) -> Location {
    Location::DockerNetwork {
        network: network.into(),
        container_ip: ip.parse().unwrap(),
        published: published
            .iter()
            .map(|&(host, container)| PublishedPort { host, container })
            .collect(),
    }
}

fn lan(node: &str, ip: &str) -> Location {
    Location::LanNode {
        node: node.into(),
        address: ip.parse().unwrap(),
    }
}

fn wg(node: &str, ip: &str) -> Location {
    Location::WireguardPeer {
        node: node.into(),
        mesh_ip: ip.parse().unwrap(),
    }
}

fn node_container(node: &str, ip: &str) -> Location {
    Location::NodeContainer {
        node: node.into(),
        address: ip.parse().unwrap(),
    }
}

fn provider(name: &str, location: Location, ports: &[u16], hostname: Option<&str>) -> ServiceEntry {
    let kind = match location {
        Location::LocalHost => ServiceKind::Process,
        Location::DockerNetwork { .. } => ServiceKind::Docker,
        _ => ServiceKind::Remote,
    };
    let mut e = ServiceEntry::new(ServiceName::new(name).unwrap(), kind, location)
        .with_ports(ports.iter().copied());
    e.hostname = hostname.map(str::to_owned);
    e
}

/// `ip:port host`, `ip:- host` without a port, or `ERR <variant>`.
fn show(r: Result<harness_core::Endpoint, ResolveError>) -> String {
    match r {
        Ok(ep) => format!(
            "{}:{} {}",
            ep.ip,
            ep.port.map_or("-".to_owned(), |p| p.to_string()),
            ep.host
        ),
        Err(ResolveError::NotPublished { .. }) => "ERR NotPublished".into(),
        Err(ResolveError::NoHostAddress { .. }) => "ERR NoHostAddress".into(),
    }
}

#[test]
fn every_provider_consumer_pair() {
    let t = topology();
    let providers = [
        ("local", provider("web", Location::LocalHost, &[8080], None)),
        (
            "local-noport",
            provider("job", Location::LocalHost, &[], None),
        ),
        (
            "docker-published",
            provider(
                "db",
                docker("app", "172.20.0.5", &[(15432, 5432)]),
                &[5432],
                Some("proj-db"),
            ),
        ),
        (
            "docker-unpublished",
            provider(
                "cache",
                docker("app", "172.20.0.6", &[]),
                &[6379],
                Some("proj-cache"),
            ),
        ),
        (
            "lan",
            provider("api", lan("n1", "192.168.1.21"), &[9000], None),
        ),
        (
            "wireguard",
            provider("edge", wg("far", "10.100.0.30"), &[7000], None),
        ),
        (
            "node-container",
            provider("web", node_container("n1", "192.168.1.21"), &[9100], None),
        ),
    ];
    let consumers = [
        ("local", Location::LocalHost),
        ("docker-same", docker("app", "172.20.0.9", &[])),
        ("docker-other", docker("other", "172.21.0.4", &[])),
        ("lan-n1", lan("n1", "192.168.1.21")),
        ("lan-n2", lan("n2", "192.168.1.22")),
        ("lan-unrouted", lan("lost", "10.99.0.5")),
        ("wg-far", wg("far", "10.100.0.30")),
        ("wg-n1", wg("n1", "10.100.0.21")),
        ("nc-n1", node_container("n1", "192.168.1.21")),
    ];
    #[rustfmt::skip]
    let table: &[(&str, &str, &str)] = &[
        // A local process: loopback locally; elsewhere, this host's address facing the consumer.
        ("local", "local",        "127.0.0.1:8080 localhost"),
        ("local", "docker-same",  "172.20.0.1:8080 172.20.0.1"),
        ("local", "docker-other", "172.21.0.1:8080 172.21.0.1"),
        ("local", "lan-n1",       "192.168.1.10:8080 ctl"),
        ("local", "lan-n2",       "192.168.1.10:8080 ctl"),
        ("local", "lan-unrouted", "ERR NoHostAddress"),
        ("local", "wg-far",       "10.100.0.1:8080 ctl"),
        ("local", "wg-n1",        "10.100.0.1:8080 ctl"),
        ("local", "nc-n1",        "192.168.1.10:8080 ctl"),
        // Without a port, only the address is resolved.
        ("local-noport", "local",        "127.0.0.1:- localhost"),
        ("local-noport", "docker-same",  "172.20.0.1:- 172.20.0.1"),
        ("local-noport", "docker-other", "172.21.0.1:- 172.21.0.1"),
        ("local-noport", "lan-n1",       "192.168.1.10:- ctl"),
        ("local-noport", "lan-n2",       "192.168.1.10:- ctl"),
        ("local-noport", "lan-unrouted", "ERR NoHostAddress"),
        ("local-noport", "wg-far",       "10.100.0.1:- ctl"),
        ("local-noport", "wg-n1",        "10.100.0.1:- ctl"),
        ("local-noport", "nc-n1",        "192.168.1.10:- ctl"),
        // A container with a published port: loopback + host port from this host, container
        // address on its own network, this host's facing address + host port elsewhere.
        ("docker-published", "local",        "127.0.0.1:15432 localhost"),
        ("docker-published", "docker-same",  "172.20.0.5:5432 proj-db"),
        ("docker-published", "docker-other", "172.21.0.1:15432 172.21.0.1"),
        ("docker-published", "lan-n1",       "192.168.1.10:15432 ctl"),
        ("docker-published", "lan-n2",       "192.168.1.10:15432 ctl"),
        ("docker-published", "lan-unrouted", "ERR NoHostAddress"),
        ("docker-published", "wg-far",       "10.100.0.1:15432 ctl"),
        ("docker-published", "wg-n1",        "10.100.0.1:15432 ctl"),
        ("docker-published", "nc-n1",        "192.168.1.10:15432 ctl"),
        // An unpublished container: reachable from this host (bridge routing) and its own
        // network only.
        ("docker-unpublished", "local",        "172.20.0.6:6379 proj-cache"),
        ("docker-unpublished", "docker-same",  "172.20.0.6:6379 proj-cache"),
        ("docker-unpublished", "docker-other", "ERR NotPublished"),
        ("docker-unpublished", "lan-n1",       "ERR NotPublished"),
        ("docker-unpublished", "lan-n2",       "ERR NotPublished"),
        ("docker-unpublished", "lan-unrouted", "ERR NotPublished"),
        ("docker-unpublished", "wg-far",       "ERR NotPublished"),
        ("docker-unpublished", "wg-n1",        "ERR NotPublished"),
        ("docker-unpublished", "nc-n1",        "ERR NotPublished"),
        // A LAN node: loopback on the node itself; its address in the consumer's network
        // when it is a member there (n1 is also on the mesh); else its LAN address.
        ("lan", "local",        "192.168.1.21:9000 n1"),
        ("lan", "docker-same",  "192.168.1.21:9000 n1"),
        ("lan", "docker-other", "192.168.1.21:9000 n1"),
        ("lan", "lan-n1",       "127.0.0.1:9000 localhost"),
        ("lan", "lan-n2",       "192.168.1.21:9000 n1"),
        ("lan", "lan-unrouted", "192.168.1.21:9000 n1"),
        ("lan", "wg-far",       "10.100.0.21:9000 n1"),
        ("lan", "wg-n1",        "127.0.0.1:9000 localhost"),
        // A container on n1 is a host of its own: n1's services are at n1's address.
        ("lan", "nc-n1",        "192.168.1.21:9000 n1"),
        // A WireGuard peer: its mesh address, loopback on the peer itself.
        ("wireguard", "local",        "10.100.0.30:7000 far"),
        ("wireguard", "docker-same",  "10.100.0.30:7000 far"),
        ("wireguard", "docker-other", "10.100.0.30:7000 far"),
        ("wireguard", "lan-n1",       "10.100.0.30:7000 far"),
        ("wireguard", "lan-n2",       "10.100.0.30:7000 far"),
        ("wireguard", "lan-unrouted", "10.100.0.30:7000 far"),
        ("wireguard", "wg-far",       "127.0.0.1:7000 localhost"),
        ("wireguard", "wg-n1",        "10.100.0.30:7000 far"),
        ("wireguard", "nc-n1",        "10.100.0.30:7000 far"),
        // A container on a node: the node's address (published port), loopback only for a
        // process on that node, the node's address for another container there.
        ("node-container", "local",        "192.168.1.21:9100 n1"),
        ("node-container", "docker-same",  "192.168.1.21:9100 n1"),
        ("node-container", "docker-other", "192.168.1.21:9100 n1"),
        ("node-container", "lan-n1",       "127.0.0.1:9100 localhost"),
        ("node-container", "lan-n2",       "192.168.1.21:9100 n1"),
        ("node-container", "lan-unrouted", "192.168.1.21:9100 n1"),
        ("node-container", "wg-far",       "10.100.0.21:9100 n1"),
        ("node-container", "wg-n1",        "127.0.0.1:9100 localhost"),
        ("node-container", "nc-n1",        "192.168.1.21:9100 n1"),
    ];

    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for &(p, c, want) in table {
        let (_, prov) = providers.iter().find(|(n, _)| *n == p).unwrap();
        let (_, cons) = consumers.iter().find(|(n, _)| *n == c).unwrap();
        let got = show(resolve(&t, prov, cons));
        if got != want {
            failures.push(format!("{p} seen from {c}: got `{got}`, want `{want}`"));
        }
        assert!(covered.insert((p, c)), "duplicate row {p}/{c}");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Every pair is in the table, and every kind of location on both sides.
    assert_eq!(covered.len(), providers.len() * consumers.len());
    let labels = |locs: Vec<&Location>| locs.iter().map(|l| l.label()).collect::<BTreeSet<_>>();
    let all: BTreeSet<_> = ["local", "docker", "lan", "wireguard", "node-container"].into();
    assert_eq!(
        labels(providers.iter().map(|(_, e)| &e.location).collect()),
        all
    );
    assert_eq!(labels(consumers.iter().map(|(_, l)| l).collect()), all);
}

#[test]
fn errors_name_the_service_and_the_consumer() {
    let t = topology();
    let cache = provider("cache", docker("app", "172.20.0.6", &[]), &[6379], None);
    let e = resolve(&t, &cache, &lan("n2", "192.168.1.22"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`cache`") && e.contains("n2") && e.contains("6379"),
        "{e}"
    );
    let web = provider("web", Location::LocalHost, &[80], None);
    let e = resolve(&t, &web, &lan("lost", "10.99.0.5"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`web`") && e.contains("10.99.0.5"), "{e}");
}

#[test]
fn ipv6_networks_resolve_the_same_way() {
    let host = HostNetwork {
        hostname: "ctl".into(),
        addresses: vec![HostAddress {
            interface: "eth0".into(),
            ip: "fd12:3456::10".parse().unwrap(),
            prefix: 64,
        }],
    };
    let t = NetworkTopology::new(host).with_network(Network {
        name: "lan6".into(),
        kind: NetworkKind::Lan {
            subnet: "fd12:3456::/64".parse().unwrap(),
            nodes: vec![Node::new("n6", "fd12:3456::21")],
        },
    });
    let web = provider("web", Location::LocalHost, &[8080], None);
    let api = provider("api", lan("n6", "fd12:3456::21"), &[9000], None);
    assert_eq!(
        show(resolve(&t, &web, &lan("n6", "fd12:3456::21"))),
        "fd12:3456::10:8080 ctl"
    );
    assert_eq!(
        show(resolve(&t, &api, &Location::LocalHost)),
        "fd12:3456::21:9000 n6"
    );
    assert_eq!(
        show(resolve(&t, &web, &lan("v4", "192.168.9.9"))),
        "ERR NoHostAddress"
    );
}
