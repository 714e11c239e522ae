//! The validated, resolved model of a project: what the rest of harness runs.
//!
//! A [`Project`] is produced by [`crate::load`] (or [`crate::from_yaml_str`]) after
//! parsing, merging, interpolating and validating every file. Every field here is
//! final: defaults are filled in, durations are [`Duration`]s, relative paths of
//! local services are resolved against the project directory.
//!
//! Some string fields are *reference templates*: they may still hold
//! `${service.ip}`, `${service.port}` or `${service.host}` references (and `$$` for
//! a literal `$`), which are expanded when the service is started with
//! [`crate::template::expand_refs`]. Those fields say so in their documentation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use harness_core::{ProjectName, ServiceKind, ServiceName, Signal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::graph::DependencyGraph;

/// A whole project: one `services.yaml` (or several merged files), validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ProjectData", into = "ProjectData")]
pub struct Project {
    /// The project's identifier: it keys the daemon's state and names networks
    /// and containers. When `name:` in the file is free text (e.g.
    /// `"Environment Resolution Test"`), this is derived from it by
    /// [`project_name_from_title`]; a `name:` that is already a valid identifier
    /// is used as it is.
    pub name: ProjectName,
    /// The `name:` as written in the file, for display, when it differs from
    /// [`name`](Project::name) (free text such as `"Environment Resolution Test"`).
    /// `None` when the file's `name:` is the identifier itself, or there is none.
    pub title: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The format version the file declared (`"1.0"` for the original format), if any.
    pub version: Option<String>,
    /// Project-wide settings and defaults.
    pub settings: Settings,
    /// Networks by name. Empty means "everything local".
    pub networks: BTreeMap<String, Network>,
    /// Services by name.
    pub services: BTreeMap<ServiceName, ServiceSpec>,
    /// The files this project was loaded from, in merge order.
    pub files: Vec<PathBuf>,
    graph: DependencyGraph,
}

impl Project {
    /// Builds a project from parts, checking the dependency graph (unknown
    /// dependencies and cycles are errors). [`crate::load`] does this and much more
    /// validation; this constructor is for code that builds projects directly.
    pub fn new(
        name: ProjectName,
        settings: Settings,
        networks: BTreeMap<String, Network>,
        services: BTreeMap<ServiceName, ServiceSpec>,
    ) -> Result<Self, crate::graph::GraphError> {
        let graph = DependencyGraph::build(&services)?;
        Ok(Project {
            name,
            title: None,
            description: None,
            version: None,
            settings,
            networks,
            services,
            files: Vec::new(),
            graph,
        })
    }

    /// The name to show people: the `name:` as written when it is free text,
    /// else the identifier.
    pub fn display_name(&self) -> &str {
        self.title.as_deref().unwrap_or(self.name.as_str())
    }

    /// The dependency graph of the services: start order, direct dependencies, stop order.
    pub fn graph(&self) -> &DependencyGraph {
        &self.graph
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.get(name)
    }

    /// The fully resolved model as YAML.
    pub fn to_yaml(&self) -> String {
        // Serializing plain data to a string cannot fail; fall back to JSON (valid YAML) if it does.
        serde_saphyr::to_string(self).unwrap_or_else(|_| self.to_json())
    }

    /// The fully resolved model as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("the model holds only strings, numbers and maps, which always serialize")
    }

    /// The fully resolved model as a JSON value.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .expect("the model holds only strings, numbers and maps, which always serialize")
    }
}

/// The serialized form of a [`Project`] (the graph is rebuilt on deserialization).
#[derive(Serialize, Deserialize)]
struct ProjectData {
    name: ProjectName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    networks: BTreeMap<String, Network>,
    #[serde(default)]
    services: BTreeMap<ServiceName, ServiceSpec>,
    #[serde(default)]
    files: Vec<PathBuf>,
}

