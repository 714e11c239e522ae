//! Containers: create, start, stop, kill, remove, inspect, list, wait.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use harness_core::Signal;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Docker, Failure, empty_body, enc, json_body, query};
use crate::error::{DockerError, Result};

/// A transport protocol of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A container port, exposed and optionally published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// The port inside the container.
    pub container_port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// Publish it on the host: `None` exposes only; `Some(0)` lets the engine
    /// pick a free host port; `Some(p)` asks for port `p`.
    pub host_port: Option<u16>,
    /// The host address to bind when published (default `127.0.0.1`... set
    /// `0.0.0.0` to publish on every interface).
    pub host_ip: Option<IpAddr>,
}

impl PortSpec {
    /// A TCP port published on loopback at `host_port` (`0` = any free port).
    pub fn published(container_port: u16, host_port: u16) -> PortSpec {
        PortSpec {
            container_port,
            protocol: Protocol::Tcp,
            host_port: Some(host_port),
            host_ip: Some(IpAddr::from([127, 0, 0, 1])),
        }
    }

    /// A TCP port exposed to other containers only.
    pub fn exposed(container_port: u16) -> PortSpec {
        PortSpec {
            container_port,
            protocol: Protocol::Tcp,
            host_port: None,
            host_ip: None,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.protocol.as_str())
    }
}

/// What a mount brings into the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MountSource {
    /// A host path.
    Bind(String),
    /// A named volume (created on first use).
    Volume(String),
    /// An in-memory file system, with optional size in bytes.
    Tmpfs(Option<u64>),
}

/// A mount of the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    /// What is mounted.
    pub source: MountSource,
    /// Where, inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything needed to create a container. Fields left at their defaults are
/// not sent, so the image's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container name (unique on the engine), or `None` for a generated one.
    pub name: Option<String>,
    /// The image reference.
    pub image: String,
    /// The command (the image's `CMD` when `None`).
    pub cmd: Option<Vec<String>>,
    /// The entrypoint (the image's when `None`; `Some(vec![])` clears it).
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// The user (`name`, `uid`, `uid:gid`).
    pub user: Option<String>,
    /// Ports: exposed, and published when they have a host port.
    pub ports: Vec<PortSpec>,
    /// Mounts (bind, volume, tmpfs).
    pub mounts: Vec<Mount>,
    /// A read-only root file system.
    pub read_only_rootfs: bool,
    /// Capabilities to drop (`ALL` for all).
    pub cap_drop: Vec<String>,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// Forbid gaining privileges (`no-new-privileges` security option).
    pub no_new_privileges: bool,
    /// Further security options, verbatim.
    pub security_opt: Vec<String>,
    /// The OCI runtime, e.g. `runsc`; the engine's default when `None`.
    pub runtime: Option<String>,
    /// CPU limit in units of 1e-9 CPUs.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// The network to attach to at creation.
    pub network: Option<String>,
    /// DNS aliases on that network.
    pub aliases: Vec<String>,
    /// A fixed IPv4 address on that network (which must have a configured subnet).
    pub ipv4_address: Option<std::net::Ipv4Addr>,
    /// The signal `stop` sends (default: the image's, usually SIGTERM).
    pub stop_signal: Option<Signal>,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: Option<u32>,
    /// Run an init process as PID 1 that reaps zombies.
    pub init: bool,
    /// Allocate a TTY (output is then not multiplexed).
    pub tty: bool,
}

