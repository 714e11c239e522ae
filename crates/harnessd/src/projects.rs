//! The real backend: one [`ServiceManager`] per project, projects loaded
//! from their `services.yaml` files by the daemon itself (ADR 007), and
//! what must survive the daemon persisted atomically in `state.json`.
//!
//! # Requests on one project (ADR 023)
//!
//! Clients send requests concurrently; those that change a project take
//! turns, one at a time per project, in the order the daemon received them:
//!
//! - `up`, `down`, `start`, `stop` and `restart` (and the reload of a changed
//!   configuration an `up` or `start` with files brings) act on their project
//!   only in their turn, and hold it until what they do is done: loaded or
//!   reloaded, started, stopped. Requests on other projects do not wait.
//! - A request with files holds its place while the daemon loads them. A
//!   request naming a project (`down -p demo`, or the CLI's name from the
//!   files) that arrives while an earlier request is loading files that may
//!   be of that project waits for that load, then takes its place after it:
//!   a `down` right after an `up` never answers "no project named …" because
//!   the up is still loading, and it is not undone by that up.
//! - `up --wait` gives its turn back once its services are started, then waits
//!   for their readiness. A later `down` ends that wait at once with a
//!   `conflict` error saying the project was taken down by another request;
//!   so do a `stop` or `restart` of a service it waits for (or of one that
//!   service depends on) and a reload of a changed configuration (its services
//!   then belong to a new manager). An `up` or `start` does not end it.
//! - A request that finds its project gone when its turn comes (a `down` went
//!   first) answers `not_found`; an `up` after a `down` loads and starts the
//!   project again.
//! - `status`, `logs`, `events` and `env` read what is there and never wait
//!   for a turn.
//!
//! No request waits forever: a turn ends with its request (which only stops,
//! starts, loads or reloads: all bounded), a wait for readiness ends at its
//! timeout or by another request, and a client that goes away drops its
//! request, leaving its place in the line.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_lock::Mutex;
use async_trait::async_trait;
use futures_lite::StreamExt;
use harness_config::{LoadOptions, Project, ProjectChanges};
use harness_core::{ProjectName, ServiceKind, ServiceName, ServiceState, SharedSpawner};
use harness_protocol::{
    EnvParams, EnvResult, ErrorBody, ErrorCode, ExecParams, ExecPlan, LogsParams, ProjectRef,
    ProjectStatus, ProjectSummary, ServicesParams, StateDir, StreamItem, UpParams,
};
use service_orchestration::{
    ManagerError, ManagerOptions, Placement, ServiceManager, ServiceRecord, SharedExecutor,
    package::PackageExecutor, remote::RemoteExecutor,
};

use crate::backend::{Backend, BackendResult, ItemSink};
use crate::events::{self, ProjectEvents};
use crate::exec;
use crate::metrics::ServiceStateLabels;
use crate::targets::{ProjectTargets, Targets};
use crate::turns::{Arrival, Ticket, Turns};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-service metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The project.
    pub project: String,
    /// The service.
    pub service: String,
}
use crate::activity::{Activity, watch_manager};
use crate::logs::{self, LogFile, LogQuery, Stamper};
use crate::recovery;

/// How often the persisted state is refreshed (services restart by themselves).
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);
/// Default deadline of `up --wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub use crate::recovery::{PersistedProject, PersistedState};

/// A project a request acts on: its name, its manager and its configuration.
type Resolved = (ProjectName, ServiceManager, Arc<Project>);

struct Entry {
    spec: ProjectRef,
    manager: ServiceManager,
    project: Arc<Project>,
    targets: ProjectTargets,
    /// What happens to its services, for `harness events`, across its managers.
    events: ProjectEvents,
    /// Closed when the entry is dropped (the project was taken down): followers of its
    /// logs and events hold the receiver and end their streams then.
    _alive: async_channel::Sender<()>,
    taken_down: async_channel::Receiver<()>,
}

impl Entry {
    fn new(
        spec: ProjectRef,
        manager: ServiceManager,
        project: Arc<Project>,
        targets: ProjectTargets,
        spawner: SharedSpawner,
    ) -> Self {
        let (alive, taken_down) = async_channel::bounded(1);
        Entry {
            spec,
            events: ProjectEvents::new(project.name.clone(), manager.clone(), spawner),
            manager,
            project,
            targets,
            _alive: alive,
            taken_down,
        }
    }
}

/// The backend of a daemon with service orchestration.
pub struct ManagerBackend {
    state: StateDir,
    spawner: SharedSpawner,
    executors: Vec<(ServiceKind, SharedExecutor)>,
    targets: Targets,
    projects: Mutex<BTreeMap<ProjectName, Entry>>,
    /// Projects in `state.json` that could not be loaded again: kept as they
    /// were so nothing persisted is lost.
    dormant: Mutex<BTreeMap<ProjectName, PersistedProject>>,
    last_written: Mutex<Option<PersistedState>>,
    /// The project references last written to `<state>/projects/`.
    specs_written: Mutex<BTreeMap<ProjectName, ProjectRef>>,
    /// Why the state could not be saved the last time, if it could not.
    save_error: std::sync::Mutex<Option<String>>,
    services_gauge: Family<ServiceStateLabels, Gauge>,
    restarts_gauge: Family<ServiceLabels, Gauge>,
    names: std::sync::Mutex<Vec<ProjectName>>,
    /// Each project's registry, opened once (one writer per file) and shared
    /// by its successive managers.
    registries: Mutex<BTreeMap<ProjectName, service_registry::Registry>>,
    /// What changed since the background task last stamped and persisted.
    activity: Arc<Activity>,
    /// The requests that change projects, one at a time per project.
    turns: Turns,
}

