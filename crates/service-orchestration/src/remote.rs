//! The executor of `remote` services: processes on other hosts, over ssh.
//!
//! A remote service runs detached on its node, in a session and process group
//! of its own, under a small `sh` wrapper: the wrapper writes its pid and start
//! time, runs the program with stdout/stderr appended to log files, and writes
//! the exit status to a file when the program ends. Everything lives in the
//! service's directory on the node, `~/.harness/<project>/<service>/`:
//!
//! | file | what |
//! |---|---|
//! | `pid`, `start` | the wrapper's pid (= process group) and its start time from `/proc` |
//! | `stdout.log`, `stderr.log` | the output, appended run after run |
//! | `exit` | the exit status of the last run, once it ended |
//! | `followers/<group>` | while it runs, each following process group on the node: its leader's start time and owner |
//!
//! So the service does not die when ssh drops, and a new daemon re-adopts it
//! from its [`RemoteRecord`] ([`ServiceExecutor::attach`]): the pid and start
//! time guard against pid reuse, the log offsets let the output resume with no
//! gap and no duplicate. Output is followed with `tail -c +OFFSET -F` over the
//! node's multiplexed connection; when the connection is lost the instance is
//! *unreachable* (not exited): the follower reconnects and resumes once the
//! node answers again, and reports the exit if the service ended meanwhile.
//!
//! Starting a service whose previous run still lives on the node adopts that
//! run instead of starting a second one, and a daemon that has no record of
//! a run (its state was lost) finds it there ([`RemoteExecutor::discover`]).
//!
//! ## What ends the followers on the node
//!
//! Each following session (a `tail -F` per log, and a waiter for the end)
//! runs on the node as a process group of its own (`setsid`), recorded in
//! `followers/` while it runs, and ends as a whole:
//!
//! - **when the daemon lets go of it.** A process with nothing to write never
//!   notices that its ssh channel closed, so the session's input is a pipe
//!   the daemon holds open and never writes, and the group reads it: end of
//!   input ends the group. The input ends when the session ends (its ssh
//!   client is killed), when the connection closes, and when the daemon exits
//!   or is killed with -9 (the kernel closes its end of the pipe, and the
//!   master connection, which outlives the daemon, passes the end of input on).
//! - **when the service ends.** The waiter reports the end and ends. A log
//!   follower checks the service's identity every 2 s and ends a grace
//!   (20 s) after it is gone: longer than the daemon drains the last output
//!   (10 s at most), so that no line is cut off (a daemon that holds the session ends
//!   it as soon as it has drained). `tail --pid` is not used: a tail that
//!   ended by itself before the waiter reported would look to the daemon like
//!   a lost connection.
//! - **when a new session replaces it** though the node never saw its
//!   connection close (an outage the node's sshd did not notice, a daemon
//!   gone with the network). Before each session the follower ends, from the
//!   records, the groups of its own earlier sessions and those of other
//!   daemons (which a re-attach supersedes); the other followers of the same
//!   daemon (one token per process) stay.
//!
//! So `down` (which stops the service and ends the sessions) leaves no process
//! of the project on the node, a daemon restart leaves only the new daemon's
//! followers, and a follower outlives its service by the grace and one check
//! at most.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use command_executor::shell_quote;
use futures_lite::AsyncReadExt;
use harness_config::{ServiceSpec, Target};
use harness_core::{ExitStatus, OutputLine, OutputStream, ServiceKind, Signal};
use serde::{Deserialize, Serialize};

use crate::executor::{
    BoxError, ExecOutcome, ExecutorError, InstanceEvent, InstanceRecord, Launched, ServiceExecutor,
    ServiceInstance, StartContext,
};
use crate::ssh::{FollowSlot, Reachability, SshError, SshHost, SshHosts};

/// Shell functions every remote script starts with. `st PID` prints the start
/// time of a live (non-zombie) process, or fails.
const PRELUDE: &str = r#"st() { x=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null) || return 1; set -- $x; [ "$1" = Z ] && return 1; echo "${20}"; }
sz() { if [ -f "$1" ]; then wc -c < "$1" | tr -d ' '; else echo 0; fi; }
"#;

/// Prints `running PID START STDOUT_SIZE STDERR_SIZE DIR` and ends the
/// script when the `pid` and `start` files of the service directory (the
/// current one, `$d`) name a live process: the run there already.
const RUNNING: &str = "if [ -f pid ] && [ -f start ]; then p=$(cat pid); s=$(cat start); \
     if [ -n \"$p\" ] && [ \"$(st \"$p\")\" = \"$s\" ]; then echo \"running $p $s $(sz stdout.log) $(sz stderr.log) $d\"; exit 0; fi; fi\n";

/// How long a short control command (start, stop bookkeeping, identity check)
/// may take beyond the connect timeout.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the round trip that tells whether a node answers may take (the
/// connect timeout bounds it sooner when the node is gone).
const REACH_TIMEOUT: Duration = Duration::from_secs(15);

/// How long, once the waiter reported the end of a service, its output is
/// still read until every byte the logs had then has come.
const DRAIN: Duration = Duration::from_secs(10);

