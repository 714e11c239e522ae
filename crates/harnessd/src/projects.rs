//! The real backend: one [`ServiceManager`] per project, projects loaded
//! from their `services.yaml` files by the daemon itself (ADR 007), and
//! what must survive the daemon persisted atomically in `state.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_lock::Mutex;
use async_trait::async_trait;
use futures_lite::StreamExt;
use harness_config::{LoadOptions, Project};
use harness_core::{ProjectName, ServiceKind, ServiceName, SharedSpawner};
use harness_protocol::{
    EnvParams, EnvResult, ErrorBody, ErrorCode, EventItem, LogsParams, ProjectRef, ProjectStatus,
    ServicesParams, StateDir, StreamItem, UpParams, write_atomic,
};
use serde::{Deserialize, Serialize};
use service_orchestration::{
    ManagerError, ManagerEvent, ManagerOptions, PendingStart, Placement, ServiceManager,
    ServiceRecord, SharedExecutor, package::PackageExecutor,
};

use crate::backend::{Backend, BackendResult, ItemSink};
use crate::metrics::ServiceStateLabels;
use crate::targets::{ProjectTargets, Targets};
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
use crate::logs::{self, LogFile, LogQuery, Stamper};

/// Format version of `state.json`.
const STATE_FORMAT: u32 = 1;
/// The largest state file read at start (it holds every project's records).
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;
/// How often the persisted state is refreshed (services restart by themselves).
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);
/// Default deadline of `up --wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version.
    pub format: u32,
    /// Every project the daemon manages.
    pub projects: BTreeMap<ProjectName, PersistedProject>,
}

/// One project in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedProject {
    /// How to load it again.
    pub spec: ProjectRef,
    /// Its running services, to re-adopt.
    pub records: Vec<ServiceRecord>,
    /// Services asked to run that had no process (waiting for a restart or a
    /// dependency): started again, with their restart counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingStart>,
}

