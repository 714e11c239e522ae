//! The messages that travel over the wire, one JSON document per WebSocket
//! text message.
//!
//! A connection starts with the client's [`Hello`]; the daemon answers
//! [`Welcome`] or, if it cannot speak the client's protocol version,
//! [`ServerMessage::Rejected`] and closes. Then the client sends
//! [`Request`]s, each with an id of its choosing that is unique on the
//! connection; the daemon answers each with exactly one [`Response`]. A
//! streaming method ([`Method::Logs`], [`Method::Events`], [`Method::Up`])
//! first sends any number of [`ServerMessage::Item`]s for that id: its
//! [`Response`] is the end marker of the stream. Requests are independent
//! and answered in any order, so many run at once over one connection.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use harness_core::{Health, OutputStream, ProjectName, ServiceName, ServiceState, ServiceStatus};
use serde::{Deserialize, Serialize};

/// The version of this protocol. A daemon answers a [`Hello`] with another
/// version with [`ErrorCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;

/// A request id, chosen by the client, unique among its requests in flight.
pub type RequestId = u64;

/// The first message of a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub protocol: u32,
    /// Who the client is, for logs (e.g. `harness/0.1.0`).
    pub client: String,
}

/// The daemon's answer to a [`Hello`] it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the daemon speaks (equal to the client's).
    pub protocol: u32,
    /// The daemon's own version (its crate version).
    pub daemon_version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Largest message, in bytes, the daemon accepts.
    pub max_frame_bytes: usize,
}

/// Everything a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The handshake; the first message and only the first.
    Hello(Hello),
    /// A request.
    Request(Request),
}

/// Everything a daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The handshake was refused; the daemon closes the connection.
    Rejected {
        /// Why.
        error: ErrorBody,
    },
    /// One item of a streamed response.
    Item {
        /// The request it belongs to.
        id: RequestId,
        /// The item.
        item: StreamItem,
    },
    /// The final answer to a request (for a stream: its end marker).
    Response(Response),
}

/// A request: an id and a method with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The id; its [`Response`] and [`ServerMessage::Item`]s carry it back.
    pub id: RequestId,
    /// What to do.
    #[serde(flatten)]
    pub method: Method,
}

/// Which project a request is about.
///
/// With `files`, the daemon loads (or reloads) the project from those
/// `services.yaml` files, interpolating with `env`; relative paths are
/// resolved against `working_dir`. With only `name`, it uses the project
/// it already has by that name. With neither, it uses its only project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRef {
    /// The project name (`-p`), overriding the name in the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ProjectName>,
    /// The configuration files, in merge order (`-f`, repeated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
    /// The directory relative paths are resolved against (the CLI's cwd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// The environment used for `${VAR}` interpolation (the CLI's environment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ProjectRef {
    /// A reference to an already loaded project by name.
    pub fn named(name: ProjectName) -> Self {
        ProjectRef {
            name: Some(name),
            ..ProjectRef::default()
        }
    }
}

/// Parameters of [`Method::Up`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpParams {
    /// The project to bring up.
    pub project: ProjectRef,
    /// The services to bring up (with their dependencies); empty means all.
    #[serde(default)]
    pub services: Vec<ServiceName>,
    /// Answer only once the services are ready (or one failed).
    #[serde(default)]
    pub wait: bool,
    /// With `wait`: give up after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Parameters of methods that act on some services of a project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesParams {
    /// The project.
    #[serde(default)]
    pub project: ProjectRef,
    /// The services; empty means all.
    #[serde(default)]
    pub services: Vec<ServiceName>,
}

/// Parameters of [`Method::Logs`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsParams {
    /// The project.
    #[serde(default)]
    pub project: ProjectRef,
    /// The services; empty means all.
    #[serde(default)]
    pub services: Vec<ServiceName>,
    /// Keep streaming new lines until cancelled.
    #[serde(default)]
    pub follow: bool,
    /// Start with at most this many of the latest lines per service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Only lines written at or after this time (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

/// Parameters of [`Method::Env`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvParams {
    /// The project.
    #[serde(default)]
    pub project: ProjectRef,
    /// The service whose environment to show.
    pub service: ServiceName,
}

/// Parameters of [`Method::Exec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecParams {
    /// The project.
    #[serde(default)]
    pub project: ProjectRef,
    /// The service to run a command where it runs.
    pub service: ServiceName,
}

/// Parameters of [`Method::Cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelParams {
    /// The request to cancel.
    pub id: RequestId,
}

