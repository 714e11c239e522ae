//! Loading: read files, parse with locations, drop `x-` keys, interpolate, merge,
//! decode, validate, and build the [`Project`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use harness_core::{ProjectName, ServiceName};

use crate::de::{DeError, did_you_mean, from_node};
use crate::diag::{Diagnostic, Diagnostics, Severity, Sources};
use crate::file::{MAX_CONFIG_BYTES, ReadFileError, read_limited};
use crate::interp::{InterpIssue, VarSource, interpolate};
use crate::model::*;
use crate::raw::{self, RawFile, RawProbe, RawService, ServiceType};
use crate::tree::{Key, Node, Pos, Value};

/// The names `load` looks for when no file is given.
pub const DEFAULT_FILES: &[&str] = &["services.yaml", "services.yml"];

/// What to load and how.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The files, merged in order (later ones override). Empty: `services.yaml`
    /// (or `services.yml`) in the project directory.
    pub files: Vec<PathBuf>,
    /// The project directory: relative paths in the files are resolved against
    /// it, and its `.env` file feeds interpolation. Default: the directory of the
    /// first file.
    pub project_dir: Option<PathBuf>,
    /// The project identifier, overriding `name:` in the files. Unlike `name:`
    /// (free text, from which an identifier is derived), this must already be a
    /// valid [`ProjectName`].
    pub project_name: Option<String>,
    /// Variables for `${VAR}` interpolation. `None`: the process environment.
    /// Either way, a `.env` file in the project directory supplies variables
    /// that are not otherwise set.
    pub env: Option<HashMap<String, String>>,
    /// Makes an unset variable without a default (`$USER`, `${USER}`) an error.
    /// By default, as in docker compose, it is a warning and becomes an empty
    /// string. `HARNESS_STRICT_ENV=1` (or `true`, `yes`, `on`) among the
    /// interpolation variables (see [`env`](LoadOptions::env)) does the same, so
    /// a daemon loading with its client's environment honours the client's
    /// setting. `${VAR:?message}` is an error either way.
    pub strict_env: bool,
}

/// The variable that, set to `1`, `true`, `yes` or `on`, makes unset variables errors
/// (see [`LoadOptions::strict_env`]).
pub const STRICT_ENV_VAR: &str = "HARNESS_STRICT_ENV";

/// True if `value` (of [`STRICT_ENV_VAR`]) asks for strict interpolation.
pub fn strict_env_value(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl LoadOptions {
    /// Options for these files, everything else default.
    pub fn files<P: Into<PathBuf>>(files: impl IntoIterator<Item = P>) -> Self {
        LoadOptions {
            files: files.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets the interpolation variables (instead of the process environment).
    pub fn with_env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }
}

/// A loaded project and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated project.
    pub project: Project,
    /// Warnings (no errors: with errors, loading fails).
    pub warnings: Diagnostics,
    /// The names of the interpolation variables the files looked up (set or
    /// not), [`STRICT_ENV_VAR`] included when it is set: loading the same
    /// files again needs only these from [`LoadOptions::env`].
    pub referenced_vars: std::collections::BTreeSet<String>,
}

impl Loaded {
    /// A one-line summary for `harness validate`, e.g.
    /// `project shop: 4 services (2 process, 2 docker), 1 network, no warnings`.
    pub fn summary(&self) -> String {
        let p = &self.project;
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for s in p.services.values() {
            *kinds.entry(s.kind().to_string()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let plural = |n: usize, w: &str| {
            if n == 1 {
                format!("{n} {w}")
            } else {
                format!("{n} {w}s")
            }
        };
        let warnings = match self.warnings.items.len() {
            0 => "no warnings".to_owned(),
            n => plural(n, "warning"),
        };
        let name = match &p.title {
            Some(title) => format!("{} ({title})", p.name),
            None => p.name.to_string(),
        };
        format!(
            "project {}: {}{}, {}, {}",
            name,
            plural(p.services.len(), "service"),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            plural(p.networks.len(), "network"),
            warnings
        )
    }
}

/// Loads, merges and validates the files. On failure every problem is reported.
pub fn load(opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let base_dir = opts.project_dir.clone().unwrap_or_else(|| cwd.clone());
    let files: Vec<PathBuf> = if opts.files.is_empty() {
        let found = DEFAULT_FILES
            .iter()
            .map(|f| base_dir.join(f))
            .find(|p| p.exists());
        vec![found.unwrap_or_else(|| base_dir.join(DEFAULT_FILES[0]))]
    } else {
        opts.files.clone()
    };
    let mut loader = Loader::new(opts);
    let mut texts = Vec::new();
    for f in &files {
        match read_limited(f, MAX_CONFIG_BYTES) {
            Ok(t) => texts.push((f.clone(), Some(t))),
            Err(e) => {
                let hint = match &e {
                    _ if e.is_not_found() => {
                        Some("check the path, or pass the file with -f".to_owned())
                    }
                    ReadFileError::NotRegular { .. } => {
                        Some("the configuration must be a regular file".to_owned())
                    }
                    ReadFileError::TooLarge { .. } => Some(format!(
                        "configuration files are limited to {} MiB",
                        MAX_CONFIG_BYTES >> 20
                    )),
                    _ => None,
                };
                loader
                    .diags
                    .push(loader.sources.file_diag(f, e.to_string(), hint));
                texts.push((f.clone(), None));
            }
        }
    }
    let project_dir = opts
        .project_dir
        .as_deref()
        .map(absolute_clean)
        .unwrap_or_else(|| {
            let first = files.first().cloned().unwrap_or_default();
            let abs = clean_path(&std::path::absolute(&first).unwrap_or(first));
            abs.parent().map(Path::to_owned).unwrap_or(cwd)
        });
    loader.run(texts, project_dir)
}

/// Loads a project from YAML text (as if it were the file `services.yaml` in the
/// current directory), interpolating from the process environment.
pub fn from_yaml_str(text: &str) -> Result<Loaded, Diagnostics> {
    from_sources(&[("services.yaml", text)], &LoadOptions::default())
}

/// Loads a project from named YAML texts, merged in order; `opts.files` is ignored.
pub fn from_sources(sources: &[(&str, &str)], opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let project_dir = opts
        .project_dir
        .as_deref()
        .map(absolute_clean)
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")));
    let loader = Loader::new(opts);
    let texts = sources
        .iter()
        .map(|(n, t)| (PathBuf::from(n), Some((*t).to_owned())))
        .collect();
    loader.run(texts, project_dir)
}

/// Loads on a blocking thread, for async callers.
pub async fn load_async(opts: LoadOptions) -> Result<Loaded, Diagnostics> {
    blocking::unblock(move || load(&opts)).await
}

/// A [`VarSource`] that notes the name of every variable looked up.
struct Recording<'a> {
    vars: &'a HashMap<String, String>,
    seen: &'a std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl VarSource for Recording<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.seen.borrow_mut().insert(name.to_owned());
        self.vars.get(name).cloned()
    }
}

struct Loader<'o> {
    opts: &'o LoadOptions,
    sources: Sources,
    diags: Vec<Diagnostic>,
    vars: HashMap<String, String>,
    /// The variables interpolation looked up.
    referenced: std::cell::RefCell<std::collections::BTreeSet<String>>,
    project_dir: PathBuf,
    root: Node,
    /// Index of each service in the merged `services` map.
    service_index: HashMap<String, usize>,
    /// Keys of services removed because they did not decode (`""`: the whole service).
    pruned: HashMap<String, std::collections::HashSet<String>>,
}

/// Keys of a service that only some types accept.
const TYPE_KEYS: &[(&str, &[ServiceType])] = &[
    ("binary", &[ServiceType::Process, ServiceType::Remote]),
    ("args", &[ServiceType::Process, ServiceType::Remote]),
    ("image", &[ServiceType::Docker]),
    ("build", &[ServiceType::Docker]),
    ("command", &[ServiceType::Docker]),
    ("entrypoint", &[ServiceType::Docker]),
    ("volumes", &[ServiceType::Docker]),
    ("networks", &[ServiceType::Docker]),
    ("security", &[ServiceType::Docker]),
    ("resources", &[ServiceType::Docker]),
    (
        "host",
        &[
            ServiceType::Remote,
            ServiceType::Package,
            ServiceType::Docker,
        ],
    ),
    ("package", &[ServiceType::Package]),
    ("version", &[ServiceType::Package]),
    ("install_path", &[ServiceType::Package]),
];

fn type_name(t: ServiceType) -> &'static str {
    match t {
        ServiceType::Process => "process",
        ServiceType::Docker => "docker",
        ServiceType::Remote => "remote",
        ServiceType::Package => "package",
    }
}

impl<'o> Loader<'o> {
    fn new(opts: &'o LoadOptions) -> Self {
        Loader {
            opts,
            sources: Sources::default(),
            diags: Vec::new(),
            vars: HashMap::new(),
            referenced: Default::default(),
            project_dir: PathBuf::new(),
            root: Node::new(Pos::default(), Value::Null),
            service_index: HashMap::new(),
            pruned: HashMap::new(),
        }
    }

    fn error(&mut self, pos: Option<Pos>, msg: impl Into<String>, hint: Option<String>) {
        let d = self.sources.diag(Severity::Error, pos, msg, hint);
        self.diags.push(d);
    }

    fn warn(&mut self, pos: Option<Pos>, msg: impl Into<String>, hint: Option<String>) {
        let d = self.sources.diag(Severity::Warning, pos, msg, hint);
        self.diags.push(d);
    }

