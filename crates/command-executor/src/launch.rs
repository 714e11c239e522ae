//! Starting processes we own: [`Launcher`], [`LocalLauncher`], [`ProcessHandle`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use futures_lite::AsyncWriteExt;
use harness_core::{ExitStatus, OutputStream, Signal};
use rustix::process::Pid;

use crate::cgroup::CgroupRoot;
use crate::events::{EventStream, ExitCell, LogOffsets, Shared};
use crate::proc::{self, ProcessIdentity};
use crate::pump::{self, ExitWatch, FileSource, Output, PipeSource, Pump, StartTime, Watch};
use crate::scope::{EnvMarker, ProcessScope, Reach};
use crate::{Command, ExecError, StdinMode};

/// Where a launched process writes its stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Pipes read by the launcher. The process gets SIGPIPE if it writes after
    /// the launcher's process has gone. Once the process itself has exited,
    /// what is already in the pipes is delivered and they are closed: output
    /// of members of its group that live on is not followed.
    #[default]
    Pipes,
    /// Log files, opened for appending and handed to the process; the launcher
    /// follows them. The process outlives the launcher.
    Files {
        /// The stdout log.
        stdout: PathBuf,
        /// The stderr log. If it is the same path as `stdout`, both streams
        /// share the file and all lines are reported as stdout.
        stderr: PathBuf,
    },
}

/// How to launch: where output goes and how much of it may wait in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Where output goes.
    pub output: OutputMode,
    /// Longest line kept, in bytes; longer lines are cut and marked truncated.
    pub max_line_bytes: usize,
    /// Most events waiting to be read from the [`EventStream`]. With pipes,
    /// further lines are dropped and counted; with files they wait in the file.
    pub buffer_events: usize,
    /// Where below the launcher's [`CgroupRoot`] the process gets its cgroup
    /// (`/`-separated parts, e.g. `shop/api`): a new cgroup is made below
    /// it for each launch. Ignored by a launcher without a root.
    pub cgroup: Option<String>,
    /// The name of an environment variable to set to a value unique to this
    /// launch ([`EnvMarker`]): without a cgroup, the processes that still
    /// carry it are stopped with the process even after they left its
    /// process group and tree.
    pub marker: Option<String>,
}

impl LaunchOptions {
    /// Output to log files (appended; the same path twice puts both streams
    /// in one file), with the default limits.
    pub fn files(stdout: impl Into<PathBuf>, stderr: impl Into<PathBuf>) -> Self {
        LaunchOptions {
            output: OutputMode::Files {
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
            ..LaunchOptions::default()
        }
    }
}

impl Default for LaunchOptions {
    /// Pipes, 16 KiB lines, 8192 events, no cgroup name, no marker.
    fn default() -> Self {
        LaunchOptions {
            output: OutputMode::Pipes,
            max_line_bytes: 16 * 1024,
            buffer_events: 8192,
            cgroup: None,
            marker: None,
        }
    }
}

/// Starts commands and owns what it started.
#[async_trait::async_trait]
pub trait Launcher: Send + Sync {
    /// Starts `cmd`; returns the handle to control it and the stream of its events.
    async fn launch(
        &self,
        cmd: &Command,
        opts: LaunchOptions,
    ) -> Result<(ProcessHandle, EventStream), ExecError>;
}

/// Starts commands as local processes, each in a process group of its own
/// and, with a [`CgroupRoot`], in a cgroup of its own.
#[derive(Debug, Clone, Default)]
pub struct LocalLauncher {
    cgroups: Option<CgroupRoot>,
}

impl LocalLauncher {
    /// A local launcher, without cgroups.
    pub fn new() -> Self {
        LocalLauncher::default()
    }

    /// Puts each process launched with a [`LaunchOptions::cgroup`] name in a
    /// new cgroup below `root`; stopping it then ends every process of that
    /// cgroup.
    pub fn with_cgroups(mut self, root: CgroupRoot) -> Self {
        self.cgroups = Some(root);
        self
    }

