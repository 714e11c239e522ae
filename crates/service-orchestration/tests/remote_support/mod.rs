//! Remote nodes for the remote/package tests: `harness-test/sshd` containers
//! on a Docker network of their own, each with its own address, reached with a
//! key generated for the test. Everything is removed on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_config::{Node, ServiceSpec, Target};
use harness_core::{BoxTask, ExitStatus, ProjectName, ServiceName, SharedSpawner};
use service_orchestration::ssh::{SshHosts, SshOptions};
use service_orchestration::{InstanceEvent, InstanceEvents, StartContext};

pub const IMAGE: &str = "harness-test/sshd:latest";

fn required() -> bool {
    ["HARNESS_REQUIRE_SSH", "HARNESS_REQUIRE_DOCKER"]
        .iter()
        .any(|v| std::env::var(v).as_deref() == Ok("1"))
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True if Docker, the sshd image, ssh and ssh-keygen are here; otherwise prints
/// why the test is skipped (or panics when they are required).
pub fn nodes_available() -> bool {
    let why = if !ok(Command::new("docker").arg("info")) {
        Some("the Docker engine is not reachable")
    } else if !ok(Command::new("docker").args(["image", "inspect", IMAGE])) {
        Some("the image harness-test/sshd:latest is missing (run docker-test-env/build.sh)")
    } else if !ok(Command::new("ssh").arg("-V"))
        || !ok(Command::new("sh").args(["-c", "command -v ssh-keygen"]))
    {
        Some("ssh or ssh-keygen is not installed")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if required() => {
            panic!("{why}, and HARNESS_REQUIRE_SSH/HARNESS_REQUIRE_DOCKER is set")
        }
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A few sshd nodes on a network of their own.
pub struct Nodes {
    pub prefix: String,
    pub network: String,
    pub containers: Vec<String>,
    pub nodes: Vec<Node>,
    pub key: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Nodes {
    /// Starts `n` nodes named `n1`, `n2`, ... and waits until each answers over ssh.
    pub fn start(n: usize) -> Nodes {
        Nodes::start_with(n, &[])
    }

    /// Like [`Nodes::start`], with more `docker run` arguments for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Nodes {
        let prefix = format!("harness-rt-{:08x}", fastrand_u32());
        let dir = tempfile::Builder::new()
            .prefix("hr")
            .tempdir_in("/tmp")
            .unwrap();
        let key = dir.path().join("id");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "harness-test", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen failed");
        let auth = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &auth).unwrap();
        let mut nodes = Nodes {
            network: prefix.clone(),
            prefix: prefix.clone(),
            containers: Vec::new(),
            nodes: Vec::new(),
            key: key.clone(),
            dir,
        };
        // A subnet of our own, so a node keeps its address across a disconnect.
        let mut created = false;
        for _ in 0..20 {
            let subnet = format!(
                "10.{}.{}.0/24",
                200 + fastrand_u32() % 50,
                fastrand_u32() % 250
            );
            if docker(&["network", "create", "--subnet", &subnet, &nodes.network]).is_ok() {
                created = true;
                break;
            }
        }
        assert!(created, "cannot create a docker network for the nodes");
        let mount = format!("{}:/root/.ssh/authorized_keys:ro", auth.display());
        for i in 1..=n {
            let name = format!("{prefix}-n{i}");
            let hostname = format!("n{i}");
            let mut args = vec![
                "run",
                "-d",
                "--name",
                &name,
                "--hostname",
                &hostname,
                "--network",
                &nodes.network,
                "-v",
                &mount,
                "--label",
                "harness-test=remote",
            ];
            args.extend_from_slice(extra);
            args.push(IMAGE);
            let id = docker(&args).unwrap_or_else(|e| panic!("cannot start node {name}: {e}"));
            nodes.containers.push(name.clone());
            let _ = id;
            let ip = docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &name,
            ])
            .unwrap();
            nodes.nodes.push(Node {
                host: ip,
                name: Some(format!("n{i}")),
                ssh_user: "root".into(),
                ssh_key: Some(key.clone()),
                ssh_port: None,
                package_deploy: true,
            });
        }
        nodes
    }

    /// The connection settings tests use (no host key prompts, short timeouts).
    pub fn options(&self) -> SshOptions {
        SshOptions {
            connect_timeout: Duration::from_secs(3),
            server_alive_interval: Duration::from_secs(1),
            server_alive_count_max: 3,
            extra: vec![
                ("StrictHostKeyChecking".into(), "no".into()),
                ("UserKnownHostsFile".into(), "/dev/null".into()),
                ("LogLevel".into(), "ERROR".into()),
            ],
            ..SshOptions::default()
        }
    }

    /// Hosts with master sockets in a fresh short directory (a "daemon").
    pub fn hosts(&self, options: SshOptions) -> SshHosts {
        let ctl = self
            .dir
            .path()
            .join(format!("c{:04x}", fastrand_u32() % 0xffff));
        SshHosts::new(&self.nodes, &options, &ctl).unwrap()
    }

    /// Waits until every node answers over ssh.
    pub async fn wait_ready(&self, hosts: &SshHosts) {
        for n in &self.nodes {
            let h = hosts.get(n.name.as_deref().unwrap()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match h.check(Duration::from_secs(10)).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => panic!("node never answered: {e}"),
                    Err(_) => async_io::Timer::after(Duration::from_millis(200)).await,
                };
            }
        }
    }

    pub fn container(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    pub fn disconnect(&self, node: &str) {
        docker(&[
            "network",
            "disconnect",
            &self.network,
            &self.container(node),
        ])
        .unwrap();
    }

    pub fn connect(&self, node: &str) {
        let ip = self
            .nodes
            .iter()
            .find(|n| n.name.as_deref() == Some(node))
            .unwrap()
            .host
            .clone();
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &self.network,
            &self.container(node),
        ])
        .unwrap();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        // Masters of this test's control directories.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for s in {}/c*/h*; do [ -S \"$s\" ] && ssh -o ControlPath=\"$s\" -O exit x >/dev/null 2>&1; done; true",
                self.dir.path().display()
            ))
            .status();
    }
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

