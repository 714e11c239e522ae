//! Why a spawn failed, in words that name the real cause.
//!
//! `execve` and `chdir` report bare errno values: `No such file or directory`
//! can mean a missing binary, a missing working directory or a missing script
//! interpreter. [`explain`] looks at what the command needed, only after the
//! spawn failed (so a successful start pays nothing), and names which one.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Command;

/// The cause of `err`, returned by spawning `cmd`: the directory, binary,
/// PATH searched or resource limit that made it fail.
pub(crate) fn explain(cmd: &Command, err: &io::Error) -> String {
    if let Some(dir) = cmd.get_current_dir() {
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return format!("working directory {} does not exist", dir.display());
            }
            Ok(m) if !m.is_dir() => {
                return format!("working directory {} is not a directory", dir.display());
            }
            _ => {}
        }
    }
    match err.raw_os_error() {
        Some(libc_errno::EMFILE) | Some(libc_errno::ENFILE) => {
            return format!("too many open files ({err}; {})", nofile_limit());
        }
        Some(libc_errno::EAGAIN) => {
            return format!("the system refused a new process ({err}): a process or memory limit");
        }
        _ => {}
    }
    let program = cmd.program();
    let binary = match find_binary(cmd) {
        Ok(path) => path,
        Err(why) => return why,
    };
    match err.kind() {
        io::ErrorKind::PermissionDenied => {
            let mode = std::fs::metadata(&binary).map(|m| m.permissions().mode() & 0o7777);
            match mode {
                Ok(mode) if mode & 0o111 == 0 => format!(
                    "permission denied: {} is not executable (mode {mode:04o})",
                    binary.display()
                ),
                _ => match cmd.get_current_dir() {
                    Some(dir) => format!(
                        "permission denied: {} or its working directory {}",
                        binary.display(),
                        dir.display()
                    ),
                    None => format!("permission denied: {}", binary.display()),
                },
            }
        }
        io::ErrorKind::NotFound => match interpreter(&binary) {
            Some(interp) if !interp.exists() => format!(
                "the interpreter {} named on the #! line of {} does not exist",
                interp.display(),
                binary.display()
            ),
            _ => format!("{program}: {err}"),
        },
        _ if err.raw_os_error() == Some(libc_errno::ENOEXEC) => format!(
            "{} is not a program this system can run (no #! line?)",
            binary.display()
        ),
        _ => err.to_string(),
    }
}

/// The binary `cmd` runs: its path as given, or the first match in the PATH
/// it runs with (its own, else this process's); the reason when there is none.
fn find_binary(cmd: &Command) -> Result<PathBuf, String> {
    let program = cmd.program();
    if program.contains('/') {
        let path = match cmd.get_current_dir() {
            Some(dir) if !Path::new(program).is_absolute() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return if path.exists() {
            Ok(path)
        } else {
            Err(format!("binary {} not found", path.display()))
        };
    }
    let own = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| v.map(str::to_owned));
    let path = match own {
        Some(v) => v,
        None if cmd.get_env_clear() => None,
        None => std::env::var("PATH").ok(),
    }
    .unwrap_or_default();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!("binary `{program}` not found in PATH ({path})"))
}

/// The interpreter a script names on its `#!` line.
fn interpreter(script: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(PathBuf::from)
}

/// This process's open-file limit, as `RLIMIT_NOFILE soft/hard`.
fn nofile_limit() -> String {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    format!(
        "RLIMIT_NOFILE is {} (hard {})",
        show(l.current),
        show(l.maximum)
    )
}

/// The errno values looked at (Linux).
mod libc_errno {
    pub const EAGAIN: i32 = 11;
    pub const EMFILE: i32 = 24;
    pub const ENFILE: i32 = 23;
    pub const ENOEXEC: i32 = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enoent() -> io::Error {
        io::Error::from_raw_os_error(2)
    }

    #[test]
    fn names_a_missing_working_directory_not_the_binary() {
        let cmd = Command::new("true").current_dir("/nonexistent/harness-dir");
        assert_eq!(
            explain(&cmd, &enoent()),
            "working directory /nonexistent/harness-dir does not exist"
        );
    }

    #[test]
    fn names_a_missing_binary_and_the_path_searched() {
        let cmd = Command::new("harness-no-such-binary").env("PATH", "/a:/b");
        assert_eq!(
            explain(&cmd, &enoent()),
            "binary `harness-no-such-binary` not found in PATH (/a:/b)"
        );
        let cmd = Command::new("/opt/x/api");
        assert_eq!(explain(&cmd, &enoent()), "binary /opt/x/api not found");
    }

    #[test]
    fn names_a_file_that_is_not_executable_and_a_missing_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/nonexistent/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cmd = Command::new(script.to_str().unwrap());
        let denied = io::Error::from_raw_os_error(13);
        assert_eq!(
            explain(&cmd, &denied),
            format!(
                "permission denied: {} is not executable (mode 0644)",
                script.display()
            )
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            explain(&cmd, &enoent()),
            format!(
                "the interpreter /nonexistent/sh named on the #! line of {} does not exist",
                script.display()
            )
        );
    }

    #[test]
    fn names_the_open_file_limit() {
        let cmd = Command::new("true");
        let why = explain(&cmd, &io::Error::from_raw_os_error(24));
        assert!(why.starts_with("too many open files"), "{why}");
        assert!(why.contains("RLIMIT_NOFILE is "), "{why}");
    }
}
