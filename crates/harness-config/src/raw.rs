//! The file format as written: serde types mirroring `services.yaml`.
//!
//! These types accept both the original format (`version: "1.0"`, `health_check`
//! with `interval`/`retries`, ports as `"host:container"`) and the newer
//! spellings. They are what the JSON Schema is generated from. The loader turns
//! them into the validated [`crate::model`].

use std::collections::BTreeMap;
use std::fmt;

use harness_core::{HumanDuration, Signal};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A whole `services.yaml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "harness services.yaml",
    description = "Services, networks and settings of a harness project. Keys starting with `x-` are ignored anywhere."
)]
pub struct RawFile {
    /// Format version; `"1.0"` is the original format (still fully supported).
    pub version: Option<Scalar>,
    /// Project name, free text (default: the directory name). The identifier that
    /// names state, networks and containers is derived from it: a valid identifier
    /// (letters, digits, `_`, `-`, `.`, starting with a letter or digit, at most 63
    /// characters) is used as it is; other text is lowercased, each run of other
    /// characters becomes `-`, and the ends are trimmed (`"Environment Resolution
    /// Test"` is `environment-resolution-test`).
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Project-wide settings and defaults.
    pub settings: Option<RawSettings>,
    /// Networks by name.
    #[serde(default)]
    pub networks: BTreeMap<String, RawNetwork>,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
}

/// A string, number or boolean, kept as text (`version: 1.0` and `version: "1.0"` are the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Scalar(pub String);

