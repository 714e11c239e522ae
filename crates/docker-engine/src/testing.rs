//! Helpers for tests that run against the real engine (used by this crate's
//! tests and by higher layers' Docker tests).
//!
//! - [`engine_or_skip`] connects, or explains why the test is skipped; under
//!   `HARNESS_REQUIRE_DOCKER=1` (CI) a missing engine fails the test instead.
//! - [`ensure_test_images`] builds the local test images once per process
//!   (`docker-test-env/build.sh`, idempotent; nothing is pulled).
//! - [`unique_name`] gives collision-free names for parallel tests.
//! - [`Cleanup`] removes containers, networks, volumes and images when
//!   dropped, also when the test fails.

use std::sync::{Mutex, OnceLock};

use crate::Docker;

/// The tiny test image: busybox with sh, httpd, nc, wget.
pub const BUSYBOX: &str = "harness-test/busybox:latest";
/// busybox serving `/www` on port 80, with an engine healthcheck.
pub const WEB: &str = "harness-test/web:latest";
/// busybox plus OpenSSH's sshd on port 22.
pub const SSHD: &str = "harness-test/sshd:latest";

/// The script that builds the test images.
pub const BUILD_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docker-test-env/build.sh"
);

/// True when `HARNESS_REQUIRE_DOCKER=1`: missing Docker is then a failure.
pub fn docker_required() -> bool {
    std::env::var("HARNESS_REQUIRE_DOCKER").is_ok_and(|v| v == "1" || v == "true")
}

/// Connects to the engine and makes sure the test images exist; `None` (with
/// the reason printed) when there is no engine and Docker is not required.
///
/// # Panics
/// When Docker is required (`HARNESS_REQUIRE_DOCKER=1`) and unusable.
pub async fn engine_or_skip(test: &str) -> Option<Docker> {
    let docker = match Docker::from_env().await {
        Ok(d) => d,
        Err(e) => {
            if docker_required() {
                panic!("{test}: HARNESS_REQUIRE_DOCKER=1 but the engine is unusable: {e}");
            }
            eprintln!("skipping {test}: {e}");
            return None;
        }
    };
    if let Err(e) = ensure_test_images() {
        if docker_required() {
            panic!("{test}: cannot build the test images: {e}");
        }
        eprintln!("skipping {test}: cannot build the test images: {e}");
        return None;
    }
    Some(docker)
}

/// Runs `docker-test-env/build.sh` once per process.
pub fn ensure_test_images() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(BUILD_SCRIPT)
            .output()
            .map_err(|e| format!("running {BUILD_SCRIPT}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{BUILD_SCRIPT} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .clone()
}

/// A name unique to this call: `prefix-<pid>-<random>`, valid for containers and networks.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// Removes what a test created when dropped (containers first, then networks,
/// volumes, images), through the docker CLI so it works from any context.
#[derive(Debug, Default)]
pub struct Cleanup {
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
    labels: Mutex<Vec<String>>,
}

impl Cleanup {
    /// An empty guard.
    pub fn new() -> Cleanup {
        Cleanup::default()
    }

    /// Removes this container (id or name) at the end.
    pub fn container(&self, id: impl Into<String>) {
        self.containers
            .lock()
            .expect("cleanup lock")
            .push(id.into());
    }

    /// Removes every container carrying this label (`key=value`) at the end.
    pub fn label(&self, label: impl Into<String>) {
        self.labels.lock().expect("cleanup lock").push(label.into());
    }

    /// Removes this network at the end.
    pub fn network(&self, name: impl Into<String>) {
        self.networks
            .lock()
            .expect("cleanup lock")
            .push(name.into());
    }

    /// Removes this volume at the end.
    pub fn volume(&self, name: impl Into<String>) {
        self.volumes.lock().expect("cleanup lock").push(name.into());
    }

    /// Removes this image at the end.
    pub fn image(&self, name: impl Into<String>) {
        self.images.lock().expect("cleanup lock").push(name.into());
    }
}

fn docker_cli(args: &[&str]) {
    let _ = std::process::Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut containers =
            std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        for label in self.labels.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Ok(out) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label={label}")])
                .output()
            {
                containers.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(String::from),
                );
            }
        }
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            docker_cli(&args);
        }
        for n in self
            .networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            docker_cli(&["network", "rm", n]);
        }
        for v in self
            .volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            docker_cli(&["volume", "rm", "-f", v]);
        }
        for i in self.images.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            docker_cli(&["rmi", "-f", i]);
        }
    }
}
