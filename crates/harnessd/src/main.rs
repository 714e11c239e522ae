//! `harnessd`: the harness daemon binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use harness_core::{BoxTask, SharedSpawner};
use harnessd::targets::{LocalStopping, Targets};
use harnessd::{Backend, DaemonOptions, ManagerBackend};

/// The harness daemon: keeps services up between CLI calls.
#[derive(Debug, Parser)]
#[command(name = "harnessd", version, about)]
struct Args {
    /// The state directory (default: $XDG_STATE_HOME/harness, else ~/.local/state/harness).
    #[arg(long, env = "HARNESS_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where to listen (default: a free port on 127.0.0.1).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// An ssh option for every connection to nodes, `KEY=VALUE` (repeatable; in
    /// HARNESS_SSH_OPTIONS, separated by commas), e.g. `StrictHostKeyChecking=accept-new`.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE", env = "HARNESS_SSH_OPTIONS", value_delimiter = ',', value_parser = parse_ssh_option)]
    ssh_options: Vec<(String, String)>,
    /// Whether local process services run in cgroups of their own: `auto`
    /// (where cgroup v2 is writable) or `off` (process group, descendants and
    /// run marker, the daemon a child subreaper).
    #[arg(long, env = "HARNESS_CGROUPS", value_enum, default_value = "auto")]
    cgroups: CgroupUse,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `harnessd=debug`.
    #[arg(long, env = "HARNESS_LOG", default_value = "info")]
    log: String,
}

/// Whether services may run in cgroups of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CgroupUse {
    /// Where cgroup v2 is writable.
    #[value(alias = "on")]
    Auto,
    /// Never.
    #[value(aliases = ["0", "false", "no"])]
    Off,
}

/// Threads the blocking pool may keep (spawns, file and /proc work). The
/// pool never lets a thread go below its limit, so the limit is what an idle
/// daemon keeps: without it a burst of 500 starts leaves hundreds of threads.
const BLOCKING_THREADS: &str = "8";

fn main() -> ExitCode {
    if std::env::var_os("BLOCKING_MAX_THREADS").is_none() {
        // SAFETY: the first statement of `main`, before any other thread
        // exists that could read the environment.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("BLOCKING_MAX_THREADS", BLOCKING_THREADS)
        };
    }
    let args = Args::parse();
    let state_dir = match harness_protocol::resolve_state_dir(args.state_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("harnessd: {e}");
            return ExitCode::from(2);
        }
    };
    let state = harness_protocol::StateDir::new(&state_dir);
    if let Err(e) = state.create() {
        eprintln!("harnessd: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = init_tracing(&state.daemon_log(), &args.log) {
        eprintln!("harnessd: {}: {e}", state.daemon_log().display());
        return ExitCode::from(2);
    }
    let ssh_options = args.ssh_options;
    let stopping = LocalStopping::detect(&state_dir, args.cgroups == CgroupUse::Auto);
    tracing::info!(stopping = %stopping.info(), "how services are stopped");
    // Removed at exit when every service's cgroup is gone (services that keep
    // running keep theirs).
    let cgroup_root = match &stopping {
        LocalStopping::Cgroup(root) => Some(root.path().to_owned()),
        LocalStopping::ProcessGroup { .. } => None,
    };
    let options = DaemonOptions {
        state_dir,
        listen: args.listen,
        metrics: args.metrics,
    };
    let result = smol::block_on(harnessd::run(options, |state| async move {
        let spawner: SharedSpawner = Arc::new(|task: BoxTask| smol::spawn(task).detach());
        let targets = Targets::with_stopping(state.root(), stopping).with_ssh_options(ssh_options);
        ManagerBackend::restore_with_targets(state, spawner, Vec::new(), targets).await
            as Arc<dyn Backend>
    }));
    // Only by the daemon that held the state directory (and so ran its services).
    if let (Some(dir), Ok(())) = (cgroup_root, &result) {
        let _ = std::fs::remove_dir(dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "harnessd failed");
            eprintln!("harnessd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `KEY=VALUE` (an ssh `-o` option).
fn parse_ssh_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn init_tracing(path: &std::path::Path, filter: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .json()
        .init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_options_are_key_value() {
        assert_eq!(
            parse_ssh_option("StrictHostKeyChecking=accept-new"),
            Ok(("StrictHostKeyChecking".into(), "accept-new".into()))
        );
        assert_eq!(
            parse_ssh_option("ProxyJump=a=b"),
            Ok(("ProxyJump".into(), "a=b".into()))
        );
        assert!(parse_ssh_option("nokey").is_err());
        assert!(parse_ssh_option("=value").is_err());
        assert!(parse_ssh_option("two words=x").is_err());
    }

    #[test]
    fn cgroups_are_auto_unless_turned_off() {
        let parse = |v: &str| Args::try_parse_from(["harnessd", "--cgroups", v]).map(|a| a.cgroups);
        assert_eq!(parse("auto").unwrap(), CgroupUse::Auto);
        assert_eq!(parse("on").unwrap(), CgroupUse::Auto);
        for off in ["off", "0", "false", "no"] {
            assert_eq!(parse(off).unwrap(), CgroupUse::Off, "{off}");
        }
        assert!(parse("sometimes").is_err());
    }

    #[test]
    fn ssh_options_from_the_environment_split_on_commas() {
        let args =
            Args::try_parse_from(["harnessd", "--ssh-option", "A=1,B=2", "--ssh-option", "C=3"])
                .unwrap();
        let keys: Vec<&str> = args.ssh_options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["A", "B", "C"]);
    }
}