impl std::fmt::Debug for ManagerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBackend")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn err(code: ErrorCode, m: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, m)
}

fn manager_err(e: ManagerError) -> ErrorBody {
    match &e {
        ManagerError::UnknownService(_) => err(ErrorCode::NotFound, e.to_string()),
        ManagerError::NotReady { reason, .. } if reason.starts_with("not ready within") => {
            err(ErrorCode::Timeout, e.to_string())
        }
        ManagerError::NotReady { .. } => err(ErrorCode::ServiceFailed, e.to_string()),
        _ => err(ErrorCode::Internal, e.to_string()),
    }
}

/// Resolves once the project of `signal` is taken down (at once when it is no longer loaded).
async fn until_taken_down(signal: Option<async_channel::Receiver<()>>) {
    if let Some(rx) = signal {
        // Nothing is ever sent: the channel closes when the project's entry is dropped.
        let _ = rx.recv().await;
    }
}

/// Loads a project (blocking), with `spec` trimmed to the variables the
/// files refer to (what is kept to load it again).
fn load_project(spec: &ProjectRef) -> Result<(Project, ProjectRef), ErrorBody> {
    let mut opts = LoadOptions {
        files: spec.files.clone(),
        project_dir: spec.working_dir.clone(),
        project_name: spec.name.as_ref().map(|n| n.to_string()),
        ..LoadOptions::default()
    };
    if opts.files.is_empty() && opts.project_dir.is_none() {
        return Err(err(
            ErrorCode::BadRequest,
            "no configuration files and no working directory to look for services.yaml in",
        ));
    }
    // Relative file names are relative to the client's directory.
    if let Some(dir) = &spec.working_dir {
        opts.files = opts
            .files
            .iter()
            .map(|f| {
                if f.is_relative() {
                    dir.join(f)
                } else {
                    f.clone()
                }
            })
            .collect();
        if !spec.files.is_empty() {
            opts.project_dir = None;
        }
    }
    opts.env = Some(
        spec.env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
    );
    match harness_config::load(&opts) {
        Ok(l) => Ok((l.project, recovery::trim_env(spec, &l.referenced_vars))),
        Err(diags) => Err(err(ErrorCode::ConfigInvalid, diags.render(false))),
    }
}

impl ManagerBackend {
    /// A backend for the daemon of `state`, re-adopting the services in its
    /// `state.json`. Background work runs on `spawner`. Every manager gets
    /// the process executor plus `executors` (e.g. docker, remote), which
    /// replace the default of their kind.
    pub async fn restore(
        state: StateDir,
        spawner: SharedSpawner,
        executors: Vec<(ServiceKind, SharedExecutor)>,
    ) -> Arc<ManagerBackend> {
        let targets = Targets::new(state.root());
        ManagerBackend::restore_with_targets(state, spawner, executors, targets).await
    }

