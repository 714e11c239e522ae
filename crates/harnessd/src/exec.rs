//! `harness exec`: how to run a command where a running service runs (ADR 024).
//!
//! The daemon runs nothing for it: it answers an [`ExecPlan`] that says where the service
//! runs and with what (its environment, directory and user; its container and engine; its
//! node and the daemon's ssh settings), and the client runs the command with its own
//! terminal.

use harness_config::Project;
use harness_core::{ProjectName, ServiceKind, ServiceName, ServiceState};
use harness_protocol::{EngineAddress, ErrorBody, ErrorCode, ExecPlan, ExecTarget, SshCommand};
use service_orchestration::ServiceManager;
use service_orchestration::docker::{DockerExecutor, DockerRecord};
use service_orchestration::remote::RemoteRecord;
use service_orchestration::ssh::{SshHost, SshHosts};

use crate::backend::BackendResult;

/// The engines and nodes of a project, as its executors reach them.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// This machine's engine, when the project uses it and it answered.
    pub docker: Option<&'a DockerExecutor>,
    /// The project's nodes.
    pub hosts: Option<&'a SshHosts>,
}

fn err(code: ErrorCode, m: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, m)
}

/// The plan for a command beside `service` of project `name`, run by manager `m`.
pub fn plan(
    name: &ProjectName,
    project: &Project,
    m: &ServiceManager,
    reach: Reach<'_>,
    service: &ServiceName,
) -> BackendResult<ExecPlan> {
    let Some(spec) = project.services.get(service) else {
        return Err(err(
            ErrorCode::NotFound,
            format!("no service {service} in project {name}"),
        ));
    };
    let state = m.state(service.as_str()).unwrap_or(ServiceState::Pending);
    let record = m.records().into_iter().find(|r| &r.service == service);
    let record = match record {
        Some(r) if state.is_alive() => r,
        _ => {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "service {service} is not running ({state}); `harness start {service}` starts it"
                ),
            ));
        }
    };
    let env = || {
        m.placement()
            .environment(service.as_str(), None)
            .map_err(|e| err(ErrorCode::ConfigInvalid, format!("{service}: {e}")))
    };
    let target = match spec.kind() {
        ServiceKind::Process => ExecTarget::Local {
            env: env()?,
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
        },
        ServiceKind::Docker => {
            let rec = DockerRecord::from_instance(&record.instance).ok_or_else(|| {
                err(
                    ErrorCode::Internal,
                    format!("service {service} has no container record"),
                )
            })?;
            let engine = match spec.host() {
                None => {
                    let docker = reach.docker.ok_or_else(|| {
                        err(
                            ErrorCode::Unavailable,
                            "the daemon has no connection to this machine's Docker engine",
                        )
                    })?;
                    engine_address(docker.docker().transport())
                }
                Some(node) => {
                    let ssh = session(node_host(reach, node)?.as_ref());
                    let mut argv = vec![ssh.program, "-T".to_owned()];
                    argv.extend(ssh.options);
                    argv.push(ssh.destination);
                    argv.extend(["--", "docker", "system", "dial-stdio"].map(str::to_owned));
                    EngineAddress::Command { argv }
                }
            };
            ExecTarget::Container {
                container: rec.id,
                engine,
            }
        }
        ServiceKind::Remote | ServiceKind::Package => {
            let rec: RemoteRecord =
                serde_json::from_value(record.instance.data.clone()).map_err(|e| {
                    err(
                        ErrorCode::Internal,
                        format!("the record of service {service} is not a remote record: {e}"),
                    )
                })?;
            let host = node_host(reach, &rec.host)?;
            ExecTarget::Ssh {
                ssh: session(host.as_ref()),
                node: host.name().to_owned(),
                dir: rec.working_dir.unwrap_or(rec.dir),
                env: env()?,
            }
        }
    };
    Ok(ExecPlan {
        project: name.clone(),
        service: service.clone(),
        target,
    })
}

/// The node `name` of the project.
fn node_host(reach: Reach<'_>, name: &str) -> BackendResult<std::sync::Arc<SshHost>> {
    let hosts = reach.hosts.ok_or_else(|| {
        err(
            ErrorCode::Unavailable,
            "the daemon has no ssh settings for the project's nodes",
        )
    })?;
    hosts
        .get(name)
        .map_err(|e| err(ErrorCode::Unavailable, e.to_string()))
}

/// An ssh client for `host` with the daemon's settings.
fn session(host: &SshHost) -> SshCommand {
    let (program, options, destination) = host.session();
    SshCommand {
        program,
        options,
        destination,
    }
}

/// How a client reaches the engine of `transport`.
fn engine_address(transport: &docker_engine::Transport) -> EngineAddress {
    match transport {
        docker_engine::Transport::Unix(path) => EngineAddress::Socket { path: path.clone() },
        docker_engine::Transport::Tcp(address) => EngineAddress::Tcp {
            address: address.clone(),
        },
        docker_engine::Transport::Command(argv) => EngineAddress::Command { argv: argv.clone() },
    }
}
