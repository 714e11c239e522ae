//! Layers: pure rewrites of a [`Command`] into the command that runs it
//! somewhere else (over `ssh`, inside a container). They stack: wrapping with
//! [`DockerLayer`] and then [`SshLayer`] runs `docker exec` on the remote host.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::quote::shell_command_line;
use crate::{Command, StdinMode};

/// A rewrite of a command that does not run it.
pub trait Layer {
    /// The command that does what `cmd` does, through this layer.
    fn wrap(&self, cmd: Command) -> Command;
}

/// Defaults for local commands: an environment and a working directory that
/// a command gets unless it sets them itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalLayer {
    env: BTreeMap<String, String>,
    current_dir: Option<PathBuf>,
}

impl LocalLayer {
    /// A layer that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` for commands that do not set or remove it themselves.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The working directory for commands that have none.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }
}

impl Layer for LocalLayer {
    fn wrap(&self, cmd: Command) -> Command {
        let own: Vec<String> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        let mut out = cmd;
        for (k, v) in &self.env {
            if !own.iter().any(|o| o == k) {
                out = out.env(k.clone(), v.clone());
            }
        }
        if out.get_current_dir().is_none()
            && let Some(dir) = &self.current_dir
        {
            out = out.current_dir(dir.clone());
        }
        out
    }
}

/// `ControlMaster` settings of OpenSSH connection sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMaster {
    /// `yes`: this connection is the master.
    Yes,
    /// `no`: never a master (reuse one if it exists).
    No,
    /// `auto`: reuse a master, or become one.
    Auto,
    /// `autoask`.
    AutoAsk,
    /// `ask`.
    Ask,
}

impl ControlMaster {
    fn as_str(self) -> &'static str {
        match self {
            ControlMaster::Yes => "yes",
            ControlMaster::No => "no",
            ControlMaster::Auto => "auto",
            ControlMaster::AutoAsk => "autoask",
            ControlMaster::Ask => "ask",
        }
    }
}

/// Runs commands on a remote host through the OpenSSH client:
/// `ssh [options] host -- '<sh command line>'`.
///
/// The command's directory and environment are folded into the remote shell
/// line ([`shell_command_line`]); the remote login shell must be POSIX `sh`
/// compatible. The command's user/group stay on the local `ssh` process; the
/// remote user is [`SshLayer::user`]. With [`StdinMode::Null`] `ssh -n` is used.
///
/// ```
/// use command_executor::{Command, Layer, SshLayer};
/// let ssh = SshLayer::new("db1.example").user("deploy").port(2222).batch_mode(true);
/// let cmd = ssh.wrap(Command::new("echo").arg("hi there"));
/// assert_eq!(cmd.program(), "ssh");
/// assert_eq!(cmd.get_args().last().unwrap(), "exec echo 'hi there'");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshLayer {
    program: String,
    host: String,
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    control_master: Option<ControlMaster>,
    control_path: Option<PathBuf>,
    control_persist: Option<Duration>,
    batch_mode: Option<bool>,
    connect_timeout: Option<Duration>,
    server_alive_interval: Option<Duration>,
    options: Vec<(String, String)>,
    local_forwards: Vec<String>,
    remote_forwards: Vec<String>,
}

impl SshLayer {
    /// Commands run on `host` (a name, address, or `~/.ssh/config` alias).
    pub fn new(host: impl Into<String>) -> Self {
        SshLayer {
            program: "ssh".into(),
            host: host.into(),
            user: None,
            port: None,
            identity_file: None,
            control_master: None,
            control_path: None,
            control_persist: None,
            batch_mode: None,
            connect_timeout: None,
            server_alive_interval: None,
            options: Vec::new(),
            local_forwards: Vec::new(),
            remote_forwards: Vec::new(),
        }
    }

    /// The ssh client to run (default `ssh`).
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// The remote user (`-l`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The port (`-p`).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The private key (`-i`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// Connection sharing: `-o ControlMaster=...`.
    pub fn control_master(mut self, mode: ControlMaster) -> Self {
        self.control_master = Some(mode);
        self
    }