impl TryFrom<ProjectData> for Project {
    type Error = crate::graph::GraphError;
    fn try_from(d: ProjectData) -> Result<Self, Self::Error> {
        let mut p = Project::new(d.name, d.settings, d.networks, d.services)?;
        p.title = d.title;
        p.description = d.description;
        p.version = d.version;
        p.files = d.files;
        Ok(p)
    }
}

impl From<Project> for ProjectData {
    fn from(p: Project) -> Self {
        ProjectData {
            name: p.name,
            title: p.title,
            description: p.description,
            version: p.version,
            settings: p.settings,
            networks: p.networks,
            services: p.services,
            files: p.files,
        }
    }
}

/// The project identifier for a `name:` written as free text.
///
/// A text that is already a valid [`ProjectName`] is returned unchanged (so
/// existing projects keep their state). Any other text is lowercased; every run
/// of characters a project name does not allow (anything but ASCII letters,
/// digits, `_`, `-` and `.`) becomes one `-`; leading and trailing characters
/// that are not letters or digits are trimmed; and the result is cut to
/// [`MAX_NAME_LEN`](harness_core::name::MAX_NAME_LEN) characters (and trimmed
/// again). `"Environment Resolution Test"` becomes
/// `environment-resolution-test`. `None` when nothing is left (e.g. `"!!!"`).
///
/// ```
/// use harness_config::model::project_name_from_title;
/// let id = |t: &str| project_name_from_title(t).map(|n| n.to_string());
/// assert_eq!(id("Environment Resolution Test").as_deref(), Some("environment-resolution-test"));
/// assert_eq!(id("MyShop").as_deref(), Some("MyShop"));
/// assert_eq!(id(" ** ").as_deref(), None);
/// ```
pub fn project_name_from_title(text: &str) -> Option<ProjectName> {
    if let Ok(name) = ProjectName::new(text) {
        return Some(name);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut id = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if allowed(c) {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let edge = |c: char| !c.is_ascii_alphanumeric();
    let id = id.trim_matches(edge);
    // Only ASCII is left: byte and character counts agree.
    let id = id[..id.len().min(harness_core::name::MAX_NAME_LEN)].trim_matches(edge);
    ProjectName::new(id).ok()
}

/// Project-wide settings (`settings:`), used as defaults by services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Settings {
    /// Log level for harness itself (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: Option<String>,
    /// Default period of health checks.
    #[serde(with = "opt_duration", default)]
    pub health_check_interval: Option<Duration>,
    /// Default time a service may take to become ready.
    #[serde(with = "opt_duration", default)]
    pub startup_timeout: Option<Duration>,
    /// Default grace period between the stop signal and SIGKILL.
    #[serde(with = "opt_duration", default)]
    pub shutdown_timeout: Option<Duration>,
}

/// A network services are placed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Network {
    /// This machine only.
    Local {
        /// Optional subnet (e.g. for Docker networks).
        subnet: Option<String>,
    },
    /// Hosts of a LAN, reached over SSH.
    Lan {
        /// The LAN subnet in CIDR form.
        subnet: String,
        /// The hosts.
        nodes: Vec<Node>,
    },
    /// Hosts of a WireGuard mesh, reached over SSH.
    Wireguard {
        /// The mesh subnet in CIDR form.
        subnet: String,
        /// A WireGuard configuration file, if harness should use one.
        config_path: Option<PathBuf>,
        /// The peers.
        nodes: Vec<Node>,
    },
}

impl Network {
    /// The hosts of this network (none for a local network).
    pub fn nodes(&self) -> &[Node] {
        match self {
            Network::Local { .. } => &[],
            Network::Lan { nodes, .. } | Network::Wireguard { nodes, .. } => nodes,
        }
    }

    /// The subnet, if declared.
    pub fn subnet(&self) -> Option<&str> {
        match self {
            Network::Local { subnet } => subnet.as_deref(),
            Network::Lan { subnet, .. } | Network::Wireguard { subnet, .. } => Some(subnet),
        }
    }

