//! What can happen to a state directory's disk: a small tmpfs that fills
//! up, and a state file damaged while no daemon runs. Shared by the daemon's
//! recovery tests and the CLI's fault suite (which includes this file by path).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted for the test; unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one at `at`, or says why it cannot.
    pub fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_owned()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes into `file` until the file system is full.
pub fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    for chunk in [64 * 1024, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

/// What is done to a state file while no daemon runs.
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    Deleted,
    Empty,
    Truncated,
    Garbage,
}

impl Damage {
    /// Does it to the file at `path`.
    pub fn apply(self, path: &Path) {
        match self {
            Damage::Deleted => {
                let _ = std::fs::remove_file(path);
            }
            Damage::Empty => std::fs::write(path, b"").unwrap(),
            Damage::Truncated => {
                let bytes = std::fs::read(path).unwrap();
                std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
            }
            Damage::Garbage => std::fs::write(path, b"\x00\x17not json at all\xff").unwrap(),
        }
    }
}
