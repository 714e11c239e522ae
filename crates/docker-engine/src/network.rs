//! Networks: create, inspect, remove, connect, disconnect.

use std::collections::{BTreeMap, HashMap};

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::client::{Docker, Failure, empty_body, enc, json_body};
use crate::error::{DockerError, Result};

/// A container attached to a network, as inspected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkContainer {
    /// The container name.
    pub name: String,
    /// Its IPv4 address with prefix, e.g. `172.18.0.2/16`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
}

/// One IPAM pool of a network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    /// The subnet, e.g. `172.18.0.0/16`.
    pub subnet: String,
    /// The gateway.
    pub gateway: String,
}

/// IPAM settings of a network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    /// Pools.
    pub config: Option<Vec<IpamConfig>>,
}

/// What `GET /networks/{id}` reports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkInspect {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The driver, e.g. `bridge`.
    pub driver: String,
    /// Labels.
    pub labels: Option<HashMap<String, String>>,
    /// IPAM settings.
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// Attached containers by container id.
    pub containers: Option<HashMap<String, NetworkContainer>>,
}

impl Docker {
    /// Creates a bridge network; returns its id. [`DockerError::NameConflict`] when it exists.
    pub async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        subnet: Option<&str>,
    ) -> Result<String> {
        let mut body = json!({
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": true,
            "Labels": labels,
        });
        if let Some(s) = subnet {
            body["IPAM"] = json!({"Config": [{"Subnet": s}]});
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Created {
            id: String,
        }
        let path = "/networks/create";
        match self
            .request(
                Method::POST,
                path,
                json_body(&body),
                Some("application/json"),
            )
            .await
        {
            Ok(b) => Ok(b.json::<Created>().await?.id),
            Err(Failure::Status { status, message }) if status == StatusCode::CONFLICT => {
                Err(DockerError::NameConflict {
                    name: name.to_owned(),
                    message,
                })
            }
            Err(f) => Err(f.into_error(&Method::POST, path, &format!("network {name}"))),
        }
    }

    /// Inspects a network by id or name.
    pub async fn inspect_network(&self, id: &str) -> Result<NetworkInspect> {
        let path = format!("/networks/{}", enc(id));
        self.call(Method::GET, &path, empty_body(), &format!("network {id}"))
            .await?
            .json()
            .await
    }

    /// Every network named exactly `name`, inspected (the engine can hold
    /// several of one name when they were created at the same moment).
    pub async fn networks_named(&self, name: &str) -> Result<Vec<NetworkInspect>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Summary {
            id: String,
            name: String,
        }
        let filters = json!({ "name": { name: true } }).to_string();
        let path = format!("/networks?filters={}", enc(&filters));
        let list: Vec<Summary> = self
            .call(Method::GET, &path, empty_body(), "networks")
            .await?
            .json()
            .await?;
        let mut out = Vec::new();
        // The filter matches parts of names: keep the exact ones.
        for n in list.into_iter().filter(|n| n.name == name) {
            match self.inspect_network(&n.id).await {
                Ok(i) => out.push(i),
                Err(DockerError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes a network; a network that does not exist is not an error.
    pub async fn remove_network(&self, id: &str) -> Result<()> {
        let path = format!("/networks/{}", enc(id));
        match self
            .call(
                Method::DELETE,
                &path,
                empty_body(),
                &format!("network {id}"),
            )
            .await
        {
            Ok(b) => {
                b.bytes().await?;
                Ok(())
            }
            Err(DockerError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Attaches a container to a network, with DNS aliases.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        let path = format!("/networks/{}/connect", enc(network));
        let body = json!({"Container": container, "EndpointConfig": {"Aliases": aliases}});
        let b = self
            .call(
                Method::POST,
                &path,
                json_body(&body),
                &format!("network {network} or container {container}"),
            )
            .await?;
        b.bytes().await?;
        Ok(())
    }

    /// Detaches a container from a network.
    pub async fn disconnect_network(
        &self,
        network: &str,
        container: &str,
        force: bool,
    ) -> Result<()> {
        let path = format!("/networks/{}/disconnect", enc(network));
        let body = json!({"Container": container, "Force": force});
        let b = self
            .call(
                Method::POST,
                &path,
                json_body(&body),
                &format!("network {network} or container {container}"),
            )
            .await?;
        b.bytes().await?;
        Ok(())
    }
}
