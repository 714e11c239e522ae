//! Verbs that talk to the daemon: `up`, `down`, `start`, `stop`, `restart`, `status`, `logs`,
//! `daemon start|stop|status`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_lite::{StreamExt, future};
use harness_core::{ServiceName, ServiceStatus};
use harness_protocol::{
    Client, ClientError, ClientOptions, ErrorCode, LogItem, LogsParams, ProjectRef, ProjectStatus,
    ServicesParams, StreamItem, UpParams,
};

use crate::daemon;
use crate::error::{CliError, CliResult, Interrupt};
use crate::progress::Progress;
use crate::render;

/// How long `up` waits for a daemon it started to accept connections.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The name this client gives in the handshake.
fn client_options() -> ClientOptions {
    ClientOptions {
        client_name: format!("harness/{}", env!("CARGO_PKG_VERSION")),
        ..ClientOptions::default()
    }
}

/// True when the error means "no daemon there" rather than "a daemon answered badly".
fn is_absent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::StateDir(_)
            | ClientError::Connect { .. }
            | ClientError::Tls(_)
            | ClientError::Timeout(_)
            | ClientError::Disconnected
    )
}

/// Connects to the daemon of `state_dir`.
pub async fn connect(state_dir: &Path) -> CliResult<Client> {
    Client::connect_with(state_dir, client_options())
        .await
        .map_err(|e| CliError::DaemonUnreachable {
            state_dir: state_dir.to_path_buf(),
            reason: if is_absent(&e) {
                format!("{e} (is it running? `harness daemon start` or `harness up` starts it)")
            } else {
                e.to_string()
            },
        })
}