/// How long a log follower on the node outlives its service when nobody ended
/// it before (a connection the node did not see close): longer than
/// [`DRAIN`], so that it never cuts a drain short.
const FOLLOW_GRACE: Duration = Duration::from_secs(DRAIN.as_secs() + 10);

/// The directory, in a service's directory on the node, where each follower
/// records its process group while it runs.
const FOLLOWERS_DIR: &str = "followers";

/// What is persisted of a remote service (the `data` of its [`InstanceRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The node (its name, or address).
    pub host: String,
    /// The service's directory on the node (absolute).
    pub dir: String,
    /// The wrapper's pid, which is also the process group.
    pub pid: u32,
    /// The wrapper's start time in clock ticks since boot (`/proc/PID/stat`).
    pub start_time: u64,
    /// How far the logs were delivered.
    pub offsets: RemoteOffsets,
    /// The working directory the program was started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The package version it runs (package services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Bytes of each log delivered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteOffsets {
    /// Of `stdout.log`.
    pub stdout: u64,
    /// Of `stderr.log`.
    pub stderr: u64,
}

/// What to run on a node: the program, its arguments and directory.
#[derive(Debug, Clone)]
pub(crate) struct RemoteLaunch {
    pub binary: String,
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub version: Option<String>,
}

/// Runs `remote` services on the nodes of the project's networks.
#[derive(Debug, Clone)]
pub struct RemoteExecutor {
    hosts: SshHosts,
    kind: ServiceKind,
}

impl RemoteExecutor {
    /// An executor over these nodes.
    pub fn new(hosts: SshHosts) -> RemoteExecutor {
        RemoteExecutor {
            hosts,
            kind: ServiceKind::Remote,
        }
    }

    pub(crate) fn for_kind(hosts: SshHosts, kind: ServiceKind) -> RemoteExecutor {
        RemoteExecutor { hosts, kind }
    }

    /// The nodes.
    pub fn hosts(&self) -> &SshHosts {
        &self.hosts
    }

    /// Why the node of `spec` cannot be observed right now, if it cannot:
    /// show the service as `unknown` with this reason.
    pub fn unknown_reason(&self, spec: &ServiceSpec) -> Option<String> {
        let host = self.hosts.get(spec.host()?).ok()?;
        match host.reachability() {
            Reachability::Unreachable { reason } => {
                Some(format!("node `{}` is unreachable: {reason}", host.name()))
            }
            _ => None,
        }
    }

    /// The service's directory on the node, relative to the login directory.
    pub fn service_dir(project: &str, service: &str) -> String {
        format!(".harness/{project}/{service}")
    }

    pub(crate) async fn launch(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
        host_name: &str,
        what: RemoteLaunch,
    ) -> Result<Launched, ExecutorError> {
        let err = |e: BoxError| ExecutorError::Start {
            service: spec.name.to_string(),
            source: e,
        };
        let host = self.hosts.get(host_name).map_err(|e| err(e.into()))?;
        if let Some(user) = &spec.user
            && user != host.user()
        {
            return Err(err(format!(
                "`user: {user}` differs from the ssh user `{}` of node `{}`: a remote service runs as the node's ssh user",
                host.user(),
                host.name()
            )
            .into()));
        }
        let dir = Self::service_dir(ctx.project.as_str(), spec.name.as_str());
        let mut program = String::from("env");
        for (k, v) in &ctx.env {
            program.push(' ');
            program.push_str(&shell_quote(&format!("{k}={v}")));
        }
        program.push(' ');
        program.push_str(&shell_quote(&what.binary));
        for a in &what.args {
            program.push(' ');
            program.push_str(&shell_quote(a));
        }
        let cd = match &what.working_dir {
            Some(wd) => format!(
                "cd \"$h\" && cd {} || {{ echo \"harness: cannot enter the working directory\" >> \"$d/stderr.log\"; echo 127 > \"$d/exit\"; exit 127; }}",
                shell_quote(wd)
            ),
            None => String::new(),
        };
        // The wrapper: $1 is the service directory.
        let wrapper = format!(
            "d=$1; h=$2; x=$(sed 's/.*) //' /proc/$$/stat); set -- $x; echo \"${{20}}\" > \"$d/start\"; \
             echo $$ > \"$d/pid.tmp\"; mv \"$d/pid.tmp\" \"$d/pid\"; \
             trap : TERM INT HUP QUIT USR1 USR2; {cd}\n\
             {program} >> \"$d/stdout.log\" 2>> \"$d/stderr.log\" < /dev/null\n\
             echo $? > \"$d/exit.tmp\"; mv \"$d/exit.tmp\" \"$d/exit\""
        );
        // A background job of a non-interactive shell is no group leader, so
        // `setsid` does not fork and `$!` is the wrapper; if it is already gone
        // (or did fork) the pid file the wrapper writes is waited for instead.
        let script = format!(
            "{PRELUDE}h=$(pwd)\nmkdir -p {dir} && cd {dir} || exit 90\nd=$(pwd)\n{RUNNING}\
             rm -f pid start exit pid.tmp exit.tmp\n\
             touch stdout.log stderr.log\n\
             o1=$(sz stdout.log); o2=$(sz stderr.log)\n\
             setsid sh -c {wrapper} harness-run \"$d\" \"$h\" < /dev/null > /dev/null 2>&1 &\n\
             p=$!; s=$(st $p) && {{ echo \"started $p $s $o1 $o2 $d\"; exit 0; }}\n\
             i=0; while [ ! -f pid ]; do i=$((i+1)); if [ $i -gt 400 ]; then echo 'the service wrapper did not start' >&2; exit 91; fi; sleep 0.05; done\n\
             echo \"started $(cat pid) $(cat start) $o1 $o2 $d\"\n",
            dir = shell_quote(&dir),
            wrapper = shell_quote(&wrapper),
        );
        let out = host
            .run(&script, None, CONTROL_TIMEOUT)
            .await
            .map_err(|e| err(e.into()))?;
        if out.code != 0 {
            return Err(err(format!(
                "on node `{}`: the start script failed (exit {}): {}",
                host.name(),
                out.code,
                out.stderr_text()
            )
            .into()));
        }
        let text = out.stdout_text();
        let rec = parse_run(&text, host.name(), &what).ok_or_else(|| {
            err(format!(
                "on node `{}`: unexpected answer from the start script: {text:?}",
                host.name()
            )
            .into())
        })?;
        Ok(self.follow(spec, ctx, host, rec))
    }

