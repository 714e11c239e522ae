//! Where a service can be reached.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An address at which a consumer reaches a service: what `${svc.ip}`,
/// `${svc.port}` and `${svc.host}` expand to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The IP address to connect to.
    pub ip: IpAddr,
    /// The primary port, if the service declares one.
    pub port: Option<u16>,
    /// A host name for the service (container name, node name, or `localhost`).
    pub host: String,
}

impl Endpoint {
    /// An endpoint on the loopback interface.
    pub fn loopback(port: Option<u16>) -> Self {
        Endpoint {
            ip: IpAddr::from([127, 0, 0, 1]),
            port,
            host: "localhost".to_owned(),
        }
    }

    /// The value of a `${svc.FIELD}` reference, for FIELD in `ip`, `port`, `host`.
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "ip" => Some(self.ip.to_string()),
            "port" => self.port.map(|p| p.to_string()),
            "host" => Some(self.host.clone()),
            _ => None,
        }
    }
}
