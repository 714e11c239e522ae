//! `harness`: the command-line interface of the harness service orchestrator.
//!
//! Offline verbs (`validate`, `config`, `graph`, `env`, `completions`) read `services.yaml`
//! directly; `deploy` and `rollback` work on the nodes of `package` services over ssh, then
//! ask the daemon (when it runs the project) to restart them; `exec` asks the daemon where
//! a service runs and runs the command there itself; the others talk to the `harnessd`
//! daemon, which `up` starts on demand.

mod cli;
mod commands;
mod daemon;
mod deploy;
mod error;
mod events;
mod exec;
mod graph;
mod load;
mod progress;
mod remote;
mod render;
mod suggest;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, ColorChoice};
use crate::error::{CliError, Exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let e = suggest::strict_subcommand_error(e, &<Cli as clap::CommandFactory>::command());
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    match cli.global.color {
        ColorChoice::Auto => {}
        ColorChoice::Always => anstream::ColorChoice::Always.write_global(),
        ColorChoice::Never => anstream::ColorChoice::Never.write_global(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(CliError::Said(exit)) => ExitCode::from(exit.code()),
        Err(CliError::Exited(code)) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::from(e.code())
        }
    }
}

fn report(e: &CliError) {
    use std::io::Write;
    let mut err = anstream::stderr();
    let style = anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Red.into()));
    let _ = match e {
        // Diagnostics are rendered whole by harness-config.
        CliError::Config(text) => writeln!(err, "{}", text.trim_end()),
        other => writeln!(err, "{style}error:{style:#} {other}"),
    };
}

fn run(cli: Cli) -> Result<(), CliError> {
    commands::run(cli)
}
