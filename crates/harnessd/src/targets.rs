//! Where the daemon's services run: local processes, Docker containers and
//! services on nodes over ssh (`remote`, `package`).
//!
//! [`Targets`] is shared by every project of a daemon. For each project it
//! gives the executors to register ([`Targets::for_project`]); where their
//! services run is recorded in the project's registry, which answers
//! `${svc.ip|port|host}` (ADR 017):
//!
//! - **Local processes.** How they are stopped is decided once per daemon
//!   ([`LocalStopping`], ADR 021): where cgroup v2 is writable, each service
//!   runs in a cgroup of its own below `harness-<key>` (a key of the state
//!   directory) under the daemon's own cgroup, and stopping ends the whole
//!   cgroup; elsewhere (or with `HARNESS_CGROUPS=off`) the daemon becomes a
//!   child subreaper and stopping ends the process group, the descendants and
//!   what carries the service's run marker.
//! - **Docker.** One engine client (`DOCKER_HOST`, else the local socket),
//!   connected the first time a project with docker services on this machine
//!   needs it. A project without such services never touches the engine, so it
//!   works on a machine without Docker; when the engine cannot be reached, the
//!   docker services of a project fail to start with an error that says so.
//!   Before a manager re-adopts records, the running containers of the project
//!   are discovered ([`ProjectTargets::containers`]) and recorded in the
//!   registry, so endpoints resolve to them and nothing is started twice.
//!   Docker services with `host:` run on their node's engine over ssh, one
//!   client per node connected on first use ([`DockerPlacement`]).
//! - **Nodes.** The nodes of the project's networks, with their ssh master
//!   connections in a short control directory of the daemon.
//!
//! The output of containers and of services on nodes arrives as events, not
//! in files; the daemon reads logs from files (ADR 007), so these executors
//! are wrapped to append every output line to the service's log files as it
//! passes ([`ToLogFiles`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_lock::Mutex;
use command_executor::CgroupRoot;
use futures_lite::StreamExt;
use harness_config::ServiceSpec;
use harness_core::ServiceName;
use harness_core::{OutputLine, OutputStream, ServiceKind};
use harness_protocol::Stopping;
use service_orchestration::docker::{DockerExecutor, DockerRecord};
use service_orchestration::docker_hosts::DockerPlacement;
use service_orchestration::package::{PackageExecutor, project_dir};
use service_orchestration::process::ProcessExecutor;
use service_orchestration::remote::RemoteExecutor;
use service_orchestration::ssh::{MAX_CONTROL_DIR_LEN, SshHosts, SshOptions};
use service_orchestration::{
    ExecutorError, InstanceEvent, InstanceRecord, Launched, ServiceExecutor, SharedExecutor,
    StartContext,
};

/// The executors of one project, and what runs of it already.
pub struct ProjectTargets {
    /// Executors to register (they replace the manager's default of their kind).
    pub executors: Vec<(ServiceKind, SharedExecutor)>,
    /// The project's containers found running on the engine, with where they are.
    pub containers: Vec<(ServiceName, DockerRecord)>,
    /// The Docker executor, when the project has docker services and the engine answered.
    pub docker: Option<DockerExecutor>,
    /// The project's nodes, when it has services on nodes.
    pub hosts: Option<SshHosts>,
    /// The executor of the project's docker services, when it has any: it
    /// knows every engine they ran on, this machine's and the nodes'
    /// ([`DockerPlacement::remove_project`] cleans them all up).
    pub docker_placement: Option<Arc<DockerPlacement>>,
}

impl std::fmt::Debug for ProjectTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectTargets")
            .field(
                "executors",
                &self.executors.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            )
            .field("docker", &self.docker.is_some())
            .field("hosts", &self.hosts)
            .field("docker_placement", &self.docker_placement)
            .finish_non_exhaustive()
    }
}

/// How the daemon stops its local process services and what they started
/// (ADR 021), decided once when it starts.
#[derive(Debug, Clone)]
pub enum LocalStopping {
    /// Each service in a cgroup of its own below this root.
    Cgroup(CgroupRoot),
    /// The process group, the descendants and the marked processes.
    ProcessGroup {
        /// The daemon became a child subreaper.
        subreaper: bool,
        /// Why cgroups are not used.
        reason: String,
    },
}

