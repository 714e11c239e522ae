//! Observing processes this program did not start (or started in an earlier
//! life): [`Attacher`], [`LocalAttacher`], [`AttachedHandle`].

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use harness_core::{ExitStatus, OutputStream, Signal};
use serde::{Deserialize, Serialize};

use crate::ExecError;
use crate::cgroup::CgroupRoot;
use crate::events::{EventStream, ExitCell, LogOffsets, Shared};
use crate::proc::{self, ProcessIdentity};
use crate::pump::{ExitWatch, FileSource, Output, Pump, Watch};
use crate::scope::{ProcessScope, Reach};

/// Where to start following a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FollowFrom {
    /// From the beginning of the files.
    Start,
    /// From their current end: only new output.
    #[default]
    End,
    /// From these byte offsets, e.g. [`EventStream::offsets`] persisted earlier.
    Offset {
        /// Offset in the stdout log.
        stdout: u64,
        /// Offset in the stderr log.
        stderr: u64,
    },
}

impl From<LogOffsets> for FollowFrom {
    fn from(o: LogOffsets) -> Self {
        FollowFrom::Offset {
            stdout: o.stdout,
            stderr: o.stderr,
        }
    }
}

/// What to attach to: a process (pid and start time, so a reused pid is
/// refused) and, optionally, its log files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachTarget {
    /// The process.
    pub identity: ProcessIdentity,
    /// Its stdout log, to follow.
    pub stdout_log: Option<PathBuf>,
    /// Its stderr log, to follow (may equal `stdout_log`).
    pub stderr_log: Option<PathBuf>,
    /// Where following starts.
    pub follow_from: FollowFrom,
    /// Its cgroup and marker, as [`ProcessHandle::scope`](crate::ProcessHandle::scope)
    /// gave them: stopping reaches everything it started. A cgroup is used
    /// only if the attacher's [`CgroupRoot`] [owns](CgroupRoot::owns) it.
    #[serde(default)]
    pub scope: ProcessScope,
}

impl AttachTarget {
    /// Attach to the process only, without logs.
    pub fn process(identity: ProcessIdentity) -> Self {
        AttachTarget {
            identity,
            stdout_log: None,
            stderr_log: None,
            follow_from: FollowFrom::End,
            scope: ProcessScope::default(),
        }
    }
}

/// Attaches to processes that are already running.
#[async_trait::async_trait]
pub trait Attacher: Send + Sync {
    /// Attaches to `target`; the stream ends with `Exited` when the process
    /// ends: with its status when this program is its parent (e.g. a
    /// subreaper that adopted it; the process is not reaped), else
    /// `ExitStatus::Unknown`.
    ///
    /// Fails with [`ExecError::NotRunning`] or [`ExecError::IdentityMismatch`]
    /// when the process is gone or its pid was reused, and with
    /// [`ExecError::LogFile`] when a log cannot be opened (attach again without
    /// logs to keep control of the process).
    async fn attach(
        &self,
        target: AttachTarget,
    ) -> Result<(AttachedHandle, EventStream), ExecError>;
}

/// Attaches to local processes: exit learned through a pidfd (or by watching
/// `/proc` where pidfds are unavailable), logs followed from files.
#[derive(Debug, Clone, Default)]
pub struct LocalAttacher {
    cgroups: Option<CgroupRoot>,
}

impl LocalAttacher {
    /// A local attacher, without cgroups.
    pub fn new() -> Self {
        LocalAttacher::default()
    }

    /// Stops attached processes through the cgroup of their
    /// [`AttachTarget::scope`] when `root` owns it (a launcher with a root
    /// of that name made it).
    pub fn with_cgroups(mut self, root: CgroupRoot) -> Self {
        self.cgroups = Some(root);
        self
    }
}

#[async_trait::async_trait]
impl Attacher for LocalAttacher {
    async fn attach(
        &self,
        target: AttachTarget,
    ) -> Result<(AttachedHandle, EventStream), ExecError> {
        attach_local(target, self.cgroups.as_ref())
    }
}

fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)?;
    rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()
}