/// What a request asks for. On the wire: `"method": "<name>"` and, for
/// methods with parameters, `"params": {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Method {
    /// Load the project and bring services up. Streams [`StreamItem::Event`]s
    /// while it works; answers [`ProjectStatus`].
    Up(UpParams),
    /// Stop every service of the project and forget it. Answers [`ProjectStatus`].
    Down(ServicesParams),
    /// Start services (and what they depend on). Answers [`ProjectStatus`].
    Start(ServicesParams),
    /// Stop services (and what depends on them). Answers [`ProjectStatus`].
    Stop(ServicesParams),
    /// Restart services. Answers [`ProjectStatus`].
    Restart(ServicesParams),
    /// The status of services. Answers `Vec<`[`ProjectStatus`]`>`: every
    /// project when no project is named.
    Status(ServicesParams),
    /// Output lines. Streams [`StreamItem::Log`]s; with `follow`, until cancelled.
    Logs(LogsParams),
    /// State changes, until cancelled. Streams [`StreamItem::Event`]s.
    Events(ServicesParams),
    /// The environment a service is started with. Answers [`EnvResult`].
    Env(EnvParams),
    /// How to run a command where a running service runs (`harness exec`): its
    /// environment, directory and user, its container and engine, or its node's ssh
    /// settings. The daemon runs nothing: the client runs the command, with its own
    /// terminal. Answers [`ExecPlan`]; [`ErrorCode::Conflict`] when the service does not run.
    Exec(ExecParams),
    /// The projects the daemon runs, with their files and service counts. Answers
    /// `Vec<`[`ProjectSummary`]`>`.
    Projects,
    /// About the daemon. Answers [`DaemonInfo`].
    DaemonStatus,
    /// Stop the daemon, leaving services running. Answers `null`, then the daemon exits.
    DaemonStop,
    /// Cancel a request in flight (a stream ends with [`ErrorCode::Cancelled`]). Answers `null`.
    Cancel(CancelParams),
    /// Does nothing. Answers `null`.
    Ping,
}

impl Method {
    /// The wire names of every method.
    pub const NAMES: &'static [&'static str] = &[
        "up",
        "down",
        "start",
        "stop",
        "restart",
        "status",
        "logs",
        "events",
        "env",
        "exec",
        "projects",
        "daemon_status",
        "daemon_stop",
        "cancel",
        "ping",
    ];

    /// This method's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Up(_) => "up",
            Method::Down(_) => "down",
            Method::Start(_) => "start",
            Method::Stop(_) => "stop",
            Method::Restart(_) => "restart",
            Method::Status(_) => "status",
            Method::Logs(_) => "logs",
            Method::Events(_) => "events",
            Method::Env(_) => "env",
            Method::Exec(_) => "exec",
            Method::Projects => "projects",
            Method::DaemonStatus => "daemon_status",
            Method::DaemonStop => "daemon_stop",
            Method::Cancel(_) => "cancel",
            Method::Ping => "ping",
        }
    }
}

/// The final answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id (0 when the request's id could not be read).
    pub id: RequestId,
    /// Its outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Success with a result, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The method's result (its type depends on the method).
    Result(serde_json::Value),
    /// Why the request failed.
    Error(ErrorBody),
}

/// A typed error: a stable machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error.
    pub code: ErrorCode,
    /// One line naming what and where.
    pub message: String,
}

impl ErrorBody {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Error codes. Unknown codes from a newer daemon read as [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not valid JSON or not a valid request.
    BadRequest,
    /// The method is not known to this daemon.
    UnknownMethod,
    /// The handshake asked for a protocol version the daemon does not speak.
    VersionMismatch,
    /// The message is larger than the frame limit.
    FrameTooLarge,
    /// A project or service does not exist.
    NotFound,
    /// The project's configuration does not load.
    ConfigInvalid,
    /// The request conflicts with what is going on (e.g. a duplicate id).
    Conflict,
    /// A service failed (e.g. `up --wait` and a service did not become ready).
    ServiceFailed,
    /// A deadline passed.
    Timeout,
    /// The request was cancelled.
    Cancelled,
    /// The daemon cannot do this now (e.g. it is shutting down).
    Unavailable,
    /// A bug or an unexpected failure in the daemon.
    Internal,
    /// A code this client does not know.
    #[serde(other)]
    Other,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".to_owned());
        f.write_str(&s)
    }
}

/// One item of a streamed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamItem {
    /// A line of output.
    Log(LogItem),
    /// A state change, a health verdict, a lifecycle report or a reload.
    Event(EventItem),
    /// An item of a kind this client does not know (from a newer daemon).
    #[serde(other)]
    Other,
}