impl ContainerSpec {
    /// A spec for `image` with every other field at its default.
    pub fn new(image: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            image: image.into(),
            ..ContainerSpec::default()
        }
    }

    /// The JSON body of `POST /containers/create`.
    pub fn to_json(&self) -> Value {
        let mut config = serde_json::Map::new();
        config.insert("Image".into(), json!(self.image));
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if let Some(ep) = &self.entrypoint {
            // An empty array would keep the image's entrypoint; [""] clears it.
            if ep.is_empty() {
                config.insert("Entrypoint".into(), json!([""]));
            } else {
                config.insert("Entrypoint".into(), json!(ep));
            }
        }
        if !self.env.is_empty() {
            let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            config.insert("Env".into(), json!(env));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        if let Some(w) = &self.working_dir {
            config.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &self.user {
            config.insert("User".into(), json!(u));
        }
        if let Some(s) = self.stop_signal {
            config.insert("StopSignal".into(), json!(s.name()));
        }
        if let Some(t) = self.stop_timeout {
            config.insert("StopTimeout".into(), json!(t));
        }
        config.insert("Tty".into(), json!(self.tty));
        config.insert("AttachStdout".into(), json!(false));
        config.insert("AttachStderr".into(), json!(false));

        let mut host = serde_json::Map::new();
        if !self.ports.is_empty() {
            let mut exposed = serde_json::Map::new();
            let mut bindings: serde_json::Map<String, Value> = serde_json::Map::new();
            for p in &self.ports {
                exposed.insert(p.key(), json!({}));
                if let Some(hp) = p.host_port {
                    let ip = p
                        .host_ip
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "127.0.0.1".into());
                    let hp = if hp == 0 {
                        String::new()
                    } else {
                        hp.to_string()
                    };
                    let entry = bindings.entry(p.key()).or_insert_with(|| json!([]));
                    if let Value::Array(a) = entry {
                        a.push(json!({"HostIp": ip, "HostPort": hp}));
                    }
                }
            }
            config.insert("ExposedPorts".into(), Value::Object(exposed));
            if !bindings.is_empty() {
                host.insert("PortBindings".into(), Value::Object(bindings));
            }
        }
        if !self.mounts.is_empty() {
            let mounts: Vec<Value> = self
                .mounts
                .iter()
                .map(|m| match &m.source {
                    MountSource::Bind(src) => json!({
                        "Type": "bind", "Source": src, "Target": m.target, "ReadOnly": m.read_only
                    }),
                    MountSource::Volume(name) => json!({
                        "Type": "volume", "Source": name, "Target": m.target, "ReadOnly": m.read_only
                    }),
                    MountSource::Tmpfs(size) => {
                        let mut t = json!({"Type": "tmpfs", "Target": m.target, "ReadOnly": m.read_only});
                        if let Some(sz) = size {
                            t["TmpfsOptions"] = json!({"SizeBytes": sz});
                        }
                        t
                    }
                })
                .collect();
            host.insert("Mounts".into(), json!(mounts));
        }
        if self.read_only_rootfs {
            host.insert("ReadonlyRootfs".into(), json!(true));
        }
        if !self.cap_drop.is_empty() {
            host.insert("CapDrop".into(), json!(self.cap_drop));
        }
        if !self.cap_add.is_empty() {
            host.insert("CapAdd".into(), json!(self.cap_add));
        }
        let mut sec = self.security_opt.clone();
        if self.no_new_privileges && !sec.iter().any(|s| s.starts_with("no-new-privileges")) {
            sec.push("no-new-privileges:true".into());
        }
        if !sec.is_empty() {
            host.insert("SecurityOpt".into(), json!(sec));
        }
        if let Some(r) = &self.runtime {
            host.insert("Runtime".into(), json!(r));
        }
        if let Some(c) = self.nano_cpus {
            host.insert("NanoCpus".into(), json!(c));
        }
        if let Some(m) = self.memory {
            host.insert("Memory".into(), json!(m));
        }
        if self.init {
            host.insert("Init".into(), json!(true));
        }
        if let Some(net) = &self.network {
            host.insert("NetworkMode".into(), json!(net));
            let mut ep = json!({});
            if !self.aliases.is_empty() {
                ep["Aliases"] = json!(self.aliases);
            }
            if let Some(ip) = self.ipv4_address {
                ep["IPAMConfig"] = json!({"IPv4Address": ip.to_string()});
            }
            config.insert(
                "NetworkingConfig".into(),
                json!({"EndpointsConfig": {net: ep}}),
            );
        }
        config.insert("HostConfig".into(), Value::Object(host));
        Value::Object(config)
    }
}

/// The state part of a container inspection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub status: String,
    /// True while running.
    pub running: bool,
    /// True while paused.
    pub paused: bool,
    /// True if killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// The main process's PID on the host (0 when not running).
    pub pid: i64,
    /// The exit code of the last run.
    pub exit_code: i64,
    /// An engine error (e.g. from starting).
    pub error: String,
    /// When the last run started (RFC 3339).
    pub started_at: String,
    /// When the last run ended (RFC 3339).
    pub finished_at: String,
    /// The engine's own healthcheck status, if the image defines one.
    pub health: Option<EngineHealth>,
}