pub fn name(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// A remote service running `sh -c script` on `host`.
pub fn remote_sh(svc: &str, host: &str, script: &str) -> ServiceSpec {
    let mut s = ServiceSpec::process(name(svc), "sh", vec![]);
    s.target = Target::Remote {
        host: host.into(),
        binary: "sh".into(),
        args: vec!["-c".into(), script.into()],
    };
    s
}

pub fn smol_spawner() -> SharedSpawner {
    Arc::new(|t: BoxTask| smol::spawn(t).detach())
}

pub fn ctx(project: &str, spawner: SharedSpawner) -> StartContext {
    let mut env = BTreeMap::new();
    env.insert("HARNESS_PROJECT".to_owned(), project.to_owned());
    StartContext {
        project: ProjectName::new(project).unwrap(),
        env,
        log_dir: None,
        generation: 1,
        spawner,
    }
}

/// A unique project name.
pub fn project_name() -> String {
    format!("p{:08x}", fastrand_u32())
}

/// Collects output lines until `pred` holds for the collected lines (or the
/// stream ends / the deadline passes). Returns the lines and the exit, if any.
pub async fn read_until(
    events: &mut InstanceEvents,
    secs: u64,
    mut pred: impl FnMut(&[String]) -> bool,
) -> (Vec<String>, Option<ExitStatus>) {
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if pred(&lines) {
            return (lines, None);
        }
        let next = async { events.next().await.map(Some) };
        let timer = async {
            async_io::Timer::at(deadline).await;
            None
        };
        match futures_lite::future::or(next, timer).await {
            None => return (lines, None),
            Some(None) => return (lines, None),
            Some(Some(InstanceEvent::Output(l))) => lines.push(l.text().into_owned()),
            Some(Some(InstanceEvent::Exited(s))) => return (lines, Some(s)),
            Some(Some(_)) => {}
        }
    }
}

/// Polls `cond` until it holds, within `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
}

pub fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