    /// The cgroup root, if it has one.
    pub fn cgroups(&self) -> Option<&CgroupRoot> {
        self.cgroups.as_ref()
    }

    /// Starts `cmd` now (spawning does not wait on anything); see [`Launcher::launch`].
    pub fn spawn(
        &self,
        cmd: &Command,
        opts: LaunchOptions,
    ) -> Result<(ProcessHandle, EventStream), ExecError> {
        launch_with(cmd, opts, true, self.cgroups.as_ref())
    }
}

#[async_trait::async_trait]
impl Launcher for LocalLauncher {
    async fn launch(
        &self,
        cmd: &Command,
        opts: LaunchOptions,
    ) -> Result<(ProcessHandle, EventStream), ExecError> {
        self.spawn(cmd, opts)
    }
}

/// A launcher that rewrites every command with a [`Layer`](crate::Layer) before
/// handing it to another launcher, e.g. `LocalLauncher` through an
/// [`SshLayer`](crate::SshLayer) to run commands on a remote host.
#[derive(Debug, Clone)]
pub struct LayeredLauncher<L, N = LocalLauncher> {
    layer: L,
    inner: N,
}

impl<L: crate::Layer> LayeredLauncher<L, LocalLauncher> {
    /// Local launches through `layer`.
    pub fn local(layer: L) -> Self {
        LayeredLauncher {
            layer,
            inner: LocalLauncher::new(),
        }
    }
}

impl<L: crate::Layer, N: Launcher> LayeredLauncher<L, N> {
    /// Launches through `inner`, each command wrapped by `layer` first.
    pub fn new(layer: L, inner: N) -> Self {
        LayeredLauncher { layer, inner }
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

#[async_trait::async_trait]
impl<L, N> Launcher for LayeredLauncher<L, N>
where
    L: crate::Layer + Send + Sync,
    N: Launcher,
{
    async fn launch(
        &self,
        cmd: &Command,
        opts: LaunchOptions,
    ) -> Result<(ProcessHandle, EventStream), ExecError> {
        let wrapped = self.layer.wrap(cmd.clone());
        self.inner.launch(&wrapped, opts).await
    }
}

fn open_log(path: &PathBuf) -> Result<(File, u64), ExecError> {
    let err = |source| ExecError::LogFile {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    Ok((file, len))
}

fn open_follow(path: &PathBuf) -> Result<File, ExecError> {
    File::open(path).map_err(|source| ExecError::LogFile {
        path: path.clone(),
        source,
    })
}

/// Waits until child `pid` has ended, then reads its start time (if not yet
/// known) and reaps it.
fn reap(pid: Pid, start: &StartTime) -> ExitStatus {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    // Without reaping, and without holding `start` (the handle may want it meanwhile).
    let ended = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
    while let Err(rustix::io::Errno::INTR) | Ok(None) = waitid(WaitId::Pid(pid), ended) {}
    let _known = start.before_reap();
    loop {
        match waitid(WaitId::Pid(pid), WaitIdOptions::EXITED) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(Some(st)) => return pump::wait_status(st),
            _ => return ExitStatus::Unknown,
        }
    }
}

/// Kills the group (and cgroup) of a child that could not be set up, and reaps it.
fn abandon(pid: Pid, start: &StartTime, cgroup: Option<&Path>) -> ExitStatus {
    if let Some(dir) = cgroup {
        let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
    }
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    reap(pid, start)
}

/// Why a spawn failed: joining the cgroup when its `cgroup.procs` cannot be
/// written, else what [`crate::spawn_cause::explain`] finds.
fn spawn_cause(cmd: &Command, cgroup: Option<&Path>, source: &std::io::Error) -> String {
    if let Some(dir) = cgroup {
        let procs = dir.join("cgroup.procs");
        if let Err(e) = rustix::fs::access(&procs, rustix::fs::Access::WRITE_OK) {
            return format!(
                "cannot join cgroup {}: {}",
                dir.display(),
                std::io::Error::from(e)
            );
        }
    }
    crate::spawn_cause::explain(cmd, source)
}

/// Launches, in a new cgroup below `cgroups` when the options name one;
/// `use_pidfd: false` makes it wait for the exit on a thread as it does
/// where pidfds are unavailable.
fn launch_with(
    cmd: &Command,
    opts: LaunchOptions,
    use_pidfd: bool,
    cgroups: Option<&CgroupRoot>,
) -> Result<(ProcessHandle, EventStream), ExecError> {
    let spawn_err = |source: std::io::Error| ExecError::Spawn {
        program: cmd.program().to_owned(),
        cause: source.to_string(),
        source,
    };
    let pump = Pump::get().map_err(spawn_err)?;
    let marker = opts.marker.as_ref().map(EnvMarker::unique);
    let marked;
    let cmd = match &marker {
        Some(m) => {
            marked = cmd.clone().env(&m.name, &m.value);
            &marked
        }
        None => cmd,
    };
    let cgroup = match (cgroups, &opts.cgroup) {
        (Some(root), Some(name)) => {
            Some(root.new_cgroup(name).map_err(|source| ExecError::Cgroup {
                path: root.path().join(name),
                source,
            })?)
        }
        _ => None,
    };
    let (cgroup, procs) = match cgroup {
        Some((dir, procs)) => (Some(dir), Some(procs)),
        None => (None, None),
    };
    // Nothing runs in a cgroup made for a launch that failed.
    let unmade = |e: ExecError| {
        if let Some(dir) = &cgroup {
            let _ = std::fs::remove_dir(dir);
        }
        e
    };
    let mut command = cmd.to_std(procs);
    command.stdin(match cmd.get_stdin() {
        StdinMode::Null => Stdio::null(),
        StdinMode::Piped => Stdio::piped(),
    });
    // The log files to follow, each from its length before the launch.
    let mut follow = Vec::new();
    match &opts.output {
        OutputMode::Pipes => {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        OutputMode::Files { stdout, stderr } => {
            let (out, out_len) = open_log(stdout).map_err(unmade)?;
            let (err, err_len) = if stderr == stdout {
                (
                    out.try_clone()
                        .map_err(|source| ExecError::LogFile {
                            path: stderr.clone(),
                            source,
                        })
                        .map_err(unmade)?,
                    out_len,
                )
            } else {
                open_log(stderr).map_err(unmade)?
            };
            follow.push(FileSource::new(
                stdout.clone(),
                open_follow(stdout).map_err(unmade)?,
                OutputStream::Stdout,
                opts.max_line_bytes,
                out_len,
            ));
            if stderr != stdout {
                follow.push(FileSource::new(
                    stderr.clone(),
                    open_follow(stderr).map_err(unmade)?,
                    OutputStream::Stderr,
                    opts.max_line_bytes,
                    err_len,
                ));
            }
            command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        }
    }
    let mut child = command.spawn().map_err(|source| {
        unmade(ExecError::Spawn {
            program: cmd.program().to_owned(),
            cause: spawn_cause(cmd, cgroup.as_deref(), &source),
            source,
        })
    })?;
    drop(command);
    let pid = child.id();
    let raw_pid = Pid::from_child(&child);
    // Nothing but the pump (or `reap`) reaps the child: until then its pid is
    // its own, its start time can be read when first needed, and a pidfd
    // opened now surely refers to it.
    let start = StartTime::new(pid);
    let offsets = LogOffsets {
        stdout: follow.first().map_or(0, |f| f.start()),
        stderr: follow.get(1).map_or(0, |f| f.start()),
    };
    let id = pump.next_id();
    let set_up = (|| {
        let stdin = child.stdin.take().map(Async::new).transpose()?;
        let (shared, output) = match opts.output {
            OutputMode::Pipes => {
                let out = PipeSource::new(
                    child.stdout.take().map(Into::into),
                    OutputStream::Stdout,
                    opts.max_line_bytes,
                )?;
                let err = PipeSource::new(
                    child.stderr.take().map(Into::into),
                    OutputStream::Stderr,
                    opts.max_line_bytes,
                )?;
                (Shared::new(opts.buffer_events), Output::Pipes { out, err })
            }
            OutputMode::Files { .. } => (
                pump.files_queue(id, opts.buffer_events),
                Output::Files(follow),
            ),
        };
        let pidfd = if use_pidfd {
            rustix::process::pidfd_open(raw_pid, rustix::process::PidfdFlags::empty()).ok()
        } else {
            None
        };
        let exit = ExitCell::new();
        let watch = match pidfd {
            Some(pidfd) => ExitWatch::Reap {
                pidfd,
                start: start.clone(),
            },
            None => ExitWatch::Reported,
        };
        let reported = matches!(watch, ExitWatch::Reported);
        pump.register(
            id,
            Watch {
                shared: shared.clone(),
                exit: exit.clone(),
                watch,
                output,
            },
        )?;
        Ok((stdin, shared, exit, reported))
    })();
    let (stdin, shared, exit, reported) = match set_up {
        Ok(parts) => parts,
        Err(e) => {
            // Not registered: nobody else reaps it.
            abandon(raw_pid, &start, cgroup.as_deref());
            return Err(unmade(spawn_err(e)));
        }
    };
    if reported {
        // No pidfd: a small thread waits for the exit.
        let (to, known) = (pump.clone(), start.clone());
        let waiter = std::thread::Builder::new()
            .name(format!("harness-reap-{pid}"))
            .stack_size(64 * 1024)
            .spawn(move || to.report_exit(id, reap(raw_pid, &known)));
        if let Err(e) = waiter {
            pump.report_exit(id, abandon(raw_pid, &start, cgroup.as_deref()));
            return Err(unmade(spawn_err(e)));
        }
    }
    let stream = EventStream::new(shared, pid, offsets);
    let handle = ProcessHandle {
        pid,
        start,
        exit,
        stdin: async_lock::Mutex::new(stdin),
        scope: ProcessScope { cgroup, marker },
        base: cgroups.map(|r| r.path().to_owned()),
    };
    Ok((handle, stream))
}

/// Control over a process this program started: signals, stop, wait, stdin.
///
/// The process leads a process group of its own. [`signal`](Self::signal),
/// [`stop`](Self::stop) and [`kill`](Self::kill) act on every process of its
/// cgroup when it has one, else on its group, its descendants and the
/// processes carrying its [marker](LaunchOptions::marker) (ADR 021).
/// Dropping the handle leaves the process running (and still reaped).
#[derive(Debug)]
pub struct ProcessHandle {
    pid: u32,
    /// Read from `/proc` when first asked for (see [`StartTime`]).
    start: Arc<StartTime>,
    exit: Arc<ExitCell>,
    stdin: async_lock::Mutex<Option<Async<ChildStdin>>>,
    scope: ProcessScope,
    /// The cgroup root: parents of the cgroup left empty are removed up to it.
    base: Option<PathBuf>,
}

impl ProcessHandle {
    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pid and start time, to persist and re-attach later. The start time
    /// is read from `/proc` on the first call (the process is not reaped
    /// before it is known, so it is this process's even after it ended).
    pub fn identity(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.pid,
            start_time: self.start.get(),
        }
    }

    /// Its cgroup and marker: persist them with [`identity`](Self::identity)
    /// so that a later attach stops all of it.
    pub fn scope(&self) -> &ProcessScope {
        &self.scope
    }

    fn reach(&self) -> Reach<'_> {
        Reach {
            leader: self.identity(),
            leads_group: true,
            scope: &self.scope,
            base: self.base.as_deref(),
        }
    }

    /// How it ended, if it has.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.exit.get()
    }