impl JsonSchema for Scalar {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": ["string", "number", "boolean"]})
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                let s = v.to_string();
                // `1.0` reads back as the float 1, which prints as `1`.
                Ok(Scalar(if s.contains(['.', 'e', 'E']) || !v.is_finite() {
                    s
                } else {
                    format!("{s}.0")
                }))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `settings:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: Option<String>,
    /// Default period of health checks.
    pub health_check_interval: Option<HumanDuration>,
    /// Default time a service may take to become ready.
    pub startup_timeout: Option<HumanDuration>,
    /// Default grace period between the stop signal and SIGKILL.
    pub shutdown_timeout: Option<HumanDuration>,
}

/// The kind of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// This machine.
    Local,
    /// LAN hosts over SSH.
    Lan,
    /// WireGuard peers over SSH.
    Wireguard,
}

/// A network (`networks.NAME`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// `local`, `lan` or `wireguard`.
    #[serde(rename = "type")]
    pub kind: NetworkType,
    /// Subnet in CIDR form (required for `lan` and `wireguard`).
    pub subnet: Option<String>,
    /// WireGuard configuration file (`wireguard` only).
    pub config_path: Option<String>,
    /// Hosts (`lan` and `wireguard`).
    #[serde(default)]
    pub nodes: Vec<RawNode>,
}

/// A host of a network.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Address (IP or DNS name).
    pub host: String,
    /// Short name usable in a service's `host:`.
    pub name: Option<String>,
    /// SSH user.
    pub ssh_user: String,
    /// SSH private key file.
    pub ssh_key: Option<String>,
    /// SSH port.
    pub ssh_port: Option<u16>,
    /// Whether packages are deployed to this host.
    #[serde(default)]
    pub package_deploy: Option<bool>,
}

/// The kind of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// A local process.
    Process,
    /// A Docker container.
    Docker,
    /// A process on a remote host.
    Remote,
    /// A package deployed to a remote host.
    Package,
}

/// A service (`services.NAME`). Which keys apply depends on `type`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// `process`, `docker`, `remote` or `package` (inferred from `image`,
    /// `package`, `host` or `binary` when left out).
    #[serde(rename = "type")]
    pub kind: Option<ServiceType>,
    /// The network the service is placed on (may be left out when unambiguous).
    pub network: Option<String>,
    /// Free text about the service. Changing it restarts nothing.
    pub description: Option<String>,
    /// Labels (`key: value`) for people and tools. Changing them restarts nothing.
    pub labels: Option<BTreeMap<String, String>>,
    /// Environment variables (map, or list of `KEY=VALUE`).
    pub env: Option<EnvMap>,
    /// Alias of `env`.
    pub environment: Option<EnvMap>,
    /// Files of `KEY=VALUE` lines read into the environment.
    pub env_file: Option<OneOrMany<EnvFileEntry>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Services to wait for: a list of names, or a map of name to `{condition}`.
    pub dependencies: Option<Dependencies>,
    /// Alias of `dependencies` (compose).
    pub depends_on: Option<Dependencies>,
    /// How long the service may take to become ready.
    pub startup_timeout: Option<HumanDuration>,
    /// Grace period before SIGKILL (same as `shutdown.timeout`).
    pub shutdown_timeout: Option<HumanDuration>,
    /// How the service is stopped.
    pub shutdown: Option<RawShutdown>,
    /// A health check: used both for readiness and for liveness.
    pub health_check: Option<RawProbe>,
    /// Alias of `health_check` (compose).
    pub healthcheck: Option<RawProbe>,
    /// When the service counts as ready (overrides `health_check` for readiness).
    pub readiness: Option<RawProbe>,
    /// When a running service counts as unhealthy (overrides `health_check` for liveness).
    pub liveness: Option<RawProbe>,
    /// `no`, `always`, `on_failure`, or a map with `mode`, `backoff`, `max_restarts`.
    pub restart: Option<RawRestart>,
    /// Exit codes that count as success (default `[0]`).
    pub success_exit_codes: Option<Vec<i32>>,
    /// A one-shot job, meant to run to completion.
    pub job: Option<bool>,
    /// Ports: `8080`, `"8080:80"`, `"127.0.0.1:8080:80/udp"`, or `{host, container, protocol}`.
    pub ports: Option<Vec<RawPort>>,
    /// Files whose changes act on the service while `harness up --watch` or
    /// `harness watch` runs (in the spirit of compose's `develop.watch`).
    pub watch: Option<Vec<RawWatch>>,

    /// The program (`process`, `remote`).
    pub binary: Option<String>,
    /// Its arguments (`process`, `remote`).
    pub args: Option<Vec<Scalar>>,

    /// The image (`docker`).
    pub image: Option<String>,
    /// Build the image first (`docker`).
    pub build: Option<RawBuild>,
    /// Command: a string (split like a shell) or a list (`docker`).
    pub command: Option<Command>,
    /// Entrypoint: a string or a list (`docker`).
    pub entrypoint: Option<Command>,
    /// Volumes `SOURCE:TARGET[:ro]` (`docker`).
    pub volumes: Option<Vec<String>>,
    /// Docker networks to attach to (`docker`).
    pub networks: Option<Vec<String>>,
    /// Hardening (`docker`).
    pub security: Option<RawSecurity>,
    /// Limits (`docker`).
    pub resources: Option<RawResources>,

    /// The node it runs on: its address or node name (`remote`, `package`; for
    /// `docker`, the node whose engine runs the container, default this machine).
    pub host: Option<String>,
    /// The package: an archive path or name (`package`).
    pub package: Option<String>,
    /// The package version (`package`).
    pub version: Option<Scalar>,
    /// Where the package is unpacked on the host (`package`).
    pub install_path: Option<String>,
}

/// `shutdown:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// The first signal (default SIGTERM).
    pub signal: Option<Signal>,
    /// Grace period before SIGKILL.
    pub timeout: Option<HumanDuration>,
}

