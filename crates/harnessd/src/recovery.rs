//! Never losing track of what runs (ADR 020): the state file written with
//! its checksum next to a last-good copy, a damaged one moved aside, and the
//! local processes of a project found again from `/proc` when neither tells.
//!
//! Everything here blocks (files, `/proc`): call it through `blocking::unblock`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use command_executor::{LogOffsets, ProcessIdentity, ProcessScope, environ_var};
use harness_config::Project;
use harness_core::{ProjectName, ServiceKind, ServiceName};
use harness_protocol::{ProjectRef, StateDir, StateDirError, write_atomic};
use serde::{Deserialize, Serialize};
use service_orchestration::docker::DockerRecord;
use service_orchestration::process::{ProcessRecord, RUN_MARKER};
use service_orchestration::{InstanceRecord, PendingStart, ServiceRecord};
use sha2::{Digest, Sha256};

/// Format version of `state.json`: 2 carries a checksum, 1 did not.
pub const STATE_FORMAT: u32 = 2;

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version.
    pub format: u32,
    /// The SHA-256 (hex) of the compact JSON of this state without this
    /// field: a truncated or garbled file does not pass for a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Every project the daemon manages.
    pub projects: BTreeMap<ProjectName, PersistedProject>,
}

/// One project in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedProject {
    /// How to load it again.
    pub spec: ProjectRef,
    /// Its running services, to re-adopt.
    pub records: Vec<ServiceRecord>,
    /// Services asked to run that had no process (waiting for a restart or a
    /// dependency): started again, with their restart counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingStart>,
}

fn checksum(state: &PersistedState) -> String {
    let bare = PersistedState {
        sha256: None,
        ..state.clone()
    };
    let bytes = serde_json::to_vec(&bare).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes of `state` as written: pretty JSON with its checksum.
pub fn encode_state(state: &PersistedState) -> Vec<u8> {
    let sealed = PersistedState {
        format: STATE_FORMAT,
        sha256: Some(checksum(state)),
        ..state.clone()
    };
    serde_json::to_vec_pretty(&sealed).unwrap_or_default()
}

/// Reads a state file's bytes: the state, or why they are not a whole one.
/// A file of format 1 (before checksums) is taken if it parses.
pub fn decode_state(bytes: &[u8]) -> Result<PersistedState, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".to_owned());
    }
    let mut state: PersistedState =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if state.format >= 2 {
        let Some(written) = state.sha256.take() else {
            return Err("the checksum is missing".to_owned());
        };
        if written != checksum(&state) {
            return Err("the checksum does not match the content".to_owned());
        }
    }
    state.sha256 = None;
    Ok(state)
}

/// Writes `state` to `state.json` and then to its last-good copy, both
/// atomically.
pub fn write_state(dir: &StateDir, state: &PersistedState) -> Result<(), StateDirError> {
    let bytes = encode_state(state);
    write_atomic(&dir.state_file(), &bytes, 0o600)?;
    write_atomic(&dir.last_good_state_file(), &bytes, 0o600)
}

/// Where the state at start came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// `state.json`.
    StateFile,
    /// `state.json.last-good`.
    LastGood,
    /// Neither held a whole state.
    Nothing,
}

/// The largest state file read at start (it holds every project's records).
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// Reads the state at start: `state.json` if whole, else its last-good copy.
/// A damaged file is moved aside (`<name>.corrupt-<millis>`), never
/// overwritten, with a warning in the daemon's log.
pub fn read_state(dir: &StateDir) -> (PersistedState, StateSource) {
    for (path, source) in [
        (dir.state_file(), StateSource::StateFile),
        (dir.last_good_state_file(), StateSource::LastGood),
    ] {
        // A regular file of bounded size only: a FIFO or a device put in its
        // place must not hang or exhaust the daemon.
        let bytes = match harness_config::read_limited(&path, MAX_STATE_BYTES) {
            Ok(text) => text.into_bytes(),
            Err(e) if e.is_not_found() => {
                tracing::warn!(file = %path.display(), "no state file");
                continue;
            }
            // Not text: as damaged as a file that does not parse.
            Err(harness_config::ReadFileError::NotUtf8 { .. }) => Vec::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the state file");
                continue;
            }
        };
        match decode_state(&bytes) {
            Ok(state) => {
                if source == StateSource::LastGood {
                    tracing::warn!(file = %path.display(), "state recovered from the last-good copy");
                }
                return (state, source);
            }
            Err(why) => {
                let aside = aside_name(&path);
                match std::fs::rename(&path, &aside) {
                    Ok(()) => {
                        tracing::error!(file = %path.display(), reason = %why, kept = %aside.display(), "damaged state file moved aside")
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), reason = %why, error = %e, "damaged state file (could not move it aside)")
                    }
                }
            }
        }
    }
    (PersistedState::default(), StateSource::Nothing)
}

