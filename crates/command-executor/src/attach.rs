//! Observing processes this program did not start (or started in an earlier
//! life): [`Attacher`], [`LocalAttacher`], [`AttachedHandle`].

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness_core::{ExitStatus, OutputStream, Signal};
use serde::{Deserialize, Serialize};

use crate::ExecError;
use crate::events::{EventStream, ExitCell, LogOffsets, Shared};
use crate::proc::{self, ProcessIdentity};
use crate::pump::{ExitWatch, FileSource, Output, Pump, Watch};

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
}

impl AttachTarget {
    /// Attach to the process only, without logs.
    pub fn process(identity: ProcessIdentity) -> Self {
        AttachTarget {
            identity,
            stdout_log: None,
            stderr_log: None,
            follow_from: FollowFrom::End,
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
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalAttacher;

impl LocalAttacher {
    /// A local attacher.
    pub fn new() -> Self {
        LocalAttacher
    }
}

#[async_trait::async_trait]
impl Attacher for LocalAttacher {
    async fn attach(
        &self,
        target: AttachTarget,
    ) -> Result<(AttachedHandle, EventStream), ExecError> {
        attach_local(target)
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

fn attach_local(target: AttachTarget) -> Result<(AttachedHandle, EventStream), ExecError> {
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
    let signal_fd = pidfd.as_ref().and_then(|fd| fd.try_clone().ok());
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

    let handle = AttachedHandle {
        identity: id,
        leads_group,
        exit,
        pidfd: signal_fd.map(Arc::new),
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
    pidfd: Option<Arc<OwnedFd>>,
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

    fn signal_self(&self, sig: Signal) -> Result<(), ExecError> {
        if let Some(fd) = &self.pidfd {
            let rsig = rustix::process::Signal::from_named_raw(sig.number())
                .expect("every harness Signal is a named Linux signal");
            return rustix::process::pidfd_send_signal(&**fd, rsig).map_err(|e| {
                if e == rustix::io::Errno::SRCH {
                    ExecError::NotRunning { pid: self.pid() }
                } else {
                    ExecError::Signal {
                        target: format!("process {}", self.pid()),
                        signal: sig,
                        source: e.into(),
                    }
                }
            });
        }
        self.identity.check()?;
        proc::signal_process(self.pid(), sig)
    }

    /// Sends `sig` to its process group if it leads one, else to the process.
    pub fn signal(&self, sig: Signal) -> Result<(), ExecError> {
        self.check_running()?;
        if self.leads_group {
            if proc::signal_group(self.identity, sig)? {
                Ok(())
            } else {
                Err(ExecError::NotRunning { pid: self.pid() })
            }
        } else {
            self.signal_self(sig)
        }
    }

    /// Stops it: SIGTERM, up to `grace`, then SIGKILL; to the whole group if it
    /// leads one. Returns once it (and its group) is gone.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus, ExecError> {
        if self.leads_group {
            if self.check_running().is_ok() || proc::group_alive(self.identity) {
                proc::stop_group(self.identity, grace).await?;
            }
        } else if self.check_running().is_ok() {
            if !grace.is_zero() {
                let _ = self.signal_self(Signal::TERM);
                let _ = self.signal_self(Signal::CONT);
                let waited = async {
                    self.exit.wait().await;
                    true
                };
                let timeout = async {
                    async_io::Timer::at(Instant::now() + grace).await;
                    false
                };
                if futures_lite::future::or(waited, timeout).await {
                    return Ok(self.exit.wait().await);
                }
            }
            match self.signal_self(Signal::KILL) {
                Ok(()) | Err(ExecError::NotRunning { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.exit.wait().await)
    }

    /// SIGKILL (to the group if it leads one); returns once it is gone.
    pub async fn kill(&self) -> Result<ExitStatus, ExecError> {
        self.stop(Duration::ZERO).await
    }

    /// Waits until it ends.
    pub async fn wait(&self) -> Result<ExitStatus, ExecError> {
        Ok(self.exit.wait().await)
    }
}