    /// [`ManagerBackend::restore`] with the Docker and node targets set up by
    /// the caller (e.g. with ssh options).
    pub async fn restore_with_targets(
        state: StateDir,
        spawner: SharedSpawner,
        executors: Vec<(ServiceKind, SharedExecutor)>,
        targets: Targets,
    ) -> Arc<ManagerBackend> {
        let backend = Arc::new(ManagerBackend {
            state: state.clone(),
            spawner,
            executors,
            targets,
            projects: Mutex::new(BTreeMap::new()),
            dormant: Mutex::new(BTreeMap::new()),
            last_written: Mutex::new(None),
            specs_written: Mutex::new(BTreeMap::new()),
            save_error: std::sync::Mutex::new(None),
            services_gauge: Family::default(),
            restarts_gauge: Family::default(),
            names: std::sync::Mutex::new(Vec::new()),
            registries: Mutex::new(BTreeMap::new()),
            activity: Arc::default(),
            turns: Turns::default(),
        });
        let dir = state.clone();
        let (persisted, specs, found) = blocking::unblock(move || {
            let (persisted, _) = recovery::read_state(&dir);
            let specs = recovery::read_specs(&dir);
            let found = recovery::scan_processes(&dir.log_dir());
            (persisted, specs, found)
        })
        .await;
        // Every project the state or a kept reference names; the state's
        // entry first (it has the records).
        let mut all: BTreeMap<ProjectName, PersistedProject> = persisted.projects;
        for (name, spec) in specs {
            all.entry(name).or_insert(PersistedProject {
                spec,
                records: Vec::new(),
                pending: Vec::new(),
            });
        }
        for f in &found {
            if !all.keys().any(|n| n.as_str() == f.project) {
                tracing::error!(project = %f.project, service = %f.service, pid = f.identity.pid, "a service of a project this daemon has no reference to runs; it cannot be loaded again and is left as it is");
            }
        }
        for (name, p) in all {
            let spec = p.spec.clone();
            match blocking::unblock(move || load_project(&spec)).await {
                Ok((project, spec)) => {
                    let project = Arc::new(project);
                    match backend.new_manager(project.clone()).await {
                        Ok((manager, targets)) => {
                            let records = recovery::merge_records(
                                &project,
                                p.records.clone(),
                                &found,
                                &targets.containers,
                            );
                            let records = found_on_nodes(&project, records, &targets).await;
                            let errors = manager.adopt(records.clone()).await;
                            for e in errors {
                                tracing::warn!(project = %name, error = %e, "re-adopting");
                            }
                            tracing::info!(project = %name, services = records.len(), "re-adopted project");
                            if let Err(e) = manager.resume(p.pending.clone()) {
                                tracing::warn!(project = %name, error = %e, "resuming services that were to restart");
                            }
                            backend.projects.lock().await.insert(
                                name.clone(),
                                Entry::new(
                                    spec,
                                    manager,
                                    project,
                                    targets,
                                    backend.spawner.clone(),
                                ),
                            );
                        }
                        Err(e) => {
                            tracing::error!(project = %name, error = %e.message, "cannot manage project");
                            backend.dormant.lock().await.insert(name, p);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(project = %name, error = %e.message, "cannot load project again; its services are left as they are");
                    backend.dormant.lock().await.insert(name, p);
                }
            }
        }
        backend.refresh_names().await;
        backend.start_background();
        backend
    }

    /// A manager for `project` with the executors of its targets (Docker,
    /// nodes), recording where its services run in the project's registry.
    /// Running containers are discovered and recorded first, so records
    /// adopted next resolve and attach to them.
    async fn new_manager(
        &self,
        project: Arc<Project>,
    ) -> Result<(ServiceManager, ProjectTargets), ErrorBody> {
        let targets = self.targets.for_project(&project).await;
        let mut opts = ManagerOptions::new(self.spawner.clone());
        opts.log_dir = Some(self.state.log_dir().join(project.name.as_str()));
        opts.registry = Some(self.registry(&project.name).await?);
        opts.topology = Some(topology(&project).await?);
        let manager = ServiceManager::new(project.clone(), opts).map_err(manager_err)?;
        self.spawner.spawn(Box::pin(watch_manager(
            project.name.clone(),
            manager.subscribe(),
            self.activity.clone(),
        )));
        for (kind, executor) in targets.executors.iter().chain(&self.executors) {
            manager.register_executor(*kind, executor.clone());
        }
        for (service, record) in &targets.containers {
            let Some(spec) = project.services.get(service) else {
                continue;
            };
            let placement = manager.placement();
            if let Err(e) = placement
                .record_launch(
                    spec,
                    record.location(),
                    None,
                    harness_core::ServiceState::Running,
                )
                .await
            {
                tracing::warn!(project = %project.name, %service, error = %e, "recording a running container");
            }
        }
        Ok((manager, targets))
    }

    /// The registry of `project`, persisted in the state directory; opened on
    /// first use. A registry file that cannot be used is reported and the
    /// project runs on a registry in memory (its services are unaffected).
    async fn registry(
        &self,
        project: &ProjectName,
    ) -> Result<service_registry::Registry, ErrorBody> {
        let mut registries = self.registries.lock().await;
        if let Some(r) = registries.get(project) {
            return Ok(r.clone());
        }
        // Its directory is made with the state directory (`StateDir::create`).
        let path = registry_path(&self.state, project);
        let registry = match service_registry::Registry::open(&path).await {
            Ok((r, report)) => {
                if report.source == service_registry::LoadSource::Backup {
                    tracing::warn!(project = %project, file = %path.display(), "registry recovered from its backup");
                }
                r
            }
            Err(e) => {
                tracing::warn!(project = %project, file = %path.display(), error = %e, "cannot open the registry; keeping it in memory");
                service_registry::Registry::in_memory()
            }
        };
        registries.insert(project.clone(), registry.clone());
        Ok(registry)
    }

    async fn refresh_names(&self) {
        let names: Vec<ProjectName> = self.projects.lock().await.keys().cloned().collect();
        if let Ok(mut n) = self.names.lock() {
            *n = names;
        }
    }

    /// Stamps the log files that grew and persists the state whenever
    /// something changed (stamps at most every [`logs::POLL_INTERVAL`], the
    /// state at most every [`PERSIST_INTERVAL`]); an idle daemon does nothing.
    fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let activity = self.activity.clone();
        self.spawner.spawn(Box::pin(async move {
            let mut stampers: BTreeMap<ProjectName, (usize, Stamper)> = BTreeMap::new();
            let mut last_persist = std::time::Instant::now();
            let mut persist_due = false;
            // Whatever was written while no daemon ran is stamped now.
            activity.everything();
            loop {
                let listener = activity.listen();
                let changes = activity.take();
                if changes.is_empty() {
                    if persist_due {
                        // A persist held back by the interval is due even without news.
                        let wait = PERSIST_INTERVAL.saturating_sub(last_persist.elapsed());
                        futures_lite::future::or(listener, async {
                            async_io::Timer::after(wait).await;
                        })
                        .await;
                        activity.state();
                    } else {
                        listener.await;
                    }
                    continue;
                }
                drop(listener);
                let Some(b) = weak.upgrade() else { return };
                if changes.all_output || !changes.output.is_empty() {
                    let files: Vec<(ProjectName, Vec<LogFile>)> = {
                        let projects = b.projects.lock().await;
                        projects
                            .iter()
                            .filter(|(n, _)| changes.all_output || changes.output.contains_key(*n))
                            .map(|(n, e)| (n.clone(), b.log_files(n, &e.project, &[])))
                            .collect()
                    };
                    let mut work = std::mem::take(&mut stampers);
                    let now = logs::now_ms();
                    let grown = changes.output;
                    let all = changes.all_output;
                    work = blocking::unblock(move || {
                        for (name, fs) in files {
                            let only = if all { None } else { grown.get(&name) };
                            let entry = work
                                .entry(name)
                                .or_insert_with(|| (fs.len(), Stamper::new(fs.clone())));
                            if entry.0 != fs.len() {
                                *entry = (fs.len(), Stamper::new(fs));
                            }
                            entry.1.tick(now, only);
                        }
                        work
                    })
                    .await;
                    stampers = work;
                    let projects = b.projects.lock().await;
                    stampers.retain(|n, _| projects.contains_key(n));
                }
                if changes.state || persist_due {
                    if last_persist.elapsed() >= PERSIST_INTERVAL {
                        last_persist = std::time::Instant::now();
                        persist_due = false;
                        b.update_gauges().await;
                        // A failure is kept as a warning and retried.
                        if b.persist_if_changed().await.is_err() {
                            persist_due = true;
                        }
                    } else {
                        persist_due = true;
                    }
                }
                drop(b);
                // Changes of the next moment are handled together.
                async_io::Timer::after(logs::POLL_INTERVAL).await;
            }
        }));
    }

    async fn update_gauges(&self) {
        let projects = self.projects.lock().await;
        self.services_gauge.clear();
        self.restarts_gauge.clear();
        for (name, e) in projects.iter() {
            for s in e.manager.status() {
                self.services_gauge
                    .get_or_create(&ServiceStateLabels {
                        project: name.to_string(),
                        state: s.state.label().to_owned(),
                    })
                    .inc();
                self.restarts_gauge
                    .get_or_create(&ServiceLabels {
                        project: name.to_string(),
                        service: s.name.to_string(),
                    })
                    .set(i64::from(s.restarts));
            }
        }
    }

    fn log_files(&self, project: &ProjectName, p: &Project, only: &[ServiceName]) -> Vec<LogFile> {
        let dir = self.state.log_dir().join(project.as_str());
        p.services
            .keys()
            .filter(|s| only.is_empty() || only.contains(s))
            .flat_map(|s| LogFile::of_service(project, s, &dir.join(s.as_str())))
            .collect()
    }

    async fn snapshot(&self) -> PersistedState {
        let mut projects = self.dormant.lock().await.clone();
        for (name, e) in self.projects.lock().await.iter() {
            projects.insert(
                name.clone(),
                PersistedProject {
                    spec: e.spec.clone(),
                    records: e.manager.records(),
                    pending: e.manager.pending_starts(),
                },
            );
        }
        PersistedState {
            format: recovery::STATE_FORMAT,
            sha256: None,
            projects,
        }
    }

    /// Writes the state and the project references if they changed. A
    /// failure (e.g. a full disk) loses nothing: the state stays in memory,
    /// the failure is shown as a warning in `status` and `daemon status`, and
    /// the next call (every half second) tries again.
    async fn persist_if_changed(&self) -> BackendResult<()> {
        let result = self.save().await;
        let mut error = self.save_error.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(()) => {
                if error.take().is_some() {
                    tracing::info!("state saved again");
                }
            }
            Err(e) => {
                if error.is_none() {
                    tracing::error!(error = %e.message, "cannot save the state; keeping it in memory and retrying");
                }
                *error = Some(format!(
                    "the daemon cannot save its state ({}); services are tracked in memory and saving is retried",
                    e.message
                ));
            }
        }
        result
    }

