//! `harness exec` into remote services on a real sshd node (a `harness-test/sshd` container
//! on a network of its own): the command runs on the node in the service's directory, with
//! its environment, over ssh with the options the daemon was given (`HARNESS_SSH_OPTIONS`,
//! which the `exec` itself is not given), and its exit code comes back.
//!
//! Skipped with a printed reason without Docker, the sshd image or ssh; a failure under
//! `HARNESS_REQUIRE_DOCKER=1` or `HARNESS_REQUIRE_SSH=1`.

#[path = "../../service-orchestration/tests/remote_support/mod.rs"]
mod remote_support;
mod support;

use std::process::Stdio;

use remote_support::{Nodes, nodes_available, project_name};
use support::Env;

/// No host key prompts for the throwaway node: given to the daemon only.
const SSH_OPTIONS: &str = "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR";

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
networks:
  lab:
    type: lan
    subnet: {ip}/32
    nodes:
      - host: {ip}
        name: n1
        ssh_user: root
        ssh_key: {key}
services:
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
            ip = nodes.nodes[0].host,
            key = nodes.key.display()
        ),
    );
    // The daemon that `up` starts gets the ssh options; the `exec`s below do not.
    let out = env
        .cmd(&["up", "-d", "--wait", "--timeout", "90s"])
        .env("HARNESS_SSH_OPTIONS", SSH_OPTIONS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("harness up runs");
    assert!(out.status.success(), "{out:?}");

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
