//! The command line: global flags and every verb, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// `harness`: bring a stack of services up, keep it up, look at it.
#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Heterogeneous service orchestrator: local processes, Docker containers and remote hosts from one services.yaml",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 configuration invalid, 4 daemon unreachable, 5 not ready in time, 129/130/143 interrupted by SIGHUP/SIGINT/SIGTERM."
)]
pub struct Cli {
    /// Options that apply to every verb.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The configuration files in merge order: those before the verb, then those after it.
    pub fn files(&self) -> Vec<PathBuf> {
        let after: &[PathBuf] = match &self.command {
            Command::Validate(a) => &a.file.files,
            Command::Config(a) => &a.file.files,
            Command::Graph(a) => &a.file.files,
            Command::Env(a) => &a.file.files,
            Command::Up(a) => &a.file.files,
            Command::Down(a) | Command::Watch(a) => &a.file.files,
            Command::Start(a) | Command::Stop(a) | Command::Restart(a) => &a.file.files,
            Command::Status(a) => &a.file.files,
            Command::Logs(a) => &a.file.files,
            Command::Exec(a) => &a.file.files,
            Command::Events(a) => &a.file.files,
            Command::Deploy(a) | Command::Rollback(a) => &a.file.files,
            Command::Completions(_) | Command::Daemon(_) | Command::Ls(_) => &[],
        };
        self.global.files.iter().chain(after).cloned().collect()
    }
}

/// Options that apply to every verb.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// A services.yaml file; repeat to merge override files in order [default: ./services.yaml]
    #[arg(
        short = 'f',
        long = "file",
        visible_short_alias = 'c',
        visible_alias = "config",
        value_name = "FILE"
    )]
    pub files: Vec<PathBuf>,
    /// The project name (default: the `name` in the file, else the directory name).
    #[arg(short = 'p', long = "project", value_name = "PROJECT", global = true)]
    pub project: Option<String>,
    /// The daemon's state directory [default: $XDG_STATE_HOME/harness]
    #[arg(
        long = "state-dir",
        env = "HARNESS_STATE_DIR",
        value_name = "DIR",
        global = true
    )]
    pub state_dir: Option<PathBuf>,
    /// When to use colours: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// Make an unset variable without a default (`$VAR`, `${VAR}`) in the configuration an
    /// error; by default it is a warning and becomes empty. `HARNESS_STRICT_ENV=1` does the same.
    #[arg(long = "strict-env", global = true)]
    pub strict_env: bool,
}

/// `-f FILE` given after the verb (`harness validate -f x.yaml`); merged after the ones before it.
#[derive(Debug, Args, Clone, Default)]
pub struct FileArgs {
    /// A services.yaml file; repeat to merge override files in order [default: ./services.yaml]
    #[arg(
        short = 'f',
        long = "file",
        visible_short_alias = 'c',
        visible_alias = "config",
        value_name = "FILE"
    )]
    pub files: Vec<PathBuf>,
}

/// `--file FILE` for `logs`, where `-f` means `--follow`.
#[derive(Debug, Args, Clone, Default)]
pub struct LongFileArgs {
    /// A services.yaml file (`-f` before the verb works too).
    #[arg(
        long = "file",
        short = 'c',
        visible_alias = "config",
        value_name = "FILE"
    )]
    pub files: Vec<PathBuf>,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colours on a terminal, unless NO_COLOR is set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration; print a summary, or every error with file:line:column.
    Validate(ValidateArgs),
    /// Print the fully resolved, merged configuration (or its JSON Schema).
    Config(ConfigArgs),
    /// Print the dependency graph.
    Graph(GraphArgs),
    /// Print the environment a service gets, resolved.
    Env(EnvArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Bring services up (all, or the named ones and what they need).
    Up(UpArgs),
    /// Stop every service of the project.
    Down(DownArgs),
    /// Apply saved configuration changes to a project that is up, until Ctrl-C.
    Watch(DownArgs),
    /// Start services (and what they need).
    Start(ServicesArgs),
    /// Stop services (and what depends on them).
    Stop(ServicesArgs),
    /// Restart services.
    Restart(ServicesArgs),
    /// Show the state of every service.
    #[command(visible_alias = "ps")]
    Status(StatusArgs),
    /// Show service output.
    Logs(LogsArgs),
    /// Run a command where a service runs: beside a local process (its environment,
    /// directory and user), in its container, or on its node over ssh.
    Exec(ExecArgs),
    /// Follow what happens to services: state changes, health verdicts, restarts and why,
    /// configuration reloads.
    Events(EventsArgs),
    /// List the projects the daemon runs, with their services' states and files.
    Ls(LsArgs),
    /// Upload and switch package services to their configured version, then restart them.
    Deploy(DeployArgs),
    /// Switch package services back to their previous version, then restart them.
    Rollback(DeployArgs),
    /// Manage the daemon.
    Daemon(DaemonArgs),
}

