//! What changed since the daemon's background work last looked: which
//! services wrote output (their log files need a timestamp checkpoint) and
//! whether anything worth persisting happened. The background task sleeps
//! until something did, so an idle daemon does no periodic work at all.
//!
//! [`watch_manager`] feeds it from a manager's event stream, and records
//! every exit, restart and failure in the daemon's log on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use event_listener::{Event, EventListener};
use futures_lite::StreamExt;
use harness_core::{OutputStream, ProjectName, ServiceName, ServiceState};
use service_orchestration::{ManagerEvent, Subscription};

/// What changed, taken at once by [`Activity::take`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Services that wrote output, per project.
    pub output: BTreeMap<ProjectName, BTreeSet<ServiceName>>,
    /// Events were lost: every log file may have grown.
    pub all_output: bool,
    /// Something that may change the persisted state happened (a state
    /// change, output moving log offsets, a lost event).
    pub state: bool,
}

impl Changes {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.output.is_empty() && !self.all_output && !self.state
    }
}

/// Changes collected from every manager, and a wake-up for whoever waits on them.
#[derive(Debug, Default)]
pub struct Activity {
    changes: Mutex<Changes>,
    event: Event,
}

impl Activity {
    fn update(&self, f: impl FnOnce(&mut Changes)) {
        f(&mut self.changes.lock().unwrap_or_else(|p| p.into_inner()));
        self.event.notify(usize::MAX);
    }

    /// Service `service` of `project` wrote output.
    pub fn output(&self, project: &ProjectName, service: &ServiceName) {
        self.update(|c| {
            c.state = true;
            if !c.all_output {
                c.output
                    .entry(project.clone())
                    .or_default()
                    .insert(service.clone());
            }
        });
    }

    /// Something worth persisting happened.
    pub fn state(&self) {
        self.update(|c| c.state = true);
    }

    /// Events were lost: assume everything changed.
    pub fn everything(&self) {
        self.update(|c| {
            c.state = true;
            c.all_output = true;
            c.output.clear();
        });
    }

    /// A listener that fires on the next change. Take one before
    /// [`Activity::take`] finds nothing, so a change in between is not missed.
    pub fn listen(&self) -> EventListener {
        self.event.listen()
    }

    /// The changes since the last call, leaving none.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Follows one manager's events until it is gone: notes output and state
/// changes in `activity`, and records every exit, restart and failure in the
/// daemon's log as plain-string fields (`project`, `service`, `state`, `reason`).
pub async fn watch_manager(
    project: ProjectName,
    mut events: Subscription,
    activity: std::sync::Arc<Activity>,
) {
    while let Some(ev) = events.next().await {
        match ev {
            ManagerEvent::Output { service, line, .. } => {
                if line.stream == OutputStream::Harness {
                    tracing::info!(project = %project, service = %service, event = %line.text(), "service lifecycle");
                }
                activity.output(&project, &service);
            }
            ManagerEvent::State { service, state } => {
                match &state {
                    ServiceState::Failed { reason }
                    | ServiceState::Restarting { reason, .. }
                    | ServiceState::Unknown { reason } => {
                        tracing::warn!(project = %project, service = %service, state = state.label(), reason = %reason, "service state");
                    }
                    _ => {
                        tracing::debug!(project = %project, service = %service, state = state.label(), "service state");
                    }
                }
                activity.state();
            }
            ManagerEvent::Warning { service, message } => {
                tracing::warn!(project = %project, service = %service, warning = %message, "service warning");
            }
            ManagerEvent::Lagged { .. } => activity.everything(),
            _ => activity.state(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_accumulate_until_taken() {
        let a = Activity::default();
        assert!(a.take().is_empty());
        let p = ProjectName::new("p").unwrap();
        let s = ServiceName::new("s").unwrap();
        let listener = a.listen();
        a.output(&p, &s);
        futures_lite::future::block_on(listener);
        let c = a.take();
        assert!(c.state && !c.all_output);
        assert_eq!(c.output[&p].len(), 1);
        assert!(a.take().is_empty());
        a.everything();
        a.output(&p, &s);
        let c = a.take();
        assert!(c.all_output && c.output.is_empty());
    }
}