/// Resolves where following starts in `path`.
fn follow_start(
    path: &PathBuf,
    from: FollowFrom,
    stream: OutputStream,
) -> Result<(std::fs::File, u64), ExecError> {
    let err = |source| ExecError::LogFile {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let pos = match from {
        FollowFrom::Start => 0,
        FollowFrom::End => file.metadata().map_err(err)?.len(),
        FollowFrom::Offset { stdout, stderr } => match stream {
            OutputStream::Stdout => stdout,
            // A process writes only its two streams; harness's own lines are not followed here.
            OutputStream::Stderr | OutputStream::Harness => stderr,
        },
    };
    Ok((file, pos))
}

fn attach_local(
    target: AttachTarget,
    cgroups: Option<&CgroupRoot>,
) -> Result<(AttachedHandle, EventStream), ExecError> {
    let id = target.identity;
    // Open the pidfd first, then check the identity: if it matches, the pidfd
    // is known to refer to this very process.
    let pidfd = open_pidfd(id.pid);
    id.check()?;
    let stat = proc::read_stat(id.pid)?;
    let leads_group = stat.pgrp == i64::from(id.pid);

    let mut follow = Vec::new();
    let mut offsets = LogOffsets::default();
    if let Some(path) = &target.stdout_log {
        let (file, pos) = follow_start(path, target.follow_from, OutputStream::Stdout)?;
        offsets.stdout = pos;
        follow.push(FileSource::new(
            path.clone(),
            file,
            OutputStream::Stdout,
            16 * 1024,
            pos,
        ));
    }
    if let Some(path) = &target.stderr_log
        && target.stdout_log.as_ref() != Some(path)
    {
        let (file, pos) = follow_start(path, target.follow_from, OutputStream::Stderr)?;
        offsets.stderr = pos;
        follow.push(FileSource::new(
            path.clone(),
            file,
            OutputStream::Stderr,
            16 * 1024,
            pos,
        ));
    }

    let pump = Pump::get().map_err(|source| ExecError::Watch {
        pid: id.pid,
        source,
    })?;
    let entry = pump.next_id();
    let shared = if follow.is_empty() {
        Shared::new(8192)
    } else {
        pump.files_queue(entry, 8192)
    };
    let exit = ExitCell::new();
    let watch = match pidfd {
        Some(fd) => ExitWatch::Peek(fd),
        None => ExitWatch::Proc(id),
    };
    pump.register(
        entry,
        Watch {
            shared: shared.clone(),
            exit: exit.clone(),
            watch,
            output: Output::Files(follow),
        },
    )
    .map_err(|source| ExecError::Watch {
        pid: id.pid,
        source,
    })?;

    // A cgroup is taken only from a root that owns it: a persisted path
    // must never make this process kill a cgroup that is not a service's.
    let mut scope = target.scope;
    let owner = scope
        .cgroup
        .as_deref()
        .and_then(|dir| cgroups.filter(|root| root.owns(dir)));
    let base = match (owner, scope.cgroup.as_deref()) {
        (Some(root), Some(dir)) => root.base_of(dir),
        _ => {
            scope.cgroup = None;
            None
        }
    };
    let handle = AttachedHandle {
        identity: id,
        leads_group,
        exit,
        scope,
        base,
    };
    Ok((handle, EventStream::new(shared, id.pid, offsets)))
}

/// Control over a process found running: signals, stop, wait. It has no
/// stdin: only the process's owner can write to it.
#[derive(Debug)]
pub struct AttachedHandle {
    identity: ProcessIdentity,
    leads_group: bool,
    exit: Arc<ExitCell>,
    scope: ProcessScope,
    /// Parents of the cgroup left empty are removed up to here.
    base: Option<PathBuf>,
}

impl AttachedHandle {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.identity.pid
    }

    /// The pid and start time.
    pub fn identity(&self) -> ProcessIdentity {
        self.identity
    }

    /// Its cgroup (if one the attacher owns) and marker.
    pub fn scope(&self) -> &ProcessScope {
        &self.scope
    }

    /// True if it has ended.
    pub fn has_exited(&self) -> bool {
        self.exit.get().is_some()
    }

    fn check_running(&self) -> Result<(), ExecError> {
        if self.exit.get().is_some() {
            return Err(ExecError::NotRunning { pid: self.pid() });
        }
        self.identity.check()
    }

    fn reach(&self) -> Reach<'_> {
        Reach {
            leader: self.identity,
            leads_group: self.leads_group,
            scope: &self.scope,
            base: self.base.as_deref(),
        }
    }

    /// Sends `sig` to all of it: its cgroup, else its process group if it
    /// leads one (else itself), its descendants and the processes carrying
    /// its marker.
    pub fn signal(&self, sig: Signal) -> Result<(), ExecError> {
        self.check_running()?;
        if self.reach().signal(sig)? {
            Ok(())
        } else {
            Err(ExecError::NotRunning { pid: self.pid() })
        }
    }

    /// Stops it and all of it (as [`signal`](Self::signal) reaches them):
    /// SIGTERM, up to `grace`, then SIGKILL. Returns once it is all gone.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus, ExecError> {
        self.reach().stop(grace).await?;
        Ok(self.exit.wait().await)
    }

    /// SIGKILL to all of it; returns once it is gone.
    pub async fn kill(&self) -> Result<ExitStatus, ExecError> {
        self.stop(Duration::ZERO).await
    }

    /// Waits until it ends.
    pub async fn wait(&self) -> Result<ExitStatus, ExecError> {
        Ok(self.exit.wait().await)
    }
}
