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

/// True when the Docker and SSH tests must run (CI), not skip.
pub fn required() -> bool {
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

/// Runs the docker CLI; its trimmed stdout, or its stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
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
    /// The subnet of the nodes' network.
    pub subnet: String,
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

    /// Like [`Nodes::start`], each node with a Docker engine: this machine's,
    /// its socket mounted into the node with the docker CLI, so that the node
    /// serves `docker system dial-stdio`. `None` (with the reason printed)
    /// when there is no docker CLI here.
    pub fn start_with_docker(n: usize) -> Option<Nodes> {
        let out = Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .ok()?;
        let cli = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if cli.is_empty() {
            eprintln!("skipping: no docker CLI to place on the nodes");
            return None;
        }
        let cli_mount = format!("{cli}:/usr/bin/docker:ro");
        let socket = "/var/run/docker.sock:/var/run/docker.sock";
        Some(Nodes::start_with(n, &["-v", &cli_mount, "-v", socket]))
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
            subnet: String::new(),
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
                nodes.subnet = subnet;
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

    /// An `ssh` command that runs `script` as root on node `node` (`n1`, ...).
    pub fn ssh(&self, node: &str, script: &str) -> Command {
        let host = &self
            .nodes
            .iter()
            .find(|n| n.name.as_deref() == Some(node))
            .unwrap_or_else(|| panic!("no node {node}"))
            .host;
        let mut c = Command::new("ssh");
        c.arg("-i").arg(&self.key);
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "BatchMode=yes",
            "ConnectTimeout=5",
        ] {
            c.args(["-o", o]);
        }
        c.arg(format!("root@{host}"))
            .arg(script)
            .stdin(Stdio::null());
        c
    }

    /// Waits (blocking) until every node answers over ssh.
    pub fn wait_answering(&self) {
        for n in &self.nodes {
            let node = n.name.as_deref().unwrap_or(&n.host);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !ok(&mut self.ssh(node, "true")) {
                assert!(
                    Instant::now() < deadline,
                    "node {node} never answered over ssh"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    pub fn container(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// The processes on node `node` (`n1`, ...) other than its sshd, read
    /// through the container runtime (so also while the node is cut off).
    pub fn processes(&self, node: &str) -> Vec<NodeProcess> {
        processes_in(&self.container(node))
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

/// A process on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProcess {
    pub pid: u32,
    /// Its process group (a remote service's group is its wrapper's pid).
    pub pgid: u32,
    pub args: String,
}

/// The processes in node container `container` other than its sshd (the
/// listener and the per-connection processes) and the `ps` that lists them:
/// what the project runs there.
pub fn processes_in(container: &str) -> Vec<NodeProcess> {
    const PS: [&str; 3] = ["ps", "-o", "pid,pgid,args"];
    let out = docker(&[&["exec", container][..], &PS[..]].concat())
        .unwrap_or_else(|e| panic!("cannot list the processes of {container}: {e}"));
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next()?.parse().ok()?;
            let pgid = f.next()?.parse().ok()?;
            let args = f.collect::<Vec<_>>().join(" ");
            Some(NodeProcess { pid, pgid, args })
        })
        .filter(|p| {
            !(p.args.starts_with("sshd:")
                || p.args.starts_with("/usr/sbin/sshd")
                || p.args == PS.join(" "))
        })
        .collect()
}

/// The `tail`s among `procs`.
pub fn tails(procs: &[NodeProcess]) -> Vec<&NodeProcess> {
    procs
        .iter()
        .filter(|p| p.args.split_whitespace().next() == Some("tail"))
        .collect()
}

/// The processes of `procs` outside the process groups of the remote
/// services whose wrappers are `services`: what follows them, and any other
/// helper of the executor.
pub fn helpers(procs: &[NodeProcess], services: &[u32]) -> Vec<NodeProcess> {
    procs
        .iter()
        .filter(|p| !services.contains(&p.pgid))
        .cloned()
        .collect()
}

/// Polls (blocking) the processes of node container `container` until `cond`
/// holds for them, within `secs`, and returns them; panics saying `what` and
/// listing them if it never does.
pub fn node_until(
    container: &str,
    secs: u64,
    what: &str,
    mut cond: impl FnMut(&[NodeProcess]) -> bool,
) -> Vec<NodeProcess> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let procs = processes_in(container);
        if cond(&procs) {
            return procs;
        }
        assert!(Instant::now() < deadline, "{what}; on the node: {procs:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker ps -a` ids of the containers with these labels.
pub fn containers(labels: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-a", "-q", "--no-trunc"]);
    for (k, v) in labels {
        cmd.args(["--filter", &format!("label={k}={v}")]);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes the containers and the network a project left on this machine's
/// engine (the nodes' engine in the docker tests), whatever the test's outcome.
pub struct ProjectCleanup(pub String);

impl Drop for ProjectCleanup {
    fn drop(&mut self) {
        for id in containers(&[("harness.project", &self.0)]) {
            let _ = Command::new("docker")
                .args(["rm", "-f", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("harness-{}", self.0)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
        address: None,
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

/// Through a ServiceManager (on the embedder's `spawner`): the services of a node that is cut off show
/// `unknown` with the reason, their failing checks restart nothing, the other
/// node's services are unaffected, and once the node is back the same process
/// is running and healthy again; one that died during an outage is restarted
/// per its policy once the node is back.
pub async fn unreachable_node_through_manager(spawner: SharedSpawner) {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use futures_lite::StreamExt;
    use harness_config::{Check, Network, Probe, Project, RestartMode, Settings};
    use harness_core::{ProjectName, ServiceKind, ServiceName, ServiceState};
    use service_orchestration::remote::RemoteExecutor;
    use service_orchestration::{ManagerEvent, ManagerOptions, ServiceManager};

    let nodes = Nodes::start(2);
    let hosts = nodes.hosts(nodes.options());
    nodes.wait_ready(&hosts).await;

    // Each service serves TCP on its node: readiness runs a command on the
    // node, liveness connects from here and restarts it after two failures.
    let service = |svc: &str, node: &str| {
        let mut s = remote_sh(
            svc,
            node,
            "mkdir -p www && echo ok > www/index.html && echo up && exec httpd -f -p 8080 -h www",
        );
        let mut ready = Probe::new(Check::Exec {
            command: "wget".into(),
            args: vec![
                "-q".into(),
                "-O".into(),
                "/dev/null".into(),
                "http://127.0.0.1:8080/".into(),
            ],
        });
        ready.period = Duration::from_millis(300);
        ready.timeout = Duration::from_secs(2);
        s.readiness = Some(ready);
        let mut live = Probe::new(Check::Tcp {
            host: None,
            port: 8080,
        });
        live.period = Duration::from_millis(300);
        live.timeout = Duration::from_secs(3);
        live.initial_delay = Duration::from_secs(2);
        live.failure_threshold = 2;
        s.liveness = Some(live);
        s.restart.mode = RestartMode::Always;
        s.shutdown.timeout = Duration::from_secs(5);
        s
    };
    let far = service("far", "n2");
    let near = service("near", "n1");
    let mut networks = BTreeMap::new();
    networks.insert(
        "lan".to_owned(),
        Network::Lan {
            subnet: "10.0.0.0/8".into(),
            nodes: nodes.nodes.clone(),
        },
    );
    let services: BTreeMap<ServiceName, _> = [far, near]
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let project = Arc::new(
        Project::new(
            ProjectName::new(project_name()).unwrap(),
            Settings::default(),
            networks,
            services,
        )
        .unwrap(),
    );
    let opts = ManagerOptions::new(spawner);
    let manager = ServiceManager::new(project.clone(), opts).unwrap();
    manager.register_executor(
        ServiceKind::Remote,
        Arc::new(RemoteExecutor::new(hosts.clone())),
    );
    let (far, near) = (name("far"), name("near"));
    manager.start_all().unwrap();
    manager
        .wait_ready(&[far.clone(), near.clone()], Duration::from_secs(90))
        .await
        .unwrap();
    let row = |svc: &ServiceName| {
        manager
            .status()
            .into_iter()
            .find(|s| &s.name == svc)
            .expect("a status row per service")
    };
    let (far_pid, near_pid) = (row(&far).pid, row(&near).pid);
    eprintln!("ready: {:?}", manager.status());
    // (A liveness check may have restarted it before it listened.)
    let far_restarts = row(&far).restarts;
    assert!(far_pid.is_some() && near_pid.is_some());
    let mut events = manager.subscribe();

    nodes.disconnect("n2");
    let cut = std::time::Instant::now();
    let deadline = cut + Duration::from_secs(30);
    while !matches!(row(&far).state, ServiceState::Unknown { .. }) {
        assert!(
            std::time::Instant::now() < deadline,
            "far never showed unknown: {:?}",
            row(&far).state
        );
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
    eprintln!("far shown unknown {:?} after the cut", cut.elapsed());
    let ServiceState::Unknown { reason } = row(&far).state else {
        unreachable!()
    };
    assert!(reason.contains("`n2`"), "{reason}");
    assert_eq!(row(&far).pid, far_pid);
    assert_eq!(manager.state("near"), Some(ServiceState::Healthy));

    // Let the checks run against the missing node for a while: they must
    // neither restart it nor start a second one, and `near` stays healthy.
    let window = std::time::Instant::now() + Duration::from_secs(6);
    let mut seen = Vec::new();
    while std::time::Instant::now() < window {
        let next = async { events.next().await };
        let timer = async {
            async_io::Timer::at(window).await;
            None
        };
        if let Some(ev) = futures_lite::future::or(next, timer).await {
            seen.push(ev);
        }
    }
    assert!(matches!(row(&far).state, ServiceState::Unknown { .. }));
    assert_eq!(row(&far).restarts, far_restarts);
    assert_eq!(manager.state("near"), Some(ServiceState::Healthy));
    assert_eq!(row(&near).pid, near_pid);
    // A start request while unknown leaves what runs alone.
    manager.start(std::slice::from_ref(&far)).unwrap();

    nodes.connect("n2");
    eventually(60, "far to be healthy again", || async {
        manager.state("far") == Some(ServiceState::Healthy)
    })
    .await;
    // Collect what was published meanwhile.
    loop {
        let next = async { events.next().await };
        let timer = async {
            async_io::Timer::after(Duration::from_millis(200)).await;
            None
        };
        match futures_lite::future::or(next, timer).await {
            Some(ev) => seen.push(ev),
            None => break,
        }
    }
    let states = |svc: &ServiceName| -> Vec<ServiceState> {
        seen.iter()
            .filter_map(|e| match e {
                ManagerEvent::State { service, state } if service == svc => Some(state.clone()),
                _ => None,
            })
            .collect()
    };
    let far_states = states(&far);
    assert!(
        far_states.iter().all(|s| matches!(
            s,
            ServiceState::Unknown { .. } | ServiceState::Running | ServiceState::Healthy
        )),
        "far went through {far_states:?}"
    );
    assert_eq!(
        far_states.last(),
        Some(&ServiceState::Healthy),
        "{far_states:?}"
    );
    assert!(
        states(&near).is_empty(),
        "near changed: {:?}",
        states(&near)
    );
    // The same process, and only one of it on the node.
    assert_eq!(row(&far).pid, far_pid);
    assert_eq!(row(&far).restarts, far_restarts);
    let n2 = hosts.get("n2").unwrap();
    let count = n2
        .run(
            "ps -o args | grep -c '^httpd -f -p 8080' || true",
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(count.stdout_text(), "1", "httpd processes on n2");

    // Cut off again, and the program dies meanwhile (killed on the node,
    // reached through the container runtime): unknown until the node is
    // back, then its exit is known and the policy (always) restarts it.
    nodes.disconnect("n2");
    eventually(30, "far to show unknown again", || async {
        matches!(row(&far).state, ServiceState::Unknown { .. })
    })
    .await;
    let killed = std::process::Command::new("docker")
        .args([
            "exec",
            &nodes.container("n2"),
            "sh",
            "-c",
            "kill $(pidof httpd)",
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "cannot kill httpd on n2");
    // Not seen while the node is away.
    assert!(matches!(row(&far).state, ServiceState::Unknown { .. }));
    assert_eq!(row(&far).restarts, far_restarts);
    nodes.connect("n2");
    eventually(60, "far to be restarted and healthy", || async {
        let r = row(&far);
        r.state == ServiceState::Healthy && r.restarts == far_restarts + 1
    })
    .await;
    assert_ne!(row(&far).pid, far_pid, "the dead run was not replaced");
    assert_eq!(row(&far).exit_code, None);
    let count = n2
        .run(
            "ps -o args | grep -c '^httpd -f -p 8080' || true",
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(
        count.stdout_text(),
        "1",
        "httpd processes on n2 after the restart"
    );
    assert_eq!(row(&near).pid, near_pid);

    manager.stop_all().await;
    assert_eq!(manager.state("far"), Some(ServiceState::Stopped));
    hosts.close_all().await;
}
