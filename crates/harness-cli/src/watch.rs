//! `harness up --watch` and `harness watch` (ADR 025): the configuration files
//! (`services.yaml`, overrides, `env_file`s, `.env`) and each service's `watch:`
//! paths are watched while the command runs. A saved configuration is loaded
//! here first: an invalid one is shown as `harness validate` shows it and changes
//! nothing; a valid one is sent to the daemon, which reconciles (only services
//! whose configuration changed restart). A change under a `watch:` path restarts
//! its service. One line per reload says what happened.
//!
//! Events come from `notify` (inotify, no polling) through its debouncer; the
//! directories holding the files are watched, since editors save by writing a
//! new file and renaming it over the old one. Saves close together are one
//! reload: events are gathered until none came for [`QUIET`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use harness_config::watch::RuleMatcher;
use harness_config::{Project, ProjectChanges};
use harness_core::ServiceName;
use harness_protocol::{Client, ServicesParams, UpParams};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use crate::error::{CliError, CliResult};
use crate::{load, remote};

/// How long the debouncer waits for a file's events to settle.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Events are gathered into one reload until none came for this long.
pub const QUIET: Duration = Duration::from_millis(700);

/// What is watched for one configuration.
struct Watched {
    /// The configuration files, `env_file`s and `.env` (absolute).
    config: BTreeSet<PathBuf>,
    /// The directories holding them (watched, not recursively).
    dirs: BTreeSet<PathBuf>,
    /// Each service's `watch:` rules.
    rules: Vec<(ServiceName, RuleMatcher)>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Watched {
    fn of(files: &[PathBuf], project: &Project) -> Watched {
        let mut config: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
        config.extend(project.files.iter().map(|f| absolute(f)));
        let dirs_of_files: Vec<PathBuf> = config
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        // Overrides and `.env` next to the files count even before they exist.
        for dir in &dirs_of_files {
            config.insert(dir.join(".env"));
            for name in harness_config::DEFAULT_FILES {
                config.insert(dir.join(name));
                if let Some(stem) = name.rsplit_once('.') {
                    config.insert(dir.join(format!("{}.override.{}", stem.0, stem.1)));
                }
            }
        }
        let mut rules = Vec::new();
        for (name, spec) in &project.services {
            config.extend(spec.env_file.iter().map(|e| absolute(&e.path)));
            for r in &spec.watch {
                rules.push((name.clone(), RuleMatcher::new(r)));
            }
        }
        let dirs = config
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        Watched {
            config,
            dirs,
            rules,
        }
    }
}

/// What a file is now: its modification time and length, `None` when it is gone.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Keeps the changes that are real: events also come when a file is only
/// read (the daemon reading an `env_file`), so a path counts when what it is
/// now differs from what it was when last seen (or, first seen, when it was
/// modified or removed since watching began).
struct Stamps {
    since: SystemTime,
    seen: BTreeMap<PathBuf, Stamp>,
}

impl Stamps {
    fn new(config: &BTreeSet<PathBuf>) -> Stamps {
        Stamps {
            since: SystemTime::now(),
            seen: config.iter().map(|p| (p.clone(), stamp(p))).collect(),
        }
    }

