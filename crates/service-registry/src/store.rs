//! Crash-safe JSON state files.
//!
//! A [`StateFile`] is written atomically and read back with its integrity
//! checked (ADR 005):
//!
//! 1. the new content goes to a temporary file in the same directory, which
//!    is fsynced;
//! 2. the current file is renamed to `<name>.bak` (the previous good state);
//! 3. the temporary file is renamed to `<name>`, and the directory is fsynced.
//!
//! The content is wrapped in an envelope holding its length and SHA-256, so a
//! torn or edited file is detected. Loading takes the current file, or, when
//! it is missing or corrupt, the `.bak`. Loading is read-only; the one writer
//! (who holds `<name>.lock`, [`StateFile::lock_exclusive`]) loads with
//! [`StateFile::load_and_repair`], which also moves a corrupt file aside to
//! `<name>.corrupt-<ms>` (never overwriting it) and removes leftover temporary
//! files of interrupted writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The `format` field of every envelope.
pub const FORMAT: &str = "harness-state";
/// The envelope version written and understood.
pub const VERSION: u32 = 1;

/// A persistence failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading, writing, renaming or syncing failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`writing`, `renaming`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The state could not be turned into JSON (a bug: our types always serialize).
    #[error("encoding state for {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The serializer error.
        source: serde_json::Error,
    },
    /// Another process (or another open registry) holds the state file's lock.
    #[error(
        "state file {path} is in use by another process (its lock {lock} is held): stop it first"
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Both the state file and its backup are unusable; nothing was changed on disk.
    #[error(
        "state file {path} is corrupt ({why}) and its backup cannot be used ({backup}); both are left untouched: repair or move them away"
    )]
    Unrecoverable {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
        /// What is wrong with the backup.
        backup: String,
    },
}

/// Which file a load took its state from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Neither the file nor a backup exists: a fresh start.
    Fresh,
    /// The state file itself.
    Primary,
    /// The backup, because the state file was missing or corrupt.
    Backup,
}

/// What a load found, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Where the state came from.
    pub source: LoadSource,
    /// Problems met on the way, one line each (a corrupt file and where it was moved).
    pub problems: Vec<String>,
    /// Leftover temporary files of interrupted writes that were removed.
    pub removed_temp_files: usize,
}

/// A state file on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

/// An exclusive lock on a state file (`<name>.lock`, `flock`), released when
/// dropped or when the process dies.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// A new state written to its temporary file and fsynced, not yet in place.
#[derive(Debug)]
#[must_use = "a staged write does nothing until committed"]
pub struct StagedWrite {
    file: StateFile,
    temp: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl StateFile {
    /// A state file at `path` (created on first save; its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    /// The path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the backup (`<name>.bak`).
    pub fn backup_path(&self) -> PathBuf {
        self.sibling(".bak")
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    fn temp_prefix(&self) -> String {
        format!(
            ".{}.tmp-",
            self.path.file_name().unwrap_or_default().to_string_lossy()
        )
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Takes the exclusive lock of this state file without waiting, so that
    /// two writers never share it. Blocking (but short).
    pub fn lock_exclusive(&self) -> Result<StateLock, PersistError> {
        let lock = self.sibling(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| PersistError::Io {
                action: "opening lock",
                path: lock.clone(),
                source,
            })?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(PersistError::Locked {
                path: self.path.clone(),
                lock,
            }),
            Err(e) => Err(PersistError::Io {
                action: "locking",
                path: lock,
                source: e.into(),
            }),
        }
    }

    /// Encodes `value` in its envelope.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, PersistError> {
        let data = serde_json::to_string_pretty(value).map_err(|source| PersistError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let sha = hex::encode(Sha256::digest(data.as_bytes()));
        let mut out = format!(
            "{{\n\"format\": \"{FORMAT}\",\n\"version\": {VERSION},\n\"length\": {},\n\"sha256\": \"{sha}\",\n\"data\": ",
            data.len()
        )
        .into_bytes();
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\n}\n");
        Ok(out)
    }

    /// Writes `value` atomically. Blocking.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), PersistError> {
        self.stage(value)?.commit()
    }

    /// Writes already encoded bytes (from [`StateFile::encode`]) atomically. Blocking.
    pub fn save_encoded(&self, bytes: &[u8]) -> Result<(), PersistError> {
        self.stage_encoded(bytes)?.commit()
    }

    /// Step one of a save: writes and fsyncs the temporary file. Blocking.
    pub fn stage<T: Serialize>(&self, value: &T) -> Result<StagedWrite, PersistError> {
        let bytes = self.encode(value)?;
        self.stage_encoded(&bytes)
    }