fn aside_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}.corrupt-{}", crate::logs::now_ms()))
}

/// The copy of a project's reference kept for recovery.
pub fn spec_file(dir: &StateDir, project: &ProjectName) -> PathBuf {
    dir.projects_dir()
        .join(format!("{}.json", project.as_str()))
}

/// Writes the copy of `project`'s reference.
pub fn write_spec(
    dir: &StateDir,
    project: &ProjectName,
    spec: &ProjectRef,
) -> Result<(), StateDirError> {
    let bytes = serde_json::to_vec_pretty(spec).unwrap_or_default();
    write_atomic(&spec_file(dir, project), &bytes, 0o600)
}

/// Removes the copy of `project`'s reference (the project is down).
pub fn remove_spec(dir: &StateDir, project: &ProjectName) -> Result<(), StateDirError> {
    let path = spec_file(dir, project);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StateDirError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

/// Every project reference kept in the state directory.
pub fn read_specs(dir: &StateDir) -> BTreeMap<ProjectName, ProjectRef> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.projects_dir()) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| ProjectName::new(n).ok())
        else {
            continue;
        };
        match harness_config::read_limited(&path, harness_config::file::MAX_CONFIG_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_str::<ProjectRef>(&b).map_err(|e| e.to_string()))
        {
            Ok(spec) => {
                out.insert(name, spec);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "unreadable project reference")
            }
        }
    }
    out
}

/// `spec` with only the variables its files refer to: the client's other
/// variables (tokens a shell holds) are not kept anywhere.
pub fn trim_env(spec: &ProjectRef, referenced: &std::collections::BTreeSet<String>) -> ProjectRef {
    ProjectRef {
        env: spec
            .env
            .iter()
            .filter(|(k, _)| referenced.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..spec.clone()
    }
}

/// A local process that says it is a service of a project of this daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundProcess {
    /// `HARNESS_PROJECT` in its environment.
    pub project: String,
    /// `HARNESS_SERVICE` in its environment.
    pub service: String,
    /// Pid and start time.
    pub identity: ProcessIdentity,
    /// When it started (ms since the Unix epoch), if the boot time is known.
    pub started_at_ms: Option<u64>,
    /// Its stdout log.
    pub stdout_log: PathBuf,
    /// Its stderr log.
    pub stderr_log: PathBuf,
    /// Its cgroup and run marker, as `/proc` shows them.
    pub scope: ProcessScope,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

fn boot_time_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(secs * 1000)
}

/// Finds the processes of this daemon's services in `/proc`: group leaders
/// (each service runs in a process group of its own) whose environment holds
/// `HARNESS_PROJECT` and `HARNESS_SERVICE` and whose stdout or stderr is that
/// service's log file under `log_root` (`<project>/<service>/stdout.log`), so
/// neither a check command nor a service of another daemon is taken. Of
/// several for one service (duplicates), the first started comes first.
pub fn scan_processes(log_root: &Path) -> Vec<FoundProcess> {
    let boot = boot_time_ms();
    let me = std::process::id();
    let mut found = Vec::new();
    for pid in command_executor::all_pids() {
        if pid == me {
            continue;
        }
        if command_executor::process_group_of(pid).ok() != Some(pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let (Some(project), Some(service)) = (
            environ_var(&environ, "HARNESS_PROJECT"),
            environ_var(&environ, "HARNESS_SERVICE"),
        ) else {
            continue;
        };
        let dir = log_root.join(project).join(service);
        let (stdout_log, stderr_log) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let writes_to = |fd: u32, log: &Path| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|t| t == log)
        };
        if !writes_to(1, &stdout_log) && !writes_to(2, &stderr_log) {
            continue;
        }
        let Ok(identity) = ProcessIdentity::of(pid) else {
            continue;
        };
        if identity.check().is_err() {
            continue;
        }
        found.push(FoundProcess {
            project: project.to_owned(),
            service: service.to_owned(),
            identity,
            started_at_ms: boot.map(|b| b + identity.start_time * 1000 / USER_HZ),
            stdout_log,
            stderr_log,
            scope: ProcessScope::read(pid, Some(RUN_MARKER)),
        });
    }
    found.sort_by_key(|f| (f.identity.start_time, f.identity.pid));
    found
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The record a manager re-adopts `found` from: its identity, its log files,
/// their current sizes as the offsets delivered (what was written before is
/// history, read from the files).
pub fn process_record(found: &FoundProcess, service: ServiceName) -> ServiceRecord {
    let rec = ProcessRecord {
        identity: found.identity,
        stdout_log: Some(found.stdout_log.clone()),
        stderr_log: Some(found.stderr_log.clone()),
        offsets: LogOffsets {
            stdout: file_len(&found.stdout_log),
            stderr: file_len(&found.stderr_log),
        },
        scope: found.scope.clone(),
    };
    ServiceRecord {
        service,
        restarts: 0,
        started_at_ms: found.started_at_ms,
        instance: InstanceRecord {
            kind: ServiceKind::Process,
            pid: Some(found.identity.pid),
            container_id: None,
            host: "local".to_owned(),
            data: serde_json::to_value(rec).unwrap_or_default(),
        },
    }
}

