//! Connections to remote nodes: the system `ssh` with one multiplexed master
//! connection per node, shared by the remote and package executors.
//!
//! Every node of the project's networks becomes an [`SshHost`]: its user, port
//! and key come from the node entry, everything else from `~/.ssh/config`
//! (no `-F` is passed). Commands run as `ssh [options] node -- sh -c SCRIPT`
//! through [`command_executor::SshLayer`], with `ControlMaster=auto`, a
//! `ControlPath` in a per-daemon directory (short names, because unix socket
//! paths are limited to about 100 bytes), `ControlPersist`, `BatchMode`,
//! `ConnectTimeout` and `ServerAliveInterval`, so a node that drops off is
//! noticed within seconds.
//!
//! Each host remembers whether its last command reached it
//! ([`SshHost::reachability`]); the remote executors keep that up to date, so a
//! manager can show the services of an unreachable node as `unknown` with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_process::{Child, Stdio};
use command_executor::{Command, ControlMaster, Layer, SshLayer, StdinMode};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use harness_config::{Node, Project};

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The node could not be reached (ssh itself failed: exit status 255).
    #[error("node `{host}` is unreachable: {reason}")]
    Unreachable {
        /// The node.
        host: String,
        /// What ssh said.
        reason: String,
    },
    /// A command on the node did not finish in time.
    #[error("node `{host}`: `{what}` did not finish within {timeout:?}")]
    Timeout {
        /// The node.
        host: String,
        /// What was run.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// The local `ssh` client could not be run.
    #[error("cannot run the ssh client for node `{host}`: {source}")]
    Spawn {
        /// The node.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// No node of the project's networks has this name or address.
    #[error("no node `{host}` in the project's networks")]
    UnknownNode {
        /// The name asked for.
        host: String,
    },
    /// The per-daemon control directory could not be made.
    #[error("cannot create the ssh control directory {}: {source}", path.display())]
    ControlDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Connection settings shared by every node.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The ssh client (default `ssh`).
    pub program: String,
    /// `ConnectTimeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `ServerAliveInterval` (default 2 s); with [`SshOptions::server_alive_count_max`]
    /// it bounds how long a dead connection goes unnoticed.
    pub server_alive_interval: Duration,
    /// `ServerAliveCountMax` (default 2).
    pub server_alive_count_max: u32,
    /// `ControlPersist`: how long an idle master stays (default 10 min).
    pub control_persist: Duration,
    /// Multiplex commands over one master connection per node (default true).
    /// Off, every command opens a connection of its own.
    pub multiplex: bool,
    /// More `-o key=value` options for every connection (e.g. host key policy).
    pub extra: Vec<(String, String)>,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            program: "ssh".into(),
            connect_timeout: Duration::from_secs(5),
            server_alive_interval: Duration::from_secs(2),
            server_alive_count_max: 2,
            control_persist: Duration::from_secs(600),
            multiplex: true,
            extra: Vec::new(),
        }
    }
}

/// Whether a node answered its last command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// Nothing was tried yet.
    Untried,
    /// The last command reached it.
    Reachable,
    /// The last command could not reach it.
    Unreachable {
        /// What ssh said.
        reason: String,
    },
}