impl LocalStopping {
    /// Uses cgroup v2 when `cgroups` is true and a cgroup
    /// [`cgroup_name`] can be made and written below this process's own
    /// cgroup; else the fallback, for which this process becomes a child
    /// subreaper.
    pub fn detect(state_root: &Path, cgroups: bool) -> LocalStopping {
        let why = if cgroups {
            match CgroupRoot::below_own(&cgroup_name(state_root)) {
                Ok(root) => return LocalStopping::Cgroup(root),
                Err(e) => format!("cgroup v2 not writable: {e}"),
            }
        } else {
            "cgroups turned off by HARNESS_CGROUPS=off".to_owned()
        };
        match command_executor::become_child_subreaper() {
            Ok(()) => LocalStopping::ProcessGroup {
                subreaper: true,
                reason: why,
            },
            Err(e) => LocalStopping::ProcessGroup {
                subreaper: false,
                reason: format!("{why}; cannot become a child subreaper: {e}"),
            },
        }
    }

    /// What `daemon status` shows of it.
    pub fn info(&self) -> Stopping {
        match self {
            LocalStopping::Cgroup(root) => Stopping::Cgroup {
                root: root.path().to_owned(),
            },
            LocalStopping::ProcessGroup { subreaper, reason } => Stopping::ProcessGroup {
                subreaper: *subreaper,
                reason: reason.clone(),
            },
        }
    }

    /// The executor of local process services that stops them this way.
    fn executor(&self) -> ProcessExecutor {
        match self {
            LocalStopping::Cgroup(root) => ProcessExecutor::new().with_cgroups(root.clone()),
            LocalStopping::ProcessGroup { .. } => ProcessExecutor::new(),
        }
    }
}

/// The name of the daemon's cgroup root: `harness-` and the first 12 hex
/// digits of the SHA-256 of the state directory (made absolute): the same
/// across the daemon's restarts, different for daemons of other state
/// directories.
pub fn cgroup_name(state_root: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(state_root).unwrap_or_else(|_| state_root.to_owned());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("harness-{hex}")
}

/// The daemon-wide part: how local processes are stopped, the engine client
/// and where ssh control sockets live.
#[derive(Debug)]
pub struct Targets {
    stopping: LocalStopping,
    process: Arc<ProcessExecutor>,
    docker: Mutex<Option<DockerExecutor>>,
    control_dir: PathBuf,
    ssh: SshOptions,
}

impl Targets {
    /// Targets for the daemon whose state directory is `state_root`, with
    /// cgroups where they can be used ([`LocalStopping::detect`]).
    pub fn new(state_root: &Path) -> Targets {
        Targets::with_stopping(state_root, LocalStopping::detect(state_root, true))
    }

    /// Targets that stop local processes as `stopping` says.
    pub fn with_stopping(state_root: &Path, stopping: LocalStopping) -> Targets {
        Targets {
            process: Arc::new(stopping.executor()),
            stopping,
            docker: Mutex::new(None),
            control_dir: control_dir_for(state_root),
            ssh: SshOptions::default(),
        }
    }

    /// How local process services are stopped.
    pub fn stopping(&self) -> &LocalStopping {
        &self.stopping
    }