/// The engine's healthcheck verdict (for images with a `HEALTHCHECK`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EngineHealth {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
}

/// One host binding of a published port.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// The host address, e.g. `127.0.0.1`.
    pub host_ip: String,
    /// The host port.
    pub host_port: String,
}

/// A container's endpoint on one network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    /// The container's IPv4 address on that network.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// DNS aliases.
    pub aliases: Option<Vec<String>>,
    /// The network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// Network settings of a container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    /// Per network name.
    pub networks: HashMap<String, EndpointSettings>,
    /// Published ports: `"80/tcp"` to host bindings (`None` when exposed only).
    pub ports: HashMap<String, Option<Vec<PortBinding>>>,
}

/// The parts of a container's config that harness reads back.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    /// The image reference it was created from.
    pub image: String,
    /// Labels.
    pub labels: Option<HashMap<String, String>>,
    /// Environment (`K=V`).
    pub env: Option<Vec<String>>,
    /// The command.
    pub cmd: Option<Vec<String>>,
    /// The user.
    pub user: String,
    /// The working directory.
    pub working_dir: String,
    /// Allocated a TTY.
    pub tty: bool,
}

/// The host config, as the engine reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// Read-only root file system.
    pub readonly_rootfs: bool,
    /// Dropped capabilities.
    pub cap_drop: Option<Vec<String>>,
    /// Added capabilities.
    pub cap_add: Option<Vec<String>>,
    /// Security options.
    pub security_opt: Option<Vec<String>>,
    /// The OCI runtime.
    pub runtime: String,
    /// CPU limit in 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Memory limit in bytes.
    pub memory: i64,
    /// The network mode (network name).
    pub network_mode: String,
}

/// One mount, as inspected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume name (volumes only).
    pub name: String,
    /// The source on the host.
    pub source: String,
    /// The target in the container.
    pub destination: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
}

/// What `GET /containers/{id}/json` reports (the parts harness uses).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    /// The full id.
    pub id: String,
    /// The name, with its leading `/`.
    pub name: String,
    /// The image id.
    pub image: String,
    /// The state.
    pub state: ContainerState,
    /// The config.
    pub config: ContainerConfig,
    /// The host config.
    pub host_config: HostConfig,
    /// Network settings.
    pub network_settings: NetworkSettings,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
    /// How often the engine restarted it.
    pub restart_count: i64,
}

impl ContainerInspect {
    /// The name without its leading `/`.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    /// The container's IP on `network` (or on its only network when `None`).
    pub fn ip(&self, network: Option<&str>) -> Option<IpAddr> {
        let nets = &self.network_settings.networks;
        let ep = match network {
            Some(n) => nets.get(n)?,
            None => nets.values().find(|e| !e.ip_address.is_empty())?,
        };
        ep.ip_address.parse().ok()
    }

    /// The host port that `container_port`/tcp is published on, if any.
    pub fn published_port(&self, container_port: u16) -> Option<u16> {
        self.published(container_port, Protocol::Tcp)
    }

    /// The host port that `container_port`/`protocol` is published on, if any.
    pub fn published(&self, container_port: u16, protocol: Protocol) -> Option<u16> {
        let key = format!("{container_port}/{}", protocol.as_str());
        self.network_settings
            .ports
            .get(&key)?
            .as_ref()?
            .iter()
            .find_map(|b| b.host_port.parse().ok())
    }

    /// A label value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.config.labels.as_ref()?.get(key).map(String::as_str)
    }
}

/// One row of `GET /containers/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    /// The full id.
    pub id: String,
    /// Names, each with a leading `/`.
    pub names: Vec<String>,
    /// The image reference.
    pub image: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    /// A human status, e.g. `Up 3 seconds`.
    pub status: String,
    /// Labels.
    pub labels: HashMap<String, String>,
}