/// `harness deploy` and `harness rollback`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// The package services.
    #[arg(required = true)]
    pub services: Vec<String>,
    /// Print a JSON array, one object per service.
    #[arg(long)]
    pub json: bool,
}

/// `harness validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `harness config`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConfigArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ConfigFormat::Yaml)]
    pub format: ConfigFormat,
    /// Shorthand for `--format json`.
    #[arg(long)]
    pub json: bool,
    /// `schema`: print the JSON Schema of services.yaml.
    #[command(subcommand)]
    pub action: Option<ConfigAction>,
}

/// Formats of `harness config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Sub-actions of `harness config`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the JSON Schema of services.yaml (for editors).
    Schema,
}

/// `harness graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
    /// Shorthand for `--format json`.
    #[arg(long)]
    pub json: bool,
}

/// Formats of `harness graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Services in start order with their dependencies.
    Text,
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON: nodes, edges with conditions, start order.
    Json,
}

/// `harness env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// The service.
    pub service: String,
    /// Print a JSON object instead of KEY=value lines.
    #[arg(long)]
    pub json: bool,
}

/// `harness completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `harness up`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Progress view: ",
    "✔ ready (healthy, or a job that completed), ● running without a readiness check, ",
    "✖ failed, ○ not ready when up stopped waiting. ",
    "While a service starts, its last output line is shown dimmed.\n",
    "Signals: attached, Ctrl-C (SIGINT, SIGTERM, SIGHUP) stops the project's services ",
    "(a second one leaves them running); with -d a signal only stops the waiting and ",
    "the services keep running."
))]
pub struct UpArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Services to bring up (default: all); what they depend on comes up too.
    pub services: Vec<String>,
    /// Detached: return once the request is accepted (with --wait: once ready) instead of following logs.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Wait until every requested service is ready; exit non-zero naming the one that failed.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait for readiness (e.g. 90, "30s", "2m").
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub timeout: String,
    /// Do not show the live progress view.
    #[arg(long)]
    pub quiet: bool,
    /// Then apply saved changes of the configuration (and `watch:` paths) until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
}

/// `harness down` and `harness watch`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
}

/// A list of services.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// The services.
    #[arg(required = true)]
    pub services: Vec<String>,
    /// Print the daemon's answer as JSON: the services' status and, under `affected`, every
    /// service the request stopped or restarted (dependents included).
    #[arg(long)]
    pub json: bool,
}

/// `harness status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Print a JSON array of service statuses (a stable interface).
    #[arg(long)]
    pub json: bool,
    /// Only these services.
    pub services: Vec<String>,
}

/// `harness logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: LongFileArgs,
    /// Keep following new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines of each service.
    #[arg(short = 'n', long = "tail", visible_alias = "lines", value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines newer than this (e.g. "10m", "30s").
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only these services (default: all).
    pub services: Vec<String>,
}

