//! Bringing running services in step with a changed configuration: one
//! operation, [`ServiceManager::reconcile`], that the daemon's reload and
//! embedders use alike.
//!
//! A manager's project is fixed (each service has an actor built from its
//! specification), so a new configuration gets a new manager. Reconciling
//! stops, on the old manager, the services that were removed and those whose
//! change needs a restart ([`Project::changes`]); hands every other running
//! service to the new manager as it runs (same instance, same pid); then
//! starts the added services and starts again the restarted ones that were
//! active.
//!
//! A dependent of a restarted service is restarted with it only when it needs
//! to be: when it waited for that service to complete successfully (a job whose
//! work it uses; [`restarts_with_dependency`]), or when a value it refers to
//! (`${db.port}`) changed, which [`Project::changes`] already counts as its own
//! change. A dependent that waited for `started`, `healthy` or a log line keeps
//! running.

use std::future::Future;
use std::sync::Arc;

use harness_config::{Project, ProjectChanges, restarts_with_dependency};
use harness_core::ServiceName;

use crate::manager::{ManagerError, ServiceManager};

/// What [`ServiceManager::reconcile`] did.
#[derive(Debug)]
pub struct Reconciled {
    /// The manager of the new configuration: the same one when nothing differs.
    pub manager: ServiceManager,
    /// What differs between the two configurations.
    pub changes: ProjectChanges,
    /// Removed services, stopped for good.
    pub stopped: Vec<ServiceName>,
    /// Services stopped to apply their change (or a change of what they need),
    /// in the order they were stopped in; those that were active are started again.
    pub restarted: Vec<ServiceName>,
    /// Added services, started.
    pub added: Vec<ServiceName>,
    /// Running services handed to the new manager as they run.
    pub kept: Vec<ServiceName>,
    /// Services that could not be handed over (they ended meanwhile, …).
    pub errors: Vec<ManagerError>,
}

impl Reconciled {
    /// True when the reconciliation changed no running service (it may still
    /// have changed what only the manager reads, e.g. a description).
    pub fn is_noop(&self) -> bool {
        self.stopped.is_empty() && self.restarted.is_empty() && self.added.is_empty()
    }
}

impl ServiceManager {
    /// Brings the services of this manager in step with `project`, a new
    /// configuration of the same project (see the [module](crate::reconcile)):
    /// stops removed services and those whose change needs a restart, builds
    /// the manager of `project` with `build` (for example
    /// `|p| async move { ServiceManager::new(p, options) }`, registering
    /// executors before returning it), hands it every other running service
    /// as it runs, and starts the added services and the restarted ones that
    /// were active. Waiting starts and restarts pending in this manager go on in
    /// the new one.
    ///
    /// When `project` is the same configuration, nothing happens and this
    /// manager is returned. Fails only when `build` fails; then what had to
    /// stop is stopped, and this manager still tracks everything else.
    pub async fn reconcile<F, Fut, E>(
        &self,
        project: Arc<Project>,
        build: F,
    ) -> Result<Reconciled, E>
    where
        F: FnOnce(Arc<Project>) -> Fut,
        Fut: Future<Output = Result<ServiceManager, E>>,
    {
        let old = self.project().clone();
        if old.to_json_value() == project.to_json_value() {
            return Ok(Reconciled {
                manager: self.clone(),
                changes: ProjectChanges::default(),
                stopped: Vec::new(),
                restarted: Vec::new(),
                added: Vec::new(),
                kept: self.records().into_iter().map(|r| r.service).collect(),
                errors: Vec::new(),
            });
        }
        let changes = old.changes(&project);
        // What restarts: the changes that need it, then (in start order, so a
        // chain is followed) dependents that restart with what they need.
        let mut restarted: Vec<ServiceName> = Vec::new();
        let needs = changes.to_restart();
        for name in project.graph().start_order() {
            let Some(spec) = project.services.get(name) else {
                continue;
            };
            let spreads = spec.dependencies.iter().any(|d| {
                restarted.contains(&d.service) && restarts_with_dependency(spec, &d.service)
            });
            if old.services.contains_key(name) && (needs.contains(name) || spreads) {
                restarted.push(name.clone());
            }
        }
        let again: Vec<ServiceName> = restarted
            .iter()
            .filter(|s| self.is_active(s))
            .cloned()
            .collect();
        let mut stop = changes.removed.clone();
        stop.extend(restarted.iter().cloned());
        if !stop.is_empty() {
            self.stop_set(stop.clone()).await;
        }
        let pending: Vec<_> = self
            .pending_starts()
            .into_iter()
            .filter(|p| project.services.contains_key(&p.service) && !stop.contains(&p.service))
            .collect();
        let keep: Vec<_> = self
            .records()
            .into_iter()
            .filter(|r| project.services.contains_key(&r.service) && !stop.contains(&r.service))
            .collect();
        let kept = keep.iter().map(|r| r.service.clone()).collect();
        let manager = build(project).await?;
        let mut errors = manager.adopt(keep).await;
        if let Err(e) = manager.resume(pending) {
            errors.push(e);
        }
        let mut start = changes.added.clone();
        start.extend(again);
        if let Err(e) = manager.start(&start) {
            errors.push(e);
        }
        Ok(Reconciled {
            manager,
            stopped: changes.removed.clone(),
            added: changes.added.clone(),
            changes,
            restarted,
            kept,
            errors,
        })
    }
}