    /// `local`, `lan` or `wireguard`.
    pub fn kind(&self) -> &'static str {
        match self {
            Network::Local { .. } => "local",
            Network::Lan { .. } => "lan",
            Network::Wireguard { .. } => "wireguard",
        }
    }

    /// The node with this host address or name.
    pub fn node(&self, host_or_name: &str) -> Option<&Node> {
        self.nodes()
            .iter()
            .find(|n| n.host == host_or_name || n.name.as_deref() == Some(host_or_name))
    }
}

/// A host of a LAN or WireGuard network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Address (IP or DNS name) to reach the host over SSH.
    pub host: String,
    /// A short name services can use in `host:` instead of the address.
    pub name: Option<String>,
    /// SSH user.
    pub ssh_user: String,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// SSH port (default: ssh's own default, usually 22).
    pub ssh_port: Option<u16>,
    /// Whether packages are deployed to this host.
    #[serde(default)]
    pub package_deploy: bool,
}

/// One service, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Its name.
    pub name: ServiceName,
    /// What to run, and where.
    pub target: Target,
    /// The network it is placed on, if any (resolved when only one exists).
    pub network: Option<String>,
    /// Environment variables: the `env_file` entries, then `env:` on top.
    /// Values are reference templates.
    pub env: BTreeMap<String, String>,
    /// The env files that were read into `env`.
    pub env_file: Vec<EnvFile>,
    /// Working directory (resolved against the project directory for local processes).
    pub working_dir: Option<PathBuf>,
    /// User to run as.
    pub user: Option<String>,
    /// Services this one waits for before it starts.
    pub dependencies: Vec<Dependency>,
    /// When the service counts as ready (and healthy). `health_check:` sets both probes.
    pub readiness: Option<Probe>,
    /// When a running service counts as unhealthy and is restarted.
    pub liveness: Option<Probe>,
    /// What happens when it exits or fails its liveness probe.
    pub restart: RestartPolicy,
    /// How it is stopped.
    pub shutdown: Shutdown,
    /// How long it may take to become ready before the start counts as failed.
    #[serde(with = "opt_duration", default)]
    pub startup_timeout: Option<Duration>,
    /// A one-shot job: meant to run to completion, not to stay up.
    pub job: bool,
    /// Exit codes that count as success (default `[0]`).
    pub success_exit_codes: Vec<i32>,
    /// Ports it listens on. For a container `host` is the published port; for a
    /// process `container` is simply the port it listens on.
    pub ports: Vec<PortMapping>,
    /// Free text about the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels for people and tools; they do not affect how it runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Files whose changes act on it while the project is watched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchRule>,
}

/// One `watch:` rule: changes below `path` (matching `include`, not `ignore`
/// and not ignored by a `.gitignore` in `path`) do `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchRule {
    /// The file or directory watched, resolved against the project directory.
    pub path: PathBuf,
    /// What a change does.
    pub action: crate::raw::WatchAction,
    /// Globs relative to `path` a changed file must match (all files when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs relative to `path` of changes that do not count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

impl ServiceSpec {
    /// A local process service with every default, for code that builds specs directly.
    pub fn process(name: ServiceName, binary: impl Into<String>, args: Vec<String>) -> Self {
        ServiceSpec {
            name,
            target: Target::Process {
                binary: binary.into(),
                args,
            },
            network: None,
            env: BTreeMap::new(),
            env_file: Vec::new(),
            working_dir: None,
            user: None,
            dependencies: Vec::new(),
            readiness: None,
            liveness: None,
            restart: RestartPolicy::default(),
            shutdown: Shutdown::default(),
            startup_timeout: None,
            job: false,
            success_exit_codes: vec![0],
            ports: Vec::new(),
            description: None,
            labels: BTreeMap::new(),
            watch: Vec::new(),
        }
    }

    /// The kind of target.
    pub fn kind(&self) -> ServiceKind {
        match self.target {
            Target::Process { .. } => ServiceKind::Process,
            Target::Docker(_) => ServiceKind::Docker,
            Target::Remote { .. } => ServiceKind::Remote,
            Target::Package { .. } => ServiceKind::Package,
        }
    }