    /// The control socket: `-o ControlPath=...`.
    pub fn control_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_path = Some(path.into());
        self
    }

    /// How long an idle master stays: `-o ControlPersist=<seconds>`.
    pub fn control_persist(mut self, idle: Duration) -> Self {
        self.control_persist = Some(idle);
        self
    }

    /// Never ask for passwords or passphrases: `-o BatchMode=yes|no`.
    pub fn batch_mode(mut self, on: bool) -> Self {
        self.batch_mode = Some(on);
        self
    }

    /// `-o ConnectTimeout=<seconds>` (rounded up to whole seconds).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// `-o ServerAliveInterval=<seconds>` (rounded up to whole seconds).
    pub fn server_alive_interval(mut self, interval: Duration) -> Self {
        self.server_alive_interval = Some(interval);
        self
    }

    /// Any other option: `-o key=value`.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// A local port forward: `-L spec`, e.g. `8080:localhost:80`.
    pub fn local_forward(mut self, spec: impl Into<String>) -> Self {
        self.local_forwards.push(spec.into());
        self
    }

    /// A remote port forward: `-R spec`.
    pub fn remote_forward(mut self, spec: impl Into<String>) -> Self {
        self.remote_forwards.push(spec.into());
        self
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The ssh options (everything before the host), for other uses of the
    /// same connection settings (e.g. `scp`-like tools).
    pub fn options_args(&self) -> Vec<String> {
        fn secs(d: Duration) -> String {
            let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            s.max(1).to_string()
        }
        let mut a: Vec<String> = Vec::new();
        if let Some(u) = &self.user {
            a.extend(["-l".into(), u.clone()]);
        }
        if let Some(p) = self.port {
            a.extend(["-p".into(), p.to_string()]);
        }
        if let Some(i) = &self.identity_file {
            a.extend(["-i".into(), i.to_string_lossy().into_owned()]);
        }
        let mut opt = |k: &str, v: String| a.extend(["-o".into(), format!("{k}={v}")]);
        if let Some(b) = self.batch_mode {
            opt("BatchMode", if b { "yes" } else { "no" }.into());
        }
        if let Some(t) = self.connect_timeout {
            opt("ConnectTimeout", secs(t));
        }
        if let Some(t) = self.server_alive_interval {
            opt("ServerAliveInterval", secs(t));
        }
        if let Some(m) = self.control_master {
            opt("ControlMaster", m.as_str().into());
        }
        if let Some(p) = &self.control_path {
            opt("ControlPath", p.to_string_lossy().into_owned());
        }
        if let Some(t) = self.control_persist {
            opt(
                "ControlPersist",
                if t.is_zero() { "no".into() } else { secs(t) },
            );
        }
        for (k, v) in &self.options {
            opt(k, v.clone());
        }
        for f in &self.local_forwards {
            a.extend(["-L".into(), f.clone()]);
        }
        for f in &self.remote_forwards {
            a.extend(["-R".into(), f.clone()]);
        }
        a
    }
}

impl Layer for SshLayer {
    fn wrap(&self, cmd: Command) -> Command {
        let line = shell_command_line(&cmd);
        let mut args = vec!["-T".to_owned()];
        if cmd.get_stdin() == StdinMode::Null {
            args.push("-n".into());
        }
        args.extend(self.options_args());
        args.push(self.host.clone());
        args.push("--".into());
        args.push(line);
        let user = cmd.get_user();
        let group = cmd.get_group();
        let groups = cmd.get_groups().map(<[u32]>::to_vec);
        let mut out = cmd.without_context().with_argv(self.program.clone(), args);
        if let Some(u) = user {
            out = out.user(u);
        }
        if let Some(g) = group {
            out = out.group(g);
        }
        if let Some(gs) = groups {
            out = out.groups(gs);
        }
        out
    }
}

/// Runs commands inside a running container:
/// `docker [-H host] exec [-i] [-u uid[:gid]] [-w dir] [-e K=V]... container prog args...`.
///
/// Environment removals and a cleared environment go through `env -u`/`env -i`
/// inside the container. [`StdinMode::Piped`] adds `-i`.
///
/// ```
/// use command_executor::{Command, DockerLayer, Layer};
/// let cmd = DockerLayer::new("web").wrap(Command::new("ls").arg("/").env("A", "1").current_dir("/srv"));
/// assert_eq!(cmd.argv().collect::<Vec<_>>(), ["docker", "exec", "-w", "/srv", "-e", "A=1", "web", "ls", "/"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLayer {
    program: String,
    docker_host: Option<String>,
    container: String,
    user: Option<String>,
}

impl DockerLayer {
    /// Commands run in `container` (name or id).
    pub fn new(container: impl Into<String>) -> Self {
        DockerLayer {
            program: "docker".into(),
            docker_host: None,
            container: container.into(),
            user: None,
        }
    }

    /// The docker client to run (default `docker`).
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// The engine to talk to (`docker -H ...`).
    pub fn docker_host(mut self, host: impl Into<String>) -> Self {
        self.docker_host = Some(host.into());
        self
    }

    /// The user inside the container (`-u name|uid[:gid]`); overrides the
    /// command's own user/group.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
}

