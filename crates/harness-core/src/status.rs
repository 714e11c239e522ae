//! A snapshot of one service, as `harness status` shows it.

use serde::{Deserialize, Serialize};

use crate::{ExitStatus, Health, ServiceKind, ServiceName, ServiceState};

/// One row of `harness status`: what a service is, where, and how it fares.
///
/// Its JSON form (`harness status --json`) is a stable interface: fields are
/// only ever added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service name.
    pub name: ServiceName,
    /// The target kind.
    pub kind: ServiceKind,
    /// Where it runs: `local`, a node name, or a docker host.
    pub host: String,
    /// Its lifecycle state (flattened: `state` plus state-specific fields such as `reason`).
    #[serde(flatten)]
    pub state: ServiceState,
    /// The latest health verdict.
    pub health: Health,
    /// The process id (local or remote), if a process is running.
    pub pid: Option<u32>,
    /// The container id, for docker services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// How many times it has been restarted since it was last started on request.
    pub restarts: u32,
    /// The exit code of its last run, if it exited with one.
    pub exit_code: Option<i32>,
    /// When its current run started, in milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// How its last run ended, if one ended since it was started on request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// The deployed version, for package services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How a service's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// The exit status (`{"code": 1}`, `{"signal": 9}` or `"unknown"`).
    pub status: ExitStatus,
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long the run lasted, in milliseconds, if its start is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_ms: Option<u64>,
    /// The same in words: `exited with code 1 after 0.4s`.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_stable_fields() {
        let s = ServiceStatus {
            name: ServiceName::new("db").unwrap(),
            kind: ServiceKind::Process,
            host: "local".into(),
            state: ServiceState::Healthy,
            health: Health::Healthy,
            pid: Some(42),
            container_id: None,
            restarts: 1,
            exit_code: None,
            started_at_ms: Some(1),
            last_exit: None,
            version: None,
        };
        let j = serde_json::to_value(&s).unwrap();
        for key in [
            "name",
            "kind",
            "state",
            "health",
            "pid",
            "restarts",
            "exit_code",
            "host",
        ] {
            assert!(j.get(key).is_some(), "missing {key}");
        }
        assert_eq!(j["state"], "healthy");
        assert_eq!(serde_json::from_value::<ServiceStatus>(j).unwrap(), s);
    }
}
