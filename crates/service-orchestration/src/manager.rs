//! [`ServiceManager`]: brings services up in dependency order on real health,
//! keeps them up, stops them in reverse order, and reports everything on one
//! event stream.
//!
//! Each service is driven by one small task (its *actor*) that owns its
//! [`ServiceLifecycle`]: requests, executor results, probe verdicts, timers and
//! output all arrive as messages, go through the pure [`reduce`], and the
//! resulting effects are carried out. A service starts the moment its own
//! dependencies hold their conditions: the actor of a dependency tells its
//! dependents when their condition holds or can never hold.
//!
//! Background work runs on the embedder's [`Spawner`](harness_core::Spawner);
//! the manager has no runtime of its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{Stream, StreamExt};
use harness_config::{Check, Condition, Probe, Project, ServiceSpec, Target};
use harness_core::{
    ExitStatus, Health, LastExit, OutputLine, ServiceKind, ServiceName, ServiceState,
    ServiceStatus, SharedSpawner,
};
use serde::{Deserialize, Serialize};

use crate::executor::{
    InstanceEvent, InstanceRecord, Launched, ServiceInstance, SharedExecutor, StartContext,
};
use crate::health::{CheckEnv, ProbeRunner, ProbeTls, TlsClient, TlsSetupError, Verdict};
use crate::lifecycle::{
    AfterStop, Effect, Event, LifecyclePolicy, Phase, ServiceLifecycle, reduce,
};
use crate::placement::Placement;
use crate::process::ProcessExecutor;
use service_registry::Location;

/// How a [`ServiceManager`] runs.
#[derive(Clone)]
pub struct ManagerOptions {
    /// Runs the manager's background work (one small task per service, plus
    /// timers, probes and output readers).
    pub spawner: SharedSpawner,
    /// If set, service output goes to files under `<log_dir>/<service>/`, so
    /// services outlive the manager and can be re-adopted ([`ServiceManager::adopt`]).
    pub log_dir: Option<PathBuf>,
    /// Events kept for slow subscribers before the oldest are dropped (they get
    /// [`ManagerEvent::Lagged`]).
    pub event_capacity: usize,
    /// Where the services are recorded as they run, and resolved from
    /// (`${svc.ip|port|host}`, `harness env`); default: a registry in memory.
    pub registry: Option<service_registry::Registry>,
    /// The networks the services are placed in; default: the project's
    /// configured networks joined with this host's addresses
    /// ([`Placement::topology_of`]).
    pub topology: Option<service_registry::NetworkTopology>,
    /// How HTTPS checks verify servers.
    pub probe_tls: ProbeTls,
    /// Seeds restart jitter (default: from the clock).
    pub jitter_seed: Option<u64>,
}

impl ManagerOptions {
    /// Defaults: output through pipes, 4096 buffered events, loopback addresses.
    pub fn new(spawner: SharedSpawner) -> Self {
        ManagerOptions {
            spawner,
            log_dir: None,
            event_capacity: 4096,
            registry: None,
            topology: None,
            probe_tls: ProbeTls::default(),
            jitter_seed: None,
        }
    }
}

impl std::fmt::Debug for ManagerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerOptions")
            .field("log_dir", &self.log_dir)
            .field("event_capacity", &self.event_capacity)
            .field("probe_tls", &self.probe_tls)
            .finish_non_exhaustive()
    }
}

/// Something that happened in the managed services.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerEvent {
    /// A service changed state.
    State {
        /// The service.
        service: ServiceName,
        /// Its new state.
        state: ServiceState,
    },
    /// The verdict of a service's readiness check changed.
    Health {
        /// The service.
        service: ServiceName,
        /// The verdict.
        health: Health,
        /// The check result that decided it.
        detail: String,
    },
    /// A line of a service's output.
    Output {
        /// The service.
        service: ServiceName,
        /// The line.
        line: OutputLine,
        /// When it was read.
        timestamp: SystemTime,
    },
    /// Something went wrong that does not affect the service itself (e.g.
    /// the registry could not persist a change).
    Warning {
        /// The service it concerns.
        service: ServiceName,
        /// What went wrong.
        message: String,
    },
    /// This subscriber was too slow: this many events were dropped for it.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// What the manager persists per running service, to re-adopt it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The service.
    pub service: ServiceName,
    /// Restarts since it was last started on request.
    pub restarts: u32,
    /// When its current run started (ms since the Unix epoch).
    pub started_at_ms: Option<u64>,
    /// The executor's record of the running instance.
    pub instance: InstanceRecord,
}

/// A service that was asked to run but has no process right now (it waits
/// for its next restart or for a dependency): what a new manager needs to
/// carry on where this one stopped ([`ServiceManager::resume`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingStart {
    /// The service.
    pub service: ServiceName,
    /// Restarts since it was last started on request.
    pub restarts: u32,
}

/// What went wrong with a manager request; names the service.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No service of that name in the project.
    #[error("no service `{0}` in the project")]
    UnknownService(String),
    /// The service did not become ready.
    #[error("`{service}` is not ready: {reason}")]
    NotReady {
        /// The service.
        service: ServiceName,
        /// Why (its state, the dependency it waits on, the timeout).
        reason: String,
    },
    /// A persisted service could not be re-adopted.
    #[error("cannot re-adopt `{service}`: {reason}")]
    Adopt {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The HTTPS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The project's networks cannot be placed (a bad subnet).
    #[error("cannot place the services: {reason}")]
    Placement {
        /// Why.
        reason: String,
    },
}

