//! Offline verbs: `validate`, `config`, `config schema`, `graph`, `env`. They read
//! `services.yaml` through harness-config and need no daemon.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use harness_config::Project;

use crate::cli::{ConfigAction, ConfigArgs, ConfigFormat, GraphArgs, GraphFormat};
use crate::error::{CliError, CliResult};
use crate::graph::{Edge, GraphView};

/// The default configuration file, in the current directory.
pub const DEFAULT_FILE: &str = "services.yaml";

/// The files to load: those given, else `./services.yaml`.
pub fn effective_files(files: &[PathBuf]) -> Vec<PathBuf> {
    if files.is_empty() {
        vec![PathBuf::from(DEFAULT_FILE)]
    } else {
        files.to_vec()
    }
}

/// Loads and validates the project, or fails with every diagnostic rendered.
pub fn load_project(files: &[PathBuf], project: Option<&str>) -> CliResult<Project> {
    let _ = (files, project);
    Err(CliError::Config(
        "configuration loading is not wired yet".into(),
    ))
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
        writeln!(out, "{{}}")?;
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

/// The environment `service` gets, resolved as if the project ran on this host.
pub fn service_env(p: &Project, service: &str) -> CliResult<BTreeMap<String, String>> {
    let spec = p.service(service).ok_or_else(|| {
        CliError::Usage(format!("no service `{service}` in project `{}`", p.name))
    })?;
    Ok(spec.env.clone())
}