    /// Sends `sig` to every process of it (its cgroup, else its group,
    /// descendants and marked processes).
    /// [`ExecError::NotRunning`] when none is left.
    pub fn signal(&self, sig: Signal) -> Result<(), ExecError> {
        if self.reach().signal(sig)? {
            Ok(())
        } else {
            Err(ExecError::NotRunning { pid: self.pid() })
        }
    }

    /// Sends `sig` to the process itself only, not the rest of its group.
    pub fn signal_leader(&self, sig: Signal) -> Result<(), ExecError> {
        if self.exit.get().is_some() {
            return Err(ExecError::NotRunning { pid: self.pid() });
        }
        proc::signal_process(self.pid(), sig)
    }

    /// Stops all of it: SIGTERM, up to `grace` for every process of it to
    /// end, then SIGKILL (`cgroup.kill` for a cgroup, which is then removed).
    /// Returns once no process of it remains, with how the process itself
    /// ended.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus, ExecError> {
        self.reach().stop(grace).await?;
        Ok(self.exit.wait().await)
    }

    /// SIGKILL to all of it; returns once none of it remains.
    pub async fn kill(&self) -> Result<ExitStatus, ExecError> {
        self.stop(Duration::ZERO).await
    }

    /// Waits until the process ends (it is reaped); other members of its group
    /// may still run.
    pub async fn wait(&self) -> Result<ExitStatus, ExecError> {
        Ok(self.exit.wait().await)
    }