    fn changed(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        match self.seen.insert(path.to_path_buf(), now) {
            Some(before) => before != now,
            None => now.is_none_or(|(modified, _)| modified >= self.since),
        }
    }
}

/// A running file watcher: changed paths, debounced.
struct FileWatch {
    _debouncer: Debouncer<RecommendedWatcher>,
    changes: smol::channel::Receiver<Vec<PathBuf>>,
}

impl FileWatch {
    fn start(w: &Watched) -> CliResult<FileWatch> {
        let (tx, changes) = smol::channel::unbounded();
        let mut debouncer = new_debouncer(DEBOUNCE, move |res: DebounceEventResult| {
            // notify calls this on its own thread; the loop below reads the channel.
            if let Ok(events) = res {
                let _ = tx.send_blocking(events.into_iter().map(|e| e.path).collect());
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot watch files: {e}")))?;
        for dir in &w.dirs {
            // A directory that does not exist (yet) is not watched.
            if dir.is_dir() {
                debouncer
                    .watcher()
                    .watch(dir, RecursiveMode::NonRecursive)
                    .map_err(|e| {
                        CliError::Failed(format!("cannot watch {}: {e}", dir.display()))
                    })?;
            }
        }
        for (service, m) in &w.rules {
            let path = &m.rule().path;
            if path.exists() {
                debouncer
                    .watcher()
                    .watch(path, RecursiveMode::Recursive)
                    .map_err(|e| {
                        CliError::Failed(format!(
                            "cannot watch {} (service {service}): {e}",
                            path.display()
                        ))
                    })?;
            }
        }
        Ok(FileWatch {
            _debouncer: debouncer,
            changes,
        })
    }

    /// The next changes: every path that changed until none did for [`QUIET`].
    async fn next(&self) -> CliResult<BTreeSet<PathBuf>> {
        let first = self
            .changes
            .recv()
            .await
            .map_err(|_| CliError::Failed("the file watcher ended".into()))?;
        let mut all: BTreeSet<PathBuf> = first.into_iter().collect();
        loop {
            let more = futures_lite::future::or(async { self.changes.recv().await.ok() }, async {
                async_io::Timer::after(QUIET).await;
                None
            })
            .await;
            match more {
                Some(paths) => all.extend(paths),
                None => return Ok(all),
            }
        }
    }
}

fn names(v: &[ServiceName]) -> String {
    v.iter()
        .map(ServiceName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a changed path is named in a reload line: its file name, or its path
/// below the project directory.
fn shown(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Hands the daemon the configuration saved in `files` (an `up` that does
/// not wait): it reconciles what runs with it.
pub async fn apply_saved(
    client: &Client,
    name: Option<&str>,
    files: &[PathBuf],
    state_dir: &Path,
) -> CliResult {
    let params = UpParams {
        project: remote::project_with_files(name, files)?,
        services: Vec::new(),
        wait: false,
        timeout_ms: None,
    };
    client
        .up(params)
        .await
        .map_err(|e| remote::remote_error(e, state_dir))?;
    Ok(())
}

/// Watches until an error (the caller ends it on Ctrl-C): reloads the project
/// of `files` (loaded as `project`) on each saved change and restarts services
/// whose `watch:` paths changed, printing one line per reload.
pub async fn watch(
    client: &Client,
    files: &[PathBuf],
    name: Option<&str>,
    mut project: Project,
    state_dir: &Path,
) -> CliResult {
    let base = std::env::current_dir().unwrap_or_default();
    let mut watched = Watched::of(files, &project);
    let mut fw = FileWatch::start(&watched)?;
    let mut stamps = Stamps::new(&watched.config);
    loop {
        let mut changed = fw.next().await?;
        changed.retain(|p| stamps.changed(p));
        let config: Vec<String> = changed
            .iter()
            .filter(|p| watched.config.contains(*p))
            .map(|p| shown(p, &base))
            .collect();
        let mut restarted: BTreeSet<ServiceName> = BTreeSet::new();
        if !config.is_empty() {
            let what = config.join(", ");
            match load::load_project(files, name) {
                Err(e) => say(&format!("{what} changed: invalid, nothing changed\n{e}"))?,
                Ok(next) => {
                    let changes: ProjectChanges = project.changes(&next);
                    if !changes.is_empty() {
                        apply_saved(client, name, files, state_dir).await?;
                    }
                    say(&format!("{what} changed: {}", changes.summary()))?;
                    restarted.extend(changes.to_restart());
                    restarted.extend(changes.added.iter().cloned());
                    project = next;
                    watched = Watched::of(files, &project);
                    fw = FileWatch::start(&watched)?;
                    for p in &watched.config {
                        stamps.seen.entry(p.clone()).or_insert_with(|| stamp(p));
                    }
                }
            }
        }
        let mut by_rule: BTreeMap<ServiceName, String> = BTreeMap::new();
        for path in &changed {
            for (service, m) in &watched.rules {
                if !restarted.contains(service) && m.matches(path) {
                    by_rule
                        .entry(service.clone())
                        .or_insert_with(|| shown(path, &base));
                }
            }
        }
        if !by_rule.is_empty() {
            let services: Vec<ServiceName> = by_rule.keys().cloned().collect();
            let what: BTreeSet<&String> = by_rule.values().collect();
            let what: Vec<&str> = what.into_iter().map(String::as_str).collect();
            remote::lifecycle(
                client,
                "restart",
                ServicesParams {
                    project: harness_protocol::ProjectRef::named(project.name.clone()),
                    services: services.clone(),
                },
                state_dir,
            )
            .await?;
            say(&format!(
                "{} changed: restarting {}",
                what.join(", "),
                names(&services)
            ))?;
        }
    }
}

fn say(line: &str) -> CliResult {
    let mut out = anstream::stdout();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
