//! Starting processes we own: [`Launcher`], [`LocalLauncher`], [`ProcessHandle`].

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_process::ChildStdin;
use futures_lite::AsyncWriteExt;
use harness_core::{ExitStatus, OutputStream, Signal};

use crate::events::{EventStream, ExitCell, LogOffsets, Shared};
use crate::proc::{self, ProcessIdentity};
use crate::pump::{self, FileSource};
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
    /// Pipes, 16 KiB lines, 8192 events.
    fn default() -> Self {
        LaunchOptions {
            output: OutputMode::Pipes,
            max_line_bytes: 16 * 1024,
            buffer_events: 8192,
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

/// Starts commands as local processes, each in a process group of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLauncher;

impl LocalLauncher {
    /// A local launcher.
    pub fn new() -> Self {
        LocalLauncher
    }

    /// Starts `cmd` now (spawning does not wait on anything); see [`Launcher::launch`].
    pub fn spawn(
        &self,
        cmd: &Command,
        opts: LaunchOptions,
    ) -> Result<(ProcessHandle, EventStream), ExecError> {
        launch_local(cmd, opts)
    }
}

#[async_trait::async_trait]
impl Launcher for LocalLauncher {
    async fn launch(
        &self,
        cmd: &Command,
        opts: LaunchOptions,
    ) -> Result<(ProcessHandle, EventStream), ExecError> {
        launch_local(cmd, opts)
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
            inner: LocalLauncher,
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

fn exit_status(st: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        _ => ExitStatus::Unknown,
    }
}

fn launch_local(
    cmd: &Command,
    opts: LaunchOptions,
) -> Result<(ProcessHandle, EventStream), ExecError> {
    let spawn_err = |source| ExecError::Spawn {
        program: cmd.program().to_owned(),
        source,
    };
    let mut command = async_process::Command::from(cmd.to_std());
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
            let (out, out_len) = open_log(stdout)?;
            let (err, err_len) = if stderr == stdout {
                (
                    out.try_clone().map_err(|source| ExecError::LogFile {
                        path: stderr.clone(),
                        source,
                    })?,
                    out_len,
                )
            } else {
                open_log(stderr)?
            };
            follow.push(FileSource::new(
                open_follow(stdout)?,
                OutputStream::Stdout,
                opts.max_line_bytes,
                out_len,
            ));
            if stderr != stdout {
                follow.push(FileSource::new(
                    open_follow(stderr)?,
                    OutputStream::Stderr,
                    opts.max_line_bytes,
                    err_len,
                ));
            }
            command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        }
    }
    let mut child = command.spawn().map_err(spawn_err)?;
    let pid = child.id();
    // The child exists (it may already be a zombie, which still has its stat).
    let identity = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
    let offsets = LogOffsets {
        stdout: follow.first().map_or(0, |f| f.start()),
        stderr: follow.get(1).map_or(0, |f| f.start()),
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let shared = Shared::new(opts.buffer_events);
    let exit = ExitCell::new();

    let waiter = {
        let exit = exit.clone();
        async move {
            let status = match child.status().await {
                Ok(st) => exit_status(st),
                Err(_) => ExitStatus::Unknown,
            };
            exit.set(status);
        }
    };
    let reader: futures_lite::future::Boxed<()> = match opts.output {
        OutputMode::Pipes => Box::pin(pump::pump_pipes(
            shared.clone(),
            exit.clone(),
            stdout,
            stderr,
            opts.max_line_bytes,
        )),
        OutputMode::Files { .. } => {
            Box::pin(pump::follow_files(shared.clone(), exit.clone(), follow))
        }
    };
    let spawned = std::thread::Builder::new()
        .name(format!("harness-exec-{pid}"))
        .stack_size(256 * 1024)
        .spawn(move || {
            futures_lite::future::block_on(futures_lite::future::zip(waiter, reader));
        });
    if let Err(e) = spawned {
        let _ = proc::signal_group(identity, Signal::KILL);
        return Err(spawn_err(e));
    }
    let stream = EventStream::new(shared, pid, offsets);
    let handle = ProcessHandle {
        identity,
        exit,
        stdin: async_lock::Mutex::new(stdin),
    };
    Ok((handle, stream))
}

/// Control over a process this program started: signals, stop, wait, stdin.
///
/// The process leads a process group of its own; [`signal`](Self::signal),
/// [`stop`](Self::stop) and [`kill`](Self::kill) act on the whole group.
/// Dropping the handle leaves the process running (and still reaped).
#[derive(Debug)]
pub struct ProcessHandle {
    identity: ProcessIdentity,
    exit: Arc<ExitCell>,
    stdin: async_lock::Mutex<Option<ChildStdin>>,
}

impl ProcessHandle {
    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.identity.pid
    }

    /// The pid and start time, to persist and re-attach later.
    pub fn identity(&self) -> ProcessIdentity {
        self.identity
    }

    /// How it ended, if it has.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.exit.get()
    }

    /// Sends `sig` to every process of the group.
    /// [`ExecError::NotRunning`] when none is left.
    pub fn signal(&self, sig: Signal) -> Result<(), ExecError> {
        if proc::signal_group(self.identity, sig)? {
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

    /// Stops the whole group: SIGTERM, up to `grace` for every process of the
    /// group to end, then SIGKILL. Returns once no process of the group remains,
    /// with how the process itself ended.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus, ExecError> {
        proc::stop_group(self.identity, grace).await?;
        Ok(self.exit.wait().await)
    }

    /// SIGKILL to the whole group; returns once none of it remains.
    pub async fn kill(&self) -> Result<ExitStatus, ExecError> {
        proc::kill_group(self.identity).await?;
        Ok(self.exit.wait().await)
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