    /// Writes all of `data` to the process's stdin ([`StdinMode::Piped`] only).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ExecError> {
        let mut guard = self.stdin.lock().await;
        let pipe = guard
            .as_mut()
            .ok_or(ExecError::NoStdin { pid: self.pid() })?;
        let res = async {
            pipe.write_all(data).await?;
            pipe.flush().await
        }
        .await;
        res.map_err(|source| ExecError::Stdin {
            pid: self.pid(),
            source,
        })
    }

    /// Closes stdin: the process reads end of file. Closing twice is fine.
    pub async fn close_stdin(&self) -> Result<(), ExecError> {
        let pipe = self.stdin.lock().await.take();
        if let Some(mut pipe) = pipe {
            pipe.close().await.map_err(|source| ExecError::Stdin {
                pid: self.pid(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::StreamExt;

    use super::*;
    use crate::ProcessEvent;

    #[test]
    fn without_a_pidfd_the_exit_is_reaped_on_a_thread() {
        futures_lite::future::block_on(async {
            let cmd = Command::new("sh").arg("-c").arg("echo hi; exit 4");
            let (h, mut ev) = launch_with(&cmd, LaunchOptions::default(), false, None).unwrap();
            let mut events = Vec::new();
            while let Some(e) = ev.next().await {
                events.push(e);
            }
            assert_eq!(
                events.first(),
                Some(&ProcessEvent::Started { pid: h.pid() })
            );
            assert!(matches!(&events[1], ProcessEvent::Output(l) if l.text() == "hi"));
            assert_eq!(
                events.last(),
                Some(&ProcessEvent::Exited(ExitStatus::Code(4)))
            );
            assert_eq!(events.len(), 3);
            assert_eq!(h.wait().await.unwrap(), ExitStatus::Code(4));
            assert_ne!(h.identity().start_time, 0);
        });

        // A long runner: its start time is readable while it runs, and the
        // waiting thread does not hold it.
        let (h, _ev) = launch_with(
            &Command::new("sleep").arg("300"),
            LaunchOptions::default(),
            false,
            None,
        )
        .unwrap();
        let id = h.identity();
        assert_eq!(ProcessIdentity::of(h.pid()).unwrap(), id);
        let status = futures_lite::future::block_on(h.kill()).unwrap();
        assert_eq!(status, ExitStatus::Signal(9));
    }
}