    /// [`StateFile::stage`] for already encoded bytes.
    pub fn stage_encoded(&self, bytes: &[u8]) -> Result<StagedWrite, PersistError> {
        let temp = self.dir().join(format!(
            "{}{}-{}",
            self.temp_prefix(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |action, source| PersistError::Io {
            action,
            path: temp.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io("creating", e))?;
        let written = f
            .write_all(bytes)
            .map_err(|e| io("writing", e))
            .and_then(|()| f.sync_all().map_err(|e| io("syncing", e)));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(StagedWrite {
            file: self.clone(),
            temp,
        })
    }

    /// Reads the state. Blocking. `Ok((None, report))` is a fresh start.
    ///
    /// Read-only, so safe while another process writes the file: a corrupt
    /// file is reported and the backup used, but nothing is moved or removed
    /// (that is [`StateFile::load_and_repair`], for the writer).
    pub fn load<T: DeserializeOwned>(&self) -> Result<(Option<T>, LoadReport), PersistError> {
        let mut report = LoadReport {
            source: LoadSource::Fresh,
            problems: Vec::new(),
            removed_temp_files: 0,
        };
        let primary = self.read_checked::<T>(&self.path);
        let primary_why = match primary {
            Ok(Some(v)) => {
                report.source = LoadSource::Primary;
                return Ok((Some(v), report));
            }
            Ok(None) => None,
            Err(why) => Some(why),
        };
        let backup = self.backup_path();
        match self.read_checked::<T>(&backup) {
            Ok(Some(v)) => {
                match &primary_why {
                    Some(why) => report.problems.push(format!(
                        "{} is corrupt ({why}); using the previous state from {}",
                        self.path.display(),
                        backup.display()
                    )),
                    None => report.problems.push(format!(
                        "{} is missing (an interrupted write?); using the previous state from {}",
                        self.path.display(),
                        backup.display()
                    )),
                }
                report.source = LoadSource::Backup;
                Ok((Some(v), report))
            }
            Ok(None) => match primary_why {
                None => Ok((None, report)),
                Some(why) => Err(PersistError::Unrecoverable {
                    path: self.path.clone(),
                    why,
                    backup: "there is none".to_owned(),
                }),
            },
            Err(bwhy) => match primary_why {
                Some(why) => Err(PersistError::Unrecoverable {
                    path: self.path.clone(),
                    why,
                    backup: bwhy,
                }),
                None => Err(PersistError::Unrecoverable {
                    path: self.path.clone(),
                    why: "it is missing".to_owned(),
                    backup: bwhy,
                }),
            },
        }
    }

    /// [`StateFile::load`] for the one writer of the file (who holds its
    /// [lock](StateFile::lock_exclusive)): also removes leftover temporary
    /// files of interrupted writes, and moves a corrupt file aside to
    /// `<name>.corrupt-<ms>` when the backup replaces it. Blocking.
    pub fn load_and_repair<T: DeserializeOwned>(
        &self,
    ) -> Result<(Option<T>, LoadReport), PersistError> {
        let removed = self.remove_temp_files();
        let (value, mut report) = self.load::<T>()?;
        report.removed_temp_files = removed;
        if report.source == LoadSource::Backup && self.path.exists() {
            let moved = self.move_aside()?;
            report
                .problems
                .push(format!("the corrupt file was moved to {}", moved.display()));
        }
        Ok((value, report))
    }

    /// `Ok(None)` if missing; `Err(why)` if unreadable or corrupt.
    fn read_checked<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, String> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        decode(&bytes).map(Some)
    }

    fn move_aside(&self) -> Result<PathBuf, PersistError> {
        let to = self.sibling(&format!(".corrupt-{}", crate::entry::now_ms()));
        fs::rename(&self.path, &to).map_err(|source| PersistError::Io {
            action: "moving aside",
            path: self.path.clone(),
            source,
        })?;
        Ok(to)
    }

    fn remove_temp_files(&self) -> usize {
        let prefix = self.temp_prefix();
        let Ok(dir) = fs::read_dir(self.dir()) else {
            return 0;
        };
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }
}

/// Checks an envelope and decodes its data.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        format: String,
        version: u32,
        length: usize,
        sha256: String,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    if bytes.is_empty() {
        return Err("it is empty".to_owned());
    }
    let env: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a valid state envelope: {e}"))?;
    if env.format != FORMAT {
        return Err(format!("format is `{}`, expected `{FORMAT}`", env.format));
    }
    if env.version != VERSION {
        return Err(format!(
            "version {} is not supported (this build reads version {VERSION})",
            env.version
        ));
    }
    let data = env.data.get();
    if data.len() != env.length {
        return Err(format!(
            "length {} does not match the recorded {}",
            data.len(),
            env.length
        ));
    }
    if hex::encode(Sha256::digest(data.as_bytes())) != env.sha256 {
        return Err("checksum mismatch".to_owned());
    }
    serde_json::from_str(data).map_err(|e| format!("data does not decode: {e}"))
}

impl StagedWrite {
    /// The temporary file holding the new state.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Step two of a save: keeps the current file as `.bak`, renames the
    /// temporary file into place and fsyncs the directory. Blocking.
    pub fn commit(self) -> Result<(), PersistError> {
        let io = |action, path: &Path, source| PersistError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let path = self.file.path.clone();
        match fs::rename(&path, self.file.backup_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("keeping as backup", &path, e)),
        }
        fs::rename(&self.temp, &path).map_err(|e| io("renaming into place", &self.temp, e))?;
        let dir = self.file.dir();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing directory", &dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_backup() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("state.json"));
        let (v, r) = f.load::<Vec<u32>>().unwrap();
        assert_eq!((v, r.source), (None, LoadSource::Fresh));
        f.save(&vec![1u32]).unwrap();
        f.save(&vec![1u32, 2]).unwrap();
        let (v, r) = f.load::<Vec<u32>>().unwrap();
        assert_eq!((v.unwrap(), r.source), (vec![1, 2], LoadSource::Primary));
        assert_eq!(
            decode::<Vec<u32>>(&fs::read(f.backup_path()).unwrap()).unwrap(),
            vec![1]
        );
    }