/// A line of a service's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogItem {
    /// The project.
    pub project: ProjectName,
    /// The service.
    pub service: ServiceName,
    /// stdout or stderr.
    pub stream: OutputStream,
    /// When the line was written, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The line, without its terminator (invalid UTF-8 replaced).
    pub line: String,
}

/// What an [`EventItem`] tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The service's state changed (`state` is the new one).
    #[default]
    State,
    /// The verdict of its readiness check changed (`health`; `message` is the check result).
    Health,
    /// What harness says happened to it: an exit and whether and when it is restarted,
    /// a failure to start, a check that gave up (`message`, the line of its `harness.log`).
    Report,
    /// The project's configuration was loaded again and this service changed, was added or
    /// was removed (`message` says which).
    Reload,
    /// A kind this client does not know (from a newer daemon).
    #[serde(other)]
    Other,
}

impl EventKind {
    /// The wire name: `state`, `health`, `report`, `reload`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Health => "health",
            EventKind::Report => "report",
            EventKind::Reload => "reload",
            EventKind::Other => "other",
        }
    }
}

/// Something that happened to a service: a change of its state, a health verdict, a
/// lifecycle report or a configuration reload ([`EventKind`]). Every item carries the
/// service's state and health at that time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventItem {
    /// The project.
    pub project: ProjectName,
    /// The service.
    pub service: ServiceName,
    /// When, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The new state (flattened: `state` plus its fields).
    #[serde(flatten)]
    pub state: ServiceState,
    /// The health verdict at that time.
    pub health: Health,
    /// The process id, if one is running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// What the event tells (daemons that predate it send only state changes). On the
    /// wire `event` (`kind` is the tag of [`StreamItem`]).
    #[serde(default, rename = "event")]
    pub kind: EventKind,
    /// For health verdicts, reports and reloads: the text (a check result, a report line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The services of one project, as [`Method::Status`] and the lifecycle
/// methods answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectStatus {
    /// The project.
    pub project: ProjectName,
    /// Its services, in the order of the configuration.
    pub services: Vec<ServiceStatus>,
    /// For [`Method::Stop`] and [`Method::Restart`] of named services: the services the
    /// request stopped or restarted, the named ones first, then the services depending on
    /// them that it took along. Empty for other methods, and from daemons that predate it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<ServiceName>,
    /// Conditions of the daemon that concern what this status can be trusted
    /// for, e.g. that its state cannot be saved (a full disk): services are
    /// still tracked, in memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The answer to [`Method::Env`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvResult {
    /// The service.
    pub service: ServiceName,
    /// Its environment, interpolated.
    pub env: BTreeMap<String, String>,
}

/// The answer to [`Method::Exec`]: the service, and how to reach where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPlan {
    /// The project.
    pub project: ProjectName,
    /// The service.
    pub service: ServiceName,
    /// Where and how a command runs beside it.
    pub target: ExecTarget,
}

/// Where a command run beside a service runs, with what it needs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecTarget {
    /// A local process service: the command runs on this machine with the service's
    /// environment (added to the caller's), in its working directory, as its user.
    Local {
        /// The service's environment, as the daemon resolves it (`harness env`).
        env: BTreeMap<String, String>,
        /// Its working directory, when it has one (else the caller's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_dir: Option<PathBuf>,
        /// Its `user:` (`name`, `uid`, `name:group`, `uid:gid`), when it runs as another user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// A container: the command runs in it through the engine's exec API, with the
    /// container's environment, directory and user.
    Container {
        /// The container id.
        container: String,
        /// The engine it runs on.
        engine: EngineAddress,
    },
    /// A process on a node: the command runs there over ssh, in the service's directory,
    /// with its environment.
    Ssh {
        /// How to reach the node with the daemon's ssh settings.
        ssh: SshCommand,
        /// The node's name.
        node: String,
        /// The directory to run in on the node: the service's working directory (relative
        /// to the login directory, or absolute), else the directory it runs in.
        dir: String,
        /// The service's environment.
        env: BTreeMap<String, String>,
    },
}

/// How to reach a Docker engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum EngineAddress {
    /// A unix socket.
    Socket {
        /// Its path.
        path: PathBuf,
    },
    /// Plain TCP.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// The stdio of a command (`ssh NODE docker system dial-stdio`).
    Command {
        /// The command and its arguments.
        argv: Vec<String>,
    },
}