    /// The run of `spec` (of project `project`) that lives on its node
    /// although no record names it (the daemon's state was lost, or the
    /// daemon died while starting it): found from the `pid` and `start` files
    /// of its directory there, which name a live process. The record to
    /// re-adopt it from, its output followed from now on (what came before is
    /// history, in the log files); `None` when no run of it lives there.
    pub async fn discover(
        &self,
        spec: &ServiceSpec,
        project: &str,
    ) -> Result<Option<InstanceRecord>, ExecutorError> {
        let err = |e: BoxError| ExecutorError::Attach {
            service: spec.name.to_string(),
            source: e,
        };
        let Some(host_name) = spec.host() else {
            return Ok(None);
        };
        let host = self.hosts.get(host_name).map_err(|e| err(e.into()))?;
        let script = format!(
            "{PRELUDE}cd {dir} 2>/dev/null || exit 0\nd=$(pwd)\n{RUNNING}",
            dir = shell_quote(&Self::service_dir(project, spec.name.as_str())),
        );
        let out = host
            .run(&script, None, CONTROL_TIMEOUT)
            .await
            .map_err(|e| err(e.into()))?;
        let text = out.stdout_text();
        if out.code != 0 {
            return Err(err(format!(
                "on node `{}`: looking for the service failed (exit {}): {}",
                host.name(),
                out.code,
                out.stderr_text()
            )
            .into()));
        }
        if text.is_empty() {
            return Ok(None);
        }
        let what = RemoteLaunch {
            binary: String::new(),
            args: Vec::new(),
            working_dir: spec
                .working_dir
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            version: None,
        };
        let rec = parse_run(&text, host.name(), &what).ok_or_else(|| {
            err(format!(
                "on node `{}`: unexpected answer when looking for the service: {text:?}",
                host.name()
            )
            .into())
        })?;
        Ok(Some(instance_record(self.kind, host.name(), rec)))
    }

    /// Builds the instance and starts following its output and exit.
    fn follow(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
        host: Arc<SshHost>,
        rec: RemoteRecord,
    ) -> Launched {
        let (tx, rx) = async_channel::bounded(256);
        let shared = Arc::new(Shared {
            offsets: Mutex::new(rec.offsets),
            consumed: Mutex::new(rec.offsets),
        });
        let instance = RemoteInstance {
            service: spec.name.to_string(),
            kind: self.kind,
            host: host.clone(),
            rec: rec.clone(),
            env: ctx.env.clone(),
            shared: shared.clone(),
        };
        let shared_events = shared.clone();
        let follower = Follower {
            slot: host.follow_slot(),
            host,
            rec,
            shared,
            tx,
            lost: AtomicBool::new(false),
            owner: new_owner(),
        };
        ctx.spawner.spawn(Box::pin(follower.run()));
        Launched {
            instance: Arc::new(instance),
            events: Box::pin(Events {
                rx: Box::pin(rx),
                shared: shared_events,
            }),
        }
    }

    pub(crate) async fn reattach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let err = |e: BoxError| ExecutorError::Attach {
            service: spec.name.to_string(),
            source: e,
        };
        let rec: RemoteRecord = serde_json::from_value(record.data.clone())
            .map_err(|e| err(format!("the persisted record is not a remote record: {e}").into()))?;
        let host = self.hosts.get(&rec.host).map_err(|e| err(e.into()))?;
        let script = format!(
            "{PRELUDE}if [ \"$(st {pid})\" = {start} ]; then echo alive; \
             elif [ -f {dir}/exit ]; then echo \"exited $(cat {dir}/exit)\"; else echo gone; fi\n",
            pid = rec.pid,
            start = rec.start_time,
            dir = shell_quote(&rec.dir),
        );
        let out = host
            .run(&script, None, CONTROL_TIMEOUT)
            .await
            .map_err(|e| err(e.into()))?;
        let text = out.stdout_text();
        if text != "alive" {
            return Err(err(format!(
                "on node `{}`: pid {} (started at tick {}) no longer runs ({text})",
                host.name(),
                rec.pid,
                rec.start_time
            )
            .into()));
        }
        Ok(self.follow(spec, ctx, host, rec))
    }
}

