//! The executor of local processes, on `command-executor`.
//!
//! Each service runs in a process group of its own and, given a
//! [`CgroupRoot`], in a cgroup of its own (`<root>/<project>/<service>/<run>`);
//! its environment carries [`RUN_MARKER`]. Stopping ends everything it
//! started: the whole cgroup, else its group, its descendants and what still
//! carries its marker (ADR 021). With a log directory its output goes to
//! `stdout.log` / `stderr.log` there, so it outlives the daemon and a new
//! daemon re-adopts it from its [`ProcessRecord`] (pid + start time, guarding
//! against pid reuse, its cgroup and marker, and log offsets to resume with
//! no gap).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use command_executor::{
    AttachTarget, AttachedHandle, Attacher, CgroupRoot, Command, EventStream, ExecError,
    LaunchOptions, LocalAttacher, LocalLauncher, LogOffsets, OutputMode, ProcessEvent,
    ProcessHandle, ProcessIdentity, ProcessScope,
};
use futures_lite::{Stream, StreamExt};
use harness_config::{ServiceSpec, Target};
use harness_core::{ExitStatus, ServiceKind, Signal};
use serde::{Deserialize, Serialize};

use crate::executor::{
    ExecOutcome, ExecutorError, InstanceEvent, InstanceRecord, Launched, ServiceExecutor,
    ServiceInstance, StartContext,
};

/// What is persisted of a local process (the `data` of its [`InstanceRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Pid and start time.
    pub identity: ProcessIdentity,
    /// The stdout log, if output goes to files.
    pub stdout_log: Option<PathBuf>,
    /// The stderr log, if output goes to files.
    pub stderr_log: Option<PathBuf>,
    /// How far the logs were delivered.
    pub offsets: LogOffsets,
    /// Its cgroup and marker (absent from records of older daemons).
    #[serde(default, skip_serializing_if = "ProcessScope::is_empty")]
    pub scope: ProcessScope,
}

/// The environment variable each process service gets, set to a value
/// unique to its run: what it starts inherits it, so that stopping without a
/// cgroup finds what left its process group (ADR 021).
pub const RUN_MARKER: &str = "HARNESS_RUN_ID";

/// Runs services of kind `process` as local processes.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    launcher: LocalLauncher,
    attacher: LocalAttacher,
    max_line_bytes: usize,
    buffer_events: usize,
}

impl Default for ProcessExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessExecutor {
    /// An executor with command-executor's default line and buffer limits.
    pub fn new() -> Self {
        let d = LaunchOptions::default();
        ProcessExecutor {
            launcher: LocalLauncher::new(),
            attacher: LocalAttacher::new(),
            max_line_bytes: d.max_line_bytes,
            buffer_events: d.buffer_events,
        }
    }

    /// Runs each service in a cgroup of its own below `root`, and stops
    /// re-adopted services through the cgroups `root` owns.
    pub fn with_cgroups(mut self, root: CgroupRoot) -> Self {
        self.launcher = self.launcher.with_cgroups(root.clone());
        self.attacher = self.attacher.with_cgroups(root);
        self
    }

    fn options(&self, output: OutputMode, cgroup: String) -> LaunchOptions {
        LaunchOptions {
            output,
            max_line_bytes: self.max_line_bytes,
            buffer_events: self.buffer_events,
            cgroup: Some(cgroup),
            marker: Some(RUN_MARKER.to_owned()),
        }
    }
}

fn start_err(spec: &ServiceSpec, e: impl Into<crate::executor::BoxError>) -> ExecutorError {
    ExecutorError::Start {
        service: spec.name.to_string(),
        source: e.into(),
    }
}