/// A stream of [`ManagerEvent`]s. A subscriber that falls behind loses the
/// oldest events and gets one [`ManagerEvent::Lagged`] saying how many; it
/// never slows services or the manager down.
pub struct Subscription {
    rx: async_broadcast::Receiver<ManagerEvent>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = ManagerEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ManagerEvent>> {
        match Pin::new(&mut self.rx).poll_recv(cx) {
            Poll::Ready(Some(Ok(ev))) => Poll::Ready(Some(ev)),
            Poll::Ready(Some(Err(async_broadcast::RecvError::Overflowed(missed)))) => {
                Poll::Ready(Some(ManagerEvent::Lagged { missed }))
            }
            Poll::Ready(Some(Err(async_broadcast::RecvError::Closed))) | Poll::Ready(None) => {
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Brings a project's services up and keeps them up. Cheap to clone (an `Arc` inside).
///
/// Dropping the last clone leaves running services running (so a daemon can
/// restart and [`adopt`](Self::adopt) them); call [`stop_all`](Self::stop_all) to stop them.
#[derive(Clone)]
pub struct ServiceManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceManager")
            .field("project", &self.inner.project.name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    project: Arc<Project>,
    spawner: SharedSpawner,
    log_dir: Option<PathBuf>,
    placement: Placement,
    tls: TlsClient,
    executors: RwLock<HashMap<ServiceKind, SharedExecutor>>,
    slots: BTreeMap<ServiceName, Arc<Slot>>,
    control: BTreeMap<ServiceName, async_channel::Sender<Msg>>,
    data: BTreeMap<ServiceName, async_channel::Sender<DataMsg>>,
    events: async_broadcast::Sender<ManagerEvent>,
    _keep_open: async_broadcast::InactiveReceiver<ManagerEvent>,
    /// Notified after every state change and every processed request.
    changed: event_listener::Event,
}

/// A dependent of a service and the condition it waits for.
struct Edge {
    dependent: ServiceName,
    condition: Condition,
}

/// The shared view of one service (read by the API, written by its actor).
struct Slot {
    name: ServiceName,
    spec: Arc<ServiceSpec>,
    dependents: Vec<Edge>,
    view: Mutex<View>,
    /// What to record of this service in the registry, in order.
    registry: async_channel::Sender<RegistryOp>,
}

/// A change to record in the registry.
enum RegistryOp {
    /// The service runs there now; the sender is told once it is recorded.
    Launched {
        spec: Arc<ServiceSpec>,
        instance: Arc<dyn ServiceInstance>,
        done: async_channel::Sender<()>,
    },
    /// The service changed state.
    State(ServiceState),
}

/// Records one service's changes in the registry, in the order they happened
/// (one writer per service: different services write concurrently, and a
/// persisted registry commits their writes together).
async fn record_in_registry(
    placement: Placement,
    service: ServiceName,
    events: async_broadcast::Sender<ManagerEvent>,
    queue: async_channel::Receiver<RegistryOp>,
) {
    while let Ok(op) = queue.recv().await {
        let result = match op {
            RegistryOp::Launched {
                spec,
                instance,
                done,
            } => {
                // Where it runs, and the version a package service really runs.
                let version = crate::package::PackageExecutor::version_of(&instance.record());
                let r = placement
                    .record_launch(&spec, instance.location(), version, ServiceState::Starting)
                    .await;
                let _ = done.try_send(());
                r
            }
            RegistryOp::State(state) => placement.record_state(&service, state).await,
        };
        if let Err(e) = result {
            // The registry keeps its previous (persisted) state; the service
            // itself is unaffected.
            let _ = events.try_broadcast(ManagerEvent::Warning {
                service: service.clone(),
                message: format!("the registry did not record a change: {e}"),
            });
        }
    }
}

struct View {
    lc: ServiceLifecycle,
    health: Health,
    instance: Option<Arc<dyn ServiceInstance>>,
    started_at_ms: Option<u64>,
    exit_code: Option<i32>,
    /// How the last run ended.
    last_exit: Option<LastExit>,
    /// Requests sent to the actor, and requests it has processed.
    requests_sent: u64,
    requests_done: u64,
    /// Per dependent edge: a log-line condition matched during the current run.
    log_matched: Vec<bool>,
}

impl Slot {
    fn view(&self) -> MutexGuard<'_, View> {
        // Every update of the view is a plain assignment: a poisoned lock is still consistent.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Requests and results for a service's actor.
enum Msg {
    Start,
    /// Start as a previous manager would have, with this restart count.
    Resume {
        restarts: u32,
    },
    Stop,
    Adopt {
        launched: Launched,
        restarts: u32,
        started_at_ms: Option<u64>,
    },
    Lost(String),
    /// A lifecycle event, for run `run` if tagged (stale ones are dropped).
    Event {
        run: Option<u64>,
        event: Event,
    },
    Probe {
        run: u64,
        readiness: bool,
        verdict: Verdict,
    },
}

/// What a running instance reports (bounded channel: a chatty service cannot flood memory).
enum DataMsg {
    Output {
        run: u64,
        line: OutputLine,
        at: SystemTime,
    },
    Dropped,
    /// The instance was lost sight of (`Some(reason)`) or is observable again (`None`).
    Reachability {
        run: u64,
        unreachable: Option<String>,
    },
    Exited {
        run: u64,
        status: ExitStatus,
    },
}

/// [`ServiceManager::wait_ready`] stops waiting for a service restarted this
/// many times in a row (without a stable run in between).
pub const WAIT_GIVES_UP_AFTER: u32 = 3;

/// The name (without `.log`) of the file in a service's log directory where
/// harness writes what happened to the service (exits, restarts, failures to
/// start), one line each: `harness.log`.
pub const LIFECYCLE_LOG_STEM: &str = "harness";

/// Lines buffered between an instance's reader and its actor. A bounded
/// channel allocates all its slots at once, so this is memory every service
/// holds while idle: small, since the executor's own queue buffers bursts.
const DATA_CAPACITY: usize = 64;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ServiceManager {
    /// A manager for `project`, with the process executor registered. Every
    /// service starts `pending`; nothing runs until [`start`](Self::start).
    pub fn new(project: Arc<Project>, opts: ManagerOptions) -> Result<Self, ManagerError> {
        let tls = TlsClient::new(&opts.probe_tls)?;
        let (mut tx, rx) = async_broadcast::broadcast(opts.event_capacity.max(1));
        tx.set_overflow(true);
        tx.set_await_active(false);
        let keep_open = rx.deactivate();
        let topology = match opts.topology.clone() {
            Some(t) => t,
            None => Placement::topology_of(&project).map_err(|e| ManagerError::Placement {
                reason: e.to_string(),
            })?,
        };
        let placement = Placement::new(
            project.clone(),
            opts.registry
                .clone()
                .unwrap_or_else(service_registry::Registry::in_memory),
            topology,
        );
        let mut seed = opts.jitter_seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        });
        let graph = project.graph();
        let mut slots = BTreeMap::new();
        let mut control = BTreeMap::new();
        let mut data = BTreeMap::new();
        let mut receivers = Vec::new();
        let mut registry_queues = Vec::new();
        for (name, spec) in &project.services {
            let policy = Arc::new(LifecyclePolicy::from_spec(spec, &project.settings));
            let dependents: Vec<Edge> = graph
                .dependents(name.as_str())
                .into_iter()
                .flat_map(|d| {
                    graph
                        .dependencies(d.as_str())
                        .iter()
                        .filter(|dep| dep.service == *name)
                        .map(|dep| Edge {
                            dependent: d.clone(),
                            condition: dep.condition.clone(),
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let view = View {
                lc: ServiceLifecycle::new(policy, seed),
                health: Health::Unknown,
                instance: None,
                started_at_ms: None,
                exit_code: None,
                last_exit: None,
                requests_sent: 0,
                requests_done: 0,
                log_matched: vec![false; dependents.len()],
            };
            let (rtx, rrx) = async_channel::unbounded();
            registry_queues.push((name.clone(), rrx));
            let slot = Arc::new(Slot {
                name: name.clone(),
                spec: Arc::new(spec.clone()),
                dependents,
                view: Mutex::new(view),
                registry: rtx,
            });
            let (ctx, crx) = async_channel::unbounded();
            let (dtx, drx) = async_channel::bounded(DATA_CAPACITY);
            control.insert(name.clone(), ctx);
            data.insert(name.clone(), dtx);
            receivers.push((slot.clone(), crx, drx));
            slots.insert(name.clone(), slot);
        }
        let mut executors: HashMap<ServiceKind, SharedExecutor> = HashMap::new();
        executors.insert(ServiceKind::Process, Arc::new(ProcessExecutor::new()));
        let inner = Arc::new(Inner {
            project,
            spawner: opts.spawner,
            log_dir: opts.log_dir,
            placement: placement.clone(),
            tls,
            executors: RwLock::new(executors),
            slots,
            control,
            data,
            events: tx,
            _keep_open: keep_open,
            changed: event_listener::Event::new(),
        });
        for (service, queue) in registry_queues {
            inner.spawner.spawn(Box::pin(record_in_registry(
                placement.clone(),
                service,
                inner.events.clone(),
                queue,
            )));
        }
        for (slot, crx, drx) in receivers {
            let actor = Actor {
                inner: Arc::downgrade(&inner),
                slot,
                readiness_probe: None,
                liveness_probe: None,
                last_check: Arc::default(),
                taken_ports: Vec::new(),
                run_spec: None,
            };
            inner.spawner.spawn(Box::pin(actor.run(crx, drx)));
        }
        Ok(ServiceManager { inner })
    }

    /// The project.
    pub fn project(&self) -> &Arc<Project> {
        &self.inner.project
    }

    /// Where the services run (the registry the manager keeps) and how they
    /// reach each other: `${svc.ip}` answers and `harness env`.
    pub fn placement(&self) -> &Placement {
        &self.inner.placement
    }

    /// Registers (or replaces) the executor of a target kind.
    pub fn register_executor(&self, kind: ServiceKind, executor: SharedExecutor) {
        self.inner
            .executors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind, executor);
    }

    fn names(&self, services: &[ServiceName]) -> Result<Vec<&str>, ManagerError> {
        services
            .iter()
            .map(|s| {
                self.inner
                    .slots
                    .get(s)
                    .map(|slot| slot.name.as_str())
                    .ok_or_else(|| ManagerError::UnknownService(s.to_string()))
            })
            .collect()
    }

    fn send(&self, service: &ServiceName, msg: Msg) {
        let slot = &self.inner.slots[service];
        slot.view().requests_sent += 1;
        if let Some(tx) = self.inner.control.get(service) {
            // Unbounded, and its actor lives as long as the manager: cannot fail.
            let _ = tx.try_send(msg);
        }
    }

    /// Starts these services and everything they depend on, as parallel as the
    /// graph allows: each starts the moment its own dependencies hold their
    /// conditions. Services already running are left alone. Returns at once;
    /// use [`wait_ready`](Self::wait_ready) or [`subscribe`](Self::subscribe) to follow.
    pub fn start(&self, services: &[ServiceName]) -> Result<(), ManagerError> {
        let names = self.names(services)?;
        for name in self.inner.project.graph().with_dependencies(&names) {
            self.send(&name, Msg::Start);
        }
        Ok(())
    }

    /// Starts every service of the project.
    pub fn start_all(&self) -> Result<(), ManagerError> {
        let all: Vec<ServiceName> = self.inner.slots.keys().cloned().collect();
        self.start(&all)
    }

    /// Waits until every one of these services is ready (healthy if it has a
    /// readiness check, running if not, completed for a job). Fails at once
    /// when one fails or is stopped, or has been restarted
    /// [`WAIT_GIVES_UP_AFTER`] times in a row (a crash loop: the service goes
    /// on restarting, the wait ends), and when `timeout` passes, naming the
    /// service and why.
    pub async fn wait_ready(
        &self,
        services: &[ServiceName],
        timeout: Duration,
    ) -> Result<(), ManagerError> {
        self.names(services)?;
        let deadline = Instant::now() + timeout;
        loop {
            let listener = self.inner.changed.listen();
            let mut all_ready = true;
            for name in services {
                let slot = &self.inner.slots[name];
                let v = slot.view();
                if v.lc.is_ready() {
                    continue;
                }
                all_ready = false;
                let settled = v.requests_done == v.requests_sent;
                if settled && v.lc.is_given_up() {
                    return Err(ManagerError::NotReady {
                        service: name.clone(),
                        reason: v.lc.why_not_ready(Instant::now()),
                    });
                }
                // Restarted this often in a row without a stable run: it keeps
                // trying (its policy says so), but waiting for it is over.
                if settled
                    && matches!(v.lc.phase, Phase::Restarting { attempt, .. } if attempt >= WAIT_GIVES_UP_AFTER)
                {
                    return Err(ManagerError::NotReady {
                        service: name.clone(),
                        reason: format!(
                            "it keeps failing ({}); it is still restarted per its policy",
                            v.lc.why_not_ready(Instant::now())
                        ),
                    });
                }
            }
            if all_ready {
                return Ok(());
            }
            let timer = async {
                async_io::Timer::at(deadline).await;
                false
            };
            let woke = async {
                listener.await;
                true
            };
            if !futures_lite::future::or(woke, timer).await {
                let now = Instant::now();
                let (service, state) = services
                    .iter()
                    .map(|n| (n, self.inner.slots[n].view().lc.clone()))
                    .find(|(_, lc)| !lc.is_ready())
                    .map(|(n, lc)| (n.clone(), lc.why_not_ready(now)))
                    .unwrap_or_else(|| (services[0].clone(), "pending".to_owned()));
                return Err(ManagerError::NotReady {
                    service,
                    reason: format!(
                        "not ready within {}: {state}",
                        harness_core::duration::format_duration(timeout)
                    ),
                });
            }
        }
    }

    /// Stops these services and everything that depends on them, dependents
    /// first: a service is stopped once all its dependents are. Each gets its
    /// own signal and grace period, to its whole process group. Returns once
    /// all of them are stopped.
    pub async fn stop(&self, services: &[ServiceName]) -> Result<(), ManagerError> {
        let names = self.names(services)?;
        let set = self.inner.project.graph().with_dependents(&names);
        self.stop_set(set).await;
        Ok(())
    }

    /// Stops every service, dependents first.
    pub async fn stop_all(&self) {
        let all = self.inner.project.graph().stop_order();
        self.stop_set(all).await;
    }

    /// Stops exactly the services of `set`, each once those of its dependents
    /// that are in the set are down; returns once all of them are stopped.
    pub(crate) async fn stop_set(&self, set: Vec<ServiceName>) {
        let graph = self.inner.project.graph();
        let mut requested: BTreeMap<ServiceName, bool> =
            set.iter().map(|s| (s.clone(), false)).collect();
        let done = |name: &ServiceName| {
            let v = self.inner.slots[name].view();
            v.requests_done == v.requests_sent && !v.lc.is_alive()
        };
        loop {
            let listener = self.inner.changed.listen();
            let mut all_done = true;
            for name in &set {
                if requested[name] {
                    if !done(name) {
                        all_done = false;
                    }
                    continue;
                }
                all_done = false;
                let dependents_done = graph
                    .dependents(name.as_str())
                    .into_iter()
                    .filter(|d| requested.contains_key(d.as_str()))
                    .all(|d| requested[d.as_str()] && done(d));
                if dependents_done {
                    requested.insert(name.clone(), true);
                    self.send(name, Msg::Stop);
                }
            }
            if all_done {
                return;
            }
            listener.await;
        }
    }

    /// True when the service runs or is on its way to (waiting for its
    /// dependencies, or restarting): what a restart starts again.
    pub(crate) fn is_active(&self, service: &ServiceName) -> bool {
        self.inner.slots.get(service).is_some_and(|slot| {
            let v = slot.view();
            v.lc.is_alive()
                || matches!(v.lc.phase, Phase::Waiting { .. } | Phase::Restarting { .. })
        })
    }

    /// Restarts these services: stops them and their dependents (dependents
    /// first), then starts them again together with the dependents that were running.
    pub async fn restart(&self, services: &[ServiceName]) -> Result<(), ManagerError> {
        let names = self.names(services)?;
        let set = self.inner.project.graph().with_dependents(&names);
        let mut again: Vec<ServiceName> = services.to_vec();
        again.extend(set.iter().filter(|s| self.is_active(s)).cloned());
        self.stop_set(set).await;
        again.sort();
        again.dedup();
        self.start(&again)
    }

    /// One status row per service, in name order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        let now = Instant::now();
        self.inner
            .slots
            .values()
            .map(|slot| {
                let v = slot.view();
                let record = v.instance.as_ref().map(|i| i.record());
                ServiceStatus {
                    name: slot.name.clone(),
                    kind: slot.spec.kind(),
                    host: record
                        .as_ref()
                        .map(|r| r.host.clone())
                        .or_else(|| slot.spec.host().map(str::to_owned))
                        .unwrap_or_else(|| "local".to_owned()),
                    state: v.lc.state(now),
                    health: v.health,
                    pid: v.instance.as_ref().and_then(|i| i.pid()),
                    container_id: record.and_then(|r| r.container_id),
                    restarts: v.lc.restarts,
                    exit_code: v.exit_code,
                    started_at_ms: v.started_at_ms,
                    last_exit: v.last_exit.clone(),
                    version: None,
                }
            })
            .collect()
    }

    /// The state of one service.
    pub fn state(&self, service: &str) -> Option<ServiceState> {
        self.inner
            .slots
            .get(service)
            .map(|s| s.view().lc.state(Instant::now()))
    }

    /// A new subscriber to every event from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.inner._keep_open.activate_cloned(),
        }
    }

    /// What to persist so that a new manager can re-adopt the running services.
    pub fn records(&self) -> Vec<ServiceRecord> {
        self.inner
            .slots
            .values()
            .filter_map(|slot| {
                let v = slot.view();
                let inst = v.instance.as_ref()?;
                if !v.lc.is_alive() {
                    return None;
                }
                Some(ServiceRecord {
                    service: slot.name.clone(),
                    restarts: v.lc.restarts,
                    started_at_ms: v.started_at_ms,
                    instance: inst.record(),
                })
            })
            .collect()
    }

    /// The services asked to run that have no process now: waiting for their
    /// next restart, for a dependency, or for their spawn. Persist them next
    /// to [`records`](Self::records) so a new manager [`resume`](Self::resume)s them.
    pub fn pending_starts(&self) -> Vec<PendingStart> {
        self.inner
            .slots
            .values()
            .filter_map(|slot| {
                let v = slot.view();
                let pending = match v.lc.phase {
                    Phase::Restarting { .. } | Phase::Waiting { .. } => true,
                    Phase::Starting => v.instance.is_none(),
                    _ => false,
                };
                pending.then(|| PendingStart {
                    service: slot.name.clone(),
                    restarts: v.lc.restarts,
                })
            })
            .collect()
    }

    /// Starts services a previous manager had been asked to run and had not
    /// running when it ended (see [`pending_starts`](Self::pending_starts)),
    /// keeping their restart counts. A service that runs already is left alone.
    pub fn resume(&self, pending: Vec<PendingStart>) -> Result<(), ManagerError> {
        let names: Vec<ServiceName> = pending.iter().map(|p| p.service.clone()).collect();
        self.names(&names)?;
        for p in pending {
            self.send(
                &p.service.clone(),
                Msg::Resume {
                    restarts: p.restarts,
                },
            );
        }
        Ok(())
    }

    /// Re-adopts services a previous manager started, from their records.
    /// A service that cannot be re-adopted (it ended meanwhile, its pid was
    /// reused) is restarted if its restart policy says so, else marked failed;
    /// the errors are returned. Returns once every adopted service shows as
    /// it runs (its state and pid), so a status read next sees them.
    pub async fn adopt(&self, records: Vec<ServiceRecord>) -> Vec<ManagerError> {
        let mut errors = Vec::new();
        let mut adopted = Vec::new();
        for rec in records {
            let Some(slot) = self.inner.slots.get(&rec.service).cloned() else {
                errors.push(ManagerError::UnknownService(rec.service.to_string()));
                continue;
            };
            let executor = self.inner.executor(rec.instance.kind);
            let attached = match executor {
                None => Err(format!("no executor for kind {}", rec.instance.kind)),
                Some(ex) => {
                    // The same address as before, so the container is recognised.
                    let address = self
                        .inner
                        .placement
                        .reserve_address(&slot.spec)
                        .await
                        .unwrap_or(None);
                    let (spec, ctx) =
                        self.inner
                            .prepare(&slot, None, address, 0)
                            .unwrap_or_else(|_| {
                                ((*slot.spec).clone(), self.inner.start_context(&slot, 0))
                            });
                    ex.attach(&spec, &rec.instance, &ctx)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            match attached {
                Ok(launched) => {
                    self.send(
                        &rec.service,
                        Msg::Adopt {
                            launched,
                            restarts: rec.restarts,
                            started_at_ms: rec.started_at_ms,
                        },
                    );
                    // Waited for below: this request, not later ones.
                    let sent = slot.view().requests_sent;
                    adopted.push((slot, sent));
                }
                Err(reason) => {
                    let restart = slot.view().lc.policy.restart != harness_config::RestartMode::No;
                    if restart {
                        self.send(&rec.service, Msg::Start);
                    } else {
                        self.send(
                            &rec.service,
                            Msg::Lost(format!("lost while harness was down: {reason}")),
                        );
                    }
                    errors.push(ManagerError::Adopt {
                        service: rec.service.to_string(),
                        reason,
                    });
                }
            }
        }
        // Each actor handles its adoption at once (nothing in it waits long).
        loop {
            let listener = self.inner.changed.listen();
            let settled = adopted
                .iter()
                .all(|(slot, sent)| slot.view().requests_done >= *sent);
            if settled {
                break;
            }
            listener.await;
        }
        errors
    }
}

impl Drop for Inner {
    /// The last manager handle is gone: close every actor's inbox so the actors end,
    /// and with them the checks and output readers of their services. The services
    /// themselves keep running (a new manager may adopt them).
    fn drop(&mut self) {
        for tx in self.control.values() {
            tx.close();
        }
        for tx in self.data.values() {
            tx.close();
        }
    }
}

impl Inner {
    fn executor(&self, kind: ServiceKind) -> Option<SharedExecutor> {
        self.executors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
            .cloned()
    }

    fn publish(&self, ev: ManagerEvent) {
        // With overflow on, a full buffer drops the oldest event; with no
        // subscriber the event goes nowhere. Neither is an error.
        let _ = self.events.try_broadcast(ev);
    }

    /// Where `slot`'s service runs when its executor does not say: where the
    /// registry has it, else where its configuration puts it.
    fn location_of(&self, slot: &Slot) -> Location {
        self.placement
            .entry(slot.name.as_str())
            .map(|e| e.location)
            .unwrap_or(Location::LocalHost)
    }

    /// The expanded spec and the start context of a run of `slot`'s service at `at`.
    fn prepare(
        &self,
        slot: &Slot,
        at: Option<Location>,
        address: Option<crate::executor::ReservedAddress>,
        generation: u64,
    ) -> Result<(ServiceSpec, StartContext), String> {
        let at = at.unwrap_or_else(|| self.location_of(slot));
        let spec = expand_spec(&self.placement, &slot.spec, &at)?;
        let env = self
            .placement
            .environment(slot.name.as_str(), Some(at))
            .map_err(|e| format!("cannot work out the environment: {e}"))?;
        let mut ctx = self.start_context(slot, generation);
        ctx.env = env;
        ctx.address = address;
        Ok((spec, ctx))
    }

    /// A start context whose environment is the declared one, unexpanded
    /// (see [`Inner::prepare`] for the real one).
    fn start_context(&self, slot: &Slot, generation: u64) -> StartContext {
        let mut env = slot.spec.env.clone();
        env.insert("HARNESS_PROJECT".into(), self.project.name.to_string());
        env.insert("HARNESS_SERVICE".into(), slot.name.to_string());
        StartContext {
            project: self.project.name.clone(),
            env,
            log_dir: self.log_dir.as_ref().map(|d| d.join(slot.name.as_str())),
            generation,
            spawner: self.spawner.clone(),
            address: None,
        }
    }

    fn tell(&self, service: &ServiceName, msg: Msg) {
        if let Some(tx) = self.control.get(service) {
            let _ = tx.try_send(msg);
        }
    }
}

/// Expands the reference templates of `t` as seen by service `me` running at
/// `at` (a service referring to itself is seen from this host, where its
/// checks run from). A reference that cannot be answered fails with the reason.
fn expand_at(
    placement: &Placement,
    me: &ServiceName,
    at: &Location,
    t: &str,
) -> Result<String, String> {
    let mut why = None;
    harness_config::template::expand_with_endpoints(t, |svc| {
        let from = if svc == me { &Location::LocalHost } else { at };
        placement
            .endpoint(from, svc.as_str())
            .map_err(|e| why = Some(e.to_string()))
            .ok()
    })
    .map_err(|e| {
        format!(
            "cannot expand `{t}`: {}",
            why.unwrap_or_else(|| e.to_string())
        )
    })
}

/// The spec with every reference template expanded for service `spec` running
/// at `at`: its command and exec checks from there, its HTTP and TCP checks
/// from this host (where they run). Its environment is
/// [`Placement::environment`], not `spec.env`.
fn expand_spec(
    placement: &Placement,
    spec: &ServiceSpec,
    at: &Location,
) -> Result<ServiceSpec, String> {
    let me = spec.name.clone();
    let expand = |t: &str| expand_at(placement, &me, at, t);
    let from_here = |t: &str| expand_at(placement, &me, &Location::LocalHost, t);
    let mut out = spec.clone();
    match &mut out.target {
        Target::Process { args, .. } | Target::Remote { args, .. } => {
            for a in args.iter_mut() {
                *a = expand(a)?;
            }
        }
        Target::Docker(d) => {
            for a in d
                .command
                .iter_mut()
                .flatten()
                .chain(d.entrypoint.iter_mut().flatten())
            {
                *a = expand(a)?;
            }
        }
        Target::Package { .. } => {}
    }
    for probe in [&mut out.readiness, &mut out.liveness]
        .into_iter()
        .flatten()
    {
        match &mut probe.check {
            Check::Exec { command, args } => {
                *command = expand(command)?;
                for a in args.iter_mut() {
                    *a = expand(a)?;
                }
            }
            Check::Http { url, .. } => *url = from_here(url)?,
            Check::Tcp { host: Some(h), .. } => *h = from_here(h)?,
            Check::Tcp { host: None, .. } | Check::LogLine { .. } => {}
        }
    }
    Ok(out)
}

/// Whether a dependency's condition holds now, can never hold, or may still hold.
enum Verdictish {
    Holds,
    Never(String),
    NotYet,
}

fn condition_status(view: &View, edge_index: usize, condition: &Condition) -> Verdictish {
    let lc = &view.lc;
    let holds = match condition {
        Condition::Started => lc.is_started(),
        Condition::Healthy => lc.is_ready(),
        Condition::CompletedSuccessfully => matches!(lc.phase, Phase::Completed),
        Condition::LogReady { .. } => view.log_matched.get(edge_index).copied().unwrap_or(false),
    };
    if holds {
        return Verdictish::Holds;
    }
    match &lc.phase {
        Phase::Failed { reason } => Verdictish::Never(reason.clone()),
        Phase::Stopped => Verdictish::Never("it was stopped".into()),
        Phase::Stopping {
            then: AfterStop::Fail { reason },
        } => Verdictish::Never(reason.clone()),
        Phase::Stopping {
            then: AfterStop::Stop,
        } => Verdictish::Never("it is being stopped".into()),
        Phase::Completed => Verdictish::Never(format!(
            "it exited ({}) without meeting the condition `{condition}`",
            lc.last_exit
                .map(|s| s.to_string())
                .unwrap_or_else(|| "completed".into())
        )),
        _ => Verdictish::NotYet,
    }
}

/// The task that drives one service.
struct Actor {
    inner: Weak<Inner>,
    slot: Arc<Slot>,
    /// Dropping these cancels the readiness and liveness checks of the current run.
    readiness_probe: Option<async_channel::Sender<()>>,
    liveness_probe: Option<async_channel::Sender<()>>,
    /// What the readiness check of the current run said last.
    last_check: Arc<Mutex<Option<String>>>,
    /// Ports the current run's checks use that another process held before it
    /// started, and why that matters.
    taken_ports: Vec<(u16, String)>,
    /// The expanded spec of the current run.
    run_spec: Option<Arc<ServiceSpec>>,
}

enum Incoming {
    Control(Msg),
    Data(DataMsg),
}

impl Actor {
    async fn run(
        mut self,
        control: async_channel::Receiver<Msg>,
        data: async_channel::Receiver<DataMsg>,
    ) {
        loop {
            let next = futures_lite::future::or(
                async { control.recv().await.ok().map(Incoming::Control) },
                async { data.recv().await.ok().map(Incoming::Data) },
            )
            .await;
            let Some(incoming) = next else { return };
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            match incoming {
                Incoming::Control(msg) => self.on_control(&inner, msg).await,
                Incoming::Data(msg) => self.on_data(&inner, msg).await,
            }
        }
    }

    fn generation(&self) -> u64 {
        self.slot.view().lc.generation
    }

    async fn on_control(&mut self, inner: &Arc<Inner>, msg: Msg) {
        match msg {
            Msg::Start => {
                let (unmet, failed) = self.unmet(inner);
                self.apply(inner, Event::StartRequested { unmet }).await;
                if let Some((dep, reason)) = failed {
                    self.apply(inner, Event::DependencyFailed { dep, reason })
                        .await;
                }
                self.request_done(inner);
            }
            Msg::Stop => {
                self.apply(inner, Event::StopRequested).await;
                self.request_done(inner);
            }
            Msg::Resume { restarts } => {
                if self.slot.view().lc.is_given_up() {
                    let (unmet, failed) = self.unmet(inner);
                    self.apply(inner, Event::StartRequested { unmet }).await;
                    self.slot.view().lc.restarts = restarts;
                    if let Some((dep, reason)) = failed {
                        self.apply(inner, Event::DependencyFailed { dep, reason })
                            .await;
                    }
                }
                self.request_done(inner);
            }
            Msg::Lost(reason) => {
                self.apply(inner, Event::Lost(reason)).await;
                self.request_done(inner);
            }
            Msg::Adopt {
                launched,
                restarts,
                started_at_ms,
            } => {
                let alive = self.slot.view().lc.is_alive();
                if alive {
                    // Already running under this manager: keep what runs.
                    self.request_done(inner);
                    return;
                }
                let at = launched
                    .instance
                    .location()
                    .unwrap_or_else(|| inner.location_of(&self.slot));
                let spec = expand_spec(&inner.placement, &self.slot.spec, &at)
                    .map(Arc::new)
                    .unwrap_or_else(|_| self.slot.spec.clone());
                // Recorded before `adopt` returns and before dependents hear.
                self.record_launch(launched.instance.clone()).await;
                self.run_spec = Some(spec);
                {
                    let mut v = self.slot.view();
                    v.instance = Some(launched.instance.clone());
                    v.started_at_ms = started_at_ms;
                    v.lc.restarts = restarts;
                    v.log_matched.iter_mut().for_each(|m| *m = false);
                }
                let running_for = started_at_ms
                    .map(|t| Duration::from_millis(now_ms().saturating_sub(t)))
                    .unwrap_or_default();
                self.apply(inner, Event::Adopted { running_for }).await;
                let run = self.generation();
                self.watch(inner, run, launched.events);
                self.request_done(inner);
            }
            Msg::Event { run, event } => {
                if run.is_none_or(|g| g == self.generation()) {
                    let event = match event {
                        Event::StartupTimeout { .. } => Event::StartupTimeout {
                            last_check: self.last_readiness_check(),
                        },
                        other => other,
                    };
                    self.apply(inner, event).await;
                }
            }
            Msg::Probe {
                run,
                readiness,
                verdict,
            } => {
                let (alive, unreachable) = {
                    let v = self.slot.view();
                    (v.lc.is_alive(), v.lc.is_unreachable())
                };
                if run != self.generation() || !alive {
                    return;
                }
                if unreachable {
                    // A passing check shows the instance can be seen again (the
                    // checks restart afresh); a failing one says nothing about it.
                    if verdict.passed {
                        self.apply(inner, Event::Reachable).await;
                    }
                    return;
                }
                if readiness {
                    let health = if verdict.passed {
                        Health::Healthy
                    } else {
                        Health::Unhealthy
                    };
                    self.slot.view().health = health;
                    inner.publish(ManagerEvent::Health {
                        service: self.slot.name.clone(),
                        health,
                        detail: verdict.detail,
                    });
                    let ev = if verdict.passed {
                        Event::ReadinessPassed
                    } else {
                        Event::ReadinessFailed
                    };
                    self.apply(inner, ev).await;
                } else if !verdict.passed {
                    inner.publish(ManagerEvent::Health {
                        service: self.slot.name.clone(),
                        health: Health::Unhealthy,
                        detail: format!("liveness: {}", verdict.detail),
                    });
                    self.apply(inner, Event::LivenessFailed).await;
                }
            }
        }
    }

    fn request_done(&self, inner: &Inner) {
        self.slot.view().requests_done += 1;
        // Dependents that looked while this request was pending rely on hearing
        // about it, even when it changed nothing.
        self.tell_dependents(inner);
        inner.changed.notify(usize::MAX);
    }

    async fn on_data(&mut self, inner: &Arc<Inner>, msg: DataMsg) {
        match msg {
            DataMsg::Output { run, line, at } => {
                if run == self.generation() {
                    self.match_log_lines(inner, &line).await;
                }
                inner.publish(ManagerEvent::Output {
                    service: self.slot.name.clone(),
                    line,
                    timestamp: at,
                });
            }
            DataMsg::Dropped => {}
            DataMsg::Reachability { run, unreachable } => {
                if run != self.generation() {
                    return;
                }
                let event = match unreachable {
                    Some(reason) => Event::Unreachable(reason),
                    None => Event::Reachable,
                };
                self.apply(inner, event).await;
            }
            DataMsg::Exited { run, status } => {
                if run != self.generation() {
                    return;
                }
                let (stopping, instance) = {
                    let mut v = self.slot.view();
                    v.exit_code = status.code();
                    let at_ms = now_ms();
                    let ran_ms = v.started_at_ms.map(|t| at_ms.saturating_sub(t));
                    let message =
                        crate::lifecycle::describe_exit(status, ran_ms.map(Duration::from_millis));
                    v.last_exit = Some(LastExit {
                        status,
                        at_ms,
                        ran_ms,
                        message,
                    });
                    (
                        matches!(v.lc.phase, Phase::Stopping { .. }),
                        v.instance.clone(),
                    )
                };
                if stopping {
                    // The stop in progress reports completion once the whole group is gone.
                    return;
                }
                if let Some(inst) = instance {
                    // Whatever the main process left behind in its group goes with it.
                    inner.spawner.spawn(Box::pin(async move {
                        let _ = inst.stop(harness_core::Signal::KILL, Duration::ZERO).await;
                    }));
                }
                self.slot.view().instance = None;
                self.apply(inner, Event::Exited(status)).await;
            }
        }
    }

    /// Log-line readiness of this service and log-line conditions of its dependents.
    async fn match_log_lines(&mut self, inner: &Arc<Inner>, line: &OutputLine) {
        let text = line.text();
        let mut newly = Vec::new();
        {
            let mut v = self.slot.view();
            for (i, edge) in self.slot.dependents.iter().enumerate() {
                if let Condition::LogReady { pattern } = &edge.condition
                    && !v.log_matched[i]
                    && pattern.is_match(&text)
                {
                    v.log_matched[i] = true;
                    newly.push(edge.dependent.clone());
                }
            }
        }
        for d in newly {
            inner.tell(
                &d,
                Msg::Event {
                    run: None,
                    event: Event::DependencyReady(self.slot.name.clone()),
                },
            );
        }
        let readiness_pattern = self.run_spec.as_ref().and_then(|s| match &s.readiness {
            Some(p) => match &p.check {
                Check::LogLine { pattern } => Some(pattern.clone()),
                _ => None,
            },
            None => None,
        });
        if let Some(pattern) = readiness_pattern {
            let waiting = matches!(self.slot.view().lc.phase, Phase::Running);
            if waiting && pattern.is_match(&text) {
                self.slot.view().health = Health::Healthy;
                inner.publish(ManagerEvent::Health {
                    service: self.slot.name.clone(),
                    health: Health::Healthy,
                    detail: format!("output matched /{}/", pattern.as_str()),
                });
                self.apply(inner, Event::ReadinessPassed).await;
            }
        }
    }

    /// Dependencies whose condition does not hold now, and one that can never
    /// hold (a dependency with a request still in flight will report when done).
    fn unmet(&self, inner: &Inner) -> (Vec<ServiceName>, Option<(ServiceName, String)>) {
        let mut unmet = Vec::new();
        let mut failed = None;
        for dep in inner.project.graph().dependencies(self.slot.name.as_str()) {
            let Some(dslot) = inner.slots.get(&dep.service) else {
                continue;
            };
            let idx = dslot
                .dependents
                .iter()
                .position(|e| e.dependent == self.slot.name && e.condition == dep.condition)
                .unwrap_or(usize::MAX);
            let v = dslot.view();
            match condition_status(&v, idx, &dep.condition) {
                Verdictish::Holds => continue,
                Verdictish::Never(reason)
                    if failed.is_none() && v.requests_done == v.requests_sent =>
                {
                    failed = Some((dep.service.clone(), reason));
                }
                _ => {}
            }
            unmet.push(dep.service.clone());
        }
        (unmet, failed)
    }

    /// Runs `first` through the reducer and carries out the effects, feeding
    /// executor results back until nothing is left.
    async fn apply(&mut self, inner: &Arc<Inner>, first: Event) {
        let mut queue = VecDeque::from([first]);
        while let Some(event) = queue.pop_front() {
            let now = Instant::now();
            let (fx, run) = {
                let mut v = self.slot.view();
                let (next, fx) = reduce(&v.lc, event, now);
                v.lc = next;
                (fx, v.lc.generation)
            };
            let mut spawn = None;
            for effect in fx {
                match effect {
                    Effect::Notify(state) => self.notify(inner, state),
                    Effect::Spawn { generation } => spawn = Some(generation),
                    Effect::StartReadiness => self.start_probe(inner, run, true),
                    Effect::StartLiveness => self.start_probe(inner, run, false),
                    Effect::StopProbes => {
                        self.readiness_probe = None;
                        self.liveness_probe = None;
                    }
                    Effect::Report(message) => self.report(inner, message).await,
                    Effect::StopProcess { signal, grace } => {
                        let instance = self.slot.view().instance.clone();
                        match instance {
                            Some(inst) => {
                                let tx = inner.control[&self.slot.name].clone();
                                inner.spawner.spawn(Box::pin(async move {
                                    // A failed stop still ends the stop: the group is
                                    // signalled with SIGKILL by then, or already gone.
                                    let _ = inst.stop(signal, grace).await;
                                    let _ = tx
                                        .send(Msg::Event {
                                            run: Some(run),
                                            event: Event::StopCompleted,
                                        })
                                        .await;
                                }));
                            }
                            None => queue.push_back(Event::StopCompleted),
                        }
                    }
                    Effect::ScheduleRestart { after } => {
                        self.timer(inner, run, after, Event::BackoffElapsed)
                    }
                    Effect::ScheduleTimeout { after } => self.timer(
                        inner,
                        run,
                        after,
                        Event::StartupTimeout { last_check: None },
                    ),
                }
            }
            if let Some(generation) = spawn {
                match self.spawn(inner, generation).await {
                    Ok(()) => queue.push_back(Event::Spawned),
                    Err(e) => queue.push_back(Event::SpawnFailed(e)),
                }
            }
            if !self.slot.view().lc.is_alive() {
                self.slot.view().instance = None;
            }
        }
    }

    fn timer(&self, inner: &Inner, run: u64, after: Duration, event: Event) {
        let tx = inner.control[&self.slot.name].clone();
        inner.spawner.spawn(Box::pin(async move {
            async_io::Timer::after(after).await;
            let _ = tx
                .send(Msg::Event {
                    run: Some(run),
                    event,
                })
                .await;
        }));
    }

    fn notify(&self, inner: &Inner, state: ServiceState) {
        {
            let mut v = self.slot.view();
            if !matches!(
                state,
                ServiceState::Running | ServiceState::Healthy | ServiceState::Unhealthy
            ) {
                v.health = Health::Unknown;
            }
        }
        let _ = self
            .slot
            .registry
            .try_send(RegistryOp::State(state.clone()));
        inner.publish(ManagerEvent::State {
            service: self.slot.name.clone(),
            state,
        });
        self.tell_dependents(inner);
        inner.changed.notify(usize::MAX);
    }

    /// Tells dependents whether their condition on this service holds now or never will.
    fn tell_dependents(&self, inner: &Inner) {
        for (i, edge) in self.slot.dependents.iter().enumerate() {
            let status = condition_status(&self.slot.view(), i, &edge.condition);
            let event = match status {
                Verdictish::Holds => Event::DependencyReady(self.slot.name.clone()),
                Verdictish::Never(reason) => Event::DependencyFailed {
                    dep: self.slot.name.clone(),
                    reason,
                },
                Verdictish::NotYet => continue,
            };
            inner.tell(&edge.dependent, Msg::Event { run: None, event });
        }
    }

    async fn spawn(&mut self, inner: &Arc<Inner>, generation: u64) -> Result<(), String> {
        let kind = self.slot.spec.kind();
        let executor = inner
            .executor(kind)
            .ok_or_else(|| format!("no executor registered for {kind} services"))?;
        let address = inner.placement.reserve_address(&self.slot.spec).await?;
        let mut ctx = inner.start_context(&self.slot, generation);
        ctx.address = address;
        let at = executor
            .place(&self.slot.spec, &ctx)
            .await
            .map_err(|e| e.to_string())?;
        let (spec, ctx) = inner.prepare(&self.slot, at, address, generation)?;
        let spec = Arc::new(spec);
        // A port its checks use that another process holds already: those
        // checks could not tell the service from that process.
        self.taken_ports = if kind == ServiceKind::Process {
            let s = spec.clone();
            blocking::unblock(move || crate::port_owner::taken_before_start(&s)).await
        } else {
            Vec::new()
        };
        for (_, why) in self.taken_ports.clone() {
            self.report(inner, why).await;
        }
        let launched = executor.start(&spec, &ctx).await.map_err(|e| match e {
            // The service is known here: say only why.
            crate::executor::ExecutorError::Start { source, .. } => source.to_string(),
            other => other.to_string(),
        })?;
        // Recorded before anyone hears it runs: a dependent resolves it from the registry.
        self.record_launch(launched.instance.clone()).await;
        self.run_spec = Some(spec);
        {
            let mut v = self.slot.view();
            v.instance = Some(launched.instance.clone());
            v.started_at_ms = Some(now_ms());
            v.exit_code = None;
            v.log_matched.iter_mut().for_each(|m| *m = false);
        }
        self.watch(inner, generation, launched.events);
        Ok(())
    }

    /// Records in the registry where the service now runs, and waits until it is.
    async fn record_launch(&self, instance: Arc<dyn ServiceInstance>) {
        let (done, recorded) = async_channel::bounded(1);
        let op = RegistryOp::Launched {
            spec: self.slot.spec.clone(),
            instance,
            done,
        };
        if self.slot.registry.try_send(op).is_ok() {
            let _ = recorded.recv().await;
        }
    }

    /// Forwards an instance's events to this actor, tagged with its run.
    fn watch(&self, inner: &Inner, run: u64, mut events: crate::executor::InstanceEvents) {
        let tx = inner.data[&self.slot.name].clone();
        inner.spawner.spawn(Box::pin(async move {
            while let Some(ev) = events.next().await {
                let msg = match ev {
                    InstanceEvent::Started { .. } => continue,
                    InstanceEvent::Output(line) => DataMsg::Output {
                        run,
                        line,
                        at: SystemTime::now(),
                    },
                    InstanceEvent::Dropped { .. } => DataMsg::Dropped,
                    InstanceEvent::Unreachable { reason } => DataMsg::Reachability {
                        run,
                        unreachable: Some(reason),
                    },
                    InstanceEvent::Reachable => DataMsg::Reachability {
                        run,
                        unreachable: None,
                    },
                    InstanceEvent::Exited(status) => {
                        let _ = tx.send(DataMsg::Exited { run, status }).await;
                        return;
                    }
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            let _ = tx
                .send(DataMsg::Exited {
                    run,
                    status: ExitStatus::Unknown,
                })
                .await;
        }));
    }

    /// What the last readiness check of this run said, for a startup timeout.
    fn last_readiness_check(&self) -> Option<String> {
        let log_pattern = self.run_spec.as_ref().and_then(|s| match &s.readiness {
            Some(Probe {
                check: Check::LogLine { pattern },
                ..
            }) => Some(pattern.as_str().to_owned()),
            _ => None,
        });
        if let Some(p) = log_pattern {
            return Some(format!("no output line matched /{p}/"));
        }
        self.last_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Says what happened to the service in its log: a line in the
    /// `harness.log` of its log directory (so `harness logs` shows it among
    /// its output, after any daemon restart) and an output event.
    async fn report(&self, inner: &Arc<Inner>, message: String) {
        if let Some(dir) = &inner.log_dir {
            let dir = dir.join(self.slot.name.as_str());
            let line = message.clone();
            let written = blocking::unblock(move || {
                std::fs::create_dir_all(&dir)?;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{LIFECYCLE_LOG_STEM}.log")))?;
                std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes())
            })
            .await;
            if let Err(e) = written {
                inner.publish(ManagerEvent::Warning {
                    service: self.slot.name.clone(),
                    message: format!("cannot write to its {LIFECYCLE_LOG_STEM}.log: {e}"),
                });
            }
        }
        inner.publish(ManagerEvent::Output {
            service: self.slot.name.clone(),
            line: OutputLine {
                stream: harness_core::OutputStream::Harness,
                bytes: message.into_bytes(),
                truncated: false,
            },
            timestamp: SystemTime::now(),
        });
    }

    /// Starts the readiness (`readiness`) or liveness check of run `run`,
    /// replacing one that runs.
    fn start_probe(&mut self, inner: &Arc<Inner>, run: u64, readiness: bool) {
        if readiness {
            self.readiness_probe = None;
            *self.last_check.lock().unwrap_or_else(|p| p.into_inner()) = None;
        } else {
            self.liveness_probe = None;
        }
        let Some(spec) = self.run_spec.clone() else {
            return;
        };
        let Some(instance) = self.slot.view().instance.clone() else {
            return;
        };
        let default_host = inner
            .placement
            .endpoint(&Location::LocalHost, self.slot.name.as_str())
            .map(|e| e.ip.to_string())
            .unwrap_or_else(|_| "127.0.0.1".to_owned());
        let env = CheckEnv {
            instance: instance.clone(),
            default_host,
            tls: inner.tls.clone(),
        };
        {
            let probe = if readiness {
                &spec.readiness
            } else {
                &spec.liveness
            };
            let Some(probe) = probe.clone() else { return };
            if matches!(probe.check, Check::LogLine { .. }) {
                return;
            }
            let (cancel_tx, cancel_rx) = async_channel::bounded::<()>(1);
            if readiness {
                self.readiness_probe = Some(cancel_tx);
            } else {
                self.liveness_probe = Some(cancel_tx);
            }
            let tx = inner.control[&self.slot.name].clone();
            let instance = instance.clone();
            let taken = crate::port_owner::local_port(&probe.check).and_then(|port| {
                self.taken_ports
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map(|(_, why)| why.clone())
            });
            let runner = ProbeRunner {
                probe,
                env: env.clone(),
                last: readiness.then(|| self.last_check.clone()),
                taken,
            };
            inner
                .spawner
                .spawn(Box::pin(runner.run(cancel_rx, move |verdict| {
                    let tx = tx.clone();
                    let instance = instance.clone();
                    async move {
                        // A failing check of an instance that cannot be seen says
                        // nothing about the service: report that instead, and keep
                        // checking (a pass tells it can be seen again).
                        if !verdict.passed
                            && let Some(reason) = instance.unreachable().await
                        {
                            return tx
                                .send(Msg::Event {
                                    run: Some(run),
                                    event: Event::Unreachable(reason),
                                })
                                .await
                                .is_ok();
                        }
                        let stop = !readiness && !verdict.passed;
                        let sent = tx
                            .send(Msg::Probe {
                                run,
                                readiness,
                                verdict,
                            })
                            .await
                            .is_ok();
                        // A liveness failure ends this run's probing: the service is restarted.
                        sent && !stop
                    }
                })));
        }
    }
}
