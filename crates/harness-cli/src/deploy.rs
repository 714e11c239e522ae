//! `harness deploy SVC...` and `harness rollback SVC...`: switch the version of `package`
//! services on their nodes, then have the daemon restart them when it runs the project.
//!
//! The node work is done here, over the CLI's own ssh connections (one multiplexed master per
//! node in a short-lived control directory, closed before the CLI exits); the daemon is only
//! asked to restart, with its ordinary `restart` request, so the new version runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use harness_config::{Project, ServiceSpec, Target};
use harness_core::ServiceKind;
use harness_protocol::{ProjectRef, ServicesParams};
use serde::Serialize;
use service_orchestration::package::{self, DeployMode, Deployment, PackageError};
use service_orchestration::ssh::{MAX_CONTROL_DIR_LEN, SshError, SshHosts, SshOptions};

use crate::error::{CliError, CliResult};
use crate::{load, remote};

/// The environment variable with extra ssh `-o` options for every node, as `Key=Value` words
/// (e.g. `StrictHostKeyChecking=accept-new UserKnownHostsFile=~/.harness/known_hosts`).
pub const SSH_OPTIONS_ENV: &str = "HARNESS_SSH_OPTIONS";

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

/// Parses `HARNESS_SSH_OPTIONS`: whitespace-separated `Key=Value` words.
pub fn parse_ssh_options(text: &str) -> CliResult<Vec<(String, String)>> {
    text.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(CliError::Usage(format!(
                "{SSH_OPTIONS_ENV}: `{w}` is not a `Key=Value` ssh option"
            ))),
        })
        .collect()
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
    if let Ok(text) = std::env::var(SSH_OPTIONS_ENV) {
        options.extra = parse_ssh_options(&text)?;
    }
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
    let changed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.changed)
        .map(|o| o.service.clone())
        .collect();
    let note = restart_in_daemon(state_dir, &project, &changed).await?;
    for o in &mut outcomes {
        o.restarted = o.changed && note.is_none();
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
    if !changed.is_empty() {
        let mut err = anstream::stderr();
        match note {
            None => writeln!(err, "restarted {}", changed.join(", "))?,
            Some(why) => writeln!(err, "{why}")?,
        }
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

/// Asks the daemon, when one runs this project, to restart `services`. `Ok(None)` when it
/// did; `Ok(Some(note))` says why nothing was restarted (no daemon, or it does not run the
/// project); an error when the daemon refused or the restart failed.
async fn restart_in_daemon(
    state_dir: CliResult<PathBuf>,
    project: &Project,
    services: &[String],
) -> CliResult<Option<String>> {
    if services.is_empty() {
        return Ok(Some(String::new()));
    }
    let later = "the new version runs when the service next starts";
    let Ok(state_dir) = state_dir else {
        return Ok(Some(format!("no daemon state directory: {later}")));
    };
    let Ok(client) = remote::connect(&state_dir).await else {
        return Ok(Some(format!(
            "no daemon runs project {}: {later}",
            project.name
        )));
    };
    let params = ServicesParams {
        project: ProjectRef::named(project.name.clone()),
        services: remote::service_names(services)?,
    };
    // Only a project the daemon already runs is restarted: deploying does not bring it up.
    match client
        .status(ServicesParams {
            project: params.project.clone(),
            services: Vec::new(),
        })
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.remote()
                .is_some_and(|b| b.code == harness_protocol::ErrorCode::NotFound) =>
        {
            return Ok(Some(format!(
                "the daemon does not run project {}: {later}",
                project.name
            )));
        }
        Err(e) => return Err(remote::remote_error(e, &state_dir)),
    }
    let status = remote::lifecycle(&client, "restart", params, &state_dir).await?;
    if let Some(f) = status.services.iter().find(|s| {
        services.iter().any(|n| n == s.name.as_str())
            && matches!(s.state, harness_core::ServiceState::Failed { .. })
    }) {
        return Err(CliError::Failed(format!(
            "service `{}` {} after the restart",
            f.name, f.state
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_options_are_key_value_words() {
        assert_eq!(
            parse_ssh_options(" StrictHostKeyChecking=no  LogLevel=ERROR ").unwrap(),
            vec![
                ("StrictHostKeyChecking".to_owned(), "no".to_owned()),
                ("LogLevel".to_owned(), "ERROR".to_owned())
            ]
        );
        assert!(parse_ssh_options("").unwrap().is_empty());
        assert!(matches!(
            parse_ssh_options("StrictHostKeyChecking"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(parse_ssh_options("=x"), Err(CliError::Usage(_))));
    }

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
    fn control_dir_is_short_enough_for_sockets() {
        let d = control_dir().expect("a short directory exists");
        assert!(d.as_os_str().len() <= MAX_CONTROL_DIR_LEN);
    }
}