    /// The port it listens on: the first declared port, else the port of its
    /// readiness probe (tcp, or http with an explicit port).
    pub fn primary_port(&self) -> Option<u16> {
        if let Some(p) = self.ports.first() {
            return Some(p.container);
        }
        self.readiness
            .as_ref()
            .or(self.liveness.as_ref())
            .and_then(|probe| probe.check.port())
    }

    /// The node it runs on: for remote and package services, and for docker
    /// services placed on a node's engine. `None` runs it on this machine.
    pub fn host(&self) -> Option<&str> {
        match &self.target {
            Target::Remote { host, .. } | Target::Package { host, .. } => Some(host),
            Target::Docker(d) => d.host.as_deref(),
            Target::Process { .. } => None,
        }
    }

    /// True if it has a readiness probe, so `healthy` can be waited for.
    pub fn has_health_check(&self) -> bool {
        self.readiness.is_some()
    }

    /// True if this exit code counts as success.
    pub fn is_success_code(&self, code: i32) -> bool {
        self.success_exit_codes.contains(&code)
    }

    /// Every service named by a `${svc.field}` reference in its templates.
    pub fn referenced_services(&self) -> Vec<ServiceName> {
        let mut out: Vec<ServiceName> = self
            .templates()
            .flat_map(|t| {
                crate::template::references(t)
                    .into_iter()
                    .map(|r| r.service)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every reference-template string of this service (env values, args,
    /// commands, probe targets), for validation and expansion.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        let mut v: Vec<&str> = self.env.values().map(String::as_str).collect();
        match &self.target {
            Target::Process { args, .. } | Target::Remote { args, .. } => {
                v.extend(args.iter().map(String::as_str));
            }
            Target::Docker(d) => {
                v.extend(d.command.iter().flatten().map(String::as_str));
                v.extend(d.entrypoint.iter().flatten().map(String::as_str));
            }
            Target::Package { .. } => {}
        }
        for probe in [&self.readiness, &self.liveness].into_iter().flatten() {
            match &probe.check {
                Check::Exec { command, args } => {
                    v.push(command);
                    v.extend(args.iter().map(String::as_str));
                }
                Check::Http { url, .. } => v.push(url),
                Check::Tcp { host: Some(h), .. } => v.push(h),
                Check::Tcp { host: None, .. } | Check::LogLine { .. } => {}
            }
        }
        v.into_iter()
    }
}

/// What runs, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // a handful per project; boxing would only add noise for users
pub enum Target {
    /// A local process.
    Process {
        /// The program (a path, or a name looked up in `PATH`).
        binary: String,
        /// Its arguments (reference templates).
        args: Vec<String>,
    },
    /// A Docker container.
    Docker(DockerSpec),
    /// A process on a remote host, over SSH.
    Remote {
        /// The node (address or node name) it runs on.
        host: String,
        /// The program on that host.
        binary: String,
        /// Its arguments (reference templates).
        args: Vec<String>,
    },
    /// A package deployed to a remote host, then run there.
    Package {
        /// The node (address or node name) it is deployed to.
        host: String,
        /// The package: a local archive path or a name.
        package: String,
        /// The version to deploy.
        version: Option<String>,
        /// Where it is unpacked on the host.
        install_path: Option<PathBuf>,
    },
}

/// A Docker container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerSpec {
    /// The image to run (for `build`, the tag given to the built image).
    pub image: String,
    /// Build the image from a Dockerfile first.
    pub build: Option<Build>,
    /// Overrides the image's command (reference templates).
    pub command: Option<Vec<String>>,
    /// Overrides the image's entrypoint (reference templates).
    pub entrypoint: Option<Vec<String>>,
    /// Volumes, `SOURCE:TARGET[:ro]` (a relative source is resolved against the project directory).
    pub volumes: Vec<String>,
    /// Docker networks to attach to.
    pub networks: Vec<String>,
    /// Hardening.
    pub security: Security,
    /// Limits.
    pub resources: Resources,
    /// The node whose engine runs the container (its address or node name),
    /// reached over ssh; `None`: this machine's engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// How to build an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// The build context directory (resolved against the project directory).
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
}

/// Container hardening.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Security {
    /// Read-only root file system.
    pub read_only: bool,
    /// OCI runtime, e.g. `runsc`.
    pub runtime: Option<String>,
    /// Capabilities to drop, e.g. `["ALL"]`.
    pub cap_drop: Vec<String>,
    /// Capabilities to add back.
    pub cap_add: Vec<String>,
    /// Forbid privilege escalation (`no-new-privileges`).
    pub no_new_privileges: bool,
    /// User inside the container (`uid[:gid]` or a name).
    pub user: Option<String>,
}

/// Container resource limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in cores (e.g. `0.5`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
}