    fn finish(mut self, project: Option<Project>) -> Result<Loaded, Diagnostics> {
        // Errors first, then warnings; each group in file order.
        self.diags.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                (
                    d.severity,
                    d.location
                        .as_ref()
                        .map(|l| (l.file.clone(), l.line, l.column)),
                )
            };
            key(a).cmp(&key(b))
        });
        self.diags.dedup();
        let diags = Diagnostics { items: self.diags };
        match project {
            Some(p) if !diags.has_errors() => Ok(Loaded {
                project: p,
                warnings: diags,
                referenced_vars: self.referenced.into_inner(),
            }),
            _ => Err(diags),
        }
    }

    fn run(
        mut self,
        texts: Vec<(PathBuf, Option<String>)>,
        project_dir: PathBuf,
    ) -> Result<Loaded, Diagnostics> {
        self.project_dir = project_dir;
        self.vars = self.variables();
        let mut merged: Option<Node> = None;
        let mut paths = Vec::new();
        for (path, text) in texts {
            paths.push(path.clone());
            let Some(text) = text else { continue };
            let nul = nul_position(&text);
            let blank = text.trim().is_empty();
            let id = self.sources.add(&path, text);
            if let Some((line, column)) = nul {
                self.error(
                    Some(Pos { file: id, line, column }),
                    "the file holds a NUL byte",
                    Some("a configuration file is text: remove the NUL byte (the file may be damaged or binary)".to_owned()),
                );
                continue;
            }
            let parsed = crate::tree::parse(&self.sources.files[id].1, id);
            let mut node = match parsed {
                Ok(n) => n,
                Err(e) => {
                    self.error(
                        Some(e.pos),
                        format!("invalid YAML: {}", e.message),
                        Some(
                            e.hint
                                .unwrap_or_else(|| "fix the YAML syntax here".to_owned()),
                        ),
                    );
                    continue;
                }
            };
            match &node.value {
                Value::Map(_) => {}
                Value::Null => {
                    let msg = if blank {
                        "the file is empty"
                    } else {
                        "the file holds no configuration (only comments or a null document)"
                    };
                    self.error(
                        Some(node.pos),
                        msg,
                        Some(
                            "start with `name:` and `services:`, or leave the file out".to_owned(),
                        ),
                    );
                    continue;
                }
                other => {
                    let msg = format!(
                        "the file must be a map of keys, found {}",
                        other.type_name()
                    );
                    self.error(
                        Some(node.pos),
                        msg,
                        Some("start with `name:`, `networks:` and `services:`".to_owned()),
                    );
                    continue;
                }
            }
            strip_extensions(&mut node);
            self.interpolate(&mut node);
            normalize(&mut node);
            merged = Some(match merged {
                None => node,
                Some(base) => merge(base, node),
            });
        }
        if self.diags.iter().any(|d| d.severity == Severity::Error) {
            return self.finish(None);
        }
        let root = merged.unwrap_or_else(|| Node::new(Pos::default(), Value::Map(Vec::new())));
        if let Some(pos) = no_services(&root) {
            self.error(
                Some(pos),
                "the project has no services",
                Some("add services under `services:`, e.g. `services: { web: { type: process, binary: ./web } }`".to_owned()),
            );
            return self.finish(None);
        }
        if let Some(Value::Map(entries)) = root.get("services").map(|s| &s.value) {
            self.service_index = entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.name.clone(), i))
                .collect();
        }
        self.root = root;
        let raw = self.decode();
        let project = raw.and_then(|(raw, broken)| self.build(raw, &broken, paths));
        self.finish(project)
    }

    /// Interpolation variables: `.env` in the project directory, overridden by
    /// the given or process environment.
    fn variables(&mut self) -> HashMap<String, String> {
        let mut vars = HashMap::new();
        let dotenv = self.project_dir.join(".env");
        match read_limited(&dotenv, MAX_CONFIG_BYTES) {
            Ok(text) => {
                let id = self.sources.add(&dotenv, text);
                let text = self.sources.files[id].1.clone();
                for (k, v) in self.parse_env_text(&text, id) {
                    vars.insert(k, v);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                let diag = self.sources.file_diag(&dotenv, e.to_string(), None);
                self.diags.push(diag);
            }
        }
        match &self.opts.env {
            Some(env) => vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone()))),
            None => vars.extend(std::env::vars()),
        }
        vars
    }

    /// Parses `KEY=VALUE` lines (`#` comments, `export `, quotes).
    fn parse_env_text(&mut self, text: &str, file: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let t = t.strip_prefix("export ").unwrap_or(t).trim_start();
            let pos = Pos {
                file,
                line: (i + 1) as u32,
                column: (line.len() - line.trim_start().len() + 1) as u32,
            };
            let Some((k, v)) = t.split_once('=') else {
                self.error(
                    Some(pos),
                    "an env file line must be `KEY=VALUE`",
                    Some(
                        "add `=` (an empty value is `KEY=`), or comment the line out with `#`"
                            .into(),
                    ),
                );
                continue;
            };
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                self.error(
                    Some(pos),
                    format!("`{k}` is not a variable name"),
                    Some("use letters, digits and `_`".into()),
                );
                continue;
            }
            let v = v.trim();
            let value = if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                inner
                    .replace("\\n", "\n")
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                inner.to_owned()
            } else {
                v.split(" #").next().unwrap_or(v).trim_end().to_owned()
            };
            out.push((k.to_owned(), value));
        }
        out
    }

    fn interpolate(&mut self, node: &mut Node) {
        match &mut node.value {
            Value::Str(s) if s.contains('$') => {
                let strict_var = self.vars.get(STRICT_ENV_VAR);
                if strict_var.is_some() {
                    self.referenced
                        .borrow_mut()
                        .insert(STRICT_ENV_VAR.to_owned());
                }
                let strict =
                    self.opts.strict_env || strict_var.is_some_and(|v| strict_env_value(v));
                let r = interpolate(
                    s,
                    &Recording {
                        vars: &self.vars,
                        seen: &self.referenced,
                    },
                );
                for issue in &r.issues {
                    match issue {
                        InterpIssue::Unset(name) if !strict => self.warn(
                            Some(node.pos),
                            format!("variable `{name}` is not set; using an empty string"),
                            Some(format!("set `{name}`, or write `${{{name}:-default}}`; `{STRICT_ENV_VAR}=1` or `--strict-env` makes this an error")),
                        ),
                        InterpIssue::Unset(name) => self.error(
                            Some(node.pos),
                            format!("variable `{name}` is not set"),
                            Some(format!(
                                "set `{name}` in the environment or `.env`, write `${{{name}:-default}}`, or `$${{{name}}}` for a literal"
                            )),
                        ),
                        InterpIssue::Required { name, message } => self.error(
                            Some(node.pos),
                            format!("required variable `{name}` is not set: {message}"),
                            Some(format!("set `{name}` in the environment or `.env`")),
                        ),
                        InterpIssue::Syntax(msg) => self.error(
                            Some(node.pos),
                            msg.clone(),
                            Some("write `${VAR}`, `${VAR:-default}`, or `$$` for a literal `$`".into()),
                        ),
                    }
                }
                let text = r.text;
                node.value = if r.whole && r.substituted {
                    infer_scalar(text)
                } else {
                    Value::Str(text)
                };
            }
            Value::Str(s) => {
                // No `$`: nothing to escape.
                let _ = s;
            }
            Value::Seq(items) => items.iter_mut().for_each(|n| self.interpolate(n)),
            Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| self.interpolate(v)),
            _ => {}
        }
    }

    /// Decodes the merged tree; on errors, reports each and prunes the culprit to
    /// find the next. Returns the file and the names of services that had errors.
    fn decode(&mut self) -> Option<(RawFile, Vec<String>)> {
        if let Ok(raw) = from_node::<RawFile>(&self.root) {
            return Some((raw, Vec::new()));
        }
        let mut node = self.root.clone();
        let mut broken: Vec<String> = Vec::new();
        let mut pruned_parents: Vec<Pos> = Vec::new();
        for _ in 0..64 {
            match from_node::<RawFile>(&node) {
                Ok(raw) => return Some((raw, broken)),
                Err(e) => {
                    let pos = e.pos.unwrap_or(node.pos);
                    if let Some((svc, key)) = service_at(&node, pos) {
                        if !broken.contains(&svc) {
                            broken.push(svc.clone());
                        }
                        self.pruned
                            .entry(svc)
                            .or_default()
                            .insert(key.unwrap_or_default());
                    }
                    let follow_up =
                        e.message.starts_with("missing key") && pruned_parents.contains(&pos);
                    if !follow_up {
                        self.report_de(e);
                    }
                    match prune(&mut node, pos) {
                        Some(parent) => pruned_parents.push(parent),
                        None => return None,
                    }
                }
            }
        }
        None
    }

    /// True if `key` of `service` was removed because it did not decode.
    fn pruned_key(&self, service: &str, key: &str) -> bool {
        self.pruned.get(service).is_some_and(|k| k.contains(key))
    }

    /// True if any part of `service` did not decode.
    fn is_broken(&self, service: &str) -> bool {
        self.pruned.contains_key(service)
    }

    fn report_de(&mut self, e: DeError) {
        // Messages of the shared vocabulary carry their advice in parentheses:
        // move it to the hint line.
        let (message, hint) = match (e.message.split_once(" (write e.g. "), e.hint) {
            (Some((m, rest)), None) => (
                m.to_owned(),
                Some(format!("write e.g. {}", rest.trim_end_matches(')'))),
            ),
            (_, hint) => (e.message.clone(), hint),
        };
        self.error(e.pos, message, hint);
    }

    /// The entries along `path` (key and value), as far as they exist. The
    /// `services` map is looked up through an index: big files have many services.
    fn walk(&self, path: &[&str]) -> Vec<(&Key, &Node)> {
        let mut out: Vec<(&Key, &Node)> = Vec::with_capacity(path.len());
        let mut n = &self.root;
        for (i, seg) in path.iter().enumerate() {
            let found = if i == 1 && path[0] == "services" {
                self.service_index
                    .get(*seg)
                    .and_then(|&idx| match &n.value {
                        Value::Map(entries) => entries.get(idx).map(|(k, v)| (k, v)),
                        _ => None,
                    })
            } else {
                n.entry(seg)
            };
            match found {
                Some((k, v)) => {
                    out.push((k, v));
                    n = v;
                }
                None => break,
            }
        }
        out
    }

    fn find(&self, path: &[&str]) -> Option<&Node> {
        let w = self.walk(path);
        (w.len() == path.len()).then(|| w.last().map_or(&self.root, |(_, v)| *v))
    }

    /// Position of the value at `path`, or of the deepest part of it that exists.
    fn pos(&self, path: &[&str]) -> Pos {
        self.walk(path).last().map_or(self.root.pos, |(_, v)| v.pos)
    }

    /// Position of the key at the end of `path` (or the deepest part that exists).
    fn key_pos(&self, path: &[&str]) -> Pos {
        self.walk(path).last().map_or(self.root.pos, |(k, _)| k.pos)
    }

    /// Turns a template into plain text for a field that takes no references.
    fn plain(&mut self, s: &str, path: &[&str]) -> String {
        match crate::template::expand_refs(s, |_| None) {
            Ok(t) => t,
            Err(_) => {
                let pos = self.pos(path);
                self.error(
                    Some(pos),
                    format!("`{}` cannot hold a service reference", path.last().unwrap_or(&"")),
                    Some("`${service.ip|port|host}` works in env, args, command, entrypoint and health checks; write `$$` for a literal `$`".into()),
                );
                s.replace("$$", "$")
            }
        }
    }

    fn opt_plain(&mut self, s: Option<String>, path: &[&str]) -> Option<String> {
        s.map(|s| self.plain(&s, path))
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            pb
        } else if let Some(rest) = p.strip_prefix("~/") {
            match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(rest),
                None => pb,
            }
        } else {
            clean_path(&self.project_dir.join(pb))
        }
    }

    fn build(&mut self, raw: RawFile, broken: &[String], files: Vec<PathBuf>) -> Option<Project> {
        // Project name: `-p` is an identifier; `name:` in the file may be free
        // text, from which the identifier is derived.
        let mut title = None;
        let name = if let Some(n) = self.opts.project_name.clone() {
            match ProjectName::new(n) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error(
                        None,
                        format!("invalid project name: {e}"),
                        Some("use letters, digits, `-`, `_` and `.`".into()),
                    );
                    None
                }
            }
        } else if let Some(n) = raw.name.clone() {
            let pos = self.pos(&["name"]);
            let text = self.plain(&n, &["name"]);
            match project_name_from_title(&text) {
                Some(p) => {
                    if p.as_str() != text {
                        title = Some(text);
                    }
                    Some(p)
                }
                None => {
                    self.error(
                        Some(pos),
                        format!("project name `{text}` has no letters or digits to make an identifier from"),
                        Some("the identifier names state, networks and containers: use some letters or digits".into()),
                    );
                    None
                }
            }
        } else {
            Some(dir_project_name(&self.project_dir))
        };
        let version = raw.version.as_ref().map(|v| v.0.clone());
        if let Some(v) = &version
            && !matches!(v.as_str(), "1" | "1.0" | "2" | "2.0")
        {
            let pos = self.pos(&["version"]);
            self.warn(
                Some(pos),
                format!("unknown format version `{v}`; reading it as the current format"),
                Some("use `version: \"1.0\"` or leave it out".into()),
            );
        }
        let settings = Settings {
            log_level: raw.settings.as_ref().and_then(|s| s.log_level.clone()),
            health_check_interval: raw
                .settings
                .as_ref()
                .and_then(|s| s.health_check_interval)
                .map(Into::into),
            startup_timeout: raw
                .settings
                .as_ref()
                .and_then(|s| s.startup_timeout)
                .map(Into::into),
            shutdown_timeout: raw
                .settings
                .as_ref()
                .and_then(|s| s.shutdown_timeout)
                .map(Into::into),
        };
        if let Some(level) = &settings.log_level
            && !matches!(
                level.to_ascii_lowercase().as_str(),
                "error" | "warn" | "warning" | "info" | "debug" | "trace"
            )
        {
            let pos = self.pos(&["settings", "log_level"]);
            self.error(
                Some(pos),
                format!("unknown log level `{level}`"),
                Some("use error, warn, info, debug or trace".into()),
            );
        }
        let networks = self.networks(&raw);
        let service_names: Vec<String> = raw.services.keys().cloned().collect();
        let mut services = BTreeMap::new();
        for (name, rs) in &raw.services {
            if self.pruned_key(name, "") || self.pruned_key(name, "type") {
                continue;
            }
            let sname = match ServiceName::new(name.clone()) {
                Ok(n) => n,
                Err(e) => {
                    let pos = self.key_pos(&["services", name]);
                    self.error(Some(pos), format!("invalid service name: {e}"), Some("service names become host and container names: letters, digits, `-`, `_`, `.`".into()));
                    continue;
                }
            };
            if let Some(spec) = self.service(&sname, rs, &raw, &networks, &settings) {
                services.insert(sname, spec);
            }
        }
        self.check_dependencies(&raw, &mut services, broken, &service_names);
        self.check_refs(&services, &service_names);
        self.check_ports(&services);
        // Cycles are looked for even when other errors were found, among the
        // dependencies that point at services that exist.
        let mut present = services.clone();
        let names: std::collections::HashSet<ServiceName> = present.keys().cloned().collect();
        for spec in present.values_mut() {
            spec.dependencies.retain(|d| names.contains(&d.service));
        }
        if let Err(crate::graph::GraphError::Cycle(cycle)) =
            crate::graph::DependencyGraph::build(&present)
        {
            let first = cycle.first().map(|s| s.to_string()).unwrap_or_default();
            let second = cycle
                .get(1)
                .or(cycle.first())
                .map(|s| s.to_string())
                .unwrap_or_default();
            let pos = self.dep_pos(&first, &second);
            self.error(
                Some(pos),
                format!("dependency cycle: {}", crate::graph::format_cycle(&cycle)),
                Some("remove one of these dependencies; services must start in some order".into()),
            );
        }
        let graph_ok = !self.diags.iter().any(|d| d.severity == Severity::Error);
        let name = name?;
        if !graph_ok {
            return None;
        }
        match Project::new(name, settings, networks, services) {
            Ok(mut p) => {
                p.title = title;
                p.description = raw.description.clone();
                p.version = version;
                p.files = files;
                Some(p)
            }
            Err(e) => {
                self.error(None, e.to_string(), None);
                None
            }
        }
    }

    fn dep_pos(&self, service: &str, dep: &str) -> Pos {
        for key in ["dependencies", "depends_on"] {
            if let Some(n) = self.find(&["services", service, key])
                && let Some((k, _)) = n.entry(dep)
            {
                return k.pos;
            }
        }
        self.key_pos(&["services", service])
    }

    fn networks(&mut self, raw: &RawFile) -> BTreeMap<String, Network> {
        let mut out = BTreeMap::new();
        for (name, rn) in &raw.networks {
            let base = ["networks", name.as_str()];
            let subnet = self.opt_plain(rn.subnet.clone(), &["networks", name, "subnet"]);
            if let Some(s) = &subnet
                && !valid_cidr(s)
            {
                let pos = self.pos(&["networks", name, "subnet"]);
                self.error(
                    Some(pos),
                    format!("`{s}` is not a subnet in CIDR form"),
                    Some("write e.g. `192.168.1.0/24` or `10.0.0.0/24`".into()),
                );
            }
            let mut nodes = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, n) in rn.nodes.iter().enumerate() {
                let host = self.plain(&n.host, &base);
                for ident in std::iter::once(host.clone()).chain(n.name.clone()) {
                    if let Some(prev) = seen.insert(ident.clone(), i)
                        && prev != i
                    {
                        let pos = self.node_pos(name, i);
                        self.error(
                            Some(pos),
                            format!("network `{name}` lists `{ident}` twice"),
                            Some("each node needs its own host and name".into()),
                        );
                    }
                }
                nodes.push(crate::model::Node {
                    host,
                    name: n.name.clone(),
                    ssh_user: n.ssh_user.clone(),
                    ssh_key: n.ssh_key.as_deref().map(|k| self.resolve_path(k)),
                    ssh_port: n.ssh_port,
                    package_deploy: n.package_deploy.unwrap_or(false),
                });
            }
            let kind_pos = self.pos(&["networks", name, "type"]);
            let net = match rn.kind {
                raw::NetworkType::Local => {
                    if !nodes.is_empty() {
                        let pos = self.key_pos(&["networks", name, "nodes"]);
                        self.error(
                            Some(pos),
                            format!("local network `{name}` cannot have nodes"),
                            Some("use `type: lan` or `type: wireguard` for remote hosts".into()),
                        );
                    }
                    Network::Local { subnet }
                }
                raw::NetworkType::Lan | raw::NetworkType::Wireguard => {
                    let Some(subnet) = subnet else {
                        self.error(
                            Some(kind_pos),
                            format!("network `{name}` needs a `subnet`"),
                            Some("add e.g. `subnet: 192.168.1.0/24`".into()),
                        );
                        continue;
                    };
                    if rn.kind == raw::NetworkType::Lan {
                        if rn.config_path.is_some() {
                            let pos = self.key_pos(&["networks", name, "config_path"]);
                            self.error(
                                Some(pos),
                                "`config_path` is only for wireguard networks",
                                Some("remove it, or set `type: wireguard`".into()),
                            );
                        }
                        Network::Lan { subnet, nodes }
                    } else {
                        Network::Wireguard {
                            subnet,
                            config_path: rn.config_path.as_deref().map(|p| self.resolve_path(p)),
                            nodes,
                        }
                    }
                }
            };
            out.insert(name.clone(), net);
        }
        out
    }

    fn node_pos(&self, network: &str, index: usize) -> Pos {
        match self.find(&["networks", network, "nodes"]).map(|n| &n.value) {
            Some(Value::Seq(items)) => items
                .get(index)
                .map_or(self.pos(&["networks", network]), |n| n.pos),
            _ => self.pos(&["networks", network]),
        }
    }

    fn service_type(&mut self, name: &str, rs: &RawService) -> Option<ServiceType> {
        if let Some(t) = rs.kind {
            return Some(t);
        }
        let inferred = if rs.image.is_some() || rs.build.is_some() {
            Some(ServiceType::Docker)
        } else if rs.package.is_some() {
            Some(ServiceType::Package)
        } else if rs.host.is_some() && rs.binary.is_some() {
            Some(ServiceType::Remote)
        } else if rs.binary.is_some() {
            Some(ServiceType::Process)
        } else {
            None
        };
        if inferred.is_none() && !self.is_broken(name) {
            let pos = self.key_pos(&["services", name]);
            self.error(
                Some(pos),
                format!("cannot tell what service `{name}` runs"),
                Some("add `type: process` with `binary:`, `type: docker` with `image:`, `type: remote` with `host:` and `binary:`, or `type: package`".into()),
            );
        }
        inferred
    }

    fn service(
        &mut self,
        name: &ServiceName,
        rs: &RawService,
        raw: &RawFile,
        networks: &BTreeMap<String, Network>,
        settings: &Settings,
    ) -> Option<ServiceSpec> {
        let n = name.as_str();
        let kind = self.service_type(n, rs)?;
        // Keys that do not apply to this type.
        let keys: Vec<Key> = match self.find(&["services", n]).map(|n| &n.value) {
            Some(Value::Map(entries)) => entries.iter().map(|(k, _)| k.clone()).collect(),
            _ => Vec::new(),
        };
        {
            for k in &keys {
                if let Some((_, types)) = TYPE_KEYS.iter().find(|(key, _)| *key == k.name)
                    && !types.contains(&kind)
                {
                    let owners: Vec<&str> = types.iter().map(|t| type_name(*t)).collect();
                    self.error(
                        Some(k.pos),
                        format!("`{}` is not a key of a {} service", k.name, type_name(kind)),
                        Some(format!(
                            "remove it, or use `type: {}`",
                            owners.join("` or `type: ")
                        )),
                    );
                }
            }
        }
        let path = |k: &'static str| -> [String; 3] { ["services".into(), n.to_owned(), k.into()] };
        fn p(a: &[String; 3]) -> Vec<&str> {
            a.iter().map(String::as_str).collect()
        }
        let need = |this: &mut Self, v: &Option<String>, key: &str| {
            if v.is_none() && !this.pruned_key(n, key) {
                let pos = this.key_pos(&["services", n]);
                this.error(
                    Some(pos),
                    format!("{} service `{n}` needs `{key}`", type_name(kind)),
                    Some(format!("add `{key}:`")),
                );
            }
        };
        let host_field = rs.host.clone().map(|h| self.plain(&h, &p(&path("host"))));
        let target = match kind {
            ServiceType::Process => {
                need(self, &rs.binary, "binary");
                Target::Process {
                    binary: self.opt_plain(rs.binary.clone(), &p(&path("binary")))?,
                    args: rs.args.iter().flatten().map(|a| a.0.clone()).collect(),
                }
            }
            ServiceType::Remote => {
                need(self, &rs.host, "host");
                need(self, &rs.binary, "binary");
                Target::Remote {
                    host: host_field.clone()?,
                    binary: self.opt_plain(rs.binary.clone(), &p(&path("binary")))?,
                    args: rs.args.iter().flatten().map(|a| a.0.clone()).collect(),
                }
            }
            ServiceType::Package => {
                need(self, &rs.host, "host");
                need(self, &rs.package, "package");
                Target::Package {
                    host: host_field.clone()?,
                    package: self.opt_plain(rs.package.clone(), &p(&path("package")))?,
                    version: rs.version.as_ref().map(|v| v.0.clone()),
                    install_path: self
                        .opt_plain(rs.install_path.clone(), &p(&path("install_path")))
                        .map(PathBuf::from),
                }
            }
            ServiceType::Docker => Target::Docker(DockerSpec {
                host: host_field.clone(),
                ..self.docker(n, rs, raw)?
            }),
        };
        let is_local = match kind {
            ServiceType::Process => true,
            ServiceType::Docker => host_field.is_none(),
            ServiceType::Remote | ServiceType::Package => false,
        };
        let network = self.service_network(n, rs, kind, host_field.as_deref(), networks, is_local);

        // Environment: env files first, then env / environment.
        let mut env = BTreeMap::new();
        let mut env_file = Vec::new();
        for entry in rs
            .env_file
            .clone()
            .map(|e| e.into_vec())
            .unwrap_or_default()
        {
            let (path_s, required) = match entry {
                raw::EnvFileEntry::Path(p) => (p, true),
                raw::EnvFileEntry::Full { path, required } => (path, required.unwrap_or(true)),
            };
            let path_s = self.plain(&path_s, &p(&path("env_file")));
            let full = self.resolve_path(&path_s);
            match read_limited(&full, MAX_CONFIG_BYTES) {
                Ok(text) => {
                    let id = self.sources.add(&full, text);
                    let text = self.sources.files[id].1.clone();
                    for (k, v) in self.parse_env_text(&text, id) {
                        env.insert(k, crate::template::escape(&v));
                    }
                }
                Err(e) if required || !e.is_not_found() => {
                    let pos = self.pos(&p(&path("env_file")));
                    self.error(
                        Some(pos),
                        format!("env file: {e}"),
                        Some("fix the path, or mark it `required: false`".into()),
                    );
                }
                Err(_) => {}
            }
            env_file.push(EnvFile {
                path: full,
                required,
            });
        }
        if rs.env.is_some() && rs.environment.is_some() {
            let pos = self.key_pos(&p(&path("environment")));
            self.error(
                Some(pos),
                "both `env` and `environment` are set",
                Some("use one of them".into()),
            );
        }
        for (k, v) in rs
            .env
            .iter()
            .chain(rs.environment.iter())
            .flat_map(|e| e.0.iter())
        {
            if k.is_empty() || k.contains('=') {
                let pos = self.pos(&p(&path("env")));
                self.error(
                    Some(pos),
                    format!("`{k}` is not an environment variable name"),
                    None,
                );
            }
            env.insert(k.clone(), v.clone());
        }

        // Probes.
        let default_period = settings
            .health_check_interval
            .unwrap_or(DEFAULT_PROBE_PERIOD);
        if rs.health_check.is_some() && rs.healthcheck.is_some() {
            let pos = self.key_pos(&p(&path("healthcheck")));
            self.error(
                Some(pos),
                "both `health_check` and `healthcheck` are set",
                Some("use one of them".into()),
            );
        }
        let (hc, hc_key) = match (&rs.health_check, &rs.healthcheck) {
            (Some(h), _) => (Some(h), "health_check"),
            (None, Some(h)) => (Some(h), "healthcheck"),
            _ => (None, "health_check"),
        };
        let health = hc.and_then(|h| self.probe(n, hc_key, h, default_period));
        let readiness = match &rs.readiness {
            Some(r) => self.probe(n, "readiness", r, default_period),
            None => health.clone(),
        };
        let liveness = match &rs.liveness {
            Some(r) => self.probe(n, "liveness", r, default_period),
            None => health,
        };

        // Restart and jobs.
        let job = rs.job.unwrap_or(false);
        let default_mode = if job {
            RestartMode::No
        } else {
            RestartMode::OnFailure
        };
        let restart = self.restart(n, rs, default_mode);
        if job && restart.mode == RestartMode::Always {
            let pos = self.pos(&p(&path("restart")));
            self.error(
                Some(pos),
                format!("job `{n}` has `restart: always`, so it would never complete"),
                Some("use `restart: on_failure` or `no` for a job".into()),
            );
        }
        let success_exit_codes = rs.success_exit_codes.clone().unwrap_or_else(|| vec![0]);
        if success_exit_codes.is_empty() && !self.pruned_key(n, "success_exit_codes") {
            let pos = self.pos(&p(&path("success_exit_codes")));
            self.error(
                Some(pos),
                "`success_exit_codes` is empty",
                Some("list at least one code, e.g. `[0]`".into()),
            );
        }

        // Shutdown.
        let explicit_timeout = rs.shutdown.as_ref().and_then(|s| s.timeout);
        if explicit_timeout.is_some() && rs.shutdown_timeout.is_some() {
            let pos = self.key_pos(&p(&path("shutdown_timeout")));
            self.error(
                Some(pos),
                "both `shutdown_timeout` and `shutdown.timeout` are set",
                Some("keep one of them".into()),
            );
        }
        let shutdown = Shutdown {
            signal: rs
                .shutdown
                .as_ref()
                .and_then(|s| s.signal)
                .unwrap_or(harness_core::Signal::TERM),
            timeout: explicit_timeout
                .or(rs.shutdown_timeout)
                .map(Into::into)
                .or(settings.shutdown_timeout)
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        };

        let ports = self.ports(n, rs, kind);
        let working_dir = self
            .opt_plain(rs.working_dir.clone(), &p(&path("working_dir")))
            .map(|w| {
                if kind == ServiceType::Process {
                    self.resolve_path(&w)
                } else {
                    PathBuf::from(w)
                }
            })
            // A local process runs in the project directory unless told
            // otherwise, wherever the daemon was started from.
            .or_else(|| (kind == ServiceType::Process).then(|| self.project_dir.clone()));
        Some(ServiceSpec {
            name: name.clone(),
            target,
            network,
            env,
            env_file,
            working_dir,
            user: self.opt_plain(rs.user.clone(), &p(&path("user"))),
            dependencies: Vec::new(),
            readiness,
            liveness,
            restart,
            shutdown,
            startup_timeout: rs
                .startup_timeout
                .map(Into::into)
                .or(settings.startup_timeout),
            job,
            success_exit_codes,
            ports,
            description: rs.description.clone(),
            labels: rs.labels.clone().unwrap_or_default(),
            watch: self.watch_rules(n, rs),
        })
    }

    /// The `watch:` rules of service `n`, paths resolved; bad globs are errors.
    fn watch_rules(&mut self, n: &str, rs: &RawService) -> Vec<WatchRule> {
        let mut out = Vec::new();
        for (i, w) in rs.watch.iter().flatten().enumerate() {
            let idx = i.to_string();
            let path = self.plain(&w.path, &["services", n, "watch", &idx, "path"]);
            for (key, globs) in [("include", &w.include), ("ignore", &w.ignore)] {
                for (j, g) in globs.iter().flatten().enumerate() {
                    if let Err(e) = crate::watch::check_glob(g) {
                        let at = j.to_string();
                        let pos = self.pos(&["services", n, "watch", &idx, key, &at]);
                        self.error(Some(pos), format!("`{g}` is not a valid glob: {e}"), None);
                    }
                }
            }
            out.push(WatchRule {
                path: self.resolve_path(&path),
                action: w.action.unwrap_or_default(),
                include: w.include.clone().unwrap_or_default(),
                ignore: w.ignore.clone().unwrap_or_default(),
            });
        }
        out
    }

    fn service_network(
        &mut self,
        n: &str,
        rs: &RawService,
        kind: ServiceType,
        host: Option<&str>,
        networks: &BTreeMap<String, Network>,
        is_local: bool,
    ) -> Option<String> {
        if self.pruned_key(n, "network") {
            return None;
        }
        if let Some(net) = &rs.network {
            let net = self.plain(net, &["services", n, "network"]);
            let pos = self.pos(&["services", n, "network"]);
            let Some(found) = networks.get(&net) else {
                let hint = match did_you_mean(&net, networks.keys().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if networks.is_empty() => {
                        "declare it under `networks:`, or leave `network:` out".to_owned()
                    }
                    None => format!(
                        "declared networks: {}",
                        networks
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.error(
                    Some(pos),
                    format!("service `{n}` is on network `{net}`, which is not defined"),
                    Some(hint),
                );
                return None;
            };
            if let Some(h) = host {
                match found {
                    Network::Local { .. } => {
                        self.error(Some(pos), format!("{} service `{n}` runs on host `{h}`, but `{net}` is a local network", type_name(kind)), Some("put it on a lan or wireguard network that lists the host".into()));
                    }
                    _ if found.node(h).is_none() => {
                        let hpos = self.pos(&["services", n, "host"]);
                        let hint = match did_you_mean(
                            h,
                            found.nodes().iter().flat_map(|nd| {
                                std::iter::once(nd.host.as_str()).chain(nd.name.as_deref())
                            }),
                        ) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("add it to the nodes of `{net}`"),
                        };
                        self.error(
                            Some(hpos),
                            format!("host `{h}` is not a node of network `{net}`"),
                            Some(hint),
                        );
                    }
                    Network::Wireguard { .. }
                        if kind == ServiceType::Package
                            && found.node(h).is_some_and(|nd| !nd.package_deploy) =>
                    {
                        let hpos = self.pos(&["services", n, "host"]);
                        self.warn(
                            Some(hpos),
                            format!("node `{h}` of `{net}` does not have `package_deploy: true`"),
                            Some("set `package_deploy: true` on the node".into()),
                        );
                    }
                    _ => {}
                }
            }
            return Some(net);
        }
        if networks.len() == 1 {
            let (name, net) = networks.iter().next().expect("one network");
            let fits = match host {
                Some(h) => net.node(h).is_some(),
                None => true,
            };
            if fits {
                return Some(name.clone());
            }
        }
        if let Some(h) = host {
            let holding: Vec<&String> = networks
                .iter()
                .filter(|(_, net)| net.node(h).is_some())
                .map(|(k, _)| k)
                .collect();
            match holding.len() {
                1 => return Some(holding[0].clone()),
                0 if networks.values().any(|net| !net.nodes().is_empty()) => {
                    let pos = self.pos(&["services", n, "host"]);
                    self.error(
                        Some(pos),
                        format!("host `{h}` is not a node of any network"),
                        Some("add it to a network's `nodes`, or fix the host".into()),
                    );
                }
                0 => {}
                _ => {
                    let pos = self.key_pos(&["services", n]);
                    self.error(Some(pos), format!("host `{h}` is in several networks ({}); which one is meant is ambiguous", holding.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")), Some("add `network:` to the service".into()));
                }
            }
            return None;
        }
        if is_local {
            let locals: Vec<&String> = networks
                .iter()
                .filter(|(_, net)| matches!(net, Network::Local { .. }))
                .map(|(k, _)| k)
                .collect();
            if locals.len() == 1 {
                return Some(locals[0].clone());
            }
            if locals.len() > 1 {
                let pos = self.key_pos(&["services", n]);
                self.error(
                    Some(pos),
                    format!("service `{n}` has no `network:` and there are several local networks"),
                    Some(format!(
                        "add `network:` with one of {}",
                        locals
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
        }
        None
    }

    fn docker(&mut self, n: &str, rs: &RawService, raw: &RawFile) -> Option<DockerSpec> {
        let build = match &rs.build {
            None => None,
            Some(raw::RawBuild::Context(c)) => Some(Build {
                context: {
                    let c = self.plain(c, &["services", n, "build"]);
                    self.resolve_path(&c)
                },
                dockerfile: None,
                args: BTreeMap::new(),
            }),
            Some(raw::RawBuild::Full(b)) => {
                let ctx = b.context.clone().unwrap_or_else(|| ".".into());
                let ctx = self.plain(&ctx, &["services", n, "build", "context"]);
                let dockerfile = self.opt_plain(
                    b.dockerfile.clone(),
                    &["services", n, "build", "dockerfile"],
                );
                let mut args = BTreeMap::new();
                for (k, v) in b.args.iter().flat_map(|a| a.0.iter()) {
                    let v = self.plain(v, &["services", n, "build", "args"]);
                    args.insert(k.clone(), v);
                }
                Some(Build {
                    context: self.resolve_path(&ctx),
                    dockerfile: dockerfile.map(PathBuf::from),
                    args,
                })
            }
        };
        let image = match (&rs.image, &build) {
            (Some(i), _) => self.plain(i, &["services", n, "image"]),
            (None, Some(_)) => {
                let project = raw
                    .name
                    .as_deref()
                    .and_then(project_name_from_title)
                    .unwrap_or_else(|| dir_project_name(&self.project_dir))
                    .to_string();
                format!(
                    "harness-{}-{}:latest",
                    project.to_ascii_lowercase(),
                    n.to_ascii_lowercase()
                )
            }
            (None, None) if self.pruned_key(n, "image") || self.pruned_key(n, "build") => {
                return None;
            }
            (None, None) => {
                let pos = self.key_pos(&["services", n]);
                self.error(
                    Some(pos),
                    format!("docker service `{n}` needs `image` or `build`"),
                    Some("add `image: NAME:TAG`, or `build: DIR` with a Dockerfile".into()),
                );
                return None;
            }
        };
        let command = self.command(n, "command", rs.command.as_ref());
        let entrypoint = self.command(n, "entrypoint", rs.entrypoint.as_ref());
        let mut volumes = Vec::new();
        for v in rs.volumes.iter().flatten() {
            let v = self.plain(v, &["services", n, "volumes"]);
            volumes.push(match v.split_once(':') {
                Some((src, rest))
                    if src.starts_with("./")
                        || src.starts_with("../")
                        || src == "."
                        || src.starts_with("~/") =>
                {
                    format!("{}:{rest}", self.resolve_path(src).display())
                }
                _ => v,
            });
        }
        let sec = rs.security.clone().unwrap_or_default();
        let security = Security {
            read_only: sec.read_only.unwrap_or(false),
            runtime: sec.runtime,
            cap_drop: sec.cap_drop.unwrap_or_default(),
            cap_add: sec.cap_add.unwrap_or_default(),
            no_new_privileges: sec.no_new_privileges.unwrap_or(false),
            user: sec.user,
        };
        let res = rs.resources.clone().unwrap_or_default();
        let cpus = res.cpus.and_then(|c| match c.0.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Some(v),
            _ => {
                let pos = self.pos(&["services", n, "resources", "cpus"]);
                self.error(
                    Some(pos),
                    format!("`{}` is not a CPU count", c.0),
                    Some("write a positive number of cores, e.g. `0.5` or `2`".into()),
                );
                None
            }
        });
        let memory = res.memory.and_then(|m| match raw::parse_memory(&m.0) {
            Some(v) if v > 0 => Some(v),
            _ => {
                let pos = self.pos(&["services", n, "resources", "memory"]);
                self.error(
                    Some(pos),
                    format!("`{}` is not a memory size", m.0),
                    Some("write bytes or a size like `512m`, `1g`, `256MiB`".into()),
                );
                None
            }
        });
        Some(DockerSpec {
            image,
            build,
            command,
            entrypoint,
            volumes,
            networks: rs.networks.clone().unwrap_or_default(),
            security,
            resources: Resources { cpus, memory },
            host: None,
        })
    }

    fn command(&mut self, n: &str, key: &str, c: Option<&raw::Command>) -> Option<Vec<String>> {
        match c? {
            raw::Command::Words(w) => Some(w.clone()),
            raw::Command::Line(l) => match raw::split_command(l) {
                Some(w) => Some(w),
                None => {
                    let pos = self.pos(&["services", n, key]);
                    self.error(
                        Some(pos),
                        format!("`{key}` has a quote that is not closed"),
                        Some("close the quote, or write the words as a list".into()),
                    );
                    None
                }
            },
        }
    }

    fn probe(
        &mut self,
        n: &str,
        key: &str,
        rp: &RawProbe,
        default_period: std::time::Duration,
    ) -> Option<Probe> {
        if self.pruned_key(n, key) {
            // Part of it did not decode and was reported; what is left is not the probe.
            return None;
        }
        let base = ["services", n, key];
        let at = |this: &Self, k: &str| this.key_pos(&["services", n, key, k]);
        let pos = self.pos(&base);
        let mut pairs_ok = true;
        for (a, b) in [
            ("interval", "period"),
            ("retries", "failure_threshold"),
            ("start_period", "initial_delay"),
            ("command", "exec"),
        ] {
            let has = |k: &str| self.find(&["services", n, key, k]).is_some();
            if has(a) && has(b) {
                let p = at(self, b);
                self.error(
                    Some(p),
                    format!("both `{a}` and `{b}` are set"),
                    Some("they mean the same: keep one".into()),
                );
                pairs_ok = false;
            }
        }
        let command = rp.command.as_ref().or(rp.exec.as_ref());
        let kinds = [
            command.is_some(),
            rp.http.is_some(),
            rp.tcp.is_some(),
            rp.log_line.is_some(),
        ];
        let count = kinds.iter().filter(|k| **k).count();
        if count != 1 {
            let msg = if count == 0 {
                format!("`{key}` of service `{n}` does not say what to check")
            } else {
                format!("`{key}` of service `{n}` has more than one check")
            };
            self.error(
                Some(pos),
                msg,
                Some("use exactly one of `command`, `http`, `tcp` or `log_line`".into()),
            );
            return None;
        }
        if rp.args.is_some() && command.is_none() {
            let p = at(self, "args");
            self.error(
                Some(p),
                "`args` belongs to a `command` check",
                Some("remove it, or add `command:`".into()),
            );
        }
        if rp.expected_status.is_some() && rp.http.is_none() {
            let p = at(self, "expected_status");
            self.error(
                Some(p),
                "`expected_status` belongs to an `http` check",
                Some("remove it, or add `http:`".into()),
            );
        }
        let mut timeout = rp.timeout.map(Into::into);
        let check = if let Some(c) = command {
            let words = match c {
                raw::Command::Words(w) => w.clone(),
                raw::Command::Line(l) if rp.args.is_some() => vec![l.clone()],
                raw::Command::Line(l) => match raw::split_command(l) {
                    Some(w) => w,
                    None => {
                        let p = self.pos(&[
                            "services",
                            n,
                            key,
                            if rp.command.is_some() {
                                "command"
                            } else {
                                "exec"
                            },
                        ]);
                        self.error(
                            Some(p),
                            "the command has a quote that is not closed",
                            Some("close the quote, or write the words as a list".into()),
                        );
                        return None;
                    }
                },
            };
            let mut it = words.into_iter();
            let Some(command) = it.next().filter(|c| !c.is_empty()) else {
                let p = at(self, "command");
                self.error(
                    Some(p),
                    "the check command is empty",
                    Some("name a program, e.g. `command: pg_isready`".into()),
                );
                return None;
            };
            let mut args: Vec<String> = it.collect();
            args.extend(rp.args.iter().flatten().map(|a| a.0.clone()));
            Check::Exec { command, args }
        } else if let Some(url) = &rp.http {
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                let p = self.pos(&["services", n, key, "http"]);
                self.error(
                    Some(p),
                    format!("`{url}` is not an http(s) URL"),
                    Some("write e.g. `http://localhost:8080/health`".into()),
                );
            }
            if let Some(s) = rp.expected_status
                && !(100..=599).contains(&s)
            {
                let p = self.pos(&["services", n, key, "expected_status"]);
                self.error(
                    Some(p),
                    format!("{s} is not an HTTP status"),
                    Some("use a code from 100 to 599".into()),
                );
            }
            Check::Http {
                url: url.clone(),
                expected_status: rp.expected_status,
            }
        } else if let Some(tcp) = &rp.tcp {
            let (port, host) = match tcp {
                raw::RawTcp::Port(p) => (*p, None),
                raw::RawTcp::Full(f) => {
                    if f.timeout.is_some() && timeout.is_none() {
                        timeout = f.timeout.map(Into::into);
                    }
                    (f.port, f.host.clone())
                }
            };
            if port == 0 {
                let p = self.pos(&["services", n, key, "tcp"]);
                self.error(
                    Some(p),
                    "port 0 cannot be checked",
                    Some("use the port the service listens on".into()),
                );
            }
            Check::Tcp { host, port }
        } else {
            let pat = rp.log_line.clone().unwrap_or_default();
            match LogPattern::new(&pat) {
                Ok(p) => Check::LogLine { pattern: p },
                Err(e) => {
                    let p = self.pos(&["services", n, key, "log_line"]);
                    self.error(
                        Some(p),
                        format!("invalid regex: {}", first_line(&e.to_string())),
                        Some("fix the pattern (Rust regex syntax)".into()),
                    );
                    return None;
                }
            }
        };
        let period: std::time::Duration = rp
            .interval
            .or(rp.period)
            .map(Into::into)
            .unwrap_or(default_period);
        if period.is_zero() {
            let p = self.pos(&[
                "services",
                n,
                key,
                if rp.interval.is_some() {
                    "interval"
                } else {
                    "period"
                },
            ]);
            self.error(
                Some(p),
                "the check period cannot be 0",
                Some("use e.g. `interval: 5s`".into()),
            );
        }
        let start_interval: Option<std::time::Duration> = rp.start_interval.map(Into::into);
        if start_interval.is_some_and(|d| d.is_zero()) {
            let p = self.pos(&["services", n, key, "start_interval"]);
            self.error(
                Some(p),
                "the check start interval cannot be 0",
                Some("use e.g. `start_interval: 250ms`, or leave it out to use `interval`".into()),
            );
        }
        let timeout = timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
        if timeout.is_zero() {
            let p = self.pos(&["services", n, key, "timeout"]);
            self.error(
                Some(p),
                "the check timeout cannot be 0",
                Some("use e.g. `timeout: 3s`".into()),
            );
        }
        let failure_threshold = rp
            .retries
            .or(rp.failure_threshold)
            .unwrap_or(DEFAULT_FAILURE_THRESHOLD);
        let success_threshold = rp.success_threshold.unwrap_or(1);
        for (k, v) in [
            ("retries", rp.retries),
            ("failure_threshold", rp.failure_threshold),
            ("success_threshold", rp.success_threshold),
        ] {
            if v == Some(0) {
                let p = self.pos(&["services", n, key, k]);
                self.error(Some(p), format!("`{k}` must be at least 1"), None);
            }
        }
        if !pairs_ok {
            return None;
        }
        Some(Probe {
            check,
            initial_delay: rp
                .start_period
                .or(rp.initial_delay)
                .map(Into::into)
                .unwrap_or_default(),
            period,
            start_interval,
            timeout,
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
        })
    }

    fn restart(&mut self, n: &str, rs: &RawService, default_mode: RestartMode) -> RestartPolicy {
        let conv = |r: raw::RestartName| match r {
            raw::RestartName::No => RestartMode::No,
            raw::RestartName::Always => RestartMode::Always,
            raw::RestartName::OnFailure => RestartMode::OnFailure,
        };
        let mut policy = RestartPolicy {
            mode: default_mode,
            ..Default::default()
        };
        match &rs.restart {
            None => {}
            Some(raw::RawRestart::Mode(m)) => policy.mode = conv(*m),
            Some(raw::RawRestart::Full(f)) => {
                policy.mode = f.mode.map(conv).unwrap_or(default_mode);
                policy.max_restarts = f.max_restarts;
                if let Some(b) = &f.backoff {
                    let d = Backoff::default();
                    policy.backoff = Backoff {
                        initial: b.initial.map(Into::into).unwrap_or(d.initial),
                        max: b.max.map(Into::into).unwrap_or(d.max),
                        multiplier: b.multiplier.unwrap_or(d.multiplier),
                        jitter: b.jitter.unwrap_or(d.jitter),
                        reset_after: b.reset_after.map(Into::into).unwrap_or(d.reset_after),
                    };
                    let bp =
                        |this: &Self, k: &str| this.pos(&["services", n, "restart", "backoff", k]);
                    let bo = policy.backoff.clone();
                    if !(bo.multiplier.is_finite() && bo.multiplier >= 1.0) {
                        let p = bp(self, "multiplier");
                        self.error(
                            Some(p),
                            format!("backoff multiplier {} must be at least 1", bo.multiplier),
                            Some("use e.g. `multiplier: 2`".into()),
                        );
                    }
                    if !(bo.jitter.is_finite() && (0.0..=1.0).contains(&bo.jitter)) {
                        let p = bp(self, "jitter");
                        self.error(
                            Some(p),
                            format!("backoff jitter {} must be between 0 and 1", bo.jitter),
                            Some("use e.g. `jitter: 0.1` for ±10 %".into()),
                        );
                    }
                    if bo.initial > bo.max {
                        let p = bp(self, "initial");
                        self.error(
                            Some(p),
                            "the first backoff delay is longer than the largest",
                            Some("make `initial` at most `max`".into()),
                        );
                    }
                }
            }
        }
        policy
    }

    fn ports(&mut self, n: &str, rs: &RawService, kind: ServiceType) -> Vec<PortMapping> {
        let mut out = Vec::new();
        let items: Vec<Pos> = match self.find(&["services", n, "ports"]).map(|n| &n.value) {
            Some(Value::Seq(items)) => items.iter().map(|i| i.pos).collect(),
            _ => Vec::new(),
        };
        for (i, rp) in rs.ports.iter().flatten().enumerate() {
            let pos = items
                .get(i)
                .copied()
                .unwrap_or_else(|| self.pos(&["services", n, "ports"]));
            let mapping = match rp {
                raw::RawPort::Number(p) => Some(PortMapping {
                    host: None,
                    host_ip: None,
                    container: *p,
                    protocol: Protocol::Tcp,
                }),
                raw::RawPort::Long(l) => {
                    let host_ip = l.host_ip.as_deref().map(parse_host_ip);
                    if l.container == 0 || l.host == Some(0) {
                        self.error(
                            Some(pos),
                            "port 0 is not a port",
                            Some("use 1-65535".into()),
                        );
                        None
                    } else if let Some(None) = host_ip {
                        let ip = l.host_ip.clone().unwrap_or_default();
                        self.error(
                            Some(pos),
                            format!("`{ip}` is not an IP address"),
                            Some("write `host_ip: 127.0.0.1` or `host_ip: \"::1\"`".into()),
                        );
                        None
                    } else {
                        Some(PortMapping {
                            host: l.host,
                            host_ip: host_ip.flatten(),
                            container: l.container,
                            protocol: l.protocol.unwrap_or_default(),
                        })
                    }
                }
                raw::RawPort::Short(s) => {
                    let s = self.plain(s, &["services", n, "ports"]);
                    match parse_port(&s) {
                        Ok(m) => Some(m),
                        Err(why) => {
                            self.error(Some(pos), format!("`{s}` is not a port: {why}"), Some("write `8080`, `\"8080:80\"`, `\"127.0.0.1:8080:80\"` or `\"53:53/udp\"`".into()));
                            None
                        }
                    }
                }
            };
            if let Some(m) = mapping {
                if kind != ServiceType::Docker && m.host.is_some_and(|h| h != m.container) {
                    self.error(
                        Some(pos),
                        format!(
                            "a {} service cannot map port {} to {}",
                            type_name(kind),
                            m.host.unwrap_or_default(),
                            m.container
                        ),
                        Some(
                            "port mapping is for containers; list the port the service listens on"
                                .into(),
                        ),
                    );
                    continue;
                }
                let m = if kind == ServiceType::Docker {
                    m
                } else {
                    PortMapping {
                        host: None,
                        host_ip: None,
                        ..m
                    }
                };
                out.push(m);
            }
        }
        out
    }

    fn check_dependencies(
        &mut self,
        raw: &RawFile,
        services: &mut BTreeMap<ServiceName, ServiceSpec>,
        broken: &[String],
        all_names: &[String],
    ) {
        let has_check: HashMap<String, (bool, bool)> = services
            .iter()
            .map(|(k, s)| (k.to_string(), (s.readiness.is_some(), s.job)))
            .collect();
        for (name, rs) in &raw.services {
            let Some(spec) = services.get_mut(name.as_str()) else {
                continue;
            };
            let mut deps: Vec<Dependency> = Vec::new();
            let lists = [
                ("dependencies", &rs.dependencies),
                ("depends_on", &rs.depends_on),
            ];
            for (key, list) in lists {
                for (dep, opts) in list.iter().flat_map(|d| d.0.iter()) {
                    let kpos = self
                        .find(&["services", name, key])
                        .and_then(|n| n.entry(dep))
                        .map(|(k, _)| k.pos)
                        .unwrap_or_else(|| self.key_pos(&["services", name, key]));
                    if dep == name {
                        self.diags.push(self.sources.diag(
                            Severity::Error,
                            Some(kpos),
                            format!("service `{name}` depends on itself"),
                            Some("remove this dependency".into()),
                        ));
                        continue;
                    }
                    let dep_broken = self.is_broken(dep);
                    let Some(&(dep_has_check, dep_is_job)) = has_check.get(dep.as_str()) else {
                        if !all_names.contains(dep) && !broken.contains(dep) {
                            let hint = match did_you_mean(dep, all_names.iter().map(String::as_str))
                            {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => {
                                    "define the service under `services:`, or remove the dependency"
                                        .to_owned()
                                }
                            };
                            self.diags.push(self.sources.diag(
                                Severity::Error,
                                Some(kpos),
                                format!(
                                    "service `{name}` depends on `{dep}`, which is not defined"
                                ),
                                Some(hint),
                            ));
                        }
                        continue;
                    };
                    let Ok(dep_name) = ServiceName::new(dep.clone()) else {
                        continue;
                    };
                    let cpos = self
                        .find(&["services", name, key, dep, "condition"])
                        .map(|n| n.pos)
                        .unwrap_or(kpos);
                    let condition = match opts.condition {
                        None if opts.pattern.is_some() => {
                            self.log_condition(name, key, dep, opts, kpos)
                        }
                        None if dep_is_job => Condition::CompletedSuccessfully,
                        None if dep_has_check => Condition::Healthy,
                        None => Condition::Started,
                        Some(raw::ConditionName::Started) => Condition::Started,
                        Some(raw::ConditionName::Healthy) => {
                            if dep_broken {
                                // Its own errors were reported; its checks are unknown.
                            } else if dep_is_job {
                                self.diags.push(self.sources.diag(Severity::Error, Some(cpos), format!("`healthy` can never hold for `{dep}`: it is a one-shot job"), Some("use `condition: completed_successfully` or `started`".into())));
                            } else if !dep_has_check {
                                self.diags.push(self.sources.diag(Severity::Error, Some(cpos), format!("`{dep}` has no health check, so `healthy` can never hold"), Some(format!("add a `health_check` to `{dep}`, or use `condition: started`"))));
                            }
                            Condition::Healthy
                        }
                        Some(raw::ConditionName::CompletedSuccessfully) => {
                            if !dep_is_job && !dep_broken {
                                self.diags.push(self.sources.diag(Severity::Error, Some(cpos), format!("`completed_successfully` can never hold for `{dep}`: it is not a one-shot job"), Some(format!("add `job: true` to `{dep}`, or use `condition: started` or `healthy`"))));
                            }
                            Condition::CompletedSuccessfully
                        }
                        Some(raw::ConditionName::LogReady) => {
                            self.log_condition(name, key, dep, opts, cpos)
                        }
                    };
                    if opts.pattern.is_some()
                        && opts
                            .condition
                            .is_some_and(|c| c != raw::ConditionName::LogReady)
                    {
                        let ppos = self.key_pos(&["services", name, key, dep, "pattern"]);
                        self.diags.push(self.sources.diag(
                            Severity::Error,
                            Some(ppos),
                            "`pattern` belongs to `condition: log_ready`",
                            Some("remove it, or use `condition: log_ready`".into()),
                        ));
                    }
                    if let Some(existing) = deps.iter_mut().find(|d| d.service == dep_name) {
                        existing.condition = condition;
                    } else {
                        deps.push(Dependency {
                            service: dep_name,
                            condition,
                        });
                    }
                }
            }
            spec.dependencies = deps;
        }
    }

    fn log_condition(
        &mut self,
        name: &str,
        key: &str,
        dep: &str,
        opts: &raw::RawDependency,
        pos: Pos,
    ) -> Condition {
        match &opts.pattern {
            None => {
                self.diags.push(
                    self.sources.diag(
                        Severity::Error,
                        Some(pos),
                        "`log_ready` needs a `pattern`",
                        Some(
                            "add `pattern: REGEX` matching the line the service prints when ready"
                                .into(),
                        ),
                    ),
                );
                Condition::Started
            }
            Some(p) => match LogPattern::new(p) {
                Ok(pattern) => Condition::LogReady { pattern },
                Err(e) => {
                    let ppos = self.pos(&["services", name, key, dep, "pattern"]);
                    self.diags.push(self.sources.diag(
                        Severity::Error,
                        Some(ppos),
                        format!("invalid regex: {}", first_line(&e.to_string())),
                        Some("fix the pattern (Rust regex syntax)".into()),
                    ));
                    Condition::Started
                }
            },
        }
    }

    /// Checks `${svc.field}` references in every template field.
    fn check_refs(&mut self, services: &BTreeMap<ServiceName, ServiceSpec>, all_names: &[String]) {
        let known: std::collections::HashSet<&str> = all_names.iter().map(String::as_str).collect();
        for (name, spec) in services {
            let templates: Vec<String> = spec.templates().map(str::to_owned).collect();
            for t in templates {
                let problem = match crate::template::parse(&t) {
                    Err(e) => Some((e.to_string(), "write `${service.ip}`, `${service.port}` or `${service.host}`; `$$` for a literal `$`".to_owned())),
                    Ok(parts) => parts.into_iter().find_map(|p| match p {
                        crate::template::Part::Ref(r) if !known.contains(r.service.as_str()) => Some((
                            format!("`{r}` names service `{}`, which is not defined", r.service),
                            match did_you_mean(r.service.as_str(), all_names.iter().map(String::as_str)) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => "reference a service defined under `services:`".to_owned(),
                            },
                        )),
                        _ => None,
                    }),
                };
                if let Some((msg, hint)) = problem {
                    let pos = self.template_pos(name.as_str(), &t);
                    self.error(Some(pos), msg, Some(hint));
                    continue;
                }
                // `${svc.port}` of a service that declares no port cannot resolve.
                for r in crate::template::references(&t) {
                    let portless = r.field == crate::template::RefField::Port
                        && services
                            .get(&r.service)
                            .is_some_and(|s| s.primary_port().is_none());
                    if portless {
                        let pos = self.template_pos(name.as_str(), &t);
                        self.warn(
                            Some(pos),
                            format!("`{r}`: service `{}` declares no port", r.service),
                            Some(format!(
                                "add `ports:` (or a tcp/http check with a port) to `{}`",
                                r.service
                            )),
                        );
                    }
                }
            }
        }
    }

    /// The position of the string node of a service whose value is `text`.
    fn template_pos(&self, service: &str, text: &str) -> Pos {
        fn walk(n: &Node, text: &str) -> Option<Pos> {
            match &n.value {
                Value::Str(s) if s == text => Some(n.pos),
                Value::Seq(items) => items.iter().find_map(|i| walk(i, text)),
                Value::Map(entries) => entries.iter().find_map(|(_, v)| walk(v, text)),
                _ => None,
            }
        }
        self.find(&["services", service])
            .and_then(|n| {
                walk(n, text).or_else(|| walk(n, text.split_whitespace().next().unwrap_or(text)))
            })
            .unwrap_or_else(|| self.key_pos(&["services", service]))
    }

    /// Two services may not publish the same host port on the same machine.
    fn check_ports(&mut self, services: &BTreeMap<ServiceName, ServiceSpec>) {
        let mut seen: HashMap<(String, Protocol, u16), (String, usize)> = HashMap::new();
        for (name, spec) in services {
            let machine = spec.host().unwrap_or("localhost").to_owned();
            for (i, m) in spec.ports.iter().enumerate() {
                let port = match spec.kind() {
                    harness_core::ServiceKind::Docker => match m.host {
                        Some(h) => h,
                        None => continue,
                    },
                    _ => m.container,
                };
                let key = (machine.clone(), m.protocol, port);
                if let Some((other, _)) = seen.get(&key) {
                    let pos = match self
                        .find(&["services", name.as_str(), "ports"])
                        .map(|n| &n.value)
                    {
                        Some(Value::Seq(items)) => items
                            .get(i)
                            .map(|n| n.pos)
                            .unwrap_or(self.pos(&["services", name.as_str(), "ports"])),
                        _ => self.pos(&["services", name.as_str(), "ports"]),
                    };
                    let msg = if other == name.as_str() {
                        format!("service `{name}` lists {} port {port} twice", m.protocol)
                    } else {
                        format!(
                            "{} port {port} on {machine} is already used by service `{other}`",
                            m.protocol
                        )
                    };
                    self.error(Some(pos), msg, Some("pick another host port".into()));
                } else {
                    seen.insert(key, (name.to_string(), i));
                }
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_owned()
}

/// The service whose subtree holds `pos`, and the key of that service under
/// which it lies (`None`: the service's own key or map).
fn service_at(root: &Node, pos: Pos) -> Option<(String, Option<String>)> {
    let Some(Value::Map(entries)) = root.get("services").map(|s| &s.value) else {
        return None;
    };
    fn contains(n: &Node, pos: Pos) -> bool {
        n.pos == pos
            || match &n.value {
                Value::Seq(items) => items.iter().any(|i| contains(i, pos)),
                Value::Map(entries) => entries
                    .iter()
                    .any(|(k, v)| k.pos == pos || contains(v, pos)),
                _ => false,
            }
    }
    let (k, v) = entries
        .iter()
        .find(|(k, v)| k.pos == pos || contains(v, pos))?;
    if k.pos == pos
        || (v.pos == pos
            && !matches!(v.value, Value::Map(ref e) if e.first().is_some_and(|(fk, _)| fk.pos == pos)))
    {
        return Some((k.name.clone(), None));
    }
    let key = match &v.value {
        Value::Map(fields) => fields
            .iter()
            .find(|(fk, fv)| fk.pos == pos || contains(fv, pos))
            .map(|(fk, _)| fk.name.clone()),
        _ => None,
    };
    Some((k.name.clone(), key))
}

/// Removes the map entry or list item at `pos` (its key or its value). Returns
/// the position of the container it was removed from.
fn prune(node: &mut Node, pos: Pos) -> Option<Pos> {
    let here = node.pos;
    match &mut node.value {
        Value::Map(entries) => {
            if let Some(i) = entries.iter().position(|(k, v)| {
                k.pos == pos || (v.pos == pos && !matches!(v.value, Value::Map(_) | Value::Seq(_)))
            }) {
                entries.remove(i);
                return Some(here);
            }
            for (_, v) in entries.iter_mut() {
                if let Some(p) = prune(v, pos) {
                    return Some(p);
                }
            }
            // A container value whose own position is meant (e.g. wrong type, missing key).
            if let Some(i) = entries.iter().position(|(_, v)| v.pos == pos) {
                entries.remove(i);
                return Some(here);
            }
            None
        }
        Value::Seq(items) => {
            for it in items.iter_mut() {
                if let Some(p) = prune(it, pos) {
                    return Some(p);
                }
            }
            if let Some(i) = items.iter().position(|v| v.pos == pos) {
                items.remove(i);
                return Some(here);
            }
            None
        }
        _ => None,
    }
}

/// Removes `x-` keys everywhere.
fn strip_extensions(node: &mut Node) {
    match &mut node.value {
        Value::Map(entries) => {
            entries.retain(|(k, _)| !k.name.starts_with("x-"));
            entries.iter_mut().for_each(|(_, v)| strip_extensions(v));
        }
        Value::Seq(items) => items.iter_mut().for_each(strip_extensions),
        _ => {}
    }
}

/// Rewrites list forms that merge by key into maps: `env`/`environment`/`build.args`
/// lists of `KEY=VALUE`, and dependency lists of names.
fn normalize(root: &mut Node) {
    let Some(Value::Map(services)) = root_get_mut(root, "services").map(|s| &mut s.value) else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        let Value::Map(fields) = &mut svc.value else {
            continue;
        };
        for (k, v) in fields.iter_mut() {
            match k.name.as_str() {
                "env" | "environment" => list_to_map(v, true),
                "dependencies" | "depends_on" => list_to_map(v, false),
                "build" => {
                    if let Value::Map(b) = &mut v.value {
                        for (bk, bv) in b.iter_mut() {
                            if bk.name == "args" {
                                list_to_map(bv, true);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn root_get_mut<'a>(n: &'a mut Node, key: &str) -> Option<&'a mut Node> {
    match &mut n.value {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v),
        _ => None,
    }
}

fn list_to_map(v: &mut Node, split_eq: bool) {
    let Value::Seq(items) = &v.value else { return };
    if !items.iter().all(|i| matches!(i.value, Value::Str(_))) {
        return; // left for the decoder to report
    }
    let mut entries: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Value::Str(s) = &item.value else { continue };
        let (k, val) = if split_eq {
            match s.split_once('=') {
                Some((k, v)) => (k.to_owned(), Value::Str(v.to_owned())),
                None => (s.clone(), Value::Null),
            }
        } else {
            (s.clone(), Value::Null)
        };
        entries.retain(|(e, _)| e.name != k);
        entries.push((
            Key {
                name: k,
                pos: item.pos,
            },
            Node::new(item.pos, val),
        ));
    }
    v.value = Value::Map(entries);
}

/// Merges `over` into `base`: maps by key, lists append (dropping exact
/// duplicates of scalars), anything else is replaced.
pub(crate) fn merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            for (k, v) in o {
                if let Some(i) = b.iter().position(|(bk, _)| bk.name == k.name) {
                    let (_, old) = b.remove(i);
                    b.insert(i, (k, merge(old, v)));
                } else {
                    b.push((k, v));
                }
            }
            Node::new(base.pos, Value::Map(b))
        }
        (Value::Seq(mut b), Value::Seq(o)) => {
            for item in o {
                let dup = !matches!(item.value, Value::Map(_) | Value::Seq(_))
                    && b.iter().any(|e| e.value == item.value);
                if !dup {
                    b.push(item);
                }
            }
            Node::new(base.pos, Value::Seq(b))
        }
        (_, v) => Node::new(over.pos, v),
    }
}

/// The type a whole-value substitution takes: `8080` an integer, `true` a boolean.
fn infer_scalar(text: String) -> Value {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::Int(i.into());
    }
    match t {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if t.contains('.')
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Value::Float(f);
    }
    Value::Str(text)
}

/// A project name from a directory name (lowercased, invalid characters dropped).
/// Line and column (1-based, in characters) of the first NUL byte in `text`.
fn nul_position(text: &str) -> Option<(u32, u32)> {
    let at = text.find('\0')?;
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    Some((
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    ))
}

/// Where to report a project without services (`services:` missing, empty or
/// null): the `services` key, else the start of the configuration. `None` when
/// there are services, or `services` is something else (decoding reports that).
fn no_services(root: &Node) -> Option<Pos> {
    match root.entry("services") {
        None => Some(root.pos),
        Some((key, value)) => match &value.value {
            Value::Null => Some(key.pos),
            Value::Map(entries) if entries.is_empty() => Some(key.pos),
            _ => None,
        },
    }
}

fn dir_project_name(dir: &Path) -> ProjectName {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(harness_core::name::MAX_NAME_LEN)
        .collect();
    ProjectName::new(cleaned)
        .unwrap_or_else(|_| ProjectName::new("default").expect("`default` is a valid name"))
}

/// Parses `8080`, `8080:80`, `127.0.0.1:8080:80`, with an optional `/tcp` or `/udp`.
pub(crate) fn parse_port(s: &str) -> Result<PortMapping, String> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((spec, p)) => (
            spec,
            match p.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(format!("unknown protocol `{other}` (use tcp or udp)")),
            },
        ),
        None => (s, Protocol::Tcp),
    };
    let num = |p: &str| -> Result<u16, String> {
        if p.contains('-') {
            return Err("port ranges are not supported".to_owned());
        }
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{p}` is not a port number (1-65535)")),
            Ok(v) => Ok(v),
        }
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    match parts.as_slice() {
        [c] => Ok(PortMapping {
            host: None,
            host_ip: None,
            container: num(c)?,
            protocol: proto,
        }),
        [c, h] => Ok(PortMapping {
            host: if h.is_empty() { None } else { Some(num(h)?) },
            host_ip: None,
            container: num(c)?,
            protocol: proto,
        }),
        [c, h, ip] => {
            let host_ip =
                parse_host_ip(ip).ok_or_else(|| format!("`{ip}` is not an IP address"))?;
            Ok(PortMapping {
                host: if h.is_empty() { None } else { Some(num(h)?) },
                host_ip: Some(host_ip),
                container: num(c)?,
                protocol: proto,
            })
        }
        _ => Err("too many `:`".to_owned()),
    }
}

/// A host address of a published port: `127.0.0.1`, `::1` or `[::1]`.
fn parse_host_ip(ip: &str) -> Option<std::net::IpAddr> {
    let bare = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']'));
    bare.unwrap_or(ip).parse().ok()
}

/// The absolute, lexically cleaned form of a path.
fn absolute_clean(p: &Path) -> PathBuf {
    clean_path(&std::path::absolute(p).unwrap_or_else(|_| p.to_owned()))
}

/// Removes `.` and resolves `..` lexically (`/a/b/../c/./d` is `/a/c/d`).
fn clean_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `a.b.c.d/n` or an IPv6 CIDR.
fn valid_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_port("8080").unwrap(),
            PortMapping {
                host: None,
                host_ip: None,
                container: 8080,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(parse_port("8080:80").unwrap().host, Some(8080));
        assert_eq!(parse_port("8080:80").unwrap().host_ip, None);
        let v4 = parse_port("127.0.0.1:8081:80").unwrap();
        assert_eq!(
            (v4.host_ip, v4.host, v4.container),
            (Some([127, 0, 0, 1].into()), Some(8081), 80)
        );
        let v6 = parse_port("[::1]:8081:80").unwrap();
        assert_eq!(v6.host_ip, Some(std::net::Ipv6Addr::LOCALHOST.into()));
        assert_eq!((v6.host, v6.container), (Some(8081), 80));
        assert!(parse_port("[::1]:8081:80/udp").is_ok());
        assert!(parse_port("[nope]:8081:80").is_err());
        assert_eq!(
            parse_port("127.0.0.1:8080:80/udp").unwrap().protocol,
            Protocol::Udp
        );
        assert!(parse_port("80-90:80").is_err());
        assert!(parse_port("x:80").is_err());
        assert!(parse_port("1.2.3:80:80").is_err());
        assert!(parse_port("80/sctp").is_err());
    }

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_path(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(clean_path(Path::new("../x")), PathBuf::from("../x"));
    }

    #[test]
    fn cidrs() {
        assert!(valid_cidr("10.0.0.0/24"));
        assert!(valid_cidr("fd00::/64"));
        assert!(!valid_cidr("10.0.0.0/33"));
        assert!(!valid_cidr("10.0.0.0"));
    }

    #[test]
    fn project_names_from_dirs() {
        assert_eq!(dir_project_name(Path::new("/x/My App")).as_str(), "my-app");
        assert_eq!(dir_project_name(Path::new("/")).as_str(), "default");
        assert_eq!(dir_project_name(Path::new("/x/__y")).as_str(), "y");
    }
}
