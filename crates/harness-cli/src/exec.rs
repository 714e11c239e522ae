//! `harness exec SERVICE COMMAND...`: runs a command where a service runs (ADR 024).
//!
//! The daemon answers where and with what ([`ExecPlan`]); the command runs from here, with
//! this terminal: a local process service's command replaces this process (its environment,
//! directory and user applied), a remote service's runs through `ssh` that replaces this
//! process, and a container's runs through the engine's exec API, its streams copied here.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;

use command_executor::ExecError;
use docker_engine::{Docker, ExecSpec, Frames, Transport};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use harness_core::OutputStream;
use harness_protocol::{EngineAddress, ExecParams, ExecPlan, ExecTarget, SshCommand};

use crate::cli::ExecArgs;
use crate::error::{CliError, CliResult};
use crate::remote;

/// What `exec` needs from the global flags.
pub struct Target<'a> {
    /// The daemon's state directory.
    pub state_dir: &'a Path,
    /// The project the service belongs to.
    pub project: harness_protocol::ProjectRef,
}

/// Runs `exec`.
pub async fn run(target: Target<'_>, a: ExecArgs) -> CliResult {
    let client = remote::connect(target.state_dir).await?;
    let service = remote::service_names(std::slice::from_ref(&a.service))?
        .pop()
        .ok_or_else(|| CliError::Usage("a service is needed".into()))?;
    remote::check_known_to_daemon(&client, &target.project, std::slice::from_ref(&service)).await?;
    let plan: ExecPlan = client
        .exec(ExecParams {
            project: target.project,
            service,
        })
        .await
        .map_err(|e| remote::remote_error(e, target.state_dir))?;
    drop(client);
    let tty = !a.no_tty && std::io::stdin().is_terminal();
    match plan.target {
        ExecTarget::Local {
            env,
            working_dir,
            user,
        } => Err(local(
            &a.command,
            &env,
            working_dir.as_deref(),
            user.as_deref(),
        )),
        ExecTarget::Ssh { ssh, dir, env, .. } => Err(over_ssh(&ssh, tty, &dir, &env, &a.command)),
        ExecTarget::Container { container, engine } => {
            in_container(&engine, &container, tty, a.command).await
        }
    }
}

