//! End to end `harness deploy` and `harness rollback` against a real sshd node: the built
//! `harness` binary deploys a `package` service from a local directory to a
//! `harness-test/sshd` container on a Docker network of its own, upgrades it, redeploys the
//! same version (a no-op), rolls it back, and refuses a non-package service and an
//! unreachable node.
//!
//! Skipped with a printed reason without Docker, the sshd image or ssh; a failure under
//! `HARNESS_REQUIRE_DOCKER=1` or `HARNESS_REQUIRE_SSH=1`.

#[path = "../../service-orchestration/tests/remote_support/mod.rs"]
mod remote_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use remote_support::{Nodes, docker, node_until, nodes_available, project_name, required};
use support::Env;

/// No host key prompts for the throwaway nodes.
const SSH_OPTIONS: &str = "StrictHostKeyChecking=no UserKnownHostsFile=/dev/null LogLevel=ERROR";

/// A directory with an `ssh` that is the system one with [`SSH_OPTIONS`]; first on the `PATH`
/// of `harness` (and of the daemon it starts), it keeps host key prompts away from the nodes.
fn ssh_wrapper(dir: &Path) -> String {
    let real = Command::new("sh")
        .args(["-c", "command -v ssh"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty())
        .expect("ssh is on the PATH");
    let opts: String = SSH_OPTIONS.split(' ').map(|o| format!(" -o {o}")).collect();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("wrapper dir");
    let ssh = bin.join("ssh");
    std::fs::write(&ssh, format!("#!/bin/sh\nexec {real}{opts} \"$@\"\n")).expect("write ssh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", bin.display())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One sshd node on a network of its own (the shared test nodes), with the `PATH` that puts
/// the test's `ssh` first; removed on drop, so also when an assertion fails.
struct Node {
    container: String,
    ip: String,
    subnet: String,
    key: PathBuf,
    /// `PATH` with the test's `ssh` first.
    path: String,
    _wrapper: tempfile::TempDir,
    _nodes: Nodes,
}

impl Node {
    fn start() -> Node {
        let nodes = Nodes::start(1);
        nodes.wait_answering();
        let wrapper = tempfile::Builder::new()
            .prefix("hd")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Node {
            container: nodes.container("n1"),
            ip: nodes.nodes[0].host.clone(),
            subnet: nodes.subnet.clone(),
            key: nodes.key.clone(),
            path: ssh_wrapper(wrapper.path()),
            _wrapper: wrapper,
            _nodes: nodes,
        }
    }

    /// The working directories of the processes on the node.
    fn cwds(&self) -> Vec<String> {
        docker(&[
            "exec",
            &self.container,
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do readlink $p/cwd; done; true",
        ])
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// Waits (up to 60 s) until a process on the node runs in `versions/<version>` and none
    /// in another version's directory.
    fn wait_running(&self, version: &str) -> bool {
        let want = format!("/versions/{version}");
        support::wait_until(Duration::from_secs(60), || {
            let cwds = self.cwds();
            cwds.iter().any(|c| c.ends_with(&want))
                && !cwds
                    .iter()
                    .any(|c| c.contains("/versions/") && !c.ends_with(&want))
        })
    }

    /// `readlink` of a path on the node.
    fn readlink(&self, path: &str) -> String {
        docker(&["exec", &self.container, "readlink", path]).unwrap_or_default()
    }
}

/// The result of one `harness` run.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `harness ARGS` in `env` with `path` (the test's `ssh` first), killed after 180 s.
fn harness(env: &Env, path: &str, args: &[&str]) -> Out {
    let child = env
        .cmd(args)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harness runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.expect("wait for harness"),
        Err(_) => {
            support::kill(pid, support::libc_sigkill());
            panic!("harness {args:?} did not finish within 180s");
        }
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_package(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).expect("package dir");
    std::fs::write(dir.join("version.txt"), text).expect("write the package");
    let run = dir.join("run");
    std::fs::write(&run, "#!/bin/sh\ncat version.txt\nexec sleep 1000\n").expect("write run");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A project with a lan network (`subnet`) of one node and a package service `app` from `./pkg`.
fn services_yaml(
    project: &str,
    subnet: &str,
    host: &str,
    port: Option<u16>,
    key: &Path,
    version: &str,
) -> String {
    let port = port
        .map(|p| format!("        ssh_port: {p}\n"))
        .unwrap_or_default();
    format!(
        "name: {project}\n\
         networks:\n  lan:\n    type: lan\n    subnet: {subnet}\n    nodes:\n      - host: {host}\n        name: n1\n        ssh_user: root\n        ssh_key: {key}\n{port}        package_deploy: true\n\
         services:\n  app:\n    type: package\n    network: lan\n    host: n1\n    package: ./pkg\n    version: \"{version}\"\n  \
         local:\n    type: process\n    binary: sleep\n    args: [\"1000\"]\n",
        key = key.display()
    )
}

#[test]
fn deploy_upgrade_no_op_rollback_and_refusals_on_a_real_node() {
    if !nodes_available() {
        return;
    }
    let node = Node::start();
    let env = Env::new();
    let project = format!("dep{}", project_name());
    write_package(&env.dir.path().join("pkg"), "one");
    env.write(
        "services.yaml",
        &services_yaml(&project, &node.subnet, &node.ip, None, &node.key, "1.0"),
    );

    // First deploy: 1.0, nothing before it. No daemon runs the project, so it says so.
    let out = harness(&env, &node.path, &["deploy", "app"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.trim(),
        "app: version 1.0 (previous none)",
        "{out}"
    );
    assert!(out.stderr.contains("no daemon runs project"), "{out}");
    let current = format!("/root/.harness/{project}/app/package/current");
    assert!(node.readlink(&current).ends_with("1.0"), "{out}");

    // Upgrade to 2.0: reported with 1.0 as the previous version; the link points at 2.0.
    write_package(&env.dir.path().join("pkg"), "two");
    env.write(
        "services.yaml",
        &services_yaml(&project, &node.subnet, &node.ip, None, &node.key, "2.0"),
    );
    let out = harness(&env, &node.path, &["deploy", "app", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON output");
    assert_eq!(v[0]["service"], "app", "{out}");
    assert_eq!(v[0]["node"], "n1", "{out}");
    assert_eq!(v[0]["version"], "2.0", "{out}");
    assert_eq!(v[0]["previous"], "1.0", "{out}");
    assert_eq!(v[0]["changed"], true, "{out}");
    assert_eq!(v[0]["uploaded"], true, "{out}");
    assert!(node.readlink(&current).ends_with("2.0"));
    let text = docker(&[
        "exec",
        &node.container,
        "cat",
        &format!("{current}/version.txt"),
    ]);
    assert_eq!(text.as_deref(), Ok("two"));

    // The same version again changes nothing, and says so.
    let out = harness(&env, &node.path, &["deploy", "app"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.trim(),
        "app: version 2.0 (previous 1.0), already deployed: nothing changed",
        "{out}"
    );
    assert!(node.readlink(&current).ends_with("2.0"));

    // Rollback: back to 1.0, with 2.0 kept.
    let out = harness(&env, &node.path, &["rollback", "app"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.trim(),
        "app: version 1.0 (previous 2.0)",
        "{out}"
    );
    assert!(node.readlink(&current).ends_with("1.0"));
    let text = docker(&[
        "exec",
        &node.container,
        "cat",
        &format!("{current}/version.txt"),
    ]);
    assert_eq!(text.as_deref(), Ok("one"));

    // A non-package service, and an unknown one, are usage errors naming them.
    let out = harness(&env, &node.path, &["deploy", "local"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("`local`"), "{out}");
    assert!(out.stderr.contains("package"), "{out}");
    let out = harness(&env, &node.path, &["rollback", "nope"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("`nope`"), "{out}");
    assert!(node.readlink(&current).ends_with("1.0"));
}

#[test]
fn an_unreachable_node_is_a_failure_naming_it() {
    if !succeeds(Command::new("ssh").arg("-V")) {
        assert!(
            !required(),
            "ssh is not installed, and HARNESS_REQUIRE_SSH is set"
        );
        eprintln!("skipping: ssh is not installed");
        return;
    }
    let env = Env::new();
    let path = std::env::var("PATH").unwrap_or_default();
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    write_package(&env.dir.path().join("pkg"), "one");
    let key = env.dir.path().join("no-such-key");
    env.write(
        "services.yaml",
        &services_yaml(
            &format!("unr{}", project_name()),
            "127.0.0.0/8",
            "127.0.0.1",
            Some(port),
            &key,
            "1.0",
        ),
    );
    for verb in ["deploy", "rollback"] {
        let out = harness(&env, &path, &[verb, "app"]);
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains("node `n1`"), "{out}");
        assert!(out.stderr.contains("unreachable"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}

#[test]
fn a_daemon_running_the_project_restarts_the_service_on_the_new_version() {
    if !nodes_available() {
        return;
    }
    let node = Node::start();
    let env = Env::with_daemon();
    let project = format!("dpd{}", project_name());
    write_package(&env.dir.path().join("pkg"), "one");
    env.write(
        "services.yaml",
        &services_yaml(&project, &node.subnet, &node.ip, None, &node.key, "1.0"),
    );
    let out = harness(
        &env,
        &node.path,
        &["up", "-d", "--wait", "--timeout", "90s"],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(node.wait_running("1.0"), "1.0 never ran: {:?}", node.cwds());

    // Deploy 2.0: the daemon reloads the configuration and runs 2.0 instead of 1.0. The
    // local service's configuration changed too: the reload restarts it, it is not left
    // stopped.
    write_package(&env.dir.path().join("pkg"), "two");
    env.write(
        "services.yaml",
        &services_yaml(&project, &node.subnet, &node.ip, None, &node.key, "2.0")
            .replace("[\"1000\"]", "[\"1001\"]"),
    );
    let out = harness(&env, &node.path, &["deploy", "app", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON output");
    assert_eq!(v[0]["version"], "2.0", "{out}");
    assert_eq!(v[0]["previous"], "1.0", "{out}");
    assert_eq!(v[0]["restarted"], true, "{out}");
    assert!(out.stderr.contains("restarted app"), "{out}");
    assert!(node.wait_running("2.0"), "2.0 never ran: {:?}", node.cwds());
    let version = || {
        let out = harness(&env, &node.path, &["status", "--json", "app"]);
        let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        rows[0]["version"].as_str().map(str::to_owned)
    };
    assert!(
        support::wait_until(Duration::from_secs(30), || version().as_deref()
            == Some("2.0")),
        "status never showed version 2.0: {:?}",
        version()
    );

    let local_runs = || {
        let out = harness(&env, &node.path, &["status", "--json", "local"]);
        let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        rows[0]["state"] == "running"
    };
    assert!(
        support::wait_until(Duration::from_secs(30), local_runs),
        "the changed local service was left {:?}",
        harness(&env, &node.path, &["status"]).stdout
    );

    // Rollback (the configuration still says 2.0): the daemon restarts it on 1.0.
    let out = harness(&env, &node.path, &["rollback", "app"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.trim(),
        "app: version 1.0 (previous 2.0)",
        "{out}"
    );
    assert!(out.stderr.contains("restarted app"), "{out}");
    assert!(
        node.wait_running("1.0"),
        "1.0 never ran again: {:?}",
        node.cwds()
    );
    assert!(
        support::wait_until(Duration::from_secs(30), || version().as_deref()
            == Some("1.0")),
        "status never showed version 1.0: {:?}",
        version()
    );

    // `harness down` leaves nothing of the project running on the node: no
    // service, and nothing that followed the three runs' output.
    let out = harness(&env, &node.path, &["down"]);
    assert_eq!(out.code, 0, "{out}");
    node_until(&node.container, 30, "processes outlived down", |ps| {
        ps.is_empty()
    });
}