    async fn save(&self) -> BackendResult<()> {
        let io = |e: harness_protocol::StateDirError| err(ErrorCode::Internal, e.to_string());
        let snap = self.snapshot().await;
        // The project references first: a state naming a project is only
        // written once that project can be loaded again without it.
        {
            let mut written = self.specs_written.lock().await;
            let wanted: BTreeMap<ProjectName, ProjectRef> = snap
                .projects
                .iter()
                .map(|(n, p)| (n.clone(), p.spec.clone()))
                .collect();
            if *written != wanted {
                let (dir, w, old) = (self.state.clone(), wanted.clone(), written.clone());
                blocking::unblock(move || {
                    for (name, spec) in &w {
                        if old.get(name) != Some(spec) {
                            recovery::write_spec(&dir, name, spec)?;
                        }
                    }
                    for name in old.keys().filter(|n| !w.contains_key(*n)) {
                        recovery::remove_spec(&dir, name)?;
                    }
                    Ok(())
                })
                .await
                .map_err(io)?;
                *written = wanted;
            }
        }
        let mut last = self.last_written.lock().await;
        if last.as_ref() == Some(&snap) {
            return Ok(());
        }
        let (dir, s) = (self.state.clone(), snap.clone());
        blocking::unblock(move || recovery::write_state(&dir, &s))
            .await
            .map_err(io)?;
        *last = Some(snap);
        Ok(())
    }

