//! `harness deploy SVC...` and `harness rollback SVC...`: switch the version of `package`
//! services on their nodes, then have the daemon restart them when it runs the project.
//!
//! The node work is done here, over the CLI's own ssh connections (one multiplexed master per
//! node in a short-lived control directory, closed before the CLI exits). When a daemon runs
//! the project, it is then asked, with its ordinary requests, to reload the configuration and
//! restart the services whose version changed, so the new version runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use harness_config::{Project, ServiceSpec, Target};
use harness_core::{ServiceKind, ServiceState};
use harness_protocol::{ProjectRef, ServicesParams};
use serde::Serialize;
use service_orchestration::package::{self, DeployMode, Deployment, PackageError};
use service_orchestration::ssh::{MAX_CONTROL_DIR_LEN, SshError, SshHosts, SshOptions};

use crate::error::{CliError, CliResult};
use crate::{load, remote};

/// Which of the two verbs runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Upload if needed and switch to the configured version.
    Deploy,
    /// Switch back to the version kept for rollback.
    Rollback,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
        }
    }
}

/// One line of the result: what one service's node now has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The service.
    pub service: String,
    /// `deploy` or `rollback`.
    pub action: &'static str,
    /// The node it is deployed to.
    pub node: String,
    /// The version `current` points to now.
    pub version: String,
    /// The version kept for rollback, if any.
    pub previous: Option<String>,
    /// False when nothing changed on the node (the version was already current).
    pub changed: bool,
    /// True when the package was uploaded.
    pub uploaded: bool,
    /// True when the daemon restarted the service so the new version runs.
    pub restarted: bool,
}

impl Outcome {
    /// The human line: `SVC: version X (previous Y)`, saying when nothing changed.
    pub fn line(&self) -> String {
        let previous = self.previous.as_deref().unwrap_or("none");
        let mut s = format!(
            "{}: version {} (previous {previous})",
            self.service, self.version
        );
        if !self.changed {
            s.push_str(", already deployed: nothing changed");
        }
        s
    }
}

