//! `package` services: deploy a versioned package to a node, then run it there.
//!
//! A package is a local directory (tarred on the fly) or a `.tar`/`.tar.gz`
//! archive. [`deploy`] streams it over the node's ssh connection, verifies its
//! sha256 on the node, unpacks it into `<install_path>/versions/<version>/` and
//! switches the `current` link atomically (`ln -s` to a temporary name, then
//! `mv -T`). The version `current` pointed to before is kept (and named in
//! `previous`), older ones are removed; [`rollback`] switches back to it.
//! Deploying the version that is already current, with the same content, is a
//! no-op. Without `version:` the version is the first 12 hex digits of the
//! package's sha256.
//!
//! The package runs as a remote service (see [`crate::remote`]): its
//! executable `run` at the package root, started in the directory `current`
//! points to at that moment (`<install_path>/versions/<version>`), so a later
//! switch does not move a running instance.
//! The install path defaults to `~/.harness/<project>/<service>/package`; a
//! relative one is relative to the ssh login directory.
//!
//! [`PackageExecutor::start`] deploys the configured version when the node has
//! not yet been given it (so `up` deploys, and a later restart keeps a version
//! that was rolled back to); `harness deploy SVC` calls [`deploy`] with
//! [`DeployMode::Always`], `harness rollback SVC` calls [`rollback`], and both
//! then restart the service.

use std::path::{Path, PathBuf};

use command_executor::shell_quote;
use harness_config::{ServiceSpec, Target};
use harness_core::ServiceKind;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::executor::{ExecutorError, InstanceRecord, Launched, ServiceExecutor, StartContext};
use crate::remote::{RemoteExecutor, RemoteLaunch};
use crate::ssh::{SshError, SshHosts};

/// What went wrong deploying or rolling back a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The service is not a `package` service.
    #[error("`{service}` is not a package service")]
    NotAPackage {
        /// The service.
        service: String,
    },
    /// The local package could not be read or packed.
    #[error("package of `{service}` at {}: {source}", path.display())]
    Read {
        /// The service.
        service: String,
        /// The package path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A version that cannot be a directory name.
    #[error(
        "`{service}`: version `{version}` may only use letters, digits, `.`, `_`, `+` and `-` (and not start with `.`)"
    )]
    BadVersion {
        /// The service.
        service: String,
        /// The version.
        version: String,
    },
    /// The node could not be reached.
    #[error("`{service}`: {source}")]
    Ssh {
        /// The service.
        service: String,
        /// Why.
        source: SshError,
    },
    /// A step on the node failed.
    #[error("`{service}` on node `{host}`: {what}")]
    Remote {
        /// The service.
        service: String,
        /// The node.
        host: String,
        /// What failed, with the node's words.
        what: String,
    },
    /// Nothing to roll back to.
    #[error("`{service}` on node `{host}`: no previous version to roll back to")]
    NoPrevious {
        /// The service.
        service: String,
        /// The node.
        host: String,
    },
}

/// When [`deploy`] switches `current` to the configured version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// Always (`harness deploy`): upload if needed and switch.
    Always,
    /// Only if the configuration asks for a version it did not ask for before
    /// (or nothing is deployed): what a service start does, so that a rollback
    /// survives restarts until the configured version changes.
    IfConfigChanged,
}

/// The outcome of a deploy or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The version `current` points to now.
    pub version: String,
    /// The version kept for rollback, if any.
    pub previous: Option<String>,
    /// False if nothing changed on the node.
    pub changed: bool,
    /// True if the archive was uploaded (it was not on the node yet).
    pub uploaded: bool,
}

/// What is deployed for a service on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedState {
    /// The version `current` points to, if any.
    pub current: Option<String>,
    /// The version kept for rollback, if any.
    pub previous: Option<String>,
}

struct PackageTarget<'a> {
    host: &'a str,
    package: &'a str,
    version: Option<&'a str>,
    install_path: String,
}

fn target<'a>(spec: &'a ServiceSpec, project: &str) -> Result<PackageTarget<'a>, PackageError> {
    let Target::Package {
        host,
        package,
        version,
        install_path,
    } = &spec.target
    else {
        return Err(PackageError::NotAPackage {
            service: spec.name.to_string(),
        });
    };
    Ok(PackageTarget {
        host,
        package,
        version: version.as_deref(),
        install_path: match install_path {
            Some(p) => p.to_string_lossy().into_owned(),
            None => format!(
                "{}/package",
                RemoteExecutor::service_dir(project, spec.name.as_str())
            ),
        },
    })
}

fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// A package ready to upload.
struct Archive {
    bytes: Vec<u8>,
    sha256: String,
    gzip: bool,
}

fn pack(path: &Path) -> std::io::Result<Archive> {
    let meta = std::fs::metadata(path)?;
    let bytes = if meta.is_dir() {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Deterministic);
        b.append_dir_all(".", path)?;
        b.into_inner()?
    } else {
        std::fs::read(path)?
    };
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let digest = sha2::Sha256::digest(&bytes);
    let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Archive {
        bytes,
        sha256,
        gzip,
    })
}

fn strip_versions(link: &str) -> Option<String> {
    let v = link.trim().trim_end_matches('/');
    let v = v.strip_prefix("versions/").unwrap_or(v);
    (!v.is_empty()).then(|| v.to_owned())
}

/// The directory relative package paths are resolved against: the directory
/// of the project's first configuration file.
pub fn project_dir(project: &harness_config::Project) -> Option<PathBuf> {
    project
        .files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
}

/// Deploys the package of `spec` (a `package` service of `project`) to its node.
/// A relative package path is taken relative to `base_dir` (see [`project_dir`]).
pub async fn deploy(
    hosts: &SshHosts,
    project: &str,
    spec: &ServiceSpec,
    mode: DeployMode,
    base_dir: Option<&Path>,
) -> Result<Deployment, PackageError> {
    let service = spec.name.to_string();
    let t = target(spec, project)?;
    let host = hosts.get(t.host).map_err(|source| PackageError::Ssh {
        service: service.clone(),
        source,
    })?;
    let path = match base_dir {
        Some(base) => base.join(t.package),
        None => PathBuf::from(t.package),
    };
    let archive = {
        let p = path.clone();
        blocking::unblock(move || pack(&p))
            .await
            .map_err(|source| PackageError::Read {
                service: service.clone(),
                path: path.clone(),
                source,
            })?
    };
    let version = match t.version {
        Some(v) => v.to_owned(),
        None => archive.sha256[..12].to_owned(),
    };
    if !valid_version(&version) {
        return Err(PackageError::BadVersion { service, version });
    }
    let ssh = |source| PackageError::Ssh {
        service: service.clone(),
        source,
    };
    let remote = |what: String| PackageError::Remote {
        service: service.clone(),
        host: host.name().to_owned(),
        what,
    };
    let timeout = std::time::Duration::from_secs(60);
    let ip = shell_quote(&t.install_path);
    let v = shell_quote(&version);
    // 1. What is there.
    let probe = format!(
        "mkdir -p {ip}/versions && cd {ip} || exit 90\n\
         echo \"current=$(readlink current 2>/dev/null)\"\n\
         echo \"requested=$(cat requested 2>/dev/null)\"\n\
         if [ -d versions/{v} ]; then echo \"sha=$(cat versions/{v}.sha256 2>/dev/null)\"; else echo sha=; fi\n"
    );
    let out = host.run(&probe, None, timeout).await.map_err(ssh)?;
    if out.code != 0 {
        return Err(remote(format!(
            "cannot use the install path {}: {}",
            t.install_path,
            out.stderr_text()
        )));
    }
    let text = out.stdout_text();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let current = strip_versions(&field("current="));
    let requested = field("requested=");
    let have_sha = field("sha=");
    if mode == DeployMode::IfConfigChanged && current.is_some() && requested == version {
        let st = deployed_state(&host, &t.install_path, timeout)
            .await
            .map_err(ssh)?;
        return Ok(Deployment {
            version: st.current.unwrap_or_default(),
            previous: st.previous,
            changed: false,
            uploaded: false,
        });
    }
    if current.as_deref() == Some(version.as_str()) && have_sha == archive.sha256 {
        let st = deployed_state(&host, &t.install_path, timeout)
            .await
            .map_err(ssh)?;
        let _ = host
            .run(&format!("cd {ip} && echo {v} > requested"), None, timeout)
            .await;
        return Ok(Deployment {
            version,
            previous: st.previous,
            changed: false,
            uploaded: false,
        });
    }
    if current.as_deref() == Some(version.as_str()) {
        return Err(remote(format!(
            "version {version} is current with other content (sha256 {have_sha}, the package has {}): give the new package a new version",
            archive.sha256
        )));
    }
    // 2. Upload, verify and unpack unless the node has this exact version.
    let uploaded = have_sha != archive.sha256;
    if uploaded {
        let x = if archive.gzip { "xzf" } else { "xf" };
        let sha = &archive.sha256;
        let up = format!(
            "cd {ip} && mkdir -p .incoming || exit 90\n\
             f=.incoming/{v}.$$\n\
             cat > \"$f\" || {{ rm -f \"$f\"; echo 'upload interrupted' >&2; exit 91; }}\n\
             got=$(sha256sum \"$f\" | cut -d' ' -f1)\n\
             if [ \"$got\" != {sha} ]; then rm -f \"$f\"; echo \"checksum mismatch: got $got, want {sha}\" >&2; exit 92; fi\n\
             rm -rf versions/{v}.new && mkdir -p versions/{v}.new || exit 93\n\
             if ! tar {x} \"$f\" -C versions/{v}.new; then rm -rf versions/{v}.new \"$f\"; echo 'cannot unpack the package' >&2; exit 94; fi\n\
             rm -f \"$f\"; rm -rf versions/{v} && mv versions/{v}.new versions/{v} && echo {sha} > versions/{v}.sha256 || exit 95\n\
             echo ok\n"
        );
        let out = host
            .run(&up, Some(&archive.bytes), timeout * 5)
            .await
            .map_err(ssh)?;
        if out.code != 0 || out.stdout_text() != "ok" {
            return Err(remote(format!(
                "upload of version {version} failed (exit {}): {}",
                out.code,
                out.stderr_text()
            )));
        }
    }
    // 3. Switch atomically, keep the previous version, drop older ones.
    let switch = format!(
        "cd {ip} || exit 90\n\
         cur=$(readlink current 2>/dev/null)\n\
         rm -f current.new && ln -s versions/{v} current.new && mv -T current.new current || exit 96\n\
         if [ -n \"$cur\" ] && [ \"$cur\" != versions/{v} ]; then echo \"$cur\" > previous.new && mv previous.new previous; fi\n\
         echo {v} > requested\n\
         prev=$(cat previous 2>/dev/null)\n\
         for d in versions/*; do case \"$d\" in *.sha256) continue;; esac; \
           if [ \"$d\" != versions/{v} ] && [ \"$d\" != \"$prev\" ]; then rm -rf \"$d\" \"$d.sha256\"; fi; done\n\
         echo ok\n"
    );
    let out = host.run(&switch, None, timeout).await.map_err(ssh)?;
    if out.code != 0 {
        return Err(remote(format!(
            "cannot switch `current` to version {version}: {}",
            out.stderr_text()
        )));
    }
    let st = deployed_state(&host, &t.install_path, timeout)
        .await
        .map_err(ssh)?;
    Ok(Deployment {
        version,
        previous: st.previous,
        changed: true,
        uploaded,
    })
}