/// The record a manager re-adopts a running container of this machine's
/// engine from; its output is followed from now on.
pub fn container_record(service: ServiceName, record: &DockerRecord) -> ServiceRecord {
    let mut record = record.clone();
    record.last_log = None;
    ServiceRecord {
        service,
        restarts: 0,
        started_at_ms: None,
        instance: InstanceRecord {
            kind: ServiceKind::Docker,
            pid: None,
            container_id: Some(record.id.clone()),
            host: "local".to_owned(),
            data: serde_json::to_value(&record).unwrap_or_default(),
        },
    }
}

/// The process a persisted record names, if it is a local process.
fn record_identity(record: &ServiceRecord) -> Option<ProcessIdentity> {
    if record.instance.kind != ServiceKind::Process {
        return None;
    }
    serde_json::from_value::<ProcessRecord>(record.instance.data.clone())
        .ok()
        .map(|r| r.identity)
}

/// The records to re-adopt for `project`: what runs, as the sources say in
/// their order of trust (ADR 020). For a local process service, a process
/// found in `/proc` is the truth: the persisted record is kept when it names
/// that very process (it knows the log offsets and restart count), else the
/// found one is adopted. A container found by its labels is adopted when
/// nothing persisted names one. Other persisted records are kept as they are
/// (re-adopting checks them). Extra processes of one service are reported.
pub fn merge_records(
    project: &Project,
    persisted: Vec<ServiceRecord>,
    found: &[FoundProcess],
    containers: &[(ServiceName, DockerRecord)],
) -> Vec<ServiceRecord> {
    let mut by_service: BTreeMap<ServiceName, ServiceRecord> = persisted
        .into_iter()
        .map(|r| (r.service.clone(), r))
        .collect();
    for (name, spec) in &project.services {
        let local = spec.host().is_none();
        match spec.kind() {
            ServiceKind::Process if local => {
                let mut mine = found
                    .iter()
                    .filter(|f| f.project == project.name.as_str() && f.service == name.as_str());
                let Some(first) = mine.next() else { continue };
                let extra: Vec<u32> = mine.map(|f| f.identity.pid).collect();
                if !extra.is_empty() {
                    tracing::warn!(project = %project.name, service = %name, adopted = first.identity.pid, others = ?extra, "several processes claim to be this service; adopting the first started");
                }
                let same = by_service
                    .get(name)
                    .and_then(record_identity)
                    .is_some_and(|id| id == first.identity);
                if !same {
                    tracing::warn!(project = %project.name, service = %name, pid = first.identity.pid, "service found running in /proc; re-adopting it");
                    by_service.insert(name.clone(), process_record(first, name.clone()));
                }
            }
            ServiceKind::Docker if local && !by_service.contains_key(name) => {
                if let Some((_, rec)) = containers.iter().find(|(s, _)| s == name) {
                    tracing::warn!(project = %project.name, service = %name, container = %rec.id, "container found by its labels; re-adopting it");
                    by_service.insert(name.clone(), container_record(name.clone(), rec));
                }
            }
            _ => {}
        }
    }
    by_service.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        let mut s = PersistedState {
            format: STATE_FORMAT,
            ..PersistedState::default()
        };
        s.projects.insert(
            ProjectName::new("p").unwrap(),
            PersistedProject {
                spec: ProjectRef::default(),
                records: Vec::new(),
                pending: Vec::new(),
            },
        );
        s
    }

    #[test]
    fn a_sealed_state_reads_back_and_a_damaged_one_does_not() {
        let bytes = encode_state(&sample());
        assert_eq!(decode_state(&bytes).unwrap(), sample());
        assert!(decode_state(b"").is_err());
        assert!(decode_state(b"  \n").is_err());
        assert!(decode_state(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode_state(b"\x00\xffgarbage").is_err());
        let text = String::from_utf8(bytes).unwrap();
        let edited = text.replace("\"p\"", "\"q\"");
        let e = decode_state(edited.as_bytes()).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn a_state_of_format_one_is_still_read() {
        let old = br#"{"format": 1, "projects": {}}"#;
        assert!(decode_state(old).unwrap().projects.is_empty());
    }
}
