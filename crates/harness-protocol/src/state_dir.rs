//! The daemon's state directory: where the daemon writes its address,
//! certificates, logs and persisted state, and where clients find them.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An error reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// No state directory could be chosen.
    #[error("no state directory: set --state-dir, HARNESS_STATE_DIR, XDG_STATE_HOME or HOME")]
    NoStateDir,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what it should be.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl StateDirError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StateDirError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Chooses the state directory: `explicit` (from `--state-dir`), else
/// `$HARNESS_STATE_DIR`, else `$XDG_STATE_HOME/harness`, else
/// `$HOME/.local/state/harness`.
pub fn resolve_state_dir(explicit: Option<&Path>) -> Result<PathBuf, StateDirError> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = non_empty("HARNESS_STATE_DIR") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = non_empty("XDG_STATE_HOME") {
        return Ok(PathBuf::from(p).join("harness"));
    }
    if let Some(p) = non_empty("HOME") {
        return Ok(PathBuf::from(p).join(".local/state/harness"));
    }
    Err(StateDirError::NoStateDir)
}

/// The layout of a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory and its `tls`, `logs`, `registry` and
    /// `projects` folders (mode 0700) where they are missing. The mode of a
    /// directory that already exists is never changed; one that another user
    /// owns, or that every user may write to (like `/tmp`), is refused:
    /// the daemon's certificates and state would not be its own.
    pub fn create(&self) -> Result<(), StateDirError> {
        for dir in [
            self.root.clone(),
            self.tls_dir(),
            self.log_dir(),
            self.registry_dir(),
            self.projects_dir(),
        ] {
            ensure_private_dir(&dir)?;
        }
        Ok(())
    }

    /// The lock file only one daemon holds.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("harnessd.lock")
    }

    /// Where the running daemon writes its [`DaemonAddress`].
    pub fn address_file(&self) -> PathBuf {
        self.root.join("harnessd.json")
    }

    /// The daemon's own log file.
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("harnessd.log")
    }

    /// The daemon's persisted state.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Where service output goes.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The last state file known to be whole, kept next to `state.json`.
    pub fn last_good_state_file(&self) -> PathBuf {
        self.root.join("state.json.last-good")
    }

    /// Where each project's registry is persisted (`<project>.json`).
    pub fn registry_dir(&self) -> PathBuf {
        self.root.join("registry")
    }

    /// Where a copy of each managed project's reference (files, directory,
    /// variables) is kept, `<project>.json`, so that the project can be loaded
    /// again even when `state.json` is lost.
    pub fn projects_dir(&self) -> PathBuf {
        self.root.join("projects")
    }

    /// Where the certificates live.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Reads the running daemon's address file.
    pub fn read_address(&self) -> Result<DaemonAddress, StateDirError> {
        let path = self.address_file();
        let text = fs::read_to_string(&path).map_err(|e| StateDirError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| StateDirError::Invalid {
            path,
            message: e.to_string(),
        })
    }
}

/// What the running daemon writes into its state directory so clients find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonAddress {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// The protocol version it speaks.
    pub protocol: u32,
}

/// Makes `path` (and missing parents) with mode 0700, or checks the directory
/// that is there: it must be ours and not writable by every user. Its mode is
/// left as it is.
fn ensure_private_dir(path: &Path) -> Result<(), StateDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A parent is missing: make the parents (0700 as well) and then this.
            return fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(path)
                .map_err(|e| StateDirError::io(path, e));
        }
        Err(e) => return Err(StateDirError::io(path, e)),
    }
    let meta = fs::metadata(path).map_err(|e| StateDirError::io(path, e))?;
    let invalid = |message: String| StateDirError::Invalid {
        path: path.to_owned(),
        message,
    };
    if !meta.is_dir() {
        return Err(invalid("not a directory".to_owned()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(invalid(format!(
            "owned by uid {}, not by this user (uid {me}); choose a directory of your own",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(invalid(format!(
            "every user may write to it (mode {:o}); choose a directory of your own, \
             e.g. a folder in it that only you can write to",
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory with `mode`, fsync, rename over `path`, fsync of the directory.
/// A reader sees the old content or the new, never a mix; a crash leaves
/// one of them.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateDirError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        fastrand_suffix()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StateDirError::io(path, e)
    })
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_existing_directory_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::new(&root).create().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&root.join("tls")), 0o700);
        assert_eq!(mode(&root.join("projects")), 0o700);
    }

    #[test]
    fn a_directory_everyone_may_write_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shared");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o1777)).unwrap();
        let e = StateDir::new(&root).create().unwrap_err().to_string();
        assert!(e.contains("every user may write"), "{e}");
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o7777,
            0o1777
        );
        assert!(!root.join("tls").exists());
    }

    #[test]
    fn explicit_state_dir_wins() {
        let p = resolve_state_dir(Some(Path::new("/x/y"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/y"));
    }
}