impl Layer for DockerLayer {
    fn wrap(&self, cmd: Command) -> Command {
        let mut args: Vec<String> = Vec::new();
        if let Some(h) = &self.docker_host {
            args.extend(["-H".into(), h.clone()]);
        }
        args.push("exec".into());
        if cmd.get_stdin() == StdinMode::Piped {
            args.push("-i".into());
        }
        let user = match (&self.user, cmd.get_user(), cmd.get_group()) {
            (Some(u), _, _) => Some(u.clone()),
            (None, Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (None, Some(u), None) => Some(u.to_string()),
            (None, None, Some(g)) => Some(format!("0:{g}")),
            (None, None, None) => None,
        };
        if let Some(u) = user {
            args.extend(["-u".into(), u]);
        }
        if let Some(d) = cmd.get_current_dir() {
            args.extend(["-w".into(), d.to_string_lossy().into_owned()]);
        }
        let mut removed = Vec::new();
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => args.extend(["-e".into(), format!("{k}={v}")]),
                None => removed.push(k.to_owned()),
            }
        }
        args.push(self.container.clone());
        if cmd.get_env_clear() || !removed.is_empty() {
            args.push("env".into());
            if cmd.get_env_clear() {
                args.push("-i".into());
                // `env -i` also clears what `-e` set: repeat the sets after it.
                for (k, v) in cmd.get_envs() {
                    if let Some(v) = v {
                        args.push(format!("{k}={v}"));
                    }
                }
            }
            for k in removed {
                args.extend(["-u".into(), k]);
            }
        }
        args.extend(cmd.argv().map(str::to_owned));
        let out = cmd.without_context();
        out.with_argv(self.program.clone(), args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_layer_renders_every_option() {
        let ssh = SshLayer::new("h")
            .user("u")
            .port(22)
            .identity_file("/k")
            .control_master(ControlMaster::Auto)
            .control_path("/tmp/c-%r@%h:%p")
            .control_persist(Duration::from_secs(60))
            .batch_mode(true)
            .connect_timeout(Duration::from_millis(1500))
            .server_alive_interval(Duration::from_secs(5))
            .option("StrictHostKeyChecking", "no")
            .local_forward("8080:localhost:80")
            .remote_forward("9000:localhost:9000");
        let c = ssh.wrap(Command::new("true").current_dir("/d").env("K", "v"));
        assert_eq!(
            c.argv().collect::<Vec<_>>(),
            [
                "ssh",
                "-T",
                "-n",
                "-l",
                "u",
                "-p",
                "22",
                "-i",
                "/k",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=2",
                "-o",
                "ServerAliveInterval=5",
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPath=/tmp/c-%r@%h:%p",
                "-o",
                "ControlPersist=60",
                "-o",
                "StrictHostKeyChecking=no",
                "-L",
                "8080:localhost:80",
                "-R",
                "9000:localhost:9000",
                "h",
                "--",
                "cd /d && exec env K=v true",
            ]
        );
        assert_eq!(c.get_envs().count(), 0);
        assert!(c.get_current_dir().is_none());
    }

    #[test]
    fn docker_layer_folds_user_env_and_clear() {
        let c = DockerLayer::new("box").docker_host("unix:///d.sock").wrap(
            Command::new("sh")
                .arg("-c")
                .arg("x")
                .env_clear()
                .env("A", "1")
                .stdin(StdinMode::Piped)
                .user(10)
                .group(20),
        );
        assert_eq!(
            c.argv().collect::<Vec<_>>(),
            [
                "docker",
                "-H",
                "unix:///d.sock",
                "exec",
                "-i",
                "-u",
                "10:20",
                "-e",
                "A=1",
                "box",
                "env",
                "-i",
                "A=1",
                "sh",
                "-c",
                "x"
            ]
        );
        assert_eq!(c.get_user(), None);
        assert_eq!(c.get_stdin(), StdinMode::Piped);
        let c = DockerLayer::new("box").wrap(Command::new("p").env_remove("X"));
        assert_eq!(
            c.argv().collect::<Vec<_>>(),
            ["docker", "exec", "box", "env", "-u", "X", "p"]
        );
    }

    #[test]
    fn layers_stack_docker_then_ssh() {
        let inner = Command::new("echo").arg("a b").current_dir("/w");
        let c = SshLayer::new("remote").wrap(DockerLayer::new("ctr").wrap(inner));
        assert_eq!(c.program(), "ssh");
        assert_eq!(
            c.get_args().last().unwrap(),
            "exec docker exec -w /w ctr echo 'a b'"
        );
    }

    #[test]
    fn local_layer_fills_defaults_only() {
        let l = LocalLayer::new()
            .env("A", "layer")
            .env("B", "layer")
            .current_dir("/l");
        let c = l.wrap(Command::new("p").env("A", "own").env_remove("B"));
        assert_eq!(
            c.get_envs().collect::<Vec<_>>(),
            [("A", Some("own")), ("B", None)]
        );
        assert_eq!(c.get_current_dir(), Some(std::path::Path::new("/l")));
        let c = l.wrap(Command::new("p").current_dir("/own"));
        assert_eq!(c.get_current_dir(), Some(std::path::Path::new("/own")));
        assert_eq!(c.get_envs().count(), 2);
    }
}
