//! What to run: a program, its arguments, environment, directory, stdin and identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the child's standard input is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StdinMode {
    /// `/dev/null`: reads see end of file at once.
    #[default]
    Null,
    /// A pipe the owner writes with [`ProcessHandle::write_stdin`](crate::ProcessHandle::write_stdin).
    Piped,
}

/// A command to run: the program, its arguments, environment changes, working
/// directory, stdin mode and the user/group to run as.
///
/// `Command` is plain data. Launchers run it; [layers](crate::Layer) rewrite it
/// (e.g. into an `ssh` or `docker exec` command) without running it.
///
/// Environment changes apply on top of the launcher's own environment, unless
/// [`env_clear`](Command::env_clear) was called; they are kept sorted by name so
/// that equal commands compare and print equal.
///
/// ```
/// use command_executor::{Command, StdinMode};
/// let cmd = Command::new("sh")
///     .arg("-c")
///     .arg("echo $GREETING")
///     .env("GREETING", "hi")
///     .current_dir("/tmp")
///     .stdin(StdinMode::Null);
/// assert_eq!(cmd.program(), "sh");
/// assert_eq!(cmd.get_args(), ["-c", "echo $GREETING"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, Option<String>>,
    env_clear: bool,
    current_dir: Option<PathBuf>,
    stdin: StdinMode,
    user: Option<u32>,
    group: Option<u32>,
    groups: Option<Vec<u32>>,
}

impl Command {
    /// A command running `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            current_dir: None,
            stdin: StdinMode::Null,
            user: None,
            group: None,
            groups: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), Some(value.into()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in vars {
            self.env.insert(k.into(), Some(v.into()));
        }
        self
    }

    /// Removes an environment variable inherited from the launcher.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        if self.env_clear {
            self.env.remove(&key);
        } else {
            self.env.insert(key, None);
        }
        self
    }

    /// Starts from an empty environment: nothing is inherited, and variables
    /// set before this call are forgotten.
    pub fn env_clear(mut self) -> Self {
        self.env.clear();
        self.env_clear = true;
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Sets what stdin is connected to (default [`StdinMode::Null`]).
    pub fn stdin(mut self, mode: StdinMode) -> Self {
        self.stdin = mode;
        self
    }

    /// Runs the process as this user id (needs the privilege to switch).
    pub fn user(mut self, uid: u32) -> Self {
        self.user = Some(uid);
        self
    }

    /// Runs the process with this group id (needs the privilege to switch).
    pub fn group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self
    }

    /// Sets the supplementary groups of the process (needs the privilege to
    /// switch). Without this, a process started as another [`user`](Command::user)
    /// by root has no supplementary groups.
    pub fn groups(mut self, gids: impl IntoIterator<Item = u32>) -> Self {
        self.groups = Some(gids.into_iter().collect());
        self
    }

    /// The program.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments, without the program.
    pub fn get_args(&self) -> &[String] {
        &self.args
    }

    /// The environment changes, sorted by name: `Some(value)` sets, `None` removes.
    pub fn get_envs(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// True if the environment starts empty instead of inherited.
    pub fn get_env_clear(&self) -> bool {
        self.env_clear
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.current_dir.as_deref()
    }

    /// The stdin mode.
    pub fn get_stdin(&self) -> StdinMode {
        self.stdin
    }

    /// The user id to run as, if set.
    pub fn get_user(&self) -> Option<u32> {
        self.user
    }

    /// The group id to run as, if set.
    pub fn get_group(&self) -> Option<u32> {
        self.group
    }

    /// The supplementary groups to run with, if set.
    pub fn get_groups(&self) -> Option<&[u32]> {
        self.groups.as_deref()
    }

    /// The program followed by its arguments.
    pub fn argv(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str))
    }

    /// Drops the environment changes, directory and user/group (what a layer
    /// folded into the command line), keeping program, arguments and stdin.
    pub(crate) fn without_context(mut self) -> Self {
        self.env.clear();
        self.env_clear = false;
        self.current_dir = None;
        self.user = None;
        self.group = None;
        self.groups = None;
        self
    }

    /// Replaces program and arguments, keeping everything else.
    pub(crate) fn with_argv(mut self, program: String, args: Vec<String>) -> Self {
        self.program = program;
        self.args = args;
        self
    }

    /// Replaces the calling process with this command (`execvp`): its arguments,
    /// environment changes, working directory and user, but the caller's process group
    /// and standard input, output and error. For handing a terminal over to a command
    /// (`harness exec`): job control, signals and the exit status are then the command's
    /// own. Returns only when the command could not be run, with why
    /// ([`ExecError::Spawn`](crate::ExecError::Spawn): a missing binary, directory, a
    /// file without permission); shells exit 127 for a missing command, 126 otherwise.
    pub fn exec_replace(&self) -> crate::ExecError {
        use std::os::unix::process::CommandExt;
        let source = self.std_command(None, false).exec();
        crate::ExecError::Spawn {
            program: self.program.clone(),
            cause: crate::spawn_cause::explain(self, &source),
            source,
        }
    }

    /// The `std` command for this, in a process group of its own; with
    /// `cgroup_procs` (the `cgroup.procs` file of a cgroup, open for writing),
    /// the child joins that cgroup before `exec`.
    pub(crate) fn to_std(
        &self,
        cgroup_procs: Option<std::os::fd::OwnedFd>,
    ) -> std::process::Command {
        self.std_command(cgroup_procs, true)
    }

    /// The `std` command for this; `own_group` puts it in a process group of its own.
    fn std_command(
        &self,
        cgroup_procs: Option<std::os::fd::OwnedFd>,
        own_group: bool,
    ) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        if self.env_clear {
            c.env_clear();
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(dir) = &self.current_dir {
            c.current_dir(dir);
        }
        if cgroup_procs.is_none() && self.groups.is_none() {
            if let Some(gid) = self.group {
                c.gid(gid);
            }
            if let Some(uid) = self.user {
                c.uid(uid);
            }
        } else {
            // std sets gid and uid before `pre_exec` hooks run, and has no stable way
            // to set supplementary groups; `setgroups` needs the privilege that
            // `setuid` drops, and so may joining a cgroup. So the hook joins the
            // cgroup first, then switches groups, gid and uid, in that order.
            let groups: Option<Vec<nix::unistd::Gid>> = self.groups.as_ref().map(|groups| {
                groups
                    .iter()
                    .map(|&g| nix::unistd::Gid::from_raw(g))
                    .collect()
            });
            let (gid, uid) = (self.group, self.user);
            // As std does when root switches to a user without groups given:
            // drop the supplementary groups.
            let drop_groups = groups.is_none() && uid.is_some();
            let hook = move || -> std::io::Result<()> {
                if let Some(procs) = &cgroup_procs {
                    // `0` stands for the writing process itself.
                    rustix::io::write(procs, b"0")?;
                }
                if let Some(groups) = &groups {
                    nix::unistd::setgroups(groups)?;
                } else if drop_groups && nix::unistd::getuid().is_root() {
                    let _ = nix::unistd::setgroups(&[]);
                }
                if let Some(gid) = gid {
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                }
                if let Some(uid) = uid {
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                }
                Ok(())
            };
            // SAFETY: the hook runs in the forked child before exec; it only makes
            // the async-signal-safe calls write (on a descriptor opened by the
            // parent), getuid, setgroups, setgid and setuid, on data prepared in
            // the parent, and allocates nothing (ADR 018, ADR 021).
            #[allow(unsafe_code)]
            unsafe {
                c.pre_exec(hook);
            }
        }
        if own_group {
            c.process_group(0);
        }
        c
    }
}

