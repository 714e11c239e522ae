//! Finding the `harnessd` binary and starting the daemon on demand.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use crate::error::{CliError, CliResult};

/// The name of the daemon binary.
pub const DAEMON_BIN: &str = "harnessd";

/// Where `harnessd` is: next to the running `harness` binary, else on `PATH`.
pub fn find_daemon_binary() -> Option<PathBuf> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(DAEMON_BIN)));
    find_daemon_binary_in(sibling, std::env::var_os("PATH"))
}

fn find_daemon_binary_in(sibling: Option<PathBuf>, path: Option<OsString>) -> Option<PathBuf> {
    if let Some(s) = sibling.filter(|s| is_executable(s)) {
        return Some(s);
    }
    let path = path?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(DAEMON_BIN))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A daemon this CLI started: its pid, and how it ended if it already did.
#[derive(Debug, Clone)]
pub struct Spawned {
    /// The daemon's pid.
    pub pid: u32,
    exited: Arc<Mutex<Option<std::process::ExitStatus>>>,
}

impl Spawned {
    /// How the daemon ended, if it has (e.g. it could not take the state dir's lock).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.exited.lock().ok().and_then(|g| *g)
    }
}

/// Starts `harnessd --state-dir DIR` detached from this terminal (its own process group, no
/// stdio), so it outlives the CLI and Ctrl-C here never reaches it.
pub fn spawn_daemon(state_dir: &Path) -> CliResult<Spawned> {
    let bin = find_daemon_binary().ok_or_else(|| {
        CliError::DaemonStart(format!(
            "`{DAEMON_BIN}` was found neither next to `harness` nor on PATH"
        ))
    })?;
    std::fs::create_dir_all(state_dir).map_err(|e| {
        CliError::DaemonStart(format!(
            "cannot create state dir {}: {e}",
            state_dir.display()
        ))
    })?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::DaemonStart(format!("{}: {e}", bin.display())))?;
    let pid = child.id();
    let exited = Arc::new(Mutex::new(None));
    let record = exited.clone();
    // Reap it if it exits while this CLI runs, so no zombie is left and an early failure
    // is reported at once instead of after the connect deadline.
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && let Ok(mut g) = record.lock()
        {
            *g = Some(status);
        }
    });
    Ok(Spawned { pid, exited })
}

/// True while a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_binary_sibling_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(DAEMON_BIN);
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let missing = dir.path().join("nope").join(DAEMON_BIN);
        assert_eq!(
            find_daemon_binary_in(Some(missing.clone()), Some(dir.path().as_os_str().into())),
            Some(bin.clone())
        );
        assert_eq!(find_daemon_binary_in(Some(missing), None), None);
        assert_eq!(find_daemon_binary_in(Some(bin.clone()), None), Some(bin));
    }
}