/// The error for a command that could not run: what a shell would say, with its code.
fn not_run(e: ExecError) -> CliError {
    let code = match &e {
        ExecError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    CliError::NotRun {
        message: e.to_string(),
        code,
    }
}

/// Replaces this process with `command` run as the local process service runs: its
/// environment on top of this one, its directory, its user. Returns only on failure.
fn local(
    command: &[String],
    env: &BTreeMap<String, String>,
    working_dir: Option<&Path>,
    user: Option<&str>,
) -> CliError {
    let Some((program, args)) = command.split_first() else {
        return CliError::Usage("a command is needed".into());
    };
    let mut cmd = command_executor::Command::new(program.clone())
        .args(args.iter().cloned())
        .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(dir) = working_dir {
        cmd = cmd.current_dir(dir);
    }
    if let Some(user) = user {
        match switch_user(cmd, user, env) {
            Ok(c) => cmd = c,
            Err(e) => return e,
        }
    }
    not_run(cmd.exec_replace())
}

/// `cmd` run as `user` when that is another user than this process's: only root may
/// switch.
fn switch_user(
    cmd: command_executor::Command,
    user: &str,
    env: &BTreeMap<String, String>,
) -> CliResult<command_executor::Command> {
    let switched = service_orchestration::process::as_user(cmd.clone(), user, env)
        .map_err(|e| CliError::Failed(format!("the service runs as `{user}`: {e}")))?;
    let me = rustix::process::geteuid().as_raw();
    if switched.get_user() == Some(me) {
        return Ok(cmd);
    }
    if me != 0 {
        return Err(CliError::Failed(format!(
            "the service runs as user `{user}`: running a command as that user needs root"
        )));
    }
    Ok(switched)
}

/// The shell command line run on a node: into `dir`, then `command` with `env`.
fn remote_script(dir: &str, env: &BTreeMap<String, String>, command: &[String]) -> String {
    use command_executor::shell_quote;
    let mut line = format!(
        "cd && cd {dir} || {{ echo \"harness: cannot enter {shown} on the node\" >&2; exit 126; }}; exec env",
        dir = shell_quote(dir),
        shown = dir.replace(['"', '\\', '$', '`'], "_"),
    );
    for (k, v) in env {
        line.push(' ');
        line.push_str(&shell_quote(&format!("{k}={v}")));
    }
    for word in command {
        line.push(' ');
        line.push_str(&shell_quote(word));
    }
    line
}

/// Replaces this process with `ssh` running `command` on the node (with a terminal there
/// when `tty`); ssh passes the remote exit status through. Returns only on failure.
fn over_ssh(
    ssh: &SshCommand,
    tty: bool,
    dir: &str,
    env: &BTreeMap<String, String>,
    command: &[String],
) -> CliError {
    let argv = ssh.argv(tty, &remote_script(dir, env, command));
    let Some((program, args)) = argv.split_first() else {
        return CliError::Failed("the daemon gave no ssh program".into());
    };
    let cmd = command_executor::Command::new(program.clone()).args(args.iter().cloned());
    not_run(cmd.exec_replace())
}

fn transport(engine: &EngineAddress) -> Transport {
    match engine {
        EngineAddress::Socket { path } => Transport::Unix(path.clone()),
        EngineAddress::Tcp { address } => Transport::Tcp(address.clone()),
        EngineAddress::Command { argv } => Transport::Command(argv.clone()),
    }
}

/// Runs `command` in `container` through the engine's exec API, with this terminal (raw,
/// its size followed) when `tty`; ends with the command's exit code.
async fn in_container(
    engine: &EngineAddress,
    container: &str,
    tty: bool,
    command: Vec<String>,
) -> CliResult {
    let failed = |e: docker_engine::DockerError| CliError::Failed(e.to_string());
    let docker = Docker::connect(transport(engine)).await.map_err(failed)?;
    let spec = ExecSpec {
        cmd: command,
        tty,
        stdin: true,
        console_size: if tty { terminal_size() } else { None },
        ..ExecSpec::default()
    };
    let exec_id = docker
        .exec_create_with(container, &spec)
        .await
        .map_err(failed)?;
    let stream = docker.exec_attach(&exec_id, tty).await.map_err(failed)?;
    let raw = if tty { RawMode::enter() } else { None };
    let resizing = async {
        if !tty {
            return future::pending::<std::io::Result<()>>().await;
        }
        let mut winch = async_signal::Signals::new([async_signal::Signal::Winch]).ok();
        loop {
            if let Some((rows, cols)) = terminal_size() {
                // A resize the engine refuses (the command just ended) changes nothing.
                let _ = docker.exec_resize(&exec_id, rows, cols).await;
            }
            match winch.as_mut() {
                Some(w) => {
                    futures_lite::StreamExt::next(w).await;
                }
                None => return future::pending::<std::io::Result<()>>().await,
            }
        }
    };
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let input = async {
        let mut stdin = smol::Unblock::new(std::io::stdin());
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = writer.flush().await;
                }
            }
        }
        // The end of stdin is the end of the command's stdin.
        let _ = writer.close().await;
        future::pending::<std::io::Result<()>>().await
    };
    let output = async {
        let mut frames = Frames::new(tty);
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok::<(), std::io::Error>(()),
                Ok(n) => n,
            };
            for (stream, bytes) in frames.push(&buf[..n]) {
                if stream == OutputStream::Stderr {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&bytes)?;
                    err.flush()?;
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
            }
        }
    };
    let copied = future::or(output, future::or(input, resizing)).await;
    drop(raw);
    copied?;
    let code = docker.exec_exit_code(&exec_id).await.map_err(failed)?;
    match code {
        0 => Ok(()),
        c => Err(CliError::Exited(u8::try_from(c).unwrap_or(1))),
    }
}

/// The size of this terminal: rows and columns.
fn terminal_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The terminal on stdin in raw mode (keys go to the command as typed: Ctrl-C included),
/// restored when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_script_enters_the_directory_and_quotes_everything() {
        let env = BTreeMap::from([("FOO".to_owned(), "a b".to_owned())]);
        let script = remote_script(
            ".harness/p/api",
            &env,
            &["sh".into(), "-c".into(), "echo $FOO; exit 3".into()],
        );
        assert_eq!(
            script,
            "cd && cd .harness/p/api || { echo \"harness: cannot enter .harness/p/api on the node\" >&2; exit 126; }; \
             exec env 'FOO=a b' sh -c 'echo $FOO; exit 3'"
        );
    }

    #[test]
    fn a_missing_command_exits_127() {
        let err = local(
            &["harness-no-such-command".into()],
            &BTreeMap::new(),
            None,
            None,
        );
        assert_eq!(err.code(), 127, "{err}");
        assert!(err.to_string().contains("harness-no-such-command"), "{err}");
    }
}