/// A port a service listens on, and where it is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The port published on the host (containers only).
    pub host: Option<u16>,
    /// The host address it is published on (`127.0.0.1:8080:80`, `[::1]:8080:80`);
    /// `None`: every interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::IpAddr>,
    /// The port the service listens on (inside the container, for containers).
    pub container: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// An env file read into a service's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFile {
    /// Its path (resolved against the project directory).
    pub path: PathBuf,
    /// Whether a missing file is an error (default) or skipped.
    pub required: bool,
}

/// One dependency of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    /// The service depended on.
    pub service: ServiceName,
    /// What must hold before the dependent starts.
    #[serde(flatten)]
    pub condition: Condition,
}

/// What must hold of a dependency before its dependent starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Condition {
    /// It has been started.
    Started,
    /// Its readiness probe passes.
    Healthy,
    /// It ran to completion with a success exit code (jobs).
    CompletedSuccessfully,
    /// A line of its output matches this pattern.
    LogReady {
        /// The pattern.
        pattern: LogPattern,
    },
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Started => f.write_str("started"),
            Condition::Healthy => f.write_str("healthy"),
            Condition::CompletedSuccessfully => f.write_str("completed_successfully"),
            Condition::LogReady { pattern } => write!(f, "log_ready /{}/", pattern.as_str()),
        }
    }
}

/// A compiled regular expression matched against output lines.
#[derive(Clone)]
pub struct LogPattern(regex::Regex);

impl LogPattern {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(pattern).map(LogPattern)
    }
    /// The pattern text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    /// The compiled regex.
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
    /// True if the line matches.
    pub fn is_match(&self, line: &str) -> bool {
        self.0.is_match(line)
    }
}

impl fmt::Debug for LogPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogPattern({:?})", self.as_str())
    }
}

impl PartialEq for LogPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for LogPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LogPattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A probe: a check run periodically, with thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What is checked.
    pub check: Check,
    /// `start_period`: failures within this time after start, before the first
    /// pass, do not count; a pass counts at once.
    #[serde(with = "duration")]
    pub initial_delay: Duration,
    /// Time between checks once the check has passed (`interval`).
    #[serde(with = "duration")]
    pub period: Duration,
    /// Time between checks until the check first passes in a run of the service
    /// (`start_interval`): from the first check (after `initial_delay`) until the
    /// success threshold is first reached, again after each restart. Failures in
    /// that phase count against `failure_threshold` as usual. `None`: the
    /// shorter of `period` and [`DEFAULT_START_INTERVAL`] (see
    /// [`Probe::period_until_passed`]).
    #[serde(
        with = "opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_interval: Option<Duration>,
    /// A check taking longer fails.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive successes needed to pass.
    pub success_threshold: u32,
    /// Consecutive failures needed to fail (`retries`).
    pub failure_threshold: u32,
}

/// Default probe period.
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(10);
/// How often a probe without a `start_interval` runs until it first passes:
/// a service that is ready in 100 ms is seen ready within half a second, not
/// after a whole `period` (10 s by default).
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_millis(500);
/// Default probe timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default probe failure threshold.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

