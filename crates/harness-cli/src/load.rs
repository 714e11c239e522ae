//! Offline verbs: `validate`, `config`, `config schema`, `graph`, `env`. They read
//! `services.yaml` through harness-config and need no daemon.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use harness_config::{LoadOptions, Project};

use crate::cli::{ConfigAction, ConfigArgs, ConfigFormat, GraphArgs, GraphFormat};
use crate::error::{CliError, CliResult};
use crate::graph::{Edge, GraphView};

/// The files to load: those given, else `./services.yaml` (or `./services.yml`).
pub fn effective_files(files: &[PathBuf]) -> Vec<PathBuf> {
    if !files.is_empty() {
        return files.to_vec();
    }
    let found = harness_config::DEFAULT_FILES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    vec![found.unwrap_or_else(|| PathBuf::from(harness_config::DEFAULT_FILES[0]))]
}

/// True when stderr gets colours.
pub fn stderr_colored() -> bool {
    !matches!(
        anstream::AutoStream::choice(&std::io::stderr()),
        anstream::ColorChoice::Never
    )
}

/// `--strict-env`, given once for the whole command line.
static STRICT_ENV: AtomicBool = AtomicBool::new(false);

/// Records `--strict-env`: unset variables in the configuration become errors, for the
/// files this process loads and (through `HARNESS_STRICT_ENV` in the environment it
/// sends) for those the daemon loads on its behalf.
pub fn set_strict_env(strict: bool) {
    STRICT_ENV.store(strict, Ordering::Relaxed);
}

/// True if `--strict-env` was given.
pub fn strict_env() -> bool {
    STRICT_ENV.load(Ordering::Relaxed)
}

/// Loads and validates the project, or fails with every diagnostic rendered.
/// Warnings are printed to stderr.
pub fn load_project(files: &[PathBuf], project: Option<&str>) -> CliResult<Project> {
    let opts = LoadOptions {
        files: files.to_vec(),
        project_name: project.map(str::to_string),
        strict_env: strict_env(),
        ..LoadOptions::default()
    };
    match harness_config::load(&opts) {
        Ok(loaded) => {
            if !loaded.warnings.items.is_empty() {
                let _ = write!(
                    anstream::stderr(),
                    "{}",
                    loaded.warnings.render(stderr_colored())
                );
            }
            Ok(loaded.project)
        }
        Err(diags) => Err(CliError::Config(diags.render(stderr_colored()))),
    }
}

/// `harness validate`.
pub fn validate(files: &[PathBuf], project: Option<&str>, json: bool) -> CliResult {
    let files = effective_files(files);
    let p = load_project(&files, project)?;
    let mut out = anstream::stdout();
    if json {
        let v = serde_json::json!({
            "valid": true,
            "project": p.name,
            "services": p.services.len(),
            "files": files,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "{}: project `{}` is valid ({} services)",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" + "),
            p.name,
            p.services.len()
        )?;
    }
    Ok(())
}

/// `harness config [--format yaml|json]` and `harness config schema`.
pub fn config(files: &[PathBuf], project: Option<&str>, a: &ConfigArgs) -> CliResult {
    let mut out = anstream::stdout();
    if let Some(ConfigAction::Schema) = a.action {
        let _ = (files, project);
        writeln!(out, "{}", harness_config::json_schema_string().trim_end())?;
        return Ok(());
    }
    let p = load_project(&effective_files(files), project)?;
    let json = a.json || a.format == ConfigFormat::Json;
    let text = if json { p.to_json() } else { p.to_yaml() };
    write!(out, "{}", text)?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// The graph of a loaded project, as the renderers need it.
pub fn graph_view(p: &Project) -> GraphView {
    let g = p.graph();
    let start_order: Vec<String> = g.start_order().iter().map(|s| s.to_string()).collect();
    let edges = start_order
        .iter()
        .flat_map(|s| {
            g.dependencies(s).iter().map(move |d| Edge {
                from: s.clone(),
                to: d.service.to_string(),
                condition: d.condition.to_string(),
            })
        })
        .collect();
    GraphView {
        project: p.name.to_string(),
        start_order,
        edges,
    }
}

/// `harness graph`.
pub fn graph(files: &[PathBuf], project: Option<&str>, a: &GraphArgs) -> CliResult {
    let p = load_project(&effective_files(files), project)?;
    let view = graph_view(&p);
    let format = if a.json { GraphFormat::Json } else { a.format };
    let text = match format {
        GraphFormat::Text => view.to_text(),
        GraphFormat::Dot => view.to_dot(),
        GraphFormat::Mermaid => view.to_mermaid(),
        GraphFormat::Json => view.to_json(),
    };
    write!(anstream::stdout(), "{text}")?;
    Ok(())
}

/// The environment `service` gets, computed without a daemon: every service placed where its
/// configuration puts it (processes on this host, services with `host:` on their node,
/// containers on the project's Docker network with their published ports), resolved from
/// `service`'s point of view by the same [`Placement`](service_orchestration::Placement) the daemon uses. Container addresses are
/// only known once they run: a container reached from another container shows as `0.0.0.0`
/// here (the daemon's answer has the real one).
pub fn service_env(p: &Project, service: &str) -> CliResult<BTreeMap<String, String>> {
    use service_orchestration::Placement;
    if p.service(service).is_none() {
        return Err(CliError::Usage(format!(
            "no service `{service}` in project `{}`",
            p.name
        )));
    }
    let topology =
        Placement::topology_of(p).map_err(|e| CliError::Config(format!("error: {e}")))?;
    let placement = Placement::new(
        std::sync::Arc::new(p.clone()),
        service_registry::Registry::in_memory(),
        topology,
    );
    placement
        .environment(service, None)
        .map_err(|e| CliError::Failed(format!("service `{service}`: {e}")))
}