/// The package services named on the command line, in order, or a usage error naming the
/// first unknown or non-package one.
pub fn package_specs<'a>(
    project: &'a Project,
    names: &[String],
) -> CliResult<Vec<&'a ServiceSpec>> {
    let mut specs: Vec<&ServiceSpec> = Vec::new();
    for n in names {
        let spec = project.service(n).ok_or_else(|| {
            CliError::Usage(format!("no service `{n}` in project `{}`", project.name))
        })?;
        if spec.kind() != ServiceKind::Package {
            return Err(CliError::Usage(format!(
                "`{n}` is a {} service; only package services can be deployed or rolled back",
                spec.kind()
            )));
        }
        if !specs.iter().any(|s| s.name == spec.name) {
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// A short control directory of this invocation (unix socket paths are limited).
fn control_dir() -> Option<PathBuf> {
    let name = format!("hc-{}", std::process::id());
    [std::env::temp_dir(), PathBuf::from("/tmp")]
        .into_iter()
        .map(|d| d.join(&name))
        .find(|d| d.as_os_str().len() <= MAX_CONTROL_DIR_LEN)
}

/// The ssh connections of the project's nodes for this invocation, and the directory of
/// their master sockets (to remove afterwards).
fn hosts(project: &Project) -> CliResult<(SshHosts, Option<PathBuf>)> {
    let mut options = SshOptions::default();
    let dir = control_dir();
    options.multiplex = dir.is_some();
    let ctl = dir.clone().unwrap_or_else(std::env::temp_dir);
    let hosts = SshHosts::for_project(project, &options, &ctl)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok((hosts, dir))
}

/// The node a package service is deployed to, by its configured name.
fn node_of(spec: &ServiceSpec) -> String {
    match &spec.target {
        Target::Package { host, .. } => host.clone(),
        _ => String::new(),
    }
}

/// Maps a package error to the CLI's: a bad version or package is a configuration problem
/// of the service, anything on the way to or on the node is a failure naming the node.
fn package_error(e: PackageError) -> CliError {
    match e {
        PackageError::NotAPackage { .. } => CliError::Usage(e.to_string()),
        PackageError::BadVersion { .. } => CliError::Config(format!("error: {e}")),
        PackageError::Ssh {
            service,
            source: source @ SshError::UnknownNode { .. },
        } => CliError::Config(format!("error: `{service}`: {source}")),
        other => CliError::Failed(other.to_string()),
    }
}

/// Runs `deploy` or `rollback` for `services`.
pub async fn run(
    files: &[PathBuf],
    project_name: Option<&str>,
    state_dir: CliResult<PathBuf>,
    action: Action,
    services: &[String],
    json: bool,
) -> CliResult {
    let files = load::effective_files(files);
    let project = load::load_project(&files, project_name)?;
    remote::service_names(services)?;
    let specs = package_specs(&project, services)?;
    let (hosts, dir) = hosts(&project)?;
    let base = package::project_dir(&project);
    let result = switch(&hosts, &project, &specs, action, base.as_deref()).await;
    hosts.close_all().await;
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut outcomes = result?;
    let changed: Vec<(String, String)> = outcomes
        .iter()
        .filter(|o| o.changed)
        .map(|o| (o.service.clone(), o.version.clone()))
        .collect();
    let restarts = restart_in_daemon(&files, project_name, state_dir, &project, &changed).await?;
    for o in &mut outcomes {
        o.restarted = restarts.done.contains(&o.service);
    }
    let mut out = anstream::stdout();
    if json {
        let text = serde_json::to_string_pretty(&outcomes)
            .map_err(|e| CliError::Failed(format!("encoding the result: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        for o in &outcomes {
            writeln!(out, "{}", o.line())?;
        }
    }
    let mut err = anstream::stderr();
    if !restarts.done.is_empty() {
        writeln!(err, "restarted {}", restarts.done.join(", "))?;
    }
    for note in &restarts.notes {
        writeln!(err, "{note}")?;
    }
    Ok(())
}

async fn switch(
    hosts: &SshHosts,
    project: &Project,
    specs: &[&ServiceSpec],
    action: Action,
    base: Option<&Path>,
) -> CliResult<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for spec in specs {
        let d: Deployment = match action {
            Action::Deploy => {
                package::deploy(hosts, project.name.as_str(), spec, DeployMode::Always, base).await
            }
            Action::Rollback => package::rollback(hosts, project.name.as_str(), spec).await,
        }
        .map_err(package_error)?;
        outcomes.push(Outcome {
            service: spec.name.to_string(),
            action: action.verb(),
            node: node_of(spec),
            version: d.version,
            previous: d.previous,
            changed: d.changed,
            uploaded: d.uploaded,
            restarted: false,
        });
    }
    Ok(outcomes)
}

/// What the daemon did about the services whose version changed.
#[derive(Debug, Default)]
struct Restarts {
    /// Restarted (or reloaded with their new configuration), so the new version runs.
    done: Vec<String>,
    /// Lines saying why the others were not restarted.
    notes: Vec<String>,
}

/// Whether a service in this state is meant to run (a deploy restarts only those).
fn active(state: &ServiceState) -> bool {
    !matches!(
        state,
        ServiceState::Stopped | ServiceState::Completed | ServiceState::Pending
    )
}

/// Has the daemon, when one runs this project, run the new versions of `services` (the
/// name and the version now deployed of each).
///
/// The daemon first reloads the configuration (a `start` request with the files, naming the
/// services that run): a service whose configuration changed (a new `version:`) is
/// restarted by that reload with the new configuration, so the daemon's idea of the
/// configured version never undoes the deploy. A service the reload left running on another
/// version (no configuration change, e.g. after a rollback) is then restarted with `restart`.
async fn restart_in_daemon(
    files: &[PathBuf],
    project_flag: Option<&str>,
    state_dir: CliResult<PathBuf>,
    project: &Project,
    services: &[(String, String)],
) -> CliResult<Restarts> {
    let mut r = Restarts::default();
    if services.is_empty() {
        return Ok(r);
    }
    let later = "the new version runs when the service next starts";
    let Ok(state_dir) = state_dir else {
        r.notes.push(format!("no daemon state directory: {later}"));
        return Ok(r);
    };
    let Ok(client) = remote::connect(&state_dir).await else {
        r.notes
            .push(format!("no daemon runs project {}: {later}", project.name));
        return Ok(r);
    };
    let named = ProjectRef::named(project.name.clone());
    let names: Vec<String> = services.iter().map(|(n, _)| n.clone()).collect();
    let rows = match client
        .status(ServicesParams {
            project: named.clone(),
            services: Vec::new(),
        })
        .await
    {
        Ok(p) => remote::flatten(p),
        Err(e)
            if e.remote()
                .is_some_and(|b| b.code == harness_protocol::ErrorCode::NotFound) =>
        {
            r.notes.push(format!(
                "the daemon does not run project {}: {later}",
                project.name
            ));
            return Ok(r);
        }
        Err(e) => return Err(remote::remote_error(e, &state_dir)),
    };
    let mut running: Vec<String> = Vec::new();
    for n in &names {
        match rows.iter().find(|s| s.name.as_str() == n) {
            Some(s) if active(&s.state) => running.push(n.clone()),
            _ => r.notes.push(format!("`{n}` is not running: {later}")),
        }
    }
    if running.is_empty() {
        return Ok(r);
    }
    // Reload the configuration: what changed is restarted with it. Every service that runs
    // is named, so one whose configuration changed too is restarted rather than left
    // stopped by the reload; those that did not change keep running as they are.
    let keep_running: Vec<String> = rows
        .iter()
        .filter(|s| active(&s.state) && project.service(s.name.as_str()).is_some())
        .map(|s| s.name.to_string())
        .collect();
    let reload = ServicesParams {
        project: remote::project_with_files(project_flag, files)?,
        services: remote::service_names(&keep_running)?,
    };
    let status = remote::lifecycle(&client, "start", reload, &state_dir).await?;
    // A service the reload restarted has a new instance (another start time, or not up
    // yet); one it left alone still runs the old version unless it already runs this one.
    let stale: Vec<String> = running
        .iter()
        .filter(|n| {
            let want = services.iter().find(|(s, _)| s == *n).map(|(_, v)| v);
            let before = rows.iter().find(|s| s.name.as_str() == n.as_str());
            let after = status
                .services
                .iter()
                .find(|s| s.name.as_str() == n.as_str());
            match (before, after) {
                (Some(b), Some(a)) => {
                    let same_instance = a.started_at_ms == b.started_at_ms
                        && matches!(
                            a.state,
                            ServiceState::Running | ServiceState::Healthy | ServiceState::Unhealthy
                        );
                    same_instance && a.version.as_ref() != want
                }
                _ => true,
            }
        })
        .cloned()
        .collect();
    let status = if stale.is_empty() {
        status
    } else {
        let params = ServicesParams {
            project: named,
            services: remote::service_names(&stale)?,
        };
        remote::lifecycle(&client, "restart", params, &state_dir).await?
    };
    if let Some(f) = status.services.iter().find(|s| {
        running.iter().any(|n| n == s.name.as_str())
            && matches!(s.state, ServiceState::Failed { .. })
    }) {
        return Err(CliError::Failed(format!(
            "service `{}` {} after the restart",
            f.name, f.state
        )));
    }
    r.done = running;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_version_and_previous() {
        let mut o = Outcome {
            service: "app".into(),
            action: "deploy",
            node: "n1".into(),
            version: "2.0".into(),
            previous: Some("1.0".into()),
            changed: true,
            uploaded: true,
            restarted: false,
        };
        assert_eq!(o.line(), "app: version 2.0 (previous 1.0)");
        o.changed = false;
        o.previous = None;
        assert_eq!(
            o.line(),
            "app: version 2.0 (previous none), already deployed: nothing changed"
        );
    }

    #[test]
    fn node_errors_fail_naming_the_node_and_bad_versions_are_configuration_errors() {
        let e = package_error(PackageError::Ssh {
            service: "app".into(),
            source: SshError::Unreachable {
                host: "n1".into(),
                reason: "Connection refused".into(),
            },
        });
        assert!(
            matches!(&e, CliError::Failed(m) if m.contains("node `n1`") && m.contains("`app`"))
        );
        let e = package_error(PackageError::Ssh {
            service: "app".into(),
            source: SshError::UnknownNode { host: "n9".into() },
        });
        assert!(matches!(&e, CliError::Config(m) if m.contains("n9")));
        let e = package_error(PackageError::BadVersion {
            service: "app".into(),
            version: "../x".into(),
        });
        assert_eq!(e.exit(), crate::error::Exit::Config);
        let e = package_error(PackageError::NoPrevious {
            service: "app".into(),
            host: "n1".into(),
        });
        assert!(matches!(&e, CliError::Failed(m) if m.contains("no previous version")));
    }

    #[test]
    fn only_services_meant_to_run_are_restarted() {
        assert!(active(&ServiceState::Healthy));
        assert!(active(&ServiceState::Failed { reason: "x".into() }));
        assert!(!active(&ServiceState::Stopped));
        assert!(!active(&ServiceState::Completed));
        assert!(!active(&ServiceState::Pending));
    }

    #[test]
    fn only_package_services_are_accepted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("services.yaml");
        std::fs::write(
            &file,
            "name: p\nnetworks:\n  lan:\n    type: lan\n    subnet: 10.9.0.0/24\n    nodes:\n      - host: 10.9.0.2\n        name: n1\n        ssh_user: root\n        package_deploy: true\n\
             services:\n  app:\n    type: package\n    network: lan\n    host: n1\n    package: ./pkg\n    version: \"1\"\n  \
             web:\n    type: process\n    binary: sleep\n    args: [\"9\"]\n",
        )
        .expect("write");
        let project = load::load_project(&[file], None).expect("loads");
        let specs = package_specs(&project, &["app".into(), "app".into()]).expect("app is one");
        assert_eq!(specs.len(), 1);
        assert!(matches!(
            package_specs(&project, &["web".into()]),
            Err(CliError::Usage(m)) if m.contains("`web`") && m.contains("process")
        ));
        assert!(matches!(
            package_specs(&project, &["nope".into()]),
            Err(CliError::Usage(m)) if m.contains("`nope`")
        ));
    }

    #[test]
    fn control_dir_is_short_enough_for_sockets() {
        let d = control_dir().expect("a short directory exists");
        assert!(d.as_os_str().len() <= MAX_CONTROL_DIR_LEN);
    }
}