impl std::fmt::Display for Command {
    /// The program and arguments, each quoted for a POSIX shell, e.g. `echo 'a b'`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self.argv().map(crate::shell_quote).collect();
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_records_everything() {
        let c = Command::new("prog")
            .args(["a", "b"])
            .env("B", "2")
            .env("A", "1")
            .env_remove("C")
            .current_dir("/x")
            .stdin(StdinMode::Piped)
            .user(5)
            .group(6);
        assert_eq!(c.argv().collect::<Vec<_>>(), ["prog", "a", "b"]);
        assert_eq!(
            c.get_envs().collect::<Vec<_>>(),
            [("A", Some("1")), ("B", Some("2")), ("C", None)]
        );
        assert_eq!(c.get_current_dir(), Some(Path::new("/x")));
        assert_eq!(c.get_stdin(), StdinMode::Piped);
        assert_eq!((c.get_user(), c.get_group()), (Some(5), Some(6)));
        assert_eq!(c.clone(), c);
    }

    #[test]
    fn a_missing_program_is_not_run_and_says_why() {
        let err = Command::new("harness-no-such-program-here").exec_replace();
        match err {
            crate::ExecError::Spawn { source, cause, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                assert!(cause.contains("harness-no-such-program-here"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn env_clear_forgets_earlier_sets() {
        let c = Command::new("p")
            .env("A", "1")
            .env_clear()
            .env("B", "2")
            .env_remove("Z");
        assert!(c.get_env_clear());
        assert_eq!(c.get_envs().collect::<Vec<_>>(), [("B", Some("2"))]);
    }
}