async fn deployed_state(
    host: &crate::ssh::SshHost,
    install_path: &str,
    timeout: std::time::Duration,
) -> Result<DeployedState, SshError> {
    let ip = shell_quote(install_path);
    let out = host
        .run(
            &format!(
                "cd {ip} 2>/dev/null || exit 0\necho \"current=$(readlink current 2>/dev/null)\"\n\
                 echo \"previous=$(cat previous 2>/dev/null)\"\n"
            ),
            None,
            timeout,
        )
        .await?;
    let text = out.stdout_text();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(strip_versions)
    };
    Ok(DeployedState {
        current: field("current="),
        previous: field("previous="),
    })
}

/// What is deployed for `spec` on its node.
pub async fn deployed(
    hosts: &SshHosts,
    project: &str,
    spec: &ServiceSpec,
) -> Result<DeployedState, PackageError> {
    let t = target(spec, project)?;
    let ssh = |source| PackageError::Ssh {
        service: spec.name.to_string(),
        source,
    };
    let host = hosts.get(t.host).map_err(ssh)?;
    deployed_state(&host, &t.install_path, std::time::Duration::from_secs(60))
        .await
        .map_err(ssh)
}

/// Switches `current` back to the previous version (which becomes the one
/// kept for rollback). The running service keeps running what it started
/// with until it is restarted.
pub async fn rollback(
    hosts: &SshHosts,
    project: &str,
    spec: &ServiceSpec,
) -> Result<Deployment, PackageError> {
    let service = spec.name.to_string();
    let t = target(spec, project)?;
    let ssh = |source| PackageError::Ssh {
        service: service.clone(),
        source,
    };
    let host = hosts.get(t.host).map_err(ssh)?;
    let ip = shell_quote(&t.install_path);
    let script = format!(
        "cd {ip} 2>/dev/null || exit 80\n\
         prev=$(cat previous 2>/dev/null)\n\
         [ -n \"$prev\" ] && [ -d \"$prev\" ] || exit 80\n\
         cur=$(readlink current 2>/dev/null)\n\
         rm -f current.new && ln -s \"$prev\" current.new && mv -T current.new current || exit 96\n\
         if [ -n \"$cur\" ]; then echo \"$cur\" > previous.new && mv previous.new previous; fi\n\
         echo ok\n"
    );
    let out = host
        .run(&script, None, std::time::Duration::from_secs(60))
        .await
        .map_err(ssh)?;
    match out.code {
        0 => {}
        80 => {
            return Err(PackageError::NoPrevious {
                service,
                host: host.name().to_owned(),
            });
        }
        c => {
            return Err(PackageError::Remote {
                service,
                host: host.name().to_owned(),
                what: format!("rollback failed (exit {c}): {}", out.stderr_text()),
            });
        }
    }
    let st = deployed_state(&host, &t.install_path, std::time::Duration::from_secs(60))
        .await
        .map_err(ssh)?;
    Ok(Deployment {
        version: st.current.unwrap_or_default(),
        previous: st.previous,
        changed: true,
        uploaded: false,
    })
}