/// How [`Docker::wait_container`] decides it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Until it is not running (returns at once if it already is not).
    NotRunning,
    /// Until its next exit.
    NextExit,
    /// Until it is removed.
    Removed,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitResponse {
    status_code: i64,
    #[serde(default)]
    error: Option<WaitError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitError {
    #[serde(default)]
    message: String,
}

/// Filters a list by labels: each entry is `key` or `key=value`.
pub(crate) fn label_filters(labels: &[(&str, &str)]) -> String {
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                (*k).to_owned()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    json!({ "label": l }).to_string()
}

impl Docker {
    /// Creates a container; returns its id.
    ///
    /// Errors name the cause: [`DockerError::ImageNotFound`] (nothing is pulled),
    /// [`DockerError::NameConflict`], [`DockerError::UnknownRuntime`].
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let mut q = Vec::new();
        if let Some(n) = &spec.name {
            q.push(("name", n.clone()));
        }
        let path = format!("/containers/create{}", query(&q));
        let body = json_body(&spec.to_json());
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Created {
            id: String,
        }
        match self
            .request(Method::POST, &path, body, Some("application/json"))
            .await
        {
            Ok(b) => Ok(b.json::<Created>().await?.id),
            Err(Failure::Status { status, message }) => {
                Err(classify_create(spec, status, message, &path))
            }
            Err(Failure::Transport(e)) => Err(e),
        }
    }

    /// Starts a created (or stopped) container.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let path = format!("/containers/{}/start", enc(id));
        match self.request(Method::POST, &path, empty_body(), None).await {
            Ok(b) => {
                b.bytes().await?;
                Ok(())
            }
            Err(Failure::Status { status, message })
                if message.contains("port is already allocated")
                    || message.contains("address already in use") =>
            {
                let _ = status;
                Err(DockerError::PortInUse {
                    container: id.to_owned(),
                    message,
                })
            }
            Err(Failure::Status { message, .. })
                if message.contains("unknown or invalid runtime")
                    || message.contains("Unknown runtime") =>
            {
                Err(DockerError::UnknownRuntime {
                    runtime: String::new(),
                    message,
                })
            }
            Err(f) => Err(f.into_error(&Method::POST, &path, &format!("container {id}"))),
        }
    }

    /// Stops a container: sends `signal` (or the container's stop signal when
    /// `None`), waits up to `grace`, then SIGKILL. Stopping a stopped container is fine.
    pub async fn stop_container(
        &self,
        id: &str,
        signal: Option<Signal>,
        grace: Duration,
    ) -> Result<()> {
        match signal {
            None => {
                let t = grace.as_secs_f64().ceil() as u64;
                let path = format!("/containers/{}/stop?t={t}", enc(id));
                let b = self
                    .call(
                        Method::POST,
                        &path,
                        empty_body(),
                        &format!("container {id}"),
                    )
                    .await?;
                b.bytes().await?;
                Ok(())
            }
            Some(sig) => {
                match self.kill_container(id, sig).await {
                    Ok(()) => {}
                    // Not running: nothing to stop.
                    Err(DockerError::Api { status: 409, .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
                let waited = futures_lite::future::or(
                    async { Some(self.wait_container(id, WaitCondition::NotRunning).await) },
                    async {
                        async_io::Timer::after(grace).await;
                        None
                    },
                )
                .await;
                match waited {
                    Some(r) => r.map(|_| ()),
                    None => match self.kill_container(id, Signal::KILL).await {
                        Ok(()) | Err(DockerError::Api { status: 409, .. }) => {
                            self.wait_container(id, WaitCondition::NotRunning).await?;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                }
            }
        }
    }

    /// Sends a signal to a running container. A container that is not running
    /// gives [`DockerError::Api`] with status 409.
    pub async fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        let path = format!("/containers/{}/kill?signal={}", enc(id), signal.name());
        let b = self
            .call(
                Method::POST,
                &path,
                empty_body(),
                &format!("container {id}"),
            )
            .await?;
        b.bytes().await?;
        Ok(())
    }

    /// Removes a container (`force` kills it first); also removes its anonymous
    /// volumes. Removing a container that does not exist is not an error.
    pub async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let path = format!("/containers/{}?force={force}&v=true", enc(id));
        match self
            .call(
                Method::DELETE,
                &path,
                empty_body(),
                &format!("container {id}"),
            )
            .await
        {
            Ok(b) => {
                b.bytes().await?;
                Ok(())
            }
            Err(DockerError::NotFound { .. }) => Ok(()),
            // Removal already in progress.
            Err(DockerError::Api {
                status: 409,
                message,
                ..
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Inspects a container by id or name.
    pub async fn inspect_container(&self, id: &str) -> Result<ContainerInspect> {
        let path = format!("/containers/{}/json", enc(id));
        self.call(Method::GET, &path, empty_body(), &format!("container {id}"))
            .await?
            .json()
            .await
    }

    /// Lists containers (running and stopped) carrying all the given labels;
    /// each entry is `(key, value)`, an empty value matching any value.
    pub async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>> {
        let mut q = vec![("all", "true".to_owned())];
        if !labels.is_empty() {
            q.push(("filters", label_filters(labels)));
        }
        let path = format!("/containers/json{}", query(&q));
        self.call(Method::GET, &path, empty_body(), "containers")
            .await?
            .json()
            .await
    }

    /// Waits for a container to reach `condition`; returns its exit code.
    pub async fn wait_container(&self, id: &str, condition: WaitCondition) -> Result<i64> {
        let c = match condition {
            WaitCondition::NotRunning => "not-running",
            WaitCondition::NextExit => "next-exit",
            WaitCondition::Removed => "removed",
        };
        let path = format!("/containers/{}/wait?condition={c}", enc(id));
        let r: WaitResponse = self
            .call(
                Method::POST,
                &path,
                empty_body(),
                &format!("container {id}"),
            )
            .await?
            .json()
            .await?;
        if let Some(e) = r.error
            && !e.message.is_empty()
        {
            return Err(DockerError::Api {
                method: "POST".into(),
                path,
                status: 200,
                message: e.message,
            });
        }
        Ok(r.status_code)
    }
}

fn classify_create(
    spec: &ContainerSpec,
    status: StatusCode,
    message: String,
    path: &str,
) -> DockerError {
    let lower = message.to_ascii_lowercase();
    if status == StatusCode::NOT_FOUND && lower.contains("no such image") {
        DockerError::ImageNotFound {
            image: spec.image.clone(),
        }
    } else if status == StatusCode::CONFLICT {
        DockerError::NameConflict {
            name: spec.name.clone().unwrap_or_default(),
            message,
        }
    } else if lower.contains("unknown runtime") || lower.contains("unknown or invalid runtime") {
        DockerError::UnknownRuntime {
            runtime: spec.runtime.clone().unwrap_or_default(),
            message,
        }
    } else if status == StatusCode::NOT_FOUND {
        DockerError::NotFound {
            what: format!(
                "network `{}` or image `{}`",
                spec.network.as_deref().unwrap_or("-"),
                spec.image
            ),
            message,
        }
    } else {
        DockerError::Api {
            method: "POST".into(),
            path: path.to_owned(),
            status: status.as_u16(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_json_carries_hardening_and_ports() {
        let mut s = ContainerSpec::new("img");
        s.read_only_rootfs = true;
        s.cap_drop = vec!["ALL".into()];
        s.no_new_privileges = true;
        s.ports = vec![PortSpec::published(80, 0), PortSpec::exposed(81)];
        s.mounts = vec![Mount {
            source: MountSource::Tmpfs(None),
            target: "/tmp".into(),
            read_only: false,
        }];
        s.network = Some("net1".into());
        s.aliases = vec!["db".into()];
        s.ipv4_address = Some("10.9.8.7".parse().unwrap());
        s.entrypoint = Some(vec![]);
        let j = s.to_json();
        assert_eq!(
            j["NetworkingConfig"]["EndpointsConfig"]["net1"]["IPAMConfig"]["IPv4Address"],
            "10.9.8.7"
        );
        assert_eq!(j["HostConfig"]["ReadonlyRootfs"], true);
        assert_eq!(j["HostConfig"]["CapDrop"], json!(["ALL"]));
        assert_eq!(
            j["HostConfig"]["SecurityOpt"],
            json!(["no-new-privileges:true"])
        );
        assert_eq!(
            j["HostConfig"]["PortBindings"]["80/tcp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": ""}])
        );
        assert!(j["HostConfig"]["PortBindings"].get("81/tcp").is_none());
        assert_eq!(j["ExposedPorts"]["81/tcp"], json!({}));
        assert_eq!(j["Entrypoint"], json!([""]));
        assert_eq!(
            j["NetworkingConfig"]["EndpointsConfig"]["net1"]["Aliases"],
            json!(["db"])
        );
        assert_eq!(j["HostConfig"]["Mounts"][0]["Type"], "tmpfs");
    }

    #[test]
    fn label_filter_json() {
        assert_eq!(
            label_filters(&[("harness.project", "p"), ("harness.service", "")]),
            r#"{"label":["harness.project=p","harness.service"]}"#
        );
    }
}
