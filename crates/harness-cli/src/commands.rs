//! Every verb, wired: parse → load or connect → act → print.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::CommandFactory;
use harness_core::{ServiceState, parse_duration};
use harness_protocol::{LogsParams, ProjectRef, ServicesParams, UpParams};

use crate::cli::{
    Cli, Command, CompletionsArgs, DaemonAction, LogsArgs, ServicesArgs, StatusArgs, UpArgs,
};
use crate::error::{CliError, CliResult, Interrupt};
use crate::progress::Progress;
use crate::remote::{self, Followed, Interrupts};
use crate::{deploy, events, exec, load, render};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CliResult {
    let files = cli.files();
    let project = cli.global.project.clone();
    let state_dir = cli.global.state_dir.clone();
    load::set_strict_env(cli.global.strict_env);
    let ctx = Ctx {
        files,
        project,
        state_dir,
    };
    match cli.command {
        Command::Validate(a) => load::validate(&ctx.files, ctx.project.as_deref(), a.json),
        Command::Config(a) => load::config(&ctx.files, ctx.project.as_deref(), &a),
        Command::Graph(a) => load::graph(&ctx.files, ctx.project.as_deref(), &a),
        Command::Env(a) => smol::block_on(env(&ctx, &a.service, a.json)),
        Command::Completions(a) => completions(&a),
        Command::Up(a) => smol::block_on(up(&ctx, a)),
        Command::Down(_) => smol::block_on(lifecycle(&ctx, "down", &[], false)),
        Command::Watch(_) => smol::block_on(watch_only(&ctx)),
        Command::Start(ServicesArgs { services, json, .. }) => {
            smol::block_on(lifecycle(&ctx, "start", &services, json))
        }
        Command::Stop(ServicesArgs { services, json, .. }) => {
            smol::block_on(lifecycle(&ctx, "stop", &services, json))
        }
        Command::Restart(ServicesArgs { services, json, .. }) => {
            smol::block_on(lifecycle(&ctx, "restart", &services, json))
        }
        Command::Status(a) => smol::block_on(status(&ctx, a)),
        Command::Logs(a) => smol::block_on(logs(&ctx, a)),
        Command::Exec(a) => smol::block_on(async {
            let state_dir = ctx.state_dir()?;
            let (project, _) = ctx.project_ref()?;
            exec::run(
                exec::Target {
                    state_dir: &state_dir,
                    project,
                },
                a,
            )
            .await
        }),
        Command::Events(a) => smol::block_on(async {
            let state_dir = ctx.state_dir()?;
            let (project, names) = ctx.project_ref()?;
            events::follow(&state_dir, project, names, &a.services, a.json).await
        }),
        Command::Ls(a) => smol::block_on(async { events::list(&ctx.state_dir()?, a.json).await }),
        Command::Deploy(a) => smol::block_on(deploy::run(
            &ctx.files,
            ctx.project.as_deref(),
            ctx.state_dir(),
            deploy::Action::Deploy,
            &a.services,
            a.json,
        )),
        Command::Rollback(a) => smol::block_on(deploy::run(
            &ctx.files,
            ctx.project.as_deref(),
            ctx.state_dir(),
            deploy::Action::Rollback,
            &a.services,
            a.json,
        )),
        Command::Daemon(a) => smol::block_on(daemon(&ctx, a.action)),
    }
}

/// What every verb needs from the global flags.
struct Ctx {
    files: Vec<PathBuf>,
    project: Option<String>,
    state_dir: Option<PathBuf>,
}

impl Ctx {
    fn state_dir(&self) -> CliResult<PathBuf> {
        harness_protocol::resolve_state_dir(self.state_dir.as_deref())
            .map_err(|e| CliError::Usage(e.to_string()))
    }

    /// The project a daemon request is about, without reloading it: `-p`, else the name
    /// from the configuration file when there is one, else the daemon's only project.
    fn project_ref(&self) -> CliResult<(ProjectRef, Option<Vec<String>>)> {
        if let Some(p) = &self.project {
            let name = harness_core::ProjectName::new(p.as_str())
                .map_err(|e| CliError::Usage(format!("invalid project name `{p}`: {e}")))?;
            return Ok((ProjectRef::named(name), None));
        }
        let files = load::effective_files(&self.files);
        let explicit = !self.files.is_empty();
        if explicit || files.iter().all(|f| f.exists()) {
            let project = load::load_project(&files, None)?;
            let names = project.services.keys().map(|s| s.to_string()).collect();
            return Ok((ProjectRef::named(project.name.clone()), Some(names)));
        }
        Ok((ProjectRef::default(), None))
    }
}

