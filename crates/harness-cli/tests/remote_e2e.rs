//! `harness exec` into services on a real sshd node (a `harness-test/sshd` container on a
//! network of its own): a remote service's command runs on the node in the service's
//! directory, with its environment, over ssh with the options the daemon was given
//! (`HARNESS_SSH_OPTIONS`, which the `exec` itself is not given), and its exit code comes
//! back; a docker service on the node is reached through the node's engine over ssh.
//!
//! Skipped with a printed reason without Docker, the sshd image or ssh; a failure under
//! `HARNESS_REQUIRE_DOCKER=1` or `HARNESS_REQUIRE_SSH=1`.

#[path = "../../service-orchestration/tests/remote_support/mod.rs"]
mod remote_support;
mod support;

use std::process::Stdio;

use remote_support::{Nodes, ProjectCleanup, nodes_available, project_name};
use support::Env;

/// No host key prompts for the throwaway node: given to the daemon only.
const SSH_OPTIONS: &str = "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR";

/// `harness up -d --wait` with the ssh options for the daemon it starts.
fn up(env: &Env) {
    let out = env
        .cmd(&["up", "-d", "--wait", "--timeout", "90s"])
        .env("HARNESS_SSH_OPTIONS", SSH_OPTIONS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("harness up runs");
    assert!(out.status.success(), "{out:?}");
}

/// The `networks:` of a project with node `n1` at `nodes`' first node.
fn lab(nodes: &Nodes) -> String {
    format!(
        "networks:\n  lab:\n    type: lan\n    subnet: {ip}/32\n    nodes:\n      - host: {ip}\n        name: n1\n        ssh_user: root\n        ssh_key: {key}\n",
        ip = nodes.nodes[0].host,
        key = nodes.key.display()
    )
}

#[test]
fn exec_runs_on_the_node_in_the_service_directory_with_its_environment() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    nodes.wait_answering();
    let env = Env::with_daemon();
    let project = format!("rx{}", project_name());
    env.write(
        "services.yaml",
        &format!(
            r#"name: {project}
{lab}services:
  api:
    type: remote
    network: lab
    host: n1
    binary: sh
    args: ["-c", "exec sleep 300"]
    working_dir: /tmp
    env:
      FOO: on the node
  plain:
    type: remote
    network: lab
    host: n1
    binary: sleep
    args: ["300"]
"#,
            lab = lab(&nodes)
        ),
    );
    // The daemon that `up` starts gets the ssh options; the `exec`s below do not.
    up(&env);

    let r = env
        .run(&[
            "exec",
            "api",
            "--",
            "sh",
            "-c",
            "echo \"$FOO\"; pwd; echo \"$HARNESS_SERVICE\"; exit 5",
        ])
        .expect_code(5);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines, ["on the node", "/tmp", "api"], "{r:?}");

    // Without a working directory: the directory the service runs in.
    let r = env.run(&["exec", "plain", "--", "pwd"]).ok();
    assert!(
        r.stdout
            .trim()
            .ends_with(&format!(".harness/{project}/plain")),
        "{r:?}"
    );

    // stdin reaches the command.
    let r = env.run_with_input(&["exec", "api", "--", "tr", "a-z", "A-Z"], b"over ssh\n");
    assert_eq!(r.ok().stdout, "OVER SSH\n");

    // A command the node does not have.
    env.run(&["exec", "api", "--", "harness-no-such-command"])
        .expect_code(127);

    // With a terminal: one on the node, of the terminal's size.
    let (out, code) = env.run_in_pty(
        &["exec", "api", "--", "sh", "-c", "[ -t 0 ] && stty size"],
        33,
        101,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("33 101"), "{out}");

    env.run(&["down"]).ok();
}

#[test]
fn exec_runs_in_a_container_on_the_nodes_engine() {
    if !nodes_available() {
        return;
    }
    let Some(nodes) = Nodes::start_with_docker(1) else {
        assert!(
            !remote_support::required(),
            "no docker CLI to place on the node"
        );
        return;
    };
    nodes.wait_answering();
    let env = Env::with_daemon();
    let project = format!("rxd{}", project_name());
    let _cleanup = ProjectCleanup(project.clone());
    env.write(
        "services.yaml",
        &format!(
            r#"name: {project}
{lab}services:
  box:
    type: docker
    image: harness-test/busybox:latest
    host: n1
    command: ["sleep", "300"]
    env:
      FOO: in a container on the node
"#,
            lab = lab(&nodes)
        ),
    );
    up(&env);
    let r = env
        .run(&["exec", "box", "--", "sh", "-c", "echo \"$FOO\"; exit 6"])
        .expect_code(6);
    assert_eq!(r.stdout, "in a container on the node\n", "{r:?}");
    env.run(&["down"]).ok();
}