impl Probe {
    /// A probe with default timing around this check.
    pub fn new(check: Check) -> Self {
        Probe {
            check,
            initial_delay: Duration::ZERO,
            period: DEFAULT_PROBE_PERIOD,
            start_interval: None,
            timeout: DEFAULT_PROBE_TIMEOUT,
            success_threshold: 1,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
        }
    }

    /// The time between checks while the check has not passed yet in this run
    /// of the service: `start_interval`, else the shorter of `period` and
    /// [`DEFAULT_START_INTERVAL`].
    pub fn period_until_passed(&self) -> Duration {
        self.start_interval
            .unwrap_or(self.period.min(DEFAULT_START_INTERVAL))
    }
}

/// The check a probe runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Check {
    /// Run a command (where the service runs: locally, in the container, on the
    /// remote host); exit code 0 passes. Command and args are reference templates.
    Exec {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// An HTTP(S) GET; a 2xx/3xx status (or exactly `expected_status`) passes.
    /// The URL is a reference template.
    Http {
        /// The URL.
        url: String,
        /// The one status that passes, if not any 2xx/3xx.
        expected_status: Option<u16>,
    },
    /// A TCP connect succeeds.
    Tcp {
        /// Host to connect to (a reference template); default: where the service runs.
        host: Option<String>,
        /// Port.
        port: u16,
    },
    /// A line of the service's output matches.
    LogLine {
        /// The pattern.
        pattern: LogPattern,
    },
}

impl Check {
    /// The port this check connects to, if it names one.
    pub fn port(&self) -> Option<u16> {
        match self {
            Check::Tcp { port, .. } => Some(*port),
            Check::Http { url, .. } => url_port(url),
            _ => None,
        }
    }
}

/// The explicit port of an `http://host:port/...` URL.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let port = authority.rsplit_once(':')?.1;
    port.parse().ok()
}

/// When a service is restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// The rule.
    pub mode: RestartMode,
    /// Delays between restarts.
    pub backoff: Backoff,
    /// Give up after this many restarts in a row (none: never give up).
    pub max_restarts: Option<u32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::OnFailure,
            backoff: Backoff::default(),
            max_restarts: None,
        }
    }
}

/// The restart rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// Never restart.
    No,
    /// Restart whenever it exits or fails liveness.
    Always,
    /// Restart when it exits with a code outside `success_exit_codes`, is killed, or fails liveness.
    OnFailure,
}

impl fmt::Display for RestartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartMode::No => "no",
            RestartMode::Always => "always",
            RestartMode::OnFailure => "on_failure",
        })
    }
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// First delay.
    #[serde(with = "duration")]
    pub initial: Duration,
    /// Largest delay.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Each delay is the previous one times this (>= 1).
    pub multiplier: f64,
    /// Random shortening as a fraction of the delay, 0..=1 (0.1: 90-100 % of it).
    pub jitter: f64,
    /// After running this long without failing, the delay starts over.
    #[serde(with = "duration")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.min(1000) as i32);
        let secs = (self.initial.as_secs_f64() * factor).min(self.max.as_secs_f64());
        if secs.is_finite() && secs >= 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }
}

/// How a service is stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {
    /// The first signal, sent to the whole process group.
    pub signal: Signal,
    /// Grace period before SIGKILL.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// Default grace period before SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            signal: Signal::TERM,
            timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Serde for `Duration` as a human string (`1.5s`), reading numbers or strings.
pub(crate) mod duration {
    use std::time::Duration;

    use harness_core::HumanDuration;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration(*d).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

/// Serde for `Option<Duration>` as a human string.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use harness_core::HumanDuration;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(HumanDuration).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<HumanDuration>::deserialize(d).map(|o| o.map(|h| h.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(100), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn url_ports() {
        assert_eq!(url_port("http://localhost:8080/health"), Some(8080));
        assert_eq!(url_port("https://${db.host}:${db.port}/x"), None);
        assert_eq!(url_port("http://example.com/"), None);
    }
}
