//! One daemon per state directory: an exclusive `flock` on the state
//! directory itself (which cannot be deleted away under a running daemon,
//! unlike a file in it) and on the lock file that holds the daemon's pid,
//! held for the daemon's life and released by the kernel when it dies.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds it.
    #[error("another harnessd{} already runs on this state directory ({path})", holder_text(.holder))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The pid written by the holder, if readable.
        holder: Option<u32>,
    },
    /// The lock file could not be opened.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(holder: &Option<u32>) -> String {
    holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _dir: File,
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock of the state directory `dir` without waiting: the
    /// directory itself, then the lock file `path` in it, into which our pid
    /// is written. When another daemon holds it, the error names that
    /// daemon's pid, read from the lock file or else from `address_file`.
    pub fn acquire_dir(
        dir: &Path,
        path: &Path,
        address_file: &Path,
    ) -> Result<StateLock, LockError> {
        let d = File::open(dir).map_err(|source| LockError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if flock(&d, FlockOperation::NonBlockingLockExclusive).is_err() {
            let from_lock = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            let from_address = || {
                let text = std::fs::read_to_string(address_file).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
            };
            return Err(LockError::Held {
                path: dir.to_owned(),
                holder: from_lock.or_else(from_address),
            });
        }
        let mut lock = StateLock::acquire(path)?;
        lock._dir = d;
        Ok(lock)
    }

    /// Takes the lock file at `path` without waiting, and writes our pid into it.
    pub fn acquire(path: &Path) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        // Until `acquire_dir` puts the directory's lock here: a handle on the
        // lock file's directory, not locked.
        let dir = File::open(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                path: path.to_owned(),
                holder: text.trim().parse().ok(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock {
            _dir: dir,
            _file: file,
            path: path.to_owned(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let first = StateLock::acquire(&p).unwrap();
        match StateLock::acquire(&p) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(&p).unwrap();
    }

    #[test]
    fn deleting_the_lock_file_does_not_free_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (p, a) = (dir.path().join("l"), dir.path().join("a.json"));
        let first = StateLock::acquire_dir(dir.path(), &p, &a).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&a, r#"{"pid": 4242}"#).unwrap();
        match StateLock::acquire_dir(dir.path(), &p, &a) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(4242)),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StateLock::acquire_dir(dir.path(), &p, &a).unwrap();
    }
}
