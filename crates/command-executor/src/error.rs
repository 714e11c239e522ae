//! Errors of launching, attaching to and controlling processes.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use harness_core::Signal;

/// What went wrong running or controlling a process; each variant names the
/// program, pid or path involved.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("cannot start `{program}`: {cause}")]
    Spawn {
        /// The program.
        program: String,
        /// The error the system returned.
        source: io::Error,
        /// What it means for this command: the missing working directory,
        /// binary (and the PATH searched), the file without permission, the
        /// resource limit reached.
        cause: String,
    },
    /// A log file could not be opened or read.
    #[error("log file {}: {source}", path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A signal could not be sent.
    #[error("cannot send {signal} to {target}: {source}")]
    Signal {
        /// `process 42` or `process group 42`.
        target: String,
        /// The signal.
        signal: Signal,
        /// Why.
        source: io::Error,
    },
    /// No process with this pid is running.
    #[error("process {pid} is not running")]
    NotRunning {
        /// The pid.
        pid: u32,
    },
    /// The pid is in use by another process than the one expected (the pid was reused).
    #[error(
        "process {pid} started at tick {found}, not {expected}: the pid was reused by another process"
    )]
    IdentityMismatch {
        /// The pid.
        pid: u32,
        /// The start time expected.
        expected: u64,
        /// The start time of the process now holding the pid.
        found: u64,
    },
    /// `/proc/<pid>/stat` could not be read or parsed.
    #[error("cannot read /proc/{pid}/stat: {reason}")]
    Proc {
        /// The pid.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// The process has no stdin pipe (launched with `StdinMode::Null`, or stdin closed).
    #[error("process {pid} has no open stdin pipe")]
    NoStdin {
        /// The pid.
        pid: u32,
    },
    /// Writing to the process's stdin failed.
    #[error("writing stdin of process {pid}: {source}")]
    Stdin {
        /// The pid.
        pid: u32,
        /// Why.
        source: io::Error,
    },
    /// Watching a process for its exit failed.
    #[error("cannot watch process {pid}: {source}")]
    Watch {
        /// The pid.
        pid: u32,
        /// Why.
        source: io::Error,
    },
    /// A cgroup could not be made, joined, read or killed.
    #[error("cgroup {}: {source}", path.display())]
    Cgroup {
        /// The cgroup's directory (or the file of it).
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Processes were still there after SIGKILL and the wait.
    #[error("{what} still has processes {waited:?} after SIGKILL")]
    StopTimeout {
        /// What was stopped: `cgroup /sys/fs/cgroup/…` or `process 42 and what it started`.
        what: String,
        /// How long it waited after SIGKILL.
        waited: Duration,
    },
}