/// The result of a command run on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    /// The exit code of the remote command.
    pub code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl RemoteOutput {
    /// Standard output as text, trimmed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// Standard error as text, trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// One node, reached over ssh.
#[derive(Debug)]
pub struct SshHost {
    name: String,
    user: String,
    layer: SshLayer,
    control_path: Option<PathBuf>,
    program: String,
    reach: Mutex<Reachability>,
    /// Instances followed through each follower master (index = slot).
    follow: Mutex<Vec<usize>>,
}

/// How many instances share one follower master: each holds three sessions
/// (two logs and a waiter) and sshd allows ten per connection by default
/// (`MaxSessions`), with room left for a check.
const INSTANCES_PER_FOLLOW_MASTER: usize = 2;

/// A place on one of a host's follower master connections, freed on drop.
#[derive(Debug)]
pub(crate) struct FollowSlot {
    host: Arc<SshHost>,
    index: usize,
}

impl FollowSlot {
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        let mut f = self.host.follow.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = f.get_mut(self.index) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The longest control directory accepted: ssh binds the master socket at
/// `<dir>/<13-char name>[f<N>].<16 random chars>`, and a unix socket path has
/// at most 107 bytes.
pub const MAX_CONTROL_DIR_LEN: usize = 70;

/// The exit status ssh itself uses for its own errors.
const SSH_FAILED: i32 = 255;

impl SshHost {
    /// A host for `node` with these options, its master socket in `control_dir`.
    pub fn new(node: &Node, options: &SshOptions, control_dir: &Path) -> SshHost {
        let mut layer = SshLayer::new(node.host.clone())
            .program(options.program.clone())
            .user(node.ssh_user.clone())
            .batch_mode(true)
            .connect_timeout(options.connect_timeout)
            .server_alive_interval(options.server_alive_interval)
            .option(
                "ServerAliveCountMax",
                options.server_alive_count_max.max(1).to_string(),
            );
        if let Some(port) = node.ssh_port {
            layer = layer.port(port);
        }
        if let Some(key) = &node.ssh_key {
            layer = layer.identity_file(expand_home(key));
        }
        let control_path = if options.multiplex {
            let path = control_dir.join(short_name(node));
            layer = layer
                .control_master(ControlMaster::Auto)
                .control_path(path.clone())
                .control_persist(options.control_persist);
            Some(path)
        } else {
            layer = layer
                .control_master(ControlMaster::No)
                .option("ControlPath", "none");
            None
        };
        for (k, v) in &options.extra {
            layer = layer.option(k.clone(), v.clone());
        }
        SshHost {
            name: node.name.clone().unwrap_or_else(|| node.host.clone()),
            user: node.ssh_user.clone(),
            layer,
            control_path,
            program: options.program.clone(),
            reach: Mutex::new(Reachability::Untried),
            follow: Mutex::new(Vec::new()),
        }
    }

    /// The node's name (or address when it has no name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user commands run as on the node.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The address ssh connects to.
    pub fn address(&self) -> &str {
        self.layer.host()
    }

    /// The layer that runs commands on this node.
    pub fn layer(&self) -> &SshLayer {
        &self.layer
    }

    /// The master connection's control socket, when multiplexing.
    pub fn control_path(&self) -> Option<&Path> {
        self.control_path.as_deref()
    }

    /// Whether the last command reached the node.
    pub fn reachability(&self) -> Reachability {
        self.reach.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_reachability(&self, r: Reachability) {
        *self.reach.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// A place for one followed instance on a follower master connection
    /// (long-lived sessions are kept off the master that runs commands).
    pub(crate) fn follow_slot(self: &Arc<Self>) -> FollowSlot {
        let mut f = self.follow.lock().unwrap_or_else(|p| p.into_inner());
        let index = match f.iter().position(|n| *n < INSTANCES_PER_FOLLOW_MASTER) {
            Some(i) => i,
            None => {
                f.push(0);
                f.len() - 1
            }
        };
        f[index] += 1;
        FollowSlot {
            host: self.clone(),
            index,
        }
    }

    /// The control socket of follower master `slot`, or of the main master.
    fn control_path_at(&self, slot: Option<usize>) -> Option<PathBuf> {
        let main = self.control_path.as_ref()?;
        Some(match slot {
            None => main.clone(),
            Some(i) => {
                let mut name = main.file_name()?.to_os_string();
                name.push(format!("f{i}"));
                main.with_file_name(name)
            }
        })
    }

    fn layer_at(&self, slot: Option<usize>) -> SshLayer {
        match (slot, self.control_path_at(slot)) {
            (Some(_), Some(path)) => self.layer.clone().control_path(path),
            _ => self.layer.clone(),
        }
    }

    /// The local argv that runs `sh -c script` on the node (`stdin`: whether
    /// the script reads local input; otherwise `ssh -n`).
    pub fn argv(&self, script: &str, stdin: bool) -> Vec<String> {
        self.argv_at(None, script, stdin)
    }

    fn argv_at(&self, slot: Option<usize>, script: &str, stdin: bool) -> Vec<String> {
        let mode = if stdin {
            StdinMode::Piped
        } else {
            StdinMode::Null
        };
        let cmd = self.layer_at(slot).wrap(
            Command::new("sh")
                .arg("-c")
                .arg(script.to_owned())
                .stdin(mode),
        );
        cmd.argv().map(str::to_owned).collect()
    }

    fn command(&self, slot: Option<usize>, script: &str, stdin: bool) -> async_process::Command {
        let argv = self.argv_at(slot, script, stdin);
        let mut cmd = async_process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).kill_on_drop(true);
        cmd
    }

    /// Starts `sh -c script` on the node with piped stdout/stderr (and stdin
    /// when `stdin` is true); the caller reads and waits. Killed on drop.
    pub fn spawn(&self, script: &str, stdin: bool) -> Result<Child, SshError> {
        self.spawn_at(None, script, stdin)
    }

    pub(crate) fn spawn_at(
        &self,
        slot: Option<usize>,
        script: &str,
        stdin: bool,
    ) -> Result<Child, SshError> {
        let mut cmd = self.command(slot, script, stdin);
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().map_err(|source| SshError::Spawn {
            host: self.name.clone(),
            source,
        })
    }

    /// Runs `sh -c script` on the node, feeding it `input` on stdin, within
    /// `timeout`. A non-zero exit of the script is returned as is; ssh's own
    /// failure (exit 255 with nothing from the script) is [`SshError::Unreachable`].
    pub async fn run(
        &self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<RemoteOutput, SshError> {
        self.run_at(None, script, input, timeout).await
    }

    pub(crate) async fn run_at(
        &self,
        slot: Option<usize>,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<RemoteOutput, SshError> {
        let work = async {
            let mut child = self.spawn_at(slot, script, input.is_some())?;
            let mut stdin = child.stdin.take();
            let mut out = child.stdout.take();
            let mut err = child.stderr.take();
            let feed = async {
                if let (Some(w), Some(data)) = (stdin.as_mut(), input) {
                    // A script that stops reading early is not an error here.
                    let _ = w.write_all(data).await;
                    let _ = w.close().await;
                }
                drop(stdin.take());
            };
            let read_out = async {
                let mut b = Vec::new();
                if let Some(r) = out.as_mut() {
                    let _ = r.read_to_end(&mut b).await;
                }
                b
            };
            let read_err = async {
                let mut b = Vec::new();
                if let Some(r) = err.as_mut() {
                    let _ = r.read_to_end(&mut b).await;
                }
                b
            };
            let ((), (stdout, stderr)) =
                futures_lite::future::zip(feed, futures_lite::future::zip(read_out, read_err))
                    .await;
            let status = child.status().await.map_err(|source| SshError::Spawn {
                host: self.name.clone(),
                source,
            })?;
            Ok(RemoteOutput {
                code: status.code().unwrap_or(SSH_FAILED),
                stdout,
                stderr,
            })
        };
        let timer = async {
            async_io::Timer::after(timeout).await;
            Err(SshError::Timeout {
                host: self.name.clone(),
                what: first_line(script),
                timeout,
            })
        };
        let result = futures_lite::future::or(work, timer).await;
        self.note(result)
    }

    /// Records what a command result says about reachability, turning ssh's
    /// own failures into [`SshError::Unreachable`].
    fn note(&self, result: Result<RemoteOutput, SshError>) -> Result<RemoteOutput, SshError> {
        match result {
            Ok(out) if out.code == SSH_FAILED && out.stdout.is_empty() => {
                let reason = ssh_reason(&out.stderr);
                self.set_reachability(Reachability::Unreachable {
                    reason: reason.clone(),
                });
                Err(SshError::Unreachable {
                    host: self.name.clone(),
                    reason,
                })
            }
            Ok(out) => {
                self.set_reachability(Reachability::Reachable);
                Ok(out)
            }
            Err(e @ SshError::Timeout { .. }) => {
                self.set_reachability(Reachability::Unreachable {
                    reason: e.to_string(),
                });
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Checks the node answers by running `true` through the master
    /// connection (opening it if needed). Updates [`SshHost::reachability`].
    pub async fn check(&self, timeout: Duration) -> Result<(), SshError> {
        self.run("true", None, timeout).await.map(|_| ())
    }

    /// This machine's address as the node sees it (from `$SSH_CLIENT` on the
    /// node): where services on the node reach services of this machine.
    pub async fn local_address(&self, timeout: Duration) -> Result<std::net::IpAddr, SshError> {
        let out = self
            .run("echo \"${SSH_CLIENT%% *}\"", None, timeout)
            .await?;
        let text = out.stdout_text();
        text.parse().map_err(|_| SshError::Unreachable {
            host: self.name.clone(),
            reason: format!("the node did not tell the client address (SSH_CLIENT gave {text:?})"),
        })
    }

    /// True if the main master connection runs (`ssh -O check`).
    pub async fn master_running(&self) -> bool {
        self.control(None, ["-O", "check"]).await
    }

    /// Closes the master connections of this node (`ssh -O exit`), the main
    /// one and those that follow output; the next command opens a new one.
    /// Remote services keep running. True if the main master was closed.
    pub async fn close_master(&self) -> bool {
        let slots = self.follow.lock().unwrap_or_else(|p| p.into_inner()).len();
        for i in 0..slots {
            self.control(Some(i), ["-O", "exit"]).await;
        }
        self.control(None, ["-O", "exit"]).await
    }

    async fn control(&self, slot: Option<usize>, op: [&str; 2]) -> bool {
        if self.control_path.is_none() {
            return false;
        }
        let mut args: Vec<String> = op.iter().map(|s| s.to_string()).collect();
        args.extend(self.layer_at(slot).options_args());
        args.push(self.layer.host().to_owned());
        let run = async_process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        let timer = async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            Ok(std::process::ExitStatus::default())
        };
        matches!(futures_lite::future::or(run, timer).await, Ok(s) if s.success())
    }

    /// The transport of a Docker Engine client for the engine on this node:
    /// `ssh [options] node -- docker system dial-stdio`, over the same
    /// multiplexed connection. Give the client to a
    /// [`crate::docker::DockerExecutor`] to place containers on the node.
    pub fn docker_transport(&self) -> docker_engine::Transport {
        self.docker_transport_inner()
    }

    /// A Docker Engine client for the engine on this node, through
    /// [`SshHost::docker_transport`] (the API version is negotiated now).
    pub async fn docker(&self) -> Result<docker_engine::Docker, docker_engine::DockerError> {
        docker_engine::Docker::connect(self.docker_transport()).await
    }

    /// The ssh program, options and destination for a session that another process opens
    /// to this node (`harness exec`): the daemon's settings (user, port, key, timeouts,
    /// extra options), sharing the daemon's master connection when one is up but never
    /// becoming a master itself: a master started by a short-lived client would stay
    /// behind, holding the client's terminal or pipes.
    pub fn session(&self) -> (String, Vec<String>, String) {
        let layer = self
            .layer
            .clone()
            .control_master(ControlMaster::No)
            .control_persist(Duration::ZERO);
        (
            self.program.clone(),
            layer.options_args(),
            self.layer.host().to_owned(),
        )
    }

    fn docker_transport_inner(&self) -> docker_engine::Transport {
        let mut argv = vec![self.program.clone(), "-T".to_owned()];
        argv.extend(self.layer.options_args());
        argv.push(self.layer.host().to_owned());
        argv.extend(
            ["--", "docker", "system", "dial-stdio"]
                .iter()
                .map(|s| s.to_string()),
        );
        docker_engine::Transport::Command(argv)
    }
}

/// The nodes of a project, by name and address, with their connections.
#[derive(Debug, Clone)]
pub struct SshHosts {
    inner: Arc<HostsInner>,
}

#[derive(Debug)]
struct HostsInner {
    by_key: HashMap<String, Arc<SshHost>>,
    control_dir: PathBuf,
}

impl SshHosts {
    /// The nodes of every network of `project`. Master sockets go to
    /// `control_dir` (created, mode 0700); keep its path short.
    pub fn for_project(
        project: &Project,
        options: &SshOptions,
        control_dir: &Path,
    ) -> Result<SshHosts, SshError> {
        let nodes: Vec<Node> = project
            .networks
            .values()
            .flat_map(|n| n.nodes().iter().cloned())
            .collect();
        SshHosts::new(&nodes, options, control_dir)
    }

    /// These nodes. Master sockets go to `control_dir` (created, mode 0700),
    /// which must be at most [`MAX_CONTROL_DIR_LEN`] bytes long.
    pub fn new(
        nodes: &[Node],
        options: &SshOptions,
        control_dir: &Path,
    ) -> Result<SshHosts, SshError> {
        let len = control_dir.as_os_str().len();
        if options.multiplex && len > MAX_CONTROL_DIR_LEN {
            return Err(SshError::ControlDir {
                path: control_dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "the path is {len} bytes long; unix socket paths are limited, so keep it within {MAX_CONTROL_DIR_LEN} (e.g. under $XDG_RUNTIME_DIR or /tmp)"
                    ),
                ),
            });
        }
        make_private_dir(control_dir).map_err(|source| SshError::ControlDir {
            path: control_dir.to_path_buf(),
            source,
        })?;
        let mut by_key = HashMap::new();
        for node in nodes {
            let host = Arc::new(SshHost::new(node, options, control_dir));
            by_key.insert(node.host.clone(), host.clone());
            if let Some(name) = &node.name {
                by_key.insert(name.clone(), host);
            }
        }
        Ok(SshHosts {
            inner: Arc::new(HostsInner {
                by_key,
                control_dir: control_dir.to_path_buf(),
            }),
        })
    }

    /// The node with this name or address.
    pub fn get(&self, host: &str) -> Result<Arc<SshHost>, SshError> {
        self.inner
            .by_key
            .get(host)
            .cloned()
            .ok_or_else(|| SshError::UnknownNode {
                host: host.to_owned(),
            })
    }

    /// Every node (once each).
    pub fn all(&self) -> Vec<Arc<SshHost>> {
        let mut v: Vec<Arc<SshHost>> = Vec::new();
        for h in self.inner.by_key.values() {
            if !v.iter().any(|x| Arc::ptr_eq(x, h)) {
                v.push(h.clone());
            }
        }
        v
    }

    /// Where master sockets live.
    pub fn control_dir(&self) -> &Path {
        &self.inner.control_dir
    }

    /// Closes every master connection (for a clean daemon exit).
    pub async fn close_all(&self) {
        for h in self.all() {
            h.close_master().await;
        }
    }
}

/// A short, stable socket name for a node: `h` and 12 hex digits of a hash of
/// user, address and port.
fn short_name(node: &Node) -> String {
    use sha2::Digest;
    let key = format!(
        "{}@{}:{}",
        node.ssh_user,
        node.host,
        node.ssh_port.map(|p| p.to_string()).unwrap_or_default()
    );
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut s = String::from("h");
    for b in &digest[..6] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    p.to_path_buf()
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The last meaningful line ssh wrote (its error), or a generic reason.
fn ssh_reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .map(str::to_owned)
        .unwrap_or_else(|| "ssh failed (exit status 255)".to_owned())
}

fn first_line(script: &str) -> String {
    let l = script.trim().lines().next().unwrap_or("").trim();
    let mut s: String = l.chars().take(60).collect();
    if l.chars().count() > 60 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, name: Option<&str>) -> Node {
        Node {
            host: host.into(),
            name: name.map(str::to_owned),
            ssh_user: "deploy".into(),
            ssh_key: Some(PathBuf::from("/keys/id")),
            ssh_port: Some(2222),
            package_deploy: false,
        }
    }

    #[test]
    fn argv_carries_node_settings_and_multiplexing() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = SshHosts::new(
            &[node("10.0.0.5", Some("db1"))],
            &SshOptions::default(),
            dir.path(),
        )
        .unwrap();
        let h = hosts.get("db1").unwrap();
        assert!(Arc::ptr_eq(&h, &hosts.get("10.0.0.5").unwrap()));
        assert_eq!(hosts.all().len(), 1);
        let argv = h.argv("echo hi", false);
        let line = argv.join(" ");
        for want in [
            "-l deploy",
            "-p 2222",
            "-i /keys/id",
            "BatchMode=yes",
            "ConnectTimeout=5",
            "ServerAliveInterval=2",
            "ServerAliveCountMax=2",
            "ControlMaster=auto",
            "ControlPersist=600",
            "-n",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(!argv.iter().any(|a| a == "-F"), "~/.ssh/config must apply");
        let path = h.control_path().unwrap();
        assert_eq!(path.parent(), Some(dir.path()));
        assert_eq!(path.file_name().unwrap().len(), 13);
        assert!(h.argv("cat", true).iter().all(|a| a != "-n"));
    }

    #[test]
    fn a_session_has_the_daemons_settings_and_never_becomes_a_master() {
        let dir = tempfile::tempdir().unwrap();
        let options = SshOptions {
            extra: vec![("StrictHostKeyChecking".into(), "no".into())],
            ..SshOptions::default()
        };
        let hosts = SshHosts::new(&[node("10.0.0.5", Some("db1"))], &options, dir.path()).unwrap();
        let h = hosts.get("db1").unwrap();
        let (program, args, destination) = h.session();
        assert_eq!(
            (program.as_str(), destination.as_str()),
            ("ssh", "10.0.0.5")
        );
        let line = args.join(" ");
        let control = format!("ControlPath={}", h.control_path().unwrap().display());
        for want in [
            "-l deploy",
            "-p 2222",
            "-i /keys/id",
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "ControlMaster=no",
            control.as_str(),
            "ControlPersist=no",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(!line.contains("ControlMaster=auto"), "{line}");
    }

    #[test]
    fn follower_slots_fill_two_per_master_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = SshHosts::new(&[node("n", None)], &SshOptions::default(), dir.path()).unwrap();
        let h = hosts.get("n").unwrap();
        let a = h.follow_slot();
        let b = h.follow_slot();
        let c = h.follow_slot();
        assert_eq!((a.index(), b.index(), c.index()), (0, 0, 1));
        drop(a);
        assert_eq!(h.follow_slot().index(), 0);
        let main = h.control_path().unwrap().to_path_buf();
        let f1 = h.control_path_at(Some(1)).unwrap();
        assert_eq!(
            f1.file_name().unwrap().to_string_lossy(),
            format!("{}f1", main.file_name().unwrap().to_string_lossy())
        );
    }

    #[test]
    fn fresh_connections_and_docker_transport() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SshOptions {
            multiplex: false,
            ..SshOptions::default()
        };
        let hosts = SshHosts::new(&[node("n", None)], &opts, dir.path()).unwrap();
        let h = hosts.get("n").unwrap();
        let line = h.argv("true", false).join(" ");
        assert!(line.contains("ControlMaster=no") && line.contains("ControlPath=none"));
        assert!(h.control_path().is_none());
        let docker_engine::Transport::Command(argv) = h.docker_transport() else {
            panic!("not a command transport");
        };
        assert_eq!(argv[0], "ssh");
        assert_eq!(
            &argv[argv.len() - 5..],
            ["n", "--", "docker", "system", "dial-stdio"]
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(MAX_CONTROL_DIR_LEN)));
        assert!(matches!(
            SshHosts::new(&[], &SshOptions::default(), &long),
            Err(SshError::ControlDir { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let hosts = SshHosts::new(&[], &SshOptions::default(), dir.path()).unwrap();
        assert!(matches!(
            hosts.get("nowhere"),
            Err(SshError::UnknownNode { .. })
        ));
        assert_eq!(
            ssh_reason(b"Warning: Permanently added 'x'\r\nssh: connect to host x port 22: No route to host\r\n"),
            "ssh: connect to host x port 22: No route to host"
        );
        assert_eq!(ssh_reason(b""), "ssh failed (exit status 255)");
    }
}