/// An ssh client with the settings the daemon uses for a node: `program [-t|-T] options
/// destination -- command`. It shares the daemon's master connection when one is up and
/// never becomes a master itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshCommand {
    /// The ssh program.
    pub program: String,
    /// The options (everything between the program and the destination).
    pub options: Vec<String>,
    /// The host to connect to.
    pub destination: String,
}

impl SshCommand {
    /// The argv that runs `remote_command` (one shell command line) on the node; `tty`
    /// asks for a terminal there (`-t`), else none (`-T`).
    pub fn argv(&self, tty: bool, remote_command: &str) -> Vec<String> {
        let mut argv = vec![
            self.program.clone(),
            if tty { "-t" } else { "-T" }.to_owned(),
        ];
        argv.extend(self.options.iter().cloned());
        argv.push(self.destination.clone());
        argv.push("--".to_owned());
        argv.push(remote_command.to_owned());
        argv
    }
}

/// One project of the daemon, as [`Method::Projects`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSummary {
    /// The project.
    pub project: ProjectName,
    /// The configuration files it was loaded from, in merge order.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The directory it was loaded from (relative paths are relative to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// How many services it has.
    pub services: usize,
    /// How many of them are in each state (by [`ServiceState::label`]).
    #[serde(default)]
    pub states: BTreeMap<String, usize>,
}

/// The answer to [`Method::DaemonStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The daemon's version.
    pub version: String,
    /// The protocol version.
    pub protocol: u32,
    /// Its process id.
    pub pid: u32,
    /// The address it listens on.
    pub address: String,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The projects it manages.
    pub projects: Vec<ProjectName>,
    /// Open client connections.
    pub connections: u64,
    /// The metrics listener address, if enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// Conditions that need attention, e.g. that the state cannot be saved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How it stops local process services and what they started (absent
    /// from daemons that predate it, and from backends without processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<Stopping>,
}

/// How a daemon stops a local process service and every process it started
/// (ADR 021).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Stopping {
    /// Each service runs in a cgroup v2 of its own below `root`; stopping
    /// ends every process of that cgroup.
    Cgroup {
        /// The cgroup the services' cgroups are made in.
        root: PathBuf,
    },
    /// Stopping ends the service's process group, its descendants and the
    /// processes carrying its run marker, found in `/proc`.
    ProcessGroup {
        /// The daemon is a child subreaper: orphans of services come back
        /// to it and are reaped.
        subreaper: bool,
        /// Why cgroups are not used.
        reason: String,
    },
}

