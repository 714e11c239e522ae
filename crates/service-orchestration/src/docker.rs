//! The executor of Docker services, on the real engine through `docker-engine`.
//!
//! - Containers are named `<project>-<service>` and labelled
//!   `harness.project`, `harness.service` and `harness.config-hash` (and
//!   `harness.node` when placed on a node's engine), so a new
//!   daemon finds them again: [`ServiceExecutor::attach`] re-adopts one from its
//!   record, and [`ServiceExecutor::start`] adopts a running container of the same
//!   service and configuration instead of starting a duplicate.
//! - The engine's `/events` stream drives the lifecycle: a container that dies
//!   (even by `docker kill` from outside) ends its event stream at once with its
//!   exit code. Output comes from the demultiplexed `logs` stream.
//! - Exec checks run inside the container (exec API). HTTP and TCP checks reach
//!   the container as a consumer on this host does: through its published port on
//!   loopback ([`DockerRecord::host_endpoint`]).
//! - The hardening contract: `security.read_only` gives a read-only root file
//!   system, a tmpfs `/tmp` and one writable state volume at `/state`;
//!   `cap_drop`, `cap_add`, `no_new_privileges` and `runtime` are passed as they
//!   are (an unknown runtime is an error naming it, never a fallback); only
//!   declared ports are published.
//! - Every container joins the project network `harness-<project>` (a bridge,
//!   created on demand) with its service name as DNS alias, so containers reach
//!   each other by name and by IP ([`DockerRecord::ip`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use docker_engine::{
    BuildSpec, ContainerInspect, ContainerSpec, Docker, DockerError, EventFilter, EventStream,
    LogOptions, Mount, MountSource, PortSpec, Transport, WaitCondition,
};
use harness_config::{DockerSpec, Project, ServiceSpec, Target};
use harness_core::{
    Endpoint, ExitStatus, OutputLine, OutputStream, ServiceKind, ServiceName, Signal,
};
use serde::{Deserialize, Serialize};
use service_registry::{Location, PublishedPort};

use crate::executor::{
    BoxError, ExecOutcome, ExecutorError, InstanceEvent, InstanceRecord, Launched, ReservedAddress,
    ServiceExecutor, ServiceInstance, StartContext,
};

/// Label naming the project a container belongs to.
pub const LABEL_PROJECT: &str = "harness.project";
/// Label naming the service a container runs.
pub const LABEL_SERVICE: &str = "harness.service";
/// Label holding a hash of the configuration the container was created from.
pub const LABEL_CONFIG_HASH: &str = "harness.config-hash";
/// Label naming the node a container was placed on (`host:` of the service);
/// absent on containers of this machine's engine.
pub const LABEL_NODE: &str = "harness.node";
/// Where the writable state volume of a read-only container is mounted.
pub const STATE_DIR: &str = "/state";

/// How long output may still arrive after the container died before the exit is reported.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// What is persisted of a container (the `data` of its [`InstanceRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRecord {
    /// The container id.
    pub id: String,
    /// The container name.
    pub name: String,
    /// The hash of the configuration it was created from.
    pub config_hash: String,
    /// The project network it is on.
    pub network: String,
    /// Its IP on that network.
    pub ip: Option<IpAddr>,
    /// Declared ports: `(container port, published host port)`.
    pub ports: Vec<(u16, Option<u16>)>,
    /// The engine timestamp of the last output line delivered, so that a new
    /// daemon resumes the output right after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_log: Option<String>,
}

impl DockerRecord {
    /// The record held in an [`InstanceRecord`] made by this executor.
    pub fn from_instance(record: &InstanceRecord) -> Option<DockerRecord> {
        serde_json::from_value(record.data.clone()).ok()
    }

    /// Where a consumer on this host (a local process, a health check) reaches
    /// it: loopback at the published host port of its first declared port.
    pub fn host_endpoint(&self) -> Endpoint {
        let port = self.ports.first().and_then(|(_, host)| *host);
        Endpoint::loopback(port)
    }

    /// Where another container on the project network reaches it: its IP at
    /// its first declared container port, host name = the container name.
    pub fn network_endpoint(&self) -> Option<Endpoint> {
        Some(Endpoint {
            ip: self.ip?,
            port: self.ports.first().map(|(c, _)| *c),
            host: self.name.clone(),
        })
    }

    /// Where the container is: on its network at its address, with its
    /// published ports (`None` while it has no address).
    pub fn location(&self) -> Option<Location> {
        Some(Location::DockerNetwork {
            network: self.network.clone(),
            container_ip: self.ip?,
            published: self
                .ports
                .iter()
                .filter_map(|(container, host)| {
                    host.map(|host| PublishedPort {
                        host,
                        container: *container,
                    })
                })
                .collect(),
        })
    }

    /// The host port that `container_port` is published on.
    pub fn published(&self, container_port: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|(c, _)| *c == container_port)
            .and_then(|(_, h)| *h)
    }
}

/// Runs services of kind `docker` as containers on a Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    host: String,
    /// End an instance's events at once when the engine's streams break.
    stream_loss_ends: bool,
}

impl DockerExecutor {
    /// An executor on this engine client.
    pub fn new(docker: Docker) -> DockerExecutor {
        let host = match docker.transport() {
            Transport::Unix(_) => "local".to_owned(),
            other => other.to_string(),
        };
        DockerExecutor {
            docker,
            host,
            stream_loss_ends: false,
        }
    }

    /// Names the host the engine runs on, as status reports it (default:
    /// `local` for a unix socket, else the transport), e.g. the node name of an
    /// engine reached over ssh.
    pub fn with_host_name(mut self, host: impl Into<String>) -> DockerExecutor {
        self.host = host.into();
        self
    }

    /// When the engine's event stream of a container breaks, ends the
    /// instance's events at once with [`ExitStatus::Unknown`] instead of
    /// asking the engine how the container ended (which waits on a new
    /// connection). For an engine behind a connection that may drop, whose
    /// caller then finds out itself whether the container still runs (see
    /// [`crate::docker_hosts`]).
    pub fn with_stream_loss_ending_events(mut self) -> DockerExecutor {
        self.stream_loss_ends = true;
        self
    }

