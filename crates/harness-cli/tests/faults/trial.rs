//! One run of the suite: a project of its own in a state directory of its
//! own, the CLI verbs against it, the invariants checked, and everything it
//! started removed when it ends, whatever happened.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness_core::ServiceStatus;

use crate::disk::Tmpfs;
use crate::remote_support::{Nodes, ProjectCleanup, docker};
use crate::support::{Env, Run, alive, kill, kill_group, libc_sigkill};
use crate::world::{self, World};

/// How long one CLI verb may take before it counts as hanging.
pub const HANG: Duration = Duration::from_secs(120);
/// How long the project may take to settle (nothing starting, stopping or
/// unobservable) after a fault.
const SETTLE: Duration = Duration::from_secs(60);
/// How long a new daemon starts after one was killed (a supervisor's pause):
/// what the killed one had in flight (a container being started) lands
/// meanwhile, and the new one finds it.
const RESTART_PAUSE: Duration = Duration::from_secs(2);
/// How long what `down` stopped may take to disappear from the hosts.
const GONE: Duration = Duration::from_secs(15);
/// `up` that waits until every service runs.
pub const UP: [&str; 5] = ["up", "-d", "--wait", "--timeout", "60s"];
/// The local process services.
pub const LOCAL: [&str; 3] = ["sleeper", "ticker", "forker"];
/// Every service: the local ones, a container and a service on the node.
pub const SERVICES: [&str; 5] = ["sleeper", "ticker", "forker", "box", "far"];
/// The node the remote service runs on.
const NODE: &str = "n1";
/// Options of the daemon's ssh connections to the test node.
const SSH_OPTIONS: &str = "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR";

/// The project: three local processes (`forker` forks a child that stays
/// in its process group: children that leave it are the stopping tests' part), a container and a process on the node; each
/// stops at once on SIGTERM.
fn project_yaml(project: &str, nodes: &Nodes) -> String {
    let node = &nodes.nodes[0];
    format!(
        r#"name: {project}
networks:
  lab:
    type: lan
    subnet: {ip}/32
    nodes:
      - host: {ip}
        name: {NODE}
        ssh_user: root
        ssh_key: {key}
services:
  sleeper:
    binary: sleep
    args: ["3600"]
  ticker:
    binary: sh
    args: ["-c", "while :; do echo tick; sleep 0.5; done"]
  forker:
    binary: sh
    args: ["-c", "sleep 3600 & echo forked; wait"]
    dependencies:
      sleeper: {{ condition: started }}
  box:
    image: harness-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
  far:
    type: remote
    network: lab
    host: {NODE}
    binary: sh
    args: ["-c", "echo far; while :; do sleep 1; done"]
"#,
        ip = node.host,
        key = nodes.key.display(),
    )
}

/// One run: its seed, its project and what it found wrong.
pub struct Trial<'a> {
    pub seed: u64,
    pub project: String,
    pub nodes: &'a Nodes,
    /// The fault, in words, for every message.
    fault: String,
    violations: Vec<String>,
    /// A full disk's file system, mounted as the state directory (unmounted
    /// before the directory is removed).
    _disk: Option<Tmpfs>,
    pub env: Env,
}

