//! Where a manager's services run and how they reach each other.
//!
//! A [`Placement`] joins the project with a service [`Registry`] and the
//! [`NetworkTopology`] (the configured networks plus this host's real
//! addresses). The manager records in the registry where each service runs
//! once it is launched (the location its instance reports, else the one the
//! configuration gives) and its state as it changes. Every `${svc.ip}`,
//! `${svc.port}` and `${svc.host}` is then answered by one function,
//! [`service_registry::resolve()`], from the consumer's point of view (ADR 017).
//!
//! A service that has not run yet is placed from the configuration: a process
//! on this host, a service with `host:` on its node, a container of this
//! host's engine on the project network at its published ports (its address
//! is known once it runs; its host name, the container name, is known now).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use harness_config::{Project, ServiceSpec, Target};
use harness_core::{Endpoint, ServiceName, ServiceState};
use service_registry::{
    ConfigError, EnvError, HostNetwork, IpNet, IpPool, Location, NetworkTopology, Registry,
    RegistryError, RegistrySnapshot, ResolveError, ServiceEntry, entry_from_spec, planned_location,
    resolve, service_environment, topology_from_config,
};

use crate::docker::DockerExecutor;
use crate::executor::ReservedAddress;

/// The project's services in a registry, resolved through a topology.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Placement {
    inner: Arc<Inner>,
}

struct Inner {
    project: Arc<Project>,
    registry: Registry,
    topology: RwLock<Arc<NetworkTopology>>,
    last_refresh: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("project", &self.inner.project.name)
            .field("registry", &self.inner.registry)
            .finish_non_exhaustive()
    }
}

/// Why a reference to a service cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The project has no such service.
    #[error("no service `{0}` in the project")]
    UnknownService(String),
    /// The service cannot be placed from the configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The consumer cannot reach the provider.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