#[async_trait::async_trait]
impl ServiceExecutor for RemoteExecutor {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Remote
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let Target::Remote { host, binary, args } = &spec.target else {
            return Err(ExecutorError::Unsupported {
                service: spec.name.to_string(),
                kind: ServiceKind::Remote,
                what: "a target other than `remote`",
            });
        };
        let what = RemoteLaunch {
            binary: binary.clone(),
            args: args.clone(),
            working_dir: spec
                .working_dir
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            version: None,
        };
        self.launch(spec, ctx, host, what).await
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        self.reattach(spec, record, ctx).await
    }
}

/// The record of a run on node `host`, from the start script's answer
/// `running|started PID START STDOUT_SIZE STDERR_SIZE DIR`.
fn parse_run(text: &str, host: &str, what: &RemoteLaunch) -> Option<RemoteRecord> {
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() < 6 || (f[0] != "running" && f[0] != "started") {
        return None;
    }
    Some(RemoteRecord {
        host: host.to_owned(),
        pid: f[1].parse().ok()?,
        start_time: f[2].parse().ok()?,
        offsets: RemoteOffsets {
            stdout: f[3].parse().ok()?,
            stderr: f[4].parse().ok()?,
        },
        dir: text.splitn(6, ' ').nth(5)?.to_owned(),
        working_dir: what.working_dir.clone(),
        version: what.version.clone(),
    })
}

/// What is persisted of run `rec` of a service of `kind` on node `host`.
fn instance_record(kind: ServiceKind, host: &str, rec: RemoteRecord) -> InstanceRecord {
    InstanceRecord {
        kind,
        pid: Some(rec.pid),
        container_id: None,
        host: host.to_owned(),
        data: serde_json::to_value(rec).unwrap_or_default(),
    }
}

struct Shared {
    /// Bytes of each log sent to the event channel (where following resumes).
    offsets: Mutex<RemoteOffsets>,
    /// Bytes of each log the consumer took from the stream (what is persisted).
    consumed: Mutex<RemoteOffsets>,
}