/// `harness exec`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "A local process service: the command runs on this machine with the service's environment ",
    "(as `harness env` prints it) on top of this shell's, in its working directory, as its user. ",
    "A docker service: in its container, through the engine the daemon uses (no docker CLI needed). ",
    "A remote or package service: on its node over ssh with the daemon's ssh settings, in the ",
    "directory it runs in, with its environment.\n",
    "Beside a local process the command uses this terminal as it is. In a container or on a node ",
    "it gets a terminal of its own when stdin is one (-T: not); stdin is passed to it either way.\n",
    "Exit status: the command's; 127 when it is not found, 126 when it cannot run; ",
    "1 when the service does not run, 2 for an unknown service, 4 without a daemon."
))]
pub struct ExecArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Do not give the command a terminal in a container or on a node, even when stdin is one.
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Pass stdin to the command (the default; accepted as docker's `-i`).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// The service.
    pub service: String,
    /// The command and its arguments (after `--` when they begin with `-`).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// `harness events`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "One line per event: time (UTC), service, what happened. Kinds: a new state; ",
    "`health:` a readiness verdict and the check result; `harness:` what harness did and why ",
    "(an exit and the restart it schedules, a failure to start); `reloaded:` a service the ",
    "configuration changed. Follows until Ctrl-C or until the project is taken down."
))]
pub struct EventsArgs {
    /// Configuration files given after the verb.
    #[command(flatten)]
    pub file: FileArgs,
    /// Print one JSON object per event (`event`: state, health, report, reload).
    #[arg(long)]
    pub json: bool,
    /// Only these services (default: all).
    pub services: Vec<String>,
}

/// `harness ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array, one object per project.
    #[arg(long)]
    pub json: bool,
}

/// `harness daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// What to do with the daemon.
    #[command(subcommand)]
    pub action: DaemonAction,
}

/// Daemon actions.
#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Start the daemon for the state directory (no-op when it runs).
    Start,
    /// Stop the daemon; services keep running.
    Stop,
    /// Show whether the daemon runs, its pid, address and version.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn file_flag_repeats_and_has_aliases() {
        let cli = Cli::try_parse_from([
            "harness", "-f", "a.yaml", "-c", "b.yaml", "validate", "--config", "c.yaml",
        ])
        .unwrap();
        assert_eq!(cli.global.files.len(), 2);
        assert_eq!(
            cli.files(),
            ["a.yaml", "b.yaml", "c.yaml"].map(PathBuf::from)
        );
        let cli =
            Cli::try_parse_from(["harness", "-f", "a.yaml", "logs", "-f", "--file", "b.yaml"])
                .unwrap();
        assert_eq!(cli.files(), ["a.yaml", "b.yaml"].map(PathBuf::from));
        assert!(matches!(
            cli.command,
            Command::Logs(LogsArgs { follow: true, .. })
        ));
    }

    #[test]
    fn ps_is_status() {
        let cli = Cli::try_parse_from(["harness", "ps", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { json: true, .. })
        ));
    }

    #[test]
    fn config_schema_is_a_subcommand() {
        let cli = Cli::try_parse_from(["harness", "config", "schema"]).unwrap();
        match cli.command {
            Command::Config(c) => assert!(matches!(c.action, Some(ConfigAction::Schema))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deploy_and_rollback_take_services() {
        let cli = Cli::try_parse_from(["harness", "deploy", "a", "b", "--json"]).unwrap();
        match cli.command {
            Command::Deploy(d) => {
                assert_eq!(d.services, ["a", "b"]);
                assert!(d.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["harness", "rollback"]).is_err());
        let cli = Cli::try_parse_from(["harness", "rollback", "-f", "x.yaml", "a"]).unwrap();
        assert_eq!(cli.files(), [PathBuf::from("x.yaml")]);
    }

    #[test]
    fn exec_takes_the_rest_as_the_command() {
        let cli = Cli::try_parse_from(["harness", "exec", "-T", "api", "ls", "-l", "/"]).unwrap();
        match cli.command {
            Command::Exec(e) => {
                assert!(e.no_tty);
                assert_eq!(e.service, "api");
                assert_eq!(e.command, ["ls", "-l", "/"]);
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["harness", "exec", "api", "--", "sh", "-c", "exit 3"]).unwrap();
        match cli.command {
            Command::Exec(e) => assert_eq!(e.command, ["sh", "-c", "exit 3"]),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["harness", "exec", "api"]).is_err());
    }

    #[test]
    fn start_needs_a_service() {
        assert!(Cli::try_parse_from(["harness", "start"]).is_err());
    }
}