/// A probe or health check. Exactly one of `command`/`exec`, `http`, `tcp`, `log_line`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Run this program; exit 0 passes (a string is split like a shell when `args` is absent).
    pub command: Option<Command>,
    /// Arguments of `command`.
    pub args: Option<Vec<Scalar>>,
    /// Same as `command` (Kubernetes spelling).
    pub exec: Option<Command>,
    /// GET this URL (http or https); 2xx/3xx passes.
    pub http: Option<String>,
    /// The one status code that passes.
    pub expected_status: Option<u16>,
    /// Connect to this port (or `{port, host, timeout}`).
    pub tcp: Option<RawTcp>,
    /// A line of output matching this regex passes.
    pub log_line: Option<String>,
    /// Time between checks once the check has passed (default: `settings.health_check_interval`).
    pub interval: Option<HumanDuration>,
    /// Same as `interval` (Kubernetes spelling).
    pub period: Option<HumanDuration>,
    /// Time between checks until the check first passes in a run of the service (after each
    /// start and restart); then `interval` applies. Default: the same as `interval`.
    pub start_interval: Option<HumanDuration>,
    /// A check taking longer fails.
    pub timeout: Option<HumanDuration>,
    /// Consecutive failures before failing.
    pub retries: Option<u32>,
    /// Same as `retries` (Kubernetes spelling).
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before passing.
    pub success_threshold: Option<u32>,
    /// As in compose: failures within this time after start do not count against
    /// `retries`, while a pass counts at once (checks run from the start).
    pub start_period: Option<HumanDuration>,
    /// Same as `start_period`.
    pub initial_delay: Option<HumanDuration>,
}

/// `tcp:` of a probe: a port, or a map.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawTcp {
    /// Just the port.
    Port(u16),
    /// Port and options.
    Full(RawTcpFull),
}

/// `tcp: {port, host, timeout}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTcpFull {
    /// Port.
    pub port: u16,
    /// Host (default: where the service runs).
    pub host: Option<String>,
    /// Check timeout.
    pub timeout: Option<HumanDuration>,
}