    fn save_warnings(&self) -> Vec<String> {
        self.save_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Finds the loaded project a request names (the only one loaded when it
    /// names none), as it is now: what requests that only read use.
    async fn find(&self, r: &ProjectRef) -> BackendResult<Resolved> {
        let projects = self.projects.lock().await;
        let name = match &r.name {
            Some(n) => n.clone(),
            None => the_only(projects.keys().cloned().collect())?,
        };
        let e = projects
            .get(&name)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no project named {name}")))?;
        Ok((name, e.manager.clone(), e.project.clone()))
    }

    /// The project a request that changes a project and names none is about:
    /// the only one loaded or to be loaded by a request that arrived before it.
    async fn only_project(&self, arrival: &Arrival<'_>) -> BackendResult<ProjectName> {
        let mut names: Vec<ProjectName> = self.projects.lock().await.keys().cloned().collect();
        names.extend(arrival.earlier_projects());
        names.sort();
        names.dedup();
        the_only(names)
    }

    /// Waits for the turn of a request that changes the project `r` is about
    /// (see the module docs), then resolves it: with `load` and files (or a
    /// working directory) given, the files are loaded first and applied in
    /// the turn; else the project must be loaded. The turn lasts as long as
    /// the returned ticket.
    async fn take_turn(&self, r: &ProjectRef, load: bool) -> BackendResult<(Ticket<'_>, Resolved)> {
        if load && (!r.files.is_empty() || r.working_dir.is_some()) {
            let arrival = self.turns.arrive_loading(r.name.clone());
            let spec = r.clone();
            let (project, kept) = blocking::unblock(move || load_project(&spec)).await?;
            let ticket = arrival.join(project.name.clone());
            ticket.turn().await;
            let resolved = self.apply(&ticket, project, kept).await?;
            return Ok((ticket, resolved));
        }
        let arrival = self.turns.arrive();
        arrival.after_loads(r.name.as_ref()).await;
        let name = match &r.name {
            Some(name) => name.clone(),
            None => self.only_project(&arrival).await?,
        };
        let ticket = arrival.join(name);
        ticket.turn().await;
        // A request before this one may have taken the project down.
        let resolved = self.find(&ProjectRef::named(ticket.name().clone())).await?;
        Ok((ticket, resolved))
    }

    /// Makes `project` (just loaded, `kept` its reference) the one its name
    /// stands for, in the turn of `ticket`. Unchanged, its manager and
    /// running services stay. Changed: what changed (and what depends on it)
    /// is stopped and a manager of the new project re-adopts the others as
    /// they run. New: it gets its manager.
    async fn apply(
        &self,
        ticket: &Ticket<'_>,
        project: Project,
        kept: ProjectRef,
    ) -> BackendResult<Resolved> {
        let name = project.name.clone();
        let current = {
            let mut projects = self.projects.lock().await;
            projects.get_mut(&name).map(|e| {
                e.spec = kept.clone();
                (e.manager.clone(), e.project.clone())
            })
        };
        let project = Arc::new(project);
        let Some((old_manager, old)) = current else {
            // A new project: its targets may take a while (the engine, the
            // nodes), so they are set up without holding the projects.
            let (manager, targets) = self.new_manager(project.clone()).await?;
            self.projects.lock().await.insert(
                name.clone(),
                Entry::new(
                    kept,
                    manager.clone(),
                    project.clone(),
                    targets,
                    self.spawner.clone(),
                ),
            );
            self.dormant.lock().await.remove(&name);
            self.refresh_names().await;
            return Ok((name, manager, project));
        };
        if old.to_json_value() == project.to_json_value() {
            return Ok((name, old_manager, old));
        }
        // Waits on the old manager would never see the new one's services.
        ticket.end_waits(
            None,
            &format!(
                "another request loaded a changed configuration of project {name} while this up waited for its services"
            ),
        );
        let built = std::sync::Mutex::new(None);
        let done = old_manager
            .reconcile(project.clone(), |p| async {
                let (manager, targets) = self.new_manager(p).await?;
                *built.lock().unwrap_or_else(|e| e.into_inner()) = Some(targets);
                Ok::<_, ErrorBody>(manager)
            })
            .await?;
        tracing::info!(project = %name, changes = %done.changes.summary(), "configuration changed");
        for err in &done.errors {
            tracing::warn!(project = %name, error = %err, "re-adopting after a change");
        }
        let manager = done.manager.clone();
        let targets = built.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = self.projects.lock().await.get_mut(&name) {
            e.manager = manager.clone();
            e.project = project.clone();
            if let Some(targets) = targets {
                e.targets = targets;
            }
            e.events.set_manager(manager.clone());
            Self::announce_reload(&e.events, &done.changes, &manager);
        }
        Ok((name, manager, project))
    }

    /// The receiving end of the project's taken-down signal; `None` when it is not loaded.
    async fn taken_down(&self, name: &ProjectName) -> Option<async_channel::Receiver<()>> {
        self.projects
            .lock()
            .await
            .get(name)
            .map(|e| e.taken_down.clone())
    }

    fn check_services(project: &Project, services: &[ServiceName]) -> BackendResult<()> {
        for s in services {
            if !project.services.contains_key(s) {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("no service {s} in project {}", project.name),
                ));
            }
        }
        Ok(())
    }

