//! What belongs to a launched process besides itself, and how signals and
//! stops reach all of it: its cgroup, or else its group, its descendants and
//! the processes carrying its marker (ADR 021).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use harness_core::Signal;
use serde::{Deserialize, Serialize};

use crate::proc::ProcessIdentity;
use crate::tree::Tree;
use crate::{ExecError, cgroup};

/// An environment variable set to a value unique to one launch; processes
/// started by the launched one inherit it, so those that leave its tree are
/// still known as its own (unless they clear their environment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvMarker {
    /// The variable's name.
    pub name: String,
    /// Its value for this launch.
    pub value: String,
}

impl EnvMarker {
    /// `name` with a value no other launch gets (the time, this program's
    /// pid and a counter).
    pub fn unique(name: impl Into<String>) -> EnvMarker {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        EnvMarker {
            name: name.into(),
            value: format!(
                "{nanos:x}-{:x}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

/// Where what a process started is found again: its cgroup, and the marker
/// in its environment. Persist it with the [`ProcessIdentity`] so that a
/// later attach stops all of it ([`AttachTarget::scope`](crate::AttachTarget::scope)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessScope {
    /// The directory of the cgroup (v2) it was started in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// The marker in its environment, if it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<EnvMarker>,
}

impl ProcessScope {
    /// True if it says nothing (neither cgroup nor marker).
    pub fn is_empty(&self) -> bool {
        self.cgroup.is_none() && self.marker.is_none()
    }

    /// What `/proc` says of the running process `pid`: the cgroup it is in
    /// (whatever that is: an attacher uses only those it
    /// [owns](crate::CgroupRoot::owns)) and the value of the variable
    /// `marker` in its environment.
    pub fn read(pid: u32, marker: Option<&str>) -> ProcessScope {
        let marker = marker.and_then(|name| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let value = crate::tree::environ_var(&env, name)?;
            Some(EnvMarker {
                name: name.to_owned(),
                value: value.to_owned(),
            })
        });
        ProcessScope {
            cgroup: cgroup::cgroup_of(pid),
            marker,
        }
    }
}

/// A process with what it started, as its handle reaches them.
pub(crate) struct Reach<'a> {
    /// The process itself.
    pub leader: ProcessIdentity,
    /// It leads its process group: the group is its own.
    pub leads_group: bool,
    /// Its cgroup (one its launcher or attacher owns) and marker.
    pub scope: &'a ProcessScope,
    /// Parents of the cgroup left empty are removed up to here.
    pub base: Option<&'a Path>,
}

impl Reach<'_> {
    fn tree(&self) -> Tree {
        Tree::new(self.leader, self.leads_group, self.scope.marker.clone())
    }

    /// Sends `sig` to every process of it; `Ok(false)` if none is left.
    pub(crate) fn signal(&self, sig: Signal) -> Result<bool, ExecError> {
        match &self.scope.cgroup {
            Some(dir) => Ok(cgroup::signal_members(dir, sig)? > 0),
            None => self.tree().signal(sig),
        }
    }

    /// Stops all of it: SIGTERM (and SIGCONT), up to `grace`, then SIGKILL;
    /// returns once nothing of it is left.
    pub(crate) async fn stop(&self, grace: Duration) -> Result<(), ExecError> {
        match &self.scope.cgroup {
            Some(dir) => cgroup::stop(dir, grace, self.base).await,
            None => self.tree().stop(grace).await,
        }
    }
}
