//! `harness events` and `harness ls`: what happens to a project's services, as it happens,
//! and what projects the daemon runs.

use std::io::Write;
use std::path::Path;

use futures_lite::{StreamExt, future};
use harness_protocol::{EventItem, ProjectRef, ServicesParams, StreamItem};

use crate::error::{CliError, CliResult};
use crate::remote::{self, Interrupts};
use crate::render;

/// Follows the events of `project` (only `services`, when named) until Ctrl-C or until the
/// project is taken down.
pub async fn follow(
    state_dir: &Path,
    project: ProjectRef,
    names: Option<Vec<String>>,
    services: &[String],
    json: bool,
) -> CliResult {
    let client = remote::connect(state_dir).await?;
    let wanted = remote::service_names(services)?;
    remote::check_known_to_daemon(&client, &project, &wanted).await?;
    let width =
        remote::service_column_width(&client, &project, services, names.as_deref(), state_dir)
            .await?;
    let mut stream = client
        .events(ServicesParams {
            project: project.clone(),
            services: wanted,
        })
        .map_err(|e| remote::remote_error(e, state_dir))?;
    let mut interrupts = Interrupts::catch();
    let printing = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(StreamItem::Event(ev)) => print(&ev, width, json)?,
                Ok(_) => {}
                Err(e) => return Err(remote::remote_error(e, state_dir)),
            }
        }
        Ok(true)
    };
    // Ctrl-C is how following ends: not an error.
    let ended = future::or(printing, async {
        interrupts.next().await;
        Ok(false)
    })
    .await;
    match ended {
        Ok(false) => Ok(()),
        Ok(true) | Err(_) if remote::project_gone(&client, &project).await => {
            remote::say_taken_down(&project, "no more events")
        }
        Ok(true) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Prints one event: a human line, or a JSON object.
fn print(ev: &EventItem, width: usize, json: bool) -> CliResult {
    let mut out = anstream::stdout().lock();
    if json {
        let text = serde_json::to_string(ev)
            .map_err(|e| CliError::Failed(format!("encoding an event: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        writeln!(out, "{}", render::event_line(ev, width))?;
    }
    Ok(())
}

/// Lists the projects the daemon runs.
pub async fn list(state_dir: &Path, json: bool) -> CliResult {
    let Some(client) = remote::connect_if_running(state_dir).await? else {
        writeln!(
            anstream::stderr(),
            "harnessd is not running (state dir {}); `harness up` or `harness daemon start` starts it",
            state_dir.display()
        )?;
        return Err(CliError::Said(crate::error::Exit::Daemon));
    };
    let projects = client
        .projects()
        .await
        .map_err(|e| remote::remote_error(e, state_dir))?;
    let mut out = anstream::stdout();
    if json {
        let text = serde_json::to_string_pretty(&projects)
            .map_err(|e| CliError::Failed(format!("encoding the projects: {e}")))?;
        writeln!(out, "{text}")?;
    } else if projects.is_empty() {
        writeln!(
            out,
            "no projects: harnessd (pid {}) runs none",
            client.welcome().pid
        )?;
    } else {
        write!(
            out,
            "{}",
            render::projects_table(&projects, render::stdout_colored())
        )?;
    }
    Ok(())
}