/// Connects to the daemon of `state_dir`; `None` when no daemon is there (as opposed to a
/// daemon that answered badly).
pub async fn connect_if_running(state_dir: &Path) -> CliResult<Option<Client>> {
    match Client::connect_with(state_dir, client_options()).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(CliError::DaemonUnreachable {
            state_dir: state_dir.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Connects to the daemon, starting it first when none answers. Returns the client and
/// whether a daemon was started.
pub async fn connect_or_start(state_dir: &Path) -> CliResult<(Client, bool)> {
    match Client::connect_with(state_dir, client_options()).await {
        Ok(c) => return Ok((c, false)),
        Err(e) if !is_absent(&e) => {
            return Err(CliError::DaemonUnreachable {
                state_dir: state_dir.to_path_buf(),
                reason: e.to_string(),
            });
        }
        Err(_) => {}
    }
    let spawned = daemon::spawn_daemon(state_dir)?;
    let mut deadline = std::time::Instant::now() + DAEMON_START_TIMEOUT;
    let mut exit_seen = false;
    let mut pause = Duration::from_millis(10);
    loop {
        match Client::connect_with(state_dir, client_options()).await {
            Ok(c) => return Ok((c, true)),
            Err(e) if std::time::Instant::now() >= deadline => {
                let why = match spawned.exit_status() {
                    Some(status) => format!("harnessd (pid {}) exited ({status})", spawned.pid),
                    None => format!(
                        "harnessd did not answer within {}s",
                        DAEMON_START_TIMEOUT.as_secs()
                    ),
                };
                return Err(CliError::DaemonStart(format!(
                    "{why}: {e}; see {}",
                    state_dir.join("harnessd.log").display()
                )));
            }
            Err(_) => {
                // A daemon that ended early (e.g. another one won the race for the state
                // dir's lock) gets a short grace for the winner to answer, not the full wait.
                if !exit_seen && spawned.exit_status().is_some() {
                    exit_seen = true;
                    deadline = deadline.min(std::time::Instant::now() + Duration::from_secs(5));
                }
                async_io::Timer::after(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Maps an error answered by the daemon to the CLI's error (and so its exit code).
pub fn remote_error(e: ClientError, state_dir: &Path) -> CliError {
    match e.remote() {
        Some(body) => match body.code {
            ErrorCode::ConfigInvalid => CliError::Config(body.message.clone()),
            ErrorCode::Timeout => CliError::Timeout(body.message.clone()),
            ErrorCode::NotFound | ErrorCode::BadRequest => CliError::Usage(body.message.clone()),
            _ => CliError::Failed(body.message.clone()),
        },
        None if is_absent(&e) => CliError::DaemonUnreachable {
            state_dir: state_dir.to_path_buf(),
            reason: e.to_string(),
        },
        None => CliError::Failed(e.to_string()),
    }
}

/// Parses service names given on the command line.
pub fn service_names(names: &[String]) -> CliResult<Vec<ServiceName>> {
    names
        .iter()
        .map(|n| {
            ServiceName::new(n.as_str())
                .map_err(|e| CliError::Usage(format!("invalid service name `{n}`: {e}")))
        })
        .collect()
}

/// Checks that every service in `wanted` is one of `known` (the services of `project`);
/// the usage error names the first that is not, and the known name it was probably meant
/// to be.
pub fn check_known<'a>(
    wanted: &[ServiceName],
    known: impl IntoIterator<Item = &'a str> + Clone,
    project: &str,
) -> CliResult {
    for w in wanted {
        if known.clone().into_iter().any(|k| k == w.as_str()) {
            continue;
        }
        let hint = crate::suggest::did_you_mean(w.as_str(), known.clone())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(CliError::Usage(format!(
            "no service `{w}` in project `{project}`{hint}"
        )));
    }
    Ok(())
}

/// [`check_known`] against the services the daemon runs for `project`. When the daemon
/// cannot say (it does not run the project), nothing is checked here: the request itself
/// reports that.
pub async fn check_known_to_daemon(
    client: &Client,
    project: &ProjectRef,
    wanted: &[ServiceName],
) -> CliResult {
    if wanted.is_empty() {
        return Ok(());
    }
    let Ok(projects) = client
        .status(ServicesParams {
            project: project.clone(),
            services: Vec::new(),
        })
        .await
    else {
        return Ok(());
    };
    match projects.as_slice() {
        [one] => check_known(
            wanted,
            one.services.iter().map(|s| s.name.as_str()),
            one.project.as_str(),
        ),
        _ => Ok(()),
    }
}

/// True when the daemon no longer has `project` (it was taken down).
pub async fn project_gone(client: &Client, project: &ProjectRef) -> bool {
    let asked = client
        .status(ServicesParams {
            project: project.clone(),
            services: Vec::new(),
        })
        .await;
    matches!(asked, Err(e) if e.remote().is_some_and(|b| b.code == ErrorCode::NotFound))
}

/// Says on stderr that `project` was taken down (`harness down`), and what that ends.
pub fn say_taken_down(project: &ProjectRef, what_ends: &str) -> CliResult {
    let name = project
        .name
        .as_ref()
        .map_or_else(|| "the project".to_string(), |n| format!("project {n}"));
    writeln!(
        anstream::stderr(),
        "{name} was taken down (`harness down`); {what_ends}"
    )?;
    Ok(())
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The line saying what a stop or restart did, dependents included: `stopped db, api, web
/// (api and web depend on db)`. `None` when the daemon did not say (an older daemon, or a
/// verb that does not cascade), or when nothing was affected.
pub fn cascade_line(verb: &str, requested: &[String], affected: &[ServiceName]) -> Option<String> {
    let done = match verb {
        "stop" => "stopped",
        "restart" => "restarted",
        _ => return None,
    };
    if affected.is_empty() {
        return None;
    }
    let all: Vec<&str> = affected.iter().map(ServiceName::as_str).collect();
    let mut line = format!("{done} {}", all.join(", "));
    let along: Vec<&str> = all
        .iter()
        .copied()
        .filter(|a| !requested.iter().any(|r| r == a))
        .collect();
    if !along.is_empty() {
        let named: Vec<&str> = requested.iter().map(String::as_str).collect();
        let verb = if along.len() == 1 {
            "depends"
        } else {
            "depend"
        };
        line += &format!(" ({} {verb} on {})", and_list(&along), and_list(&named));
    }
    Some(line)
}

/// The reference to a project sent to the daemon when it must (re)load the files.
pub fn project_with_files(project: Option<&str>, files: &[PathBuf]) -> CliResult<ProjectRef> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::Failed(format!("cannot read the current directory: {e}")))?;
    let name = project
        .map(|p| {
            harness_core::ProjectName::new(p)
                .map_err(|e| CliError::Usage(format!("invalid project name `{p}`: {e}")))
        })
        .transpose()?;
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    if crate::load::strict_env() {
        // The daemon loads with this environment: it makes unset variables errors there too.
        env.insert(harness_config::STRICT_ENV_VAR.to_owned(), "1".to_owned());
    }
    Ok(ProjectRef {
        name,
        files: files.iter().map(|f| cwd.join(f)).collect(),
        working_dir: Some(cwd),
        env,
    })
}

/// The services of one project, flattened from a `status` answer.
pub fn flatten(projects: Vec<ProjectStatus>) -> Vec<ServiceStatus> {
    projects.into_iter().flat_map(|p| p.services).collect()
}

/// Prints the status table or, with `json`, the JSON array of [`ServiceStatus`].
pub fn print_status(rows: &[ServiceStatus], json: bool) -> CliResult {
    let mut out = anstream::stdout();
    if json {
        let text = serde_json::to_string_pretty(rows)
            .map_err(|e| CliError::Failed(format!("encoding status: {e}")))?;
        writeln!(out, "{text}")?;
    } else if rows.is_empty() {
        writeln!(out, "no services")?;
    } else {
        let table = render::status_table(rows, render::now_ms(), render::stdout_colored());
        write!(out, "{table}")?;
    }
    Ok(())
}

/// Prints one log item, as a coloured `name | line` or as a JSON object.
pub fn print_log(item: &LogItem, width: usize, timestamps: bool, json: bool) -> CliResult {
    let mut out = anstream::stdout().lock();
    if json {
        let text = serde_json::to_string(item)
            .map_err(|e| CliError::Failed(format!("encoding a log line: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        let ts = timestamps.then_some(item.ts_ms);
        writeln!(
            out,
            "{}",
            render::log_line(item.service.as_str(), width, item.stream, &item.line, ts)
        )?;
    }
    Ok(())
}

/// What happened to a stream the CLI follows.
pub enum Followed {
    /// The daemon ended the stream.
    Ended,
    /// Ctrl-C, SIGTERM or SIGHUP arrived.
    Interrupted(Interrupt),
}

/// A future that resolves on SIGINT, SIGTERM or SIGHUP.
pub struct Interrupts {
    signals: Option<async_signal::Signals>,
}

impl Interrupts {
    /// Starts catching SIGINT, SIGTERM and SIGHUP (so they no longer kill the CLI outright).
    pub fn catch() -> Self {
        use async_signal::Signal;
        let signals = async_signal::Signals::new([Signal::Int, Signal::Term, Signal::Hup]).ok();
        Interrupts { signals }
    }

    /// Waits for the next one and says which it was.
    pub async fn next(&mut self) -> Interrupt {
        use async_signal::Signal;
        let Some(signals) = &mut self.signals else {
            return future::pending().await;
        };
        match signals.next().await {
            Some(Ok(Signal::Int)) => Interrupt::Int,
            Some(Ok(Signal::Term)) => Interrupt::Term,
            Some(Ok(Signal::Hup)) => Interrupt::Hup,
            // Only the three above are registered; a stream that fails never resolves, as
            // when no handler could be installed.
            _ => future::pending().await,
        }
    }
}

/// Follows a logs request, printing each line, until it ends or an interrupt arrives.
pub async fn follow_logs(
    client: &Client,
    params: LogsParams,
    width: usize,
    timestamps: bool,
    json: bool,
    interrupts: Option<&mut Interrupts>,
    state_dir: &Path,
) -> CliResult<Followed> {
    let mut stream = client
        .logs(params)
        .map_err(|e| remote_error(e, state_dir))?;
    let printing = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(StreamItem::Log(line)) => print_log(&line, width, timestamps, json)?,
                Ok(StreamItem::Event(_) | StreamItem::Other) => {}
                Err(e) => return Err(remote_error(e, state_dir)),
            }
        }
        Ok(Followed::Ended)
    };
    match interrupts {
        Some(i) => {
            future::or(printing, async {
                Ok(Followed::Interrupted(i.next().await))
            })
            .await
        }
        None => printing.await,
    }
}

/// The width of the name column for the `named` services, else for the services of the
/// configuration (`configured`), else for those the daemon runs for `project`.
pub async fn service_column_width(
    client: &Client,
    project: &ProjectRef,
    named: &[String],
    configured: Option<&[String]>,
    state_dir: &Path,
) -> CliResult<usize> {
    if !named.is_empty() {
        return Ok(name_width(named.iter().map(String::as_str)));
    }
    if let Some(names) = configured {
        return Ok(name_width(names.iter().map(String::as_str)));
    }
    let st = client
        .status(ServicesParams {
            project: project.clone(),
            services: Vec::new(),
        })
        .await
        .map_err(|e| remote_error(e, state_dir))?;
    Ok(name_width(flatten(st).iter().map(|s| s.name.as_str())))
}

/// The width of the name column for these services.
pub fn name_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names.into_iter().map(str::len).max().unwrap_or(0)
}

/// Runs an `up` request, feeding its events to the progress view; returns the final status
/// or the daemon's error.
pub async fn up_with_progress(
    client: &Client,
    params: UpParams,
    progress: &mut Progress,
    interrupts: &mut Interrupts,
    state_dir: &Path,
) -> CliResult<ProjectStatus> {
    let mut stream = client
        .stream(harness_protocol::Method::Up(params))
        .map_err(|e| remote_error(e, state_dir))?;
    let work = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(StreamItem::Event(ev)) => progress.update(ev.service.as_str(), &ev.state),
                Ok(StreamItem::Log(line)) => progress.output(line.service.as_str(), &line.line),
                Ok(StreamItem::Other) => {}
                Err(e) => return Err(remote_error(e, state_dir)),
            }
        }
        let value = stream.result().cloned().unwrap_or(serde_json::Value::Null);
        serde_json::from_value::<ProjectStatus>(value)
            .map_err(|e| CliError::Failed(format!("unexpected answer to up: {e}")))
    };
    future::or(work, async {
        Err(CliError::Interrupted(interrupts.next().await))
    })
    .await
}

/// Records the final states of an `up` answer in the progress view, then a one-line
/// summary per service that is not ready.
pub fn not_ready(status: &ProjectStatus, wanted: &[String]) -> Vec<(String, String)> {
    let wanted: std::collections::BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    status
        .services
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(s.name.as_str()))
        .filter(|s| {
            !crate::progress::is_ready(&s.state)
                && !matches!(s.state, harness_core::ServiceState::Running)
        })
        .map(|s| (s.name.to_string(), s.state.to_string()))
        .collect()
}

/// Services grouped by state label, for a one-line summary: `3 healthy, 1 completed`.
pub fn summary(rows: &[ServiceStatus]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.state.label()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs services params through the daemon for `start`/`stop`/`restart`/`down`.
pub async fn lifecycle(
    client: &Client,
    verb: &str,
    params: ServicesParams,
    state_dir: &Path,
) -> CliResult<ProjectStatus> {
    let r = match verb {
        "start" => client.start(params).await,
        "stop" => client.stop(params).await,
        "restart" => client.restart(params).await,
        _ => client.down(params).await,
    };
    r.map_err(|e| remote_error(e, state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness_core::{Health, ServiceKind, ServiceState};

    fn row(name: &str, state: ServiceState) -> ServiceStatus {
        ServiceStatus {
            name: ServiceName::new(name).unwrap(),
            kind: ServiceKind::Process,
            host: "local".into(),
            state,
            health: Health::Unknown,
            pid: None,
            container_id: None,
            restarts: 0,
            exit_code: None,
            started_at_ms: None,
            last_exit: None,
            version: None,
        }
    }

    #[test]
    fn summary_counts_states() {
        let rows = [
            row("a", ServiceState::Healthy),
            row("b", ServiceState::Healthy),
            row("c", ServiceState::Completed),
        ];
        assert_eq!(summary(&rows), "1 completed, 2 healthy");
    }

    #[test]
    fn not_ready_names_failed_services() {
        let status = ProjectStatus {
            project: harness_core::ProjectName::new("p").unwrap(),
            services: vec![
                row("a", ServiceState::Healthy),
                row(
                    "b",
                    ServiceState::Failed {
                        reason: "exit code 1".into(),
                    },
                ),
            ],
            affected: Vec::new(),
            warnings: Vec::new(),
        };
        assert_eq!(
            not_ready(&status, &[]),
            vec![("b".to_string(), "failed: exit code 1".to_string())]
        );
        assert!(not_ready(&status, &["a".into()]).is_empty());
    }

    #[test]
    fn cascades_name_every_service_and_why() {
        let names = |v: &[&str]| -> Vec<ServiceName> {
            v.iter().map(|n| ServiceName::new(*n).unwrap()).collect()
        };
        assert_eq!(
            cascade_line("stop", &["db".into()], &names(&["db", "api", "web"])).as_deref(),
            Some("stopped db, api, web (api and web depend on db)")
        );
        assert_eq!(
            cascade_line("restart", &["api".into()], &names(&["api", "web"])).as_deref(),
            Some("restarted api, web (web depends on api)")
        );
        assert_eq!(
            cascade_line("stop", &["web".into()], &names(&["web"])).as_deref(),
            Some("stopped web")
        );
        assert_eq!(cascade_line("stop", &["db".into()], &[]), None);
        assert_eq!(cascade_line("start", &["db".into()], &names(&["db"])), None);
    }

    #[test]
    fn unknown_services_get_a_suggestion() {
        let known = ["api", "db", "web"];
        let err = check_known(&[ServiceName::new("apii").unwrap()], known, "p").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no service `apii` in project `p`; did you mean `api`?"
        );
        let err = check_known(&[ServiceName::new("cache").unwrap()], known, "p").unwrap_err();
        assert_eq!(err.to_string(), "no service `cache` in project `p`");
        assert!(check_known(&[ServiceName::new("db").unwrap()], known, "p").is_ok());
    }

    #[test]
    fn bad_service_names_are_usage_errors() {
        assert!(service_names(&["ok-name".into()]).is_ok());
        assert!(matches!(
            service_names(&["bad name!".into()]),
            Err(CliError::Usage(_))
        ));
    }
}