impl Shared {
    fn offsets(&self) -> RemoteOffsets {
        *self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A remote service on its node.
struct RemoteInstance {
    service: String,
    kind: ServiceKind,
    host: Arc<SshHost>,
    rec: RemoteRecord,
    env: BTreeMap<String, String>,
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl ServiceInstance for RemoteInstance {
    fn pid(&self) -> Option<u32> {
        Some(self.rec.pid)
    }

    fn record(&self) -> InstanceRecord {
        let mut rec = self.rec.clone();
        rec.offsets = *self
            .shared
            .consumed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        instance_record(self.kind, self.host.name(), rec)
    }

    async fn stop(&self, signal: Signal, grace: Duration) -> Result<(), ExecutorError> {
        let tenths = (grace.as_millis() / 100).max(1);
        let script = format!(
            "{PRELUDE}p={pid}; s={start}\n\
             if [ \"$(st $p)\" = \"$s\" ]; then\n\
               kill -{sig} -$p 2>/dev/null || kill -{sig} $p 2>/dev/null\n\
               i=0; while [ \"$(st $p)\" = \"$s\" ] && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done\n\
               kill -0 -$p 2>/dev/null && kill -KILL -$p 2>/dev/null\n\
               i=0; while [ \"$(st $p)\" = \"$s\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
               if [ \"$(st $p)\" = \"$s\" ]; then echo 'the process group survived SIGKILL' >&2; exit 1; fi\n\
             fi\necho stopped\n",
            pid = self.rec.pid,
            start = self.rec.start_time,
            sig = signal.name().trim_start_matches("SIG"),
        );
        let out = self
            .host
            .run(&script, None, grace + CONTROL_TIMEOUT)
            .await
            .map_err(|e| ExecutorError::Stop {
                service: self.service.clone(),
                source: e.into(),
            })?;
        if out.code != 0 {
            return Err(ExecutorError::Stop {
                service: self.service.clone(),
                source: format!("on node `{}`: {}", self.host.name(), out.stderr_text()).into(),
            });
        }
        Ok(())
    }

    async fn unreachable(&self) -> Option<String> {
        match self.host.check(REACH_TIMEOUT).await {
            Ok(()) => None,
            Err(SshError::Unreachable { reason, .. }) => Some(format!(
                "node `{}` is unreachable: {reason}",
                self.host.name()
            )),
            Err(e @ SshError::Timeout { .. }) => Some(e.to_string()),
            Err(_) => None,
        }
    }

    async fn exec(
        &self,
        command: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError> {
        let mut line = String::new();
        if let Some(wd) = &self.rec.working_dir {
            line.push_str(&format!("cd {} || exit 126\n", shell_quote(wd)));
        }
        let mut cmd = String::from("env");
        for (k, v) in &self.env {
            cmd.push(' ');
            cmd.push_str(&shell_quote(&format!("{k}={v}")));
        }
        cmd.push(' ');
        cmd.push_str(&shell_quote(command));
        for a in args {
            cmd.push(' ');
            cmd.push_str(&shell_quote(a));
        }
        // The local deadline decides; `timeout` on the node (when it has one)
        // only makes sure a stuck check does not linger there.
        let limit = timeout.as_secs() + 2;
        line.push_str(&format!(
            "if command -v timeout >/dev/null 2>&1; then exec timeout {limit} {cmd} 2>&1; fi
exec {cmd} 2>&1"
        ));
        match self.host.run(&line, None, timeout).await {
            Ok(out) => {
                let first = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let mut detail =
                    format!("`{command}` on `{}`: exit {}", self.host.name(), out.code);
                if !first.is_empty() {
                    detail.push_str(": ");
                    detail.push_str(&first);
                }
                Ok(ExecOutcome {
                    success: out.code == 0,
                    detail,
                })
            }
            Err(SshError::Timeout { .. }) => Ok(ExecOutcome {
                success: false,
                detail: format!(
                    "`{command}` on `{}` timed out after {}",
                    self.host.name(),
                    harness_core::duration::format_duration(timeout)
                ),
            }),
            Err(e) => Err(ExecutorError::Probe {
                service: self.service.clone(),
                source: e.into(),
            }),
        }
    }
}

/// Follows one instance: its two logs and its end, across lost connections.
struct Follower {
    host: Arc<SshHost>,
    slot: FollowSlot,
    rec: RemoteRecord,
    shared: Arc<Shared>,
    tx: async_channel::Sender<Item>,
    /// The node was lost sight of and [`InstanceEvent::Unreachable`] was sent.
    lost: AtomicBool,
    /// Whose the processes following on the node are ([`new_owner`]).
    owner: String,
}

/// This process's token, shared by all its followers: on a node, the
/// followers of another daemon (which a re-attach supersedes) are told from
/// this one's by it.
fn process_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        h.write_u128(now);
        format!("{:016x}", h.finish())
    })
}

/// A new follower's name for what it runs on nodes: `<process token>.<n>`.
fn new_owner() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}.{}",
        process_token(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The script that ends, in the service directory `dir`, the following
/// processes a new session of follower `owner` replaces: those of its earlier
/// sessions and those of other daemons (whose hold a re-attach ended), still
/// there if the node did not see their connection close. Those of this
/// daemon's other followers stay; records of ended groups go.
fn sweep_script(dir: &str, owner: &str) -> String {
    format!(
        "{PRELUDE}cd {dir} 2>/dev/null || exit 0\n\
         for f in {FOLLOWERS_DIR}/*; do\n\
           [ -f \"$f\" ] || continue\n\
           g=${{f##*/}}; s=; o=; read -r s o < \"$f\"\n\
           if [ -n \"$s\" ] && [ \"$(st \"$g\")\" = \"$s\" ]; then\n\
             case \"$o\" in {me}) ;; {process}.*) continue ;; esac\n\
             kill -TERM -\"$g\" 2>/dev/null\n\
           fi\n\
           rm -f \"$f\"\n\
         done\n",
        dir = shell_quote(dir),
        me = shell_quote(owner),
        process = shell_quote(process_token()),
    )
}

/// The script of one following session of follower `owner`: `work` (a
/// script with the [`PRELUDE`] functions and `args` as `$1`...) runs in the
/// service directory `dir` as a process group of its own, recorded in
/// [`FOLLOWERS_DIR`] while it runs. The group ends as a whole when the
/// session's input ends (the daemon let go: its end of the pipe closed, with
/// the ssh client, the connection or the daemon itself) or when `work` ends
/// it with `kill -TERM 0`. The script itself stays the session's process
/// until then, so that sshd keeps the input open.
fn session_script(dir: &str, owner: &str, work: &str, args: &[String]) -> String {
    let group = format!("{PRELUDE}{work}\ncat > /dev/null\nkill -TERM 0\n");
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    // An asynchronous command's input is /dev/null unless redirected, so the
    // session's input goes to the group as fd 3; started in the background,
    // `setsid` does not fork and `$!` is the group.
    format!(
        "{PRELUDE}cd {dir} || exit 90\n\
         exec 3<&0\n\
         setsid sh -c {group} harness-follow {args} <&3 3<&- &\n\
         g=$!\n\
         exec 0</dev/null 3<&- 2>/dev/null\n\
         mkdir -p {FOLLOWERS_DIR} && echo \"$(st $g) {owner}\" > {FOLLOWERS_DIR}/$g\n\
         wait $g\n\
         rm -f {FOLLOWERS_DIR}/$g\n",
        dir = shell_quote(dir),
        group = shell_quote(&group),
        args = args.join(" "),
        owner = shell_quote(owner),
    )
}

/// The work of a log follower (`$1 $2`: the service's pid and start time,
/// `$3`: the log, `$4`: the first byte to send, from 1): `tail -F` from the
/// offset; once the service ended (checked every 2 s) the log is still
/// followed for [`FOLLOW_GRACE`], then the group ends. A daemon that holds
/// the session ends it sooner, once it has drained the output.
fn tail_work() -> String {
    format!(
        "tail -c +$4 -F \"$3\" 2>/dev/null &\nt=$!\n\
         {{ while [ \"$(st $1)\" = \"$2\" ] && kill -0 $t 2>/dev/null; do sleep 2; done\n\
         kill -0 $t 2>/dev/null && sleep {grace}\nkill -TERM 0; }} &",
        grace = FOLLOW_GRACE.as_secs(),
    )
}

/// The work of the waiter (`$1 $2`: the service's pid and start time): once
/// the service ended, says how (its exit status, or `gone` without one) and
/// the logs' sizes then, and ends its group.
const WAITER_WORK: &str = "{ while [ \"$(st $1)\" = \"$2\" ]; do sleep 0.5; done\n\
     if [ \"$(cat pid 2>/dev/null)\" = \"$1\" ] && [ -f exit ]; then e=$(cat exit); else e=gone; fi\n\
     echo \"$e $(sz stdout.log) $(sz stderr.log)\"\nkill -TERM 0; } &";

/// How one following session ended.
enum SessionEnd {
    /// The service ended with this status.
    Exited(ExitStatus),
    /// The connection was lost (or could not be made).
    Lost(String),
    /// Nobody listens any more.
    Closed,
}

/// A log being followed: bytes received past the delivered offset but not yet
/// a whole line.
struct LogTail {
    stream: OutputStream,
    partial: Vec<u8>,
    /// Bytes received in this session beyond the delivered offset at its start.
    received: u64,
}

impl Follower {
    async fn run(self) {
        if self
            .tx
            .send(Item(
                InstanceEvent::Started {
                    pid: Some(self.rec.pid),
                },
                None,
            ))
            .await
            .is_err()
        {
            return;
        }
        let mut delay = Duration::from_millis(500);
        loop {
            match self.session().await {
                SessionEnd::Exited(status) => {
                    let _ = self
                        .tx
                        .send(Item(InstanceEvent::Exited(status), None))
                        .await;
                    return;
                }
                SessionEnd::Closed => return,
                SessionEnd::Lost(reason) => {
                    self.host.set_reachability(Reachability::Unreachable {
                        reason: reason.clone(),
                    });
                    if self.tx.is_closed() {
                        return;
                    }
                    if !self.lost.swap(true, Ordering::SeqCst) {
                        // Seen until now: say so once, and retry soon.
                        delay = Duration::from_millis(500);
                        let reason =
                            format!("node `{}` is unreachable: {reason}", self.host.name());
                        let item = Item(InstanceEvent::Unreachable { reason }, None);
                        if self.tx.send(item).await.is_err() {
                            return;
                        }
                    }
                    async_io::Timer::after(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(3));
                }
            }
        }
    }

    async fn session(&self) -> SessionEnd {
        // Make sure the master connection exists before several sessions
        // share it, and end what this session replaces.
        let slot = Some(self.slot.index());
        if let Err(e) = self
            .host
            .run_at(
                slot,
                &sweep_script(&self.rec.dir, &self.owner),
                None,
                CONTROL_TIMEOUT,
            )
            .await
        {
            return SessionEnd::Lost(match e {
                SshError::Unreachable { reason, .. } => reason,
                other => other.to_string(),
            });
        }
        // The node answers again: the instance can be observed (an exit that
        // happened meanwhile follows from the waiter below).
        if self.lost.swap(false, Ordering::SeqCst)
            && self
                .tx
                .send(Item(InstanceEvent::Reachable, None))
                .await
                .is_err()
        {
            return SessionEnd::Closed;
        }
        let start = self.shared.offsets();
        let identity = [self.rec.pid.to_string(), self.rec.start_time.to_string()];
        let script = |work: &str, more: &[String]| {
            session_script(
                &self.rec.dir,
                &self.owner,
                work,
                &[&identity[..], more].concat(),
            )
        };
        let tail = |file: &str, offset: u64| {
            script(&tail_work(), &[file.to_owned(), (offset + 1).to_string()])
        };
        let waiter = script(WAITER_WORK, &[]);
        // Each session's input stays open (and unwritten) while it is held.
        let spawn = |script: String| self.host.spawn_at(slot, &script, true);
        let (mut out_child, mut err_child, mut wait_child) = match (
            spawn(tail("stdout.log", start.stdout)),
            spawn(tail("stderr.log", start.stderr)),
            spawn(waiter),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return SessionEnd::Lost(e.to_string());
            }
        };
        let out_tail = Mutex::new(LogTail {
            stream: OutputStream::Stdout,
            partial: Vec::new(),
            received: 0,
        });
        let err_tail = Mutex::new(LogTail {
            stream: OutputStream::Stderr,
            partial: Vec::new(),
            received: 0,
        });
        let mut out_pipe = out_child.stdout.take();
        let mut err_pipe = err_child.stdout.take();
        let mut tails = Box::pin(futures_lite::future::or(
            self.pump(&mut out_pipe, &out_tail),
            self.pump(&mut err_pipe, &err_tail),
        ));
        let wait = async {
            let mut text = String::new();
            if let Some(mut o) = wait_child.stdout.take() {
                let _ = o.read_to_string(&mut text).await;
            }
            let mut why = String::new();
            if let Some(mut e) = wait_child.stderr.take() {
                let _ = e.read_to_string(&mut why).await;
            }
            let _ = wait_child.status().await;
            (text, why)
        };
        enum First {
            Tails(Option<String>),
            Waiter(String, String),
        }
        // Nobody reading any more (the instance was dropped): end the session
        // even if the service is silent.
        let abandoned = async {
            while !self.tx.is_closed() {
                async_io::Timer::after(Duration::from_secs(1)).await;
            }
            First::Tails(None)
        };
        let first = futures_lite::future::or(
            futures_lite::future::or(async { First::Tails((&mut tails).await) }, async {
                let (t, w) = wait.await;
                First::Waiter(t, w)
            }),
            abandoned,
        )
        .await;
        let (text, why) = match first {
            First::Tails(None) => return SessionEnd::Closed,
            First::Tails(Some(reason)) => return SessionEnd::Lost(reason),
            First::Waiter(t, w) => (t, w),
        };
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 3 {
            let reason = why
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("the connection closed")
                .to_owned();
            return SessionEnd::Lost(reason);
        }
        let status = match f[0] {
            "gone" => ExitStatus::Unknown,
            code => match code.parse::<i32>() {
                Ok(c) if c > 128 && c < 128 + 65 => ExitStatus::Signal(c - 128),
                Ok(c) => ExitStatus::Code(c),
                Err(_) => ExitStatus::Unknown,
            },
        };
        let want = (
            f[1].parse::<u64>().unwrap_or(0),
            f[2].parse::<u64>().unwrap_or(0),
        );
        // Deliver what was written before the end, then the end.
        let received = || {
            let o = out_tail.lock().unwrap_or_else(|p| p.into_inner()).received;
            let e = err_tail.lock().unwrap_or_else(|p| p.into_inner()).received;
            start.stdout + o >= want.0 && start.stderr + e >= want.1
        };
        let deadline = Instant::now() + DRAIN;
        let drained = async {
            while !received() && Instant::now() < deadline {
                async_io::Timer::after(Duration::from_millis(20)).await;
            }
            None
        };
        let _ = futures_lite::future::or(&mut tails, drained).await;
        drop(tails);
        for t in [&out_tail, &err_tail] {
            let (stream, bytes) = {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                (t.stream, std::mem::take(&mut t.partial))
            };
            if !bytes.is_empty() {
                let len = bytes.len() as u64;
                let line = OutputLine {
                    stream,
                    bytes,
                    truncated: false,
                };
                let item = Item(InstanceEvent::Output(line), Some((stream, len)));
                if self.tx.send(item).await.is_err() {
                    return SessionEnd::Closed;
                }
                self.advance(stream, len);
            }
        }
        SessionEnd::Exited(status)
    }

    fn advance(&self, stream: OutputStream, by: u64) {
        advance(&self.shared.offsets, stream, by);
    }

    /// Reads a tail until it ends; `None` if the receiver is gone, else why it ended.
    async fn pump(
        &self,
        pipe: &mut Option<async_process::ChildStdout>,
        tail: &Mutex<LogTail>,
    ) -> Option<String> {
        let Some(pipe) = pipe.as_mut() else {
            return Some("no output pipe".into());
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return Some("the connection to the node was lost".into()),
                Ok(n) => n,
            };
            let lines = {
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.received += n as u64;
                t.partial.extend_from_slice(&buf[..n]);
                let mut lines = Vec::new();
                while let Some(pos) = t.partial.iter().position(|b| *b == b'\n') {
                    let rest = t.partial.split_off(pos + 1);
                    let mut line = std::mem::replace(&mut t.partial, rest);
                    line.pop();
                    lines.push((t.stream, line));
                }
                lines
            };
            for (stream, bytes) in lines {
                let len = bytes.len() as u64 + 1;
                let line = OutputLine {
                    stream,
                    bytes,
                    truncated: false,
                };
                let item = Item(InstanceEvent::Output(line), Some((stream, len)));
                if self.tx.send(item).await.is_err() {
                    return None;
                }
                self.advance(stream, len);
            }
        }
    }
}