    fn status_of(
        &self,
        name: &ProjectName,
        m: &ServiceManager,
        only: &[ServiceName],
    ) -> ProjectStatus {
        let mut services: Vec<_> = m
            .status()
            .into_iter()
            .filter(|s| only.is_empty() || only.contains(&s.name))
            .collect();
        // The deployed version of package services is in their records.
        if services.iter().any(|s| s.kind == ServiceKind::Package) {
            let records = m.records();
            for s in services
                .iter_mut()
                .filter(|s| s.kind == ServiceKind::Package)
            {
                s.version = records
                    .iter()
                    .find(|r| r.service == s.name)
                    .and_then(|r| PackageExecutor::version_of(&r.instance));
            }
        }
        ProjectStatus {
            project: name.clone(),
            services,
            affected: Vec::new(),
            warnings: self.save_warnings(),
        }
    }

    /// What a stop or restart of `requested` acts on: the named services, then those
    /// depending on them (directly or not) that were active `before`, in start order.
    /// A named service that was not active is left out of a stop (nothing stopped it).
    fn cascade(
        project: &Project,
        requested: &[ServiceName],
        before: &[harness_core::ServiceStatus],
        restart: bool,
    ) -> Vec<ServiceName> {
        let active = |n: &ServiceName| before.iter().any(|s| &s.name == n && !s.state.is_settled());
        let names: Vec<&str> = requested.iter().map(ServiceName::as_str).collect();
        let closure = project.graph().with_dependents(&names);
        let mut affected: Vec<ServiceName> = requested
            .iter()
            .filter(|n| restart || active(n))
            .cloned()
            .collect();
        for n in project.graph().start_order() {
            if closure.contains(n) && !affected.contains(n) && active(n) {
                affected.push(n.clone());
            }
        }
        affected
    }

    /// The answer to a stop or restart of `requested`: the affected services (see
    /// [`Self::cascade`]) and the status of them and the named ones.
    fn cascade_status(
        &self,
        name: &ProjectName,
        m: &ServiceManager,
        requested: &[ServiceName],
        affected: Vec<ServiceName>,
    ) -> ProjectStatus {
        let mut only = requested.to_vec();
        only.extend(affected.iter().cloned());
        let mut status = self.status_of(name, m, &only);
        status.affected = affected;
        status
    }

    /// Sends the project's state changes (and, with `output`, its services' output lines)
    /// to `out` until nobody listens.
    async fn forward_events(
        name: &ProjectName,
        m: &ServiceManager,
        only: &[ServiceName],
        output: bool,
        out: &ItemSink,
    ) {
        let mut sub = m.subscribe();
        while let Some(ev) = sub.next().await {
            let Some(item) = events::item_of(name, m, ev, output) else {
                continue;
            };
            let service = match &item {
                StreamItem::Log(l) => &l.service,
                StreamItem::Event(e) => &e.service,
                StreamItem::Other => continue,
            };
            if !only.is_empty() && !only.contains(service) {
                continue;
            }
            if !out.send(item).await {
                return;
            }
        }
    }

    /// Tells the followers of `events` which services a reload changed, added
    /// or removed (the reconcile's own `changes`).
    fn announce_reload(events: &ProjectEvents, changes: &ProjectChanges, m: &ServiceManager) {
        let state = |s: &ServiceName| m.state(s.as_str()).unwrap_or(ServiceState::Stopped);
        for service in &changes.added {
            events.reload(
                service.clone(),
                state(service),
                "added by a configuration change",
            );
        }
        for service in changes.changed.keys() {
            events.reload(service.clone(), state(service), "its configuration changed");
        }
        for service in &changes.removed {
            events.reload(
                service.clone(),
                ServiceState::Stopped,
                "removed by a configuration change",
            );
        }
    }

    /// The parts of project `name` an exec plan needs.
    async fn exec_plan(
        &self,
        name: &ProjectName,
        service: &ServiceName,
    ) -> BackendResult<ExecPlan> {
        let projects = self.projects.lock().await;
        let e = projects
            .get(name)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no project named {name}")))?;
        let reach = exec::Reach {
            docker: e.targets.docker.as_ref(),
            hosts: e.targets.hosts.as_ref(),
        };
        exec::plan(name, &e.project, &e.manager, reach, service)
    }
}