    /// Adds `-o KEY=VALUE` options to every ssh connection to nodes (e.g.
    /// `StrictHostKeyChecking=accept-new`); `~/.ssh/config` applies as well.
    pub fn with_ssh_options(
        mut self,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Targets {
        self.ssh.extra.extend(options);
        self
    }

    /// Where the ssh master sockets of this daemon live.
    pub fn control_dir(&self) -> &Path {
        &self.control_dir
    }

    /// The Docker executor, connecting on first use. A failed connection is
    /// not remembered: the next project that needs the engine tries again.
    pub async fn docker(&self) -> Result<DockerExecutor, String> {
        let mut slot = self.docker.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        match DockerExecutor::from_env().await {
            Ok(d) => {
                *slot = Some(d.clone());
                Ok(d)
            }
            Err(e) => Err(format!("the Docker engine is unreachable: {e}")),
        }
    }

    /// The executors of `project`. Never fails: what cannot be
    /// set up is registered as an executor that refuses with the reason, so
    /// the other services of the project still run.
    pub async fn for_project(&self, project: &harness_config::Project) -> ProjectTargets {
        let name = project.name.as_str();
        let kinds: Vec<ServiceKind> = project.services.values().map(ServiceSpec::kind).collect();
        let mut executors: Vec<(ServiceKind, SharedExecutor)> =
            vec![(ServiceKind::Process, self.process.clone() as SharedExecutor)];
        let mut containers = Vec::new();
        let mut docker = None;
        // Docker services go to this machine's engine or to their node's
        // (`host:`); the local engine is only needed for the former.
        let mut placement = DockerPlacement::new();
        let local_docker = project
            .services
            .values()
            .any(|s| s.kind() == ServiceKind::Docker && s.host().is_none());
        if local_docker {
            match self.docker().await {
                Ok(d) => {
                    match d.discover(project).await {
                        Ok(found) => {
                            if !found.is_empty() {
                                tracing::info!(
                                    project = name,
                                    containers = found.len(),
                                    "found running containers"
                                );
                            }
                            containers = found;
                        }
                        Err(e) => {
                            tracing::warn!(project = name, error = %e, "listing the project's containers");
                        }
                    }
                    placement = placement.with_local(d.clone());
                    docker = Some(d);
                }
                Err(reason) => {
                    tracing::warn!(project = name, %reason, "docker services cannot run");
                    placement = placement.with_local_unavailable(reason);
                }
            }
        }
        let mut hosts = None;
        let on_nodes = [ServiceKind::Remote, ServiceKind::Package];
        if project.services.values().any(|s| s.host().is_some()) {
            match SshHosts::for_project(project, &self.ssh, &self.control_dir) {
                Ok(h) => {
                    executors.push((
                        ServiceKind::Remote,
                        ToLogFiles::wrap(RemoteExecutor::new(h.clone())),
                    ));
                    let mut package = PackageExecutor::new(h.clone());
                    if let Some(dir) = project_dir(project) {
                        package = package.with_base_dir(dir);
                    }
                    executors.push((ServiceKind::Package, ToLogFiles::wrap(package)));
                    placement = placement.with_nodes(h.clone());
                    hosts = Some(h);
                }
                Err(e) => {
                    let reason = format!("cannot set up ssh to the project's nodes: {e}");
                    tracing::warn!(project = name, %reason, "services on nodes cannot run");
                    placement = placement.with_nodes_unavailable(reason.clone());
                    for kind in on_nodes {
                        executors.push((
                            kind,
                            Arc::new(Unavailable {
                                kind,
                                reason: reason.clone(),
                            }),
                        ));
                    }
                }
            }
        }
        let mut docker_placement = None;
        if kinds.contains(&ServiceKind::Docker) {
            let placement = Arc::new(placement);
            executors.push((
                ServiceKind::Docker,
                Arc::new(ToLogFiles {
                    inner: placement.clone(),
                }),
            ));
            docker_placement = Some(placement);
        }
        ProjectTargets {
            executors,
            containers,
            docker,
            hosts,
            docker_placement,
        }
    }
}

/// A short control directory for ssh sockets: `<state>/ssh` when that fits
/// the limit of unix socket paths, else one under the temp directory named
/// after a hash of the state directory.
fn control_dir_for(state_root: &Path) -> PathBuf {
    let inside = state_root.join("ssh");
    if inside.as_os_str().len() <= MAX_CONTROL_DIR_LEN {
        return inside;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_root.hash(&mut h);
    std::env::temp_dir().join(format!("harness-ssh-{:016x}", h.finish()))
}

/// The executor of a kind that cannot run here: every start and re-attach
/// fails with the reason (e.g. the engine is unreachable).
#[derive(Debug)]
struct Unavailable {
    kind: ServiceKind,
    reason: String,
}

#[async_trait::async_trait]
impl ServiceExecutor for Unavailable {
    fn kind(&self) -> ServiceKind {
        self.kind
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        _ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        Err(ExecutorError::Start {
            service: spec.name.to_string(),
            source: self.reason.clone().into(),
        })
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        _record: &InstanceRecord,
        _ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        Err(ExecutorError::Attach {
            service: spec.name.to_string(),
            source: self.reason.clone().into(),
        })
    }
}

/// Wraps an executor whose output arrives as events (containers, services on
/// nodes) so that every output line is also appended to the service's log
/// files, `stdout.log` and `stderr.log` in [`StartContext::log_dir`], where
/// `harness logs` reads them. Lines are written in order by one writer per
/// instance on the blocking pool; none is dropped.
pub struct ToLogFiles {
    inner: SharedExecutor,
}

impl std::fmt::Debug for ToLogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToLogFiles")
            .field("kind", &self.inner.kind())
            .finish()
    }
}