impl<'de> Deserialize<'de> for RawTcp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTcp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a map with `port`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawTcp, E> {
                u16::try_from(v)
                    .map(RawTcp::Port)
                    .map_err(|_| E::custom(format!("port {v} is out of range (1-65535)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawTcp, E> {
                Err(E::custom(format!("port {v} is out of range (1-65535)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTcp, E> {
                v.trim()
                    .parse()
                    .map(RawTcp::Port)
                    .map_err(|_| E::custom(format!("`{v}` is not a port number")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTcp, A::Error> {
                RawTcpFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawTcp::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// A command: a string (split like a shell) or a list of words.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Command {
    /// One string.
    Line(String),
    /// Words.
    Words(Vec<String>),
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command line or a list of words")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                Ok(Command::Line(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut words = Vec::new();
                while let Some(Scalar(w)) = seq.next_element::<Scalar>()? {
                    words.push(w);
                }
                Ok(Command::Words(words))
            }
        }
        d.deserialize_any(V)
    }
}

/// Environment: a map (values may be numbers or booleans) or a list of `KEY=VALUE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnvMap(pub BTreeMap<String, String>);

impl JsonSchema for EnvMap {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Env".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        EnvSchema::json_schema(g)
    }
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvSchema {
    Map(BTreeMap<String, Option<Scalar>>),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for EnvMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of variables, or a list of `KEY=VALUE`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value::<Option<Scalar>>()?;
                    out.insert(k, v.map(|s| s.0).unwrap_or_default());
                }
                Ok(EnvMap(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EnvMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(item) = seq.next_element::<String>()? {
                    match item.split_once('=') {
                        Some((k, v)) => out.insert(k.to_owned(), v.to_owned()),
                        None => out.insert(item, String::new()),
                    };
                }
                Ok(EnvMap(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One value or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// Many.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// As a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one entry or a list")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany<T>, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(OneOrMany::One)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(t) = seq.next_element::<T>()? {
                    v.push(t);
                }
                Ok(OneOrMany::Many(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An env file: a path, or `{path, required}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvFileEntry {
    /// A required file.
    Path(String),
    /// A file that may be optional.
    Full {
        /// Its path (relative to the project directory).
        path: String,
        /// A missing file is an error when true (default).
        #[serde(default)]
        required: Option<bool>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFileFull {
    path: String,
    #[serde(default)]
    required: Option<bool>,
}

impl<'de> Deserialize<'de> for EnvFileEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvFileEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path or a map with `path` and `required`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvFileEntry, E> {
                Ok(EnvFileEntry::Path(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EnvFileEntry, A::Error> {
                let f = EnvFileFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(EnvFileEntry::Full {
                    path: f.path,
                    required: f.required,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Dependencies: a list of names, or a map of name to options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dependencies(pub Vec<(String, RawDependency)>);

impl JsonSchema for Dependencies {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Dependencies".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        DependenciesSchema::json_schema(g)
    }
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum DependenciesSchema {
    List(Vec<String>),
    Map(BTreeMap<String, Option<RawDependency>>),
}

/// Options of one dependency.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDependency {
    /// `started`, `healthy`, `completed_successfully` or `log_ready`
    /// (default: `healthy` if the dependency has a health check, else `started`).
    pub condition: Option<ConditionName>,
    /// The regex for `log_ready`.
    pub pattern: Option<String>,
}

/// A dependency condition name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionName {
    /// Started.
    #[serde(alias = "service_started")]
    Started,
    /// Readiness passes.
    #[serde(alias = "service_healthy")]
    Healthy,
    /// Ran to completion with success.
    #[serde(alias = "service_completed_successfully")]
    CompletedSuccessfully,
    /// A line of output matches `pattern`.
    LogReady,
}

impl<'de> Deserialize<'de> for Dependencies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dependencies;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of service names, or a map of service name to `{condition}`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dependencies, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push((name, RawDependency::default()));
                }
                Ok(Dependencies(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dependencies, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let dep = map.next_value::<Option<RawDependency>>()?;
                    out.push((name, dep.unwrap_or_default()));
                }
                Ok(Dependencies(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `restart:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawRestart {
    /// Just the mode.
    Mode(RestartName),
    /// Mode and options.
    Full(RawRestartFull),
}

impl JsonSchema for RawRestart {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Restart".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RestartSchema::json_schema(g)
    }
}

/// `restart: no` reads as the boolean `false` in YAML 1.1 style.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum RestartSchema {
    Flag(bool),
    Mode(RestartName),
    Full(RawRestartFull),
}

/// One `watch:` rule of a service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    /// A file or directory (watched with everything below it), relative to the
    /// project directory. Files its `.gitignore` ignores do not count.
    pub path: String,
    /// What a change does (default `restart`).
    pub action: Option<WatchAction>,
    /// Globs (relative to `path`, e.g. `**/*.rs`) a changed file must match; all when left out.
    pub include: Option<Vec<String>>,
    /// Globs (relative to `path`, e.g. `target/**`, `*.tmp`) of changes that do not count.
    pub ignore: Option<Vec<String>>,
}

/// What a change of a watched file does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatchAction {
    /// Restart the service.
    #[default]
    Restart,
}

/// A restart mode name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartName {
    /// Never.
    #[serde(alias = "false", alias = "never")]
    No,
    /// Always.
    #[serde(alias = "unless-stopped", alias = "unless_stopped")]
    Always,
    /// On failure.
    #[serde(alias = "on-failure")]
    OnFailure,
}

/// `restart: {mode, backoff, max_restarts}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRestartFull {
    /// The mode (default `on_failure`).
    #[serde(alias = "policy")]
    pub mode: Option<RestartName>,
    /// Delays between restarts.
    pub backoff: Option<RawBackoff>,
    /// Give up after this many restarts in a row.
    pub max_restarts: Option<u32>,
}

impl<'de> Deserialize<'de> for RawRestart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRestart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`no`, `always`, `on_failure`, or a map with `mode`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawRestart, E> {
                if v {
                    Ok(RawRestart::Mode(RestartName::Always))
                } else {
                    Ok(RawRestart::Mode(RestartName::No))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRestart, E> {
                RestartName::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(RawRestart::Mode)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRestart, A::Error> {
                RawRestartFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRestart::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// `backoff:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// First delay (default 100ms).
    pub initial: Option<HumanDuration>,
    /// Largest delay (default 30s).
    pub max: Option<HumanDuration>,
    /// Growth factor, >= 1 (default 2).
    pub multiplier: Option<f64>,
    /// Random shortening as a fraction, 0..=1 (default 0.1: each delay is 90-100 % of
    /// the nominal one).
    pub jitter: Option<f64>,
    /// Running this long resets the delay (default 10s).
    pub reset_after: Option<HumanDuration>,
}

/// A port: a number, `"host:container[/proto]"`, `"ip:host:container"`, or a map.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPort {
    /// The port the service listens on.
    Number(u16),
    /// Short syntax.
    Short(String),
    /// Long syntax.
    Long(RawPortLong),
}

/// `{host, container, protocol}` (or compose's `published`/`target`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPortLong {
    /// Port published on the host.
    #[serde(alias = "published")]
    pub host: Option<u16>,
    /// Port the service listens on.
    #[serde(alias = "target")]
    pub container: u16,
    /// `tcp` (default) or `udp`.
    pub protocol: Option<crate::model::Protocol>,
    /// Host address to publish on.
    pub host_ip: Option<String>,
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, `\"HOST:CONTAINER\"`, or a map with `container`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|p| *p != 0)
                    .map(RawPort::Number)
                    .ok_or_else(|| E::custom(format!("port {v} is out of range (1-65535)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Err(E::custom(format!("port {v} is out of range (1-65535)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Short(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPort, A::Error> {
                RawPortLong::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawPort::Long)
            }
        }
        d.deserialize_any(V)
    }
}

/// `build:` a context directory, or a map.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawBuild {
    /// Just the context.
    Context(String),
    /// Context and options.
    Full(RawBuildFull),
}

/// `build: {context, dockerfile, args}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBuildFull {
    /// The build context directory (default `.`).
    pub context: Option<String>,
    /// The Dockerfile, relative to the context.
    pub dockerfile: Option<String>,
    /// Build arguments.
    pub args: Option<EnvMap>,
}

impl<'de> Deserialize<'de> for RawBuild {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBuild;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a context directory, or a map with `context`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBuild, E> {
                Ok(RawBuild::Context(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBuild, A::Error> {
                RawBuildFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawBuild::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// `security:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    /// Read-only root file system.
    pub read_only: Option<bool>,
    /// OCI runtime, e.g. `runsc`.
    pub runtime: Option<String>,
    /// Capabilities to drop, e.g. `[ALL]`.
    pub cap_drop: Option<Vec<String>>,
    /// Capabilities to add.
    pub cap_add: Option<Vec<String>>,
    /// Forbid privilege escalation.
    pub no_new_privileges: Option<bool>,
    /// User inside the container.
    pub user: Option<String>,
}

/// `resources:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// CPU cores, e.g. `0.5`.
    pub cpus: Option<Scalar>,
    /// Memory: bytes, or `512m`, `1g`, `256MiB`.
    pub memory: Option<Scalar>,
}

/// Parses a memory size: bytes, or a number with `k`, `m`, `g`, `t` (powers of 1024;
/// `kb`/`kib`, `mb`/`mib`... are accepted too).
pub fn parse_memory(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Splits a command line into words like a POSIX shell would (quotes and
/// backslashes; no expansion). `None` if a quote is not closed.
pub fn split_command(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => cur.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            ch @ ('"' | '\\' | '$' | '`') => cur.push(ch),
                            ch => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                        },
                        ch => cur.push(ch),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    cur.push(ch);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512"), Some(512));
        assert_eq!(parse_memory("1k"), Some(1024));
        assert_eq!(parse_memory("512m"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1.5GiB"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("1x"), None);
    }

    #[test]
    fn command_words() {
        assert_eq!(
            split_command(r#"sh -c 'echo "hi there"' a\ b "x\"y""#).unwrap(),
            vec!["sh", "-c", "echo \"hi there\"", "a b", "x\"y"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_command("''").unwrap(), vec![""]);
        assert!(split_command("'open").is_none());
    }
}