fn advance(offsets: &Mutex<RemoteOffsets>, stream: OutputStream, by: u64) {
    let mut o = offsets.lock().unwrap_or_else(|p| p.into_inner());
    match stream {
        OutputStream::Stdout => o.stdout += by,
        OutputStream::Stderr => o.stderr += by,
        // Not a remote log file.
        OutputStream::Harness => {}
    }
}

/// An event, and how many bytes of which log it accounts for.
struct Item(InstanceEvent, Option<(OutputStream, u64)>);

/// The event stream of a remote instance, counting what the consumer took.
struct Events {
    rx: std::pin::Pin<Box<async_channel::Receiver<Item>>>,
    shared: Arc<Shared>,
}

impl futures_lite::Stream for Events {
    type Item = InstanceEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<InstanceEvent>> {
        match self.rx.as_mut().poll_next(cx) {
            std::task::Poll::Ready(Some(Item(ev, adv))) => {
                if let Some((stream, by)) = adv {
                    advance(&self.shared.consumed, stream, by);
                }
                std::task::Poll::Ready(Some(ev))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The node-side scripts, run by this machine's `sh` (the Docker tests
    //! run them on busybox nodes).

    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    /// `sh -c script` with piped input and output; its output lines arrive on the receiver.
    fn sh(script: &str) -> (Child, mpsc::Receiver<String>) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (child, rx)
    }

    /// A process standing for a service, and its identity as the wrapper
    /// records it: pid and start time.
    fn service() -> (Child, Vec<String>) {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let fields = &stat[stat.rfind(") ").unwrap() + 2..];
        let start = fields.split_whitespace().nth(19).unwrap().to_owned();
        let identity = vec![child.id().to_string(), start];
        (child, identity)
    }

    /// The live (non-zombie) processes of process group `g`.
    fn members(g: u32) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                let Some(i) = stat.rfind(") ") else {
                    return false;
                };
                let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
                f.len() > 2 && f[0] != "Z" && f[2] == g.to_string()
            })
            .count()
    }

    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The follower groups recorded in `dir`: group and record.
    fn records(dir: &std::path::Path) -> Vec<(u32, String)> {
        let Ok(d) = std::fs::read_dir(dir.join(FOLLOWERS_DIR)) else {
            return Vec::new();
        };
        d.filter_map(|e| {
            let e = e.ok()?;
            let g = e.file_name().to_str()?.parse().ok()?;
            Some((g, std::fs::read_to_string(e.path()).ok()?.trim().to_owned()))
        })
        .collect()
    }

    fn exited(child: &mut Child) -> bool {
        child.try_wait().unwrap().is_some()
    }

    fn tail_of(dir: &std::path::Path, owner: &str, identity: &[String]) -> String {
        let args = [identity, &["stdout.log".into(), "1".into()]].concat();
        session_script(dir.to_str().unwrap(), owner, &tail_work(), &args)
    }

    #[test]
    fn a_log_follower_sends_the_log_and_ends_with_its_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stdout.log"), "one\n").unwrap();
        let (mut svc, identity) = service();
        let (mut child, lines) = sh(&tail_of(dir.path(), "x.1", &identity));
        assert_eq!(lines.recv_timeout(WAIT).unwrap(), "one");
        {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("stdout.log"))
                .unwrap();
            log.write_all(b"two\n").unwrap();
        }
        assert_eq!(lines.recv_timeout(WAIT).unwrap(), "two");
        until("the follower's record", || records(dir.path()).len() == 1);
        let (g, record) = records(dir.path()).remove(0);
        assert!(record.ends_with(" x.1"), "{record}");
        assert!(members(g) >= 3, "the group: its shell, tail, cat");

        // Its input ends (the daemon let go): the whole group ends, the record goes.
        drop(child.stdin.take());
        until("the session to end", || exited(&mut child));
        until("the group to end", || members(g) == 0);
        assert!(records(dir.path()).is_empty());
        svc.kill().unwrap();
        svc.wait().unwrap();
    }

    #[test]
    fn the_waiter_reports_the_end_and_ends_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stdout.log"), "abc\n").unwrap();
        let (mut svc, identity) = service();
        std::fs::write(dir.path().join("pid"), format!("{}\n", svc.id())).unwrap();
        let script = session_script(dir.path().to_str().unwrap(), "x.1", WAITER_WORK, &identity);
        let (mut child, lines) = sh(&script);
        until("the waiter's record", || records(dir.path()).len() == 1);
        let (g, _) = records(dir.path()).remove(0);
        std::fs::write(dir.path().join("exit"), "143\n").unwrap();
        svc.kill().unwrap();
        svc.wait().unwrap();
        assert_eq!(lines.recv_timeout(WAIT).unwrap(), "143 4 0");
        // Its input stays open: it ends by itself.
        until("the session to end", || exited(&mut child));
        until("the group to end", || members(g) == 0);
        assert!(records(dir.path()).is_empty());
    }

    #[test]
    fn a_sweep_ends_what_a_session_replaces_and_keeps_other_followers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stdout.log"), "one\n").unwrap();
        let (mut svc, identity) = service();
        let me = format!("{}.1", process_token());
        let sibling = format!("{}.2", process_token());
        let mut sessions: Vec<(Child, mpsc::Receiver<String>)> = [&me, &sibling, "0000.1"]
            .iter()
            .map(|owner| sh(&tail_of(dir.path(), owner, &identity)))
            .collect();
        for (_, lines) in &sessions {
            assert_eq!(lines.recv_timeout(WAIT).unwrap(), "one");
        }
        until("three records", || records(dir.path()).len() == 3);
        let out = Command::new("sh")
            .arg("-c")
            .arg(sweep_script(dir.path().to_str().unwrap(), &me))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // This follower's earlier session and another daemon's follower end;
        // another follower of this daemon goes on.
        until("the replaced sessions to end", || {
            exited(&mut sessions[0].0) && exited(&mut sessions[2].0)
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!exited(&mut sessions[1].0), "a sibling follower was ended");
        let left = records(dir.path());
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].1.ends_with(&sibling), "{left:?}");
        drop(sessions[1].0.stdin.take());
        until("the sibling to end", || exited(&mut sessions[1].0));
        until("its group to end", || members(left[0].0) == 0);
        svc.kill().unwrap();
        svc.wait().unwrap();
    }
}