#[async_trait]
impl Backend for ManagerBackend {
    async fn up(&self, p: UpParams, progress: ItemSink) -> BackendResult<ProjectStatus> {
        let (ticket, (name, m, project)) = self.take_turn(&p.project, true).await?;
        Self::check_services(&project, &p.services)?;
        let services: Vec<ServiceName> = if p.services.is_empty() {
            project.services.keys().cloned().collect()
        } else {
            p.services.clone()
        };
        // Subscribe before starting so no transition is missed.
        // Output lines go along so a client can show what a starting service is doing.
        let watch = Self::forward_events(&name, &m, &[], true, &progress);
        let work = async {
            m.start(&services).map_err(manager_err)?;
            let _ = self.persist_if_changed().await;
            // Started: the next request's turn. Waiting for readiness does not
            // hold the project; a later request that stops what is waited for
            // ends the wait instead.
            let waiting = p.wait.then(|| ticket.watch(&services));
            drop(ticket);
            if let Some(waiting) = waiting {
                let timeout = p
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_WAIT);
                let ready = futures_lite::future::or(
                    async { Err(err(ErrorCode::Conflict, waiting.ended().await)) },
                    async { m.wait_ready(&services, timeout).await.map_err(manager_err) },
                )
                .await;
                // What ended the wait first decides, even when the stop it
                // brings already shows in the services' states.
                if let Some(why) = waiting.has_ended() {
                    return Err(err(ErrorCode::Conflict, why));
                }
                ready?;
            }
            let _ = self.persist_if_changed().await;
            Ok(self.status_of(&name, &m, &[]))
        };
        futures_lite::future::or(work, async {
            watch.await;
            futures_lite::future::pending().await
        })
        .await
    }

    async fn down(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (ticket, (name, m, _)) = self.take_turn(&p.project, false).await?;
        ticket.end_waits(
            None,
            &format!(
                "project {name} was taken down by another request while this up waited for its services"
            ),
        );
        m.stop_all().await;
        let status = self.status_of(&name, &m, &[]);
        let entry = self.projects.lock().await.remove(&name);
        if let Some(targets) = entry.map(|e| e.targets) {
            // Stopped containers are gone already; this removes the project
            // network (and any container of the project left behind) from
            // every engine the project used, this machine's and the nodes'.
            if let Some(p) = &targets.docker_placement {
                for e in p.remove_project(name.as_str()).await {
                    tracing::warn!(project = %name, error = %e, "removing the project's containers and network");
                }
            }
            if let Some(h) = &targets.hosts {
                h.close_all().await;
            }
        }
        self.refresh_names().await;
        // Saving failures are warnings in the status; the request is done.
        let _ = self.persist_if_changed().await;
        Ok(status)
    }

    async fn start(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (_turn, (name, m, project)) = self.take_turn(&p.project, true).await?;
        Self::check_services(&project, &p.services)?;
        if p.services.is_empty() {
            m.start_all().map_err(manager_err)?;
        } else {
            m.start(&p.services).map_err(manager_err)?;
        }
        // Saving failures are warnings in the status; the request is done.
        let _ = self.persist_if_changed().await;
        Ok(self.status_of(&name, &m, &p.services))
    }

    async fn stop(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (ticket, (name, m, project)) = self.take_turn(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        end_waits_for(&ticket, &project, &p.services, "stopped");
        if p.services.is_empty() {
            m.stop_all().await;
            self.persist_if_changed().await?;
            return Ok(self.status_of(&name, &m, &[]));
        }
        let affected = Self::cascade(&project, &p.services, &m.status(), false);
        m.stop(&p.services).await.map_err(manager_err)?;
        // Saving failures are warnings in the status; the request is done.
        let _ = self.persist_if_changed().await;
        Ok(self.cascade_status(&name, &m, &p.services, affected))
    }

    async fn restart(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (ticket, (name, m, project)) = self.take_turn(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        let services: Vec<ServiceName> = if p.services.is_empty() {
            project.services.keys().cloned().collect()
        } else {
            p.services.clone()
        };
        end_waits_for(&ticket, &project, &p.services, "restarted");
        let affected = Self::cascade(&project, &services, &m.status(), true);
        m.restart(&services).await.map_err(manager_err)?;
        // Saving failures are warnings in the status; the request is done.
        let _ = self.persist_if_changed().await;
        Ok(self.cascade_status(&name, &m, &p.services, affected))
    }

    async fn status(&self, p: ServicesParams) -> BackendResult<Vec<ProjectStatus>> {
        if p.project.name.is_none() && p.project.files.is_empty() {
            let projects = self.projects.lock().await;
            return Ok(projects
                .iter()
                .map(|(n, e)| self.status_of(n, &e.manager, &p.services))
                .collect());
        }
        let (name, m, project) = self.find(&p.project).await?;
        Self::check_services(&project, &p.services)?;
        Ok(vec![self.status_of(&name, &m, &p.services)])
    }

    async fn logs(&self, p: LogsParams, out: ItemSink) -> BackendResult<()> {
        let (name, _, project) = self.find(&p.project).await?;
        Self::check_services(&project, &p.services)?;
        let files = self.log_files(&name, &project, &p.services);
        let query = LogQuery {
            tail: p.tail,
            since_ms: p.since_ms,
        };
        let closed = until_taken_down(self.taken_down(&name).await);
        logs::stream_logs(files, query, p.follow, out, closed).await;
        Ok(())
    }

    async fn events(&self, p: ServicesParams, out: ItemSink) -> BackendResult<()> {
        let (name, _, project) = self.find(&p.project).await?;
        Self::check_services(&project, &p.services)?;
        // The project's own stream: it follows the project across reloads.
        let Some(mut rx) = self
            .projects
            .lock()
            .await
            .get(&name)
            .map(|e| e.events.subscribe())
        else {
            return Ok(());
        };
        let closed = until_taken_down(self.taken_down(&name).await);
        let forward = async {
            loop {
                match rx.recv().await {
                    Ok(item) => {
                        if !p.services.is_empty() && !p.services.contains(&item.service) {
                            continue;
                        }
                        if !out.send(StreamItem::Event(item)).await {
                            return;
                        }
                    }
                    // A follower too slow to read misses the oldest events, not the stream.
                    Err(async_broadcast::RecvError::Overflowed(missed)) => {
                        tracing::debug!(project = %name, missed, "an events follower fell behind");
                    }
                    Err(async_broadcast::RecvError::Closed) => return,
                }
            }
        };
        futures_lite::future::or(forward, closed).await;
        Ok(())
    }

    async fn env(&self, p: EnvParams) -> BackendResult<EnvResult> {
        let (_, m, project) = self.find(&p.project).await?;
        if !project.services.contains_key(&p.service) {
            return Err(err(
                ErrorCode::NotFound,
                format!("no service {} in project {}", p.service, project.name),
            ));
        }
        let env = m
            .placement()
            .environment(p.service.as_str(), None)
            .map_err(|e| err(ErrorCode::ConfigInvalid, format!("{}: {e}", p.service)))?;
        Ok(EnvResult {
            service: p.service,
            env,
        })
    }

    async fn exec(&self, p: ExecParams) -> BackendResult<ExecPlan> {
        let (name, _, _) = self.find(&p.project).await?;
        self.exec_plan(&name, &p.service).await
    }

    fn projects(&self) -> Vec<ProjectName> {
        self.names.lock().map(|n| n.clone()).unwrap_or_default()
    }

    async fn project_summaries(&self) -> BackendResult<Vec<ProjectSummary>> {
        let projects = self.projects.lock().await;
        Ok(projects
            .iter()
            .map(|(name, e)| {
                let status = e.manager.status();
                let mut states: BTreeMap<String, usize> = BTreeMap::new();
                for s in &status {
                    *states.entry(s.state.label().to_owned()).or_default() += 1;
                }
                ProjectSummary {
                    project: name.clone(),
                    files: e.project.files.clone(),
                    working_dir: e.spec.working_dir.clone(),
                    services: status.len(),
                    states,
                }
            })
            .collect())
    }

    async fn persist(&self) -> BackendResult<()> {
        self.persist_if_changed().await
    }

    fn warnings(&self) -> Vec<String> {
        self.save_warnings()
    }

    fn stopping(&self) -> Option<harness_protocol::Stopping> {
        Some(self.targets.stopping().info())
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "services",
            "Managed services by project and state",
            self.services_gauge.clone(),
        );
        registry.register(
            "service_restarts",
            "Restarts of each service since it was last started on request",
            self.restarts_gauge.clone(),
        );
    }
}

