//! Docker services wherever they are placed: on this machine's engine, or on
//! the engine of a node (`host:` in the service) reached over ssh.
//!
//! [`DockerPlacement`] is the executor of kind `docker` for a project. It
//! sends each service to an engine by its placement:
//!
//! - no `host:`: this machine's engine, the [`DockerExecutor`] given with
//!   [`DockerPlacement::with_local`] (a project without such services never
//!   needs one, so it runs where there is no local engine);
//! - `host: NODE`: that node's engine through `ssh NODE docker system
//!   dial-stdio` ([`SshHost::docker`]), with the same Engine API client and the
//!   same [`DockerExecutor`]. One per node, connected when a service first
//!   needs it; status names the node as the host of its containers.
//!
//! [`ServiceExecutor::attach`] goes by the host of the persisted record, so a
//! new daemon re-adopts each container on the engine that runs it. When that
//! node does not answer over ssh, the container is adopted as it is recorded
//! and reported unreachable at once; it is followed (or its exit reported)
//! once the node answers, as below.
//!
//! **A node that drops off.** A container on a node is only observable
//! through the ssh connection. When the connection breaks, the engine's event
//! and log streams end at once (the executor on a node's engine is made with
//! [`DockerExecutor::with_stream_loss_ending_events`]); the instance then asks
//! the node (a command over ssh) and its engine about the container instead
//! of reporting an exit:
//!
//! - no answer: [`InstanceEvent::Unreachable`] with a reason
//!   naming the node (the manager shows the service as `unknown` and restarts
//!   nothing), and it keeps asking (every 0.5 s, backing off to 3 s);
//! - it answers and the container runs: [`InstanceEvent::Reachable`] (after an
//!   `Unreachable`), and the container is re-adopted on a fresh connection,
//!   its output resuming after the last line delivered;
//! - it answers and the container ended (or is gone): `Reachable`, then
//!   [`InstanceEvent::Exited`].
//!
//! A check that fails asks [`ServiceInstance::unreachable`], which runs a
//! command on the node over ssh and then pings its engine, so a node that
//! drops off shows as `unknown` as soon as a check notices, with the cause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_engine::Docker;
use futures_lite::StreamExt;
use harness_config::ServiceSpec;
use harness_core::{ExitStatus, ServiceKind, Signal};

use crate::docker::DockerExecutor;
use crate::executor::{
    ExecOutcome, ExecutorError, InstanceEvent, InstanceEvents, InstanceRecord, Launched,
    ServiceExecutor, ServiceInstance, StartContext,
};
use crate::ssh::{SshError, SshHost, SshHosts};

/// How long connecting to a node's engine (ssh, then the API version
/// handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one question to a node (is the engine there, is the container
/// running) may take; the ssh connect timeout bounds it sooner when the node
/// is gone.
const ASK_TIMEOUT: Duration = Duration::from_secs(15);

/// The first pause between questions to a node that did not answer.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest pause between questions to a node that did not answer.
const RETRY_MAX: Duration = Duration::from_secs(3);

/// The executor of docker services of one project, on this machine's engine
/// or on a node's engine by each service's placement (see the module docs).
pub struct DockerPlacement {
    local: Result<DockerExecutor, String>,
    hosts: Result<SshHosts, String>,
    nodes: Engines,
}

/// The executors on the engines of nodes connected so far, by node name.
type Engines = Arc<Mutex<HashMap<String, DockerExecutor>>>;

impl std::fmt::Debug for DockerPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerPlacement")
            .field("local", &self.local.is_ok())
            .field("hosts", &self.hosts.as_ref().ok())
            .field("nodes", &self.nodes().len())
            .finish()
    }
}

impl Default for DockerPlacement {
    fn default() -> Self {
        DockerPlacement::new()
    }
}

impl DockerPlacement {
    /// An executor with no engine yet: services fail to start until
    /// [`DockerPlacement::with_local`] (services without a host) or
    /// [`DockerPlacement::with_nodes`] (services with one) says where they go.
    pub fn new() -> DockerPlacement {
        DockerPlacement {
            local: Err("no Docker engine of this machine is set up for the project".into()),
            hosts: Err("the project has no nodes".into()),
            nodes: Engines::default(),
        }
    }