/// Runs `package` services: deploys, then runs `current/run` on the node.
/// The deployed version is in the instance record (`data.version`).
#[derive(Debug, Clone)]
pub struct PackageExecutor {
    remote: RemoteExecutor,
    base_dir: Option<PathBuf>,
}

impl PackageExecutor {
    /// An executor over these nodes.
    pub fn new(hosts: SshHosts) -> PackageExecutor {
        PackageExecutor {
            remote: RemoteExecutor::for_kind(hosts, ServiceKind::Package),
            base_dir: None,
        }
    }

    /// Resolves relative package paths against `dir` (see [`project_dir`]).
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> PackageExecutor {
        self.base_dir = Some(dir.into());
        self
    }

    /// The nodes.
    pub fn hosts(&self) -> &SshHosts {
        self.remote.hosts()
    }

    /// Why the node of `spec` cannot be observed right now, if it cannot.
    pub fn unknown_reason(&self, spec: &ServiceSpec) -> Option<String> {
        self.remote.unknown_reason(spec)
    }

    /// The version a running package instance runs, from its record.
    pub fn version_of(record: &InstanceRecord) -> Option<String> {
        record
            .data
            .get("version")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

#[async_trait::async_trait]
impl ServiceExecutor for PackageExecutor {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Package
    }

    async fn start(
        &self,
        spec: &ServiceSpec,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        let err = |e: PackageError| ExecutorError::Start {
            service: spec.name.to_string(),
            source: e.into(),
        };
        let t = target(spec, ctx.project.as_str()).map_err(err)?;
        let d = deploy(
            self.remote.hosts(),
            ctx.project.as_str(),
            spec,
            DeployMode::IfConfigChanged,
            self.base_dir.as_deref(),
        )
        .await
        .map_err(err)?;
        let ip = t.install_path.trim_end_matches('/');
        let what = RemoteLaunch {
            binary: "./run".to_owned(),
            args: Vec::new(),
            working_dir: Some(format!("{ip}/versions/{}", d.version)),
            version: Some(d.version),
        };
        let host = t.host.to_owned();
        self.remote.launch(spec, ctx, &host, what).await
    }

    async fn attach(
        &self,
        spec: &ServiceSpec,
        record: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        self.remote.reattach(spec, record, ctx).await
    }
}