/// The one project of `names` (sorted), or why there is not one.
fn the_only(names: Vec<ProjectName>) -> BackendResult<ProjectName> {
    match <[ProjectName; 1]>::try_from(names) {
        Ok([one]) => Ok(one),
        Err(names) if names.is_empty() => Err(err(ErrorCode::NotFound, "no project is loaded")),
        Err(names) => Err(err(
            ErrorCode::BadRequest,
            format!(
                "several projects are loaded ({}): name one",
                names
                    .iter()
                    .map(ProjectName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Ends the `up --wait`s of `project` that wait for a service a stop or
/// restart of `requested` (every service when empty) acts on: the named
/// services and those depending on them. `done` is what happens to them.
fn end_waits_for(ticket: &Ticket<'_>, project: &Project, requested: &[ServiceName], done: &str) {
    let name = &project.name;
    if requested.is_empty() {
        ticket.end_waits(
            None,
            &format!(
                "another request {done} every service of project {name} while this up waited for them"
            ),
        );
        return;
    }
    let names: Vec<&str> = requested.iter().map(ServiceName::as_str).collect();
    let acted_on = project.graph().with_dependents(&names);
    ticket.end_waits(
        Some(&acted_on),
        &format!(
            "another request {done} {} of project {name} (and what depends on them) while this up waited for them",
            names.join(", ")
        ),
    );
}

/// `records` and the remote services none of them names that still run on
/// their nodes (the state was lost, or the last daemon died while starting
/// them), found in their directories there (ADR 020): re-adopted like a
/// container found by its labels, instead of left running unknown.
async fn found_on_nodes(
    project: &Project,
    mut records: Vec<ServiceRecord>,
    targets: &ProjectTargets,
) -> Vec<ServiceRecord> {
    let Some(hosts) = &targets.hosts else {
        return records;
    };
    let remote = RemoteExecutor::new(hosts.clone());
    for (name, spec) in &project.services {
        if spec.kind() != ServiceKind::Remote || records.iter().any(|r| &r.service == name) {
            continue;
        }
        match remote.discover(spec, project.name.as_str()).await {
            Ok(Some(instance)) => {
                tracing::warn!(project = %project.name, service = %name, pid = ?instance.pid, "remote service found running on its node; re-adopting it");
                records.push(ServiceRecord {
                    service: name.clone(),
                    restarts: 0,
                    started_at_ms: None,
                    instance,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(project = %project.name, service = %name, error = %e, "looking for the remote service on its node");
            }
        }
    }
    records
}

/// Where a project's registry is persisted.
pub fn registry_path(state: &StateDir, project: &ProjectName) -> PathBuf {
    state
        .root()
        .join("registry")
        .join(format!("{}.json", project.as_str()))
}

/// The topology of `project` (its networks and this host's addresses), with
/// the nodes known by DNS name resolved.
async fn topology(project: &Project) -> Result<service_registry::NetworkTopology, ErrorBody> {
    let mut topology = Placement::topology_of(project)
        .map_err(|e| err(ErrorCode::ConfigInvalid, e.to_string()))?;
    let name = project.name.clone();
    let topology = blocking::unblock(move || {
        let unresolved = topology.resolve_node_names(|host| {
            use std::net::ToSocketAddrs;
            (host, 22)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default()
        });
        for host in unresolved {
            tracing::warn!(project = %name, %host, "a node's name does not resolve to an address in its network");
        }
        topology
    })
    .await;
    Ok(topology)
}

/// Where a project's service logs live.
pub fn project_log_dir(state: &StateDir, project: &ProjectName) -> PathBuf {
    state.log_dir().join(project.as_str())
}