    /// Places services with `host:` on the engines of these nodes.
    pub fn with_nodes(mut self, hosts: SshHosts) -> DockerPlacement {
        self.hosts = Ok(hosts);
        self
    }

    /// Services with `host:` cannot run, for this reason (e.g. ssh to the
    /// nodes cannot be set up); starting one fails with it.
    pub fn with_nodes_unavailable(mut self, reason: impl Into<String>) -> DockerPlacement {
        self.hosts = Err(reason.into());
        self
    }

    /// Runs services without a host on this engine (this machine's).
    pub fn with_local(mut self, local: DockerExecutor) -> DockerPlacement {
        self.local = Ok(local);
        self
    }

    /// Services without a host cannot run here, for this reason (e.g. the
    /// local engine is unreachable); starting one fails with it.
    pub fn with_local_unavailable(mut self, reason: impl Into<String>) -> DockerPlacement {
        self.local = Err(reason.into());
        self
    }

    /// The executor on this machine's engine, if there is one.
    pub fn local(&self) -> Option<&DockerExecutor> {
        self.local.as_ref().ok()
    }

    /// The executors on nodes' engines connected so far, by node name.
    pub fn node_executors(&self) -> Vec<(String, DockerExecutor)> {
        self.nodes()
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    }

    /// Removes the containers and network of `project` from every engine used
    /// so far (this machine's and the nodes' connected ones); what is not
    /// found is no error. Returns the errors, each naming its engine.
    pub async fn remove_project(&self, project: &str) -> Vec<String> {
        let mut engines: Vec<(String, DockerExecutor)> = self.node_executors();
        if let Ok(l) = &self.local {
            engines.push(("this machine".into(), l.clone()));
        }
        let mut errors = Vec::new();
        for (name, e) in engines {
            match e.remove_project(project).await {
                Ok(()) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) => errors.push(format!("{name}: {err}")),
            }
        }
        errors
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, DockerExecutor>> {
        lock(&self.nodes)
    }