    /// An executor on the engine `DOCKER_HOST` names (default: the local unix socket).
    pub async fn from_env() -> Result<DockerExecutor, DockerError> {
        Ok(DockerExecutor::new(Docker::from_env().await?))
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The name of the project network.
    pub fn network_name(project: &str) -> String {
        format!("harness-{project}")
    }

    /// The container name of a service.
    pub fn container_name(project: &str, service: &str) -> String {
        format!("{project}-{service}")
    }

    /// Creates the project network unless it exists, with `subnet` when the
    /// configuration gives one (then containers get fixed addresses in it).
    /// One start at a time per engine and network: the engine lets two
    /// networks of one name be created at the same moment, and every start
    /// after that would fail on an ambiguous name. Duplicates made before
    /// (by another program, or an older harness) are cleaned up.
    async fn ensure_network(
        &self,
        project: &str,
        subnet: Option<service_registry::IpNet>,
    ) -> Result<String, DockerError> {
        let name = Self::network_name(project);
        let lock = network_lock(&format!("{}/{name}", self.host));
        let _one_at_a_time = lock.lock().await;
        let inspected = match self.docker.inspect_network(&name).await {
            Err(DockerError::Api {
                status: 400,
                message,
                ..
            }) if message.contains("ambiguous") => {
                self.remove_duplicate_networks(&name).await?;
                self.docker.inspect_network(&name).await
            }
            other => other,
        };
        match inspected {
            Ok(existing) => {
                // Fixed addresses need the configured subnet: a network made
                // before with another one cannot take them.
                if let Some(want) = subnet {
                    let has: Vec<String> = existing
                        .ipam
                        .config
                        .iter()
                        .flatten()
                        .map(|c| c.subnet.clone())
                        .collect();
                    if !has
                        .iter()
                        .any(|h| h.parse::<service_registry::IpNet>() == Ok(want))
                    {
                        return Err(DockerError::NameConflict {
                            name,
                            message: format!(
                                "the project network exists with subnet {}, but the configuration asks for {want}; `harness down` removes it",
                                if has.is_empty() {
                                    "(none)".to_owned()
                                } else {
                                    has.join(", ")
                                }
                            ),
                        });
                    }
                }
                return Ok(name);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let labels = BTreeMap::from([(LABEL_PROJECT.to_owned(), project.to_owned())]);
        let subnet = subnet.map(|s| s.to_string());
        match self
            .docker
            .create_network(&name, &labels, subnet.as_deref())
            .await
        {
            // Created concurrently by another service's start: fine.
            Ok(_) | Err(DockerError::NameConflict { .. }) => Ok(name),
            Err(e) => Err(e),
        }
    }

    /// Keeps one of the networks named `name` (one with containers attached,
    /// else the first listed) and removes the others.
    async fn remove_duplicate_networks(&self, name: &str) -> Result<(), DockerError> {
        let mut all = self.docker.networks_named(name).await?;
        all.sort_by_key(|n| n.containers.as_ref().is_none_or(|c| c.is_empty()));
        let mut busy = Vec::new();
        for extra in all.iter().skip(1) {
            if extra.containers.as_ref().is_some_and(|c| !c.is_empty()) {
                busy.push(extra.id.clone());
            } else {
                self.docker.remove_network(&extra.id).await?;
            }
        }
        if busy.is_empty() {
            Ok(())
        } else {
            Err(DockerError::NameConflict {
                name: name.to_owned(),
                message: format!(
                    "{} networks of this name have containers attached ({}); `harness down` removes them",
                    busy.len() + 1,
                    busy.join(", ")
                ),
            })
        }
    }

    /// The running containers of `project`, by service, with where they are
    /// (their records and published ports), so that a new daemon can record
    /// them in its registry before it re-adopts them: endpoints then resolve
    /// to them, and nothing is started twice.
    pub async fn discover(
        &self,
        project: &Project,
    ) -> Result<Vec<(ServiceName, DockerRecord)>, DockerError> {
        let network = Self::network_name(project.name.as_str());
        let mut found = Vec::new();
        for c in self
            .docker
            .list_containers(&[(LABEL_PROJECT, project.name.as_str())])
            .await?
        {
            if c.state != "running" {
                continue;
            }
            let Some(spec) = c
                .labels
                .get(LABEL_SERVICE)
                .and_then(|s| project.services.get(s.as_str()))
            else {
                continue;
            };
            let i = match self.docker.inspect_container(&c.id).await {
                Ok(i) => i,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            found.push((spec.name.clone(), record_of(spec, &i, &network)));
        }
        Ok(found)
    }

    /// True when the engine is this machine's (a unix socket): its containers
    /// are on this host's networks.
    fn is_local(&self) -> bool {
        self.host == "local"
    }

    /// Where a container of `project` is placed before it starts: on the
    /// project network, at the address kept for it, else seen at the
    /// network's gateway (see [`ServiceExecutor::place`]).
    async fn planned_location(
        &self,
        project: &str,
        address: Option<ReservedAddress>,
    ) -> Result<Option<Location>, DockerError> {
        if !self.is_local() {
            return Ok(None);
        }
        let network = self
            .ensure_network(project, address.map(|a| a.subnet))
            .await?;
        if let Some(a) = address {
            return Ok(Some(Location::DockerNetwork {
                network,
                container_ip: a.ip,
                published: Vec::new(),
            }));
        }
        let inspect = self.docker.inspect_network(&network).await?;
        let gateway = inspect
            .ipam
            .config
            .iter()
            .flatten()
            .find_map(|c| c.gateway.parse::<IpAddr>().ok());
        Ok(gateway.map(|container_ip| Location::DockerNetwork {
            network,
            container_ip,
            published: Vec::new(),
        }))
    }

    /// Removes every container and the network of `project` (what `down` leaves behind).
    pub async fn remove_project(&self, project: &str) -> Result<(), DockerError> {
        for c in self
            .docker
            .list_containers(&[(LABEL_PROJECT, project)])
            .await?
        {
            self.docker.remove_container(&c.id, true).await?;
        }
        self.docker
            .remove_network(&Self::network_name(project))
            .await
    }

    /// Makes sure the image is there: builds it when the spec says so (on a
    /// start by request; a restart reuses the image unless it is gone), else
    /// checks it is present (nothing is pulled). Returns the image id and the
    /// build's progress lines.
    async fn ensure_image(
        &self,
        d: &DockerSpec,
        restart: bool,
    ) -> Result<(String, Vec<String>), DockerError> {
        let mut progress = Vec::new();
        let present = async { self.docker.inspect_image(&d.image).await.is_ok() };
        if let Some(b) = &d.build
            && !(restart && present.await)
        {
            let spec = BuildSpec {
                context: b.context.clone(),
                dockerfile: b
                    .dockerfile
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                tag: d.image.clone(),
                build_args: b.args.clone(),
                labels: BTreeMap::new(),
            };
            let id = self
                .docker
                .build_image(&spec, |l| progress.push(l.to_owned()))
                .await?;
            Ok((id, progress))
        } else {
            Ok((self.docker.inspect_image(&d.image).await?.id, progress))
        }
    }

    async fn launch(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
        existing: Option<ContainerInspect>,
        preface: Vec<String>,
        resume: Option<SystemTime>,
    ) -> Result<Launched, DockerError> {
        let project = ctx.project.as_str();
        let service = spec.name.as_str();
        let network = Self::network_name(project);
        // Subscribe before starting, so not even an instant death is missed.
        let events = self
            .docker
            .events(&EventFilter {
                types: vec!["container".into()],
                labels: vec![
                    (LABEL_PROJECT.into(), project.into()),
                    (LABEL_SERVICE.into(), service.into()),
                ],
                actions: vec!["die".into(), "destroy".into()],
                since: None,
            })
            .await?;
        let (inspect, adopted) = match existing {
            // Looked at again now that the events are subscribed: a container
            // that died since it was first inspected is not followed forever.
            Some(i) => {
                let now = self.docker.inspect_container(&i.id).await?;
                if !now.state.running {
                    return Err(DockerError::NotFound {
                        what: format!("running container {}", i.id),
                        message: format!(
                            "it ended (exit code {}) while being re-attached",
                            now.state.exit_code
                        ),
                    });
                }
                (now, true)
            }
            None => {
                let (create, _) = container_spec(spec, ctx, &network)?;
                let id = self.docker.create_container(&create).await?;
                if let Err(e) = self.connect_extra_networks(spec, &id).await {
                    let _ = self.docker.remove_container(&id, true).await;
                    return Err(e);
                }
                if let Err(e) = self.docker.start_container(&id).await {
                    let _ = self.docker.remove_container(&id, true).await;
                    return Err(e);
                }
                (self.docker.inspect_container(&id).await?, false)
            }
        };
        let record = record_of(spec, &inspect, &network);
        // Until a new line arrives, the resume mark stays where it was.
        let resume_mark = resume.map(|t| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format_timestamp(d)
        });
        let pid = u32::try_from(inspect.state.pid).ok().filter(|p| *p > 0);
        let instance = Arc::new(DockerInstance {
            docker: self.docker.clone(),
            service: service.to_owned(),
            record,
            pid: Mutex::new(pid),
            host: self.host.clone(),
            last_log: Arc::new(Mutex::new(resume_mark)),
        });
        // Room for the whole build log, so none of it is lost before the reader starts.
        let (tx, rx) = async_channel::bounded::<InstanceEvent>(1024 + preface.len());
        let _ = tx.try_send(InstanceEvent::Started { pid });
        for l in preface {
            let _ = tx.try_send(InstanceEvent::Output(OutputLine {
                stream: OutputStream::Stderr,
                bytes: format!("build: {l}").into_bytes(),
                truncated: false,
            }));
        }
        let opts = LogOptions {
            follow: true,
            timestamps: true,
            // An adopted container's output resumes after the last line the
            // previous daemon delivered; without that mark, from now on.
            since: resume,
            tail: if adopted && resume.is_none() {
                Some(0)
            } else {
                None
            },
        };
        let logs = self.docker.logs(&inspect.id, &opts).await?;
        ctx.spawner.spawn(Box::pin(pump(
            self.docker.clone(),
            inspect.id.clone(),
            events,
            logs,
            tx,
            instance.last_log.clone(),
            self.stream_loss_ends,
        )));
        Ok(Launched {
            instance,
            events: Box::pin(rx),
        })
    }

    async fn connect_extra_networks(
        &self,
        spec: &ServiceSpec,
        id: &str,
    ) -> Result<(), DockerError> {
        if let Target::Docker(d) = &spec.target {
            for n in &d.networks {
                self.docker
                    .connect_network(n, id, &[spec.name.to_string()])
                    .await?;
            }
        }
        Ok(())
    }
}

/// Feeds the instance's events: output lines from the logs, then the exit
/// from the `die` event (falling back to waiting on the container, unless
/// `loss_ends`: then a broken event stream ends with an unknown exit at once).
async fn pump(
    docker: Docker,
    id: String,
    mut events: EventStream,
    mut logs: docker_engine::LogStream,
    tx: async_channel::Sender<InstanceEvent>,
    last_log: Arc<Mutex<Option<String>>>,
    loss_ends: bool,
) {
    let (die_tx, die_rx) = async_channel::bounded::<Option<i64>>(1);
    let watcher = {
        let docker = docker.clone();
        let id = id.clone();
        async move {
            loop {
                match events.next().await {
                    Some(Ok(ev)) if ev.actor.id == id => {
                        if ev.action == "die" {
                            return ev.exit_code();
                        }
                        if ev.action == "destroy" {
                            return None;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None if loss_ends => return None,
                    // The event stream broke: wait on the container instead.
                    Some(Err(_)) | None => {
                        return docker
                            .wait_container(&id, WaitCondition::NotRunning)
                            .await
                            .ok();
                    }
                }
            }
        }
    };
    let forward = async {
        while let Some(line) = logs.next().await {
            match line {
                Ok(l) => {
                    if l.timestamp.is_some() {
                        *last_log.lock().unwrap_or_else(|e| e.into_inner()) = l.timestamp;
                    }
                    if tx.send(InstanceEvent::Output(l.line)).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    };
    let code = Mutex::new(None::<Option<i64>>);
    let watch_then_drain = async {
        let c = watcher.await;
        let _ = die_tx.try_send(c);
        *code.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
        // Give the log stream a moment to deliver what was written last.
        async_io::Timer::after(LOG_DRAIN).await;
    };
    futures_lite::future::or(
        async {
            forward.await;
            // Logs ended: the container stopped; its die event follows.
            let _ = die_rx.recv().await;
        },
        watch_then_drain,
    )
    .await;
    let mut code = code
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .flatten();
    if code.is_none() && !loss_ends {
        code = docker
            .inspect_container(&id)
            .await
            .ok()
            .map(|i| i.state.exit_code);
    }
    let status = match code {
        Some(c) => ExitStatus::Code(c as i32),
        None => ExitStatus::Unknown,
    };
    let _ = tx.send(InstanceEvent::Exited(status)).await;
}

/// Formats a time since the epoch as the engine's RFC 3339 timestamp (UTC).
fn format_timestamp(d: Duration) -> String {
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch, after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// A stable hash (FNV-1a, 64 bits) of the configuration a container is made from.
fn config_hash(spec: &ContainerSpec) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.to_json().to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn docker_target(spec: &ServiceSpec) -> Result<&DockerSpec, ExecutorError> {
    match &spec.target {
        Target::Docker(d) => Ok(d),
        _ => Err(ExecutorError::Unsupported {
            service: spec.name.to_string(),
            kind: ServiceKind::Docker,
            what: "a target other than `docker`",
        }),
    }
}

/// Parses a `SOURCE:TARGET[:ro|:rw]` volume: an absolute (or `./`) source is a
/// bind mount, anything else a named volume.
fn parse_volume(v: &str) -> Result<Mount, DockerError> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => {
            return Err(DockerError::Invalid(format!(
                "volume `{v}`: use SOURCE:TARGET or SOURCE:TARGET:ro"
            )));
        }
    };
    if src.is_empty() || !dst.starts_with('/') {
        return Err(DockerError::Invalid(format!(
            "volume `{v}`: the source must not be empty and the target must be an absolute path"
        )));
    }
    let source = if src.starts_with('/') || src.starts_with('.') {
        MountSource::Bind(src.to_owned())
    } else {
        MountSource::Volume(src.to_owned())
    };
    Ok(Mount {
        source,
        target: dst.to_owned(),
        read_only: ro,
    })
}

/// The engine's container spec for a service, and the hash of its configuration.
pub fn container_spec(
    spec: &ServiceSpec,
    ctx: &StartContext,
    network: &str,
) -> Result<(ContainerSpec, String), DockerError> {
    let Target::Docker(d) = &spec.target else {
        return Err(DockerError::Invalid(format!(
            "service `{}` is not a docker service",
            spec.name
        )));
    };
    let project = ctx.project.as_str();
    let service = spec.name.as_str();
    let mut c = ContainerSpec::new(d.image.clone());
    c.name = Some(DockerExecutor::container_name(project, service));
    c.cmd = d.command.clone();
    c.entrypoint = d.entrypoint.clone();
    c.env = ctx.env.clone();
    c.labels.insert(LABEL_PROJECT.into(), project.into());
    c.labels.insert(LABEL_SERVICE.into(), service.into());
    if let Some(node) = &d.host {
        c.labels.insert(LABEL_NODE.into(), node.clone());
    }
    c.working_dir = spec
        .working_dir
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    c.user = d.security.user.clone().or_else(|| spec.user.clone());
    for p in &spec.ports {
        let protocol = match p.protocol {
            harness_config::Protocol::Tcp => docker_engine::Protocol::Tcp,
            harness_config::Protocol::Udp => docker_engine::Protocol::Udp,
        };
        c.ports.push(PortSpec {
            container_port: p.container,
            protocol,
            // A declared port is published at its host port, or at the same
            // number when it has none (`ports: [5432]`); on the host address it
            // names (`127.0.0.1:8080:80`), else on every interface.
            host_port: Some(p.host.unwrap_or(p.container)),
            host_ip: Some(p.host_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]))),
        });
    }
    for v in &d.volumes {
        c.mounts.push(parse_volume(v)?);
    }
    let sec = &d.security;
    if sec.read_only {
        c.read_only_rootfs = true;
        if !c.mounts.iter().any(|m| m.target == "/tmp") {
            c.mounts.push(Mount {
                source: MountSource::Tmpfs(None),
                target: "/tmp".into(),
                read_only: false,
            });
        }
        if !c.mounts.iter().any(|m| m.target == STATE_DIR) {
            c.mounts.push(Mount {
                source: MountSource::Volume(format!("{project}-{service}-state")),
                target: STATE_DIR.into(),
                read_only: false,
            });
        }
    }
    c.cap_drop = sec.cap_drop.clone();
    c.cap_add = sec.cap_add.clone();
    c.no_new_privileges = sec.no_new_privileges;
    c.runtime = sec.runtime.clone();
    c.nano_cpus = d.resources.cpus.map(|cpus| (cpus * 1e9).round() as i64);
    c.memory = d.resources.memory.map(|m| m as i64);
    c.network = Some(network.to_owned());
    c.aliases = vec![service.to_owned()];
    c.ipv4_address = ctx.address.and_then(|a| match a.ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    });
    c.stop_signal = Some(spec.shutdown.signal);
    c.stop_timeout = Some(spec.shutdown.timeout.as_secs().min(u64::from(u32::MAX)) as u32);
    let hash = config_hash(&c);
    c.labels.insert(LABEL_CONFIG_HASH.into(), hash.clone());
    Ok((c, hash))
}

fn record_of(spec: &ServiceSpec, i: &ContainerInspect, network: &str) -> DockerRecord {
    DockerRecord {
        id: i.id.clone(),
        name: i.short_name().to_owned(),
        config_hash: i.label(LABEL_CONFIG_HASH).unwrap_or_default().to_owned(),
        network: network.to_owned(),
        ip: i.ip(Some(network)).or_else(|| i.ip(None)),
        last_log: None,
        ports: spec
            .ports
            .iter()
            .map(|p| {
                let proto = match p.protocol {
                    harness_config::Protocol::Tcp => docker_engine::Protocol::Tcp,
                    harness_config::Protocol::Udp => docker_engine::Protocol::Udp,
                };
                (p.container, i.published(p.container, proto))
            })
            .collect(),
    }
}

fn boxed(e: DockerError) -> BoxError {
    Box::new(e)
}

#[async_trait::async_trait]
impl ServiceExecutor for DockerExecutor {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Docker
    }

    async fn place(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Option<Location>, ExecutorError> {
        self.planned_location(ctx.project.as_str(), ctx.address)
            .await
            .map_err(|e| ExecutorError::Start {
                service: spec.name.to_string(),
                source: Box::new(e),
            })
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let d = docker_target(spec)?;
        let err = |e: DockerError| ExecutorError::Start {
            service: spec.name.to_string(),
            source: boxed(e),
        };
        let (image_id, preface) = self
            .ensure_image(d, ctx.generation > 1)
            .await
            .map_err(err)?;
        let network = self
            .ensure_network(ctx.project.as_str(), ctx.address.map(|a| a.subnet))
            .await
            .map_err(err)?;
        let (_, hash) = container_spec(spec, ctx, &network).map_err(err)?;
        // A container of this service already there: adopt it if it runs the
        // same configuration on the same image, else replace it.
        let mine = self
            .docker
            .list_containers(&[
                (LABEL_PROJECT, ctx.project.as_str()),
                (LABEL_SERVICE, spec.name.as_str()),
            ])
            .await
            .map_err(err)?;
        let mut adopt = None;
        for c in mine {
            let same = c.labels.get(LABEL_CONFIG_HASH) == Some(&hash);
            if same && c.state == "running" && adopt.is_none() {
                match self.docker.inspect_container(&c.id).await {
                    Ok(i)
                        if i.state.running
                            && i.state.status == "running"
                            && i.image == image_id =>
                    {
                        adopt = Some(i);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(err(e)),
                }
            }
            self.docker
                .remove_container(&c.id, true)
                .await
                .map_err(err)?;
        }
        if let Some(i) = adopt {
            let id = i.id.clone();
            match self.launch(spec, ctx, Some(i), preface.clone(), None).await {
                Ok(l) => return Ok(l),
                // It ended or is being removed meanwhile: start afresh.
                Err(_) => self.docker.remove_container(&id, true).await.map_err(err)?,
            }
        }
        self.launch(spec, ctx, None, preface, None)
            .await
            .map_err(err)
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        docker_target(spec)?;
        let fail = |why: String| ExecutorError::Attach {
            service: spec.name.to_string(),
            source: why.into(),
        };
        let id = record
            .container_id
            .clone()
            .or_else(|| DockerRecord::from_instance(record).map(|r| r.id))
            .ok_or_else(|| fail("the record holds no container id".into()))?;
        let i = self
            .docker
            .inspect_container(&id)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if i.label(LABEL_PROJECT) != Some(ctx.project.as_str())
            || i.label(LABEL_SERVICE) != Some(spec.name.as_str())
        {
            return Err(fail(format!(
                "container {id} is not labelled as {}/{}",
                ctx.project, spec.name
            )));
        }
        let network = Self::network_name(ctx.project.as_str());
        let (_, hash) = container_spec(spec, ctx, &network).map_err(|e| fail(e.to_string()))?;
        if i.label(LABEL_CONFIG_HASH) != Some(hash.as_str()) {
            return Err(fail(format!(
                "container {id} was created from another configuration"
            )));
        }
        if !i.state.running {
            return Err(fail(format!(
                "container {id} is no longer running (exit code {})",
                i.state.exit_code
            )));
        }
        // Resume the output just after the last line delivered before.
        let resume = DockerRecord::from_instance(record)
            .and_then(|r| r.last_log)
            .and_then(|t| docker_engine::parse_timestamp(&t))
            .map(|t| t + Duration::from_nanos(1));
        self.launch(spec, ctx, Some(i), Vec::new(), resume)
            .await
            .map_err(|e| fail(e.to_string()))
    }
}

/// A running container.
struct DockerInstance {
    docker: Docker,
    service: String,
    record: DockerRecord,
    pid: Mutex<Option<u32>>,
    host: String,
    last_log: Arc<Mutex<Option<String>>>,
}

#[async_trait::async_trait]
impl ServiceInstance for DockerInstance {
    fn pid(&self) -> Option<u32> {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn location(&self) -> Option<Location> {
        // A container on a node's engine is where its node is: the configuration says.
        if self.host != "local" {
            return None;
        }
        self.record.location()
    }

    fn record(&self) -> InstanceRecord {
        InstanceRecord {
            kind: ServiceKind::Docker,
            pid: self.pid(),
            container_id: Some(self.record.id.clone()),
            host: self.host.clone(),
            data: {
                let mut r = self.record.clone();
                r.last_log = self
                    .last_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                serde_json::to_value(&r).unwrap_or_default()
            },
        }
    }

    async fn stop(&self, signal: Signal, grace: Duration) -> Result<(), ExecutorError> {
        let err = |e: DockerError| ExecutorError::Stop {
            service: self.service.clone(),
            source: boxed(e),
        };
        match self
            .docker
            .stop_container(&self.record.id, Some(signal), grace)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(err(e)),
        }
        *self.pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // A stopped container is removed: the next start creates a fresh one.
        self.docker
            .remove_container(&self.record.id, true)
            .await
            .map_err(err)
    }

    async fn exec(
        &self,
        command: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError> {
        let mut cmd = vec![command.to_owned()];
        cmd.extend(args.iter().cloned());
        let run = async { Some(self.docker.exec(&self.record.id, &cmd).await) };
        let timer = async {
            async_io::Timer::after(timeout).await;
            None
        };
        match futures_lite::future::or(run, timer).await {
            None => Ok(ExecOutcome {
                success: false,
                detail: format!(
                    "`{}` timed out after {:.1}s",
                    cmd.join(" "),
                    timeout.as_secs_f64()
                ),
            }),
            Some(Ok(out)) => {
                let first = out
                    .lines
                    .first()
                    .map(|l| l.line.text().into_owned())
                    .unwrap_or_default();
                Ok(ExecOutcome {
                    success: out.exit_code == 0,
                    detail: format!(
                        "exit code {}{}{}",
                        out.exit_code,
                        if first.is_empty() { "" } else { ": " },
                        first
                    ),
                })
            }
            Some(Err(e)) => Err(ExecutorError::Probe {
                service: self.service.clone(),
                source: boxed(e),
            }),
        }
    }
}

/// The lock serialising network creation for `key` (engine and network
/// name), shared by every executor of this process.
fn network_lock(key: &str) -> Arc<async_lock::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<
        std::sync::Mutex<HashMap<String, Arc<async_lock::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    locks.entry(key.to_owned()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    use docker_engine::testing::{BUSYBOX, Cleanup, WEB, engine_or_skip, unique_name};
    use futures_lite::StreamExt;
    use harness_config::{Build, PortMapping, Protocol, Resources, Security};
    use harness_core::{ProjectName, ServiceName, ThreadSpawner};

    use crate::executor::InstanceEvents;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn timestamps_round_trip_with_the_engine_format() {
        for (secs, nanos) in [
            (0, 0),
            (951_782_400, 500_000_000),
            (1_709_296_496, 789),
            (4_102_444_799, 999_999_999),
        ] {
            let d = Duration::new(secs, nanos);
            let text = format_timestamp(d);
            let back = docker_engine::parse_timestamp(&text).unwrap();
            assert_eq!(
                back.duration_since(std::time::UNIX_EPOCH).unwrap(),
                d,
                "{text}"
            );
        }
        assert_eq!(
            format_timestamp(Duration::new(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
    }

    #[test]
    fn volumes_parse_to_binds_and_named_volumes() {
        let m = parse_volume("/data:/var/lib/db:ro").unwrap();
        assert_eq!(m.source, MountSource::Bind("/data".into()));
        assert!(m.read_only);
        let m = parse_volume("dbdata:/var/lib/db").unwrap();
        assert_eq!(m.source, MountSource::Volume("dbdata".into()));
        assert!(!m.read_only);
        assert!(parse_volume("nocolon").is_err());
        assert!(parse_volume("a:relative").is_err());
        assert!(parse_volume("a:/b:xx").is_err());
    }

    /// A host port free right now (parallel tests must not share fixed ports).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn container_spec_publishes_declared_ports_and_applies_hardening() {
        let mut d = docker_spec("img");
        d.security = Security {
            read_only: true,
            cap_drop: vec!["ALL".into()],
            no_new_privileges: true,
            runtime: Some("runsc".into()),
            ..Security::default()
        };
        d.resources = Resources {
            cpus: Some(0.5),
            memory: Some(64 << 20),
        };
        let mut spec = service("db", d);
        spec.ports = vec![
            PortMapping {
                host: None,
                host_ip: None,
                container: 5432,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host: Some(8053),
                host_ip: None,
                container: 53,
                protocol: Protocol::Udp,
            },
        ];
        let ctx = StartContext {
            project: ProjectName::new("p").unwrap(),
            env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            log_dir: None,
            generation: 1,
            spawner: Arc::new(ThreadSpawner),
            address: None,
        };
        let (c, hash) = container_spec(&spec, &ctx, "harness-p").unwrap();
        let j = c.to_json();
        assert_eq!(
            j["HostConfig"]["PortBindings"]["5432/tcp"][0]["HostPort"],
            "5432"
        );
        assert_eq!(
            j["HostConfig"]["PortBindings"]["53/udp"][0]["HostPort"],
            "8053"
        );
        assert_eq!(j["HostConfig"]["ReadonlyRootfs"], true);
        assert_eq!(j["HostConfig"]["Runtime"], "runsc");
        assert_eq!(j["HostConfig"]["NanoCpus"], 500_000_000);
        let mounts = j["HostConfig"]["Mounts"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["Type"] == "tmpfs" && m["Target"] == "/tmp")
        );
        assert!(mounts.iter().any(|m| m["Type"] == "volume"
            && m["Target"] == STATE_DIR
            && m["Source"] == "p-db-state"));
        assert_eq!(c.name.as_deref(), Some("p-db"));
        assert_eq!(c.labels[LABEL_CONFIG_HASH], hash);
        assert_eq!(c.stop_signal, Some(Signal::TERM));
        // The hash follows the configuration.
        let mut ctx2 = ctx.clone();
        ctx2.env.insert("A".into(), "2".into());
        assert_ne!(container_spec(&spec, &ctx2, "harness-p").unwrap().1, hash);
        assert_eq!(container_spec(&spec, &ctx, "harness-p").unwrap().1, hash);
    }

    fn docker_spec(image: &str) -> DockerSpec {
        DockerSpec {
            image: image.into(),
            build: None,
            command: None,
            entrypoint: None,
            volumes: Vec::new(),
            networks: Vec::new(),
            security: Security::default(),
            resources: Resources::default(),
            host: None,
        }
    }

    fn service(name: &str, d: DockerSpec) -> ServiceSpec {
        let mut s = ServiceSpec::process(ServiceName::new(name).unwrap(), "unused", Vec::new());
        s.target = Target::Docker(d);
        s
    }

    /// A unique project, cleaned up (containers, network, state volumes) at the end.
    fn project(cleanup: &Cleanup) -> StartContext {
        let name = unique_name("hdx");
        cleanup.label(format!("{LABEL_PROJECT}={name}"));
        cleanup.network(DockerExecutor::network_name(&name));
        StartContext {
            project: ProjectName::new(name).unwrap(),
            env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
            log_dir: None,
            generation: 1,
            spawner: Arc::new(ThreadSpawner),
            address: None,
        }
    }

    async fn next_event(events: &mut InstanceEvents) -> Option<InstanceEvent> {
        futures_lite::future::or(events.next(), async {
            async_io::Timer::after(LONG).await;
            panic!("no instance event within {LONG:?}");
        })
        .await
    }

    /// Reads events until `pred` holds; returns the one that matched.
    async fn until(
        events: &mut InstanceEvents,
        mut pred: impl FnMut(&InstanceEvent) -> bool,
    ) -> InstanceEvent {
        loop {
            let ev = next_event(events).await.expect("the stream ended first");
            if pred(&ev) {
                return ev;
            }
        }
    }

    fn is_line(ev: &InstanceEvent, text: &str) -> bool {
        matches!(ev, InstanceEvent::Output(l) if l.text() == text)
    }

    #[test]
    fn hardened_container_runs_probes_and_stops() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("hardened_container").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            cleanup.volume(format!("{}-web-state", ctx.project));
            let mut d = docker_spec(WEB);
            d.command = Some(
                [
                    "sh",
                    "-c",
                    "echo \"$GREETING\"; echo state > /state/f; exec httpd -f -p 80 -h /www",
                ]
                .map(String::from)
                .to_vec(),
            );
            d.security = Security {
                read_only: true,
                cap_drop: vec!["ALL".into()],
                cap_add: vec!["NET_BIND_SERVICE".into()],
                no_new_privileges: true,
                ..Security::default()
            };
            let mut spec = service("web", d);
            spec.ports = vec![PortMapping {
                host: Some(free_port()),
                host_ip: None,
                container: 80,
                protocol: Protocol::Tcp,
            }];
            let exec = DockerExecutor::new(docker.clone());
            let mut launched = exec.start(&spec, &ctx).await.unwrap();
            assert!(matches!(
                next_event(&mut launched.events).await,
                Some(InstanceEvent::Started { pid: Some(_) })
            ));
            until(&mut launched.events, |e| is_line(e, "hello")).await;

            let record = launched.instance.record();
            assert_eq!(record.kind, ServiceKind::Docker);
            assert_eq!(record.host, "local");
            let dr = DockerRecord::from_instance(&record).unwrap();
            let i = docker.inspect_container(&dr.id).await.unwrap();
            assert_eq!(i.short_name(), format!("{}-web", ctx.project));
            assert!(i.host_config.readonly_rootfs);
            assert_eq!(i.host_config.cap_drop, Some(vec!["ALL".to_owned()]));
            assert!(
                i.host_config
                    .security_opt
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o.starts_with("no-new-privileges"))
            );
            assert_eq!(i.label(LABEL_PROJECT), Some(ctx.project.as_str()));
            assert_eq!(i.label(LABEL_SERVICE), Some("web"));
            assert!(dr.ip.is_some(), "an IP on the project network");
            assert_eq!(
                dr.network,
                DockerExecutor::network_name(ctx.project.as_str())
            );

            // Exec checks run inside the container.
            let ok = launched
                .instance
                .exec("cat", &["/state/f".into()], LONG)
                .await
                .unwrap();
            assert!(ok.success, "{}", ok.detail);
            let bad = launched
                .instance
                .exec("touch", &["/rootfs".into()], LONG)
                .await
                .unwrap();
            assert!(!bad.success, "read-only root fs: {}", bad.detail);

            // HTTP reaches it as a local consumer would: loopback, published port.
            let ep = dr.host_endpoint();
            assert_eq!(ep.ip, IpAddr::from([127, 0, 0, 1]));
            let port = ep.port.expect("80 is published");
            let deadline = Instant::now() + LONG;
            loop {
                use futures_lite::{AsyncReadExt, AsyncWriteExt};
                let mut body = String::new();
                if let Ok(mut c) = async_net::TcpStream::connect(("127.0.0.1", port)).await
                    && c.write_all(b"GET /health HTTP/1.0\r\n\r\n").await.is_ok()
                {
                    let _ = c.read_to_string(&mut body).await;
                    if body.ends_with("ok\n") {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no HTTP answer on 127.0.0.1:{port}"
                );
                async_io::Timer::after(Duration::from_millis(50)).await;
            }

            launched
                .instance
                .stop(Signal::TERM, Duration::from_secs(10))
                .await
                .unwrap();
            let ev = until(&mut launched.events, |e| {
                matches!(e, InstanceEvent::Exited(_))
            })
            .await;
            assert!(
                matches!(ev, InstanceEvent::Exited(ExitStatus::Code(_))),
                "{ev:?}"
            );
            assert!(
                next_event(&mut launched.events).await.is_none(),
                "Exited is last"
            );
            assert!(
                docker
                    .inspect_container(&dr.id)
                    .await
                    .unwrap_err()
                    .is_not_found()
            );
        })
    }

    #[test]
    fn ports_are_published_on_the_host_address_they_name() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("ports_host_address").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            cleanup.volume(format!("{}-web-state", ctx.project));
            let mut spec = service("web", docker_spec(WEB));
            let (v4, v6, any) = (free_port(), free_port(), free_port());
            // From the configuration text, as a user writes them.
            let yaml = format!(
                "services: {{ web: {{ type: docker, image: x, ports: \
                 [\"127.0.0.1:{v4}:80\", \"[::1]:{v6}:80\", \"{any}:81\"] }} }}"
            );
            let loaded = harness_config::from_yaml_str(&yaml).unwrap();
            spec.ports = loaded.project.services["web"].ports.clone();
            let exec = DockerExecutor::new(docker.clone());
            let launched = exec.start(&spec, &ctx).await.unwrap();
            let dr = DockerRecord::from_instance(&launched.instance.record()).unwrap();
            let i = docker.inspect_container(&dr.id).await.unwrap();
            let bound = |key: &str| -> Vec<(String, String)> {
                let mut b: Vec<_> = i.network_settings.ports[key]
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| (b.host_ip, b.host_port))
                    .collect();
                b.sort();
                b
            };
            assert_eq!(
                bound("80/tcp"),
                [
                    ("127.0.0.1".to_owned(), v4.to_string()),
                    ("::1".to_owned(), v6.to_string())
                ]
            );
            // Without an address, every interface (the engine may list 0.0.0.0 and ::).
            let all = bound("81/tcp");
            assert!(
                all.iter()
                    .all(|(ip, port)| (ip == "0.0.0.0" || ip == "::") && *port == any.to_string()),
                "{all:?}"
            );
            launched
                .instance
                .stop(Signal::TERM, Duration::from_secs(10))
                .await
                .unwrap();
        })
    }

    #[test]
    fn a_container_killed_from_outside_is_noticed_at_once() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("killed_from_outside").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            let mut d = docker_spec(BUSYBOX);
            d.command = Some(
                ["sh", "-c", "echo up; exec sleep 600"]
                    .map(String::from)
                    .to_vec(),
            );
            let spec = service("sleeper", d);
            let exec = DockerExecutor::new(docker.clone());
            let mut launched = exec.start(&spec, &ctx).await.unwrap();
            until(&mut launched.events, |e| is_line(e, "up")).await;
            let id = launched.instance.record().container_id.unwrap();
            let out = std::process::Command::new("docker")
                .args(["kill", &id])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let ev = until(&mut launched.events, |e| {
                matches!(e, InstanceEvent::Exited(_))
            })
            .await;
            assert_eq!(ev, InstanceEvent::Exited(ExitStatus::Code(137)));
        })
    }

    #[test]
    fn a_new_executor_adopts_the_running_container() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("adopts").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            let mut d = docker_spec(BUSYBOX);
            d.command = Some(
                [
                    "sh",
                    "-c",
                    "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
                ]
                .map(String::from)
                .to_vec(),
            );
            let spec = service("db", d);
            let first = DockerExecutor::new(docker.clone());
            let mut launched = first.start(&spec, &ctx).await.unwrap();
            until(&mut launched.events, |e| is_line(e, "tick 2")).await;
            let record = launched.instance.record();
            let id = record.container_id.clone().unwrap();
            let mark = DockerRecord::from_instance(&record)
                .and_then(|r| r.last_log)
                .expect("the record holds the last output delivered");
            drop(launched);

            // The container writes more while no daemon watches.
            let all_lines = || async {
                docker
                    .logs(
                        &id,
                        &LogOptions {
                            timestamps: true,
                            ..LogOptions::default()
                        },
                    )
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap()
            };
            let deadline = Instant::now() + LONG;
            let marked = loop {
                let lines = all_lines().await;
                let at = lines
                    .iter()
                    .position(|l| l.timestamp.as_deref() == Some(mark.as_str()));
                if let Some(at) = at
                    && lines.len() > at + 3
                {
                    break lines[at].line.text().into_owned();
                }
                assert!(Instant::now() < deadline, "no output after the mark");
                async_io::Timer::after(Duration::from_millis(100)).await;
            };
            let n: u32 = marked.strip_prefix("tick ").unwrap().parse().unwrap();

            // A new daemon: a fresh executor and client.
            let second = DockerExecutor::from_env().await.unwrap();
            let mut adopted = second.attach(&spec, &record, &ctx).await.unwrap();
            assert_eq!(
                adopted.instance.record().container_id.as_deref(),
                Some(id.as_str())
            );
            assert!(matches!(
                next_event(&mut adopted.events).await,
                Some(InstanceEvent::Started { .. })
            ));
            // Output resumes right after the last line delivered: no gap, no repeat.
            let next = until(&mut adopted.events, |e| {
                matches!(e, InstanceEvent::Output(_))
            })
            .await;
            assert!(
                is_line(&next, &format!("tick {}", n + 1)),
                "{next:?} after tick {n}"
            );

            // start() with the same configuration adopts too: no duplicate.
            let again = second.start(&spec, &ctx).await.unwrap();
            assert_eq!(
                again.instance.record().container_id.as_deref(),
                Some(id.as_str())
            );
            let listed = docker
                .list_containers(&[(LABEL_PROJECT, ctx.project.as_str())])
                .await
                .unwrap();
            assert_eq!(listed.len(), 1, "no duplicate container");

            // A record of another service is not adopted.
            let other = service("other", docker_spec(BUSYBOX));
            let err = second.attach(&other, &record, &ctx).await.err().unwrap();
            assert!(err.to_string().contains("not labelled"), "{err}");

            // A changed configuration is not adopted by attach, and is replaced by start.
            let mut changed = spec.clone();
            changed.env.insert("X".into(), "1".into());
            let mut ctx2 = ctx.clone();
            ctx2.env.insert("X".into(), "1".into());
            let err = second.attach(&changed, &record, &ctx2).await.err().unwrap();
            assert!(err.to_string().contains("another configuration"), "{err}");
            let replaced = second.start(&changed, &ctx2).await.unwrap();
            assert_ne!(
                replaced.instance.record().container_id.as_deref(),
                Some(id.as_str())
            );
            let listed = docker
                .list_containers(&[(LABEL_PROJECT, ctx.project.as_str())])
                .await
                .unwrap();
            assert_eq!(listed.len(), 1, "the old container was replaced");
            replaced
                .instance
                .stop(Signal::TERM, Duration::from_secs(5))
                .await
                .unwrap();
        })
    }

    #[test]
    fn the_executor_runs_under_tokio() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        rt.block_on(async move {
            let Some(docker) = engine_or_skip("executor_under_tokio").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let mut ctx = project(&cleanup);
            ctx.spawner = Arc::new(move |t: harness_core::BoxTask| {
                handle.spawn(t);
            });
            let mut d = docker_spec(BUSYBOX);
            d.command = Some(
                ["sh", "-c", "echo \"$GREETING\"; exec sleep 600"]
                    .map(String::from)
                    .to_vec(),
            );
            let spec = service("t", d);
            let mut launched = DockerExecutor::new(docker)
                .start(&spec, &ctx)
                .await
                .unwrap();
            until(&mut launched.events, |e| is_line(e, "hello")).await;
            let ok = launched.instance.exec("true", &[], LONG).await.unwrap();
            assert!(ok.success, "{}", ok.detail);
            launched
                .instance
                .stop(Signal::KILL, Duration::from_secs(5))
                .await
                .unwrap();
            let ev = until(&mut launched.events, |e| {
                matches!(e, InstanceEvent::Exited(_))
            })
            .await;
            assert_eq!(ev, InstanceEvent::Exited(ExitStatus::Code(137)));
        })
    }

    #[test]
    fn start_errors_name_the_cause() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("start_errors").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            let exec = DockerExecutor::new(docker);

            let missing = format!("{}:none", unique_name("harness-test/absent"));
            let err = exec
                .start(&service("a", docker_spec(&missing)), &ctx)
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("`a`") && err.contains(&missing), "{err}");
            assert!(err.contains("no registry"), "{err}");

            let mut d = docker_spec(BUSYBOX);
            d.security.runtime = Some("runsc".into());
            let err = exec
                .start(&service("b", d), &ctx)
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("runsc") && err.contains("no fallback"),
                "{err}"
            );
        })
    }

    #[test]
    fn build_section_builds_the_image_first() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("build_section").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("Dockerfile"),
                format!(
                    "FROM {BUSYBOX}\nARG MSG\nRUN echo \"$MSG\" > /msg\nCMD [\"cat\", \"/msg\"]\n"
                ),
            )
            .unwrap();
            let tag = format!("{}:t", unique_name("harness-test/svc"));
            cleanup.image(tag.clone());
            let mut d = docker_spec(&tag);
            d.build = Some(Build {
                context: dir.path().to_owned(),
                dockerfile: None,
                args: BTreeMap::from([("MSG".into(), "from the build".into())]),
            });
            let spec = service("job", d);
            let mut launched = DockerExecutor::new(docker.clone())
                .start(&spec, &ctx)
                .await
                .unwrap();
            // Rebuilt below under the same tag: remove this one by id.
            cleanup.image(docker.inspect_image(&tag).await.unwrap().id);
            let mut saw_build = false;
            let mut saw_msg = false;
            loop {
                match next_event(&mut launched.events).await {
                    Some(InstanceEvent::Output(l)) => {
                        saw_build |= l.text().starts_with("build: Step 1/");
                        saw_msg |= l.text() == "from the build";
                    }
                    Some(InstanceEvent::Exited(st)) => {
                        assert_eq!(st, ExitStatus::Code(0));
                        break;
                    }
                    Some(_) => {}
                    None => panic!("ended without Exited"),
                }
            }
            assert!(saw_build && saw_msg);

            // A restart reuses the image; a start by request builds again.
            let changed = {
                let mut s = spec.clone();
                if let Target::Docker(d) = &mut s.target {
                    d.build
                        .as_mut()
                        .unwrap()
                        .args
                        .insert("MSG".into(), "rebuilt".into());
                }
                s
            };
            let exec = DockerExecutor::new(docker_engine::Docker::from_env().await.unwrap());
            let mut restart_ctx = ctx.clone();
            restart_ctx.generation = 2;
            for (ctx, want) in [(&restart_ctx, "from the build"), (&ctx, "rebuilt")] {
                let mut launched = exec.start(&changed, ctx).await.unwrap();
                let mut out = Vec::new();
                loop {
                    match next_event(&mut launched.events).await {
                        Some(InstanceEvent::Output(l)) if !l.text().starts_with("build: ") => {
                            out.push(l.text().into_owned())
                        }
                        Some(InstanceEvent::Exited(_)) | None => break,
                        Some(_) => {}
                    }
                }
                assert_eq!(out, [want], "generation {}", ctx.generation);
            }
        })
    }

    #[test]
    fn a_rebuilt_image_replaces_the_running_container() {
        smol::block_on(async {
            let Some(docker) = engine_or_skip("rebuilt_image").await else {
                return;
            };
            let cleanup = Cleanup::new();
            let ctx = project(&cleanup);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("Dockerfile"),
                format!("FROM {BUSYBOX}\nARG V\nRUN echo \"$V\" > /v\nCMD [\"sh\", \"-c\", \"cat /v; exec sleep 600\"]\n"),
            )
            .unwrap();
            let tag = format!("{}:t", unique_name("harness-test/rebuilt"));
            cleanup.image(tag.clone());
            let with_v = |v: &str| {
                let mut d = docker_spec(&tag);
                d.build = Some(Build {
                    context: dir.path().to_owned(),
                    dockerfile: None,
                    args: BTreeMap::from([("V".into(), v.into())]),
                });
                service("app", d)
            };
            let exec = DockerExecutor::new(docker.clone());
            let id_of = |l: &Launched| l.instance.record().container_id.unwrap();
            let mut first = exec.start(&with_v("1"), &ctx).await.unwrap();
            // Replaced below under the same tag: remove it by id.
            cleanup.image(docker.inspect_image(&tag).await.unwrap().id);
            until(&mut first.events, |e| is_line(e, "1")).await;
            // Same build, same configuration: the running container is kept.
            let same = exec.start(&with_v("1"), &ctx).await.unwrap();
            assert_eq!(id_of(&same), id_of(&first));
            // A new image under the same tag: the container is replaced.
            let mut second = exec.start(&with_v("2"), &ctx).await.unwrap();
            assert_ne!(id_of(&second), id_of(&first));
            until(&mut second.events, |e| is_line(e, "2")).await;
            let listed = docker
                .list_containers(&[(LABEL_PROJECT, ctx.project.as_str())])
                .await
                .unwrap();
            assert_eq!(listed.len(), 1);
        })
    }

    mod with_manager {
        use super::*;

        use harness_config::{
            Backoff, Check, Condition, Dependency, Probe, RestartMode, RestartPolicy, Settings,
        };

        use crate::manager::{ManagerOptions, ServiceManager};

        fn manager(project: &Arc<Project>, docker: &Docker) -> ServiceManager {
            manager_with(project, DockerExecutor::new(docker.clone()))
        }

        /// The output lines of `service` from `sub`, read until `enough` holds.
        async fn lines_of(
            sub: &mut crate::manager::Subscription,
            service: &str,
            enough: impl Fn(&[String]) -> bool,
        ) -> Vec<String> {
            let mut lines = Vec::new();
            let deadline = Instant::now() + LONG;
            while !enough(&lines) {
                assert!(Instant::now() < deadline, "{service} output: {lines:?}");
                let ev = futures_lite::future::or(sub.next(), async {
                    async_io::Timer::after(LONG).await;
                    None
                })
                .await
                .expect("manager events");
                if let crate::manager::ManagerEvent::Output {
                    service: s, line, ..
                } = ev
                    && s.as_str() == service
                {
                    lines.push(line.text().into_owned());
                }
            }
            lines
        }

        fn manager_with(project: &Arc<Project>, exec: DockerExecutor) -> ServiceManager {
            let opts = ManagerOptions::new(Arc::new(ThreadSpawner));
            let m = ServiceManager::new(project.clone(), opts).unwrap();
            m.register_executor(ServiceKind::Docker, Arc::new(exec));
            m
        }

        /// A web container with an HTTP readiness check through its own endpoint.
        fn db_service() -> ServiceSpec {
            let mut db = service("db", docker_spec(WEB));
            db.ports = vec![PortMapping {
                host: Some(free_port()),
                host_ip: None,
                container: 80,
                protocol: Protocol::Tcp,
            }];
            let mut probe = Probe::new(Check::Http {
                url: "http://${db.ip}:${db.port}/health".into(),
                expected_status: None,
            });
            probe.period = Duration::from_millis(200);
            probe.timeout = Duration::from_secs(5);
            probe.failure_threshold = 1000;
            db.readiness = Some(probe);
            db.restart = RestartPolicy {
                mode: RestartMode::Always,
                backoff: Backoff {
                    initial: Duration::from_millis(100),
                    ..Backoff::default()
                },
                max_restarts: None,
            };
            db.shutdown.timeout = Duration::from_secs(5);
            db
        }

        fn project_of(cleanup: &Cleanup, services: Vec<ServiceSpec>) -> Arc<Project> {
            let ctx = project(cleanup);
            let services = services.into_iter().map(|s| (s.name.clone(), s)).collect();
            Arc::new(
                Project::new(ctx.project, Settings::default(), BTreeMap::new(), services).unwrap(),
            )
        }

        fn name(s: &str) -> ServiceName {
            ServiceName::new(s).unwrap()
        }

        fn container_of(m: &ServiceManager, service: &str) -> Option<String> {
            m.status()
                .into_iter()
                .find(|st| st.name.as_str() == service)
                .and_then(|st| st.container_id)
        }

        #[test]
        fn a_local_process_reaches_a_healthy_container_through_its_endpoint() {
            smol::block_on(async {
                let Some(docker) = engine_or_skip("mixed_stack").await else {
                    return;
                };
                let cleanup = Cleanup::new();
                let busybox = ["/bin/busybox", "/usr/bin/busybox"]
                    .into_iter()
                    .find(|p| std::path::Path::new(p).exists())
                    .expect("busybox on the host (the test images are built from it)");
                let mut api = ServiceSpec::process(
                    name("api"),
                    busybox,
                    [
                        "sh",
                        "-c",
                        "echo \"db at $DB\"; exec busybox wget -q -O - http://$DB/health",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                api.env.insert("DB".into(), "${db.ip}:${db.port}".into());
                api.dependencies = vec![Dependency {
                    service: name("db"),
                    condition: Condition::Healthy,
                }];
                api.job = true;
                api.restart.mode = RestartMode::No;
                let project = project_of(&cleanup, vec![db_service(), api]);
                let m = manager(&project, &docker);
                let mut sub = m.subscribe();
                m.start_all().unwrap();
                m.wait_ready(&[name("db"), name("api")], LONG)
                    .await
                    .unwrap();
                let db_id = container_of(&m, "db").expect("db runs in a container");
                let port = docker
                    .inspect_container(&db_id)
                    .await
                    .unwrap()
                    .published_port(80)
                    .expect("published");

                let lines = lines_of(&mut sub, "api", |l| l.iter().any(|l| l == "ok")).await;
                assert_eq!(lines[0], format!("db at 127.0.0.1:{port}"));
                m.stop_all().await;
                assert!(
                    docker
                        .inspect_container(&db_id)
                        .await
                        .unwrap_err()
                        .is_not_found()
                );
            })
        }

        /// The networks named like `project`'s network; each is removed at the end.
        async fn project_networks(
            docker: &Docker,
            cleanup: &Cleanup,
            project: &Project,
        ) -> Vec<String> {
            let ids: Vec<String> = docker
                .networks_named(&DockerExecutor::network_name(project.name.as_str()))
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.id)
                .collect();
            for id in &ids {
                cleanup.network(id.clone());
            }
            ids
        }

        /// The first start of a new project's containers, all at once, makes
        /// one project network (the engine would take several of one name).
        #[test]
        fn concurrent_first_starts_make_one_project_network() {
            smol::block_on(async {
                let Some(docker) = engine_or_skip("one_network").await else {
                    return;
                };
                let cleanup = Cleanup::new();
                let services = (0..6)
                    .map(|i| {
                        let mut d = docker_spec(BUSYBOX);
                        d.command = Some(["sleep", "300"].map(String::from).to_vec());
                        service(&format!("s{i}"), d)
                    })
                    .collect();
                let project = project_of(&cleanup, services);
                let m = manager(&project, &docker);
                m.start_all().unwrap();
                let all: Vec<ServiceName> = project.services.keys().cloned().collect();
                m.wait_ready(&all, LONG).await.unwrap();
                let networks = project_networks(&docker, &cleanup, &project).await;
                assert_eq!(networks.len(), 1, "{networks:?}");
                m.stop_all().await;
            })
        }

        /// Duplicate project networks left by an earlier race are cleaned up
        /// at the next start instead of failing it on an ambiguous name.
        #[test]
        fn duplicate_project_networks_are_cleaned_up_at_start() {
            smol::block_on(async {
                let Some(docker) = engine_or_skip("duplicate_networks").await else {
                    return;
                };
                let cleanup = Cleanup::new();
                let mut d = docker_spec(BUSYBOX);
                d.command = Some(["sleep", "300"].map(String::from).to_vec());
                let project = project_of(&cleanup, vec![service("app", d)]);
                let net = DockerExecutor::network_name(project.name.as_str());
                // Created at the same moment, the engine keeps several of one name.
                for _ in 0..10 {
                    let threads: Vec<_> = (0..4)
                        .map(|_| {
                            let (docker, net) = (docker.clone(), net.clone());
                            std::thread::spawn(move || {
                                let _ = smol::block_on(docker.create_network(
                                    &net,
                                    &BTreeMap::new(),
                                    None,
                                ));
                            })
                        })
                        .collect();
                    for t in threads {
                        let _ = t.join();
                    }
                    if project_networks(&docker, &cleanup, &project).await.len() >= 2 {
                        break;
                    }
                }
                let before = project_networks(&docker, &cleanup, &project).await;
                assert!(before.len() >= 2, "no duplicates made: {before:?}");
                let m = manager(&project, &docker);
                m.start_all().unwrap();
                m.wait_ready(&[name("app")], LONG).await.unwrap();
                let after = project_networks(&docker, &cleanup, &project).await;
                assert_eq!(after.len(), 1, "{after:?}");
                m.stop_all().await;
            })
        }

        #[test]
        fn a_container_reaches_another_by_its_project_network_ip() {
            smol::block_on(async {
                let Some(docker) = engine_or_skip("container_to_container").await else {
                    return;
                };
                let cleanup = Cleanup::new();
                let mut d = docker_spec(BUSYBOX);
                d.command = Some(
                    [
                        "sh",
                        "-c",
                        "echo \"db at $DB\"; wget -q -O - http://$DB/health && wget -q -O - http://db:80/health",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                let mut client = service("client", d);
                client.env.insert("DB".into(), "${db.ip}:${db.port}".into());
                client.dependencies = vec![Dependency {
                    service: name("db"),
                    condition: Condition::Healthy,
                }];
                client.job = true;
                client.restart.mode = RestartMode::No;
                let project = project_of(&cleanup, vec![db_service(), client]);
                let m = manager(&project, &docker);
                let mut sub = m.subscribe();
                m.start_all().unwrap();
                m.wait_ready(&[name("db"), name("client")], LONG)
                    .await
                    .unwrap();
                let db_id = container_of(&m, "db").unwrap();
                let ip = docker
                    .inspect_container(&db_id)
                    .await
                    .unwrap()
                    .ip(Some(&DockerExecutor::network_name(project.name.as_str())))
                    .expect("db has an IP on the project network");
                let lines = lines_of(&mut sub, "client", |l| {
                    l.iter().filter(|l| *l == "ok").count() >= 2
                })
                .await;
                // By IP and container port, and by service name (DNS alias).
                assert_eq!(lines[0], format!("db at {ip}:80"));
                m.stop_all().await;
            })
        }

        #[test]
        fn a_container_killed_from_outside_is_restarted_per_policy() {
            smol::block_on(async {
                let Some(docker) = engine_or_skip("restart_on_kill").await else {
                    return;
                };
                let cleanup = Cleanup::new();
                let project = project_of(&cleanup, vec![db_service()]);
                let m = manager(&project, &docker);
                let mut sub = m.subscribe();
                m.start_all().unwrap();
                m.wait_ready(&[name("db")], LONG).await.unwrap();
                let first = container_of(&m, "db").unwrap();
                let out = std::process::Command::new("docker")
                    .args(["kill", &first])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let deadline = Instant::now() + LONG;
                loop {
                    let st = m
                        .status()
                        .into_iter()
                        .find(|s| s.name.as_str() == "db")
                        .unwrap();
                    if st.restarts >= 1
                        && st.state == harness_core::ServiceState::Healthy
                        && st.container_id.as_deref().is_some_and(|c| c != first)
                    {
                        break;
                    }
                    if Instant::now() >= deadline {
                        while let Some(ev) =
                            futures_lite::future::or(async { Some(sub.next().await) }, async {
                                async_io::Timer::after(Duration::from_millis(100)).await;
                                None
                            })
                            .await
                        {
                            eprintln!("EV {ev:?}");
                        }
                    }
                    assert!(Instant::now() < deadline, "not restarted: {st:?}");
                    async_io::Timer::after(Duration::from_millis(100)).await;
                }
                m.stop_all().await;
            })
        }

        #[test]
        fn a_new_manager_adopts_running_containers_without_duplicates() {
            smol::block_on(async {
                let Some(docker) = engine_or_skip("manager_adopts").await else {
                    return;
                };
                let cleanup = Cleanup::new();
                let project = project_of(&cleanup, vec![db_service()]);
                let first = manager(&project, &docker);
                first.start_all().unwrap();
                first.wait_ready(&[name("db")], LONG).await.unwrap();
                let id = container_of(&first, "db").unwrap();
                let records = first.records();
                assert_eq!(records.len(), 1);
                // The previous manager goes away; its container keeps running.
                drop(first);
                let records: Vec<crate::manager::ServiceRecord> =
                    serde_json::from_str(&serde_json::to_string(&records).unwrap()).unwrap();

                // The new daemon learns where the containers are, then adopts them.
                let exec = DockerExecutor::from_env().await.unwrap();
                let found = exec.discover(&project).await.unwrap();
                assert_eq!(found.len(), 1);
                assert_eq!(
                    (found[0].0.as_str(), found[0].1.id.as_str()),
                    ("db", id.as_str())
                );
                let second = manager_with(&project, exec);
                let errors = second.adopt(records).await;
                assert!(errors.is_empty(), "{errors:?}");
                second.wait_ready(&[name("db")], LONG).await.unwrap();
                assert_eq!(container_of(&second, "db").as_deref(), Some(id.as_str()));
                // The adopted container is in the registry, where it runs.
                let registered = || second.placement().registry().get("db").map(|e| e.location);
                let until = std::time::Instant::now() + LONG;
                while registered() != found[0].1.location() && std::time::Instant::now() < until {
                    async_io::Timer::after(Duration::from_millis(20)).await;
                }
                assert_eq!(registered(), found[0].1.location());
                let listed = docker
                    .list_containers(&[(LABEL_PROJECT, project.name.as_str())])
                    .await
                    .unwrap();
                assert_eq!(listed.len(), 1, "no duplicate container");
                // And it is really managed: stopping it removes it.
                second.stop_all().await;
                assert!(
                    docker
                        .inspect_container(&id)
                        .await
                        .unwrap_err()
                        .is_not_found()
                );
            })
        }
    }
}