/// Who a process service runs as: `user:` resolved through the system user
/// database (NSS: `/etc/passwd`, `/etc/group`, LDAP, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunAs {
    uid: u32,
    /// The primary group; `None` keeps the daemon's.
    gid: Option<u32>,
    /// The supplementary groups (the primary one included).
    groups: Vec<u32>,
    /// The user's name and home directory, when the database knows the user.
    account: Option<(String, PathBuf)>,
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`; a group by name or
/// number). A name the database does not know is an error; a numeric uid it does
/// not know runs as that uid with the given group (else the daemon's) and no
/// supplementary groups, as `docker run --user` does. A known user gets the
/// groups it is a member of, as a login would, plus the group given after `:`
/// (which becomes its primary group).
fn resolve_user(user: &str) -> Result<RunAs, String> {
    use nix::unistd::{Group, User, getgrouplist};
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = match u.parse::<u32>() {
        Ok(uid) => User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map_err(|e| format!("looking up uid {uid} in the user database: {e}"))?
            .ok_or(uid),
        Err(_) => User::from_name(u)
            .map_err(|e| format!("looking up user `{u}` in the user database: {e}"))?
            .map(Ok)
            .ok_or_else(|| format!("user `{u}` does not exist in the system user database"))?,
    };
    let gid = match g {
        None => entry.as_ref().ok().map(|e| e.gid.as_raw()),
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("looking up group `{g}` in the group database: {e}"))?
                .ok_or_else(|| format!("group `{g}` does not exist in the system group database"))?
                .gid
                .as_raw(),
        }),
    };
    Ok(match entry {
        Err(uid) => RunAs {
            uid,
            gid,
            groups: gid.into_iter().collect(),
            account: None,
        },
        Ok(e) => {
            let primary = gid.unwrap_or(e.gid.as_raw());
            let name = std::ffi::CString::new(e.name.as_str())
                .map_err(|_| format!("user name `{}` holds a NUL byte", e.name))?;
            // The groups a login of the user gets (its own primary group included),
            // plus the group chosen with `user:group`.
            let mut groups: Vec<u32> = getgrouplist(&name, e.gid)
                .map_err(|err| format!("listing the groups of user `{}`: {err}", e.name))?
                .into_iter()
                .map(|g| g.as_raw())
                .collect();
            if !groups.contains(&primary) {
                groups.push(primary);
            }
            RunAs {
                uid: e.uid.as_raw(),
                gid: Some(primary),
                groups,
                account: Some((e.name, e.dir)),
            }
        }
    })
}

/// `cmd` run as `user` (a process service's `user:`) the way the service itself runs:
/// the ids and groups the system user database gives the user, and its `HOME`, `USER` and
/// `LOGNAME` unless the service's environment `env` sets them. For a command run beside
/// the service (`harness exec`). The lookup goes through NSS and may block: call it off an
/// async executor's threads. Fails naming a user or group the database does not know.
pub fn as_user(
    cmd: Command,
    user: &str,
    env: &BTreeMap<String, String>,
) -> Result<Command, String> {
    Ok(run_as(cmd, resolve_user(user)?, env))
}

/// Applies `who` to `cmd`: ids, groups, and `HOME`, `USER` and `LOGNAME` of the
/// user unless the service's environment `env` sets them. A uid the database
/// does not know gets `HOME=/` and no `USER`/`LOGNAME`, as in a container.
fn run_as(mut cmd: Command, who: RunAs, env: &BTreeMap<String, String>) -> Command {
    cmd = cmd.user(who.uid).groups(who.groups);
    if let Some(gid) = who.gid {
        cmd = cmd.group(gid);
    }
    let (name, home) = match who.account {
        Some((name, home)) => (Some(name), home.to_string_lossy().into_owned()),
        None => (None, "/".to_owned()),
    };
    let mut vars = vec![("HOME", Some(home))];
    vars.extend(["USER", "LOGNAME"].map(|k| (k, name.clone())));
    for (key, value) in vars {
        if env.contains_key(key) {
            continue;
        }
        cmd = match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

#[async_trait::async_trait]
impl ServiceExecutor for ProcessExecutor {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Process
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let Target::Process { binary, args } = &spec.target else {
            return Err(ExecutorError::Unsupported {
                service: spec.name.to_string(),
                kind: ServiceKind::Process,
                what: "a target other than `process`",
            });
        };
        let mut cmd = Command::new(binary.clone())
            .args(args.iter().cloned())
            .envs(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(dir) = &spec.working_dir {
            cmd = cmd.current_dir(dir.clone());
        }
        if let Some(user) = &spec.user {
            let u = user.clone();
            // NSS lookups may block (files, LDAP, ...).
            let who = blocking::unblock(move || resolve_user(&u))
                .await
                .map_err(|e| start_err(spec, e))?;
            cmd = run_as(cmd, who, &ctx.env);
        }
        let output = match &ctx.log_dir {
            Some(dir) => {
                let d = dir.clone();
                blocking::unblock(move || std::fs::create_dir_all(&d))
                    .await
                    .map_err(|e| {
                        start_err(spec, format!("log directory {}: {e}", dir.display()))
                    })?;
                OutputMode::Files {
                    stdout: dir.join("stdout.log"),
                    stderr: dir.join("stderr.log"),
                }
            }
            None => OutputMode::Pipes,
        };
        let (stdout_log, stderr_log) = match &output {
            OutputMode::Files { stdout, stderr } => (Some(stdout.clone()), Some(stderr.clone())),
            OutputMode::Pipes => (None, None),
        };
        // fork/exec blocks: keep it off the async executor's threads.
        let cgroup = format!("{}/{}", ctx.project, spec.name);
        let (launcher, opts) = (self.launcher.clone(), self.options(output, cgroup));
        let (handle, stream) = blocking::unblock(move || launcher.spawn(&cmd, opts))
            .await
            .map_err(|e| match e {
                // Its cause names what is missing: the binary, the directory, the limit.
                command_executor::ExecError::Spawn { cause, .. } => start_err(spec, cause),
                other => start_err(spec, other),
            })?;
        let offsets = Arc::new(Mutex::new(stream.offsets()));
        let instance = ProcessInstance {
            service: spec.name.to_string(),
            identity: handle.identity(),
            scope: handle.scope().clone(),
            handle: Handle::Owned(handle),
            stdout_log,
            stderr_log,
            offsets: offsets.clone(),
            env: ctx.env.clone(),
            working_dir: spec.working_dir.clone(),
        };
        Ok(Launched {
            instance: Arc::new(instance),
            events: Box::pin(Events {
                inner: stream,
                offsets,
            }),
        })
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let err = |e: crate::executor::BoxError| ExecutorError::Attach {
            service: spec.name.to_string(),
            source: e,
        };
        let rec: ProcessRecord = serde_json::from_value(record.data.clone()).map_err(|e| {
            err(format!("the persisted record is not a process record: {e}").into())
        })?;
        let target = AttachTarget {
            identity: rec.identity,
            stdout_log: rec.stdout_log.clone(),
            stderr_log: rec.stderr_log.clone(),
            follow_from: rec.offsets.into(),
            scope: rec.scope,
        };
        let (handle, stream) = self
            .attacher
            .attach(target)
            .await
            .map_err(|e| err(e.into()))?;
        let offsets = Arc::new(Mutex::new(rec.offsets));
        let instance = ProcessInstance {
            service: spec.name.to_string(),
            identity: handle.identity(),
            scope: handle.scope().clone(),
            handle: Handle::Attached(handle),
            stdout_log: rec.stdout_log,
            stderr_log: rec.stderr_log,
            offsets: offsets.clone(),
            env: ctx.env.clone(),
            working_dir: spec.working_dir.clone(),
        };
        Ok(Launched {
            instance: Arc::new(instance),
            events: Box::pin(Events {
                inner: stream,
                offsets,
            }),
        })
    }
}

/// The event stream of a process, keeping the delivered log offsets up to date.
struct Events {
    inner: EventStream,
    offsets: Arc<Mutex<LogOffsets>>,
}

impl Stream for Events {
    type Item = InstanceEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<InstanceEvent>> {
        let this = &mut *self;
        let ev = match this.inner.poll_next(cx) {
            Poll::Ready(Some(ev)) => ev,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        *this.offsets.lock().unwrap_or_else(|p| p.into_inner()) = this.inner.offsets();
        Poll::Ready(Some(match ev {
            ProcessEvent::Started { pid } => InstanceEvent::Started { pid: Some(pid) },
            ProcessEvent::Output(line) => InstanceEvent::Output(line),
            ProcessEvent::Dropped { lines } => InstanceEvent::Dropped { lines },
            ProcessEvent::Exited(status) => InstanceEvent::Exited(status),
        }))
    }
}

enum Handle {
    Owned(ProcessHandle),
    Attached(AttachedHandle),
}

struct ProcessInstance {
    service: String,
    identity: ProcessIdentity,
    scope: ProcessScope,
    handle: Handle,
    stdout_log: Option<PathBuf>,
    stderr_log: Option<PathBuf>,
    offsets: Arc<Mutex<LogOffsets>>,
    env: std::collections::BTreeMap<String, String>,
    working_dir: Option<PathBuf>,
}

impl ProcessInstance {
    fn signal(&self, sig: Signal) -> Result<(), ExecError> {
        match &self.handle {
            Handle::Owned(h) => h.signal(sig),
            Handle::Attached(h) => h.signal(sig),
        }
    }

    async fn wait(&self) -> Result<ExitStatus, ExecError> {
        match &self.handle {
            Handle::Owned(h) => h.wait().await,
            Handle::Attached(h) => h.wait().await,
        }
    }

    async fn stop_group(&self, grace: Duration) -> Result<ExitStatus, ExecError> {
        match &self.handle {
            Handle::Owned(h) => h.stop(grace).await,
            Handle::Attached(h) => h.stop(grace).await,
        }
    }
}

#[async_trait::async_trait]
impl ServiceInstance for ProcessInstance {
    fn pid(&self) -> Option<u32> {
        Some(self.identity.pid)
    }

    fn record(&self) -> InstanceRecord {
        let rec = ProcessRecord {
            identity: self.identity,
            stdout_log: self.stdout_log.clone(),
            stderr_log: self.stderr_log.clone(),
            offsets: *self.offsets.lock().unwrap_or_else(|p| p.into_inner()),
            scope: self.scope.clone(),
        };
        InstanceRecord {
            kind: ServiceKind::Process,
            pid: Some(self.identity.pid),
            container_id: None,
            host: "local".to_owned(),
            data: serde_json::to_value(rec).unwrap_or_default(),
        }
    }

    async fn stop(&self, signal: Signal, grace: Duration) -> Result<(), ExecutorError> {
        let err = |e: ExecError| ExecutorError::Stop {
            service: self.service.clone(),
            source: e.into(),
        };
        let result = if signal == Signal::TERM {
            self.stop_group(grace).await
        } else {
            // A custom first signal: send it, give the process its grace, then
            // TERM+KILL whatever of the group is left.
            match self.signal(signal) {
                Ok(()) => {
                    let exited = async { self.wait().await.is_ok() };
                    let timer = async {
                        async_io::Timer::at(Instant::now() + grace).await;
                        false
                    };
                    futures_lite::future::or(exited, timer).await;
                    self.stop_group(Duration::ZERO).await
                }
                Err(ExecError::NotRunning { .. }) => self.stop_group(Duration::ZERO).await,
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(_) | Err(ExecError::NotRunning { .. }) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn exec(
        &self,
        command: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError> {
        let mut cmd = Command::new(command)
            .args(args.iter().cloned())
            .envs(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(dir) = &self.working_dir {
            cmd = cmd.current_dir(dir.clone());
        }
        run_check(&self.service, &cmd, timeout).await
    }
}

/// Runs a check command locally: success if it exits 0 within `timeout`
/// (on timeout its whole process group is killed). A plain child of this
/// process, reaped on the blocking pool: checks run often, so they skip the
/// per-process output reader a service gets.
pub(crate) async fn run_check(
    service: &str,
    cmd: &Command,
    timeout: Duration,
) -> Result<ExecOutcome, ExecutorError> {
    use std::os::unix::process::CommandExt;
    let mut std_cmd = std::process::Command::new(cmd.program());
    std_cmd
        .args(cmd.get_args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => std_cmd.env(k, v),
            None => std_cmd.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        std_cmd.current_dir(dir);
    }
    let program = cmd.program().to_owned();
    let child = blocking::unblock(move || std_cmd.spawn())
        .await
        .map_err(|e| ExecutorError::Probe {
            service: service.to_owned(),
            source: format!("cannot start `{program}`: {e}").into(),
        })?;
    let pid = child.id();
    let run = async {
        blocking::unblock(move || child.wait_with_output())
            .await
            .ok()
    };
    let timer = async {
        async_io::Timer::at(Instant::now() + timeout).await;
        None
    };
    let Some(output) = futures_lite::future::or(run, timer).await else {
        // Timed out (or could not be waited for): kill its whole group; the
        // blocking wait then reaps it.
        if let Some(pgid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        return Ok(ExecOutcome {
            success: false,
            detail: format!(
                "`{program}` timed out after {}",
                harness_core::duration::format_duration(timeout)
            ),
        });
    };
    let status = match (output.status.code(), output.status.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        _ => ExitStatus::Unknown,
    };
    let mut detail = format!("`{program}`: {status}");
    let text = if output.stdout.is_empty() {
        &output.stderr
    } else {
        &output.stdout
    };
    if let Some(line) = String::from_utf8_lossy(text).lines().next() {
        let line: String = line.trim().chars().take(200).collect();
        if !line.is_empty() {
            detail.push_str(": ");
            detail.push_str(&line);
        }
    }
    Ok(ExecOutcome {
        success: status.success(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_an_older_daemon_without_a_scope_still_loads() {
        let old = serde_json::json!({
            "identity": {"pid": 42, "start_time": 7},
            "stdout_log": "/s/logs/p/a/stdout.log",
            "stderr_log": "/s/logs/p/a/stderr.log",
            "offsets": {"stdout": 1, "stderr": 2}
        });
        let rec: ProcessRecord = serde_json::from_value(old.clone()).unwrap();
        assert!(rec.scope.is_empty());
        assert_eq!(
            serde_json::to_value(&rec).unwrap(),
            old,
            "written as before"
        );

        let scoped = ProcessRecord {
            scope: ProcessScope {
                cgroup: Some(PathBuf::from("/cg/harness-1/p/a/1")),
                marker: Some(command_executor::EnvMarker::unique(RUN_MARKER)),
            },
            ..rec
        };
        let back: ProcessRecord =
            serde_json::from_value(serde_json::to_value(&scoped).unwrap()).unwrap();
        assert_eq!(back, scoped);
    }
}
