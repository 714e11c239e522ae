//! Errors of the CLI and the exit codes they map to.

use std::path::PathBuf;

/// The documented exit codes of `harness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: the operation failed (a service failed, the daemon refused a request, ...).
    Failure = 1,
    /// 2: bad command-line usage (clap's own code).
    Usage = 2,
    /// 3: the configuration is missing or invalid.
    Config = 3,
    /// 4: the daemon is unreachable or could not be started.
    Daemon = 4,
    /// 5: services were not ready within the timeout.
    Timeout = 5,
    /// 129: the terminal hung up (SIGHUP).
    HangUp = 129,
    /// 130: interrupted by Ctrl-C (SIGINT).
    Interrupted = 130,
    /// 143: asked to terminate (SIGTERM).
    Terminated = 143,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Everything that can make a command fail, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration could not be loaded; the text is the rendered diagnostics.
    #[error("{0}")]
    Config(String),
    /// A usage error found after parsing (e.g. an unknown service name).
    #[error("{0}")]
    Usage(String),
    /// The daemon is not reachable.
    #[error("daemon unreachable (state dir {state_dir}): {reason}")]
    DaemonUnreachable {
        /// The state directory used.
        state_dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The daemon could not be started.
    #[error("could not start the daemon: {0}")]
    DaemonStart(String),
    /// Services were not ready in time.
    #[error("{0}")]
    Timeout(String),
    /// A request failed.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C, SIGTERM or SIGHUP, with nothing said about it yet.
    #[error("interrupted ({0})")]
    Interrupted(Interrupt),
    /// The command ended with this exit code and has already said why on stderr: no
    /// further error line.
    #[error("exit {}", .0.code())]
    Said(Exit),
    /// A command run for the user (`exec`) ended with this exit code: the CLI ends with
    /// it, saying nothing more.
    #[error("the command exited with code {0}")]
    Exited(u8),
    /// A command run for the user (`exec`) could not run: why, and the code a shell
    /// gives for it (127 not found, 126 not runnable).
    #[error("{message}")]
    NotRun {
        /// Why.
        message: String,
        /// The exit code.
        code: u8,
    },
    /// Writing output failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Config(_) => Exit::Config,
            CliError::Usage(_) => Exit::Usage,
            CliError::DaemonUnreachable { .. } | CliError::DaemonStart(_) => Exit::Daemon,
            CliError::Timeout(_) => Exit::Timeout,
            CliError::Failed(_) | CliError::Io(_) => Exit::Failure,
            CliError::Interrupted(i) => i.exit(),
            CliError::Said(exit) => *exit,
            CliError::Exited(_) | CliError::NotRun { .. } => Exit::Failure,
        }
    }

    /// The process exit code for this error: [`CliError::exit`]'s, or the code of the
    /// command run for the user.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Exited(code) | CliError::NotRun { code, .. } => *code,
            other => other.exit().code(),
        }
    }
}

/// A signal that interrupts a command (the CLI catches these instead of dying of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
    /// SIGHUP (the terminal went away).
    Hup,
}

impl Interrupt {
    /// The exit code for it: 128 plus the signal number, as a shell reports it.
    pub fn exit(self) -> Exit {
        match self {
            Interrupt::Int => Exit::Interrupted,
            Interrupt::Term => Exit::Terminated,
            Interrupt::Hup => Exit::HangUp,
        }
    }
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
            Interrupt::Hup => "SIGHUP",
        })
    }
}

/// The result type of commands.
pub type CliResult<T = ()> = Result<T, CliError>;