fn completions(a: &CompletionsArgs) -> CliResult {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    clap_complete::generate(a.shell, &mut cmd, "harness", &mut out);
    out.flush()?;
    Ok(())
}

async fn env(ctx: &Ctx, service: &str, json: bool) -> CliResult {
    let files = load::effective_files(&ctx.files);
    let project = load::load_project(&files, ctx.project.as_deref())?;
    // The daemon knows where services really run: ask it when it runs this project.
    let from_daemon = match ctx.state_dir() {
        Ok(dir) => match harness_protocol::Client::connect(&dir).await {
            Ok(client) => client
                .env(harness_protocol::EnvParams {
                    project: ProjectRef::named(project.name.clone()),
                    service: harness_core::ServiceName::new(service).map_err(|e| {
                        CliError::Usage(format!("invalid service `{service}`: {e}"))
                    })?,
                })
                .await
                .ok()
                .map(|r| r.env),
            Err(_) => None,
        },
        Err(_) => None,
    };
    // The daemon's answer has the real endpoints of what runs; without a daemon
    // running the project, every service is placed where its configuration puts it.
    let env = match from_daemon {
        Some(env) => env,
        None => load::service_env(&project, service)?,
    };
    let mut out = anstream::stdout();
    if json {
        let text = serde_json::to_string_pretty(&env)
            .map_err(|e| CliError::Failed(format!("encoding env: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        for (k, v) in env {
            writeln!(out, "{k}={v}")?;
        }
    }
    Ok(())
}

async fn up(ctx: &Ctx, a: UpArgs) -> CliResult {
    let timeout = parse_duration(&a.timeout)
        .map_err(|e| CliError::Usage(format!("--timeout {}: {e}", a.timeout)))?;
    // Load locally first: configuration errors are reported here, with their locations,
    // before any daemon is involved.
    let files = load::effective_files(&ctx.files);
    let project = load::load_project(&files, ctx.project.as_deref())?;
    let requested = remote::service_names(&a.services)?;
    remote::check_known(
        &requested,
        project.services.keys().map(|s| s.as_str()),
        project.name.as_str(),
    )?;
    let involved: Vec<String> = if requested.is_empty() {
        project
            .graph()
            .start_order()
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        let r: Vec<&str> = requested.iter().map(|s| s.as_str()).collect();
        project
            .graph()
            .with_dependencies(&r)
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let state_dir = ctx.state_dir()?;
    let (client, started) = remote::connect_or_start(&state_dir).await?;
    let mut err = anstream::stderr();
    if started {
        writeln!(
            err,
            "started harnessd (pid {}, state dir {})",
            client.welcome().pid,
            state_dir.display()
        )?;
    }
    let up_started_ms = render::now_ms();
    let began = Instant::now();
    let mut interrupts = Interrupts::catch();
    let mut progress = Progress::new(
        involved.iter().map(|s| {
            let checked = project
                .service(s)
                .is_some_and(|spec| spec.has_health_check());
            (s.as_str(), checked)
        }),
        render::stdout_is_tty() && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        a.quiet,
    );
    let params = UpParams {
        project: remote::project_with_files(ctx.project.as_deref(), &files)?,
        services: requested.clone(),
        wait: a.wait || !a.detach,
        timeout_ms: Some(timeout.as_millis() as u64),
    };
    let project_ref = ProjectRef::named(project.name.clone());
    let outcome =
        remote::up_with_progress(&client, params, &mut progress, &mut interrupts, &state_dir).await;
    let status = match outcome {
        Ok(status) => {
            show_final(&mut progress, &status, &involved);
            status
        }
        Err(CliError::Interrupted(signal)) => {
            progress.finish();
            if a.detach {
                // Detached means the services are not this command's to stop: it only
                // stops waiting for them.
                writeln!(
                    err,
                    "\nstopped waiting ({signal}); the services keep starting: `harness status` shows them, `harness down` stops them"
                )?;
                return Err(CliError::Said(signal.exit()));
            }
            return interrupted_stop(&client, project_ref, &state_dir, signal).await;
        }
        Err(e) => {
            // The answer may overtake the last state changes (the failure that ended the
            // waiting): draw the states as they are now.
            if let Ok(now) = client
                .status(ServicesParams {
                    project: project_ref.clone(),
                    services: Vec::new(),
                })
                .await
                && let [status] = now.as_slice()
            {
                show_final(&mut progress, status, &involved);
            }
            progress.finish();
            if a.detach || a.wait {
                return Err(e);
            }
            // In the foreground, show why: report, then follow the logs anyway.
            writeln!(
                err,
                "{}error:{} {e}",
                anstyle::AnsiColor::Red.render_fg(),
                anstyle::Reset.render()
            )?;
            return foreground_logs(
                &client,
                project_ref,
                &involved,
                up_started_ms,
                &mut interrupts,
                &state_dir,
                Some(e),
            )
            .await;
        }
    };
    let wanted: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
    let failed = remote::not_ready(&status, &wanted);
    if a.wait || !a.detach {
        match failed.first() {
            Some((name, state)) if a.wait => {
                return Err(CliError::Failed(format!(
                    "service `{name}` is not ready: {state}"
                )));
            }
            Some(_) => {
                // In the foreground, say what is not ready, then show the logs anyway.
                for (name, state) in &failed {
                    writeln!(err, "warning: service `{name}` is not ready: {state}")?;
                }
            }
            None => writeln!(
                err,
                "project {} is up in {} ({})",
                status.project,
                render::human_duration(began.elapsed()),
                remote::summary(&status.services)
            )?,
        }
    } else {
        writeln!(
            err,
            "project {} is starting ({}); `harness status` shows progress",
            status.project,
            remote::summary(&status.services)
        )?;
    }
    if a.detach {
        if a.watch {
            return watching(
                &client,
                &ctx.files,
                ctx.project.as_deref(),
                project,
                &state_dir,
                &mut interrupts,
            )
            .await;
        }
        return Ok(());
    }
    let logs = foreground_logs(
        &client,
        project_ref,
        &involved,
        up_started_ms,
        &mut interrupts,
        &state_dir,
        None,
    );
    if !a.watch {
        return logs.await;
    }
    // Reload lines go between the log lines; Ctrl-C ends both (and stops the services).
    futures_lite::future::or(logs, async {
        crate::watch::watch(&client, &files, ctx.project.as_deref(), project, &state_dir).await
    })
    .await
}

/// Watches in the foreground until Ctrl-C, which stops watching only: the services keep running.
async fn watching(
    client: &harness_protocol::Client,
    files: &[std::path::PathBuf],
    name: Option<&str>,
    project: harness_config::Project,
    state_dir: &std::path::Path,
    interrupts: &mut Interrupts,
) -> CliResult {
    let files = load::effective_files(files);
    writeln!(
        anstream::stdout(),
        "watching project {} for changes (Ctrl-C stops watching; the services keep running)",
        project.name
    )?;
    futures_lite::future::or(
        crate::watch::watch(client, &files, name, project, state_dir),
        async {
            interrupts.next().await;
            Ok(())
        },
    )
    .await
}

/// `harness watch`: a project that is up gets the saved changes of its configuration.
async fn watch_only(ctx: &Ctx) -> CliResult {
    let files = load::effective_files(&ctx.files);
    let project = load::load_project(&files, ctx.project.as_deref())?;
    let state_dir = ctx.state_dir()?;
    let client = remote::connect(&state_dir).await?;
    let mut interrupts = Interrupts::catch();
    // What is saved now may differ from what runs: apply it first.
    crate::watch::apply_saved(&client, ctx.project.as_deref(), &files, &state_dir).await?;
    watching(
        &client,
        &files,
        ctx.project.as_deref(),
        project,
        &state_dir,
        &mut interrupts,
    )
    .await
}

/// Draws the states of `status` for the `involved` services, and ends the progress view.
fn show_final(
    progress: &mut Progress,
    status: &harness_protocol::ProjectStatus,
    involved: &[String],
) {
    for s in &status.services {
        if involved.iter().any(|n| n == s.name.as_str()) {
            progress.update(s.name.as_str(), &s.state);
        }
    }
    progress.finish();
}

/// `up` in the foreground: follow the logs from the start of `up` until Ctrl-C, then stop
/// the project's services.
async fn foreground_logs(
    client: &harness_protocol::Client,
    project: ProjectRef,
    services: &[String],
    since_ms: u64,
    interrupts: &mut Interrupts,
    state_dir: &std::path::Path,
    failure: Option<CliError>,
) -> CliResult {
    let width = remote::name_width(services.iter().map(String::as_str));
    let params = LogsParams {
        project: project.clone(),
        services: Vec::new(),
        follow: true,
        tail: None,
        since_ms: Some(since_ms),
    };
    let followed = remote::follow_logs(
        client,
        params,
        width,
        false,
        false,
        Some(interrupts),
        state_dir,
    )
    .await;
    match followed {
        Ok(Followed::Interrupted(signal)) => {
            interrupted_stop(client, project, state_dir, signal).await
        }
        // The daemon ends the logs of a project taken down (`harness down` elsewhere).
        Ok(Followed::Ended) | Err(_) if remote::project_gone(client, &project).await => {
            remote::say_taken_down(&project, "nothing left to follow")
        }
        Ok(Followed::Ended) => failure.map_or(Ok(()), Err),
        Err(e) => Err(e),
    }
}

/// Attached `up` was interrupted: stop the project's services (a second signal leaves them
/// running), say what happened, and end with the signal's exit code.
async fn interrupted_stop(
    client: &harness_protocol::Client,
    project: ProjectRef,
    state_dir: &std::path::Path,
    signal: Interrupt,
) -> CliResult {
    let mut err = anstream::stderr();
    writeln!(
        err,
        "\nstopping the project's services (Ctrl-C again to leave them)"
    )?;
    let mut again = Interrupts::catch();
    let stop = remote::lifecycle(
        client,
        "stop",
        ServicesParams {
            project,
            services: Vec::new(),
        },
        state_dir,
    );
    let res = futures_lite::future::or(async { Some(stop.await) }, async {
        again.next().await;
        None
    })
    .await;
    match res {
        Some(Ok(status)) => {
            let stopped = status
                .services
                .iter()
                .filter(|s| !s.state.is_alive())
                .count();
            let noun = if stopped == 1 { "service" } else { "services" };
            writeln!(err, "stopped {stopped} {noun}")?;
        }
        Some(Err(e)) => writeln!(err, "stopping failed: {e}")?,
        None => writeln!(err, "left running")?,
    }
    Err(CliError::Said(signal.exit()))
}

async fn lifecycle(ctx: &Ctx, verb: &str, services: &[String], json: bool) -> CliResult {
    let state_dir = ctx.state_dir()?;
    let client = if verb == "start" {
        remote::connect_or_start(&state_dir).await?.0
    } else {
        remote::connect(&state_dir).await?
    };
    let (project, _) = ctx.project_ref()?;
    let names = remote::service_names(services)?;
    remote::check_known_to_daemon(&client, &project, &names).await?;
    let params = ServicesParams {
        project,
        services: names,
    };
    let status = remote::lifecycle(&client, verb, params, &state_dir).await?;
    let mut err = anstream::stderr();
    let failed: Vec<_> = status
        .services
        .iter()
        .filter(|s| matches!(s.state, ServiceState::Failed { .. }))
        .filter(|s| services.is_empty() || services.iter().any(|n| n == s.name.as_str()))
        .collect();
    if json {
        let text = serde_json::to_string_pretty(&status)
            .map_err(|e| CliError::Failed(format!("encoding the answer: {e}")))?;
        writeln!(anstream::stdout(), "{text}")?;
    }
    match remote::cascade_line(verb, services, &status.affected) {
        Some(line) => writeln!(err, "{line}")?,
        None => writeln!(
            err,
            "{verb}: project {} ({})",
            status.project,
            remote::summary(&status.services)
        )?,
    }
    if let Some(f) = failed.first()
        && verb != "stop"
        && verb != "down"
    {
        return Err(CliError::Failed(format!(
            "service `{}` {}",
            f.name, f.state
        )));
    }
    Ok(())
}

async fn status(ctx: &Ctx, a: StatusArgs) -> CliResult {
    let state_dir = ctx.state_dir()?;
    let client = remote::connect(&state_dir).await?;
    let (project, _) = ctx.project_ref()?;
    let named = project.name.clone();
    let projects = match client
        .status(ServicesParams {
            project,
            services: remote::service_names(&a.services)?,
        })
        .await
    {
        Ok(p) => p,
        // A project the daemon does not run (yet): nothing runs, which is an answer.
        Err(e)
            if named.is_some()
                && a.services.is_empty()
                && e.remote()
                    .is_some_and(|b| b.code == harness_protocol::ErrorCode::NotFound) =>
        {
            Vec::new()
        }
        Err(e) => return Err(remote::remote_error(e, &state_dir)),
    };
    // What the daemon says about its own condition (e.g. it cannot save its
    // state): on stderr, so the table or JSON on stdout stays as it is.
    let mut warnings: Vec<&String> = projects.iter().flat_map(|p| &p.warnings).collect();
    warnings.dedup();
    let mut err = anstream::stderr();
    for w in warnings {
        writeln!(err, "warning: {w}")?;
    }
    remote::print_status(&remote::flatten(projects), a.json)
}

async fn logs(ctx: &Ctx, a: LogsArgs) -> CliResult {
    let state_dir = ctx.state_dir()?;
    let client = remote::connect(&state_dir).await?;
    let (project, names) = ctx.project_ref()?;
    remote::check_known_to_daemon(&client, &project, &remote::service_names(&a.services)?).await?;
    let since_ms = a
        .since
        .as_deref()
        .map(|s| {
            parse_duration(s)
                .map(|d| render::now_ms().saturating_sub(d.as_millis() as u64))
                .map_err(|e| CliError::Usage(format!("--since {s}: {e}")))
        })
        .transpose()?;
    let width =
        remote::service_column_width(&client, &project, &a.services, names.as_deref(), &state_dir)
            .await?;
    let params = LogsParams {
        project,
        services: remote::service_names(&a.services)?,
        follow: a.follow,
        tail: a.tail,
        since_ms,
    };
    let mut interrupts = Interrupts::catch();
    match remote::follow_logs(
        &client,
        params,
        width,
        a.timestamps,
        a.json,
        Some(&mut interrupts),
        &state_dir,
    )
    .await?
    {
        // Ctrl-C while following is how `logs -f` ends: not an error.
        Followed::Interrupted(_) | Followed::Ended => Ok(()),
    }
}

async fn daemon(ctx: &Ctx, action: DaemonAction) -> CliResult {
    let state_dir = ctx.state_dir()?;
    let mut out = anstream::stdout();
    match action {
        DaemonAction::Start => {
            let (client, started) = remote::connect_or_start(&state_dir).await?;
            let w = client.welcome();
            writeln!(
                out,
                "harnessd {} (pid {}) {} (state dir {})",
                w.daemon_version,
                w.pid,
                if started {
                    "started"
                } else {
                    "already running"
                },
                state_dir.display()
            )?;
        }
        DaemonAction::Stop => {
            let client = match remote::connect(&state_dir).await {
                Ok(c) => c,
                Err(CliError::DaemonUnreachable { .. }) => {
                    writeln!(
                        out,
                        "harnessd is not running (state dir {})",
                        state_dir.display()
                    )?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let pid = client.welcome().pid;
            client
                .daemon_stop()
                .await
                .map_err(|e| remote::remote_error(e, &state_dir))?;
            // Wait until it has really exited (its pid is gone), so a following
            // `daemon start` does not race with it.
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            while crate::daemon::pid_alive(pid) && Instant::now() < deadline {
                async_io::Timer::after(std::time::Duration::from_millis(20)).await;
            }
            if crate::daemon::pid_alive(pid) {
                return Err(CliError::Failed(format!(
                    "harnessd (pid {pid}) did not exit within 30s"
                )));
            }
            writeln!(out, "harnessd (pid {pid}) stopped; services keep running")?;
        }
        DaemonAction::Status { json } => {
            let client = remote::connect(&state_dir).await?;
            let info = client
                .daemon_status()
                .await
                .map_err(|e| remote::remote_error(e, &state_dir))?;
            if json {
                let text = serde_json::to_string_pretty(&info)
                    .map_err(|e| CliError::Failed(format!("encoding: {e}")))?;
                writeln!(out, "{text}")?;
            } else {
                let up = render::human_duration(std::time::Duration::from_millis(
                    render::now_ms().saturating_sub(info.started_at_ms),
                ));
                let projects: Vec<String> = info.projects.iter().map(|p| p.to_string()).collect();
                writeln!(out, "harnessd {} running", info.version)?;
                writeln!(out, "  pid:        {}", info.pid)?;
                writeln!(out, "  address:    {}", info.address)?;
                writeln!(out, "  state dir:  {}", info.state_dir.display())?;
                writeln!(out, "  uptime:     {up}")?;
                writeln!(out, "  protocol:   {}", info.protocol)?;
                writeln!(
                    out,
                    "  projects:   {}",
                    if projects.is_empty() {
                        "-".to_string()
                    } else {
                        projects.join(", ")
                    }
                )?;
                writeln!(out, "  clients:    {}", info.connections)?;
                if let Some(stopping) = &info.stopping {
                    writeln!(out, "  stopping:   {stopping}")?;
                }
                for w in &info.warnings {
                    writeln!(out, "  warning:    {w}")?;
                }
                if let Some(m) = info.metrics_address {
                    writeln!(out, "  metrics:    http://{m}/metrics")?;
                }
            }
        }
    }
    Ok(())
}
