//! Where one service reaches another: what `${svc.ip}`, `${svc.port}` and
//! `${svc.host}` expand to.

use std::collections::BTreeMap;

use harness_config::Project;
use harness_core::{Endpoint, ServiceName};

/// Answers where `consumer` reaches `service`. The registry implements it
/// location-aware (container IPs, LAN and mesh addresses); the default,
/// [`LoopbackResolver`], knows only this machine.
pub trait EndpointResolver: Send + Sync + 'static {
    /// The endpoint of `service` as seen from `consumer`, if known.
    fn endpoint(&self, consumer: &ServiceName, service: &ServiceName) -> Option<Endpoint>;
}

/// Every service on loopback (`127.0.0.1`, host `localhost`) at its primary port.
#[derive(Debug, Clone, Default)]
pub struct LoopbackResolver {
    ports: BTreeMap<ServiceName, Option<u16>>,
}

impl LoopbackResolver {
    /// The resolver for the services of `project`.
    pub fn new(project: &Project) -> Self {
        LoopbackResolver {
            ports: project
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.primary_port()))
                .collect(),
        }
    }
}

impl EndpointResolver for LoopbackResolver {
    fn endpoint(&self, _consumer: &ServiceName, service: &ServiceName) -> Option<Endpoint> {
        self.ports.get(service).map(|p| Endpoint::loopback(*p))
    }
}