impl Placement {
    /// A placement of `project`'s services in `registry`, resolved through `topology`.
    pub fn new(project: Arc<Project>, registry: Registry, topology: NetworkTopology) -> Placement {
        Placement {
            inner: Arc::new(Inner {
                project,
                registry,
                topology: RwLock::new(Arc::new(topology)),
                last_refresh: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The topology of `project`: its configured networks joined with this
    /// host's addresses as the system reports them (none if they cannot be read).
    /// Nodes whose `host` is a DNS name get no address here; see
    /// [`NetworkTopology::resolve_node_names`].
    pub fn topology_of(project: &Project) -> Result<NetworkTopology, ConfigError> {
        let host = HostNetwork::read().unwrap_or_default();
        topology_from_config(&project.networks, host)
    }

    /// The registry the services are recorded in.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The topology in use.
    pub fn topology(&self) -> Arc<NetworkTopology> {
        self.inner
            .topology
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads this host's addresses again when none of them faces `peer` (a
    /// Docker bridge created after the topology was read, for instance); at
    /// most once a second, and never for an address that is not one yet.
    pub fn refresh_host_toward(&self, peer: IpAddr) {
        if peer.is_unspecified() || self.topology().host_address_toward(peer).is_some() {
            return;
        }
        {
            let mut last = self
                .inner
                .last_refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Ok(host) = HostNetwork::read() {
            let mut slot = self
                .inner
                .topology
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let mut t = (**slot).clone();
            t.host = host;
            *slot = Arc::new(t);
        }
    }

    fn spec(&self, service: &str) -> Result<&ServiceSpec, PlacementError> {
        self.inner
            .project
            .services
            .get(service)
            .ok_or_else(|| PlacementError::UnknownService(service.to_owned()))
    }

    /// The entry of `service`: the registry's, else the one its configuration plans.
    pub fn entry(&self, service: &str) -> Result<ServiceEntry, PlacementError> {
        if let Some(e) = self.inner.registry.get(service) {
            return Ok(e);
        }
        self.planned(self.spec(service)?)
    }

    fn planned(&self, spec: &ServiceSpec) -> Result<ServiceEntry, PlacementError> {
        match planned_location(spec, &self.topology()) {
            Ok(location) => Ok(entry_from_spec(spec, location)),
            Err(ConfigError::NotPlaced { .. }) => {
                let project = self.inner.project.name.as_str();
                let mut entry = entry_from_spec(
                    spec,
                    Location::DockerNetwork {
                        network: DockerExecutor::network_name(project),
                        container_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        published: Vec::new(),
                    },
                );
                entry.hostname = Some(DockerExecutor::container_name(project, spec.name.as_str()));
                Ok(entry)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every service of the project: the registered ones as registered, the
    /// others as planned (those that cannot be placed are left out).
    pub fn snapshot(&self) -> RegistrySnapshot {
        let mut snapshot = self.inner.registry.snapshot();
        for spec in self.inner.project.services.values() {
            if !snapshot.entries.contains_key(&spec.name)
                && let Ok(e) = self.planned(spec)
            {
                snapshot.entries.insert(spec.name.clone(), e);
            }
        }
        snapshot
    }

    /// Where a consumer at `consumer` reaches `provider`.
    pub fn endpoint(
        &self,
        consumer: &Location,
        provider: &str,
    ) -> Result<Endpoint, PlacementError> {
        let entry = self.entry(provider)?;
        if let Some(peer) = consumer.address() {
            self.refresh_host_toward(peer);
        }
        Ok(resolve(&self.topology(), &entry, consumer)?)
    }

    /// Where `consumer` (a service of the project, placed as registered or
    /// planned) reaches `provider`. A service asking about itself is seen
    /// from this host: that is where its checks run from.
    pub fn endpoint_between(
        &self,
        consumer: &ServiceName,
        provider: &ServiceName,
    ) -> Result<Endpoint, PlacementError> {
        let at = if consumer == provider {
            Location::LocalHost
        } else {
            self.entry(consumer.as_str())?.location
        };
        self.endpoint(&at, provider.as_str())
    }

    /// The environment `service` gets when it runs at `at`: its declared
    /// `env` with references resolved from there, the generated
    /// `<SVC>_HOST/_IP/_PORT` (see [`service_environment`]) of the services
    /// it depends on or refers to, and `HARNESS_PROJECT`/`HARNESS_SERVICE`.
    /// What `harness env SERVICE` prints.
    pub fn environment(
        &self,
        service: &str,
        at: Option<Location>,
    ) -> Result<BTreeMap<String, String>, EnvError> {
        let spec = self.spec(service).map_err(|_| EnvError::UnknownService {
            service: service.to_owned(),
            reference: None,
        })?;
        let mut entry = match self.entry(service) {
            Ok(e) => e,
            Err(PlacementError::Config(e)) => return Err(EnvError::Placement(e)),
            Err(_) => {
                return Err(EnvError::UnknownService {
                    service: service.to_owned(),
                    reference: None,
                });
            }
        };
        if let Some(at) = at {
            if let Some(peer) = at.address() {
                self.refresh_host_toward(peer);
            }
            entry.location = at;
        }
        // Generated variables for what it depends on and what its `env`
        // refers to: those are placed before it starts, so what it gets does
        // not depend on which other services happen to run.
        let mut relevant: Vec<&ServiceName> =
            spec.dependencies.iter().map(|d| &d.service).collect();
        let refs: Vec<ServiceName> = spec
            .env
            .values()
            .flat_map(|v| harness_config::template::references(v))
            .map(|r| r.service)
            .collect();
        relevant.extend(refs.iter());
        // Only those entries: O(dependencies), not O(services), per start.
        let mut snapshot = RegistrySnapshot::default();
        for name in relevant {
            if let Ok(e) = self.entry(name.as_str()) {
                snapshot.entries.insert(name.clone(), e);
            }
        }
        service_environment(
            &self.inner.project.name,
            &snapshot,
            &self.topology(),
            &entry,
            &spec.env,
        )
    }

    /// The address kept for container `spec` on the project network, when
    /// the project configures a subnet for it (the first `local` network
    /// with a `subnet`): the one it held before, else a free one. Addresses
    /// are stable across restarts (the registry persists them) and never
    /// the network's gateway; a full subnet is an error naming it.
    pub async fn reserve_address(
        &self,
        spec: &ServiceSpec,
    ) -> Result<Option<ReservedAddress>, String> {
        if !matches!(spec.target, Target::Docker(_)) || spec.host().is_some() {
            return Ok(None);
        }
        let Some((name, subnet)) =
            self.inner
                .project
                .networks
                .iter()
                .find_map(|(name, n)| match n {
                    harness_config::Network::Local { subnet: Some(s) } => Some((name, s)),
                    _ => None,
                })
        else {
            return Ok(None);
        };
        let subnet: IpNet = subnet
            .parse()
            .map_err(|e| format!("network `{name}`: {e}"))?;
        let pool_name = DockerExecutor::network_name(self.inner.project.name.as_str());
        let pool = IpPool::new(pool_name.clone(), subnet, None)
            .map_err(|e| format!("network `{name}`: {e}"))?;
        let registry = &self.inner.registry;
        // The configuration is the truth: another subnet replaces the pool.
        registry
            .replace_pool(pool)
            .await
            .map_err(|e| format!("network `{name}`: {e}"))?;
        // Services no longer in the configuration give their addresses back.
        let gone: Vec<ServiceName> = registry
            .pool(&pool_name)
            .map(|p| {
                p.assignments()
                    .filter_map(|(owner, _)| ServiceName::new(owner).ok())
                    .filter(|owner| !self.inner.project.services.contains_key(owner))
                    .collect()
            })
            .unwrap_or_default();
        for owner in gone {
            registry
                .release(&pool_name, &owner)
                .await
                .map_err(|e| format!("network `{name}`: {e}"))?;
        }
        let ip = registry
            .allocate(&pool_name, &spec.name)
            .await
            .map_err(|e| format!("network `{name}`: {e}"))?;
        Ok(Some(ReservedAddress { ip, subnet }))
    }

    /// Records that `spec` now runs at `location` (or where its configuration
    /// puts it), in state `state`, with the version it runs (a package
    /// service's deployed version; else the configured one).
    pub async fn record_launch(
        &self,
        spec: &ServiceSpec,
        location: Option<Location>,
        version: Option<String>,
        state: ServiceState,
    ) -> Result<(), RegistryError> {
        let mut entry = match location {
            Some(l) => entry_from_spec(spec, l),
            None => match self.planned(spec) {
                Ok(e) => e,
                // Nowhere to put it: references to it fail with the reason.
                Err(_) => return Ok(()),
            },
        };
        if matches!(spec.target, Target::Docker(_))
            && matches!(entry.location, Location::DockerNetwork { .. })
            && entry.hostname.is_none()
        {
            entry.hostname = Some(DockerExecutor::container_name(
                self.inner.project.name.as_str(),
                spec.name.as_str(),
            ));
        }
        entry.state = state;
        if version.is_some() {
            entry.version = version;
        }
        self.inner.registry.upsert(entry).await
    }

    /// Records a state change of a registered service (nothing if it is not registered).
    pub async fn record_state(
        &self,
        service: &ServiceName,
        state: ServiceState,
    ) -> Result<(), RegistryError> {
        match self
            .inner
            .registry
            .update(service.as_str(), move |e| e.state = state)
            .await
        {
            Err(RegistryError::NotFound(_)) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use harness_config::{
        DockerSpec, Network, Node, PortMapping, Protocol, Resources, Security, Settings,
    };
    use harness_core::ProjectName;

    use super::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn remote(svc: &str, env: &[(&str, &str)]) -> ServiceSpec {
        let mut s = ServiceSpec::process(name(svc), "unused", vec![]);
        s.target = Target::Remote {
            host: "n1".into(),
            binary: "sh".into(),
            args: vec![],
        };
        s.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        s
    }

    /// A container on a node is a host of its own: the node's services are
    /// at the node's address from inside it, at loopback from a process there.
    #[test]
    fn a_container_on_a_node_reaches_the_nodes_services_at_its_address() {
        let mut api = remote("api", &[]);
        api.ports = vec![PortMapping {
            host: None,
            host_ip: None,
            container: 8080,
            protocol: Protocol::Tcp,
        }];
        let sidecar = remote("sidecar", &[("API", "${api.ip}:${api.port}")]);
        let mut web = remote("web", &[("API", "${api.ip}:${api.port}")]);
        web.target = Target::Docker(DockerSpec {
            image: "web".into(),
            build: None,
            command: None,
            entrypoint: None,
            volumes: vec![],
            networks: vec![],
            security: Security::default(),
            resources: Resources::default(),
            host: Some("n1".into()),
        });
        let networks = BTreeMap::from([(
            "lan".to_owned(),
            Network::Lan {
                subnet: "10.9.0.0/24".into(),
                nodes: vec![Node {
                    host: "10.9.0.5".into(),
                    name: Some("n1".into()),
                    ssh_user: "root".into(),
                    ssh_key: None,
                    ssh_port: None,
                    package_deploy: false,
                }],
            },
        )]);
        let services = [api, sidecar, web]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let project = Arc::new(
            Project::new(
                ProjectName::new("p").unwrap(),
                Settings::default(),
                networks,
                services,
            )
            .unwrap(),
        );
        let topology = topology_from_config(&project.networks, HostNetwork::default()).unwrap();
        let placement = Placement::new(project, Registry::in_memory(), topology);
        let env = |svc: &str| placement.environment(svc, None).unwrap()["API"].clone();
        assert_eq!(env("sidecar"), "127.0.0.1:8080");
        assert_eq!(env("web"), "10.9.0.5:8080");
    }

    fn container(svc: &str) -> ServiceSpec {
        let mut s = ServiceSpec::process(name(svc), "unused", vec![]);
        s.target = Target::Docker(DockerSpec {
            image: "img".into(),
            build: None,
            command: None,
            entrypoint: None,
            volumes: vec![],
            networks: vec![],
            security: Security::default(),
            resources: Resources::default(),
            host: None,
        });
        s
    }

    /// Kept addresses: stable, never the gateway, given back by services no
    /// longer configured, and moved to a new subnet when the configuration does.
    #[test]
    fn kept_addresses_follow_the_configuration() {
        let project = |subnet: &str| {
            Arc::new(
                Project::new(
                    ProjectName::new("p").unwrap(),
                    Settings::default(),
                    BTreeMap::from([(
                        "local".to_owned(),
                        Network::Local {
                            subnet: Some(subnet.into()),
                        },
                    )]),
                    [container("db")]
                        .into_iter()
                        .map(|s| (s.name.clone(), s))
                        .collect(),
                )
                .unwrap(),
            )
        };
        futures_lite::future::block_on(async {
            let registry = Registry::in_memory();
            let pool = DockerExecutor::network_name("p");
            let at = |subnet: &str| {
                Placement::new(
                    project(subnet),
                    registry.clone(),
                    NetworkTopology::default(),
                )
            };
            let first = at("10.9.1.0/24");
            // An address held by a service since removed from the configuration.
            first
                .registry()
                .define_pool(
                    IpPool::new(pool.clone(), "10.9.1.0/24".parse().unwrap(), None).unwrap(),
                )
                .await
                .unwrap();
            first
                .registry()
                .allocate(&pool, &name("gone"))
                .await
                .unwrap();
            let db = container("db");
            let a = first.reserve_address(&db).await.unwrap().unwrap();
            assert_ne!(a.ip.to_string(), "10.9.1.1", "never the gateway");
            assert_eq!(
                first.reserve_address(&db).await.unwrap().unwrap(),
                a,
                "stable"
            );
            let held: Vec<String> = registry
                .pool(&pool)
                .unwrap()
                .assignments()
                .map(|(o, _)| o.to_owned())
                .collect();
            assert_eq!(held, ["db"], "the removed service gave its address back");
            // Another subnet in the configuration: the address moves there.
            let moved = at("10.9.2.0/24")
                .reserve_address(&db)
                .await
                .unwrap()
                .unwrap();
            assert!(moved.subnet.contains(moved.ip) && moved.ip.to_string().starts_with("10.9.2."));
            // Processes and containers on nodes get none.
            let mut remote = container("r");
            remote.target = Target::Remote {
                host: "n1".into(),
                binary: "sh".into(),
                args: vec![],
            };
            assert_eq!(first.reserve_address(&remote).await.unwrap(), None);
        });
    }
}
