//! Engine-wide calls: ping and version.

use http::Method;
use serde::Deserialize;

use crate::client::{Docker, empty_body};
use crate::error::Result;

/// What `GET /version` reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// The engine version, e.g. `20.10.24`.
    #[serde(default)]
    pub version: String,
    /// The newest API version the engine speaks.
    pub api_version: String,
    /// The oldest API version the engine accepts.
    #[serde(default, rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// The operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// The CPU architecture, e.g. `amd64`.
    #[serde(default)]
    pub arch: String,
}

impl Docker {
    /// Checks that the engine answers (`GET /_ping`).
    pub async fn ping(&self) -> Result<()> {
        let body = self
            .call(Method::GET, "/_ping", empty_body(), "ping")
            .await?;
        body.bytes().await?;
        Ok(())
    }

    /// The engine's version.
    pub async fn version(&self) -> Result<Version> {
        self.call(Method::GET, "/version", empty_body(), "version")
            .await?
            .json()
            .await
    }
}