impl<'a> Trial<'a> {
    /// A fresh project and state directory (a small tmpfs with `tmpfs_size`).
    pub fn new(
        seed: u64,
        fault: String,
        nodes: &'a Nodes,
        tmpfs_size: Option<&str>,
    ) -> Result<Trial<'a>, String> {
        let mut env = Env::new();
        env.vars
            .push(("HARNESS_SSH_OPTIONS".into(), SSH_OPTIONS.into()));
        let project = format!("fault-{seed:016x}");
        env.write("services.yaml", &project_yaml(&project, nodes));
        let disk = match tmpfs_size {
            Some(size) => Some(Tmpfs::mount(env.state.path(), size)?),
            None => None,
        };
        Ok(Trial {
            seed,
            project,
            nodes,
            fault,
            violations: Vec::new(),
            _disk: disk,
            env,
        })
    }

    /// What was found wrong.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Records an invariant violation, with the seed to replay it.
    pub fn violation(&mut self, what: impl AsRef<str>) {
        let msg = format!(
            "seed {:#018x} ({}): {}",
            self.seed,
            self.fault,
            what.as_ref()
        );
        eprintln!("VIOLATION {msg}");
        if self.violations.is_empty() {
            eprintln!(
                "  the daemon's log ends with:\n{}",
                self.daemon_log_tail(20)
            );
        }
        self.violations.push(msg);
    }

    fn daemon_log_tail(&self, n: usize) -> String {
        let log =
            std::fs::read_to_string(self.env.state.path().join("harnessd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `harness ARGS`; `Err` when it hangs.
    pub fn harness(&self, args: &[&str]) -> Result<Run, String> {
        self.env.run_limited(args, HANG)
    }

    /// Runs `harness ARGS`; a failure or a hang is a violation. Whether it succeeded.
    pub fn expect_ok(&mut self, args: &[&str]) -> bool {
        match self.harness(args) {
            Ok(r) if r.code == 0 => true,
            Ok(r) => {
                self.violation(format!(
                    "`harness {}` failed ({}): {}",
                    args.join(" "),
                    r.code,
                    r.stderr.trim()
                ));
                false
            }
            Err(hang) => {
                self.violation(hang);
                false
            }
        }
    }

    /// The pid of the daemon of this state directory, if one runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.env.daemon_pid().filter(|&p| alive(p))
    }

    /// Waits (up to 30 s) for a daemon to run; its pid.
    pub fn wait_daemon(&self) -> Option<u32> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = self.daemon_pid() {
                return Some(pid);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the daemon with SIGKILL and waits until it is gone.
    pub fn kill_daemon(&mut self) {
        let Some(pid) = self.daemon_pid() else {
            return;
        };
        kill(pid, libc_sigkill());
        let until = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            if Instant::now() > until {
                self.violation(format!("the daemon (pid {pid}) outlived SIGKILL"));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(RESTART_PAUSE);
    }

    /// Starts a daemon on the state directory unless one runs.
    pub fn ensure_daemon(&mut self) -> bool {
        self.daemon_pid().is_some() || self.expect_ok(&["daemon", "start"])
    }

    /// `status --json` of the project.
    pub fn status(&self) -> Result<Vec<ServiceStatus>, String> {
        let r = self.harness(&["status", "--json"])?;
        if r.code != 0 {
            return Err(format!("`harness status` failed: {}", r.stderr.trim()));
        }
        serde_json::from_str(&r.stdout).map_err(|e| format!("status --json: {e}: {}", r.stdout))
    }

    /// `status` on stderr (the daemon's warnings).
    pub fn status_warnings(&self) -> String {
        self.harness(&["status"])
            .map(|r| r.stderr)
            .unwrap_or_default()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.env.state.path().to_owned()
    }

    /// What of the project exists on the hosts now.
    pub fn world(&self) -> World {
        World::observe(&self.project, &self.nodes.container(NODE))
    }

    /// Waits until no service is on its way somewhere; the rows then.
    fn settle(&mut self, stage: &str) -> Option<Vec<ServiceStatus>> {
        let until = Instant::now() + SETTLE;
        loop {
            match self.status() {
                Ok(rows) if world::steady(&rows) => return Some(rows),
                Ok(rows) if Instant::now() > until => {
                    let states: Vec<String> = rows
                        .iter()
                        .map(|r| format!("{} {}", r.name, r.state))
                        .collect();
                    self.violation(format!(
                        "{stage}: not settled within {SETTLE:?}: {}",
                        states.join(", ")
                    ));
                    return None;
                }
                Err(e) if Instant::now() > until => {
                    self.violation(format!("{stage}: {e}"));
                    return None;
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Once settled: every process, container and remote process of the
    /// project is one the daemon names with the same pid, one per service,
    /// and what it says runs, runs. The rows compared.
    pub fn check(&mut self, stage: &str) -> Option<Vec<ServiceStatus>> {
        // Status and hosts are read one after the other: compared only when
        // status is settled and the same before and after the hosts.
        for _ in 0..5 {
            let rows = self.settle(stage)?;
            let world = self.world();
            let again = self.status().ok()?;
            if same(&rows, &again) {
                for d in world.disagreements(&rows) {
                    self.violation(format!("{stage}: {d}"));
                }
                return Some(rows);
            }
        }
        self.violation(format!("{stage}: status kept changing"));
        None
    }

    /// `up` succeeds, then every service runs, as [`Trial::check`] checks.
    pub fn up_and_check(&mut self, stage: &str) {
        if !self.expect_ok(&UP) {
            return;
        }
        let Some(rows) = self.check(stage) else {
            return;
        };
        for name in SERVICES {
            match rows.iter().find(|r| r.name.as_str() == name) {
                Some(r) if r.state.is_alive() => {}
                Some(r) => self.violation(format!("{stage}: `{name}` is {} after up", r.state)),
                None => self.violation(format!("{stage}: `{name}` is missing from status")),
            }
        }
    }

    /// `down` succeeds, and then nothing of the project is left on any host.
    pub fn down_and_check_gone(&mut self) {
        if !self.expect_ok(&["down"]) {
            return;
        }
        let until = Instant::now() + GONE;
        let left = loop {
            let left = self.world().leftovers();
            if left.is_empty() || Instant::now() > until {
                break left;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for l in left {
            self.violation(format!("after down: {l}"));
        }
        match self.status() {
            Ok(rows) => {
                for r in rows.iter().filter(|r| r.state.is_alive()) {
                    self.violation(format!(
                        "after down the daemon says `{}` is {}",
                        r.name, r.state
                    ));
                }
            }
            Err(e) => self.violation(format!("after down: {e}")),
        }
    }

    /// Cuts the node off its network until the guard is dropped.
    pub fn cut_node(&self) -> Cut<'a> {
        self.nodes.disconnect(NODE);
        Cut { nodes: self.nodes }
    }
}

/// The same services in the same states with the same processes.
fn same(a: &[ServiceStatus], b: &[ServiceStatus]) -> bool {
    let key = |rows: &[ServiceStatus]| -> Vec<(String, String, Option<u32>, Option<String>)> {
        rows.iter()
            .map(|r| {
                (
                    r.name.to_string(),
                    r.state.label().to_owned(),
                    r.pid,
                    r.container_id.clone(),
                )
            })
            .collect()
    };
    key(a) == key(b)
}

/// Kills every process on the node that belongs to the project (`$1`) or
/// works in its directory, then removes the directory.
const NODE_CLEANUP: &str = r#"for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = "$$" ] && continue
  a=$(tr '\0' ' ' < $d/cmdline 2>/dev/null)
  w=$(readlink $d/cwd 2>/dev/null)
  case "$a $w" in *".harness/$1"*) kill -9 "$p" 2>/dev/null; continue ;; esac
  tr '\0' '\n' < $d/environ 2>/dev/null | grep -qx "HARNESS_PROJECT=$1" && kill -9 "$p" 2>/dev/null
done
rm -rf "$HOME/.harness/$1""#;

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        if self.daemon_pid().is_some() {
            let _ = self.env.run_limited(&["down"], Duration::from_secs(60));
            let _ = self
                .env
                .run_limited(&["daemon", "stop"], Duration::from_secs(30));
        }
        // Whatever is left, however it came to be: daemons and their ssh
        // connections (named by the state directory), service processes.
        let state = self.state();
        let me = std::process::id();
        for pid in command_executor::all_pids()
            .into_iter()
            .filter(|&p| p != me)
        {
            let named = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*state.to_string_lossy()))
                .unwrap_or(false);
            if named {
                kill(pid, libc_sigkill());
            }
        }
        let own_group = command_executor::process_group_of(me).ok();
        for p in world::local_processes(&self.project) {
            if Some(p.pgid) != own_group {
                kill_group(p.pgid);
            }
            kill(p.pid, libc_sigkill());
        }
        drop(ProjectCleanup(self.project.clone()));
        let _ = docker(&[
            "exec",
            &self.nodes.container(NODE),
            "sh",
            "-c",
            NODE_CLEANUP,
            "cleanup",
            &self.project,
        ]);
    }
}

/// The node cut off its network; reconnected when dropped.
pub struct Cut<'a> {
    nodes: &'a Nodes,
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        // Not `Nodes::connect`, which panics: this may run while unwinding.
        let ip = &self.nodes.nodes[0].host;
        let _ = docker(&[
            "network",
            "connect",
            "--ip",
            ip,
            &self.nodes.network,
            &self.nodes.container(NODE),
        ]);
    }
}