    /// The node named (or addressed) `host`.
    fn host(&self, host: &str) -> Result<Arc<SshHost>, String> {
        let hosts = self
            .hosts
            .as_ref()
            .map_err(|why| format!("cannot reach node `{host}`: {why}"))?;
        hosts.get(host).map_err(|e| e.to_string())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The engine of `node`, connecting on first use.
async fn engine_of(engines: &Engines, node: &Arc<SshHost>) -> Result<DockerExecutor, String> {
    if let Some(e) = lock(engines).get(node.name()) {
        return Ok(e.clone());
    }
    let connect = async { Some(node.docker().await) };
    let docker = match within(CONNECT_TIMEOUT, connect).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return Err(format!(
                "cannot reach the Docker engine on node `{}`: {e}",
                node.name()
            ));
        }
        None => {
            return Err(format!(
                "the Docker engine on node `{}` did not answer within {}s",
                node.name(),
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    let engine = DockerExecutor::new(docker)
        .with_host_name(node.name())
        .with_stream_loss_ending_events();
    // Connected concurrently for another service: keep the first.
    Ok(lock(engines)
        .entry(node.name().to_owned())
        .or_insert(engine)
        .clone())
}

#[async_trait::async_trait]
impl ServiceExecutor for DockerPlacement {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Docker
    }

    /// A container of this machine's engine is placed on its project network;
    /// one on a node is where its node is (the configuration says).
    async fn place(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Option<service_registry::Location>, ExecutorError> {
        match (spec.host(), &self.local) {
            (None, Ok(l)) => l.place(spec, ctx).await,
            _ => Ok(None),
        }
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let fail = |why: String| ExecutorError::Start {
            service: spec.name.to_string(),
            source: why.into(),
        };
        match spec.host() {
            None => match &self.local {
                Ok(l) => l.start(spec, ctx).await,
                Err(why) => Err(fail(why.clone())),
            },
            Some(host) => {
                let node = self.host(host).map_err(fail)?;
                let engine = engine_of(&self.nodes, &node).await.map_err(fail)?;
                let launched = engine.start(spec, ctx).await?;
                Ok(self.follow(&node, launched.instance, Ok(launched.events), spec, ctx))
            }
        }
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let fail = |why: String| ExecutorError::Attach {
            service: spec.name.to_string(),
            source: why.into(),
        };
        // The record says which engine runs the container.
        let on_node = self
            .hosts
            .as_ref()
            .ok()
            .and_then(|h| h.get(&record.host).ok())
            .map(|h| h.name().to_owned());
        let wanted = spec.host().map(|h| {
            self.hosts
                .as_ref()
                .ok()
                .and_then(|hs| hs.get(h).ok())
                .map(|n| n.name().to_owned())
                .unwrap_or_else(|| h.to_owned())
        });
        if let (Some(h), Err(why)) = (&wanted, &self.hosts) {
            return Err(fail(format!("cannot reach node `{h}`: {why}")));
        }
        if on_node != wanted {
            let at = |n: &Option<String>| match n {
                Some(n) => format!("node `{n}`"),
                None => "this machine".to_owned(),
            };
            return Err(fail(format!(
                "its container runs on {}, but the service is now placed on {}",
                at(&on_node),
                at(&wanted)
            )));
        }
        match on_node {
            None => match &self.local {
                Ok(l) => l.attach(spec, record, ctx).await,
                Err(why) => Err(fail(why.clone())),
            },
            Some(node) => {
                let node = self.host(&node).map_err(fail)?;
                let why = match engine_of(&self.nodes, &node).await {
                    Ok(engine) => {
                        let launched = engine.attach(spec, record, ctx).await?;
                        let events = Ok(launched.events);
                        return Ok(self.follow(&node, launched.instance, events, spec, ctx));
                    }
                    Err(why) => why,
                };
                // The node is cut off: the container may well run on. It is
                // adopted as unreachable and followed once the node answers.
                let Some(reason) = node_unreachable(&node).await else {
                    return Err(fail(why));
                };
                if record.container_id.is_none() {
                    return Err(fail("the record holds no container id".into()));
                }
                let unseen = Arc::new(Unseen {
                    record: record.clone(),
                    service: spec.name.to_string(),
                    reason: reason.clone(),
                });
                Ok(self.follow(&node, unseen, Err(reason), spec, ctx))
            }
        }
    }
}

impl DockerPlacement {
    /// Wraps a container on `node`'s engine so that losing the connection
    /// shows as unreachable, not as an exit (see the module docs). `events`:
    /// its events, or why it cannot be seen yet.
    fn follow(
        &self,
        node: &Arc<SshHost>,
        instance: Arc<dyn ServiceInstance>,
        events: Result<InstanceEvents, String>,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Launched {
        let tracked = Arc::new(Tracked {
            host: node.clone(),
            engines: self.nodes.clone(),
            current: Mutex::new(instance),
        });
        let (tx, rx) = async_channel::bounded(64);
        let follower = Follower {
            tracked: tracked.clone(),
            spec: spec.clone(),
            ctx: ctx.clone(),
            tx,
        };
        ctx.spawner.spawn(Box::pin(follower.run(events)));
        Launched {
            instance: Arc::new(NodeInstance { tracked }),
            events: Box::pin(rx),
        }
    }
}

/// What the handle of a container on a node and its follower share.
struct Tracked {
    host: Arc<SshHost>,
    engines: Engines,
    /// The handle of the container, replaced when it is re-adopted.
    current: Mutex<Arc<dyn ServiceInstance>>,
}

impl Tracked {
    fn current(&self) -> Arc<dyn ServiceInstance> {
        lock(&self.current).clone()
    }

    async fn engine(&self) -> Result<DockerExecutor, String> {
        engine_of(&self.engines, &self.host).await
    }
}

/// A container on a node that could not be reached when it was re-adopted:
/// what its record says, until the node answers.
struct Unseen {
    record: InstanceRecord,
    service: String,
    reason: String,
}

#[async_trait::async_trait]
impl ServiceInstance for Unseen {
    fn pid(&self) -> Option<u32> {
        self.record.pid
    }

    fn record(&self) -> InstanceRecord {
        self.record.clone()
    }

    async fn stop(&self, _signal: Signal, _grace: Duration) -> Result<(), ExecutorError> {
        Err(ExecutorError::Stop {
            service: self.service.clone(),
            source: self.reason.clone().into(),
        })
    }

    async fn exec(
        &self,
        _command: &str,
        _args: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError> {
        Err(ExecutorError::Probe {
            service: self.service.clone(),
            source: self.reason.clone().into(),
        })
    }
}

/// A container on a node's engine; its handle is replaced when the
/// container is re-adopted after the connection was lost.
struct NodeInstance {
    tracked: Arc<Tracked>,
}

#[async_trait::async_trait]
impl ServiceInstance for NodeInstance {
    fn pid(&self) -> Option<u32> {
        self.tracked.current().pid()
    }

    fn record(&self) -> InstanceRecord {
        self.tracked.current().record()
    }

    async fn stop(&self, signal: Signal, grace: Duration) -> Result<(), ExecutorError> {
        self.tracked.current().stop(signal, grace).await
    }

    async fn exec(
        &self,
        command: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError> {
        self.tracked.current().exec(command, args, timeout).await
    }

    async fn unreachable(&self) -> Option<String> {
        if let Some(why) = node_unreachable(&self.tracked.host).await {
            return Some(why);
        }
        match self.tracked.engine().await {
            Ok(e) => engine_unreachable(&self.tracked.host, e.docker()).await,
            Err(why) => Some(why),
        }
    }
}

/// Why the engine on `host` (reachable over ssh) does not answer, or `None`.
async fn engine_unreachable(host: &SshHost, docker: &Docker) -> Option<String> {
    match within(ASK_TIMEOUT, async { Some(docker.ping().await) }).await {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(format!(
            "the Docker engine on node `{}` does not answer: {e}",
            host.name()
        )),
        None => Some(format!(
            "the Docker engine on node `{}` does not answer within {}s",
            host.name(),
            ASK_TIMEOUT.as_secs()
        )),
    }
}

/// Why `host` cannot be reached over ssh, or `None` if it answers. Asked
/// first: for a node that is gone, it is the one slow question.
async fn node_unreachable(host: &SshHost) -> Option<String> {
    match host.check(ASK_TIMEOUT).await {
        Ok(()) => None,
        Err(SshError::Unreachable { reason, .. }) => {
            Some(format!("node `{}` is unreachable: {reason}", host.name()))
        }
        Err(e @ SshError::Timeout { .. }) => Some(e.to_string()),
        Err(e) => Some(format!("cannot reach node `{}`: {e}", host.name())),
    }
}

/// Forwards a node container's events, turning a lost connection into
/// `Unreachable`/`Reachable` and re-adopting the container once it can be
/// seen again.
struct Follower {
    tracked: Arc<Tracked>,
    spec: ServiceSpec,
    ctx: StartContext,
    tx: async_channel::Sender<InstanceEvent>,
}

/// What the node's engine says about a container.
enum Seen {
    /// It runs.
    Runs,
    /// It ended (with this exit code), or is gone (`None`).
    Ended(Option<i64>),
    /// The engine could not be asked, for this reason.
    NoAnswer(String),
}

/// What became of a container whose event stream ended.
enum Fate {
    /// It still runs: follow these events of it (re-adopted).
    Runs(InstanceEvents),
    /// It ended with this status.
    Ended(ExitStatus),
    /// Nobody listens any more.
    Abandoned,
}

impl Follower {
    /// Forwards `events` (or, when the container cannot be seen yet, says so
    /// and waits for the node) until the container ends.
    async fn run(self, events: Result<InstanceEvents, String>) {
        let (mut events, mut lost) = match events {
            Ok(e) => (e, false),
            Err(reason) => {
                let pid = self.tracked.current().pid();
                for ev in [
                    InstanceEvent::Started { pid },
                    InstanceEvent::Unreachable { reason },
                ] {
                    if self.tx.send(ev).await.is_err() {
                        return;
                    }
                }
                match self.fate(ExitStatus::Unknown, &mut true).await {
                    Fate::Runs(e) => (e, false),
                    Fate::Ended(status) => {
                        let _ = self.tx.send(InstanceEvent::Exited(status)).await;
                        return;
                    }
                    Fate::Abandoned => return,
                }
            }
        };
        let mut started = false;
        loop {
            let status = loop {
                let ev = match events.next().await {
                    Some(InstanceEvent::Exited(s)) => break s,
                    None => break ExitStatus::Unknown,
                    // Re-adopting starts a new stream: it was started long ago.
                    Some(InstanceEvent::Started { .. }) if started => continue,
                    Some(ev) => ev,
                };
                started |= matches!(ev, InstanceEvent::Started { .. });
                if self.tx.send(ev).await.is_err() {
                    return;
                }
            };
            events = match self.fate(status, &mut lost).await {
                Fate::Runs(e) => e,
                Fate::Ended(status) => {
                    let _ = self.tx.send(InstanceEvent::Exited(status)).await;
                    return;
                }
                Fate::Abandoned => return,
            };
        }
    }

    /// Asks the node's engine what became of the container after its events
    /// ended with `status`, until it answers; reports losing and regaining
    /// sight of it on the way (`lost`: `Unreachable` was sent).
    async fn fate(&self, status: ExitStatus, lost: &mut bool) -> Fate {
        let mut delay = RETRY_FIRST;
        loop {
            if self.tx.is_closed() {
                return Fate::Abandoned;
            }
            let record = self.tracked.current().record();
            let (seen, engine) = self.ask(&record).await;
            match seen {
                Seen::Runs => {
                    // Re-adopt it; when that fails (lost again on the way, or it
                    // ended meanwhile) ask again.
                    let attached = match &engine {
                        Some(e) => e.attach(&self.spec, &record, &self.ctx).await.ok(),
                        None => None,
                    };
                    if let Some(l) = attached {
                        *lock(&self.tracked.current) = l.instance;
                        if std::mem::take(lost)
                            && self.tx.send(InstanceEvent::Reachable).await.is_err()
                        {
                            return Fate::Abandoned;
                        }
                        return Fate::Runs(l.events);
                    }
                }
                Seen::Ended(code) => {
                    if std::mem::take(lost) && self.tx.send(InstanceEvent::Reachable).await.is_err()
                    {
                        return Fate::Abandoned;
                    }
                    return Fate::Ended(match (status, code) {
                        (ExitStatus::Unknown, Some(c)) => ExitStatus::Code(c as i32),
                        (other, _) => other,
                    });
                }
                Seen::NoAnswer(reason) => {
                    if !std::mem::replace(lost, true) {
                        if self
                            .tx
                            .send(InstanceEvent::Unreachable { reason })
                            .await
                            .is_err()
                        {
                            return Fate::Abandoned;
                        }
                        delay = RETRY_FIRST;
                    }
                }
            }
            async_io::Timer::after(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Asks the node (over ssh, then its engine) about the container of
    /// `record`; gives the engine when it answered.
    async fn ask(&self, record: &InstanceRecord) -> (Seen, Option<DockerExecutor>) {
        let host = &self.tracked.host;
        if let Some(why) = node_unreachable(host).await {
            return (Seen::NoAnswer(why), None);
        }
        let engine = match self.tracked.engine().await {
            Ok(e) => e,
            Err(why) => return (Seen::NoAnswer(why), None),
        };
        let id = record.container_id.clone().unwrap_or_default();
        let docker = engine.docker();
        let asked = within(ASK_TIMEOUT, async {
            Some(docker.inspect_container(&id).await)
        })
        .await;
        let seen = match asked {
            Some(Ok(i)) if i.state.running => Seen::Runs,
            Some(Ok(i)) => Seen::Ended(Some(i.state.exit_code)),
            Some(Err(e)) if e.is_not_found() => Seen::Ended(None),
            Some(Err(e)) => Seen::NoAnswer(format!(
                "the Docker engine on node `{}` does not answer: {e}",
                host.name()
            )),
            None => Seen::NoAnswer(format!(
                "the Docker engine on node `{}` does not answer within {}s",
                host.name(),
                ASK_TIMEOUT.as_secs()
            )),
        };
        (seen, Some(engine))
    }
}

/// `work`, or `None` once `limit` has passed.
async fn within<T>(limit: Duration, work: impl Future<Output = Option<T>>) -> Option<T> {
    futures_lite::future::or(work, async {
        async_io::Timer::after(limit).await;
        None
    })
    .await
}