struct Entry {
    spec: ProjectRef,
    manager: ServiceManager,
    project: Arc<Project>,
    targets: ProjectTargets,
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
    services_gauge: Family<ServiceStateLabels, Gauge>,
    restarts_gauge: Family<ServiceLabels, Gauge>,
    names: std::sync::Mutex<Vec<ProjectName>>,
    /// Each project's registry, opened once (one writer per file) and shared
    /// by its successive managers.
    registries: Mutex<BTreeMap<ProjectName, service_registry::Registry>>,
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

/// Loads a project (blocking).
fn load_project(spec: &ProjectRef) -> Result<Project, ErrorBody> {
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
        Ok(l) => Ok(l.project),
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
            services_gauge: Family::default(),
            restarts_gauge: Family::default(),
            names: std::sync::Mutex::new(Vec::new()),
            registries: Mutex::new(BTreeMap::new()),
        });
        let path = state.state_file();
        let persisted: Option<PersistedState> = blocking::unblock(move || {
            let text = match harness_config::read_limited(&path, MAX_STATE_BYTES) {
                Ok(text) => text,
                Err(e) if e.is_not_found() => return None,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable state file; keeping it aside");
                    let _ = std::fs::rename(&path, path.with_extension("json.unreadable"));
                    return None;
                }
            };
            match serde_json::from_str(&text) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable state file; keeping it aside");
                    let _ = std::fs::rename(&path, path.with_extension("json.unreadable"));
                    None
                }
            }
        })
        .await;
        if let Some(persisted) = persisted {
            for (name, p) in persisted.projects {
                let spec = p.spec.clone();
                match blocking::unblock(move || load_project(&spec)).await {
                    Ok(project) => {
                        let project = Arc::new(project);
                        match backend.new_manager(project.clone()).await {
                            Ok((manager, targets)) => {
                                let errors = manager.adopt(p.records.clone()).await;
                                for e in errors {
                                    tracing::warn!(project = %name, error = %e, "re-adopting");
                                }
                                tracing::info!(project = %name, services = p.records.len(), "re-adopted project");
                                if let Err(e) = manager.resume(p.pending.clone()) {
                                    tracing::warn!(project = %name, error = %e, "resuming services that were to restart");
                                }
                                backend.projects.lock().await.insert(
                                    name.clone(),
                                    Entry {
                                        spec: p.spec,
                                        manager,
                                        project,
                                        targets,
                                    },
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
        self.spawner.spawn(Box::pin(log_lifecycle(
            project.name.clone(),
            manager.subscribe(),
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
        let path = registry_path(&self.state, project);
        if let Some(dir) = path.parent().map(Path::to_path_buf) {
            // Opening reports a missing directory; making it here is enough.
            let _ = blocking::unblock(move || std::fs::create_dir_all(dir)).await;
        }
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

    /// Persists state periodically and stamps log files.
    fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.spawner.spawn(Box::pin(async move {
            let mut stampers: BTreeMap<ProjectName, (usize, Stamper)> = BTreeMap::new();
            let mut last_persist = std::time::Instant::now();
            loop {
                async_io::Timer::after(logs::POLL_INTERVAL).await;
                let Some(b) = weak.upgrade() else { return };
                // Stamp log files of every project.
                let files: Vec<(ProjectName, Vec<LogFile>)> = {
                    let projects = b.projects.lock().await;
                    projects
                        .iter()
                        .map(|(n, e)| (n.clone(), b.log_files(n, &e.project, &[])))
                        .collect()
                };
                stampers.retain(|n, _| files.iter().any(|(m, _)| m == n));
                let mut work = std::mem::take(&mut stampers);
                let now = logs::now_ms();
                work = blocking::unblock(move || {
                    for (name, fs) in files {
                        let entry = work
                            .entry(name)
                            .or_insert_with(|| (fs.len(), Stamper::new(fs.clone())));
                        if entry.0 != fs.len() {
                            *entry = (fs.len(), Stamper::new(fs));
                        }
                        entry.1.tick(now);
                    }
                    work
                })
                .await;
                stampers = work;
                if last_persist.elapsed() >= PERSIST_INTERVAL {
                    last_persist = std::time::Instant::now();
                    b.update_gauges().await;
                    if let Err(e) = b.persist_if_changed().await {
                        tracing::warn!(error = %e.message, "persisting state");
                    }
                }
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
            format: STATE_FORMAT,
            projects,
        }
    }

    async fn persist_if_changed(&self) -> BackendResult<()> {
        let snap = self.snapshot().await;
        let mut last = self.last_written.lock().await;
        if last.as_ref() == Some(&snap) {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&snap)
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let path = self.state.state_file();
        blocking::unblock(move || write_atomic(&path, &json, 0o600))
            .await
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        *last = Some(snap);
        Ok(())
    }

    /// Finds the project a request is about, loading it if files are given.
    async fn resolve(
        &self,
        r: &ProjectRef,
        load: bool,
    ) -> BackendResult<(ProjectName, ServiceManager, Arc<Project>)> {
        if load && (!r.files.is_empty() || r.working_dir.is_some()) {
            let spec = r.clone();
            let project = blocking::unblock(move || load_project(&spec)).await?;
            let name = project.name.clone();
            let mut projects = self.projects.lock().await;
            if let Some(e) = projects.get_mut(&name) {
                e.spec = r.clone();
                if e.project.to_json_value() == project.to_json_value() {
                    // Unchanged: keep its manager and running services.
                    return Ok((name, e.manager.clone(), e.project.clone()));
                }
                // Changed: stop what changed (and what depends on it), hand
                // the services that did not change to a manager of the new
                // project, which re-adopts them as they run.
                let project = Arc::new(project);
                let changed: Vec<ServiceName> = e
                    .project
                    .services
                    .iter()
                    .filter(|(n, spec)| project.services.get(*n) != Some(*spec))
                    .map(|(n, _)| n.clone())
                    .collect();
                let names: Vec<&str> = changed.iter().map(ServiceName::as_str).collect();
                tracing::info!(project = %name, changed = %names.join(","), "configuration changed");
                e.manager.stop(&changed).await.map_err(manager_err)?;
                let keep: Vec<ServiceRecord> = e
                    .manager
                    .records()
                    .into_iter()
                    .filter(|rec| project.services.contains_key(&rec.service))
                    .collect();
                let (manager, targets) = self.new_manager(project.clone()).await?;
                for err in manager.adopt(keep).await {
                    tracing::warn!(project = %name, error = %err, "re-adopting after a change");
                }
                e.manager = manager.clone();
                e.project = project.clone();
                e.targets = targets;
                return Ok((name, manager, project));
            }
            // A new project: its targets may take a while (the engine, the
            // nodes), so they are set up without holding the projects.
            drop(projects);
            let project = Arc::new(project);
            let (manager, targets) = self.new_manager(project.clone()).await?;
            let mut projects = self.projects.lock().await;
            if let Some(e) = projects.get(&name) {
                // Another request loaded it meanwhile: that one stands.
                return Ok((name, e.manager.clone(), e.project.clone()));
            }
            projects.insert(
                name.clone(),
                Entry {
                    spec: r.clone(),
                    manager: manager.clone(),
                    project: project.clone(),
                    targets,
                },
            );
            drop(projects);
            self.dormant.lock().await.remove(&name);
            self.refresh_names().await;
            return Ok((name, manager, project));
        }
        let projects = self.projects.lock().await;
        let entry = match &r.name {
            Some(n) => projects
                .get_key_value(n)
                .ok_or_else(|| err(ErrorCode::NotFound, format!("no project named {n}")))?,
            None => {
                let mut it = projects.iter();
                match (it.next(), it.next()) {
                    (Some(one), None) => one,
                    (None, _) => return Err(err(ErrorCode::NotFound, "no project is loaded")),
                    _ => {
                        return Err(err(
                            ErrorCode::BadRequest,
                            format!(
                                "several projects are loaded ({}): name one",
                                projects
                                    .keys()
                                    .map(|k| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        Ok((
            entry.0.clone(),
            entry.1.manager.clone(),
            entry.1.project.clone(),
        ))
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

    fn status_of(name: &ProjectName, m: &ServiceManager, only: &[ServiceName]) -> ProjectStatus {
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
        }
    }

    async fn forward_events(
        name: &ProjectName,
        m: &ServiceManager,
        only: &[ServiceName],
        out: &ItemSink,
    ) {
        let mut sub = m.subscribe();
        while let Some(ev) = sub.next().await {
            let (service, state, health) = match ev {
                ManagerEvent::State { service, state } => (service, Some(state), None),
                ManagerEvent::Health {
                    service, health, ..
                } => (service, None, Some(health)),
                _ => continue,
            };
            if !only.is_empty() && !only.contains(&service) {
                continue;
            }
            let st = m.status().into_iter().find(|s| s.name == service);
            let Some(state) = state.or_else(|| st.as_ref().map(|s| s.state.clone())) else {
                continue;
            };
            let item = EventItem {
                project: name.clone(),
                service,
                ts_ms: logs::now_ms(),
                state,
                health: health
                    .or_else(|| st.as_ref().map(|s| s.health))
                    .unwrap_or_default(),
                pid: st.and_then(|s| s.pid),
            };
            if !out.send(StreamItem::Event(item)).await {
                return;
            }
        }
    }
}

#[async_trait]
impl Backend for ManagerBackend {
    async fn up(&self, p: UpParams, progress: ItemSink) -> BackendResult<ProjectStatus> {
        let (name, m, project) = self.resolve(&p.project, true).await?;
        Self::check_services(&project, &p.services)?;
        let services: Vec<ServiceName> = if p.services.is_empty() {
            project.services.keys().cloned().collect()
        } else {
            p.services.clone()
        };
        // Subscribe before starting so no transition is missed.
        let watch = Self::forward_events(&name, &m, &[], &progress);
        let work = async {
            m.start(&services).map_err(manager_err)?;
            let _ = self.persist_if_changed().await;
            if p.wait {
                let timeout = p
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_WAIT);
                m.wait_ready(&services, timeout)
                    .await
                    .map_err(manager_err)?;
            }
            let _ = self.persist_if_changed().await;
            Ok(Self::status_of(&name, &m, &[]))
        };
        futures_lite::future::or(work, async {
            watch.await;
            futures_lite::future::pending().await
        })
        .await
    }

    async fn down(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (name, m, _) = self.resolve(&p.project, false).await?;
        m.stop_all().await;
        let status = Self::status_of(&name, &m, &[]);
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
        self.persist_if_changed().await?;
        Ok(status)
    }

    async fn start(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (name, m, project) = self.resolve(&p.project, true).await?;
        Self::check_services(&project, &p.services)?;
        if p.services.is_empty() {
            m.start_all().map_err(manager_err)?;
        } else {
            m.start(&p.services).map_err(manager_err)?;
        }
        self.persist_if_changed().await?;
        Ok(Self::status_of(&name, &m, &p.services))
    }

    async fn stop(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (name, m, project) = self.resolve(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        if p.services.is_empty() {
            m.stop_all().await;
        } else {
            m.stop(&p.services).await.map_err(manager_err)?;
        }
        self.persist_if_changed().await?;
        Ok(Self::status_of(&name, &m, &p.services))
    }

    async fn restart(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        let (name, m, project) = self.resolve(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        let services: Vec<ServiceName> = if p.services.is_empty() {
            project.services.keys().cloned().collect()
        } else {
            p.services.clone()
        };
        m.restart(&services).await.map_err(manager_err)?;
        self.persist_if_changed().await?;
        Ok(Self::status_of(&name, &m, &p.services))
    }

    async fn status(&self, p: ServicesParams) -> BackendResult<Vec<ProjectStatus>> {
        if p.project.name.is_none() && p.project.files.is_empty() {
            let projects = self.projects.lock().await;
            return Ok(projects
                .iter()
                .map(|(n, e)| Self::status_of(n, &e.manager, &p.services))
                .collect());
        }
        let (name, m, project) = self.resolve(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        Ok(vec![Self::status_of(&name, &m, &p.services)])
    }

    async fn logs(&self, p: LogsParams, out: ItemSink) -> BackendResult<()> {
        let (name, _, project) = self.resolve(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        let files = self.log_files(&name, &project, &p.services);
        let query = LogQuery {
            tail: p.tail,
            since_ms: p.since_ms,
        };
        logs::stream_logs(files, query, p.follow, out).await;
        Ok(())
    }

    async fn events(&self, p: ServicesParams, out: ItemSink) -> BackendResult<()> {
        let (name, m, project) = self.resolve(&p.project, false).await?;
        Self::check_services(&project, &p.services)?;
        Self::forward_events(&name, &m, &p.services, &out).await;
        Ok(())
    }

    async fn env(&self, p: EnvParams) -> BackendResult<EnvResult> {
        let (_, m, project) = self.resolve(&p.project, false).await?;
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

    fn projects(&self) -> Vec<ProjectName> {
        self.names.lock().map(|n| n.clone()).unwrap_or_default()
    }

    async fn persist(&self) -> BackendResult<()> {
        self.persist_if_changed().await
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

/// Records in the daemon's log what happens to a project's services: every
/// exit, restart and failure with its reason, as plain-string fields
/// (`project`, `service`, `state`, `reason`), until the manager is gone.
async fn log_lifecycle(project: ProjectName, mut events: service_orchestration::Subscription) {
    while let Some(ev) = events.next().await {
        match ev {
            ManagerEvent::Output { service, line, .. }
                if line.stream == harness_core::OutputStream::Harness =>
            {
                tracing::info!(project = %project, service = %service, event = %line.text(), "service lifecycle");
            }
            ManagerEvent::State { service, state } => match &state {
                harness_core::ServiceState::Failed { reason }
                | harness_core::ServiceState::Restarting { reason, .. }
                | harness_core::ServiceState::Unknown { reason } => {
                    tracing::warn!(project = %project, service = %service, state = state.label(), reason = %reason, "service state");
                }
                _ => {
                    tracing::debug!(project = %project, service = %service, state = state.label(), "service state");
                }
            },
            ManagerEvent::Warning { service, message } => {
                tracing::warn!(project = %project, service = %service, warning = %message, "service warning");
            }
            _ => {}
        }
    }
}