    #[test]
    fn detects_every_kind_of_damage() {
        let f = StateFile::new("x");
        let good = f.encode(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(decode::<Vec<u32>>(&good).unwrap(), vec![1, 2, 3]);
        // Torn at every length.
        for n in 0..good.len() - 2 {
            assert!(
                decode::<Vec<u32>>(&good[..n]).is_err(),
                "torn at {n} accepted"
            );
        }
        // A changed digit keeps valid JSON but breaks the checksum.
        let s = String::from_utf8(good.clone()).unwrap();
        let flipped = s.replacen("\n  2,", "\n  7,", 1);
        assert_ne!(flipped, s);
        assert_eq!(
            decode::<Vec<u32>>(flipped.as_bytes()).unwrap_err(),
            "checksum mismatch"
        );
        let other_version = s.replacen("\"version\": 1", "\"version\": 9", 1);
        assert!(
            decode::<Vec<u32>>(other_version.as_bytes())
                .unwrap_err()
                .contains("version 9")
        );
        assert!(decode::<Vec<u32>>(b"[1,2,3]").is_err());
        // Valid envelope, wrong shape of data.
        assert!(
            decode::<String>(&good)
                .unwrap_err()
                .contains("does not decode")
        );
    }

    #[test]
    fn corrupt_file_falls_back_to_backup_and_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("s.json"));
        f.save(&"old".to_owned()).unwrap();
        f.save(&"new".to_owned()).unwrap();
        let full = fs::read(f.path()).unwrap();
        fs::write(f.path(), &full[..full.len() / 2]).unwrap();
        // A reader sees the previous state and changes nothing.
        let (v, r) = f.load::<String>().unwrap();
        assert_eq!((v.as_deref(), r.source), (Some("old"), LoadSource::Backup));
        assert_eq!(fs::read(f.path()).unwrap(), &full[..full.len() / 2]);
        // The writer repairs.
        let (v, r) = f.load_and_repair::<String>().unwrap();
        assert_eq!(v.as_deref(), Some("old"));
        assert_eq!(r.source, LoadSource::Backup);
        assert!(r.problems[0].contains("corrupt"), "{:?}", r.problems);
        assert!(r.problems[1].contains("moved to"), "{:?}", r.problems);
        assert!(!f.path().exists());
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("s.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(fs::read(aside[0].path()).unwrap(), &full[..full.len() / 2]);
    }

    #[test]
    fn both_corrupt_is_an_error_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("s.json"));
        fs::write(f.path(), b"{garbage").unwrap();
        let err = f.load::<String>().unwrap_err();
        assert!(matches!(err, PersistError::Unrecoverable { .. }), "{err}");
        assert!(err.to_string().contains("s.json"), "{err}");
        assert_eq!(fs::read(f.path()).unwrap(), b"{garbage");
        fs::write(f.backup_path(), b"").unwrap();
        assert!(f.load::<String>().is_err());
        assert_eq!(fs::read(f.path()).unwrap(), b"{garbage");
    }

    #[test]
    fn missing_primary_after_interrupted_commit_uses_backup() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("s.json"));
        f.save(&1u8).unwrap();
        // The state between the two renames of a commit: primary moved to .bak,
        // the new file still under its temporary name.
        let staged = f.stage(&2u8).unwrap();
        fs::rename(f.path(), f.backup_path()).unwrap();
        let temp = staged.temp_path().to_path_buf();
        drop(staged);
        assert!(temp.exists());
        let (v, r) = f.load::<u8>().unwrap();
        assert_eq!((v, r.source), (Some(1), LoadSource::Backup));
        assert!(temp.exists(), "a reader leaves a writer's temp file alone");
        let (v, r) = f.load_and_repair::<u8>().unwrap();
        assert_eq!((v, r.source), (Some(1), LoadSource::Backup));
        assert_eq!(r.removed_temp_files, 1);
        assert!(!temp.exists());
    }
}