impl ToLogFiles {
    /// `executor`, with its output also written to log files.
    pub fn wrap(executor: impl ServiceExecutor) -> SharedExecutor {
        Arc::new(ToLogFiles {
            inner: Arc::new(executor),
        })
    }

    fn tee(launched: Launched, spec: &ServiceSpec, ctx: &StartContext) -> Launched {
        let Some(dir) = ctx.log_dir.clone() else {
            return launched;
        };
        let (tx, rx) = async_channel::unbounded::<OutputLine>();
        let service = spec.name.to_string();
        ctx.spawner.spawn(Box::pin(async move {
            // Lines that wait are written together, off the executor, by a
            // pool thread held only for the write.
            let mut failed = false;
            while let Ok(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < WRITE_BATCH
                    && let Ok(line) = rx.try_recv()
                {
                    batch.push(line);
                }
                let d = dir.clone();
                let written = blocking::unblock(move || append_lines(&d, &batch)).await;
                match written {
                    Err(e) if !failed => {
                        failed = true;
                        tracing::warn!(%service, dir = %dir.display(), error = %e, "writing the service's log files");
                    }
                    Ok(()) => failed = false,
                    Err(_) => {}
                }
            }
        }));
        let events = launched.events.map(move |ev| {
            if let InstanceEvent::Output(line) = &ev {
                // Unbounded: fails only once the writer is gone.
                let _ = tx.try_send(line.clone());
            }
            ev
        });
        Launched {
            instance: launched.instance,
            events: Box::pin(events),
        }
    }
}

/// Lines written to the log files in one go, at most.
const WRITE_BATCH: usize = 4096;

/// Appends each line (with a newline) to `stdout.log` or `stderr.log` in
/// `dir`; the files are open only while written.
fn append_lines(dir: &Path, lines: &[OutputLine]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    for line in lines {
        let buf = match line.stream {
            OutputStream::Stdout => &mut stdout,
            // Executors report only the two streams; harness's own lines
            // go to `harness.log` through the manager.
            OutputStream::Stderr | OutputStream::Harness => &mut stderr,
        };
        buf.extend_from_slice(&line.bytes);
        buf.push(b'\n');
    }
    for (name, bytes) in [("stdout.log", stdout), ("stderr.log", stderr)] {
        if !bytes.is_empty() {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))?
                .write_all(&bytes)?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ServiceExecutor for ToLogFiles {
    fn kind(&self) -> ServiceKind {
        self.inner.kind()
    }

    async fn place(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Option<service_registry::Location>, ExecutorError> {
        self.inner.place(spec, ctx).await
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let launched = self.inner.start(spec, ctx).await?;
        Ok(Self::tee(launched, spec, ctx))
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let launched = self.inner.attach(spec, record, ctx).await?;
        Ok(Self::tee(launched, spec, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_name_is_stable_and_differs_between_state_dirs() {
        let a = cgroup_name(Path::new("/nonexistent/state-a"));
        assert_eq!(a, cgroup_name(Path::new("/nonexistent/state-a")));
        assert_ne!(a, cgroup_name(Path::new("/nonexistent/state-b")));
        assert!(
            a.starts_with("harness-") && a.len() == "harness-".len() + 12,
            "{a}"
        );
    }

    #[test]
    fn control_dir_is_in_the_state_dir_when_short_enough() {
        let state = Path::new("/tmp/harness-state");
        assert_eq!(control_dir_for(state), state.join("ssh"));
    }

    #[test]
    fn a_long_state_dir_gets_a_short_stable_control_dir() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(100)));
        let a = control_dir_for(&long);
        assert!(a.as_os_str().len() <= MAX_CONTROL_DIR_LEN, "{a:?}");
        assert!(!a.starts_with(&long));
        assert_eq!(a, control_dir_for(&long), "the same for the same state dir");
        let other = PathBuf::from(format!("/tmp/{}", "y".repeat(100)));
        assert_ne!(a, control_dir_for(&other), "differs between daemons");
    }
}