impl fmt::Display for Stopping {
    /// `cgroup v2 at ROOT` or `process group + subreaper (REASON)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopping::Cgroup { root } => write!(f, "cgroup v2 at {}", root.display()),
            Stopping::ProcessGroup { subreaper, reason } => {
                let with = if *subreaper { " + subreaper" } else { "" };
                write!(f, "process group{with} ({reason})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_wire_form() {
        let r = Request {
            id: 7,
            method: Method::Status(ServicesParams::default()),
        };
        let j = serde_json::to_value(ClientMessage::Request(r.clone())).unwrap();
        assert_eq!(j["type"], "request");
        assert_eq!(j["id"], 7);
        assert_eq!(j["method"], "status");
        let back: ClientMessage = serde_json::from_value(j).unwrap();
        assert_eq!(back, ClientMessage::Request(r));

        let ping = serde_json::to_value(Request {
            id: 1,
            method: Method::Ping,
        })
        .unwrap();
        assert_eq!(ping, json!({"id": 1, "method": "ping"}));
    }

    #[test]
    fn method_names_match_serde() {
        for (m, name) in [
            (Method::Ping, "ping"),
            (Method::DaemonStatus, "daemon_status"),
            (Method::Cancel(CancelParams { id: 1 }), "cancel"),
            (Method::Projects, "projects"),
        ] {
            assert_eq!(m.name(), name);
            assert_eq!(serde_json::to_value(&m).unwrap()["method"], name);
            assert!(Method::NAMES.contains(&name));
        }
    }

    #[test]
    fn response_wire_forms() {
        let ok = ServerMessage::Response(Response {
            id: 3,
            outcome: Outcome::Result(json!(null)),
        });
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"type": "response", "id": 3, "result": null})
        );
        let err = ServerMessage::Response(Response {
            id: 4,
            outcome: Outcome::Error(ErrorBody::new(ErrorCode::NotFound, "no service web")),
        });
        let j = serde_json::to_value(&err).unwrap();
        assert_eq!(j["error"]["code"], "not_found");
        assert_eq!(serde_json::from_value::<ServerMessage>(j).unwrap(), err);
    }

    #[test]
    fn events_from_older_daemons_are_state_changes() {
        let old = json!({
            "project": "p", "service": "api", "ts_ms": 5, "state": "restarting",
            "attempt": 1, "in_ms": 500, "reason": "exited with code 1", "health": "unknown"
        });
        let ev: EventItem = serde_json::from_value(old).unwrap();
        assert_eq!(ev.kind, EventKind::State);
        assert_eq!(ev.message, None);
        let report = EventItem {
            kind: EventKind::Report,
            message: Some("exited with code 1; restart 1 in 0.5s".into()),
            ..ev
        };
        let j = serde_json::to_value(&report).unwrap();
        assert_eq!(j["event"], "report");
        assert_eq!(j["state"], "restarting");
        assert_eq!(serde_json::from_value::<EventItem>(j).unwrap(), report);
        // As a stream item, tagged `kind: event`.
        let item = StreamItem::Event(report);
        let j = serde_json::to_value(&item).unwrap();
        assert_eq!(j["kind"], "event");
        assert_eq!(j["event"], "report");
        assert_eq!(serde_json::from_value::<StreamItem>(j).unwrap(), item);
        let newer: EventKind = serde_json::from_value(json!("brand_new")).unwrap();
        assert_eq!(newer, EventKind::Other);
    }

    #[test]
    fn unknown_stream_items_read_as_other() {
        let item: StreamItem =
            serde_json::from_value(json!({"kind": "brand_new", "x": 1})).unwrap();
        assert_eq!(item, StreamItem::Other);
    }

    #[test]
    fn exec_plans_round_trip() {
        let plans = [
            ExecTarget::Local {
                env: BTreeMap::from([("FOO".into(), "bar".into())]),
                working_dir: Some("/srv".into()),
                user: None,
            },
            ExecTarget::Container {
                container: "abc".into(),
                engine: EngineAddress::Socket {
                    path: "/var/run/docker.sock".into(),
                },
            },
            ExecTarget::Ssh {
                ssh: SshCommand {
                    program: "ssh".into(),
                    options: vec!["-o".into(), "BatchMode=yes".into()],
                    destination: "10.0.0.2".into(),
                },
                node: "n1".into(),
                dir: ".harness/p/api".into(),
                env: BTreeMap::new(),
            },
        ];
        for target in plans {
            let plan = ExecPlan {
                project: ProjectName::new("p").unwrap(),
                service: ServiceName::new("api").unwrap(),
                target,
            };
            let j = serde_json::to_value(&plan).unwrap();
            assert_eq!(serde_json::from_value::<ExecPlan>(j).unwrap(), plan);
        }
        let ssh = SshCommand {
            program: "ssh".into(),
            options: vec!["-l".into(), "root".into()],
            destination: "node".into(),
        };
        assert_eq!(
            ssh.argv(true, "echo hi"),
            ["ssh", "-t", "-l", "root", "node", "--", "echo hi"]
        );
        assert_eq!(ssh.argv(false, "x")[1], "-T");
    }

    #[test]
    fn unknown_error_codes_read_as_other() {
        let e: ErrorBody =
            serde_json::from_value(json!({"code": "brand_new", "message": "x"})).unwrap();
        assert_eq!(e.code, ErrorCode::Other);
        assert_eq!(ErrorCode::UnknownMethod.to_string(), "unknown_method");
    }

    #[test]
    fn stopping_wire_form_and_older_daemons() {
        let cg = Stopping::Cgroup {
            root: PathBuf::from("/sys/fs/cgroup/harness-1"),
        };
        assert_eq!(
            serde_json::to_value(&cg).unwrap(),
            json!({"mode": "cgroup", "root": "/sys/fs/cgroup/harness-1"})
        );
        assert_eq!(cg.to_string(), "cgroup v2 at /sys/fs/cgroup/harness-1");
        let pg = Stopping::ProcessGroup {
            subreaper: true,
            reason: "cgroup v2 is not writable".into(),
        };
        let j = serde_json::to_value(&pg).unwrap();
        assert_eq!(j["mode"], "process_group");
        assert_eq!(serde_json::from_value::<Stopping>(j).unwrap(), pg);
        assert_eq!(
            pg.to_string(),
            "process group + subreaper (cgroup v2 is not writable)"
        );
        let older = json!({
            "version": "0.1.0", "protocol": 1, "pid": 1, "address": "127.0.0.1:1",
            "state_dir": "/s", "started_at_ms": 0, "projects": [], "connections": 0
        });
        let info: DaemonInfo = serde_json::from_value(older).unwrap();
        assert_eq!(info.stopping, None);
    }
}
