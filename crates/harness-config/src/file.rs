//! Reading configuration files safely: regular files only, with a size limit.
//!
//! A FIFO would block a reader forever and a device such as `/dev/zero` never
//! ends, so every configuration-like file (`services.yaml`, `env_file`, `.env`,
//! the daemon's state) is read through [`read_limited`]: symlinks are followed,
//! the target must be a regular file, its size is checked before reading, and at
//! most `limit + 1` bytes are read so a file that grows meanwhile cannot exceed
//! the limit either.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("services.yaml");
//! std::fs::write(&path, "name: shop\n").unwrap();
//! let text = harness_config::file::read_limited(&path, harness_config::file::MAX_CONFIG_BYTES).unwrap();
//! assert_eq!(text, "name: shop\n");
//! let err = harness_config::file::read_limited(std::path::Path::new("/dev/zero"), 1024).unwrap_err();
//! assert!(err.to_string().contains("/dev/zero"));
//! ```

use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest `services.yaml`, override file, `env_file` or `.env` accepted: 4 MiB.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFileError {
    /// Opening or reading failed (including: it does not exist).
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is not a regular file (a FIFO, a device, a directory, a socket).
    #[error("cannot read `{}`: it is a {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is, e.g. `FIFO` or `character device`.
        kind: &'static str,
    },
    /// It is larger than the limit.
    #[error("cannot read `{}`: it is larger than the limit of {limit} bytes{}", path.display(), size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, when known before reading.
        size: Option<u64>,
        /// The limit in bytes.
        limit: u64,
    },
    /// Its content is not UTF-8.
    #[error("cannot read `{}`: it is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

impl ReadFileError {
    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads `path` as UTF-8 text if it is (or a symlink leads to) a regular file of
/// at most `limit` bytes. Never blocks on a FIFO and never reads more than
/// `limit + 1` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<String, ReadFileError> {
    let io = |source| ReadFileError::Io {
        path: path.to_owned(),
        source,
    };
    // Check the type before opening: opening a device can have effects of its own.
    let meta = std::fs::metadata(path).map_err(io)?;
    check(path, meta.file_type(), meta.len(), limit)?;
    // Non-blocking, so a file swapped for a FIFO after the check cannot hang the open.
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check(path, meta.file_type(), meta.len(), limit)?;
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadFileError::TooLarge {
            path: path.to_owned(),
            size: None,
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|_| ReadFileError::NotUtf8 {
        path: path.to_owned(),
    })
}

fn check(path: &Path, ty: FileType, len: u64, limit: u64) -> Result<(), ReadFileError> {
    if !ty.is_file() {
        return Err(ReadFileError::NotRegular {
            path: path.to_owned(),
            kind: kind_name(ty),
        });
    }
    if len > limit {
        return Err(ReadFileError::TooLarge {
            path: path.to_owned(),
            size: Some(len),
            limit,
        });
    }
    Ok(())
}

fn kind_name(ty: FileType) -> &'static str {
    if ty.is_dir() {
        "directory"
    } else if ty.is_fifo() {
        "FIFO"
    } else if ty.is_char_device() {
        "character device"
    } else if ty.is_block_device() {
        "block device"
    } else if ty.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("services.yaml");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).unwrap();
        let err = read_limited(&fifo, MAX_CONFIG_BYTES).unwrap_err();
        assert!(
            matches!(err, ReadFileError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("services.yaml"), "{err}");
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_followed_and_a_directory_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.yaml");
        std::fs::write(&target, "a: 1\n").unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_limited(&link, 100).unwrap(), "a: 1\n");
        let err = read_limited(dir.path(), 100).unwrap_err();
        assert!(
            matches!(
                err,
                ReadFileError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn size_limit_and_utf8_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, "x".repeat(101)).unwrap();
        let err = read_limited(&f, 100).unwrap_err();
        assert!(
            matches!(
                err,
                ReadFileError::TooLarge {
                    size: Some(101),
                    limit: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(read_limited(&f, 101).unwrap().len(), 101);
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_limited(&f, 100),
            Err(ReadFileError::NotUtf8 { .. })
        ));
        assert!(
            read_limited(&dir.path().join("nope"), 100)
                .unwrap_err()
                .is_not_found()
        );
    }
}
