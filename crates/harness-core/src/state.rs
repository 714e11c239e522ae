//! What a service is and what state it is in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ServiceName, Signal};

/// The kind of target a service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A local process in its own process group.
    Process,
    /// A container on a Docker Engine.
    Docker,
    /// A process on a remote host, over SSH.
    Remote,
    /// A deployed package on a remote host, over SSH.
    Package,
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceKind::Process => "process",
            ServiceKind::Docker => "docker",
            ServiceKind::Remote => "remote",
            ServiceKind::Package => "package",
        })
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It ended, but how is not known (e.g. an attached process that was not our child).
    Unknown,
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// The exit code, if it exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            _ => None,
        }
    }
}

impl ExitStatus {
    /// How the process ended, as a phrase: `exited with code 1`,
    /// `killed by SIGKILL`, `exited (status unknown)`.
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("exited with code {c}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(n) => match Signal::from_number(*n) {
                Some(sig) => write!(f, "killed by {sig}"),
                None => write!(f, "killed by signal {n}"),
            },
            ExitStatus::Unknown => f.write_str("exited (status unknown)"),
        }
    }
}

/// The result of the latest health checks of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No check has a verdict yet, or the service has no check.
    #[default]
    Unknown,
    /// The checks pass.
    Healthy,
    /// The checks fail.
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "-",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// The lifecycle state of one service, as reported to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    /// Declared, not asked to run.
    Pending,
    /// Asked to run, waiting for a dependency to hold its condition.
    Waiting {
        /// The dependency it waits on.
        on: ServiceName,
    },
    /// Being started; not yet running (or not yet ready).
    Starting,
    /// Running; readiness not (yet) established.
    Running,
    /// Running and ready.
    Healthy,
    /// Running but its checks fail.
    Unhealthy,
    /// Being stopped.
    Stopping,
    /// Stopped on request, or never started.
    Stopped,
    /// A one-shot job that ran to completion successfully.
    Completed,
    /// Gave up: will not be restarted without a new request.
    Failed {
        /// Why, in one line, naming the cause (e.g. the dependency that failed).
        reason: String,
    },
    /// Exited and will be started again.
    Restarting {
        /// Which restart this will be (1 for the first).
        attempt: u32,
        /// Milliseconds until the attempt.
        in_ms: u64,
        /// Why it is restarted: the last run's end (`exited with code 1 after
        /// 0.4s`), a failed liveness check, or why it could not start.
        #[serde(default)]
        reason: String,
    },
    /// Its state cannot be observed (e.g. its host is unreachable).
    Unknown {
        /// Why it cannot be observed.
        reason: String,
    },
}

impl ServiceState {
    /// A short lowercase label: `pending`, `waiting`, `healthy`, ...
    pub fn label(&self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::Waiting { .. } => "waiting",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Healthy => "healthy",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Completed => "completed",
            ServiceState::Failed { .. } => "failed",
            ServiceState::Restarting { .. } => "restarting",
            ServiceState::Unknown { .. } => "unknown",
        }
    }

    /// True while a process of the service is (believed to be) alive.
    pub fn is_alive(&self) -> bool {
        matches!(
            self,
            ServiceState::Starting
                | ServiceState::Running
                | ServiceState::Healthy
                | ServiceState::Unhealthy
                | ServiceState::Stopping
        )
    }

    /// True for states that will not change without a new request.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            ServiceState::Pending
                | ServiceState::Stopped
                | ServiceState::Completed
                | ServiceState::Failed { .. }
        )
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Waiting { on } => write!(f, "waiting on {on}"),
            ServiceState::Failed { reason } => write!(f, "failed: {reason}"),
            ServiceState::Restarting {
                attempt,
                in_ms,
                reason,
            } => {
                write!(f, "restarting (attempt {attempt} in {in_ms} ms)")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            ServiceState::Unknown { reason } => write!(f, "unknown: {reason}"),
            other => f.write_str(other.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_is_tagged() {
        let s = ServiceState::Failed {
            reason: "dependency db failed".into(),
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["state"], "failed");
        assert_eq!(j["reason"], "dependency db failed");
        let back: ServiceState = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn exit_status_display() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
        assert_eq!(ExitStatus::Signal(9).to_string(), "killed by SIGKILL");
        assert!(ExitStatus::Code(0).success());
    }
}
