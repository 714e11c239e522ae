//! Finding the `harnessd` binary and starting the daemon on demand.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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

/// Starts `harnessd --state-dir DIR` detached from this terminal (its own session, no stdio),
/// so it outlives the CLI. Returns its pid.
pub fn spawn_daemon(state_dir: &Path) -> CliResult<u32> {
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
        // Its own process group: Ctrl-C in this terminal must not reach the daemon.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::DaemonStart(format!("{}: {e}", bin.display())))?;
    let pid = child.id();
    // Reap it in the background if it exits early (e.g. another daemon holds the lock),
    // so no zombie is left while we wait for the address file.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
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
